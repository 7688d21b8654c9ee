//! Configuration: built-in defaults, then a TOML file, then `WXAUTH_<SECTION>__<KEY>`
//! environment variables (e.g. `WXAUTH_DATABASE__URL`).
//!
//! [`Config`] is what the file says, checked for types and unknown keys while loading.
//! [`Config::resolve`] then reads the secrets (inline, from a file, or from an environment
//! variable) and checks the meaning, collecting every problem so that `wxauth check-config`
//! can explain all of them at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;
use wxauth_wechat::{AppCredentials, AppId, AppSecret};

use crate::client_ip::Cidr;
use crate::seal::DataKey;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "wxauth.toml";

/// Every environment variable starting with this is a config key (`WXAUTH_<SECTION>__<KEY>`).
pub const ENV_PREFIX: &str = "WXAUTH_";

/// `WXAUTH_*` variables that are not config keys: the mini-program client's tests name the
/// binary and its log level with them, and pass their environment on to `wxauth`.
const NOT_CONFIG_VARIABLES: &[&str] = &["BIN", "TEST_LOG"];

/// Everything the service can be told.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP listener.
    pub server: ServerConfig,
    /// Where users and sessions live.
    pub database: DatabaseConfig,
    /// How to reach WeChat.
    pub wechat: WechatConfig,
    /// Token and session lifetimes.
    pub tokens: TokensConfig,
    /// Keys and open-data checks.
    pub security: SecurityConfig,
    /// Where sessions live.
    pub sessions: SessionsConfig,
    /// The mini programs this service logs users into.
    pub apps: Vec<AppConfig>,
    /// The team's own services that may introspect tokens (HTTP Basic, `name:secret`).
    pub services: Vec<ServiceConfig>,
    /// Operators allowed to call the admin API (`Authorization: Bearer <admin key>`).
    pub admins: Vec<AdminConfig>,
    /// The audit log.
    pub audit: AuditConfig,
    /// Uploaded files.
    pub storage: StorageConfig,
    /// Logging.
    pub log: LogConfig,
    /// The event outbox (webhooks and the feed).
    pub events: EventsConfig,
    /// Signed webhooks: where events are sent.
    pub webhooks: Vec<WebhookConfig>,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Rate limits per client address and per app.
    pub limits: LimitsConfig,
}

/// `[events]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// How long events are kept once every webhook has them (delivered or failed): the feed
    /// reaches back this far.
    #[serde(with = "duration")]
    pub retention: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// One `[[webhooks]]` entry: an endpoint events are POSTed to, signed as Standard Webhooks
/// says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint (http or https).
    pub url: Url,
    /// The signing secret, `whsec_` and base64 (`wxauth gen-webhook-secret`), inline (prefer
    /// `secret_file` or `secret_env`).
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// A file holding the secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The event types sent here; all when left out.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// How long an answer may take; then the attempt counts as failed.
    #[serde(default = "WebhookConfig::default_timeout", with = "duration")]
    pub timeout: Duration,
    /// How long a delivery is retried (from the event) before it is marked failed.
    #[serde(default = "WebhookConfig::default_retry_for", with = "duration")]
    pub retry_for: Duration,
    /// The wait after the first failed attempt; it doubles with each further one (with
    /// jitter), up to `max_backoff`.
    #[serde(default = "WebhookConfig::default_backoff", with = "duration")]
    pub backoff: Duration,
    /// The longest wait between attempts.
    #[serde(default = "WebhookConfig::default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
}

impl WebhookConfig {
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_retry_for() -> Duration {
        Duration::from_secs(86_400)
    }
    fn default_backoff() -> Duration {
        Duration::from_secs(5)
    }
    fn default_max_backoff() -> Duration {
        Duration::from_secs(3_600)
    }

    /// An entry with the defaults.
    pub fn new(url: Url, secret: &str) -> Self {
        Self {
            url,
            secret: Some(SecretString::from(secret)),
            secret_file: None,
            secret_env: None,
            events: None,
            timeout: Self::default_timeout(),
            retry_for: Self::default_retry_for(),
            backoff: Self::default_backoff(),
            max_backoff: Self::default_max_backoff(),
        }
    }
}

/// A webhook endpoint with its secret read and checked.
#[derive(Clone)]
pub struct Webhook {
    /// Where to POST.
    pub url: Url,
    /// The HMAC key (the secret's base64 part, decoded).
    pub key: secrecy::SecretSlice<u8>,
    /// The types sent; `None`: all.
    pub types: Option<Vec<String>>,
    /// Answer timeout.
    pub timeout: Duration,
    /// Retry window.
    pub retry_for: Duration,
    /// First backoff.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url.as_str())
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

/// The prefix of a Standard Webhooks secret.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

/// Longest webhook URL (it keys the deliveries).
const WEBHOOK_URL_MAX: usize = 512;

fn resolve_webhook(hook: &WebhookConfig) -> Result<Webhook, String> {
    if !matches!(hook.url.scheme(), "http" | "https") {
        return Err(format!("url must be http(s) (got {})", hook.url.scheme()));
    }
    if hook.url.as_str().len() > WEBHOOK_URL_MAX {
        return Err(format!("url must be at most {WEBHOOK_URL_MAX} characters"));
    }
    let owner = format!("webhook {}", hook.url);
    let secret = resolve_secret(
        &owner,
        hook.secret.as_ref(),
        hook.secret_file.as_deref(),
        hook.secret_env.as_deref(),
    )?;
    let key = secret
        .strip_prefix(WEBHOOK_SECRET_PREFIX)
        .and_then(|b64| BASE64.decode(b64).ok())
        .filter(|key| key.len() >= 16)
        .ok_or_else(|| {
            "the secret must be whsec_ followed by base64 of at least 16 bytes (use `wxauth \
             gen-webhook-secret`)"
                .to_owned()
        })?;
    if let Some(types) = &hook.events {
        if types.is_empty() {
            return Err("events is empty: leave it out to send every type".to_owned());
        }
        if let Some(unknown) = types.iter().find(|t| !crate::events::is_type(t)) {
            return Err(format!(
                "events: {unknown:?} is not an event type (known: {})",
                crate::events::TYPES.join(", ")
            ));
        }
    }
    if hook.timeout.is_zero() {
        return Err("timeout must be more than 0s".to_owned());
    }
    if hook.backoff.is_zero() || hook.max_backoff < hook.backoff {
        return Err("backoff must be more than 0s and at most max_backoff".to_owned());
    }
    Ok(Webhook {
        url: hook.url.clone(),
        key: key.into(),
        types: hook.events.clone(),
        timeout: hook.timeout,
        retry_for: hook.retry_for,
        backoff: hook.backoff,
        max_backoff: hook.max_backoff,
    })
}

/// `[metrics]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` on this address only (e.g. "127.0.0.1:9464"), not on the main
    /// listener. Unset: `/metrics` is on the main listener.
    pub listen: Option<SocketAddr>,
}

