//! The real binary's allocator settings on Linux with glibc: a thread that gives freed memory
//! back to the system, unless `MALLOC_TRIM_THRESHOLD_` leaves trimming to glibc.
#![cfg(all(target_os = "linux", target_env = "gnu"))]
// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

/// The names of the threads of a `wxauth demo` started with `env`, once it is serving.
async fn demo_threads(env: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--sim-listen",
            "127.0.0.1:0",
        ])
        .env_remove("MALLOC_TRIM_THRESHOLD_")
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the wxauth binary starts");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let serving = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == wxauth::demo::WALKTHROUGH_END {
                return;
            }
        }
        panic!("the demo ended before it was serving");
    };
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("the demo is serving");
    let pid = demo.id().unwrap();
    let names = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap())
        .map(|name| name.trim_end().to_owned())
        .collect();
    demo.kill().await.unwrap();
    names
}

#[tokio::test]
async fn a_thread_gives_freed_memory_back_unless_glibc_is_told_otherwise() {
    let threads = demo_threads(&[]).await;
    assert!(
        threads.iter().any(|name| name == "wxauth-trim"),
        "{threads:?}"
    );
    let threads = demo_threads(&[("MALLOC_TRIM_THRESHOLD_", "131072")]).await;
    assert!(
        !threads.iter().any(|name| name == "wxauth-trim"),
        "{threads:?}"
    );
}
