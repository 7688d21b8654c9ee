//! What `wxauth check-config` learns by connecting: whether the database answers (with a hint
//! for each kind of failure), whether its migrations are applied, and whether Redis answers
//! and keeps every key. Nothing is created, migrated or written.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::Connection as _;
use sqlx::any::AnyConnectOptions;
use sqlx::migrate::Migrate as _;
use url::Url;

use super::redis::{judge_eviction, maxmemory_policy};
use super::sql::migrator;
use crate::config::{DatabaseConfig, Dialect, SessionsConfig, duration};

/// What one check found: lines to show, and problems (each a sentence with its fix).
#[derive(Debug, Default)]
pub struct Report {
    /// `(label, text)` lines for the summary.
    pub facts: Vec<(&'static str, String)>,
    /// What must be fixed.
    pub problems: Vec<String>,
    /// What works but deserves a look.
    pub warnings: Vec<String>,
}

/// Where a URL points, for messages.
struct Target {
    host: String,
    port: u16,
    database: String,
    user: String,
}

impl Target {
    fn of(url: &str, default_port: u16) -> Option<Self> {
        let url = Url::parse(url).ok()?;
        Some(Self {
            host: url.host_str().unwrap_or("localhost").to_owned(),
            port: url.port().unwrap_or(default_port),
            database: url.path().trim_start_matches('/').to_owned(),
            user: url.username().to_owned(),
        })
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Connects to `database.url` (read-only for SQLite, never creating it) and compares its
/// applied migrations with this binary's.
pub async fn database(config: &DatabaseConfig) -> Report {
    let mut report = Report::default();
    let shown = config.url.masked();
    let Some(dialect) = Dialect::of_url(config.url.expose()) else {
        // Config::resolve has said so already.
        return report;
    };
    let url = config.url.expose();
    let (label, url) = match dialect {
        Dialect::Sqlite => {
            if url.contains(":memory:") || url.contains("mode=memory") {
                report.facts.push((
                    "database",
                    format!("{shown} (SQLite in memory: every start begins empty)"),
                ));
                return report;
            }
            match sqlite_file(url) {
                Ok(Some(url)) => ("SQLite", url),
                Ok(None) => {
                    report.facts.push((
                        "database",
                        format!(
                            "{shown} (SQLite; the file does not exist yet: `wxauth migrate` or \
                             the first `wxauth serve` creates it)"
                        ),
                    ));
                    report.facts.push((
                        "migrations",
                        format!("none applied yet ({} to apply)", known(dialect).len()),
                    ));
                    return report;
                }
                Err(problem) => {
                    report
                        .problems
                        .push(format!("database.url {shown}: {problem}"));
                    return report;
                }
            }
        }
        Dialect::MySql => ("MySQL/MariaDB", url.to_owned()),
        Dialect::Postgres => ("PostgreSQL", url.to_owned()),
    };
    let mut conn = match connect(&url, dialect, config.acquire_timeout).await {
        Ok(conn) => conn,
        Err(problem) => {
            report
                .facts
                .push(("database", format!("{shown} ({label}, cannot connect)")));
            report
                .problems
                .push(format!("database.url {shown}: {problem}"));
            return report;
        }
    };
    let version = server_version(&mut conn, dialect)
        .await
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    report
        .facts
        .push(("database", format!("{shown} ({label}{version}, connected)")));
    match migrations(&mut conn, dialect).await {
        Ok((fact, problems)) => {
            report.facts.push(("migrations", fact));
            report.problems.extend(problems);
        }
        Err(err) => report
            .problems
            .push(format!("cannot read the applied migrations: {err}")),
    }
    let _ = conn.close().await;
    report
}

/// The SQLite URL to open read-only, `None` when the file does not exist yet (that is fine
/// when its directory does: it is created on start).
fn sqlite_file(url: &str) -> Result<Option<String>, String> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let path = options.get_filename();
    if path.exists() {
        let sep = if url.contains('?') { '&' } else { '?' };
        return Ok(Some(if url.contains("mode=") {
            url.to_owned()
        } else {
            format!("{url}{sep}mode=ro")
        }));
    }
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(format!(
            "the directory {} does not exist, so the file cannot be created",
            dir.display()
        )),
        _ => Ok(None),
    }
}

async fn connect(url: &str, dialect: Dialect, timeout: Duration) -> Result<AnyConnection, String> {
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(url).map_err(|e| format!("cannot be read: {e}"))?;
    let default_port = if dialect == Dialect::Postgres {
        5432
    } else {
        3306
    };
    let target = Target::of(url, default_port);
    match tokio::time::timeout(timeout, AnyConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(explain_connect_error(&err, dialect, target.as_ref())),
        Err(_) => Err(format!(
            "no answer from {} within {} (database.acquire_timeout): check the host, the port \
             and any firewall in between",
            target
                .as_ref()
                .map_or_else(|| "the server".to_owned(), Target::addr),
            duration::format(timeout)
        )),
    }
}

/// One sentence per kind of failure, with what to do about it.
fn explain_connect_error(err: &sqlx::Error, dialect: Dialect, target: Option<&Target>) -> String {
    let addr = target.map_or_else(|| "its host and port".to_owned(), Target::addr);
    if let Some(db) = err.as_database_error() {
        let number = db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|e| e.number());
        let code = db.code().map(|c| c.into_owned());
        let access_denied = matches!(number, Some(1044 | 1045 | 1698))
            || matches!(code.as_deref(), Some("28P01" | "28000"));
        let unknown_database = number == Some(1049) || code.as_deref() == Some("3D000");
        if access_denied {
            let user = target.map_or("", |t| t.user.as_str());
            return format!(
                "access denied for user `{user}`: check the user/password and that the user may \
                 connect from this host (the server said: {})",
                db.message()
            );
        }
        if unknown_database {
            let name = target.map_or("wxauth", |t| t.database.as_str());
            let create = match dialect {
                Dialect::Postgres => {
                    let owner = target.map_or("wxauth", |t| t.user.as_str());
                    format!(
                        "CREATE DATABASE {name} OWNER {owner} ENCODING 'UTF8' TEMPLATE template0"
                    )
                }
                _ => format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
            };
            return format!("the database `{name}` does not exist on {addr}: create it: {create}");
        }
        return format!("the database refused the connection: {}", db.message());
    }
    match err {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused: is it running on {addr}?")
        }
        sqlx::Error::Io(io) => format!("cannot reach {addr}: {io}"),
        sqlx::Error::Tls(tls) => format!("the TLS handshake with {addr} failed: {tls}"),
        other => format!("cannot connect to {addr}: {other}"),
    }
}

