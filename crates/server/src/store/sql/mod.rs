//! The SQL backend, one implementation for SQLite, MySQL/MariaDB and PostgreSQL.
//!
//! # Layout
//! - this module: connecting, migrations, the rules every operation shares (placeholders per
//!   dialect, running writes detached, sorting driver errors);
//! - [`users`]: persons and identities ([`UserStore`](super::UserStore));
//! - [`sessions`]: sessions and their tokens ([`SessionStore`](super::SessionStore));
//! - [`codes`]: login codes recently exchanged ([`CodeCache`](super::CodeCache));
//! - [`events`]: the event outbox, webhook deliveries and the feed;
//! - [`admin`]: finding persons and erasing one; [`audit`]: the audit log;
//! - [`group`]: group commit of SQLite's hot writes (a login's person and session, a
//!   refresh's rotation): queued for the one writer, run in one transaction per batch, each
//!   in a savepoint of its own.
//!
//! Queries are written once, next to the method that runs them, with `?` placeholders; for
//! PostgreSQL (`$1`, `$2`, …) and for SQLite (no `FOR UPDATE`) they are rewritten on first use
//! and the rewrite kept, never per request. Every query is a prepared statement cached per
//! connection. Each backend has its own plain-SQL migrations under `migrations/<backend>/`.
//!
//! Concurrency: the unique keys decide. A login that loses a race on (app_id, openid) or on
//! unionid gets a unique violation, rolls its transaction back (nothing half-written) and
//! tries again, finding the winner's rows. SQLite transactions start `BEGIN IMMEDIATE`: SQLite
//! cannot upgrade a read transaction to a write one while another connection writes, so
//! taking the write lock up front makes writers queue (busy_timeout) instead of failing.

mod admin;
mod audit;
mod auth_cache;
mod codes;
pub mod events;
mod group;
mod readers;
mod sessions;
mod stats;
mod users;

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr as _;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Executor as _, Transaction};

pub use self::admin::{Erased, UserFilter};
pub use self::auth_cache::{AuthCache, FOREIGN_WRITES_SEEN_WITHIN, TOUCH_EVERY};
pub use self::stats::{LoginRow, StatsBatch, StatsFailure, WechatRow};
use super::StoreError;
use crate::config::DatabaseConfig;
pub use crate::config::Dialect;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The embedded migrations of a backend.
pub fn migrator(dialect: Dialect) -> &'static sqlx::migrate::Migrator {
    match dialect {
        Dialect::Sqlite => &SQLITE_MIGRATIONS,
        Dialect::MySql => &MYSQL_MIGRATIONS,
        Dialect::Postgres => &POSTGRES_MIGRATIONS,
    }
}

