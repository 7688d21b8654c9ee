//! Storage behind two narrow traits, so handlers never see a backend.
//!
//! - [`UserStore`]: persons and their identities (app + openid), profiles.
//! - [`SessionStore`]: login sessions and their tokens (by hash only).
//!
//! [`sql::SqlStore`] implements both for SQLite, MySQL/MariaDB and PostgreSQL;
//! [`redis::RedisSessionStore`] keeps sessions in Redis instead. [`connect`] picks them from the
//! config.

pub mod check;
pub mod memory_codes;
pub mod migrate;
pub mod redis;
pub mod reseal;
pub mod signing_keys;
pub mod sql;
pub mod wechat_tokens;

use std::sync::Arc;

use async_trait::async_trait;
use wxauth_wechat::{AppId, OpenId, UnionId};

pub use crate::model::{Identity, MergeRule, ProfileUpdate, User, UserId};

use crate::config::{DatabaseConfig, SessionStoreKind, SessionsConfig};
use crate::seal::DataKey;
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

/// Persons and identities.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finds or creates the identity and its person, linking by `unionid` when given (and
    /// merging persons as `merge` decides when another person holds it). Concurrent first
    /// logins of one identity make exactly one person.
    async fn login(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        unionid: Option<&UnionId>,
        now: i64,
        merge: MergeRule,
    ) -> Result<LoginOutcome, StoreError>;

    /// The person behind an identity.
    async fn user_by_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Option<User>, StoreError>;

    /// The identities of a person, oldest first.
    async fn identities(&self, user_id: &UserId) -> Result<Vec<Identity>, StoreError>;

    /// Updates the profile of the person behind an identity, and links a unionid seen in its
    /// open data (merging persons when another one holds it). Returns the person as now
    /// stored.
    async fn update_profile(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        update: &ProfileUpdate,
        unionid: Option<&UnionId>,
        now: i64,
        merge: MergeRule,
    ) -> Result<Option<User>, StoreError>;
}

/// A login session of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random id.
    pub id: String,
    /// The identity's app.
    pub app_id: AppId,
    /// The identity's openid.
    pub openid: OpenId,
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
    Valid {
        /// The session.
        session: Session,
        /// When the token expires.
        token_expires_at: i64,
    },
    /// The token (or its session) has expired.
    Expired,
    /// The session was revoked.
    Revoked,
    /// No such token.
    Unknown,
}

impl AccessCheck {
    /// Judges a found token: revoked beats expired; the token and its session must both be
    /// live.
    pub fn judge(session: Session, token_expires_at: i64, now: i64) -> Self {
        if session.revoked_at.is_some() {
            Self::Revoked
        } else if token_expires_at <= now || session.expires_at <= now {
            Self::Expired
        } else {
            Self::Valid {
                session,
                token_expires_at,
            }
        }
    }
}

/// What presenting a refresh token did.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// The token was live: it is now used, and the new pair is stored.
    Rotated(Session),
    /// The token was used moments ago (within `tokens.refresh_grace`): here is the pair that
    /// use handed out, sealed as the rotation stored it. Nothing changed.
    Replayed {
        /// The session.
        session: Session,
        /// The successor pair, sealed (see [`Successor`]).
        successor: String,
    },
    /// The token had been used before: the whole session is now revoked.
    Reused,
    /// The token (or its session) has expired.
    Expired,
    /// The session was already revoked.
    Revoked,
    /// No such token.
    Unknown,
}

/// The pair a rotation hands out, sealed, kept until `expires_at` so that the same refresh
/// token presented again within `tokens.refresh_grace` gets it back.
#[derive(Clone)]
pub struct Successor {
    /// The pair, sealed with the data key.
    pub sealed: String,
    /// Until when it is handed out again.
    pub expires_at: i64,
}

impl std::fmt::Debug for Successor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Successor")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
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

    /// The session a refresh token belongs to, whatever its state (to name it in a new JWT
    /// before the rotation decides).
    async fn session_of_refresh(&self, refresh: &TokenHash) -> Result<Option<Session>, StoreError>;

    /// The session an access token belongs to, whatever its state: an expired access token
    /// still names its session (to log it out). Access tokens stay findable until
    /// `tokens.refresh_ttl` after they expire, or until the next rotation replaces them.
    async fn session_of_access(&self, access: &TokenHash) -> Result<Option<Session>, StoreError>;

    /// Uses a refresh token once: on success stores the new pair, expires the session's
    /// previous access token and keeps `successor` (when given) for a replay; a second use
    /// within the successor's time gets it back ([`RefreshOutcome::Replayed`]); any other
    /// second use revokes the session.
    async fn rotate(
        &self,
        refresh: &TokenHash,
        new_access: TokenEntry,
        new_refresh: TokenEntry,
        successor: Option<Successor>,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError>;

    /// Revokes a session at once (all its tokens stop working).
    async fn revoke(&self, session_id: &str, reason: &str, now: i64) -> Result<(), StoreError>;

    /// Revokes every live session of one identity; returns how many there were.
    async fn revoke_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError>;

    /// Replaces the sealed session_key of a session (after a fresh `wx.login`).
    async fn set_session_key(&self, session_id: &str, sealed: &str) -> Result<(), StoreError>;

    /// Records that the session was used.
    async fn touch(&self, session_id: &str, now: i64) -> Result<(), StoreError>;

    /// Deletes expired refresh tokens, access tokens expired before `idle_before`, expired
    /// sessions, sessions idle since `idle_before` that have no token left, and successors kept
    /// past their time; returns how many rows went.
    async fn purge_expired(&self, now: i64, idle_before: i64) -> Result<u64, StoreError>;
}

