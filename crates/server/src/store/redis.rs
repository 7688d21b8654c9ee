//! Sessions in Redis: every key has a TTL, tokens are stored only as hashes.
//!
//! Keys (all under the configured prefix, `wxauth:` by default):
//! - `s:<session id>`: a hash with the session; lives as long as its newest refresh token.
//! - `t:<sha256 hex>`: a hash `{sid, kind, exp, used, a}` per token. A refresh token (with `a`,
//!   the hash of the access token issued beside it) stays until it expires, used or not, so
//!   that a second use is recognised as reuse. An access token stays until its refresh token
//!   expires, so that an expired one can still log its session out; the rotation that replaces
//!   it sets its `exp` to now and lets the key go when its original lifetime ends.
//! - `g:<sha256 hex>`: `<until>:<sealed pair>`, the pair a rotation handed out for that refresh
//!   token, for `tokens.refresh_grace` (a replay until then gets the same pair). The time is
//!   judged by the service's clock; the key's TTL only cleans up.
//! - `i:<app_id>:<openid>`: the set of an identity's session ids, to revoke them all.
//! - `c:<sha256 hex>`: a login code recently exchanged, with WeChat's answer (sealed).
//! - `wx:token:<app_id>`, `wx:lock:<app_id>`: the shared WeChat access token and its refresh
//!   lease.
//!
//! One multiplexed connection (a `ConnectionManager`, which reconnects by itself) serves every
//! request, each command bounded by `sessions.redis_timeout` (a wait for a reconnect
//! included). Authentication and rotation are Lua scripts: one round trip each, and rotation is
//! atomic, so two presenters of one refresh token can never both win.
//!
//! At start the store refuses a Redis that may evict keys: an evicted used refresh token would
//! silently turn reuse detection off, an evicted identity index would hide sessions from
//! "revoke all".

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use wxauth_wechat::{AppId, OpenId};

use super::sql::SqlStore;
use super::{
    AccessCheck, CodeCache, CodeClaim, RefreshOutcome, Session, SessionStore, StoreError,
    Successor, TokenEntry,
};
use crate::config::SessionsConfig;
use crate::tokens::TokenHash;

const SESSION_FIELDS: [&str; 9] = [
    "app_id",
    "openid",
    "sk",
    "created_at",
    "last_seen_at",
    "expires_at",
    "revoked_at",
    "ua",
    "ip",
];

/// KEYS[1] = token key; ARGV[1] = session key prefix, ARGV[2] = the token kind ('a', 'r').
/// Returns [] or {sid, token exp, the nine session fields}.
const AUTHENTICATE: &str = r"
local t = redis.call('HMGET', KEYS[1], 'sid', 'kind', 'exp')
if not t[1] or t[2] ~= ARGV[2] then return {} end
local s = redis.call('HMGET', ARGV[1] .. t[1], 'app_id', 'openid', 'sk', 'created_at',
  'last_seen_at', 'expires_at', 'revoked_at', 'ua', 'ip')
if not s[1] then return {} end
return {t[1], t[3], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9]}
";

/// KEYS[1] = refresh token key, KEYS[2] = its successor key; ARGV = session key prefix, token
/// key prefix, now, new access hash, its exp, new refresh hash, its exp, the sealed successor
/// ('' for none), until when it is kept.
/// Returns {status}, {'reused', sid, app_id, openid}, {'rotated', sid, the nine session
/// fields} or {'replayed', sid, the sealed successor, the nine session fields}.
const ROTATE: &str = r"
local t = redis.call('HMGET', KEYS[1], 'sid', 'kind', 'exp', 'used', 'a')
if not t[1] or t[2] ~= 'r' then return {'unknown'} end
local skey = ARGV[1] .. t[1]
local s = redis.call('HMGET', skey, 'expires_at', 'revoked_at')
if not s[1] then return {'unknown'} end
if s[2] then return {'revoked'} end
local now = tonumber(ARGV[3])
local fields = {'app_id', 'openid', 'sk', 'created_at', 'last_seen_at', 'expires_at',
  'revoked_at', 'ua', 'ip'}