/// Rewrites a query for a dialect: `?` → `$n` for PostgreSQL; SQLite has no row locks (its
/// `BEGIN IMMEDIATE` already serializes writers), so `FOR UPDATE` goes.
pub fn rewrite(dialect: Dialect, sql: &str) -> String {
    match dialect {
        Dialect::MySql => sql.to_owned(),
        Dialect::Sqlite => sql.replace(" FOR UPDATE", ""),
        Dialect::Postgres => {
            let mut out = String::with_capacity(sql.len() + 8);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}

/// A query with its values bound, borrowing them for `'q`.
pub(super) type Query<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// A query with its arguments, as [`SqlStore::write_one`] binds it.
type AnyQuery = Query<'static>;

/// Queries rewritten for a dialect, by the address of their text: a fixed, small set.
static REWRITTEN: LazyLock<RwLock<HashMap<(Dialect, usize), &'static str>>> =
    LazyLock::new(RwLock::default);

/// Users and sessions in one SQL database. Cheap to clone (a pool handle).
///
/// Cancellation: every operation that writes runs to completion in its own task
/// ([`SqlStore::detached`]). A request future dropped at an await point (a client that hung
/// up) would otherwise drop a transaction mid-way: a connection dropped while `BEGIN` is in
/// flight goes back to the pool inside a transaction that nothing ends, and on SQLite it keeps
/// the write lock, stopping every other write.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    /// On SQLite, the reading connections of the hot reads ([`SqlStore::reader`]).
    readers: Option<Arc<readers::Readers>>,
    /// On SQLite, the one connection that writes ([`SqlStore::writer`]).
    writer: Option<AnyPool>,
    dialect: Dialect,
    /// On SQLite (one process owns the file): live tokens' sessions and persons.
    auth_cache: Option<Arc<AuthCache>>,
    /// The webhook endpoints new events are queued for, and who waits for new events.
    outbox: Arc<events::Outbox>,
    /// On SQLite, the group-commit queue in front of the writer ([`SqlStore::grouped`]).
    group: Option<group::GroupWriter>,
}

impl SqlStore {
    /// Connects (creating a SQLite file if needed) and applies migrations.
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let url = config.url.expose();
        let dialect = Dialect::of_url(url).with_context(|| {
            format!(
                "database.url must start with sqlite://, mysql:// or postgres:// (got {})",
                config.url.masked()
            )
        })?;
        let url = match dialect {
            // Create the file on first start.
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .with_context(|| format!("Failed to parse database.url {}", config.url.masked()))?;
        // On SQLite the hot reads have connections of their own (`readers`): the pool serves
        // the rest (migrations, checkpoints, the operator's reads) with a few.
        let pooled = match dialect {
            Dialect::Sqlite => config.max_connections.min(SQLITE_POOLED),
            _ => config.max_connections,
        };
        let pool = pool_options(config, dialect, pooled, SQLITE_READER_CACHE_KIB)
            .connect_with(options.clone())
            .await
            .with_context(|| {
                format!(
                    "Failed to connect to the database {} (is it running, and does the \
                     database exist?)",
                    config.url.masked()
                )
            })?;
        super::migrate::run(&pool, dialect, migrator(dialect)).await?;
        let readers = match dialect {
            Dialect::Sqlite => {
                let mut connections = Vec::new();
                for _ in 0..config.max_connections {
                    let mut conn =
                        AnyConnection::connect_with(&options)
                            .await
                            .with_context(|| {
                                format!("Failed to open the database {}", config.url.masked())
                            })?;
                    sqlite_settings(&mut conn, SQLITE_READER_CACHE_KIB).await?;
                    connections.push(conn);
                }
                Some(Arc::new(readers::Readers::new(
                    connections,
                    config.acquire_timeout,
                )))
            }
            _ => None,
        };
        // SQLite takes one writer at a time: writers queue for one connection in the order
        // they came, instead of racing for the file lock and sleeping in SQLite's busy
        // handler (the tail latency of every write).
        let writer = match dialect {
            Dialect::Sqlite => Some(
                pool_options(config, dialect, 1, SQLITE_WRITER_CACHE_KIB)
                    .connect_with(options)
                    .await
                    .with_context(|| {
                        format!("Failed to open the database {}", config.url.masked())
                    })?,
            ),
            _ => None,
        };
        let auth_cache = (dialect == Dialect::Sqlite).then(|| Arc::new(AuthCache::new()));
        if let Some(cache) = &auth_cache {
            tokio::spawn(sweep_auth_cache(Arc::downgrade(cache)));
        }
        let outbox: Arc<events::Outbox> = Arc::default();
        let group = writer.as_ref().map(|writer| {
            let outbox = outbox.clone();
            group::GroupWriter::start(
                writer.clone(),
                pool.clone(),
                auth_cache.clone(),
                Arc::new(move || outbox.written.notify_waiters()),
            )
        });
        Ok(Self {
            pool,
            readers,
            writer,
            dialect,
            auth_cache,
            outbox,
            group,
        })
    }

    /// A SQLite store in a file of its own in `dir` (for unit tests).
    #[cfg(test)]
    pub(crate) async fn sqlite_in(dir: &std::path::Path) -> Self {
        let config = DatabaseConfig {
            url: crate::config::DatabaseUrl::from(
                format!("sqlite://{}", dir.join("wxauth.db").display()).as_str(),
            ),
            acquire_timeout: std::time::Duration::from_secs(5),
            ..DatabaseConfig::default()
        };
        Self::connect(&config).await.unwrap()
    }

    /// The backend in use.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pool (for the WeChat token cache, which shares the database).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection for one read on the hot paths (a login, an access token's check): on
    /// SQLite one of the reading connections kept out of the pool (see [`readers`]),
    /// elsewhere one from the pool.
    pub(crate) async fn reader(&self) -> Result<readers::ReadConn<'_>, StoreError> {
        match &self.readers {
            Some(readers) => Ok(readers::ReadConn::Set(readers.get().await?)),
            None => self
                .pool
                .acquire()
                .await
                .map(readers::ReadConn::Pooled)
                .map_err(store_error),
        }
    }

    /// The pool that writes go to: on SQLite a single connection, elsewhere the pool.
    pub fn writer(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    /// Rewrites `?` placeholders for this backend (for callers that keep their own copy).
    pub fn prepare(&self, sql: &str) -> String {
        rewrite(self.dialect, sql)
    }

    /// A query in this backend's dialect; rewritten once per process, then reused.
    pub(crate) fn q(&self, sql: &'static str) -> &'static str {
        let unchanged = match self.dialect {
            Dialect::MySql => true,
            Dialect::Sqlite => !sql.contains(" FOR UPDATE"),
            Dialect::Postgres => !sql.contains('?'),
        };
        if unchanged {
            return sql;
        }
        let key = (self.dialect, sql.as_ptr() as usize);
        if let Some(done) = REWRITTEN
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return done;
        }
        let mut cache = REWRITTEN.write().unwrap_or_else(PoisonError::into_inner);
        cache
            .entry(key)
            .or_insert_with(|| Box::leak(rewrite(self.dialect, sql).into_boxed_str()))
    }

    /// Runs a store operation to completion in a task of its own, whatever happens to the
    /// caller: a dropped request cannot leave a transaction, a lock or a half-made change.
    ///
    /// An operation the database chose as a deadlock victim (InnoDB does so even for two
    /// single statements that lock one row's primary and secondary index entries in opposite
    /// orders, e.g. a purge by expiry beside a delete by key) was rolled back whole, so it is
    /// run again, a few times, after a short random pause.
    ///
    /// Once it is over, what the auth cache holds is stale (see [`AuthCache`]).
    pub(crate) async fn detached<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(SqlStore) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.run_detached(op, true).await
    }

    /// [`SqlStore::detached`] for a write that cannot change what a cached access token
    /// means (a new session, a login code, recording use): the auth cache stays.
    pub(crate) async fn detached_quiet<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(SqlStore) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.run_detached(op, false).await
    }

    async fn run_detached<T, F, Fut>(&self, op: F, invalidates: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(SqlStore) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let store = self.clone();
        tokio::spawn(async move {
            let _invalidate = invalidates.then(|| Invalidate(store.auth_cache.clone()));
            let mut attempt = 0;
            loop {
                match op(store.clone()).await {
                    Err(err) if attempt < DEADLOCK_RETRIES && is_deadlock_victim(&err) => {
                        attempt += 1;
                        let pause = rand::random_range(1..=10 * attempt as u64);
                        tracing::debug!(attempt, "deadlock victim: running the operation again");
                        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                    }
                    outcome => return outcome,
                }
            }
        })
        .await
        .map_err(|err| {
            StoreError::Other(anyhow::anyhow!(
                "a database operation did not finish: {err}"
            ))
        })?
    }

    /// Runs a write in a transaction, to completion whatever happens to the caller; on
    /// SQLite in the group-commit queue (see [`group`]): one transaction and one commit for
    /// whatever writes have queued up, each write in a savepoint of its own.
    ///
    /// `op` runs the write's statements on the connection it is given and says whether its
    /// changes are kept (`false`: rolled back, e.g. nothing to change after all); an error
    /// rolls them back too. Elsewhere it may run again after a deadlock (see
    /// [`SqlStore::detached`]). Events written by a kept write are announced after the commit.
    pub(crate) async fn grouped<T, F>(&self, invalidates: bool, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> Fn(
                SqlStore,
                &'c mut AnyConnection,
            ) -> BoxFuture<'c, Result<(T, bool), StoreError>>
            + Send
            + Sync
            + 'static,
    {
        let Some(group) = &self.group else {
            let op = Arc::new(op);
            return self
                .run_detached(
                    move |store| {
                        let op = op.clone();
                        async move {
                            let mut tx = store.begin().await?;
                            let outcome = op(store.clone(), &mut tx).await;
                            let kept = matches!(outcome, Ok((_, true)));
                            let value = group::settle(tx, outcome).await?;
                            if kept {
                                store.events_written();
                            }
                            Ok(value)
                        }
                    },
                    invalidates,
                )
                .await;
        };
        let store = self.clone();
        let value = group
            .write(
                invalidates,
                group::job(move |conn| {
                    let write = op(store, conn);
                    Box::pin(async move {
                        let (value, keep) = write.await?;
                        Ok((Box::new(value) as Box<dyn std::any::Any + Send>, keep))
                    })
                }),
            )
            .await?;
        value.downcast::<T>().map(|value| *value).map_err(|_| {
            StoreError::Other(anyhow::anyhow!(
                "a queued write gave back an unexpected value"
            ))
        })
    }

    /// Whether the database takes a write now: a write transaction is opened (on SQLite
    /// this takes the write lock), given a statement that writes nothing (refused on a
    /// read-only server), and rolled back, within `timeout`.
    pub async fn ready_for_writes(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        const PROBE: &str = "UPDATE login_codes SET expires_at = expires_at WHERE hash = ''";
        let probe = self.detached_quiet(|store| async move {
            let mut tx = store.begin().await?;
            sqlx::query(store.q(PROBE))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            tx.rollback().await.map_err(store_error)
        });
        match tokio::time::timeout(timeout, probe).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable {
                store: "database",
                source: anyhow::anyhow!("a write transaction could not start in {timeout:?}"),
            }),
        }
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Runs one statement that writes, detached, and gives the rows it changed.
    async fn write_one(
        &self,
        sql: &'static str,
        bind: impl Fn(AnyQuery) -> AnyQuery + Send + Sync + 'static,
    ) -> Result<u64, StoreError> {
        self.run_write_one(sql, bind, true).await
    }

    /// [`SqlStore::write_one`] for a write that leaves the auth cache as it is (see
    /// [`SqlStore::detached_quiet`]).
    async fn write_one_quiet(
        &self,
        sql: &'static str,
        bind: impl Fn(AnyQuery) -> AnyQuery + Send + Sync + 'static,
    ) -> Result<u64, StoreError> {
        self.run_write_one(sql, bind, false).await
    }

    async fn run_write_one(
        &self,
        sql: &'static str,
        bind: impl Fn(AnyQuery) -> AnyQuery + Send + Sync + 'static,
        invalidates: bool,
    ) -> Result<u64, StoreError> {
        let bind = Arc::new(bind);
        self.run_detached(
            move |store| {
                let bind = bind.clone();
                async move {
                    let query = bind(sqlx::query(store.q(sql)));
                    Ok(query
                        .execute(store.writer())
                        .await
                        .map_err(store_error)?
                        .rows_affected())
                }
            },
            invalidates,
        )
        .await
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let begin = match self.dialect {
            Dialect::Sqlite => self.writer().begin_with("BEGIN IMMEDIATE").await,
            _ => self.pool.begin().await,
        };
        begin.map_err(store_error)
    }
}