/// `[limits]`: token buckets for the routes that cost a WeChat call or a write. Each action
/// has a bucket per client address (`per_ip`) and one per app (`per_app`), written
/// `"N/s"`, `"N/m"`, `"N/h"` or `"N/d"`: up to N at once, refilled at N per second, minute,
/// hour or day. `"0"` turns that bucket off. Shared by every instance through Redis when
/// sessions are in Redis; each instance counts for itself otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `POST /v1/auth/login` (default 300/m per address, 500/s per app).
    pub login: LimitConfig,
    /// `POST /v1/auth/refresh` (default 300/m per address, 1000/s per app).
    pub refresh: LimitConfig,
    /// `POST /v1/auth/check` (default 60/m per address, 200/s per app).
    pub check: LimitConfig,
    /// `POST /v1/me/phone` (default 30/m per address, 50/s per app).
    pub phone: LimitConfig,
    /// `POST /v1/me/userinfo` (default 60/m per address, 200/s per app).
    pub userinfo: LimitConfig,
    /// `POST /v1/me/avatar` (default 30/m per address, 50/s per app).
    pub avatar: LimitConfig,
}

/// One action's buckets; a bucket left out keeps its default.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// Per client address.
    pub per_ip: Option<Rate>,
    /// Per app.
    pub per_app: Option<Rate>,
}

/// A token bucket's size and refill: up to `burst` at once, `burst` more each `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed at once (0: no limit).
    pub burst: u32,
    /// The time in which the bucket refills completely.
    pub period: Duration,
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        burst: 0,
        period: Duration::from_secs(1),
    };

    /// `n` per `period`.
    pub const fn per(n: u32, period: Duration) -> Self {
        Self { burst: n, period }
    }

    /// Whether this bucket limits anything.
    pub fn is_on(&self) -> bool {
        self.burst > 0
    }

    /// Reads `"N/s"`, `"N/m"`, `"N/h"`, `"N/d"`, or `"0"` (off).
    ///
    /// ```
    /// use std::time::Duration;
    /// use wxauth::config::Rate;
    /// assert_eq!(Rate::parse("30/m"), Ok(Rate::per(30, Duration::from_secs(60))));
    /// assert_eq!(Rate::parse("0"), Ok(Rate::OFF));
    /// assert!(Rate::parse("30 per minute").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a rate: write e.g. \"30/m\" (N/s, N/m, N/h or N/d), or \"0\" \
                 for no limit"
            )
        };
        if text == "0" {
            return Ok(Self::OFF);
        }
        let (n, unit) = text.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Ok(Self::OFF);
        }
        Ok(Self::per(n, Duration::from_secs(secs)))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_on() {
            return f.write_str("0");
        }
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}/{unit}", self.burst)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(0) => Ok(Self::OFF),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "{n} is not a rate: write e.g. \"{n}/m\", or 0 for no limit"
            ))),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// The limited actions, as `[limits]` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitedAction {
    /// `POST /v1/auth/login`
    Login,
    /// `POST /v1/auth/refresh`
    Refresh,
    /// `POST /v1/auth/check`
    Check,
    /// `POST /v1/me/phone`
    Phone,
    /// `POST /v1/me/userinfo`
    Userinfo,
    /// `POST /v1/me/avatar`
    Avatar,
}

impl LimitedAction {
    /// Every action.
    pub const ALL: [LimitedAction; 6] = [
        Self::Login,
        Self::Refresh,
        Self::Check,
        Self::Phone,
        Self::Userinfo,
        Self::Avatar,
    ];

    /// The name in `[limits]`, in metrics and in Redis keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Refresh => "refresh",
            Self::Check => "check",
            Self::Phone => "phone",
            Self::Userinfo => "userinfo",
            Self::Avatar => "avatar",
        }
    }

    /// The default (per address, per app).
    pub fn defaults(self) -> (Rate, Rate) {
        const S: Duration = Duration::from_secs(1);
        const M: Duration = Duration::from_secs(60);
        match self {
            Self::Login => (Rate::per(300, M), Rate::per(500, S)),
            Self::Refresh => (Rate::per(300, M), Rate::per(1000, S)),
            Self::Check | Self::Userinfo => (Rate::per(60, M), Rate::per(200, S)),
            Self::Phone | Self::Avatar => (Rate::per(30, M), Rate::per(50, S)),
        }
    }
}

impl LimitsConfig {
    /// The buckets of an action, defaults filled in: (per address, per app).
    pub fn rates(&self, action: LimitedAction) -> (Rate, Rate) {
        let set = match action {
            LimitedAction::Login => self.login,
            LimitedAction::Refresh => self.refresh,
            LimitedAction::Check => self.check,
            LimitedAction::Phone => self.phone,
            LimitedAction::Userinfo => self.userinfo,
            LimitedAction::Avatar => self.avatar,
        };
        let (ip, app) = action.defaults();
        (set.per_ip.unwrap_or(ip), set.per_app.unwrap_or(app))
    }