if t[4] ~= '0' then
  local kept = redis.call('GET', KEYS[2])
  local sep = kept and string.find(kept, ':', 1, true)
  local g = sep and tonumber(string.sub(kept, 1, sep - 1)) > now and string.sub(kept, sep + 1)
  if g then
    local f = redis.call('HMGET', skey, unpack(fields))
    return {'replayed', t[1], g, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]}
  end
  redis.call('HSET', skey, 'revoked_at', ARGV[3], 'revoke_reason', 'refresh_token_reused')
  local id = redis.call('HMGET', skey, 'app_id', 'openid')
  return {'reused', t[1], id[1], id[2]}
end
local sexp = tonumber(s[1])
if tonumber(t[3]) <= now or sexp <= now then return {'expired'} end
redis.call('HSET', KEYS[1], 'used', ARGV[3])
if t[5] then
  local old = ARGV[2] .. t[5]
  local oexp = redis.call('HGET', old, 'exp')
  if oexp then
    redis.call('HSET', old, 'exp', math.min(tonumber(oexp), now))
    redis.call('EXPIREAT', old, math.max(tonumber(oexp), now + 1))
  end
end
local aexp = math.min(tonumber(ARGV[5]), sexp)
local rexp = math.min(tonumber(ARGV[7]), sexp)
local akey = ARGV[2] .. ARGV[4]
redis.call('HSET', akey, 'sid', t[1], 'kind', 'a', 'exp', aexp)
redis.call('EXPIREAT', akey, rexp)
local rkey = ARGV[2] .. ARGV[6]
redis.call('HSET', rkey, 'sid', t[1], 'kind', 'r', 'exp', rexp, 'used', '0', 'a', ARGV[4])
redis.call('EXPIREAT', rkey, rexp)
if ARGV[8] ~= '' then
  local until_at = math.min(tonumber(ARGV[9]), sexp)
  redis.call('SET', KEYS[2], until_at .. ':' .. ARGV[8])
  redis.call('EXPIREAT', KEYS[2], until_at + 1)
end
redis.call('HSET', skey, 'last_seen_at', ARGV[3])
redis.call('EXPIREAT', skey, rexp)
local f = redis.call('HMGET', skey, 'app_id', 'openid', 'sk', 'created_at', 'last_seen_at',
  'expires_at', 'revoked_at', 'ua', 'ip')
return {'rotated', t[1], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]}
";

/// KEYS[1] = session key; ARGV = field, value. Sets a field of an existing session only:
/// never recreates an expired one without a TTL.
const SET_IF_EXISTS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// KEYS[1] = session key; ARGV = now, reason. Revokes a live session (once: the first
/// revocation's time and reason stay). Returns {} or, when this call revoked it, {app_id,
/// openid}.
const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1]) == 0 then return {} end
redis.call('HSET', KEYS[1], 'revoke_reason', ARGV[2])
return redis.call('HMGET', KEYS[1], 'app_id', 'openid')
";