/// Sweeps the auth cache every [`FOREIGN_WRITES_SEEN_WITHIN`] (see [`AuthCache::sweep_at`]),
/// for as long as it exists.
async fn sweep_auth_cache(cache: std::sync::Weak<AuthCache>) {
    let mut every = tokio::time::interval(FOREIGN_WRITES_SEEN_WITHIN);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        cache.sweep_at(std::time::Instant::now());
    }
}

/// SQLite's page cache of each reading connection, in KiB (`PRAGMA cache_size = -N`).
///
/// Each connection has a cache of its own, SQLite's default 2 MiB: with ten readers, the
/// pool's two and the writer that is 26 MiB of process memory once the database outgrows it,
/// most of it the same pages twelve times over. A reader finds the pages it misses in the
/// operating system's file cache (one `pread`, no disk), and keeps the upper levels of the
/// b-trees it walks; the writer keeps SQLite's default, since it changes pages in place.
const SQLITE_READER_CACHE_KIB: u32 = 256;

/// The connections of SQLite's pool at most, beside the reading connections of the hot reads
/// (`database.max_connections` of them): its reads are the operator's and the background's.
const SQLITE_POOLED: u32 = 2;

/// The writer's page cache, in KiB: SQLite's default.
const SQLITE_WRITER_CACHE_KIB: u32 = 2048;

