//! Storage behind two narrow traits, so handlers never see a backend.
//!
//! - [`UserStore`]: persons and their identities (app + openid), profiles.
//! - [`SessionStore`]: login sessions and their tokens (by hash only).
//!
//! [`sql::SqlStore`] implements both for SQLite, MySQL/MariaDB and PostgreSQL;
//! [`redis::RedisSessionStore`] keeps sessions in Redis instead. [`connect`] picks them from the
//! config.

pub mod redis;
pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use wxauth_wechat::{AppId, OpenId, UnionId};

use crate::config::{DatabaseConfig, SessionStoreKind, SessionsConfig};
use crate::tokens::TokenHash;

/// A store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached (down, or no connection free in time).
    #[error("{store} is unavailable")]
    Unavailable {
        /// Which store ("database", "redis").
        store: &'static str,
        /// What the driver said (for the log only).
        #[source]
        source: anyhow::Error,
    },
    /// Anything else: a bug or a broken schema.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Stable id, handed to other services as `sub`.
    pub id: String,
    /// The person across mini programs, once known.
    pub unionid: Option<String>,
    /// Nickname.
    pub nickname: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    pub gender: i64,
    /// City.
    pub city: Option<String>,
    /// Province.
    pub province: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// When the person was first seen (Unix seconds).
    pub created_at: i64,
    /// When the profile last changed (Unix seconds).
    pub updated_at: i64,
}

/// What a login did to the user tables.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    /// The person logged in.
    pub user: User,
    /// A new person was created.
    pub is_new_user: bool,
    /// A new identity (app + openid) was created.
    pub is_new_identity: bool,
}

/// Profile fields to set; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    /// Nickname.
    pub nickname: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Gender.
    pub gender: Option<i64>,
    /// City.
    pub city: Option<String>,
    /// Province.
    pub province: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Language.
    pub language: Option<String>,
}

/// Persons and identities.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finds or creates the identity and its person, linking by `unionid` when given.
    /// Concurrent first logins of one identity make exactly one person.
    async fn login(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        unionid: Option<&UnionId>,
        now: i64,
    ) -> Result<LoginOutcome, StoreError>;

    /// The person behind an identity.
    async fn user_by_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Option<User>, StoreError>;

    /// Updates the profile of the person behind an identity, and records a unionid seen in
    /// its open data when the person has none yet. Returns the person as now stored.
    async fn update_profile(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        update: &ProfileUpdate,
        unionid: Option<&UnionId>,
        now: i64,
    ) -> Result<Option<User>, StoreError>;
}

/// A login session of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random id.
    pub id: String,
    /// The identity's app.
    pub app_id: String,
    /// The identity's openid.
    pub openid: String,
    /// The session_key, sealed with the data key.
    pub sealed_session_key: String,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// Last used (Unix seconds), updated at most once a minute.
    pub last_seen_at: i64,
    /// Absolute end of the session (Unix seconds).
    pub expires_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// The client's User-Agent at login.
    pub user_agent: Option<String>,
    /// The client's IP at login.
    pub ip: Option<String>,
}

/// A token to store: its hash and when it expires.
#[derive(Debug, Clone, Copy)]
pub struct TokenEntry {
    /// SHA-256 of the token.
    pub hash: TokenHash,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
}

/// What an access token turned out to be.
#[derive(Debug, Clone)]
pub enum AccessCheck {
    /// A live token of a live session.
    Valid(Session),
    /// The token (or its session) has expired.
    Expired,
    /// The session was revoked.
    Revoked,
    /// No such token.
    Unknown,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// The token was live: it is now used, and the new pair is stored.
    Rotated(Session),
    /// The token had been used before: the whole session is now revoked.
    Reused,
    /// The token (or its session) has expired.
    Expired,
    /// The session was already revoked.
    Revoked,
    /// No such token.
    Unknown,
}

/// Sessions and their tokens.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new session with its first access and refresh tokens.
    async fn create(
        &self,
        session: &Session,
        access: TokenEntry,
        refresh: TokenEntry,
    ) -> Result<(), StoreError>;

    /// Looks an access token up (one round trip).
    async fn authenticate(&self, access: &TokenHash, now: i64) -> Result<AccessCheck, StoreError>;

    /// Uses a refresh token once: on success stores the new pair; a second use revokes the
    /// session.
    async fn rotate(
        &self,
        refresh: &TokenHash,
        new_access: TokenEntry,
        new_refresh: TokenEntry,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError>;

    /// Revokes a session at once (all its tokens stop working).
    async fn revoke(&self, session_id: &str, reason: &str, now: i64) -> Result<(), StoreError>;

    /// Revokes every live session of one identity; returns how many there were.
    async fn revoke_identity(
        &self,
        app_id: &str,
        openid: &str,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError>;

    /// Replaces the sealed session_key of a session (after a fresh `wx.login`).
    async fn set_session_key(&self, session_id: &str, sealed: &str) -> Result<(), StoreError>;

    /// Records that the session was used.
    async fn touch(&self, session_id: &str, now: i64) -> Result<(), StoreError>;

    /// Deletes expired tokens and sessions left without tokens; returns how many rows went.
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError>;
}

/// The stores a running service uses.
#[derive(Clone)]
pub struct Stores {
    /// Persons and identities.
    pub users: Arc<dyn UserStore>,
    /// Sessions and tokens.
    pub sessions: Arc<dyn SessionStore>,
    /// The SQL store (users always live there; sessions too unless Redis is configured).
    pub sql: Arc<sql::SqlStore>,
    /// The Redis session store, when configured.
    pub redis: Option<Arc<redis::RedisSessionStore>>,
}

impl Stores {
    /// Checks each store in use; names the ones that do not answer.
    pub async fn readiness(&self) -> Vec<(&'static str, Result<(), StoreError>)> {
        let mut checks = vec![("database", UserStore::ping(self.sql.as_ref()).await)];
        if let Some(redis) = &self.redis {
            checks.push(("redis", SessionStore::ping(redis.as_ref()).await));
        }
        checks
    }
}

/// Opens the database (applying migrations) and, when configured, Redis.
pub async fn connect(
    database: &DatabaseConfig,
    sessions: &SessionsConfig,
) -> anyhow::Result<Stores> {
    let sql = Arc::new(sql::SqlStore::connect(database).await?);
    let redis = match sessions.store {
        SessionStoreKind::Sql => None,
        SessionStoreKind::Redis => {
            Some(Arc::new(redis::RedisSessionStore::connect(sessions).await?))
        }
    };
    let session_store: Arc<dyn SessionStore> = match &redis {
        Some(redis) => redis.clone(),
        None => sql.clone(),
    };
    Ok(Stores {
        users: sql.clone(),
        sessions: session_store,
        sql,
        redis,
    })
}

/// Applies migrations and returns (without serving).
pub async fn migrate(database: &DatabaseConfig) -> anyhow::Result<()> {
    sql::SqlStore::connect(database).await.map(|_| ())
}
