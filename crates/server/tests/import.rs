//! `wxauth import django` as an operator runs it: Django's own tables (the DDL its migrations
//! emit, in tests/fixtures/django/) on SQLite, MariaDB and PostgreSQL, filled with good and
//! bad rows, imported by the real binary, and wxauth's database read back; one imported user
//! then logs in through a real `wxauth serve` and the simulator.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/services.rs"]
mod services;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use backend::{Sql, TestBackend};
use serde_json::{Value, json};
use sqlx::{AnyPool, Connection as _, Executor as _, Row as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimConfig};

const APP: &str = "wx1234567890abcdef";
const OTHER_APP: &str = "wxfedcba0987654321";
const DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=";

/// What a `wxauth` run said and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

async fn wxauth(dir: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxauth"));
    command.args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("WXAUTH_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let output = command.output().await.expect("wxauth runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn fixture(dialect: &str, name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/django/{dialect}/{name}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn any_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.unwrap()
}

/// A Django database: a SQLite file, or a MariaDB/PostgreSQL database dropped afterwards.
struct Source {
    url: String,
    pool: AnyPool,
    dialect: &'static str,
    drop: Option<(String, String)>,
}

impl Source {
    async fn sqlite(dir: &Path, models: &[&str]) -> Self {
        let path = dir.join("django.sqlite3");
        let url = format!("sqlite://{}", path.display());
        let pool = any_pool(&format!("{url}?mode=rwc")).await;
        Self::create(url, pool, "sqlite", None, models).await
    }

    /// A fresh utf8mb4 database on MariaDB, or `None` (skipped) outside CI without one.
    async fn mysql(test: &str, models: &[&str]) -> Option<Self> {
        if !services::available(test, &[services::MYSQL]) {
            return None;
        }
        let admin = "mysql://root@127.0.0.1:3306/mysql".to_owned();
        let name = format!("django_src_{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut conn = sqlx::MySqlConnection::connect(&admin).await.unwrap();
        // As the tutorials tell you to: utf8mb4, so that emoji nicknames fit.
        conn.execute(
            format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                .as_str(),
        )
        .await
        .unwrap();
        let url = format!("mysql://root@127.0.0.1:3306/{name}");
        let pool = any_pool(&url).await;
        Some(Self::create(url, pool, "mysql", Some((admin, name)), models).await)
    }

    async fn postgres(test: &str, models: &[&str]) -> Option<Self> {
        if !services::available(test, &[services::POSTGRES]) {
            return None;
        }
        let admin = "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
        let name = format!("django_src_{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let pool = any_pool(&url).await;
        Some(Self::create(url, pool, "postgres", Some((admin, name)), models).await)
    }

    async fn create(
        url: String,
        pool: AnyPool,
        dialect: &'static str,
        drop: Option<(String, String)>,
        models: &[&str],
    ) -> Self {
        let source = Self {
            url,
            pool,
            dialect,
            drop,
        };
        source.run_fixture("django").await;
        for model in models {
            source.run_fixture(model).await;
        }
        source
    }

    async fn run_fixture(&self, name: &str) {
        let sql = fixture(self.dialect, name);
        for statement in sql.split(";\n").filter(|s| !s.trim().is_empty()) {
            self.pool.execute(statement).await.unwrap();
        }
    }

    /// Inserts rows into a table: column names, then one `Value` list per row. PostgreSQL
    /// gets the values as literals, so that text lands in date and time columns as Django's
    /// own literals would.
    async fn insert(&self, table: &str, columns: &[&str], rows: &[Vec<Value>]) {
        for chunk in rows.chunks(200) {
            let postgres = self.dialect == "postgres";
            let tuples: Vec<String> = chunk
                .iter()
                .map(|row| {
                    let values: Vec<String> = row
                        .iter()
                        .map(|value| {
                            if postgres {
                                literal(value)
                            } else {
                                "?".to_owned()
                            }
                        })
                        .collect();
                    format!("({})", values.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES {}",
                columns.join(", "),
                tuples.join(", ")
            );
            let mut query = sqlx::query(&sql);
            if !postgres {
                for value in chunk.iter().flatten() {
                    query = match value {
                        Value::Null => query.bind(None::<String>),
                        Value::Bool(b) => query.bind(*b),
                        Value::Number(n) => query.bind(n.as_i64().unwrap()),
                        Value::String(s) => query.bind(s.clone()),
                        other => panic!("cannot bind {other}"),
                    };
                }
            }
            query.execute(&self.pool).await.unwrap();
        }
    }
}

fn literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => panic!("no literal for {other}"),
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let Some((admin, name)) = self.drop.take() else {
            return;
        };
        let dialect = self.dialect;
        // Drop runs inside the test's runtime: clean up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if dialect == "mysql" {
                    if let Ok(mut conn) = sqlx::MySqlConnection::connect(&admin).await {
                        let _ = conn
                            .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                            .await;
                    }
                } else if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

const WXUSER_COLUMNS: &[&str] = &[
    "openid",
    "name",
    "avatar",
    "language",
    "province",
    "city",
    "country",
    "creat_time",
];

/// A Wxuser row: created at first login with the openid only, or filled from getUserInfo.
fn wxuser(openid: &str, name: &str, avatar: &str) -> Vec<Value> {
    let filled = !name.is_empty();
    let or_blank = |s: &str| json!(if filled { s } else { "" });
    vec![
        json!(openid),
        json!(name),
        json!(avatar),
        or_blank("zh_CN"),
        or_blank("Guangdong"),
        or_blank("Guangzhou"),
        or_blank("China"),
        json!("2019-09-07 15:11:43.123456"),
    ]
}

const ABSTRACT_USER_COLUMNS: &[&str] = &[
    "password",
    "last_login",
    "is_superuser",
    "username",
    "first_name",
    "last_name",
    "email",
    "is_staff",
    "is_active",
    "date_joined",
    "nickname",
    "user_avatar",
    "user_email",
    "user_phone",
    "user_birthday",
    "user_sex",
    "user_address",
    "signature",
];

/// A row of seed 002's User: `create_user(username=openid, password=random)`, then the
/// profile.
fn abstract_user(
    openid: &str,
    nickname: &str,
    avatar: &str,
    phone: Value,
    sex: &str,
) -> Vec<Value> {
    vec![
        json!("pbkdf2_sha256$600000$salt$hash-of-a-random-password="),
        Value::Null,
        json!(false),
        json!(openid),
        json!(""),
        json!(""),
        json!(""),
        json!(false),
        json!(true),
        json!("2020-01-02 03:04:05.678901"),
        json!(nickname),
        json!(avatar),
        json!(""),
        phone,
        json!("2020-01-02"),
        json!(sex),
        Value::Null,
        json!("你好，世界"),
    ]
}

fn openid(n: usize) -> String {
    format!("oGZUI0egBJY1zhBYw2K{n:09}")
}

/// A person as wxauth stored it, through one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    user_id: String,
    nickname: Option<String>,
    avatar_url: Option<String>,
    gender: i64,
    city: Option<String>,
    province: Option<String>,
    country: Option<String>,
    language: Option<String>,
    phone: Option<(String, String)>,
    extra: Option<String>,
    created_at: i64,
    identity_created_at: i64,
}

/// Every identity of `app` in wxauth's database, by openid.
async fn stored(url: &str, app: &str) -> BTreeMap<String, Stored> {
    let pool = any_pool(url).await;
    let mark = if url.starts_with("postgres") {
        "$1"
    } else {
        "?"
    };
    let rows = sqlx::query(&format!(
        "SELECT i.openid, u.id, u.nickname, u.avatar_url, u.gender, u.city, u.province, \
         u.country, u.language, u.phone_country_code, u.phone_number, u.extra, u.created_at, \
         i.created_at FROM identities i JOIN users u ON u.id = i.user_id WHERE i.app_id = {mark}"
    ))
    .bind(app)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.iter()
        .map(|row| {
            let code: Option<String> = row.try_get(9).unwrap();
            let number: Option<String> = row.try_get(10).unwrap();
            (
                row.try_get(0).unwrap(),
                Stored {
                    user_id: row.try_get(1).unwrap(),
                    nickname: row.try_get(2).unwrap(),
                    avatar_url: row.try_get(3).unwrap(),
                    gender: row.try_get(4).unwrap(),
                    city: row.try_get(5).unwrap(),
                    province: row.try_get(6).unwrap(),
                    country: row.try_get(7).unwrap(),
                    language: row.try_get(8).unwrap(),
                    phone: code.zip(number),
                    extra: row.try_get(11).unwrap(),
                    created_at: row.try_get(12).unwrap(),
                    identity_created_at: row.try_get(13).unwrap(),
                },
            )
        })
        .collect()
}

async fn count_users(url: &str) -> i64 {
    let pool = any_pool(url).await;
    let n = sqlx::query("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    pool.close().await;
    n
}

/// wxauth's database: a SQLite file in `dir`.
fn sqlite_target(dir: &Path) -> (String, Vec<(String, String)>) {
    let url = format!("sqlite://{}", dir.join("wxauth.db").display());
    let env = vec![("WXAUTH_DATABASE__URL".to_owned(), url.clone())];
    (url, env)
}

fn import_args<'a>(source: &'a str, app: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["import", "django", "--from", source, "--app-id", app];
    args.extend_from_slice(more);
    args
}

/// The rows of the Wxuser test: three good ones, four bad ones, one with a dropped value.
async fn fill_wxusers(source: &Source) {
    let long_openid = "o".repeat(200);
    source
        .insert(
            "app01_wxuser",
            WXUSER_COLUMNS,
            &[
                wxuser(
                    &openid(1),
                    "小明🐱",
                    "https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132",
                ),
                wxuser(&openid(2), "", ""),
                wxuser("", "没有openid", ""),
                wxuser(&long_openid, "长", ""),
                wxuser(&openid(1), "again", ""),
                wxuser(&openid(6), &"猫".repeat(300), ""),
                wxuser(&openid(7), "Avatar file", "avatars/7.png"),
            ],
        )
        .await;
}

#[tokio::test]
async fn wxuser_rows_become_persons_and_bad_rows_are_listed_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::sqlite(dir.path(), &["wxuser"]).await;
    fill_wxusers(&source).await;
    let (target, env) = sqlite_target(dir.path());

    let run = wxauth(dir.path(), &import_args(&source.url, APP, &[]), &env).await;
    assert_eq!(run.code, Some(3), "rows were left out: {}", run.text());
    let out = &run.stdout;
    assert!(
        out.contains("Reading app01_wxuser (the Wxuser model)"),
        "{out}"
    );
    assert!(
        out.contains("7 read, 3 created, 0 already present, 4 invalid, 1 warning\n"),
        "{out}"
    );
    assert!(out.contains("  id 3: openid is empty\n"), "{out}");
    assert!(
        out.contains(&format!(
            "  id 4 (openid {}...): openid is 200 characters long (at most 128)\n",
            "o".repeat(40)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  id 5 (openid {0}): openid repeats id 1 (openid {0})\n",
            openid(1)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  id 6 (openid {}): nickname is 300 characters long (at most 255)\n",
            openid(6)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  id 7 (openid {}): the avatar is a file path, not an http(s) URL",
            openid(7)
        )),
        "{out}"
    );

    let people = stored(&target, APP).await;
    assert_eq!(
        people.keys().cloned().collect::<Vec<_>>(),
        [openid(1), openid(2), openid(7)]
    );
    let first = &people[&openid(1)];
    assert_eq!(first.nickname.as_deref(), Some("小明🐱"));
    assert_eq!(
        first.avatar_url.as_deref(),
        Some("https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132")
    );
    assert_eq!(
        (
            first.language.as_deref(),
            first.province.as_deref(),
            first.city.as_deref(),
            first.country.as_deref()
        ),
        (
            Some("zh_CN"),
            Some("Guangdong"),
            Some("Guangzhou"),
            Some("China")
        )
    );
    assert_eq!(first.gender, 0);
    assert_eq!(first.phone, None);
    assert_eq!(first.created_at, 1_567_869_103, "creat_time is kept");
    assert_eq!(first.identity_created_at, 1_567_869_103);
    assert_eq!(
        uuid::Uuid::parse_str(&first.user_id)
            .unwrap()
            .get_version_num(),
        7
    );
    // Django's blank '' is no value.
    let blank = &people[&openid(2)];
    assert_eq!(
        (
            blank.nickname.as_deref(),
            blank.avatar_url.as_deref(),
            blank.city.as_deref()
        ),
        (None, None, None)
    );
    assert_eq!(people[&openid(7)].avatar_url, None);
    assert_eq!(people[&openid(7)].nickname.as_deref(), Some("Avatar file"));
    assert_eq!(count_users(&target).await, 3);

    // Again: nothing changes, and it says so.
    let run = wxauth(dir.path(), &import_args(&source.url, APP, &[]), &env).await;
    assert_eq!(run.code, Some(3), "{}", run.text());
    assert!(
        run.stdout
            .contains("7 read, 0 created, 3 already present, 4 invalid, 1 warning\n"),
        "{}",
        run.stdout
    );
    assert_eq!(stored(&target, APP).await, people);
    assert_eq!(count_users(&target).await, 3);
}

#[tokio::test]
async fn a_dry_run_reads_and_checks_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::sqlite(dir.path(), &["wxuser"]).await;
    fill_wxusers(&source).await;
    let (target, env) = sqlite_target(dir.path());

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &["--dry-run"]),
        &env,
    )
    .await;
    assert_eq!(run.code, Some(3), "{}", run.text());
    assert!(
        run.stdout.contains(
            "Dry run: nothing was written. An import would do this:\n\
             7 read, 3 created, 0 already present, 4 invalid, 1 warning\n"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  id 3: openid is empty\n"),
        "{}",
        run.stdout
    );
    assert!(
        !dir.path().join("wxauth.db").exists(),
        "a dry run does not even create wxauth's database"
    );

    let run = wxauth(dir.path(), &import_args(&source.url, APP, &[]), &env).await;
    assert_eq!(run.code, Some(3), "{}", run.text());
    let before = stored(&target, APP).await;
    source
        .insert(
            "app01_wxuser",
            WXUSER_COLUMNS,
            &[
                wxuser(&openid(8), "new", ""),
                wxuser(&openid(9), "newer", ""),
            ],
        )
        .await;
    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &["--dry-run"]),
        &env,
    )
    .await;
    assert!(
        run.stdout
            .contains("9 read, 2 created, 3 already present, 4 invalid, 1 warning\n"),
        "{}",
        run.stdout
    );
    assert_eq!(stored(&target, APP).await, before);
    assert_eq!(count_users(&target).await, 3);
}

