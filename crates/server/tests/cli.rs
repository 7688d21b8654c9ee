//! The `wxauth` commands other than demo, run as a user would.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/services.rs"]
mod services;

use std::io::{BufRead as _, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::Connection as _;

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
    assert!(
        said.contains("refresh 7d, session at most 180d"),
        "durations as they are written: {said}"
    );
    assert!(said.contains("sessions:"), "{said}");
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

/// A directory holding `GOOD_CONFIG` and its data key; the app secret comes from
/// `MY_APP_SECRET`.
fn good_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wxauth.toml"), GOOD_CONFIG).unwrap();
    let key = String::from_utf8(wxauth(dir.path(), &["gen-key"], &[]).stdout).unwrap();
    std::fs::write(dir.path().join("data.key"), key).unwrap();
    dir
}

const SECRET: (&str, &str) = ("MY_APP_SECRET", "s3cret");

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The line of `said` that starts with `label:` (indented, as check-config prints it).
fn line<'a>(said: &'a str, label: &str) -> &'a str {
    said.lines()
        .find(|l| l.trim_start().starts_with(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no {label} line in: {said}"))
}

#[test]
fn a_misspelled_section_or_key_is_named_with_the_nearest_known_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wxauth.toml"),
        "[sesions]\nstore = \"sql\"\n",
    )
    .unwrap();
    let output = wxauth(dir.path(), &["check-config"], &[]);
    assert!(!output.status.success());
    let file = dir.path().join("wxauth.toml").canonicalize().unwrap();
    let file = file.display();
    assert!(
        text(&output).contains(&format!(
            "unknown section `sesions` in {file} (did you mean `sessions`?)"
        )),
        "{}",
        text(&output)
    );

    std::fs::write(
        dir.path().join("wxauth.toml"),
        "[tokens]\nacces_ttl = \"1h\"\n",
    )
    .unwrap();
    let output = wxauth(dir.path(), &["serve"], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains(&format!(
            "unknown key `acces_ttl` in section [tokens] of {file} (did you mean `access_ttl`?)"
        )),
        "{}",
        text(&output)
    );
}

#[test]
fn a_wxauth_variable_that_names_no_key_is_refused_with_a_hint() {
    let dir = good_dir();
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[SECRET, ("WXAUTH_DATABASE_URL", "mysql://db/wxauth")],
    );
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains(
            "unknown environment variable WXAUTH_DATABASE_URL: it names no configuration key \
             (did you mean `WXAUTH_DATABASE__URL`?)"
        ),
        "{said}"
    );
    assert!(
        !said.contains("mysql://db"),
        "the value is not echoed: {said}"
    );

    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[
            SECRET,
            (
                "WXAUTH_APPS",
                "[{app_id=\"wx1234567890abcdef\",secret_envv=\"MY_APP_SECRET\"}]",
            ),
        ],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains(
            "unknown key `secret_envv` in entry 1 of WXAUTH_APPS (did you mean `secret_env`?)"
        ),
        "{}",
        text(&output)
    );

    // The client tests' own variables are not config keys and are let through.
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[
            SECRET,
            ("WXAUTH_BIN", "/usr/local/bin/wxauth"),
            ("WXAUTH_TEST_LOG", "debug"),
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn check_config_refuses_a_malformed_app_id_and_plain_http_to_a_remote_wechat() {
    let dir = good_dir();
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[
            SECRET,
            (
                "WXAUTH_APPS",
                "[{app_id=\"wx12345\",secret_env=\"MY_APP_SECRET\"}]",
            ),
            ("WXAUTH_WECHAT__API_BASE", "http://api.weixin.qq.com"),
        ],
    );
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains("apps[0]: app_id \"wx12345\" is not a WeChat AppID"),
        "{said}"
    );
    assert!(
        said.contains("wechat.api_base http://api.weixin.qq.com/ is plain http"),
        "{said}"
    );

    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[SECRET, ("WXAUTH_WECHAT__API_BASE", "http://127.0.0.1:8081")],
    );
    assert!(
        output.status.success(),
        "a local simulator is fine: {}",
        text(&output)
    );
}