/// What claiming a login code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeClaim {
    /// Nobody has exchanged this code yet: the caller does it, then fulfils or releases.
    Claimed,
    /// Another request is exchanging it right now.
    Pending,
    /// It was exchanged already; here is what WeChat answered (sealed, as stored).
    Done(String),
}

/// Login codes recently exchanged, so a client retry with the same code (after a lost
/// response) gets a session instead of WeChat's "code already used".
#[async_trait]
pub trait CodeCache: Send + Sync + 'static {
    /// Claims a code (by hash) until `expires_at`, or reports who has it.
    async fn claim(&self, hash: &str, now: i64, expires_at: i64) -> Result<CodeClaim, StoreError>;
    /// Stores the exchange's result for later retries.
    async fn fulfil(&self, hash: &str, result: &str, expires_at: i64) -> Result<(), StoreError>;
    /// Gives a claim up (the exchange failed), so a retry may try again.
    async fn release(&self, hash: &str) -> Result<(), StoreError>;
}

/// How long readiness waits for the database to take a write.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The stores a running service uses.
#[derive(Clone)]
pub struct Stores {
    /// Persons and identities.
    pub users: Arc<dyn UserStore>,
    /// Sessions and tokens.
    pub sessions: Arc<dyn SessionStore>,
    /// Recently exchanged login codes (where the sessions are).
    pub codes: Arc<dyn CodeCache>,
    /// The shared WeChat access-token cache (where the sessions are).
    pub wechat_tokens: Arc<dyn wxauth_wechat::TokenStore>,
    /// The SQL store (users always live there; sessions too unless Redis is configured).
    pub sql: Arc<sql::SqlStore>,
    /// The Redis session store, when configured.
    pub redis: Option<Arc<redis::RedisSessionStore>>,
}

impl Stores {
    /// Checks each store in use; names the ones that do not answer.
    pub async fn readiness(&self) -> Vec<(&'static str, Result<(), StoreError>)> {
        let mut checks = vec![(
            "database",
            self.sql.ready_for_writes(READINESS_TIMEOUT).await,
        )];
        if let Some(redis) = &self.redis {
            checks.push(("redis", SessionStore::ping(redis.as_ref()).await));
        }
        checks
    }
}

/// Opens the database (applying migrations) and, when configured, Redis. The data key seals
/// the WeChat access tokens kept in the shared cache.
pub async fn connect(
    database: &DatabaseConfig,
    sessions: &SessionsConfig,
    data_key: &DataKey,
) -> anyhow::Result<Stores> {
    let sql = Arc::new(sql::SqlStore::connect(database).await?);
    let redis = match sessions.store {
        SessionStoreKind::Sql => None,
        SessionStoreKind::Redis => Some(Arc::new(
            redis::RedisSessionStore::connect(sessions)
                .await?
                .with_events(sql.clone()),
        )),
    };
    let (session_store, codes, wechat_tokens): (
        Arc<dyn SessionStore>,
        Arc<dyn CodeCache>,
        Arc<dyn wxauth_wechat::TokenStore>,
    ) = match &redis {
        Some(redis) => (
            redis.clone(),
            redis.clone(),
            Arc::new(wechat_tokens::RedisTokenStore::new(redis, data_key.clone())),
        ),
        None => (
            sql.clone(),
            // SQLite has one process by definition: the codes' five-minute memory is kept in
            // it, two database writes less per login.
            match sql.dialect() {
                sql::Dialect::Sqlite => Arc::new(memory_codes::MemoryCodeCache::new()),
                _ => sql.clone(),
            },
            Arc::new(wechat_tokens::SqlTokenStore::new(
                sql.clone(),
                data_key.clone(),
            )),
        ),
    };
    Ok(Stores {
        users: sql.clone(),
        sessions: session_store,
        codes,
        wechat_tokens,
        sql,
        redis,
    })
}

/// Applies migrations and returns (without serving).
pub async fn migrate(database: &DatabaseConfig) -> anyhow::Result<()> {
    sql::SqlStore::connect(database).await.map(|_| ())
}