async fn fill_abstract_users(source: &Source) {
    source
        .insert(
            "users_user",
            ABSTRACT_USER_COLUMNS,
            &[
                abstract_user(
                    &openid(1),
                    "Band🎸",
                    "image/2020/01/02/band.png",
                    json!(13_800_138_000_i64),
                    "female",
                ),
                abstract_user(
                    &openid(2),
                    "Abroad",
                    "image/default.png",
                    json!(2_025_550_100_i64),
                    "male",
                ),
                abstract_user(&openid(3), "", "image/default.png", Value::Null, "robot"),
            ],
        )
        .await;
}

#[tokio::test]
async fn the_extended_django_user_brings_phone_gender_join_date_and_app_fields() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::sqlite(dir.path(), &["abstract_user"]).await;
    fill_abstract_users(&source).await;
    let (target, env) = sqlite_target(dir.path());

    // No --table: users_user is the one table that looks like a user table.
    let run = wxauth(
        dir.path(),
        &import_args(
            &source.url,
            APP,
            &[
                "--media-url",
                "https://old.example.com/media/",
                "--map",
                "extra.signature=signature",
            ],
        ),
        &env,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.text());
    let out = &run.stdout;
    assert!(
        out.contains("Reading users_user (a User model extending AbstractUser"),
        "{out}"
    );
    assert!(
        out.contains("3 read, 3 created, 0 already present, 0 invalid, 2 warnings\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  id 2 (openid {}): phone 202***0100 is not a mainland China mobile number \
             (11 digits): imported without a phone\n",
            openid(2)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  id 3 (openid {}): gender \"robot\" is not male or female: imported as unknown\n",
            openid(3)
        )),
        "{out}"
    );
    assert!(
        !run.text().contains("2025550100"),
        "phones are never printed in full"
    );
    assert!(
        !run.text().contains("13800138000"),
        "phones are never printed in full"
    );
    assert!(!run.text().contains("pbkdf2"), "{}", run.text());

    let people = stored(&target, APP).await;
    let band = &people[&openid(1)];
    assert_eq!(band.nickname.as_deref(), Some("Band🎸"));
    assert_eq!(
        band.avatar_url.as_deref(),
        Some("https://old.example.com/media/image/2020/01/02/band.png")
    );
    assert_eq!(
        band.phone,
        Some(("86".to_owned(), "13800138000".to_owned()))
    );
    assert_eq!(band.gender, 2);
    assert_eq!(band.created_at, 1_577_934_245, "date_joined is kept");
    assert_eq!(
        serde_json::from_str::<Value>(band.extra.as_deref().unwrap()).unwrap(),
        json!({ "signature": "你好，世界" })
    );
    let abroad = &people[&openid(2)];
    assert_eq!((abroad.gender, abroad.phone.clone()), (1, None));
    assert_eq!(
        abroad.avatar_url.as_deref(),
        Some("https://old.example.com/media/image/default.png")
    );
    let third = &people[&openid(3)];
    assert_eq!((third.nickname.clone(), third.gender), (None, 0));
}

