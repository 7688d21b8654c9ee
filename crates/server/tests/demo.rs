//! Runs the real `wxauth demo` binary and follows its printed walkthrough in a shell,
//! exactly as a new user would paste it.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn the_demo_walkthrough_works_exactly_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--sim-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the wxauth binary starts");

    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let end = line == wxauth::demo::WALKTHROUGH_END;
            printed.push(line);
            if end {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the walkthrough is printed");
    let banner = printed.join("\n");
    assert!(banner.contains("SIMULATOR"), "{banner}");

    let commands: Vec<&str> = printed
        .iter()
        .skip_while(|l| !l.starts_with("Try it"))
        .skip(1)
        .map(String::as_str)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands.len(), 7, "{banner}");
    let script = format!("set -e\n{}\n", commands.join("\n"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .await
        .expect("bash runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(outputs.len(), 6, "{out}");
    assert!(
        outputs[0].contains("\"access_token\":\"wxa_")
            && outputs[0].contains("\"is_new_user\":true"),
        "{out}"
    );
    assert!(
        outputs[1].contains("\"app_id\":\"wx1234567890abcdef\""),
        "{out}"
    );
    assert!(
        outputs[2].contains("\"nickname\":\"小明😀\"")
            && outputs[2].contains("\"city\":\"Shenzhen\""),
        "{out}"
    );
    assert!(outputs[3].contains("\"refresh_token\":\"wxr_"), "{out}");
    assert_eq!(outputs[4], "204");
    assert!(outputs[5].contains("\"code\":\"token_revoked\""), "{out}");
    assert!(dir.path().join("wxauth-demo.db").exists());

    // Nothing secret in the demo's log: not the AppSecret, not a token.
    demo.start_kill().unwrap();
    let mut log = String::new();
    demo.stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .await
        .unwrap();
    assert!(!log.contains(wechat_sim::DEMO_APP_SECRET));
    let token = outputs[0]
        .split("\"access_token\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(!log.contains(token));
}