async fn server_version(conn: &mut AnyConnection, dialect: Dialect) -> Option<String> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT sqlite_version()",
        Dialect::MySql => "SELECT VERSION()",
        Dialect::Postgres => "SHOW server_version",
    };
    sqlx::query_scalar::<_, String>(sql)
        .fetch_one(&mut *conn)
        .await
        .ok()
}

fn known(dialect: Dialect) -> Vec<&'static sqlx::migrate::Migration> {
    migrator(dialect)
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect()
}

/// Compares `_sqlx_migrations` with the migrations built in, without applying anything.
async fn migrations(
    conn: &mut AnyConnection,
    dialect: Dialect,
) -> Result<(String, Vec<String>), String> {
    let known = known(dialect);
    let exists_sql = match dialect {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Dialect::MySql => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'"
        }
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
    };
    let exists: i64 = sqlx::query_scalar(exists_sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    if exists == 0 {
        return Ok((
            format!(
                "none applied yet: `wxauth migrate` (or the first `wxauth serve`) applies all {}",
                known.len()
            ),
            Vec::new(),
        ));
    }
    let applied = conn
        .list_applied_migrations()
        .await
        .map_err(|e| e.to_string())?;
    let dirty = conn.dirty_version().await.map_err(|e| e.to_string())?;

    let mut problems = Vec::new();
    if let Some(version) = dirty {
        let name = known
            .iter()
            .find(|m| m.version == version)
            .map(|m| format!(" ({})", m.description))
            .unwrap_or_default();
        problems.push(format!(
            "migration {version}{name} is partially applied (a run failed halfway): fix the \
             cause, undo what it did, delete its row from _sqlx_migrations, and migrate again"
        ));
    }
    for row in &applied {
        match known.iter().find(|m| m.version == row.version) {
            None => problems.push(format!(
                "the database has migration {}, which this wxauth does not know: it was \
                 migrated by a newer version; run that version",
                row.version
            )),
            Some(m) if m.checksum != row.checksum && dirty != Some(row.version) => {
                problems.push(format!(
                    "migration {} ({}) in the database differs from this wxauth's: the \
                     migration files were changed after it was applied",
                    m.version, m.description
                ));
            }
            Some(_) => {}
        }
    }
    let pending: Vec<_> = known
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    let fact = if pending.is_empty() {
        format!("all {} applied", known.len())
    } else {
        format!(
            "{} of {} pending, applied by `wxauth migrate` or at the next `wxauth serve`: {}",
            pending.len(),
            known.len(),
            pending.join(", ")
        )
    };
    Ok((fact, problems))
}