#[test]
fn check_config_connects_to_the_database_and_names_one_that_refuses() {
    let dir = good_dir();
    let port = closed_port();
    let url = format!("mysql://wxauth:pw@127.0.0.1:{port}/wxauth");
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[SECRET, ("WXAUTH_DATABASE__URL", url.as_str())],
    );
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains(&format!(
            "connection refused: is it running on 127.0.0.1:{port}?"
        )),
        "{said}"
    );
    assert!(!said.contains(":pw@"), "the password is masked: {said}");

    let output = wxauth(
        dir.path(),
        &["check-config", "--offline"],
        &[SECRET, ("WXAUTH_DATABASE__URL", url.as_str())],
    );
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        line(&said, "database").contains("not checked: --offline"),
        "{said}"
    );
}

/// A server URL from the test environment with another database name.
fn with_database(env: &str, default: &str, database: &str) -> String {
    let mut url =
        url::Url::parse(&std::env::var(env).unwrap_or_else(|_| default.to_owned())).unwrap();
    url.set_path(database);
    url.to_string()
}

#[test]
fn check_config_explains_a_wrong_mariadb_user_and_a_missing_database() {
    if !services::available("check-config on MariaDB", &[services::MYSQL]) {
        return;
    }
    let dir = good_dir();
    let admin = "mysql://root@127.0.0.1:3306/mysql";
    let mut stranger = url::Url::parse(&with_database("WXTEST_MYSQL_URL", admin, "mysql")).unwrap();
    stranger.set_username("wxauth_no_such_user").unwrap();
    stranger.set_password(Some("nope")).unwrap();
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[SECRET, ("WXAUTH_DATABASE__URL", stranger.as_str())],
    );
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains(
            "access denied for user `wxauth_no_such_user`: check the user/password and that \
             the user may connect from this host"
        ),
        "{said}"
    );

    let missing = with_database("WXTEST_MYSQL_URL", admin, "wxauth_no_such_db");
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[SECRET, ("WXAUTH_DATABASE__URL", missing.as_str())],
    );
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains(
            "the database `wxauth_no_such_db` does not exist on 127.0.0.1:3306: create it: \
             CREATE DATABASE wxauth_no_such_db CHARACTER SET utf8mb4"
        ),
        "{said}"
    );
}

#[test]
fn check_config_explains_a_missing_postgres_database() {
    if !services::available("check-config on PostgreSQL", &[services::POSTGRES]) {
        return;
    }
    let dir = good_dir();
    let missing = with_database(
        "WXTEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
        "wxauth_no_such_db",
    );
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[SECRET, ("WXAUTH_DATABASE__URL", missing.as_str())],
    );
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains("the database `wxauth_no_such_db` does not exist")
            && said.contains("CREATE DATABASE wxauth_no_such_db"),
        "{said}"
    );
}

/// Runs SQL on a SQLite file.
fn sqlite(file: &Path, sql: &str) {
    let url = format!("sqlite://{}", file.display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    });
}