/// KEYS[1] = identity set; ARGV = session key prefix, now, reason. Revokes every live session
/// of the identity; returns their ids.
const REVOKE_IDENTITY: &str = r"
local revoked = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local skey = ARGV[1] .. sid
  if redis.call('EXISTS', skey) == 1 then
    if redis.call('HSETNX', skey, 'revoked_at', ARGV[2]) == 1 then
      redis.call('HSET', skey, 'revoke_reason', ARGV[3])
      revoked[#revoked + 1] = sid
    end
  else
    redis.call('SREM', KEYS[1], sid)
  end
end
return revoked
";

/// The shared Redis connection with a deadline on every command.
///
/// The `ConnectionManager`'s own timeouts cover one connection attempt or one answer; a command
/// issued while it reconnects waits for the whole reconnect, retries and backoff included. The
/// deadline here bounds that wait too, so a request never waits longer than the configured
/// timeout. The reconnect goes on in the background and serves later commands.
#[derive(Clone)]
pub struct TimedConnection {
    inner: ConnectionManager,
    timeout: Duration,
}

impl TimedConnection {
    /// Bounds every command on `inner` by `timeout`.
    pub fn new(inner: ConnectionManager, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    fn timed_out(&self) -> redis::RedisError {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("Redis did not answer within {:?}", self.timeout),
        )
        .into()
    }
}

impl ConnectionLike for TimedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.inner.req_packed_command(cmd)).await {
                Ok(result) => result,
                Err(_) => Err(self.timed_out()),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let call = self.inner.req_packed_commands(cmd, offset, count);
            match tokio::time::timeout(self.timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(self.timed_out()),
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// The Redis `maxmemory-policy` that never drops a key.
pub const NO_EVICTION: &str = "noeviction";

/// Reads Redis's `maxmemory-policy`: from `CONFIG GET`, or, where CONFIG is disabled or
/// renamed (managed Redis), from `INFO memory`. `None` when neither answers.
pub async fn maxmemory_policy(conn: &mut impl ConnectionLike) -> Option<String> {
    // A map in RESP3, name/value pairs in RESP2: both read as a map.
    let config: redis::RedisResult<std::collections::HashMap<String, String>> =
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(conn)
            .await;
    if let Some(policy) = config.ok().and_then(|mut c| c.remove("maxmemory-policy")) {
        return Some(policy);
    }
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("maxmemory_policy:"))
        .map(|policy| policy.trim().to_owned())
}

/// What the eviction policy means for the service: `Err` to refuse to start, `Ok(Some)` to
/// warn, `Ok(None)` when all is well.
pub fn judge_eviction(
    policy: Option<&str>,
    allow_eviction: bool,
    url: &str,
) -> Result<Option<String>, String> {
    match policy {
        Some(NO_EVICTION) => Ok(None),
        Some(policy) if allow_eviction => Ok(Some(format!(
            "Redis at {url} may evict keys (maxmemory-policy {policy}) and \
             sessions.allow_eviction = true: a used refresh token that is evicted can be \
             presented again without revoking its session"
        ))),
        Some(policy) => Err(format!(
            "Redis at {url} may evict keys under memory pressure (maxmemory-policy {policy}): \
             it could drop a used refresh token (reuse detection would then miss a stolen \
             token) or a user's session index. Set `maxmemory-policy noeviction` (in \
             redis.conf, with CONFIG SET maxmemory-policy noeviction, or in a managed Redis's \
             parameter group), or set sessions.allow_eviction = true to accept the risk"
        )),
        None => Ok(Some(format!(
            "cannot read the maxmemory-policy of Redis at {url} (neither CONFIG GET nor INFO \
             answered): make sure it is noeviction"
        ))),
    }
}

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisSessionStore {
    conn: TimedConnection,
    /// Where `session.revoked` is written after a revocation here (the SQL outbox).
    events: Option<Arc<SqlStore>>,
    prefix: String,
    authenticate: Script,
    rotate: Script,
    set_if_exists: Script,
    revoke: Script,
    revoke_identity: Script,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisSessionStore {
    /// Connects to `sessions.redis_url`.
    pub async fn connect(config: &SessionsConfig) -> anyhow::Result<Self> {
        let url = config
            .redis_url
            .as_ref()
            .context("sessions.redis_url is not set")?;
        let client = redis::Client::open(url.expose())
            .with_context(|| format!("Failed to parse sessions.redis_url {}", url.masked()))?;
        let timeout = config.redis_timeout;
        // One quick retry rides out a Redis restart; `TimedConnection` bounds what a request
        // waits whatever the reconnect does.
        let retry_delay_ms = u64::try_from(timeout.as_millis() / 4)
            .unwrap_or(u64::MAX)
            .clamp(1, 250);
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(timeout)
            .set_connection_timeout(timeout)
            .set_number_of_retries(1)
            .set_max_delay(retry_delay_ms);
        let manager = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))
        .and_then(|conn| conn.map_err(anyhow::Error::from))
        .with_context(|| format!("Failed to connect to Redis at {}", url.masked()))?;
        let mut conn = TimedConnection::new(manager, timeout);

        let policy = maxmemory_policy(&mut conn).await;
        match judge_eviction(policy.as_deref(), config.allow_eviction, &url.masked()) {
            Ok(None) => {}
            Ok(Some(warning)) => tracing::warn!("{warning}"),
            Err(refusal) => anyhow::bail!(refusal),
        }
        Ok(Self::with_connection(conn, config.key_prefix.clone()))
    }