/// Connects to `sessions.redis_url`, pings it and reads its eviction policy.
pub async fn redis(config: &SessionsConfig) -> Report {
    let mut report = Report::default();
    let Some(url) = config
        .redis_url
        .as_ref()
        .filter(|u| u.expose().starts_with("redis://"))
    else {
        // Config::resolve has said what is wrong with it.
        return report;
    };
    let shown = url.masked();
    let target = Target::of(url.expose(), 6379);
    let addr = target
        .as_ref()
        .map_or_else(|| "its host and port".to_owned(), Target::addr);
    let timeout = config.redis_timeout;
    let client = match redis::Client::open(url.expose()) {
        Ok(client) => client,
        Err(err) => {
            report
                .problems
                .push(format!("sessions.redis_url {shown} cannot be read: {err}"));
            return report;
        }
    };
    let connection_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    let connected = tokio::time::timeout(timeout, async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&connection_config)
            .await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    })
    .await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            let why = if err.is_connection_refusal() {
                format!("connection refused: is it running on {addr}?")
            } else if err.kind() == redis::ErrorKind::AuthenticationFailed
                || matches!(err.code(), Some("NOAUTH" | "WRONGPASS"))
            {
                "authentication failed: check the user/password in sessions.redis_url".to_owned()
            } else {
                let said = err.to_string();
                let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
                format!("cannot use Redis at {addr}: {said}")
            };
            report
                .facts
                .push(("sessions", format!("redis {shown} (cannot connect)")));
            report
                .problems
                .push(format!("sessions.redis_url {shown}: {why}"));
            return report;
        }
        Err(_) => {
            report
                .facts
                .push(("sessions", format!("redis {shown} (no answer)")));
            report.problems.push(format!(
                "sessions.redis_url {shown}: no answer from {addr} within {} \
                 (sessions.redis_timeout): check the host, the port and any firewall in between",
                duration::format(timeout)
            ));
            return report;
        }
    };
    let policy = maxmemory_policy(&mut conn).await;
    match judge_eviction(policy.as_deref(), config.allow_eviction, &shown) {
        Ok(None) => {}
        Ok(Some(warning)) => report.warnings.push(warning),
        Err(problem) => report.problems.push(problem),
    }
    report.facts.push((
        "sessions",
        format!(
            "redis {shown} (connected; maxmemory-policy {}; key prefix {:?}; timeout {})",
            policy.as_deref().unwrap_or("unknown"),
            config.key_prefix,
            duration::format(timeout)
        ),
    ));
    report
}
