//! The real binary's allocator settings on Linux with glibc: a thread that gives freed memory
//! back to the system, unless `MALLOC_TRIM_THRESHOLD_` leaves trimming to glibc.
#![cfg(all(target_os = "linux", target_env = "gnu"))]
// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/binary.rs"]
mod binary;

use backend::{Sql, TestBackend};

/// The names of the threads of a `wxauth serve` started with `settings`, once it listens.
async fn serve_threads(settings: &[(&str, &str)]) -> Vec<String> {
    let backend = TestBackend::provision(Sql::Sqlite, false).await;
    let sim = binary::sim().await;
    let on = binary::serve(&backend, &sim, settings).await;
    let names = std::fs::read_dir(format!("/proc/{}/task", on.pid()))
        .unwrap()
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap())
        .map(|name| name.trim_end().to_owned())
        .collect();
    on.kill().await;
    names
}

#[tokio::test]
async fn a_thread_gives_freed_memory_back_unless_glibc_is_told_otherwise() {
    let threads = serve_threads(&[]).await;
    assert!(
        threads.iter().any(|name| name == "wxauth-trim"),
        "{threads:?}"
    );
    let threads = serve_threads(&[("MALLOC_TRIM_THRESHOLD_", "131072")]).await;
    assert!(
        !threads.iter().any(|name| name == "wxauth-trim"),
        "{threads:?}"
    );
}