/// The WAL pages after which the writer checkpoints by itself (SQLite's default is 1000): a net
/// only, for writes the checkpoints after each batch do not follow (see [`group`]). A reader's
/// setting is never used (it commits nothing).
const SQLITE_WRITER_AUTOCHECKPOINT: u32 = 4000;

/// How long a pooled MySQL or PostgreSQL connection may sit idle before it is tested (a ping)
/// on its next use.
const TEST_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Pool settings shared by the readers and the SQLite writer: WAL with its file kept small
/// after checkpoints, a busy timeout for what other processes hold, and a page cache of
/// `cache_kib` per connection.
fn pool_options(
    config: &DatabaseConfig,
    dialect: Dialect,
    max: u32,
    cache_kib: u32,
) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(config.min_connections.min(max))
        .acquire_timeout(config.acquire_timeout)
        // The pool tests every connection it takes back (a ping on release), so one that is
        // idle was sound when it was put there. Testing it again before each use would cost
        // every query a second round trip (on SQLite, a hand-off to the connection's thread);
        // only a connection idle long enough to have been dropped by the server, a proxy or
        // a firewall is tested. A SQLite file does not go away.
        .test_before_acquire(false);
    let options = if dialect == Dialect::Sqlite {
        options
    } else {
        options.before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= TEST_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
    };
    options.after_connect(move |conn, _| {
        Box::pin(async move {
            if dialect == Dialect::Sqlite {
                sqlite_settings(conn, cache_kib).await?;
            }
            Ok(())
        })
    })
}