#[tokio::test]
async fn a_table_of_another_shape_is_read_through_map() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::sqlite(dir.path(), &[]).await;
    source
        .pool
        .execute(
            "CREATE TABLE \"members\" (\"pk\" integer NOT NULL PRIMARY KEY AUTOINCREMENT, \
             \"wx_openid\" varchar(64) NOT NULL UNIQUE, \"nick\" varchar(64) NOT NULL, \
             \"town\" varchar(64) NULL)",
        )
        .await
        .unwrap();
    source
        .insert(
            "members",
            &["wx_openid", "nick", "town"],
            &[
                vec![json!(openid(1)), json!("阿强"), json!("深圳")],
                vec![json!(openid(2)), json!("Mei"), Value::Null],
            ],
        )
        .await;
    let (target, env) = sqlite_target(dir.path());

    let run = wxauth(
        dir.path(),
        &import_args(
            &source.url,
            APP,
            &[
                "--table",
                "members",
                "--map",
                "key=pk,openid=wx_openid",
                "--map",
                "nickname=nick,city=town",
            ],
        ),
        &env,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert!(
        run.stdout
            .contains("  columns: key=pk,openid=wx_openid,nickname=nick,city=town\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 read, 2 created"), "{}", run.stdout);
    let people = stored(&target, APP).await;
    assert_eq!(people[&openid(1)].nickname.as_deref(), Some("阿强"));
    assert_eq!(people[&openid(1)].city.as_deref(), Some("深圳"));
    assert_eq!(people[&openid(2)].city, None);
}

