//! The WeChat access-token cache shared by every instance, kept where the sessions are (the
//! SQL database or Redis), so N instances make one token call per app per token lifetime.
//! Tokens are sealed with the data key: they are secrets.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::Row as _;
use wxauth_wechat::{AccessToken, AppId, TokenStore, TokenStoreError};

use super::redis::{RedisSessionStore, TimedConnection};
use super::sql::{Dialect, SqlStore};
use crate::seal::DataKey;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn context(app_id: &AppId) -> String {
    context_of(app_id.as_str())
}

/// What an app's sealed WeChat access token is bound to.
pub(crate) fn context_of(app_id: &str) -> String {
    format!("wechat_token:{app_id}")
}

fn err(e: impl std::fmt::Display) -> TokenStoreError {
    TokenStoreError(e.to_string())
}

fn open(key: &DataKey, app_id: &AppId, sealed: &str, expires_at: i64) -> Option<AccessToken> {
    let plain = key.open_bytes(sealed, &context(app_id)).ok()?;
    let value = String::from_utf8(plain).ok()?;
    Some(AccessToken::new(value, expires_at))
}

/// The cache in the `wechat_tokens` table.
pub struct SqlTokenStore {
    store: Arc<SqlStore>,
    key: DataKey,
    get: String,
    put: String,
    ensure_row: String,
    invalidate: String,
    lock: String,
    unlock: String,
}

impl SqlTokenStore {
    /// Uses the database of `store`.
    pub fn new(store: Arc<SqlStore>, key: DataKey) -> Self {
        let upsert = match store.dialect() {
            Dialect::MySql => {
                "INSERT INTO wechat_tokens (app_id, token, expires_at) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE token = VALUES(token), expires_at = VALUES(expires_at)"
            }
            Dialect::Sqlite | Dialect::Postgres => {
                "INSERT INTO wechat_tokens (app_id, token, expires_at) VALUES (?, ?, ?) \
                 ON CONFLICT (app_id) DO UPDATE SET token = excluded.token, \
                 expires_at = excluded.expires_at"
            }
        };
        let ensure_row = match store.dialect() {
            Dialect::MySql => "INSERT IGNORE INTO wechat_tokens (app_id) VALUES (?)",
            Dialect::Sqlite | Dialect::Postgres => {
                "INSERT INTO wechat_tokens (app_id) VALUES (?) ON CONFLICT (app_id) DO NOTHING"
            }
        };
        Self {
            get: store.prepare("SELECT token, expires_at FROM wechat_tokens WHERE app_id = ?"),
            put: store.prepare(upsert),
            ensure_row: store.prepare(ensure_row),
            invalidate: store.prepare(
                "UPDATE wechat_tokens SET token = NULL, expires_at = 0 \
                 WHERE app_id = ? AND token = ?",
            ),
            lock: store.prepare(
                "UPDATE wechat_tokens SET lock_until = ? WHERE app_id = ? AND lock_until < ?",
            ),
            unlock: store.prepare("UPDATE wechat_tokens SET lock_until = 0 WHERE app_id = ?"),
            store,
            key,
        }
    }

    async fn sealed(&self, app_id: &AppId) -> Result<Option<(String, i64)>, TokenStoreError> {
        let row = sqlx::query(&self.get)
            .bind(app_id.as_str())
            .fetch_optional(self.store.pool())
            .await
            .map_err(err)?;
        let Some(row) = row else { return Ok(None) };
        let token: Option<String> = row.try_get("token").map_err(err)?;
        let expires_at: i64 = row.try_get("expires_at").map_err(err)?;
        Ok(token.map(|t| (t, expires_at)))
    }
}

#[async_trait]
impl TokenStore for SqlTokenStore {
    async fn get(&self, app_id: &AppId) -> Result<Option<AccessToken>, TokenStoreError> {
        Ok(self
            .sealed(app_id)
            .await?
            .and_then(|(sealed, exp)| open(&self.key, app_id, &sealed, exp)))
    }