#[test]
fn check_config_says_whether_the_migrations_are_applied_without_applying_them() {
    let dir = good_dir();
    let output = wxauth(dir.path(), &["check-config"], &[SECRET]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        line(&said, "database").contains("does not exist yet"),
        "{said}"
    );
    assert!(
        !dir.path().join("data.db").exists(),
        "check-config creates nothing"
    );

    assert!(wxauth(dir.path(), &["migrate"], &[SECRET]).status.success());
    let output = wxauth(dir.path(), &["check-config"], &[SECRET]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(line(&said, "database").contains("SQLite"), "{said}");
    let migrations = line(&said, "migrations");
    assert!(
        migrations.contains("all") && migrations.ends_with("applied"),
        "{said}"
    );

    let db = dir.path().join("data.db");
    sqlite(
        &db,
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    );
    let output = wxauth(dir.path(), &["check-config"], &[SECRET]);
    let said = text(&output);
    assert!(
        output.status.success(),
        "pending migrations are applied at start: {said}"
    );
    assert!(line(&said, "migrations").contains("1 of"), "{said}");
    assert!(line(&said, "migrations").contains("pending"), "{said}");
    let output = wxauth(dir.path(), &["check-config"], &[SECRET]);
    assert!(
        line(&text(&output), "migrations").contains("pending"),
        "checking applied nothing"
    );

    sqlite(
        &db,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', 1, X'00', 0)",
    );
    let output = wxauth(dir.path(), &["check-config"], &[SECRET]);
    let said = text(&output);
    assert!(!output.status.success());
    assert!(
        said.contains("the database has migration 99990101000000, which this wxauth does not know"),
        "{said}"
    );

    sqlite(
        &db,
        "DELETE FROM _sqlx_migrations WHERE version = 99990101000000",
    );
    sqlite(
        &db,
        "UPDATE _sqlx_migrations SET success = 0 WHERE version = (SELECT MIN(version) FROM \
         _sqlx_migrations)",
    );
    let output = wxauth(dir.path(), &["check-config"], &[SECRET]);
    let said = text(&output);
    assert!(!output.status.success());
    assert!(said.contains("is partially applied"), "{said}");
}

#[test]
fn check_config_names_a_redis_that_refuses() {
    let dir = good_dir();
    let port = closed_port();
    let url = format!("redis://127.0.0.1:{port}");
    let output = wxauth(
        dir.path(),
        &["check-config"],
        &[
            SECRET,
            ("WXAUTH_SESSIONS__STORE", "redis"),
            ("WXAUTH_SESSIONS__REDIS_URL", url.as_str()),
        ],
    );
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains(&format!(
            "connection refused: is it running on 127.0.0.1:{port}?"
        )),
        "{said}"
    );
}

/// A Redis of the test's own, so that its settings cannot disturb other tests.
struct PrivateRedis {
    child: Child,
    url: String,
}