#[tokio::test]
async fn mistakes_are_explained_with_what_the_source_has_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::sqlite(dir.path(), &["wxuser"]).await;
    let (_, env) = sqlite_target(dir.path());
    let fails_saying = |run: Run, said: &str| {
        assert_eq!(run.code, Some(1), "{}", run.text());
        assert!(
            run.stderr.contains(said),
            "wanted {said:?} in:\n{}",
            run.text()
        );
        run
    };

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &["--table", "app01_user"]),
        &env,
    )
    .await;
    fails_saying(
        run,
        "error: the source has no table \"app01_user\" (tables found: app01_wxuser, \
         auth_group, django_migrations)",
    );

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &["--map", "nickname=nick_name"]),
        &env,
    )
    .await;
    fails_saying(
        run,
        "error: --map nickname=nick_name: the table app01_wxuser has no column \
         \"nick_name\" (its columns: id, openid, name, avatar, language, province, city, \
         country, creat_time)",
    );

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &["--map", "nick=name"]),
        &env,
    )
    .await;
    fails_saying(run, "unknown field \"nick\" (fields: key, openid, nickname");

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &["--table", "django_migrations"]),
        &env,
    )
    .await;
    fails_saying(
        run,
        "no column of django_migrations is mapped to the openid: give --map openid=COLUMN",
    );

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, "not an app", &[]),
        &env,
    )
    .await;
    let run = fails_saying(
        run,
        "--app-id must be an AppID: wx followed by 16 hexadecimal characters",
    );
    assert!(
        !run.text().contains("not an app"),
        "the value is not echoed"
    );

    let run = wxauth(
        dir.path(),
        &import_args("redis://127.0.0.1:6379", APP, &[]),
        &env,
    )
    .await;
    fails_saying(
        run,
        "--from must start with sqlite://, mysql:// or postgres://",
    );

    let missing = format!("sqlite://{}", dir.path().join("nowhere.sqlite3").display());
    let run = wxauth(dir.path(), &import_args(&missing, APP, &[]), &env).await;
    fails_saying(run, "Failed to open the Django database");
    assert!(
        !dir.path().join("nowhere.sqlite3").exists(),
        "the source is opened read-only, never created"
    );

    // The password of the source never shows.
    let run = wxauth(
        dir.path(),
        &import_args("mysql://django:hunter2@127.0.0.1:1/wx", APP, &[]),
        &env,
    )
    .await;
    let run = fails_saying(
        run,
        "Failed to open the Django database mysql://django:***@127.0.0.1:1/wx",
    );
    assert!(!run.text().contains("hunter2"), "{}", run.text());
    assert!(
        !dir.path().join("wxauth.db").exists(),
        "nothing is written before the source is read"
    );

    // No user table, or two: say which tables there are.
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = Source::sqlite(empty_dir.path(), &[]).await;
    let run = wxauth(dir.path(), &import_args(&empty.url, APP, &[]), &env).await;
    fails_saying(
        run,
        "no table looks like a Django user table (app01_wxuser, authorization_user, or a User \
         with username, nickname and user_avatar); name it with --table and say which column \
         is the openid with --map openid=COLUMN (tables found: auth_group, django_migrations)",
    );
    let both_dir = tempfile::tempdir().unwrap();
    let both = Source::sqlite(both_dir.path(), &["wxuser", "authorization_user"]).await;
    let run = wxauth(dir.path(), &import_args(&both.url, APP, &[]), &env).await;
    fails_saying(
        run,
        "several tables look like Django user tables: app01_wxuser (the Wxuser model), \
         authorization_user (a User model with open_id and nickname); choose one with --table",
    );
}

