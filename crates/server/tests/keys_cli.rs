//! `wxauth keys rotate | list` and `wxauth gen-secret`, run as an operator would, and the keys
//! they make published by a real `wxauth serve`.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

const DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=";

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://id.example.com"
[database]
url = "sqlite://data.db"
[tokens]
format = "jwt"
[security]
data_key_file = "data.key"
[[apps]]
app_id = "wx1234567890abcdef"
secret = "app-secret"
"#;

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxauth"));
    command.args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("WXAUTH_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

fn wxauth(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(dir, args, env).output().expect("wxauth runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn configured_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wxauth.toml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("data.key"), DATA_KEY).unwrap();
    dir
}

/// The kid `keys rotate` reports.
fn rotate(dir: &Path, env: &[(&str, &str)]) -> String {
    let said = stdout(&wxauth(dir, &["keys", "rotate"], env));
    let kid = said
        .strip_prefix("made the signing key ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{said}"));
    kid.to_owned()
}

/// `keys list` as (kid, algorithm, status) rows.
fn list(dir: &Path) -> Vec<(String, String, String)> {
    stdout(&wxauth(dir, &["keys", "list"], &[]))
        .lines()
        .skip(1)
        .map(|line| {
            let mut fields = line.split_whitespace();
            let kid = fields.next().unwrap().to_owned();
            let algorithm = fields.next().unwrap().to_owned();
            let _created = fields.next().unwrap();
            (kid, algorithm, fields.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

#[test]
fn gen_secret_prints_32_random_bytes_of_unpadded_base64url() {
    let dir = tempfile::tempdir().unwrap();
    let a = stdout(&wxauth(dir.path(), &["gen-secret"], &[]));
    let b = stdout(&wxauth(dir.path(), &["gen-secret"], &[]));
    assert_eq!(URL_SAFE_NO_PAD.decode(a.trim()).unwrap().len(), 32);
    assert!(!a.trim().contains(['=', '+', '/']), "{a}");
    assert_ne!(a, b);
}

#[test]
fn keys_rotate_makes_a_new_current_key_and_list_shows_the_old_one_retiring() {
    let dir = configured_dir();
    let said = stdout(&wxauth(dir.path(), &["keys", "list"], &[]));
    assert!(said.contains("no signing keys yet"), "{said}");

    let first = rotate(dir.path(), &[]);
    assert_eq!(
        list(dir.path()),
        [(first.clone(), "EdDSA".to_owned(), "current".to_owned())]
    );

    let second = rotate(dir.path(), &[("WXAUTH_TOKENS__JWT_ALGORITHM", "ES256")]);
    let rows = list(dir.path());
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0],
        (second.clone(), "ES256".to_owned(), "current".to_owned())
    );
    assert_eq!((&rows[1].0, rows[1].1.as_str()), (&first, "EdDSA"));
    assert!(
        rows[1].2.starts_with("retiring, published until "),
        "{rows:?}"
    );
}

#[test]
fn keys_rotate_refuses_a_config_with_problems() {
    let dir = tempfile::tempdir().unwrap();
    let output = wxauth(dir.path(), &["keys", "rotate"], &[]);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("data key"), "{said}");
}

#[test]
fn the_service_publishes_the_keys_the_cli_made_and_makes_none_of_its_own() {
    let dir = configured_dir();
    let first = rotate(dir.path(), &[]);
    let second = rotate(dir.path(), &[]);

    let mut serve = Running(
        command(dir.path(), &["serve"], &[("WXAUTH_LOG__FORMAT", "json")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(serve.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("wxauth serve exited before listening")
            .unwrap();
        if let Ok(event) = serde_json::from_str::<Value>(&line)
            && let Some(addr) = event["fields"]["addr"].as_str()
        {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let jwks = get_json(&format!("http://{addr}/.well-known/jwks.json"));
    drop(serve);

    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [second.as_str(), first.as_str()]);
    // The service did not make a key of its own: the CLI's newest is current.
    assert_eq!(list(dir.path()).len(), 2);
}

/// A GET from a runtime of its own (these tests are synchronous).
fn get_json(url: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::get(url).await.unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.json().await.unwrap()
    })
}

/// Ends the process when the test ends, passed or not.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn gen_admin_key_prints_a_key_and_an_entry_the_configuration_accepts() {
    let dir = configured_dir();
    let said = stdout(&wxauth(
        dir.path(),
        &["gen-admin-key", "--name", "ops"],
        &[],
    ));
    let key = said
        .lines()
        .find(|line| line.starts_with("wxadm_"))
        .unwrap_or_else(|| panic!("{said}"));
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(&key["wxadm_".len()..])
            .unwrap()
            .len(),
        32
    );
    let entry = &said[said.find("[[admins]]").unwrap()..];
    assert!(entry.contains("name = \"ops\""), "{entry}");
    assert!(
        !entry.contains(key),
        "the key itself goes nowhere near the config"
    );
    let config = dir.path().join("wxauth.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(entry);
    std::fs::write(&config, text).unwrap();
    let checked = wxauth(dir.path(), &["check-config", "--offline"], &[]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(said.contains("admins:      ops"), "{said}");
    assert!(said.contains("audit:       entries kept 180d"), "{said}");
    let other = stdout(&wxauth(dir.path(), &["gen-admin-key"], &[]));
    assert!(!other.contains(key));
}

#[test]
fn an_admin_entry_holding_the_key_instead_of_its_hash_is_refused_without_echoing_it() {
    let dir = configured_dir();
    let said = stdout(&wxauth(dir.path(), &["gen-admin-key"], &[]));
    let key = said.lines().find(|l| l.starts_with("wxadm_")).unwrap();
    let config = dir.path().join("wxauth.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[[admins]]\nname = \"ops\"\nkey_hash = \"sha256:{key}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let checked = wxauth(dir.path(), &["check-config", "--offline"], &[]);
    assert!(!checked.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(all.contains("admins[0]"), "{all}");
    assert!(!all.contains(&key["wxadm_".len()..]), "{all}");
}