    /// Every bucket set to `rate` (tests and benchmarks from one address).
    pub fn all(rate: Rate) -> Self {
        let set = LimitConfig {
            per_ip: Some(rate),
            per_app: Some(rate),
        };
        Self {
            login: set,
            refresh: set,
            check: set,
            phone: set,
            userinfo: set,
            avatar: set,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where uploaded avatars are kept (served at `/media/...`). Shared storage when several
    /// instances run.
    pub media_dir: PathBuf,
    /// Largest avatar accepted, in bytes.
    pub avatar_max_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            media_dir: PathBuf::from("./media"),
            avatar_max_bytes: 1024 * 1024,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL clients reach this service at, for the links it hands out (avatars). Defaults
    /// to `http://` and the address listened on.
    pub public_url: Option<Url>,
    /// Load balancers and proxies whose `X-Forwarded-For` / `X-Real-IP` give the client's
    /// address (addresses or ranges like "10.0.0.0/8"). Empty: the peer address is the client.
    pub trusted_proxies: Vec<String>,
    /// Longest wait for a request's headers, from the connection's start or, on a kept-alive
    /// HTTP/1.1 connection, from the previous response; then the connection is closed.
    /// "0s" turns the limit off.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Longest a whole request may take, body included; past it the answer is 408
    /// `request_timeout`. "0s" turns the limit off.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// A connection on which nothing has moved for this long, with no request being handled,
    /// is closed. "0s" turns the limit off.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Most connections served at once; requests on further ones are answered 503
    /// `overloaded` with `Retry-After`. 0 turns the limit off.
    pub max_connections: usize,
    /// On SIGTERM or Ctrl-C, how long requests in flight may take to finish before the
    /// remaining connections are closed.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` (created if missing), `mysql://USER:PASS@HOST/DB` (MySQL 8, MariaDB
    /// 10.11+) or `postgres://USER:PASS@HOST/DB`.
    pub url: DatabaseUrl,
    /// Most connections kept in the pool.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// How long a request waits for a free connection before giving up.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DatabaseUrl::from("sqlite://wxauth.db"),
            max_connections: 10,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Which SQL database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

/// A database or Redis URL whose `Debug` hides the password.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL with its password, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced, to show.
    pub fn masked(&self) -> String {
        match Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            _ => self.0.clone(),
        }
    }
}

impl From<&str> for DatabaseUrl {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.masked())
    }
}

/// `[sessions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// "sql" (the database, the default) or "redis".
    pub store: SessionStoreKind,
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, when `store = "redis"`.
    pub redis_url: Option<DatabaseUrl>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Longest wait for one Redis call (a reconnect included) before the request fails with
    /// 503.
    #[serde(with = "duration")]
    pub redis_timeout: Duration,
    /// Start even when Redis may evict keys (`maxmemory-policy` other than `noeviction`),
    /// accepting that an evicted used refresh token turns reuse detection off for it.
    pub allow_eviction: bool,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            store: SessionStoreKind::Sql,
            redis_url: None,
            key_prefix: "wxauth:".to_owned(),
            redis_timeout: Duration::from_secs(2),
            allow_eviction: false,
        }
    }
}

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStoreKind {
    /// In the SQL database, next to the users.
    Sql,
    /// In Redis, with TTLs.
    Redis,
}

/// `[wechat]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatConfig {
    /// WeChat's API base URL (pointed at a simulator in the demo and tests).
    pub api_base: Url,
    /// Total time allowed for one call to WeChat.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Time allowed to connect to WeChat.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How many times a "system busy" (-1) answer is retried.
    pub busy_retries: u32,
    /// Most calls to WeChat in flight at once, over all apps; 0 turns the cap off.
    pub max_concurrency: usize,
    /// How long a call beyond `max_concurrency` waits for a free place before the request
    /// is answered 503 `overloaded`.
    #[serde(with = "duration")]
    pub concurrency_wait: Duration,
}

impl Default for WechatConfig {
    fn default() -> Self {
        Self {
            api_base: Url::parse("https://api.weixin.qq.com").unwrap_or_else(|_| unreachable!()),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            busy_retries: 2,
            max_concurrency: 64,
            concurrency_wait: Duration::from_secs(1),
        }
    }
}

/// `[tokens]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Lifetime of an access token. When the file leaves it out: 2 h for opaque tokens,
    /// 10 minutes for JWTs (an offline verifier accepts a revoked JWT until it expires).
    #[serde(with = "duration")]
    pub access_ttl: Duration,
    /// Lifetime of a refresh token; each refresh starts a new one, so this is also how long a
    /// session may sit unused (the idle timeout).
    #[serde(with = "duration")]
    pub refresh_ttl: Duration,
    /// Longest a session lives however often it is refreshed (the absolute timeout).
    #[serde(with = "duration")]
    pub session_max_age: Duration,
    /// How long after a refresh the refresh token just used still answers with the same new
    /// pair (a double submit, a retry after a lost answer) instead of counting as reuse and
    /// revoking the session. "0s" turns it off.
    #[serde(with = "duration")]
    pub refresh_grace: Duration,
    /// What access tokens are: "opaque" (random, looked up in the store) or "jwt" (signed,
    /// verifiable offline against `/.well-known/jwks.json`).
    pub format: TokenFormat,
    /// The algorithm of new JWT signing keys: "EdDSA" (Ed25519) or "ES256" (P-256).
    pub jwt_algorithm: JwtAlgorithm,
    /// `iss` of the JWTs; defaults to `server.public_url` (without a trailing slash).
    pub issuer: Option<String>,
    /// `aud` of the JWTs.
    pub audience: Vec<String>,
}

impl TokensConfig {
    /// The access-token lifetime used when the configuration does not set one.
    pub fn default_access_ttl(format: TokenFormat) -> Duration {
        match format {
            TokenFormat::Opaque => Duration::from_secs(2 * 3600),
            TokenFormat::Jwt => Duration::from_secs(600),
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            access_ttl: Self::default_access_ttl(TokenFormat::Opaque),
            refresh_ttl: Duration::from_secs(30 * 86400),
            session_max_age: Duration::from_secs(180 * 86400),
            refresh_grace: Duration::from_secs(10),
            format: TokenFormat::Opaque,
            jwt_algorithm: JwtAlgorithm::EdDSA,
            issuer: None,
            audience: vec!["wxauth".to_owned()],
        }
    }
}

/// The JWS algorithm of new signing keys (`tokens.jwt_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    /// Ed25519 signatures (RFC 8037).
    #[default]
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl JwtAlgorithm {
    /// The `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }

    /// The algorithm an `alg` name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What access tokens are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// Random strings; only their hash is stored.
    #[default]
    Opaque,
    /// Signed JWTs.
    Jwt,
}

/// `[security]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Base64 of 32 bytes; encrypts session_keys at rest (`wxauth gen-key` makes one).
    pub data_key: Option<SecretString>,
    /// A file holding the data key instead.
    pub data_key_file: Option<PathBuf>,
    /// Data keys used before the current one: they still open what they sealed (nothing new is
    /// sealed with them) until `wxauth rotate-data-key` has sealed it again.
    pub previous_data_keys: Vec<SecretString>,
    /// Files holding previous data keys instead.
    pub previous_data_key_files: Vec<PathBuf>,
    /// Oldest open data accepted (by its watermark); "0s" turns the check off.
    #[serde(with = "duration")]
    pub watermark_max_age: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            data_key: None,
            data_key_file: None,
            previous_data_keys: Vec::new(),
            previous_data_key_files: Vec::new(),
            watermark_max_age: Duration::from_secs(600),
        }
    }
}