/// 1,234 rows: two full batches and a part; each arrives once, in any number of runs.
async fn more_rows_than_a_batch_arrive_once(
    dir: &Path,
    source: &Source,
    target: &str,
    env: &[(String, String)],
) {
    let rows: Vec<Vec<Value>> = (1000..2234)
        .map(|n| wxuser(&openid(n), &format!("用户{n}🙂"), ""))
        .collect();
    source.insert("app01_wxuser", WXUSER_COLUMNS, &rows).await;
    let args = import_args(&source.url, APP, &["--table", "app01_wxuser"]);
    let run = wxauth(dir, &args, env).await;
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert!(
        run.stdout
            .contains("1234 read, 1234 created, 0 already present, 0 invalid, 0 warnings\n"),
        "{}",
        run.stdout
    );
    let people = stored(target, APP).await;
    assert_eq!(people.len(), 1234);
    assert_eq!(
        people[&openid(1733)].nickname.as_deref(),
        Some("用户1733🙂")
    );
    let run = wxauth(dir, &args, env).await;
    assert!(
        run.stdout
            .contains("1234 read, 0 created, 1234 already present, 0 invalid, 0 warnings\n"),
        "{}",
        run.stdout
    );
    assert_eq!(count_users(target).await, 1234);
}

#[tokio::test]
async fn more_rows_than_a_batch_all_arrive_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::sqlite(dir.path(), &["wxuser"]).await;
    let (target, env) = sqlite_target(dir.path());
    more_rows_than_a_batch_arrive_once(dir.path(), &source, &target, &env).await;
}