/// A SQLite connection's settings: WAL with its file kept small after checkpoints, a busy
/// timeout for what other processes hold, and a page cache of `cache_kib`.
async fn sqlite_settings(conn: &mut AnyConnection, cache_kib: u32) -> Result<(), sqlx::Error> {
    conn.execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = 16777216;",
    )
    .await?;
    conn.execute(
        format!(
            "PRAGMA cache_size = -{cache_kib}; \
                 PRAGMA wal_autocheckpoint = {SQLITE_WRITER_AUTOCHECKPOINT}"
        )
        .as_str(),
    )
    .await?;
    Ok(())
}

/// Rolls back after a failed statement: `Ok(())` when it lost a race (unique key, deadlock)
/// and is worth another try, the error otherwise.
async fn abandon(tx: Transaction<'static, Any>, err: sqlx::Error) -> Result<(), StoreError> {
    // The transaction is void either way; a failed rollback is only worth a log line.
    if let Err(rollback) = tx.rollback().await {
        tracing::debug!(error = %rollback, "rollback after a failed statement");
    }
    if is_unique_violation(&err) || is_deadlock(&err) {
        Ok(())
    } else {
        Err(store_error(err))
    }
}

/// A stored value that does not parse into its type (a broken row).
fn corrupt(what: &'static str) -> impl Fn(wxauth_wechat::ParseError) -> sqlx::Error {
    move |err| sqlx::Error::Decode(format!("a stored {what} does not parse: {err}").into())
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Moves the auth cache to a new generation when dropped: when a detached write is over,
/// however it ended.
struct Invalidate(Option<Arc<AuthCache>>);

impl Drop for Invalidate {
    fn drop(&mut self) {
        if let Some(cache) = &self.0 {
            cache.invalidate();
        }
    }
}

/// How many times [`SqlStore::detached`] runs an operation again after a deadlock.
const DEADLOCK_RETRIES: u32 = 4;

/// A store error that is a deadlock or serialization failure (see [`is_deadlock`]).
fn is_deadlock_victim(err: &StoreError) -> bool {
    let (StoreError::Unavailable { source, .. } | StoreError::Other(source)) = err;
    source
        .downcast_ref::<sqlx::Error>()
        .is_some_and(is_deadlock)
}

/// Deadlock or serialization failure: the transaction can simply be tried again.
pub(crate) fn is_deadlock(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// Sorts driver errors: connection trouble is "unavailable" (503), the rest is a bug (500).
pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    let unavailable = match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        // Transient: SQLite locked or busy after busy_timeout; lost or refused connections
        // (SQLSTATE class 08, MySQL 08S01 and "too many connections" 08004); PostgreSQL admin
        // shutdown, cannot connect now, too many connections, query cancelled; a deadlock or
        // serialization failure outside the places that retry it.
        sqlx::Error::Database(db) => {
            !db.is_unique_violation()
                && db.code().is_some_and(|code| {
                    matches!(
                        code.as_ref(),
                        "5" | "6"
                            | "517"
                            | "53300"
                            | "57P01"
                            | "57P03"
                            | "57014"
                            | "40001"
                            | "40P01"
                    ) || code.starts_with("08")
                })
        }
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable {
            store: "database",
            source: err.into(),
        }
    } else {
        StoreError::Other(err.into())
    }
}
