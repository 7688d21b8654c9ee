//! The storage a test runs on, chosen by `WXTEST_BACKEND`:
//! `sqlite` (default), `mysql`, `postgres`, or any of them with `+redis` for Redis sessions.
//!
//! Each test gets its own freshly created database (a unique name, dropped afterwards) and its
//! own Redis key prefix (its keys deleted afterwards). Servers come from
//! `WXTEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/mysql`),
//! `WXTEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `WXTEST_REDIS_URL` (default `redis://127.0.0.1:6379`).

// Shared by several test crates, each of which uses only a part.
#![allow(dead_code)]

use std::time::Duration;

use sqlx::{Connection as _, Executor as _, Row as _};
use wxauth::config::{Config, DatabaseUrl, SessionStoreKind};

/// Which SQL database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sql {
    Sqlite,
    Mysql,
    Postgres,
}

/// A provisioned database (and maybe Redis prefix), cleaned up on drop.
pub struct TestBackend {
    pub sql: Sql,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub key_prefix: String,
    admin_url: Option<String>,
    db_name: String,
    _dir: tempfile::TempDir,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn random_suffix() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

impl TestBackend {
    /// The backend named by `WXTEST_BACKEND`.
    pub async fn from_env() -> Self {
        let name = env_or("WXTEST_BACKEND", "sqlite");
        let (sql, redis) = match name.as_str() {
            "sqlite" => (Sql::Sqlite, false),
            "mysql" | "mariadb" => (Sql::Mysql, false),
            "postgres" => (Sql::Postgres, false),
            "sqlite+redis" => (Sql::Sqlite, true),
            "mysql+redis" | "mariadb+redis" => (Sql::Mysql, true),
            "postgres+redis" => (Sql::Postgres, true),
            other => panic!("unknown WXTEST_BACKEND {other:?}"),
        };
        Self::provision(sql, redis).await
    }

