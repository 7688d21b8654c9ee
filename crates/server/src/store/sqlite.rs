//! The SQLite backend: one file, WAL journal, migrations embedded in the binary.
//!
//! Write transactions start with their write, never with a read: SQLite cannot upgrade a read
//! transaction to a write one while another connection writes, so "read, then write" would
//! fail under concurrency where "write first" simply waits its turn (busy_timeout).

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};
use wxauth_wechat::{AppId, OpenId, UnionId};

use super::{
    AccessCheck, LoginOutcome, ProfileUpdate, RefreshOutcome, Session, SessionStore, StoreError,
    TokenEntry, User, UserStore,
};
use crate::config::DatabaseConfig;
use crate::tokens::TokenHash;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const USER_COLUMNS: &str = "u.id, u.unionid, u.nickname, u.avatar_url, u.gender, u.city, \
                            u.province, u.country, u.language, u.created_at, u.updated_at";
const SESSION_COLUMNS: &str = "s.id, s.app_id, s.openid, s.session_key, s.created_at, \
                               s.last_seen_at, s.expires_at, s.revoked_at, s.user_agent, s.ip";

/// Users and sessions in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies migrations.
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(config.url.expose())
            .with_context(|| format!("Failed to parse database.url {}", config.url.masked()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .with_context(|| format!("Failed to open the database {}", config.url.masked()))?;
        MIGRATOR
            .run(&pool)
            .await
            .context("Failed to apply database migrations")?;
        Ok(Self { pool })
    }

    async fn begin(&self) -> Result<Transaction<'_, Sqlite>, StoreError> {
        self.pool.begin().await.map_err(store_error)
    }

    async fn fetch_user_by_identity(
        &self,
        app_id: &str,
        openid: &str,
    ) -> Result<Option<User>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM identities i JOIN users u ON u.id = i.user_id \
             WHERE i.app_id = ? AND i.openid = ?"
        );
        let row = sqlx::query(&sql)
            .bind(app_id)
            .bind(openid)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Gives a person without a unionid the one just learned, unless another person holds it.
    async fn record_unionid(
        &self,
        user_id: &str,
        unionid: &UnionId,
        now: i64,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "UPDATE users SET unionid = ?, updated_at = ? WHERE id = ? AND unionid IS NULL \
             AND NOT EXISTS (SELECT 1 FROM users WHERE unionid = ?)",
        )
        .bind(unionid.as_str())
        .bind(now)
        .bind(user_id)
        .bind(unionid.as_str())
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            // Another login recorded the same unionid on another person in between.
            Err(err) if is_unique_violation(&err) => Ok(()),
            Err(err) => Err(store_error(err)),
        }
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
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
        // A returning user costs one read.
        if let Some(mut user) = self
            .fetch_user_by_identity(app_id.as_str(), openid.as_str())
            .await?
        {
            if let (Some(unionid), None) = (unionid, &user.unionid) {
                self.record_unionid(&user.id, unionid, now).await?;
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

        let mut tx = self.begin().await?;
        let new_id = uuid::Uuid::now_v7().to_string();
        let (person, is_new_user) = match unionid {
            Some(unionid) => {
                let inserted = sqlx::query(
                    "INSERT INTO users (id, unionid, created_at, updated_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (unionid) DO NOTHING",
                )
                .bind(&new_id)
                .bind(unionid.as_str())
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected()
                    == 1;
                let person: String = sqlx::query_scalar("SELECT id FROM users WHERE unionid = ?")
                    .bind(unionid.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(store_error)?;
                (person, inserted)
            }
            None => {
                sqlx::query("INSERT INTO users (id, created_at, updated_at) VALUES (?, ?, ?)")
                    .bind(&new_id)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                (new_id, true)
            }
        };
        let identity_created = sqlx::query(
            "INSERT INTO identities (app_id, openid, user_id, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (app_id, openid) DO NOTHING",
        )
        .bind(app_id.as_str())
        .bind(openid.as_str())
        .bind(&person)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected()
            == 1;

        if !identity_created {
            // A concurrent login created this identity first: drop our speculative person.
            tx.rollback().await.map_err(store_error)?;
            let user = self
                .fetch_user_by_identity(app_id.as_str(), openid.as_str())
                .await?
                .context("identity vanished after a concurrent insert")?;
            return Ok(LoginOutcome {
                user,
                is_new_user: false,
                is_new_identity: false,
            });
        }
        tx.commit().await.map_err(store_error)?;
        let user = self
            .fetch_user_by_identity(app_id.as_str(), openid.as_str())
            .await?
            .context("identity missing right after it was created")?;
        Ok(LoginOutcome {
            user,
            is_new_user,
            is_new_identity: true,
        })
    }

    async fn user_by_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Option<User>, StoreError> {
        self.fetch_user_by_identity(app_id.as_str(), openid.as_str())
            .await
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
        sqlx::query(
            "UPDATE users SET nickname = COALESCE(?, nickname), \
             avatar_url = COALESCE(?, avatar_url), gender = COALESCE(?, gender), \
             city = COALESCE(?, city), province = COALESCE(?, province), \
             country = COALESCE(?, country), language = COALESCE(?, language), updated_at = ? \
             WHERE id = ?",
        )
        .bind(&update.nickname)
        .bind(&update.avatar_url)
        .bind(update.gender)
        .bind(&update.city)
        .bind(&update.province)
        .bind(&update.country)
        .bind(&update.language)
        .bind(now)
        .bind(&user.id)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        if let (Some(unionid), None) = (unionid, &user.unionid) {
            self.record_unionid(&user.id, unionid, now).await?;
        }
        self.fetch_user_by_identity(app_id.as_str(), openid.as_str())
            .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
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
        sqlx::query(
            "INSERT INTO sessions (id, app_id, openid, session_key, created_at, last_seen_at, \
             expires_at, revoked_at, user_agent, ip) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
        )
        .bind(&session.id)
        .bind(&session.app_id)
        .bind(&session.openid)
        .bind(&session.sealed_session_key)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .bind(&session.user_agent)
        .bind(&session.ip)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        insert_tokens(&mut tx, &session.id, access, refresh).await?;
        tx.commit().await.map_err(store_error)
    }

    async fn authenticate(&self, access: &TokenHash, now: i64) -> Result<AccessCheck, StoreError> {
        let sql = format!(
            "SELECT t.expires_at AS token_expires_at, {SESSION_COLUMNS} FROM tokens t \
             JOIN sessions s ON s.id = t.session_id WHERE t.hash = ? AND t.kind = 'access'"
        );
        let row = sqlx::query(&sql)
            .bind(&access.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(AccessCheck::Unknown);
        };
        let token_expires_at: i64 = row.try_get("token_expires_at").map_err(store_error)?;
        let session = session_from_row(&row)?;
        Ok(if session.revoked_at.is_some() {
            AccessCheck::Revoked
        } else if token_expires_at <= now || session.expires_at <= now {
            AccessCheck::Expired
        } else {
            AccessCheck::Valid(session)
        })
    }

    async fn rotate(
        &self,
        refresh: &TokenHash,
        new_access: TokenEntry,
        new_refresh: TokenEntry,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut tx = self.begin().await?;
        // Claim the token first: exactly one presenter can flip used_at.
        let claimed = sqlx::query(
            "UPDATE tokens SET used_at = ? WHERE hash = ? AND kind = 'refresh' \
             AND used_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .bind(&refresh.0[..])
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected()
            == 1;

        let sql = format!(
            "SELECT t.used_at, t.expires_at AS token_expires_at, {SESSION_COLUMNS} FROM tokens t \
             JOIN sessions s ON s.id = t.session_id WHERE t.hash = ? AND t.kind = 'refresh'"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(&refresh.0[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?
        else {
            return Ok(RefreshOutcome::Unknown);
        };
        let session = session_from_row(&row)?;
        if session.revoked_at.is_some() {
            tx.rollback().await.map_err(store_error)?;
            return Ok(RefreshOutcome::Revoked);
        }
        if !claimed {
            let used_at: Option<i64> = row.try_get("used_at").map_err(store_error)?;
            if used_at.is_some() {
                // Reuse: someone holds a copy of an old refresh token. Kill the session.
                revoke_in(&mut tx, &session.id, "refresh_token_reused", now).await?;
                tx.commit().await.map_err(store_error)?;
                return Ok(RefreshOutcome::Reused);
            }
            return Ok(RefreshOutcome::Expired);
        }
        if session.expires_at <= now {
            tx.rollback().await.map_err(store_error)?;
            return Ok(RefreshOutcome::Expired);
        }
        let new_refresh = TokenEntry {
            expires_at: new_refresh.expires_at.min(session.expires_at),
            ..new_refresh
        };
        let new_access = TokenEntry {
            expires_at: new_access.expires_at.min(session.expires_at),
            ..new_access
        };
        insert_tokens(&mut tx, &session.id, new_access, new_refresh).await?;
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id = ?")
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
        let mut tx = self.begin().await?;
        revoke_in(&mut tx, session_id, reason, now).await?;
        tx.commit().await.map_err(store_error)
    }

    async fn set_session_key(&self, session_id: &str, sealed: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET session_key = ? WHERE id = ?")
            .bind(sealed)
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn touch(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?")
            .bind(now)
            .bind(session_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let tokens = sqlx::query("DELETE FROM tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= ? OR NOT EXISTS \
             (SELECT 1 FROM tokens t WHERE t.session_id = sessions.id)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        tx.commit().await.map_err(store_error)?;
        Ok(tokens + sessions)
    }
}

async fn insert_tokens(
    tx: &mut Transaction<'_, Sqlite>,
    session_id: &str,
    access: TokenEntry,
    refresh: TokenEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tokens (hash, session_id, kind, expires_at) VALUES (?, ?, 'access', ?), \
         (?, ?, 'refresh', ?)",
    )
    .bind(&access.hash.0[..])
    .bind(session_id)
    .bind(access.expires_at)
    .bind(&refresh.hash.0[..])
    .bind(session_id)
    .bind(refresh.expires_at)
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(())
}

async fn revoke_in(
    tx: &mut Transaction<'_, Sqlite>,
    session_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(session_id)
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(())
}

fn user_from_row(row: &SqliteRow) -> Result<User, StoreError> {
    let get = |row: &SqliteRow| -> Result<User, sqlx::Error> {
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
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    };
    get(row).map_err(store_error)
}

fn session_from_row(row: &SqliteRow) -> Result<Session, StoreError> {
    let get = |row: &SqliteRow| -> Result<Session, sqlx::Error> {
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

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Sorts driver errors: connection trouble is "unavailable" (503), the rest is a bug (500).
pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable {
            store: "database",
            source: err.into(),
        },
        // SQLite reports a locked database after busy_timeout: the store is overloaded.
        sqlx::Error::Database(ref db)
            if matches!(db.code().as_deref(), Some("5" | "6" | "517")) =>
        {
            StoreError::Unavailable {
                store: "database",
                source: err.into(),
            }
        }
        other => StoreError::Other(other.into()),
    }
}
