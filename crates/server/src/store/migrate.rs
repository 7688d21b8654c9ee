//! Applying migrations when several instances start at once on a fresh database.
//!
//! Every instance applies pending migrations at start, so they must take turns: the first
//! applies them, the others wait and then find nothing left to do. The turn is a database lock
//! held on one dedicated connection for the whole run:
//!
//! - MySQL/MariaDB: `GET_LOCK('wxauth_migrate', timeout)`. sqlx's own MySQL migrator lock is
//!   `GET_LOCK(name, -1)` with its result ignored; MariaDB rejects a negative timeout (a
//!   warning and NULL, at once), so there two instances migrated side by side, and because
//!   MySQL commits DDL implicitly the loser failed with "migration … is partially applied" or
//!   a duplicate key on `_sqlx_migrations`.
//! - PostgreSQL: an advisory lock (sqlx takes one too; this one also has a deadline).
//! - SQLite: the database's own write lock, `BEGIN IMMEDIATE` around the whole run.
//!
//! The connection is closed afterwards, never handed back to the pool, so a lock cannot
//! outlive the run, on success, on error, or when start-up is abandoned halfway.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection as _};
use tokio::time::Instant;

use super::sql::Dialect;

/// The MySQL/MariaDB lock name (locks are server-wide there, so one name for every database).
const MYSQL_LOCK: &str = "wxauth_migrate";
/// The PostgreSQL advisory lock key (advisory locks are per database): "wxauthmg" in ASCII.
const POSTGRES_LOCK: i64 = 0x7778_6175_7468_6d67;
/// How long an instance waits for another one to finish migrating before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(600);
/// How often a waiting instance asks again (PostgreSQL and SQLite).
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Applies `migrator`'s pending migrations while holding the database's migration lock.
pub async fn run(pool: &AnyPool, dialect: Dialect, migrator: &Migrator) -> anyhow::Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .context("Failed to get a database connection for the migrations")?;
    // Whatever happens below, the connection (and any lock on it) ends with this run.
    conn.close_on_drop();
    let result = match dialect {
        Dialect::Sqlite => run_sqlite(&mut conn, migrator).await,
        Dialect::MySql | Dialect::Postgres => run_locked(&mut conn, dialect, migrator).await,
    };
    if let Err(err) = conn.close().await {
        tracing::debug!(error = %err, "could not close the migration connection cleanly");
    }
    result
}

async fn run_locked(
    conn: &mut PoolConnection<Any>,
    dialect: Dialect,
    migrator: &Migrator,
) -> anyhow::Result<()> {
    lock(conn, dialect).await?;
    let applied = migrator
        .run(&mut **conn)
        .await
        .context("Failed to apply database migrations");
    let released = unlock(conn, dialect).await;
    applied?;
    // Not fatal: closing the connection releases the lock anyway.
    if let Err(err) = released {
        tracing::warn!(error = %err, "could not release the migration lock");
    }
    Ok(())
}

async fn lock(conn: &mut PoolConnection<Any>, dialect: Dialect) -> anyhow::Result<()> {
    if try_lock(conn, dialect, Duration::ZERO).await? {
        return Ok(());
    }
    tracing::info!("another instance is applying database migrations: waiting for it");
    if try_lock(conn, dialect, LOCK_WAIT).await? {
        return Ok(());
    }
    anyhow::bail!(
        "Failed to apply database migrations: another instance held the migration lock for \
         more than {}s (if no other instance is migrating, look for a stuck connection on the \
         database)",
        LOCK_WAIT.as_secs()
    )
}

/// Whether the lock was taken within `wait`.
async fn try_lock(
    conn: &mut PoolConnection<Any>,
    dialect: Dialect,
    wait: Duration,
) -> anyhow::Result<bool> {
    match dialect {
        Dialect::MySql => {
            let wait = i64::try_from(wait.as_secs()).unwrap_or(i64::MAX);
            // 1: taken; 0: timed out; NULL: an error (such as a bad timeout).
            let taken: Option<i64> = sqlx::query_scalar("SELECT CAST(GET_LOCK(?, ?) AS SIGNED)")
                .bind(MYSQL_LOCK)
                .bind(wait)
                .fetch_one(&mut **conn)
                .await
                .context("Failed to take the migration lock")?;
            match taken {
                Some(1) => Ok(true),
                Some(_) => Ok(false),
                None => anyhow::bail!("Failed to take the migration lock: GET_LOCK returned NULL"),
            }
        }
        Dialect::Postgres => {
            let deadline = Instant::now() + wait;
            loop {
                let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(POSTGRES_LOCK)
                    .fetch_one(&mut **conn)
                    .await
                    .context("Failed to take the migration lock")?;
                if taken {
                    return Ok(true);
                }
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
        Dialect::Sqlite => Ok(true),
    }
}

async fn unlock(conn: &mut PoolConnection<Any>, dialect: Dialect) -> anyhow::Result<()> {
    let sql = match dialect {
        Dialect::MySql => "SELECT RELEASE_LOCK(?)",
        Dialect::Postgres => "SELECT pg_advisory_unlock($1)",
        Dialect::Sqlite => return Ok(()),
    };
    let query = sqlx::query(sql);
    let query = match dialect {
        Dialect::MySql => query.bind(MYSQL_LOCK),
        _ => query.bind(POSTGRES_LOCK),
    };
    query.execute(&mut **conn).await?;
    Ok(())
}

/// SQLite has no named locks: the whole run is one write transaction. A second process
/// waits for the write lock (busy_timeout at a time, until [`LOCK_WAIT`]), then sees the
/// migrations applied. DDL is transactional in SQLite, so a failure leaves nothing behind.
async fn run_sqlite(conn: &mut PoolConnection<Any>, migrator: &Migrator) -> anyhow::Result<()> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut waited = false;
    let mut tx = loop {
        match conn.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => break tx,
            Err(err) if is_busy(&err) && Instant::now() < deadline => {
                if !waited {
                    tracing::info!("another process is applying database migrations: waiting");
                    waited = true;
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(err) => {
                return Err(err).context("Failed to lock the database for the migrations");
            }
        }
    };
    migrator
        .run(&mut *tx)
        .await
        .context("Failed to apply database migrations")?;
    tx.commit()
        .await
        .context("Failed to commit the database migrations")
}

/// SQLITE_BUSY or SQLITE_LOCKED, with or without an extended code.
fn is_busy(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}