    /// Creates a fresh database (and Redis prefix).
    pub async fn provision(sql: Sql, redis: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_name = format!("wxauth_test_{}", random_suffix());
        let (database_url, admin_url) = match sql {
            Sql::Sqlite => (
                format!("sqlite://{}", dir.path().join("wxauth.db").display()),
                None,
            ),
            Sql::Mysql => {
                let admin = env_or("WXTEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql");
                let mut conn = sqlx::MySqlConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("MariaDB/MySQL is not reachable at {admin}: {e}"));
                // No charset given: the migrations must set utf8mb4 themselves.
                conn.execute(format!("CREATE DATABASE {db_name}").as_str())
                    .await
                    .unwrap();
                (replace_database(&admin, &db_name), Some(admin))
            }
            Sql::Postgres => {
                let admin = env_or(
                    "WXTEST_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1:5432/postgres",
                );
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e}"));
                conn.execute(format!("CREATE DATABASE {db_name}").as_str())
                    .await
                    .unwrap();
                (replace_database(&admin, &db_name), Some(admin))
            }
        };
        let redis_url = redis.then(|| env_or("WXTEST_REDIS_URL", "redis://127.0.0.1:6379"));
        if let Some(url) = &redis_url {
            let client = redis::Client::open(url.as_str()).unwrap();
            client
                .get_multiplexed_async_connection()
                .await
                .unwrap_or_else(|e| panic!("Redis is not reachable at {url}: {e}"));
        }
        Self {
            sql,
            database_url,
            redis_url,
            key_prefix: format!("wxauth:test:{}:", random_suffix()),
            admin_url,
            db_name,
            _dir: dir,
        }
    }

    /// Points a config at this backend.
    pub fn apply(&self, config: &mut Config) {
        config.database.url = DatabaseUrl::from(self.database_url.as_str());
        config.database.acquire_timeout = Duration::from_secs(2);
        if let Some(url) = &self.redis_url {
            config.sessions.store = SessionStoreKind::Redis;
            config.sessions.redis_url = Some(DatabaseUrl::from(url.as_str()));
            config.sessions.key_prefix = self.key_prefix.clone();
        }
    }

    /// The same, as environment variables for a `wxauth` process.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("WXAUTH_DATABASE__URL".to_owned(), self.database_url.clone())];
        if let Some(url) = &self.redis_url {
            env.push(("WXAUTH_SESSIONS__STORE".to_owned(), "redis".to_owned()));
            env.push(("WXAUTH_SESSIONS__REDIS_URL".to_owned(), url.clone()));
            env.push((
                "WXAUTH_SESSIONS__KEY_PREFIX".to_owned(),
                self.key_prefix.clone(),
            ));
        }
        env
    }

    async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.database_url).await.unwrap()
    }

    /// A scratch directory that lives as long as the backend (uploads, files).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The merge records: (merged_id, survivor_id).
    pub async fn merges(&self) -> Vec<(String, String)> {
        let pool = self.pool().await;
        sqlx::query("SELECT merged_id, survivor_id FROM user_merges")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|row| (row.try_get(0).unwrap(), row.try_get(1).unwrap()))
            .collect()
    }

    /// Rows in a table.
    pub async fn count(&self, table: &str) -> i64 {
        let pool = self.pool().await;
        let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        row.try_get(0).unwrap()
    }

    /// Sessions stored, wherever they live.
    pub async fn count_sessions(&self) -> usize {
        match &self.redis_url {
            None => usize::try_from(self.count("sessions").await).unwrap(),
            Some(_) => self.redis_keys("s:").await.len(),
        }
    }

    /// When each session was last seen, in a stable order.
    pub async fn session_last_seen(&self) -> Vec<i64> {
        let mut seen: Vec<i64> = if let Some(url) = &self.redis_url {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let mut seen = Vec::new();
            for key in self.redis_keys("s:").await {
                let at: String = redis::cmd("HGET")
                    .arg(&key)
                    .arg("last_seen_at")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                seen.push(at.parse().unwrap());
            }
            seen
        } else {
            let pool = self.pool().await;
            sqlx::query("SELECT last_seen_at FROM sessions")
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get(0).unwrap())
                .collect()
        };
        seen.sort_unstable();
        seen
    }

    /// The client addresses recorded on the sessions.
    pub async fn session_ips(&self) -> Vec<Option<String>> {
        if let Some(url) = &self.redis_url {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let mut ips = Vec::new();
            for key in self.redis_keys("s:").await {
                let ip: Option<String> = redis::cmd("HGET")
                    .arg(&key)
                    .arg("ip")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                ips.push(ip);
            }
            return ips;
        }
        let pool = self.pool().await;
        sqlx::query("SELECT ip FROM sessions")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get(0).unwrap())
            .collect()
    }

    /// Redis keys of this test that would never expire.
    pub async fn keys_without_ttl(&self) -> Vec<String> {
        let url = self.redis_url.as_deref().unwrap();
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut forever = Vec::new();
        for key in self.redis_keys("").await {
            let ttl: i64 = redis::cmd("TTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if ttl < 0 {
                forever.push(key);
            }
        }
        forever
    }

    async fn redis_keys(&self, kind: &str) -> Vec<String> {
        let url = self.redis_url.as_deref().unwrap();
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("KEYS")
            .arg(format!("{}{kind}*", self.key_prefix))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Everything stored about sessions and tokens, as text, to search for leaked secrets.
    pub async fn stored_text(&self) -> String {
        let mut text = String::new();
        if let Some(url) = &self.redis_url {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            for key in self.redis_keys("").await {
                text.push_str(&key);
                let kind: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if kind == "hash" {
                    let fields: Vec<String> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    text.push_str(&fields.join(" "));
                }
            }
        } else {
            let pool = self.pool().await;
            for sql in [
                "SELECT id, session_key FROM sessions",
                "SELECT hash, session_id FROM tokens",
            ] {
                for row in sqlx::query(sql).fetch_all(&pool).await.unwrap() {
                    let a: String = row.try_get(0).unwrap();
                    let b: String = row.try_get(1).unwrap();
                    text.push_str(&a);
                    text.push_str(&b);
                }
            }
        }
        if self.sql == Sql::Sqlite {
            let path = self.database_url.trim_start_matches("sqlite://");
            for file in [path.to_owned(), format!("{path}-wal")] {
                let bytes = std::fs::read(&file).unwrap_or_default();
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        text
    }

    /// Every place that holds `needle` as (part of) a value: "table.column" for each SQL
    /// column of every table, and "redis <key>" for each Redis key under the prefix whose
    /// name or value holds it.
    pub async fn where_found(&self, needle: &str) -> Vec<String> {
        let pool = self.pool().await;
        let columns_sql = match self.sql {
            Sql::Sqlite => {
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
            }
            Sql::Mysql => {
                "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) \
                 FROM information_schema.columns WHERE table_schema = DATABASE()"
            }
            Sql::Postgres => {
                "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) \
                 FROM information_schema.columns WHERE table_schema = 'public'"
            }
        };
        let columns: Vec<(String, String)> = sqlx::query(columns_sql)
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|row| (row.try_get(0).unwrap(), row.try_get(1).unwrap()))
            .collect();
        assert!(columns.len() > 10, "the columns are listed: {columns:?}");
        let text = match self.sql {
            Sql::Mysql => "CHAR",
            _ => "TEXT",
        };
        let mut found = Vec::new();
        for (table, column) in columns {
            let sql =
                format!("SELECT COUNT(*) FROM {table} WHERE CAST({column} AS {text}) LIKE ?",);
            let sql = if self.sql == Sql::Postgres {
                sql.replace('?', "$1")
            } else {
                sql
            };
            let n: i64 = sqlx::query(&sql)
                .bind(format!("%{needle}%"))
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
            if n > 0 {
                found.push(format!("{table}.{column}"));
            }
        }
        if let Some(url) = &self.redis_url {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            for key in self.redis_keys("").await {
                let kind: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let values: Vec<String> = match kind.as_str() {
                    "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await,
                    "set" => {
                        redis::cmd("SMEMBERS")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await
                    }
                    "string" => redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .map(|v: String| vec![v]),
                    _ => Ok(Vec::new()),
                }
                .unwrap();
                if key.contains(needle) || values.iter().any(|v| v.contains(needle)) {
                    found.push(format!("redis {key}"));
                }
            }
        }
        found
    }

    async fn cleanup(
        sql: Sql,
        admin: Option<String>,
        db_name: String,
        redis: Option<String>,
        prefix: String,
    ) {
        match (sql, admin) {
            (Sql::Mysql, Some(admin)) => {
                if let Ok(mut conn) = sqlx::MySqlConnection::connect(&admin).await {
                    // Connections of a server still shutting down would hold metadata locks
                    // and make DROP DATABASE wait: end them first.
                    let ids: Vec<i64> = sqlx::query_scalar(
                        "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = ?",
                    )
                    .bind(&db_name)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default();
                    for id in ids {
                        let _ = conn.execute(format!("KILL {id}").as_str()).await;
                    }
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {db_name}").as_str())
                        .await;
                }
            }
            (Sql::Postgres, Some(admin)) => {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)").as_str())
                        .await;
                }
            }
            _ => {}
        }
        if let Some(url) = redis {
            if let Ok(client) = redis::Client::open(url.as_str()) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{prefix}*"))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<(), _> =
                            redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                }
            }
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if self.admin_url.is_none() && self.redis_url.is_none() {
            return;
        }
        let args = (
            self.sql,
            self.admin_url.clone(),
            self.db_name.clone(),
            self.redis_url.clone(),
            self.key_prefix.clone(),
        );
        // Drop runs inside the test's runtime: clean up on a thread with a runtime of its own,
        // and wait, so nothing is left behind when the process exits.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(TestBackend::cleanup(args.0, args.1, args.2, args.3, args.4));
        });
        let _ = cleanup.join();
    }
}

fn replace_database(url: &str, db_name: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_path(&format!("/{db_name}"));
    parsed.to_string()
}