#[tokio::test]
async fn an_interrupted_import_leaves_whole_batches_and_the_next_run_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::sqlite(dir.path(), &["wxuser"]).await;
    let total = 20_250;
    let rows: Vec<Vec<Value>> = (0..total)
        .map(|n| wxuser(&openid(n), &format!("u{n}"), ""))
        .collect();
    source.insert("app01_wxuser", WXUSER_COLUMNS, &rows).await;
    let (target, env) = sqlite_target(dir.path());
    let run = wxauth(dir.path(), &["migrate"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.text());

    let mut import = Command::new(env!("CARGO_BIN_EXE_wxauth"));
    import
        .args(import_args(&source.url, APP, &[]))
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = import.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // SIGKILL: no chance to tidy up; only the database's transactions protect the data.
    let _ = child.kill().await;

    let pool = any_pool(&target).await;
    let users: i64 = sqlx::query("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let identities: i64 = sqlx::query("SELECT COUNT(*) FROM identities")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    pool.close().await;
    assert_eq!(users, identities, "no person without its identity");
    assert!(
        users % 500 == 0 || users == i64::try_from(total).unwrap(),
        "whole batches only: {users}"
    );

    let run = wxauth(dir.path(), &import_args(&source.url, APP, &[]), &env).await;
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert!(
        run.stdout.contains(&format!(
            "{total} read, {} created, {users} already present, 0 invalid",
            i64::try_from(total).unwrap() - users
        )),
        "{}",
        run.stdout
    );
    assert_eq!(count_users(&target).await, i64::try_from(total).unwrap());
}

#[tokio::test]
async fn a_utf8mb4_mariadb_source_moves_emoji_nicknames_into_a_mariadb_wxauth() {
    let test = "a_utf8mb4_mariadb_source_moves_emoji_nicknames_into_a_mariadb_wxauth";
    let Some(source) = Source::mysql(test, &["wxuser", "authorization_user"]).await else {
        return;
    };
    let backend = TestBackend::provision(Sql::Mysql, false).await;
    let env: Vec<(String, String)> = backend.env();
    let dir = tempfile::tempdir().unwrap();
    source
        .insert(
            "app01_wxuser",
            WXUSER_COLUMNS,
            &[
                wxuser(
                    &openid(1),
                    "🐼熊猫👨‍👩‍👧",
                    "https://thirdwx.qlogo.cn/mmopen/p/132",
                ),
                wxuser("", "no openid", ""),
                wxuser(&"x".repeat(255), "too long", ""),
            ],
        )
        .await;
    source
        .insert(
            "authorization_user",
            &["open_id", "nickname"],
            &[
                vec![json!(openid(1)), json!("同一个人 in another app 🌏")],
                vec![json!(openid(2)), json!("猫".repeat(256))],
            ],
        )
        .await;

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &["--table", "app01_wxuser"]),
        &env,
    )
    .await;
    assert_eq!(run.code, Some(3), "{}", run.text());
    assert!(
        run.stdout
            .contains("3 read, 1 created, 0 already present, 2 invalid, 0 warnings\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  id 2: openid is empty\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("openid is 255 characters long (at most 128)\n"),
        "{}",
        run.stdout
    );

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, OTHER_APP, &["--table", "authorization_user"]),
        &env,
    )
    .await;
    assert_eq!(run.code, Some(3), "{}", run.text());
    assert!(
        run.stdout.contains(&format!(
            "  id 2 (openid {}): nickname is 256 characters long (at most 255)\n",
            openid(2)
        )),
        "{}",
        run.stdout
    );

    let people = stored(&backend.database_url, APP).await;
    assert_eq!(people.len(), 1);
    let panda = &people[&openid(1)];
    assert_eq!(panda.nickname.as_deref(), Some("🐼熊猫👨‍👩‍👧"));
    assert_eq!(panda.created_at, 1_567_869_103);
    let other = stored(&backend.database_url, OTHER_APP).await;
    assert_eq!(
        other[&openid(1)].nickname.as_deref(),
        Some("同一个人 in another app 🌏")
    );
    assert_ne!(
        other[&openid(1)].user_id,
        panda.user_id,
        "without a unionid, two apps' openids are two persons"
    );

    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &["--table", "app01_wxuser"]),
        &env,
    )
    .await;
    assert!(
        run.stdout
            .contains("3 read, 0 created, 1 already present, 2 invalid, 0 warnings\n"),
        "{}",
        run.stdout
    );
    assert_eq!(stored(&backend.database_url, APP).await, people);

    let clean = Source::mysql(test, &["wxuser"]).await.unwrap();
    let batch_backend = TestBackend::provision(Sql::Mysql, false).await;
    more_rows_than_a_batch_arrive_once(
        dir.path(),
        &clean,
        &batch_backend.database_url,
        &batch_backend.env(),
    )
    .await;
}

