//! The `wxauth` commands other than demo, run as a user would.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn wxauth(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxauth"));
    command.args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("WXAUTH_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("wxauth runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const GOOD_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["10.0.0.0/8", "127.0.0.1"]
[database]
url = "sqlite://data.db"
[tokens]
access_ttl = "15m"
refresh_ttl = "7d"
[security]
data_key_file = "data.key"
watermark_max_age = "0s"
[[apps]]
app_id = "wx1234567890abcdef"
secret_env = "MY_APP_SECRET"
"#;

#[test]
fn gen_key_prints_32_random_bytes_of_base64() {
    let dir = tempfile::tempdir().unwrap();
    let a = wxauth(dir.path(), &["gen-key"], &[]);
    let b = wxauth(dir.path(), &["gen-key"], &[]);
    assert!(a.status.success());
    let key = String::from_utf8(a.stdout).unwrap();
    assert_eq!(key.trim().len(), 44);
    assert_ne!(key, String::from_utf8(b.stdout).unwrap());
}

#[test]
fn check_config_explains_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let output = wxauth(dir.path(), &["check-config"], &[]);
    assert!(!output.status.success());
    let said = text(&output);
    assert!(said.contains("[[apps]]"), "{said}");
    assert!(said.contains("gen-key"), "{said}");

    std::fs::write(dir.path().join("wxauth.toml"), GOOD_CONFIG).unwrap();
    let output = wxauth(dir.path(), &["check-config"], &[]);
    let said = text(&output);
    assert!(!output.status.success());
    assert!(said.contains("MY_APP_SECRET"), "{said}");
    assert!(said.contains("data.key"), "{said}");
}

#[test]
fn check_config_accepts_a_complete_config_and_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wxauth.toml"), GOOD_CONFIG).unwrap();
    let key = String::from_utf8(wxauth(dir.path(), &["gen-key"], &[]).stdout).unwrap();
    std::fs::write(dir.path().join("data.key"), &key).unwrap();
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[
            ("MY_APP_SECRET", "hunter2-secret"),
            ("WXAUTH_TOKENS__ACCESS_TTL", "30m"),
        ],
    );
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("access 30m"),
        "the environment overrides the file: {said}"
    );
    assert!(!said.contains("hunter2-secret"));
    assert!(!said.contains(key.trim()));
}

#[test]
fn a_typo_in_the_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wxauth.toml"),
        "[tokens]\naccess_tll = \"1h\"\n",
    )
    .unwrap();
    let output = wxauth(dir.path(), &["check-config"], &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("access_tll"), "{}", text(&output));

    std::fs::write(
        dir.path().join("wxauth.toml"),
        "[tokens]\naccess_ttl = \"soon\"\n",
    )
    .unwrap();
    let output = wxauth(dir.path(), &["check-config"], &[]);
    assert!(
        text(&output).contains("not a duration"),
        "{}",
        text(&output)
    );
}

#[test]
fn serve_refuses_to_start_without_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let output = wxauth(dir.path(), &["serve"], &[]);
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains("data key") && said.contains("[[apps]]"),
        "{said}"
    );
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let output = wxauth(
        dir.path(),
        &["migrate"],
        &[("WXAUTH_DATABASE__URL", "sqlite://fresh.db")],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(dir.path().join("fresh.db").exists());
}

#[test]
fn revoke_sessions_reports_an_unknown_user() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wxauth.toml"), GOOD_CONFIG).unwrap();
    let key = String::from_utf8(wxauth(dir.path(), &["gen-key"], &[]).stdout).unwrap();
    std::fs::write(dir.path().join("data.key"), key).unwrap();
    let output = wxauth(
        dir.path(),
        &["revoke-sessions", "--user", "nobody"],
        &[("MY_APP_SECRET", "s")],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no user with id nobody"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_bad_trusted_proxy_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wxauth.toml"),
        "[server]\ntrusted_proxies = [\"10.0.0.0/99\"]\n",
    )
    .unwrap();
    let output = wxauth(dir.path(), &["check-config"], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("server.trusted_proxies"),
        "{}",
        text(&output)
    );
}