    /// Wraps an existing connection (the WeChat token cache shares it).
    pub fn with_connection(conn: TimedConnection, prefix: String) -> Self {
        Self {
            conn,
            events: None,
            prefix,
            authenticate: Script::new(AUTHENTICATE),
            rotate: Script::new(ROTATE),
            set_if_exists: Script::new(SET_IF_EXISTS),
            revoke: Script::new(REVOKE),
            revoke_identity: Script::new(REVOKE_IDENTITY),
        }
    }

    /// Writes `session.revoked` to this SQL store's outbox after each revocation.
    pub fn with_events(mut self, sql: Arc<SqlStore>) -> Self {
        self.events = Some(sql);
        self
    }

    /// Writes `session.revoked` for sessions just revoked here: after the Redis change, so
    /// at least once (a crash in between loses the event, never the revocation).
    async fn revoked(
        &self,
        revoked: Vec<(String, String, String)>,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        match &self.events {
            Some(sql) => sql.emit_sessions_revoked(revoked, reason, now).await,
            None => Ok(()),
        }
    }

    /// The shared connection.
    pub fn connection(&self) -> TimedConnection {
        self.conn.clone()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }

    fn token_key(&self, hash: &TokenHash) -> String {
        format!("{}t:{}", self.prefix, hash.to_hex())
    }

    fn code_key(&self, hash: &str) -> String {
        format!("{}c:{hash}", self.prefix)
    }

    fn identity_key(&self, app_id: &AppId, openid: &OpenId) -> String {
        format!("{}i:{app_id}:{openid}", self.prefix)
    }