#[tokio::test]
async fn a_postgres_source_and_a_postgres_wxauth_work_alike() {
    let test = "a_postgres_source_and_a_postgres_wxauth_work_alike";
    let Some(source) = Source::postgres(test, &["abstract_user"]).await else {
        return;
    };
    fill_abstract_users(&source).await;
    let backend = TestBackend::provision(Sql::Postgres, false).await;
    let dir = tempfile::tempdir().unwrap();
    let run = wxauth(
        dir.path(),
        &import_args(&source.url, APP, &[]),
        &backend.env(),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert!(
        run.stdout
            .contains("3 read, 3 created, 0 already present, 0 invalid, 5 warnings\n"),
        "{}",
        run.stdout
    );
    let people = stored(&backend.database_url, APP).await;
    let band = &people[&openid(1)];
    assert_eq!(band.nickname.as_deref(), Some("Band🎸"));
    assert_eq!(
        band.phone,
        Some(("86".to_owned(), "13800138000".to_owned()))
    );
    assert_eq!((band.gender, band.created_at), (2, 1_577_934_245));
    assert_eq!(band.avatar_url, None, "a file path without --media-url");
}

/// A `wxauth serve` process on `env`'s database, talking to the simulator.
async fn serve(
    env: &[(String, String)],
    sim: &wechat_sim::SimHandle,
) -> (tokio::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("WXAUTH_SERVER__LISTEN", "127.0.0.1:0")
        .env("WXAUTH_WECHAT__API_BASE", sim.base_url())
        .env("WXAUTH_SECURITY__DATA_KEY", DATA_KEY)
        .env("TEST_APP_SECRET", DEMO_APP_SECRET)
        .env(
            "WXAUTH_APPS",
            format!("[{{app_id=\"{DEMO_APP_ID}\",secret_env=\"TEST_APP_SECRET\"}}]"),
        )
        .env("WXAUTH_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = event["fields"]["addr"].as_str()
            {
                return addr.to_owned();
            }
        }
        panic!("wxauth serve exited before listening");
    })
    .await
    .expect("wxauth serve starts listening");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}