impl PrivateRedis {
    /// Starts `redis-server` with `args` on a free port; `None` (outside CI) when it is not
    /// installed.
    fn start(test: &str, args: &[&str]) -> Option<Self> {
        let port = closed_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) if std::env::var_os("CI").is_some() => {
                panic!("{test}: redis-server cannot be started ({err}), and CI requires it")
            }
            Err(err) => {
                eprintln!("SKIPPED {test}: redis-server cannot be started ({err})");
                return None;
            }
        };
        let redis = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{test}: redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(redis)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wxauth serve` and reads its log until it listens (or exits); returns the log and
/// whether it was listening. The process is stopped either way.
fn serve_until_listening(dir: &Path, env: &[(&str, &str)]) -> (String, bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxauth"));
    command.arg("serve").current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("WXAUTH_") || key == "NO_COLOR" || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    let mut child = command
        .envs(env.iter().copied())
        .env("WXAUTH_SERVER__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, read) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let mut listening = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(line) = read.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("wxauth listening") {
            listening = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (log, listening)
}

#[test]
fn serve_refuses_a_redis_that_may_evict_keys_unless_allowed() {
    let test = "eviction policy";
    let Some(lru) = PrivateRedis::start(test, &["--maxmemory-policy", "allkeys-lru"]) else {
        return;
    };
    let dir = good_dir();
    let redis = [
        SECRET,
        ("WXAUTH_SESSIONS__STORE", "redis"),
        ("WXAUTH_SESSIONS__REDIS_URL", lru.url.as_str()),
    ];
    let (log, listening) = serve_until_listening(dir.path(), &redis);
    assert!(!listening, "{log}");
    assert!(
        log.contains("maxmemory-policy allkeys-lru")
            && log.contains("Set `maxmemory-policy noeviction`")
            && log.contains("sessions.allow_eviction = true"),
        "{log}"
    );
    let output = wxauth(dir.path(), &["check-config"], &redis);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("maxmemory-policy allkeys-lru"),
        "{}",
        text(&output)
    );

    let allowed = [
        redis.as_slice(),
        &[("WXAUTH_SESSIONS__ALLOW_EVICTION", "true")],
    ]
    .concat();
    let (log, listening) = serve_until_listening(dir.path(), &allowed);
    assert!(listening, "{log}");
    assert!(
        log.contains("WARN") && log.contains("may evict keys"),
        "{log}"
    );
}

#[test]
fn a_redis_without_config_is_judged_by_its_info_and_one_without_either_starts_with_a_warning() {
    let test = "eviction policy through INFO";
    let Some(lru) = PrivateRedis::start(
        test,
        &[
            "--maxmemory-policy",
            "volatile-lru",
            "--rename-command",
            "CONFIG",
            "",
        ],
    ) else {
        return;
    };
    let dir = good_dir();
    let (log, listening) = serve_until_listening(
        dir.path(),
        &[
            SECRET,
            ("WXAUTH_SESSIONS__STORE", "redis"),
            ("WXAUTH_SESSIONS__REDIS_URL", lru.url.as_str()),
        ],
    );
    assert!(!listening, "{log}");
    assert!(log.contains("maxmemory-policy volatile-lru"), "{log}");

    let Some(kept) = PrivateRedis::start(
        test,
        &[
            "--maxmemory-policy",
            "noeviction",
            "--rename-command",
            "CONFIG",
            "",
        ],
    ) else {
        return;
    };
    let (log, listening) = serve_until_listening(
        dir.path(),
        &[
            SECRET,
            ("WXAUTH_SESSIONS__STORE", "redis"),
            ("WXAUTH_SESSIONS__REDIS_URL", kept.url.as_str()),
        ],
    );
    assert!(listening, "{log}");
    assert!(!log.contains("evict"), "{log}");

    // Neither CONFIG nor INFO: the policy cannot be known, so the service warns and starts.
    let Some(mute) = PrivateRedis::start(
        test,
        &[
            "--rename-command",
            "CONFIG",
            "",
            "--rename-command",
            "INFO",
            "",
        ],
    ) else {
        return;
    };
    let (log, listening) = serve_until_listening(
        dir.path(),
        &[
            SECRET,
            ("WXAUTH_SESSIONS__STORE", "redis"),
            ("WXAUTH_SESSIONS__REDIS_URL", mute.url.as_str()),
        ],
    );
    assert!(listening, "{log}");
    assert!(
        log.contains("WARN") && log.contains("cannot read the maxmemory-policy"),
        "{log}"
    );
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = good_dir();
    // The database is left to its default, which logs a warning too.
    std::fs::write(
        dir.path().join("wxauth.toml"),
        GOOD_CONFIG.replace("[database]\nurl = \"sqlite://data.db\"\n", ""),
    )
    .unwrap();
    let (log, listening) = serve_until_listening(dir.path(), &[SECRET]);
    assert!(listening, "{log}");
    assert!(log.contains("WARN") && log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI escapes: {log:?}");
}

#[test]
fn commands_that_read_no_config_refuse_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--config", "wxauth.toml", "gen-key"][..],
        &["gen-key", "--config", "wxauth.toml"],
        &["--config", "wxauth.toml", "sim", "--listen", "127.0.0.1:0"],
        &["demo", "--config", "wxauth.toml", "--listen", "127.0.0.1:0"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wxauth"))
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} ran instead of refusing --config");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        assert!(
            output.stdout.is_empty(),
            "{args:?} printed: {}",
            text(&output)
        );
        let said = text(&output);
        assert!(
            said.contains("reads no configuration file, so --config wxauth.toml would be ignored"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn serve_creates_the_media_directory_and_names_one_it_cannot_write() {
    let dir = good_dir();
    let media = dir.path().join("state/media");
    let media_env = media.to_str().unwrap().to_owned();
    let (log, listening) = serve_until_listening(
        dir.path(),
        &[SECRET, ("WXAUTH_STORAGE__MEDIA_DIR", media_env.as_str())],
    );
    assert!(listening, "{log}");
    assert!(media.is_dir(), "{} was not created", media.display());

    // A path below a regular file can never be a directory.
    std::fs::write(dir.path().join("plain-file"), b"").unwrap();
    let blocked = dir.path().join("plain-file/media");
    let blocked_env = blocked.to_str().unwrap().to_owned();
    let (log, listening) = serve_until_listening(
        dir.path(),
        &[SECRET, ("WXAUTH_STORAGE__MEDIA_DIR", blocked_env.as_str())],
    );
    assert!(
        !listening,
        "started with an unusable media directory: {log}"
    );
    assert!(
        log.contains("media directory") && log.contains("storage.media_dir"),
        "{log}"
    );
}
