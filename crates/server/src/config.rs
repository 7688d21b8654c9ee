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
use serde::Deserialize;
use url::Url;
use wxauth_wechat::{AppCredentials, AppId, AppSecret};

use crate::client_ip::Cidr;
use crate::seal::DataKey;
use crate::store::sql::Dialect;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "wxauth.toml";

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
    /// Uploaded files.
    pub storage: StorageConfig,
    /// Logging.
    pub log: LogConfig,
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
    /// Longest wait for one Redis answer before the request fails with 503.
    #[serde(with = "duration")]
    pub redis_timeout: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            store: SessionStoreKind::Sql,
            redis_url: None,
            key_prefix: "wxauth:".to_owned(),
            redis_timeout: Duration::from_secs(2),
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
}

impl Default for WechatConfig {
    fn default() -> Self {
        Self {
            api_base: Url::parse("https://api.weixin.qq.com").unwrap_or_else(|_| unreachable!()),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            busy_retries: 2,
        }
    }
}

/// `[tokens]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Lifetime of an access token.
    #[serde(with = "duration")]
    pub access_ttl: Duration,
    /// Lifetime of a refresh token; each refresh starts a new one, so this is also how long a
    /// session may sit unused (the idle timeout).
    #[serde(with = "duration")]
    pub refresh_ttl: Duration,
    /// Longest a session lives however often it is refreshed (the absolute timeout).
    #[serde(with = "duration")]
    pub session_max_age: Duration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(2 * 3600),
            refresh_ttl: Duration::from_secs(30 * 86400),
            session_max_age: Duration::from_secs(180 * 86400),
        }
    }
}

/// `[security]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Base64 of 32 bytes; encrypts session_keys at rest (`wxauth gen-key` makes one).
    pub data_key: Option<SecretString>,
    /// A file holding the data key instead.
    pub data_key_file: Option<PathBuf>,
    /// Oldest open data accepted (by its watermark); "0s" turns the check off.
    #[serde(with = "duration")]
    pub watermark_max_age: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            data_key: None,
            data_key_file: None,
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
        figment = figment.merge(Env::prefixed("WXAUTH_").split("__"));
        figment.extract().map_err(|err| explain_figment(&err))
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
        if self.storage.avatar_max_bytes == 0 {
            problems.push("storage.avatar_max_bytes must be more than 0".to_owned());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".to_owned());
        }
        if !matches!(self.wechat.api_base.scheme(), "http" | "https") {
            problems.push(format!(
                "wechat.api_base must be an http(s) URL (got {})",
                self.wechat.api_base
            ));
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
            }),
            _ => Err(problems),
        }
    }
}

fn resolve_app(app: &AppConfig) -> Result<AppCredentials, String> {
    let app_id = AppId::parse(app.app_id.as_str()).map_err(|e| e.to_string())?;
    let given = [
        app.secret.is_some(),
        app.secret_file.is_some(),
        app.secret_env.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(format!(
            "app {app_id} needs exactly one of secret, secret_file or secret_env"
        ));
    }
    let secret = if let Some(secret) = &app.secret {
        secret.expose_secret().to_owned()
    } else if let Some(path) = &app.secret_file {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read secret_file {}: {e}", path.display()))?
            .trim()
            .to_owned()
    } else if let Some(var) = &app.secret_env {
        std::env::var(var)
            .map_err(|_| format!("the environment variable {var} (secret_env) is not set"))?
            .trim()
            .to_owned()
    } else {
        String::new()
    };
    if secret.is_empty() {
        return Err(format!("the secret of app {app_id} is empty"));
    }
    Ok(AppCredentials::new(app_id, AppSecret::new(secret)))
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
    let bytes = BASE64
        .decode(encoded.as_bytes())
        .map_err(|_| "the data key is not valid base64 (use `wxauth gen-key`)".to_owned())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the data key must be 32 bytes of base64 (use `wxauth gen-key`)".to_owned())?;
    Ok(DataKey::new(bytes))
}

fn explain_figment(err: &figment::Error) -> String {
    err.clone()
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Durations in human form ("90s", "10m", "2h", "30d"), or a number of seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

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

    #[test]
    fn an_empty_config_explains_the_missing_app_and_data_key() {
        let problems = Config::default().resolve().unwrap_err();
        assert!(problems.iter().any(|p| p.contains("[[apps]]")));
        assert!(problems.iter().any(|p| p.contains("data key")));
    }
}