#[tokio::test]
async fn an_imported_user_logs_in_to_the_account_they_had() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::sqlite(dir.path(), &["wxuser"]).await;
    let alice = wechat_sim::people::derive_openid(DEMO_APP_ID, "alice");
    source
        .insert(
            "app01_wxuser",
            WXUSER_COLUMNS,
            &[wxuser(
                &alice,
                "爱丽丝🌸",
                "https://thirdwx.qlogo.cn/mmopen/alice/132",
            )],
        )
        .await;
    let (target, env) = sqlite_target(dir.path());
    let run = wxauth(
        dir.path(),
        &import_args(&source.url, DEMO_APP_ID, &[]),
        &env,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.text());
    let imported = stored(&target, DEMO_APP_ID).await[&alice].clone();

    let sim = wechat_sim::spawn(
        SimConfig::default(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let (mut server, url) = serve(&env, &sim).await;
    let http = reqwest::Client::new();
    let code: Value = http
        .post(format!("{}/sim/login", sim.base_url()))
        .json(&json!({ "appid": DEMO_APP_ID, "user": "alice" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login: Value = http
        .post(format!("{url}/v1/auth/login"))
        .json(&json!({ "code": code["code"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["is_new_user"], json!(false), "{login}");
    assert_eq!(login["user"]["id"], json!(imported.user_id), "{login}");
    assert_eq!(login["user"]["openid"], json!(alice));
    assert_eq!(login["user"]["nickname"], json!("爱丽丝🌸"));
    let me: Value = http
        .get(format!("{url}/v1/me"))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["nickname"], json!("爱丽丝🌸"), "{me}");
    assert_eq!(
        me["avatar_url"],
        json!("https://thirdwx.qlogo.cn/mmopen/alice/132")
    );
    assert_eq!(me["city"], json!("Guangzhou"));
    assert_eq!(me["created_at"], json!("2019-09-07T15:11:43Z"), "{me}");
    server.kill().await.unwrap();
}
