//! The SQL backend, one implementation for SQLite, MySQL/MariaDB and PostgreSQL.
//!
//! Queries are written once with `?` placeholders and rewritten for PostgreSQL (`$1`, `$2`, …)
//! when the store is built, never per request; every query is a prepared statement cached per
//! connection. Each backend has its own plain-SQL migrations under `migrations/<backend>/`.
//!
//! Concurrency: the unique keys decide. A login that loses a race on (app_id, openid) or on
//! unionid gets a unique violation, rolls its transaction back (nothing half-written) and
//! tries again, finding the winner's rows. SQLite transactions start `BEGIN IMMEDIATE`: SQLite
//! cannot upgrade a read transaction to a write one while another connection writes, so
//! taking the write lock up front makes writers queue (busy_timeout) instead of failing.

use std::str::FromStr as _;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor as _, Row as _, Transaction};
use wxauth_wechat::{AppId, OpenId, UnionId};

use super::{
    AccessCheck, CodeCache, CodeClaim, Identity, LoginOutcome, ProfileUpdate, RefreshOutcome,
    Session, SessionStore, StoreError, TokenEntry, User, UserStore,
};
use crate::config::DatabaseConfig;
use crate::tokens::TokenHash;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How many times a login retries after losing a race on a unique key or a deadlock.
const LOGIN_ATTEMPTS: usize = 5;

/// Which SQL database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `sqlite://`
    Sqlite,
    /// `mysql://` (MySQL 8, MariaDB 10.11+)
    MySql,
    /// `postgres://` or `postgresql://`
    Postgres,
}

impl Dialect {
    /// The dialect of a database URL, by its scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "mysql" | "mariadb" => Some(Self::MySql),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }

    /// Rewrites `?` placeholders for this dialect.
    fn prepare(self, sql: &str) -> String {
        if self != Self::Postgres {
            return sql.to_owned();
        }
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

    fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Self::Sqlite => &SQLITE_MIGRATIONS,
            Self::MySql => &MYSQL_MIGRATIONS,
            Self::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

const USER_COLUMNS: &str = "u.id, u.unionid, u.nickname, u.avatar_url, u.gender, u.city, \
                            u.province, u.country, u.language, u.phone_country_code, \
                            u.phone_number, u.extra, u.created_at, u.updated_at";
const SESSION_COLUMNS: &str = "s.id, s.app_id, s.openid, s.session_key, s.created_at, \
                               s.last_seen_at, s.expires_at, s.revoked_at, s.user_agent, s.ip";

/// Every statement, rewritten for the dialect once.
#[derive(Debug)]
struct Queries {
    ping: String,
    user_by_identity: String,
    user_id_by_unionid: String,
    user_by_unionid_locked: String,
    user_by_id_locked: String,
    identities: String,
    move_identities: String,
    insert_merge: String,
    delete_user: String,
    merge_into: String,
    claim_code: String,
    code_result: String,
    fulfil_code: String,
    release_code: String,
    purge_codes: String,
    insert_user: String,
    insert_identity: String,
    set_unionid: String,
    update_profile: String,
    insert_session: String,
    insert_tokens: String,
    authenticate: String,
    claim_refresh: String,
    refresh_with_session: String,
    revoke: String,
    revoke_identity: String,
    set_session_key: String,
    touch: String,
    touch_on_refresh: String,
    purge_tokens: String,
    purge_sessions: String,
}

impl Queries {
    fn new(d: Dialect) -> Self {
        let p = |sql: &str| d.prepare(sql);
        // SQLite has no row locks: its BEGIN IMMEDIATE already serializes writers.
        let lock = if d == Dialect::Sqlite {
            ""
        } else {
            " FOR UPDATE"
        };
        Self {
            user_by_unionid_locked: p(&format!(
                "SELECT {USER_COLUMNS} FROM users u WHERE u.unionid = ?{lock}"
            )),
            user_by_id_locked: p(&format!(
                "SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?{lock}"
            )),
            identities: p(
                "SELECT app_id, openid, created_at FROM identities WHERE user_id = ? \
                 ORDER BY created_at, app_id",
            ),
            move_identities: p("UPDATE identities SET user_id = ? WHERE user_id = ?"),
            insert_merge: p(
                "INSERT INTO user_merges (merged_id, survivor_id, unionid, merged_at) \
                 VALUES (?, ?, ?, ?)",
            ),
            delete_user: p("DELETE FROM users WHERE id = ?"),
            merge_into: p(
                "UPDATE users SET unionid = ?, nickname = ?, avatar_url = ?, gender = ?, \
                 city = ?, province = ?, country = ?, language = ?, phone_country_code = ?, \
                 phone_number = ?, extra = ?, updated_at = ? WHERE id = ?",
            ),
            claim_code: p("INSERT INTO login_codes (hash, result, expires_at) VALUES (?, NULL, ?)"),
            code_result: p("SELECT result, expires_at FROM login_codes WHERE hash = ?"),
            fulfil_code: p("UPDATE login_codes SET result = ?, expires_at = ? WHERE hash = ?"),
            release_code: p("DELETE FROM login_codes WHERE hash = ?"),
            purge_codes: p("DELETE FROM login_codes WHERE expires_at <= ?"),
            ping: p("SELECT 1"),
            user_by_identity: p(&format!(
                "SELECT {USER_COLUMNS} FROM identities i JOIN users u ON u.id = i.user_id \
                 WHERE i.app_id = ? AND i.openid = ?"
            )),
            user_id_by_unionid: p("SELECT id FROM users WHERE unionid = ?"),
            insert_user: p(
                "INSERT INTO users (id, unionid, gender, created_at, updated_at) \
                 VALUES (?, ?, 0, ?, ?)",
            ),
            insert_identity: p(
                "INSERT INTO identities (app_id, openid, user_id, created_at) VALUES (?, ?, ?, ?)",
            ),
            set_unionid: p(
                "UPDATE users SET unionid = ?, updated_at = ? WHERE id = ? AND unionid IS NULL",
            ),
            update_profile: p("UPDATE users SET nickname = COALESCE(?, nickname), \
                 avatar_url = COALESCE(?, avatar_url), gender = COALESCE(?, gender), \
                 city = COALESCE(?, city), province = COALESCE(?, province), \
                 country = COALESCE(?, country), language = COALESCE(?, language), \
                 phone_country_code = COALESCE(?, phone_country_code), \
                 phone_number = COALESCE(?, phone_number), extra = COALESCE(?, extra), \
                 updated_at = ? WHERE id = ?"),
            insert_session: p(
                "INSERT INTO sessions (id, app_id, openid, session_key, created_at, \
                 last_seen_at, expires_at, user_agent, ip) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ),
            insert_tokens: p("INSERT INTO tokens (hash, session_id, kind, expires_at) \
                 VALUES (?, ?, 'access', ?), (?, ?, 'refresh', ?)"),
            authenticate: p(&format!(
                "SELECT t.expires_at AS token_expires_at, {SESSION_COLUMNS} FROM tokens t \
                 JOIN sessions s ON s.id = t.session_id WHERE t.hash = ? AND t.kind = 'access'"
            )),
            claim_refresh: p(
                "UPDATE tokens SET used_at = ? WHERE hash = ? AND kind = 'refresh' \
                 AND used_at IS NULL AND expires_at > ?",
            ),
            refresh_with_session: p(&format!(
                "SELECT t.used_at, {SESSION_COLUMNS} FROM tokens t \
                 JOIN sessions s ON s.id = t.session_id WHERE t.hash = ? AND t.kind = 'refresh'"
            )),
            revoke: p("UPDATE sessions SET revoked_at = ?, revoke_reason = ? \
                 WHERE id = ? AND revoked_at IS NULL"),
            revoke_identity: p(
                "UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE app_id = ? \
                 AND openid = ? AND revoked_at IS NULL AND expires_at > ?",
            ),
            set_session_key: p("UPDATE sessions SET session_key = ? WHERE id = ?"),
            touch: p("UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?"),
            touch_on_refresh: p("UPDATE sessions SET last_seen_at = ? WHERE id = ?"),
            purge_tokens: p("DELETE FROM tokens WHERE expires_at <= ?"),
            purge_sessions: p(
                "DELETE FROM sessions WHERE expires_at <= ? OR (last_seen_at <= ? AND \
                 NOT EXISTS (SELECT 1 FROM tokens t WHERE t.session_id = sessions.id))",
            ),
        }
    }
}

/// Users and sessions in one SQL database.
#[derive(Debug)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    q: Queries,
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
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(config.min_connections.min(config.max_connections))
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
                             PRAGMA temp_store = MEMORY;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| {
                format!(
                    "Failed to connect to the database {} (is it running, and does the \
                     database exist?)",
                    config.url.masked()
                )
            })?;
        super::migrate::run(&pool, dialect, dialect.migrator()).await?;
        Ok(Self {
            pool,
            dialect,
            q: Queries::new(dialect),
        })
    }