    /// A token of `kind` with its session and its expiry, in one round trip.
    async fn token_with_session(
        &self,
        token: &TokenHash,
        kind: &str,
    ) -> Result<Option<(Session, i64)>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<Option<String>> = self
            .authenticate
            .key(self.token_key(token))
            .arg(format!("{}s:", self.prefix))
            .arg(kind)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let [sid, token_exp, rest @ ..] = reply.as_slice() else {
            return Ok(None);
        };
        let session = session_from_fields(sid.as_deref(), rest)?;
        Ok(Some((session, parse_i64(token_exp.as_deref())?)))
    }

    async fn set_field(
        &self,
        session_id: &str,
        field: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .set_if_exists
            .key(self.session_key(session_id))
            .arg(field)
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn create(
        &self,
        session: &Session,
        access: TokenEntry,
        refresh: TokenEntry,
    ) -> Result<(), StoreError> {
        let skey = self.session_key(&session.id);
        let akey = self.token_key(&access.hash);
        let rkey = self.token_key(&refresh.hash);
        let ikey = self.identity_key(&session.app_id, &session.openid);
        let mut fields: Vec<(&str, String)> = vec![
            ("app_id", session.app_id.to_string()),
            ("openid", session.openid.to_string()),
            ("sk", session.sealed_session_key.clone()),
            ("created_at", session.created_at.to_string()),
            ("last_seen_at", session.last_seen_at.to_string()),
            ("expires_at", session.expires_at.to_string()),
        ];
        if let Some(ua) = &session.user_agent {
            fields.push(("ua", ua.clone()));
        }
        if let Some(ip) = &session.ip {
            fields.push(("ip", ip.clone()));
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(&skey, &fields)
            .ignore()
            .cmd("EXPIREAT")
            .arg(&skey)
            .arg(refresh.expires_at)
            .ignore()
            .hset_multiple(
                &akey,
                &[
                    ("sid", session.id.as_str()),
                    ("kind", "a"),
                    ("exp", &access.expires_at.to_string()),
                ],
            )
            .ignore()
            // Kept past its expiry, until its refresh token expires: it still logs out.
            .cmd("EXPIREAT")
            .arg(&akey)
            .arg(refresh.expires_at)
            .ignore()
            .hset_multiple(
                &rkey,
                &[
                    ("sid", session.id.as_str()),
                    ("kind", "r"),
                    ("exp", &refresh.expires_at.to_string()),
                    ("used", "0"),
                    ("a", &access.hash.to_hex()),
                ],
            )
            .ignore()
            .cmd("EXPIREAT")
            .arg(&rkey)
            .arg(refresh.expires_at)
            .ignore()
            .sadd(&ikey, &session.id)
            .ignore()
            .cmd("EXPIREAT")
            .arg(&ikey)
            .arg(session.expires_at)
            .ignore();
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await.map_err(redis_error)?;
        Ok(())
    }

    async fn authenticate(&self, access: &TokenHash, now: i64) -> Result<AccessCheck, StoreError> {
        Ok(match self.token_with_session(access, "a").await? {
            Some((session, token_exp)) => AccessCheck::judge(session, token_exp, now),
            None => AccessCheck::Unknown,
        })
    }

    async fn session_of_refresh(&self, refresh: &TokenHash) -> Result<Option<Session>, StoreError> {
        Ok(self
            .token_with_session(refresh, "r")
            .await?
            .map(|(session, _)| session))
    }

    async fn session_of_access(&self, access: &TokenHash) -> Result<Option<Session>, StoreError> {
        Ok(self
            .token_with_session(access, "a")
            .await?
            .map(|(session, _)| session))
    }

    async fn rotate(
        &self,
        refresh: &TokenHash,
        new_access: TokenEntry,
        new_refresh: TokenEntry,
        successor: Option<Successor>,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut conn = self.conn.clone();
        let (sealed, kept_until) =
            successor.map_or((String::new(), 0), |s| (s.sealed, s.expires_at));
        let reply: Vec<Option<String>> = self
            .rotate
            .key(self.token_key(refresh))
            .key(format!("{}g:{}", self.prefix, refresh.to_hex()))
            .arg(format!("{}s:", self.prefix))
            .arg(format!("{}t:", self.prefix))
            .arg(now)
            .arg(new_access.hash.to_hex())
            .arg(new_access.expires_at)
            .arg(new_refresh.hash.to_hex())
            .arg(new_refresh.expires_at)
            .arg(sealed)
            .arg(kept_until)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        match reply.first().and_then(Option::as_deref) {
            Some("rotated") => {
                let sid = reply.get(1).and_then(Option::as_deref);
                let session = session_from_fields(sid, reply.get(2..).unwrap_or_default())?;
                Ok(RefreshOutcome::Rotated(session))
            }
            Some("replayed") => {
                let sid = reply.get(1).and_then(Option::as_deref);
                let successor = reply.get(2).cloned().flatten().ok_or_else(|| {
                    StoreError::Other(anyhow::anyhow!("a replayed rotation without its pair"))
                })?;
                let session = session_from_fields(sid, reply.get(3..).unwrap_or_default())?;
                Ok(RefreshOutcome::Replayed { session, successor })
            }
            Some("reused") => {
                if let [_, Some(sid), Some(app_id), Some(openid)] = reply.as_slice() {
                    let revoked = vec![(sid.clone(), app_id.clone(), openid.clone())];
                    self.revoked(revoked, "refresh_token_reused", now).await?;
                }
                Ok(RefreshOutcome::Reused)
            }
            Some("revoked") => Ok(RefreshOutcome::Revoked),
            Some("expired") => Ok(RefreshOutcome::Expired),
            _ => Ok(RefreshOutcome::Unknown),
        }
    }

    async fn revoke(&self, session_id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<Option<String>> = self
            .revoke
            .key(self.session_key(session_id))
            .arg(now)
            .arg(reason)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if let [Some(app_id), Some(openid)] = reply.as_slice() {
            let revoked = vec![(session_id.to_owned(), app_id.clone(), openid.clone())];
            self.revoked(revoked, reason, now).await?;
        }
        Ok(())
    }

    async fn revoke_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let sids: Vec<String> = self
            .revoke_identity
            .key(self.identity_key(app_id, openid))
            .arg(format!("{}s:", self.prefix))
            .arg(now)
            .arg(reason)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let n = sids.len() as u64;
        let revoked = sids
            .into_iter()
            .map(|sid| (sid, app_id.to_string(), openid.to_string()))
            .collect();
        self.revoked(revoked, reason, now).await?;
        Ok(n)
    }

    async fn set_session_key(&self, session_id: &str, sealed: &str) -> Result<(), StoreError> {
        self.set_field(session_id, "sk", sealed).await
    }

    async fn touch(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
        self.set_field(session_id, "last_seen_at", &now.to_string())
            .await
    }

    async fn purge_expired(&self, _now: i64, _idle_before: i64) -> Result<u64, StoreError> {
        // Every key carries a TTL: Redis deletes them itself.
        Ok(0)
    }
}