/// One `[[apps]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The mini program's AppID.
    pub app_id: String,
    /// Its AppSecret, inline (prefer `secret_file` or `secret_env`).
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// A file holding the AppSecret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the AppSecret.
    #[serde(default)]
    pub secret_env: Option<String>,
}

/// One `[[services]]` entry: a backend of the team's (orders, payments, ...) allowed to call
/// `POST /v1/introspect` with HTTP Basic `name:secret` (`wxauth gen-secret` makes a secret).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The service's name: the Basic user name.
    pub name: String,
    /// Its secret, inline (prefer `secret_file` or `secret_env`).
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// A file holding the secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
}

/// One `[[admins]]` entry: an operator of the admin API. `wxauth gen-admin-key` prints a new
/// key (for the operator) and the entry (for this file); the key itself is never stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The operator's name, as the audit log records it.
    pub name: String,
    /// `sha256:` and the hex SHA-256 of the key.
    pub key_hash: String,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How long audit-log entries are kept; older ones are purged.
    #[serde(with = "duration")]
    pub retention: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(180 * 86400),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. "info" or "wxauth=debug,info"; `RUST_LOG` overrides it.
    pub level: String,
    /// "text" or "json".
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What [`Config::resolve`] produces: the secrets read and checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The apps, with their secrets.
    pub apps: Vec<AppCredentials>,
    /// The key that seals session_keys at rest.
    pub data_key: DataKey,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The team's services, with their secrets.
    pub services: Vec<(String, SecretString)>,
    /// The operators, with the hashes of their keys.
    pub admins: Vec<(String, [u8; 32])>,
    /// The webhook endpoints, with their keys.
    pub webhooks: Vec<Webhook>,
}

impl Config {
    /// Loads defaults, then `file` (or `wxauth.toml` when present), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let mut figment = Figment::new();
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(format!("the config file {} does not exist", path.display()));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_FILE).exists() {
                    figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE));
                }
            }
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .ignore(NOT_CONFIG_VARIABLES)
                .split("__"),
        );
        let mut config = extract(&figment)?;
        if figment.find_value("tokens.access_ttl").is_err() {
            config.tokens.access_ttl = TokensConfig::default_access_ttl(config.tokens.format);
        }
        Ok(config)
    }

    /// The `[[webhooks]]` entries with their secrets read and checked.
    pub fn resolve_webhooks(&self) -> Result<Vec<Webhook>, Vec<String>> {
        let mut problems = Vec::new();
        let mut webhooks: Vec<Webhook> = Vec::with_capacity(self.webhooks.len());
        for (i, hook) in self.webhooks.iter().enumerate() {
            match resolve_webhook(hook) {
                Ok(hook) => {
                    if webhooks.iter().any(|known| known.url == hook.url) {
                        problems.push(format!("webhooks[{i}]: the url is listed twice"));
                    }
                    webhooks.push(hook);
                }
                Err(problem) => problems.push(format!("webhooks[{i}]: {problem}")),
            }
        }
        if self.events.retention.is_zero() {
            problems.push("events.retention must be more than 0s".to_owned());
        }
        if problems.is_empty() {
            Ok(webhooks)
        } else {
            Err(problems)
        }
    }

    /// Reads the secrets and checks everything the types cannot, reporting every problem.
    pub fn resolve(&self) -> Result<Resolved, Vec<String>> {
        let mut problems = Vec::new();

        if self.apps.is_empty() {
            problems.push(
                "no mini program is configured: add an [[apps]] entry with app_id and \
                 secret_file (or secret_env, or secret)"
                    .to_owned(),
            );
        }
        let mut apps = Vec::with_capacity(self.apps.len());
        for (i, app) in self.apps.iter().enumerate() {
            match resolve_app(app) {
                Ok(creds) => {
                    if apps
                        .iter()
                        .any(|a: &AppCredentials| a.app_id == creds.app_id)
                    {
                        problems.push(format!(
                            "apps[{i}]: app_id {} is listed twice",
                            creds.app_id
                        ));
                    }
                    apps.push(creds);
                }
                Err(problem) => problems.push(format!("apps[{i}]: {problem}")),
            }
        }

        let mut services: Vec<(String, SecretString)> = Vec::with_capacity(self.services.len());
        for (i, service) in self.services.iter().enumerate() {
            let name = service.name.trim();
            if name.is_empty() || name.contains(':') {
                problems.push(format!(
                    "services[{i}]: name must be non-empty and without ':' (it is the Basic user)"
                ));
                continue;
            }
            if services.iter().any(|(known, _)| known == name) {
                problems.push(format!("services[{i}]: the name {name} is listed twice"));
            }
            let owner = format!("service {name}");
            match resolve_secret(
                &owner,
                service.secret.as_ref(),
                service.secret_file.as_deref(),
                service.secret_env.as_deref(),
            ) {
                Ok(secret) => services.push((name.to_owned(), SecretString::from(secret))),
                Err(problem) => problems.push(format!("services[{i}]: {problem}")),
            }
        }

        let mut admins: Vec<(String, [u8; 32])> = Vec::with_capacity(self.admins.len());
        for (i, admin) in self.admins.iter().enumerate() {
            let name = admin.name.trim();
            if name.is_empty() {
                problems.push(format!("admins[{i}]: name must not be empty"));
                continue;
            }
            if admins.iter().any(|(known, _)| known == name) {
                problems.push(format!("admins[{i}]: the name {name} is listed twice"));
            }
            match crate::service::admins::parse_key_hash(&admin.key_hash) {
                Ok(hash) => admins.push((name.to_owned(), hash)),
                Err(problem) => problems.push(format!("admins[{i}]: {problem}")),
            }
        }
        let webhooks = self.resolve_webhooks().unwrap_or_else(|more| {
            problems.extend(more);
            Vec::new()
        });

        let data_key = match resolve_data_key(&self.security) {
            Ok(key) => Some(key),
            Err(problem) => {
                problems.push(problem);
                None
            }
        };

        if Dialect::of_url(self.database.url.expose()).is_none() {
            problems.push(format!(
                "database.url must start with sqlite://, mysql:// or postgres:// (got {})",
                self.database.url.masked()
            ));
        }
        if self.sessions.store == SessionStoreKind::Redis {
            match &self.sessions.redis_url {
                None => problems.push(
                    "sessions.store is \"redis\" but sessions.redis_url is not set".to_owned(),
                ),
                Some(url) if !url.expose().starts_with("redis://") => {
                    problems.push(format!(
                        "sessions.redis_url must start with redis:// (got {}; TLS to Redis \
                         is not supported: use a local TLS tunnel)",
                        url.masked()
                    ));
                }
                Some(_) => {}
            }
        }
        if self.sessions.store == SessionStoreKind::Redis && self.sessions.redis_timeout.is_zero() {
            problems.push("sessions.redis_timeout must be more than 0s".to_owned());
        }
        if self.audit.retention.is_zero() {
            problems.push("audit.retention must be more than 0s".to_owned());
        }
        if self.storage.avatar_max_bytes == 0 {
            problems.push("storage.avatar_max_bytes must be more than 0".to_owned());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".to_owned());
        }
        if let Some(problem) = api_base_problem(&self.wechat.api_base) {
            problems.push(problem);
        }
        if let Some(url) = &self.server.public_url
            && !matches!(url.scheme(), "http" | "https")
        {
            problems.push("server.public_url must be an http(s) URL".to_owned());
        }
        if self.wechat.timeout.is_zero() {
            problems.push("wechat.timeout must be more than 0s".to_owned());
        }
        if self.tokens.access_ttl.is_zero() || self.tokens.refresh_ttl.is_zero() {
            problems
                .push("tokens.access_ttl and tokens.refresh_ttl must be more than 0s".to_owned());
        }
        if self.tokens.session_max_age < self.tokens.access_ttl {
            problems.push("tokens.session_max_age must be at least tokens.access_ttl".to_owned());
        }

        if self.tokens.audience.is_empty() || self.tokens.audience.iter().any(String::is_empty) {
            problems.push(
                "tokens.audience must list at least one audience, none of them empty".to_owned(),
            );
        }
        if self
            .tokens
            .issuer
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            problems
                .push("tokens.issuer must not be empty (leave it out for public_url)".to_owned());
        }

        let mut trusted_proxies = Vec::new();
        for text in &self.server.trusted_proxies {
            match Cidr::parse(text) {
                Ok(net) => trusted_proxies.push(net),
                Err(problem) => problems.push(format!("server.trusted_proxies: {problem}")),
            }
        }

        match data_key {
            Some(data_key) if problems.is_empty() => Ok(Resolved {
                apps,
                data_key,
                trusted_proxies,
                services,
                admins,
                webhooks,
            }),
            _ => Err(problems),
        }
    }
}