    async fn put(&self, app_id: &AppId, token: &AccessToken) -> Result<(), TokenStoreError> {
        let sealed = self
            .key
            .seal_bytes(token.expose_secret().as_bytes(), &context(app_id));
        sqlx::query(&self.put)
            .bind(app_id.as_str())
            .bind(sealed)
            .bind(token.expires_at_unix())
            .execute(self.store.writer())
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn invalidate(&self, app_id: &AppId, stale: &AccessToken) -> Result<(), TokenStoreError> {
        let Some((sealed, exp)) = self.sealed(app_id).await? else {
            return Ok(());
        };
        // Only when the stored token is still the stale one: another instance may have put a
        // fresh one meanwhile. Sealing is randomised, so compare opened values and then
        // remove by the exact sealed text read.
        if open(&self.key, app_id, &sealed, exp).as_ref() == Some(stale) {
            sqlx::query(&self.invalidate)
                .bind(app_id.as_str())
                .bind(sealed)
                .execute(self.store.writer())
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    async fn try_lock(&self, app_id: &AppId, ttl: Duration) -> Result<bool, TokenStoreError> {
        sqlx::query(&self.ensure_row)
            .bind(app_id.as_str())
            .execute(self.store.writer())
            .await
            .map_err(err)?;
        let now = now();
        let ttl = i64::try_from(ttl.as_secs().max(1)).unwrap_or(60);
        let taken = sqlx::query(&self.lock)
            .bind(now + ttl)
            .bind(app_id.as_str())
            .bind(now)
            .execute(self.store.writer())
            .await
            .map_err(err)?
            .rows_affected();
        Ok(taken == 1)
    }

    async fn unlock(&self, app_id: &AppId) -> Result<(), TokenStoreError> {
        sqlx::query(&self.unlock)
            .bind(app_id.as_str())
            .execute(self.store.writer())
            .await
            .map_err(err)?;
        Ok(())
    }
}

/// KEYS[1] = token key; ARGV[1] = the sealed value read. Deletes it only if unchanged.
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The cache in Redis, next to the sessions.
pub struct RedisTokenStore {
    conn: TimedConnection,
    prefix: String,
    key: DataKey,
    compare_and_delete: redis::Script,
}

impl RedisTokenStore {
    /// Shares the session store's connection and key prefix.
    pub fn new(sessions: &RedisSessionStore, key: DataKey) -> Self {
        Self {
            conn: sessions.connection(),
            prefix: sessions.prefix().to_owned(),
            key,
            compare_and_delete: redis::Script::new(COMPARE_AND_DELETE),
        }
    }

    fn token_key(&self, app_id: &AppId) -> String {
        format!("{}wx:token:{app_id}", self.prefix)
    }

    fn lock_key(&self, app_id: &AppId) -> String {
        format!("{}wx:lock:{app_id}", self.prefix)
    }

    async fn sealed(&self, app_id: &AppId) -> Result<Option<String>, TokenStoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(self.token_key(app_id))
            .query_async(&mut conn)
            .await
            .map_err(err)
    }
}

/// Stored as `<expires_at>:<sealed token>`.
fn split_stored(stored: &str) -> Option<(i64, &str)> {
    let (exp, sealed) = stored.split_once(':')?;
    Some((exp.parse().ok()?, sealed))
}

#[async_trait]
impl TokenStore for RedisTokenStore {
    async fn get(&self, app_id: &AppId) -> Result<Option<AccessToken>, TokenStoreError> {
        Ok(self.sealed(app_id).await?.and_then(|stored| {
            let (exp, sealed) = split_stored(&stored)?;
            open(&self.key, app_id, sealed, exp)
        }))
    }

    async fn put(&self, app_id: &AppId, token: &AccessToken) -> Result<(), TokenStoreError> {
        let sealed = self
            .key
            .seal_bytes(token.expose_secret().as_bytes(), &context(app_id));
        let mut conn = self.conn.clone();
        let _: Option<String> = redis::cmd("SET")
            .arg(self.token_key(app_id))
            .arg(format!("{}:{sealed}", token.expires_at_unix()))
            .arg("EXAT")
            .arg(token.expires_at_unix().max(now() + 1))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn invalidate(&self, app_id: &AppId, stale: &AccessToken) -> Result<(), TokenStoreError> {
        let Some(stored) = self.sealed(app_id).await? else {
            return Ok(());
        };
        let current =
            split_stored(&stored).and_then(|(exp, sealed)| open(&self.key, app_id, sealed, exp));
        if current.as_ref() == Some(stale) {
            let mut conn = self.conn.clone();
            let _: i64 = self
                .compare_and_delete
                .key(self.token_key(app_id))
                .arg(&stored)
                .invoke_async(&mut conn)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    async fn try_lock(&self, app_id: &AppId, ttl: Duration) -> Result<bool, TokenStoreError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.lock_key(app_id))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(60_000).max(1))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(set.is_some())
    }

    async fn unlock(&self, app_id: &AppId) -> Result<(), TokenStoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.lock_key(app_id))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(())
    }
}