/// A login-code entry is `<expires_at>:<sealed result>`, empty result while pending. The
/// expiry is checked against the service's clock; the key's TTL only cleans up.
fn code_entry(expires_at: i64, result: &str) -> String {
    format!("{expires_at}:{result}")
}

#[async_trait]
impl CodeCache for RedisSessionStore {
    async fn claim(&self, hash: &str, now: i64, expires_at: i64) -> Result<CodeClaim, StoreError> {
        let key = self.code_key(hash);
        let mut conn = self.conn.clone();
        for _ in 0..2 {
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(code_entry(expires_at, ""))
                .arg("NX")
                .arg("EXAT")
                .arg(expires_at)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if set.is_some() {
                return Ok(CodeClaim::Claimed);
            }
            let value: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let Some((expires, result)) = value.as_deref().and_then(|v| v.split_once(':')) else {
                // Gone between the two commands: claim again.
                continue;
            };
            if expires.parse::<i64>().map_or(true, |e| e <= now) {
                self.release(hash).await?;
                continue;
            }
            return Ok(if result.is_empty() {
                CodeClaim::Pending
            } else {
                CodeClaim::Done(result.to_owned())
            });
        }
        Ok(CodeClaim::Pending)
    }

    async fn fulfil(&self, hash: &str, result: &str, expires_at: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Option<String> = redis::cmd("SET")
            .arg(self.code_key(hash))
            .arg(code_entry(expires_at, result))
            .arg("EXAT")
            .arg(expires_at)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn release(&self, hash: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.code_key(hash))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}

fn parse_i64(value: Option<&str>) -> Result<i64, StoreError> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("a session in Redis is malformed")))
}

fn session_from_fields(sid: Option<&str>, f: &[Option<String>]) -> Result<Session, StoreError> {
    let malformed = || StoreError::Other(anyhow::anyhow!("a session in Redis is malformed"));
    if f.len() != SESSION_FIELDS.len() {
        return Err(malformed());
    }
    let text = |i: usize| f[i].clone();
    Ok(Session {
        id: sid.ok_or_else(malformed)?.to_owned(),
        app_id: text(0)
            .and_then(|id| AppId::parse(id).ok())
            .ok_or_else(malformed)?,
        openid: text(1)
            .and_then(|id| OpenId::parse(id).ok())
            .ok_or_else(malformed)?,
        sealed_session_key: text(2).ok_or_else(malformed)?,
        created_at: parse_i64(f[3].as_deref())?,
        last_seen_at: parse_i64(f[4].as_deref())?,
        expires_at: parse_i64(f[5].as_deref())?,
        revoked_at: f[6].as_deref().and_then(|v| v.parse().ok()),
        user_agent: text(7),
        ip: text(8),
    })
}

/// Connection trouble is "unavailable" (503); anything else is a bug.
pub(crate) fn redis_error(err: redis::RedisError) -> StoreError {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
        // Out of memory under `noeviction`, or busy with a script: Redis cannot serve now.
        || matches!(err.code(), Some("OOM" | "BUSY" | "LOADING" | "MASTERDOWN"))
    {
        StoreError::Unavailable {
            store: "redis",
            source: err.into(),
        }
    } else {
        StoreError::Other(err.into())
    }
}