    /// The backend in use.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pool (for the WeChat token cache, which shares the database).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Rewrites `?` placeholders for this backend.
    pub fn prepare(&self, sql: &str) -> String {
        self.dialect.prepare(sql)
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let begin = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            _ => self.pool.begin().await,
        };
        begin.map_err(store_error)
    }

    async fn fetch_user_by_identity(
        &self,
        app_id: &str,
        openid: &str,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&self.q.user_by_identity)
            .bind(app_id)
            .bind(openid)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Links a unionid to a person. When another person already holds it (an identity
    /// that first came through an unbound app), the two persons merge: the older survives,
    /// takes the other's identities and fills its empty profile fields from it, and a merge
    /// record keeps who went into whom. Sessions follow, since they belong to identities.
    async fn link_unionid(
        &self,
        user_id: &str,
        unionid: &UnionId,
        now: i64,
    ) -> Result<(), StoreError> {
        for _ in 0..LOGIN_ATTEMPTS {
            if self.try_link_unionid(user_id, unionid, now).await? {
                return Ok(());
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "linking a unionid kept losing races after {LOGIN_ATTEMPTS} attempts"
        )))
    }

    /// One attempt; `Ok(false)` when a race was lost and the caller should try again.
    async fn try_link_unionid(
        &self,
        user_id: &str,
        unionid: &UnionId,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let result = self.link_in(&mut tx, user_id, unionid, now).await;
        match result {
            Ok(()) => {
                tx.commit().await.map_err(store_error)?;
                Ok(true)
            }
            Err(err) => {
                abandon(tx, err).await?;
                Ok(false)
            }
        }
    }

    async fn link_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        user_id: &str,
        unionid: &UnionId,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let me = sqlx::query(&self.q.user_by_id_locked)
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(me) = me
            .as_ref()
            .map(user_from_row)
            .transpose()
            .map_err(into_sqlx)?
        else {
            // Merged away meanwhile: the survivor has it already.
            return Ok(());
        };
        if let Some(existing) = &me.unionid {
            if existing != unionid.as_str() {
                tracing::warn!(
                    user_id,
                    "a person was given a second, different unionid; kept the first"
                );
            }
            return Ok(());
        }
        let holder = sqlx::query(&self.q.user_by_unionid_locked)
            .bind(unionid.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        let Some(holder) = holder
            .as_ref()
            .map(user_from_row)
            .transpose()
            .map_err(into_sqlx)?
        else {
            sqlx::query(&self.q.set_unionid)
                .bind(unionid.as_str())
                .bind(now)
                .bind(user_id)
                .execute(&mut **tx)
                .await?;
            return Ok(());
        };
        let (survivor, merged) = if (me.created_at, &me.id) <= (holder.created_at, &holder.id) {
            (me, holder)
        } else {
            (holder, me)
        };
        sqlx::query(&self.q.move_identities)
            .bind(&survivor.id)
            .bind(&merged.id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(&self.q.insert_merge)
            .bind(&merged.id)
            .bind(&survivor.id)
            .bind(unionid.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        sqlx::query(&self.q.delete_user)
            .bind(&merged.id)
            .execute(&mut **tx)
            .await?;
        let fill = |own: &Option<String>, other: &Option<String>| {
            own.clone()
                .filter(|v| !v.is_empty())
                .or_else(|| other.clone())
        };
        // The phone moves as a pair.
        let (phone_cc, phone) = if survivor
            .phone_number
            .as_deref()
            .is_some_and(|p| !p.is_empty())
        {
            (
                survivor.phone_country_code.clone(),
                survivor.phone_number.clone(),
            )
        } else {
            (
                merged.phone_country_code.clone(),
                merged.phone_number.clone(),
            )
        };
        sqlx::query(&self.q.merge_into)
            .bind(unionid.as_str())
            .bind(fill(&survivor.nickname, &merged.nickname))
            .bind(fill(&survivor.avatar_url, &merged.avatar_url))
            .bind(if survivor.gender != 0 {
                survivor.gender
            } else {
                merged.gender
            })
            .bind(fill(&survivor.city, &merged.city))
            .bind(fill(&survivor.province, &merged.province))
            .bind(fill(&survivor.country, &merged.country))
            .bind(fill(&survivor.language, &merged.language))
            .bind(phone_cc)
            .bind(phone)
            .bind(fill(&survivor.extra, &merged.extra))
            .bind(now)
            .bind(&survivor.id)
            .execute(&mut **tx)
            .await?;
        tracing::info!(survivor = %survivor.id, merged = %merged.id, "persons merged by unionid");
        Ok(())
    }

    /// One attempt at creating the identity (and its person); `Ok(None)` when another login
    /// won a race and the caller should look again.
    async fn try_create_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        unionid: Option<&UnionId>,
        now: i64,
    ) -> Result<Option<LoginOutcome>, StoreError> {
        let mut tx = self.begin().await?;
        let existing = match unionid {
            Some(unionid) => sqlx::query(&self.q.user_id_by_unionid)
                .bind(unionid.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?
                .map(|row| row.try_get::<String, _>(0))
                .transpose()
                .map_err(store_error)?,
            None => None,
        };
        let is_new_user = existing.is_none();
        let person = match existing {
            Some(person) => person,
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                let inserted = sqlx::query(&self.q.insert_user)
                    .bind(&id)
                    .bind(unionid.map(UnionId::as_str))
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await;
                if let Err(err) = inserted {
                    abandon(tx, err).await?;
                    return Ok(None);
                }
                id
            }
        };
        let inserted = sqlx::query(&self.q.insert_identity)
            .bind(app_id.as_str())
            .bind(openid.as_str())
            .bind(&person)
            .bind(now)
            .execute(&mut *tx)
            .await;
        if let Err(err) = inserted {
            abandon(tx, err).await?;
            return Ok(None);
        }
        tx.commit().await.map_err(store_error)?;
        let user = self
            .fetch_user_by_identity(app_id.as_str(), openid.as_str())
            .await?
            .context("identity missing right after it was created")?;
        Ok(Some(LoginOutcome {
            user,
            is_new_user,
            is_new_identity: true,
        }))
    }
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

#[async_trait]
impl UserStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(&self.q.ping)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn login(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        unionid: Option<&UnionId>,
        now: i64,
    ) -> Result<LoginOutcome, StoreError> {
        for _ in 0..LOGIN_ATTEMPTS {
            // A returning user costs one read.
            if let Some(mut user) = self
                .fetch_user_by_identity(app_id.as_str(), openid.as_str())
                .await?
            {
                if let (Some(unionid), None) = (unionid, &user.unionid) {
                    self.link_unionid(&user.id, unionid, now).await?;
                    user = self
                        .fetch_user_by_identity(app_id.as_str(), openid.as_str())
                        .await?
                        .unwrap_or(user);
                }
                return Ok(LoginOutcome {
                    user,
                    is_new_user: false,
                    is_new_identity: false,
                });
            }
            if let Some(outcome) = self
                .try_create_identity(app_id, openid, unionid, now)
                .await?
            {
                return Ok(outcome);
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "login kept losing races on the identity after {LOGIN_ATTEMPTS} attempts"
        )))
    }

    async fn user_by_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Option<User>, StoreError> {
        self.fetch_user_by_identity(app_id.as_str(), openid.as_str())
            .await
    }

    async fn identities(&self, user_id: &str) -> Result<Vec<Identity>, StoreError> {
        let rows = sqlx::query(&self.q.identities)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(Identity {
                    app_id: row.try_get("app_id")?,
                    openid: row.try_get("openid")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    async fn update_profile(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        update: &ProfileUpdate,
        unionid: Option<&UnionId>,
        now: i64,
    ) -> Result<Option<User>, StoreError> {
        let Some(user) = self
            .fetch_user_by_identity(app_id.as_str(), openid.as_str())
            .await?
        else {
            return Ok(None);
        };
        sqlx::query(&self.q.update_profile)
            .bind(update.nickname.as_deref())
            .bind(update.avatar_url.as_deref())
            .bind(update.gender)
            .bind(update.city.as_deref())
            .bind(update.province.as_deref())
            .bind(update.country.as_deref())
            .bind(update.language.as_deref())
            .bind(update.phone_country_code.as_deref())
            .bind(update.phone_number.as_deref())
            .bind(update.extra.as_deref())
            .bind(now)
            .bind(&user.id)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        if let (Some(unionid), None) = (unionid, &user.unionid) {
            self.link_unionid(&user.id, unionid, now).await?;
        }
        self.fetch_user_by_identity(app_id.as_str(), openid.as_str())
            .await
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        UserStore::ping(self).await
    }

    async fn create(
        &self,
        session: &Session,
        access: TokenEntry,
        refresh: TokenEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(&self.q.insert_session)
            .bind(&session.id)
            .bind(&session.app_id)
            .bind(&session.openid)
            .bind(&session.sealed_session_key)
            .bind(session.created_at)
            .bind(session.last_seen_at)
            .bind(session.expires_at)
            .bind(session.user_agent.as_deref())
            .bind(session.ip.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        self.insert_tokens(&mut tx, &session.id, access, refresh)
            .await?;
        tx.commit().await.map_err(store_error)
    }

    async fn authenticate(&self, access: &TokenHash, now: i64) -> Result<AccessCheck, StoreError> {
        let row = sqlx::query(&self.q.authenticate)
            .bind(access.to_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(AccessCheck::Unknown);
        };
        let token_expires_at: i64 = row.try_get("token_expires_at").map_err(store_error)?;
        let session = session_from_row(&row)?;
        Ok(AccessCheck::judge(session, token_expires_at, now))
    }

    async fn rotate(
        &self,
        refresh: &TokenHash,
        new_access: TokenEntry,
        new_refresh: TokenEntry,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let hash = refresh.to_hex();
        let mut tx = self.begin().await?;
        // Claim the token first: exactly one presenter can flip used_at.
        let claimed = sqlx::query(&self.q.claim_refresh)
            .bind(now)
            .bind(&hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected()
            == 1;
        let row = sqlx::query(&self.q.refresh_with_session)
            .bind(&hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        // Every way out ends the transaction explicitly: a transaction merely dropped would
        // keep its locks until the connection is next used.
        let Some(row) = row else {
            tx.rollback().await.map_err(store_error)?;
            return Ok(RefreshOutcome::Unknown);
        };
        let session = session_from_row(&row)?;
        if session.revoked_at.is_some() {
            tx.rollback().await.map_err(store_error)?;
            return Ok(RefreshOutcome::Revoked);
        }
        if !claimed {
            let used_at: Option<i64> = row.try_get("used_at").map_err(store_error)?;
            if used_at.is_none() {
                tx.rollback().await.map_err(store_error)?;
                return Ok(RefreshOutcome::Expired);
            }
            // Reuse: someone holds a copy of an old refresh token. End the session.
            sqlx::query(&self.q.revoke)
                .bind(now)
                .bind("refresh_token_reused")
                .bind(&session.id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            return Ok(RefreshOutcome::Reused);
        }
        if session.expires_at <= now {
            tx.rollback().await.map_err(store_error)?;
            return Ok(RefreshOutcome::Expired);
        }
        let cap = |entry: TokenEntry| TokenEntry {
            expires_at: entry.expires_at.min(session.expires_at),
            ..entry
        };
        self.insert_tokens(&mut tx, &session.id, cap(new_access), cap(new_refresh))
            .await?;
        sqlx::query(&self.q.touch_on_refresh)
            .bind(now)
            .bind(&session.id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(RefreshOutcome::Rotated(Session {
            last_seen_at: now,
            ..session
        }))
    }

    async fn revoke(&self, session_id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(&self.q.revoke)
            .bind(now)
            .bind(reason)
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn revoke_identity(
        &self,
        app_id: &str,
        openid: &str,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let revoked = sqlx::query(&self.q.revoke_identity)
            .bind(now)
            .bind(reason)
            .bind(app_id)
            .bind(openid)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected();
        Ok(revoked)
    }

    async fn set_session_key(&self, session_id: &str, sealed: &str) -> Result<(), StoreError> {
        sqlx::query(&self.q.set_session_key)
            .bind(sealed)
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn touch(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(&self.q.touch)
            .bind(now)
            .bind(session_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64, idle_before: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let tokens = sqlx::query(&self.q.purge_tokens)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        let sessions = sqlx::query(&self.q.purge_sessions)
            .bind(now)
            .bind(idle_before)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        let codes = sqlx::query(&self.q.purge_codes)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        tx.commit().await.map_err(store_error)?;
        Ok(tokens + sessions + codes)
    }
}

#[async_trait]
impl CodeCache for SqlStore {
    async fn claim(&self, hash: &str, now: i64, expires_at: i64) -> Result<CodeClaim, StoreError> {
        for _ in 0..2 {
            let inserted = sqlx::query(&self.q.claim_code)
                .bind(hash)
                .bind(expires_at)
                .execute(&self.pool)
                .await;
            match inserted {
                Ok(_) => return Ok(CodeClaim::Claimed),
                Err(err) if is_unique_violation(&err) => {}
                Err(err) => return Err(store_error(err)),
            }
            let row = sqlx::query(&self.q.code_result)
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
            let Some(row) = row else { continue };
            let result: Option<String> = row.try_get("result").map_err(store_error)?;
            let expires: i64 = row.try_get("expires_at").map_err(store_error)?;
            if expires <= now {
                // A stale entry the purge has not reached yet: clear it and claim anew.
                self.release(hash).await?;
                continue;
            }
            return Ok(result.map_or(CodeClaim::Pending, CodeClaim::Done));
        }
        Ok(CodeClaim::Pending)
    }

    async fn fulfil(&self, hash: &str, result: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(&self.q.fulfil_code)
            .bind(result)
            .bind(expires_at)
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn release(&self, hash: &str) -> Result<(), StoreError> {
        sqlx::query(&self.q.release_code)
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

impl SqlStore {
    async fn insert_tokens(
        &self,
        tx: &mut Transaction<'static, Any>,
        session_id: &str,
        access: TokenEntry,
        refresh: TokenEntry,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.q.insert_tokens)
            .bind(access.hash.to_hex())
            .bind(session_id)
            .bind(access.expires_at)
            .bind(refresh.hash.to_hex())
            .bind(session_id)
            .bind(refresh.expires_at)
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    let get = |row: &AnyRow| -> Result<User, sqlx::Error> {
        Ok(User {
            id: row.try_get("id")?,
            unionid: row.try_get("unionid")?,
            nickname: row.try_get("nickname")?,
            avatar_url: row.try_get("avatar_url")?,
            gender: row.try_get("gender")?,
            city: row.try_get("city")?,
            province: row.try_get("province")?,
            country: row.try_get("country")?,
            language: row.try_get("language")?,
            phone_country_code: row.try_get("phone_country_code")?,
            phone_number: row.try_get("phone_number")?,
            extra: row.try_get("extra")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    };
    get(row).map_err(store_error)
}

fn session_from_row(row: &AnyRow) -> Result<Session, StoreError> {
    let get = |row: &AnyRow| -> Result<Session, sqlx::Error> {
        Ok(Session {
            id: row.try_get("id")?,
            app_id: row.try_get("app_id")?,
            openid: row.try_get("openid")?,
            sealed_session_key: row.try_get("session_key")?,
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            user_agent: row.try_get("user_agent")?,
            ip: row.try_get("ip")?,
        })
    };
    get(row).map_err(store_error)
}

/// A row that does not decode is a broken schema, not an outage.
fn into_sqlx(err: StoreError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(err))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Deadlock or serialization failure: the transaction can simply be tried again.
fn is_deadlock(err: &sqlx::Error) -> bool {
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