/// WeChat's AppIDs are `wx` and 16 hexadecimal characters (the console shows them lowercase).
pub fn is_app_id(text: &str) -> bool {
    text.len() == 18 && text.starts_with("wx") && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why an `app_id` is not an AppID, without echoing a value that may be the AppSecret.
fn app_id_problem(text: &str) -> String {
    let looks_like_secret = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
    if looks_like_secret {
        "app_id is 32 hexadecimal characters, which is what an AppSecret looks like: the AppID \
         is `wx` followed by 16 hexadecimal characters"
            .to_owned()
    } else {
        format!(
            "app_id {text:?} is not a WeChat AppID: it is `wx` followed by 16 hexadecimal \
             characters (e.g. wx0123456789abcdef), as the WeChat admin console shows it under \
             开发管理 → 开发设置"
        )
    }
}

/// `wechat.api_base` must be http(s), and plain http only to this machine: every token
/// request carries the AppSecret in its query string or body.
fn api_base_problem(url: &Url) -> Option<String> {
    match url.scheme() {
        "https" => None,
        "http" if is_loopback(url) => None,
        "http" => Some(format!(
            "wechat.api_base {url} is plain http to another host: the AppSecret travels in its \
             query string, so only a loopback host (127.0.0.1, ::1, localhost: a local \
             simulator) may use http; use https"
        )),
        _ => Some(format!(
            "wechat.api_base must be an http(s) URL (got {url})"
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn resolve_app(app: &AppConfig) -> Result<AppCredentials, String> {
    if !is_app_id(&app.app_id) {
        return Err(app_id_problem(&app.app_id));
    }
    let app_id = AppId::parse(app.app_id.as_str()).map_err(|e| e.to_string())?;
    let secret = resolve_secret(
        &format!("app {app_id}"),
        app.secret.as_ref(),
        app.secret_file.as_deref(),
        app.secret_env.as_deref(),
    )?;
    Ok(AppCredentials::new(app_id, AppSecret::new(secret)))
}

/// Reads a secret given inline, in a file, or in an environment variable (exactly one).
fn resolve_secret(
    owner: &str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<String, String> {
    let secret = match (inline, file, env) {
        (Some(secret), None, None) => secret.expose_secret().trim().to_owned(),
        (None, Some(path), None) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read secret_file {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        (None, None, Some(var)) => std::env::var(var)
            .map_err(|_| format!("the environment variable {var} (secret_env) is not set"))?
            .trim()
            .to_owned(),
        _ => {
            return Err(format!(
                "{owner} needs exactly one of secret, secret_file or secret_env"
            ));
        }
    };
    if secret.is_empty() {
        return Err(format!("the secret of {owner} is empty"));
    }
    Ok(secret)
}

fn resolve_data_key(security: &SecurityConfig) -> Result<DataKey, String> {
    let encoded = match (&security.data_key, &security.data_key_file) {
        (Some(_), Some(_)) => {
            return Err("set only one of security.data_key and security.data_key_file".to_owned());
        }
        (Some(key), None) => key.expose_secret().trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read security.data_key_file {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => {
            return Err(
                "no data key: set security.data_key_file (or WXAUTH_SECURITY__DATA_KEY) to the \
                 output of `wxauth gen-key`"
                    .to_owned(),
            );
        }
    };
    let current = decode_data_key(&encoded, "the data key")?;
    let mut previous = Vec::new();
    for (i, key) in security.previous_data_keys.iter().enumerate() {
        let what = format!("security.previous_data_keys[{i}]");
        previous.push(decode_data_key(key.expose_secret().trim(), &what)?);
    }
    for path in &security.previous_data_key_files {
        let encoded = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read security.previous_data_key_files entry {}: {e}",
                path.display()
            )
        })?;
        let what = format!("the previous data key in {}", path.display());
        previous.push(decode_data_key(encoded.trim(), &what)?);
    }
    Ok(DataKey::with_previous(current, &previous))
}

fn decode_data_key(encoded: &str, what: &str) -> Result<[u8; 32], String> {
    let bytes = BASE64
        .decode(encoded.as_bytes())
        .map_err(|_| format!("{what} is not valid base64 (use `wxauth gen-key`)"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{what} must be 32 bytes of base64 (use `wxauth gen-key`)"))
}

fn extract(figment: &Figment) -> Result<Config, String> {
    figment.extract().map_err(|err| explain_figment(&err))
}

fn explain_figment(err: &figment::Error) -> String {
    err.clone()
        .into_iter()
        .map(|e| explain_one(&e))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An unknown key is named where it was written (file section, or environment variable) with
/// the nearest known name; any other error keeps figment's wording.
fn explain_one(err: &figment::Error) -> String {
    let figment::error::Kind::UnknownField(found, expected) = &err.kind else {
        return err.to_string();
    };
    let parent = &err.path[..err.path.len().saturating_sub(1)];
    let metadata = err.metadata.as_ref();
    match metadata.and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(file)) => unknown_in_file(parent, found, expected, file),
        _ if metadata.is_some_and(|m| m.name.contains("environment variable")) => {
            unknown_variable(parent, found, expected, &config_variables())
        }
        _ => err.to_string(),
    }
}

fn unknown_in_file(parent: &[String], found: &str, expected: &[&str], file: &Path) -> String {
    let file = file.display();
    let (what, known) = match parent {
        [] => (
            format!("unknown section `{found}` in {file}"),
            "known sections",
        ),
        [section] => (
            format!("unknown key `{found}` in section [{section}] of {file}"),
            "known keys",
        ),
        [list, index] => match index.parse::<usize>() {
            Ok(index) => (
                format!(
                    "unknown key `{found}` in [[{list}]] entry {} of {file}",
                    index + 1
                ),
                "known keys",
            ),
            Err(_) => (
                format!("unknown key `{found}` in [{list}.{index}] of {file}"),
                "known keys",
            ),
        },
        _ => (
            format!("unknown key `{found}` in [{}] of {file}", parent.join(".")),
            "known keys",
        ),
    };
    if let Some(near) = closest(found, expected) {
        return format!("{what} (did you mean `{near}`?)");
    }
    // A key written above every section header lands at the top level.
    if parent.is_empty()
        && let Some(section) = expected
            .iter()
            .find(|s| section_keys(s).is_some_and(|keys| keys.contains(&found)))
    {
        return format!(
            "{what} (`{found}` is a key of section [{section}]: put it under that header)"
        );
    }
    format!("{what} ({known}: {})", expected.join(", "))
}

/// `vars` are the names of the `WXAUTH_*` variables set: figment reports the first unknown
/// level of a key, and the variable itself may go deeper (`WXAUTH_SESSION__STORE`).
fn unknown_variable(parent: &[String], found: &str, expected: &[&str], vars: &[String]) -> String {
    let name = |path: &[&str]| format!("{ENV_PREFIX}{}", path.join("__")).to_ascii_uppercase();
    let mut path: Vec<&str> = parent.iter().map(String::as_str).collect();
    path.push(found);
    // `WXAUTH_APPS='[{app_id = "...", secrte = "..."}]'`: a key inside a list entry.
    let entry = path
        .iter()
        .enumerate()
        .find_map(|(at, p)| Some((at, p.parse::<usize>().ok()?)));
    if let Some((at, index)) = entry {
        let what = format!(
            "unknown key `{found}` in entry {} of {}",
            index + 1,
            name(&path[..at])
        );
        return match closest(found, expected) {
            Some(near) => format!("{what} (did you mean `{near}`?)"),
            None => format!("{what} (known keys: {})", expected.join(", ")),
        };
    }
    let written = vars.iter().find_map(|var| {
        let components: Vec<String> = var
            .get(ENV_PREFIX.len()..)?
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let matches =
            components.len() >= path.len() && components.iter().zip(&path).all(|(c, p)| c == p);
        matches.then(|| (var.as_str(), components[path.len()..].to_vec()))
    });
    let (shown, rest) = match &written {
        Some((var, rest)) => ((*var).to_owned(), rest.clone()),
        None => (name(&path), Vec::new()),
    };
    let what = format!("unknown environment variable {shown}: it names no configuration key");
    let mut suggestion = None;
    // `WXAUTH_DATABASE_URL`: one underscore where the section ends needs two.
    if parent.is_empty() && rest.is_empty() {
        suggestion = found.match_indices('_').find_map(|(at, _)| {
            let (section, key) = (&found[..at], &found[at + 1..]);
            let section = expected.iter().find(|s| s.eq_ignore_ascii_case(section))?;
            let key = closest(key, section_keys(section)?)?;
            Some(name(&[section, key]))
        });
    }
    if suggestion.is_none()
        && let Some(near) = closest(found, expected)
    {
        path.pop();
        path.push(near);
        path.extend(rest.iter().map(String::as_str));
        suggestion = Some(name(&path));
    }
    match suggestion {
        Some(near) => format!("{what} (did you mean `{near}`?)"),
        None => format!(
            "{what} (variables are {ENV_PREFIX}<SECTION>__<KEY>, with two underscores between \
             section and key, e.g. {ENV_PREFIX}DATABASE__URL; known here: {})",
            expected.join(", ")
        ),
    }
}

/// The names of the `WXAUTH_*` variables set.
fn config_variables() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .filter(|key| {
            key.get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
        })
        .collect()
}

/// The nearest known name, if one is near enough to be a typo of `found`.
fn closest<'a>(found: &str, known: &[&'a str]) -> Option<&'a str> {
    let found = found.to_ascii_lowercase();
    let limit = (found.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&found, k), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// The keys of a section, as the config types declare them: asked of the types themselves (by
/// extracting a config with an impossible key), so the list never falls behind the structs.
fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    let probe = Figment::from(figment::providers::Serialized::default(
        &format!("{section}.-"),
        0,
    ));
    match probe.extract::<Config>() {
        Err(err) => match err.kind {
            figment::error::Kind::UnknownField(_, keys) => Some(keys),
            _ => None,
        },
        Ok(_) => None,
    }
}

/// Durations in human form ("90s", "10m", "2h", "30d"), or a number of seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Writes a duration as it would be configured: in the largest unit that divides it
    /// exactly ("180d", "90m", "1500ms"), never as a sum of months, days and hours.
    pub fn format(d: Duration) -> String {
        const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
        if d.subsec_nanos() == 0 {
            let secs = d.as_secs();
            if secs == 0 {
                return "0s".to_owned();
            }
            for (size, unit) in UNITS {
                if secs % size == 0 {
                    return format!("{}{unit}", secs / size);
                }
            }
        }
        if d.subsec_nanos() % 1_000_000 == 0 {
            return format!("{}ms", d.as_millis());
        }
        humantime::format_duration(d).to_string()
    }

    /// Reads the human form or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(secs) => Ok(Duration::from_secs(secs)),
            Raw::Text(text) => humantime::parse_duration(text.trim()).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration (write e.g. \"90s\", \"10m\", \"2h\", \"30d\")"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_url_password_is_masked_in_debug() {
        let url = DatabaseUrl::from("mysql://wxauth:hunter2@db:3306/wxauth");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "mysql://wxauth:hunter2@db:3306/wxauth");
    }

    fn load_toml(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxauth.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path)).unwrap()
    }

    #[test]
    fn jwt_access_tokens_live_ten_minutes_unless_the_file_says_otherwise() {
        let jwt = load_toml("[tokens]\nformat = \"jwt\"\n");
        assert_eq!(jwt.tokens.format, TokenFormat::Jwt);
        assert_eq!(jwt.tokens.access_ttl, Duration::from_secs(600));
        assert_eq!(jwt.tokens.jwt_algorithm, JwtAlgorithm::EdDSA);
        assert_eq!(jwt.tokens.audience, ["wxauth"]);

        let explicit = load_toml("[tokens]\nformat = \"jwt\"\naccess_ttl = \"1h\"\n");
        assert_eq!(explicit.tokens.access_ttl, Duration::from_secs(3600));

        let opaque = load_toml("[tokens]\nrefresh_ttl = \"7d\"\n");
        assert_eq!(opaque.tokens.format, TokenFormat::Opaque);
        assert_eq!(opaque.tokens.access_ttl, Duration::from_secs(7200));

        let es256 = load_toml(
            "[tokens]\njwt_algorithm = \"ES256\"\nissuer = \"https://id.example.com\"\n\
             audience = [\"orders\", \"payments\"]\n",
        );
        assert_eq!(es256.tokens.jwt_algorithm, JwtAlgorithm::ES256);
        assert_eq!(
            es256.tokens.issuer.as_deref(),
            Some("https://id.example.com")
        );
        assert_eq!(es256.tokens.audience, ["orders", "payments"]);
    }

    #[test]
    fn an_unknown_jwt_algorithm_or_an_empty_audience_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxauth.toml");
        std::fs::write(&path, "[tokens]\njwt_algorithm = \"HS256\"\n").unwrap();
        let problem = Config::load(Some(&path)).unwrap_err();
        assert!(problem.contains("HS256"), "{problem}");

        let mut config = Config::default();
        config.tokens.audience = Vec::new();
        let problems = config.resolve().unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("tokens.audience")),
            "{problems:?}"
        );
    }

    #[test]
    fn an_empty_config_explains_the_missing_app_and_data_key() {
        let problems = Config::default().resolve().unwrap_err();
        assert!(problems.iter().any(|p| p.contains("[[apps]]")));
        assert!(problems.iter().any(|p| p.contains("data key")));
    }

    /// Loads `toml` from a file (no environment), returning the error text.
    fn file_error(toml: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxauth.toml");
        std::fs::write(&path, toml).unwrap();
        let err = extract(&Figment::from(Toml::file(&path))).unwrap_err();
        (err, path.display().to_string())
    }

    #[test]
    fn a_misspelled_section_is_named_with_its_file_and_the_nearest_section() {
        let (err, file) = file_error("[sesions]\nstore = \"sql\"\n");
        assert_eq!(
            err,
            format!("unknown section `sesions` in {file} (did you mean `sessions`?)")
        );
    }

    #[test]
    fn a_misspelled_key_is_named_with_its_section_and_the_nearest_key() {
        let (err, file) = file_error("[tokens]\nacces_ttl = \"1h\"\n");
        assert_eq!(
            err,
            format!(
                "unknown key `acces_ttl` in section [tokens] of {file} (did you mean `access_ttl`?)"
            )
        );
        let (err, file) = file_error("[[apps]]\napp_id = \"wx0123456789abcdef\"\nsecrte = \"s\"\n");
        assert_eq!(
            err,
            format!("unknown key `secrte` in [[apps]] entry 1 of {file} (did you mean `secret`?)")
        );
    }

    #[test]
    fn a_key_far_from_every_known_one_lists_the_known_ones() {
        let (err, _) = file_error("[log]\ncolour = true\n");
        assert!(err.ends_with("(known keys: level, format)"), "{err}");
    }

    #[test]
    fn a_key_written_above_its_section_says_where_it_belongs() {
        let (err, file) = file_error("listen = \"0.0.0.0:8080\"\n");
        assert_eq!(
            err,
            format!(
                "unknown section `listen` in {file} (`listen` is a key of section [server]: \
                 put it under that header)"
            )
        );
    }

    const SECTIONS: [&str; 5] = ["server", "database", "sessions", "tokens", "apps"];

    fn vars(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_variable_with_one_underscore_after_the_section_suggests_two() {
        assert_eq!(
            unknown_variable(
                &[],
                "database_url",
                &SECTIONS,
                &vars(&["WXAUTH_DATABASE_URL"])
            ),
            "unknown environment variable WXAUTH_DATABASE_URL: it names no configuration key \
             (did you mean `WXAUTH_DATABASE__URL`?)"
        );
        assert!(
            unknown_variable(&[], "sessions_redis_url", &SECTIONS, &[])
                .ends_with("(did you mean `WXAUTH_SESSIONS__REDIS_URL`?)")
        );
    }

    #[test]
    fn a_misspelled_variable_suggests_the_nearest_key_at_its_level() {
        let keys = ["access_ttl", "refresh_ttl", "session_max_age"];
        assert!(
            unknown_variable(
                &["tokens".to_owned()],
                "acess_ttl",
                &keys,
                &vars(&["WXAUTH_TOKENS__ACESS_TTL"])
            )
            .ends_with("(did you mean `WXAUTH_TOKENS__ACCESS_TTL`?)")
        );
        let unrelated = unknown_variable(&[], "colour", &SECTIONS, &vars(&["WXAUTH_COLOUR"]));
        assert!(unrelated.contains("WXAUTH_<SECTION>__<KEY>"), "{unrelated}");
    }

    #[test]
    fn a_misspelled_section_in_a_variable_keeps_the_rest_of_its_name() {
        let said = unknown_variable(
            &[],
            "session",
            &SECTIONS,
            &vars(&["WXAUTH_DATABASE__URL", "WXAUTH_SESSION__STORE"]),
        );
        assert_eq!(
            said,
            "unknown environment variable WXAUTH_SESSION__STORE: it names no configuration key \
             (did you mean `WXAUTH_SESSIONS__STORE`?)"
        );
    }

    #[test]
    fn a_misspelled_key_inside_a_list_variable_names_the_entry() {
        let keys = ["app_id", "secret", "secret_file", "secret_env"];
        let said = unknown_variable(
            &["apps".to_owned(), "0".to_owned()],
            "secrte",
            &keys,
            &vars(&["WXAUTH_APPS"]),
        );
        assert_eq!(
            said,
            "unknown key `secrte` in entry 1 of WXAUTH_APPS (did you mean `secret`?)"
        );
    }

    #[test]
    fn section_keys_come_from_the_config_types() {
        assert_eq!(
            section_keys("tokens"),
            Some(
                &[
                    "access_ttl",
                    "refresh_ttl",
                    "session_max_age",
                    "refresh_grace",
                    "format",
                    "jwt_algorithm",
                    "issuer",
                    "audience"
                ][..]
            )
        );
        assert!(
            section_keys("sessions")
                .unwrap()
                .contains(&"allow_eviction")
        );
        assert_eq!(section_keys("apps"), None);
    }

    #[test]
    fn durations_are_written_in_the_largest_unit_that_divides_them() {
        let cases = [
            (Duration::from_secs(180 * 86_400), "180d"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_secs(2 * 3_600), "2h"),
            (Duration::from_secs(90 * 60), "90m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(86_401), "86401s"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::ZERO, "0s"),
        ];
        for (d, text) in cases {
            assert_eq!(duration::format(d), text);
            assert_eq!(
                humantime::parse_duration(text).unwrap(),
                d,
                "{text} reads back"
            );
        }
    }

    #[test]
    fn webhooks_take_defaults_and_their_problems_are_named() {
        let config = load_toml(
            "[[webhooks]]\nurl = \"https://a.example.com/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             [[webhooks]]\nurl = \"https://b.example.com/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             events = [\"person.created\"]\ntimeout = \"2s\"\n[events]\nretention = \"1d\"\n",
        );
        let hooks = config.resolve_webhooks().unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].timeout, Duration::from_secs(10));
        assert_eq!(hooks[0].retry_for, Duration::from_secs(86_400));
        assert_eq!(hooks[0].types, None);
        assert_eq!(hooks[1].timeout, Duration::from_secs(2));
        assert_eq!(hooks[1].types, Some(vec!["person.created".to_owned()]));
        assert_eq!(config.events.retention, Duration::from_secs(86_400));
        assert!(!format!("{:?}", hooks[0]).contains("MfKQ9r8"));

        let url = Url::parse("https://a.example.com/hook").unwrap();
        let mut bad_secret = WebhookConfig::new(url.clone(), "not-a-whsec");
        bad_secret.events = Some(vec!["person.made".to_owned()]);
        let mut unknown_type =
            WebhookConfig::new(url.clone(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        unknown_type.events = Some(vec!["person.made".to_owned()]);
        let twice = WebhookConfig::new(url.clone(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let config = Config {
            webhooks: vec![bad_secret, unknown_type, twice.clone(), twice],
            ..Config::default()
        };
        let problems = config.resolve_webhooks().unwrap_err();
        assert!(
            problems[0].starts_with("webhooks[0]: the secret must be whsec_"),
            "{problems:?}"
        );
        assert!(!problems[0].contains("not-a-whsec"), "{problems:?}");
        assert!(
            problems[1].contains("\"person.made\" is not an event type"),
            "{problems:?}"
        );
        assert_eq!(problems[2], "webhooks[3]: the url is listed twice");
    }

    #[test]
    fn an_app_id_is_wx_and_16_hex_characters() {
        assert!(is_app_id("wx0123456789abcdef"));
        assert!(is_app_id("wx0123456789ABCDEF"));
        for bad in [
            "wx0123456789abcde",
            "wx0123456789abcdefa",
            "wx0123456789abcdeg",
            "xx0123456789abcdef",
            "wxdemo",
            "",
        ] {
            assert!(!is_app_id(bad), "{bad}");
        }
    }

    fn app(app_id: &str) -> AppConfig {
        AppConfig {
            app_id: app_id.to_owned(),
            secret: Some(SecretString::from("s3cret")),
            secret_file: None,
            secret_env: None,
        }
    }

    #[test]
    fn a_malformed_app_id_is_refused_naming_the_entry() {
        let config = Config {
            apps: vec![app("wx0123456789abcdef"), app("wx12345")],
            ..Config::default()
        };
        let problems = config.resolve().unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("apps[1]: app_id \"wx12345\" is not a WeChat AppID")),
            "{problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.starts_with("apps[0]")),
            "{problems:?}"
        );
    }

    #[test]
    fn an_app_secret_given_as_the_app_id_is_not_echoed() {
        let secret = "0123456789abcdef0123456789abcdef";
        let config = Config {
            apps: vec![app(secret)],
            ..Config::default()
        };
        let problems = config.resolve().unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("AppSecret")),
            "{problems:?}"
        );
        assert!(!problems.iter().any(|p| p.contains(secret)), "{problems:?}");
    }

    #[test]
    fn plain_http_to_wechat_is_allowed_only_to_a_loopback_host() {
        for ok in [
            "https://api.weixin.qq.com",
            "http://127.0.0.1:8081",
            "http://127.8.9.10",
            "http://[::1]:8081",
            "http://localhost:8081",
        ] {
            assert_eq!(api_base_problem(&Url::parse(ok).unwrap()), None, "{ok}");
        }
        for bad in [
            "http://api.weixin.qq.com",
            "http://10.0.0.5:8081",
            "http://128.0.0.1",
            "http://localhost.example.com",
        ] {
            let problem = api_base_problem(&Url::parse(bad).unwrap()).unwrap();
            assert!(problem.contains("AppSecret"), "{bad}: {problem}");
        }
        assert!(api_base_problem(&Url::parse("ftp://127.0.0.1").unwrap()).is_some());
    }
}
