//! The client for WeChat's Mini Program server API: `code2Session`, access tokens,
//! `getuserphonenumber`, `checksession` and `resetusersessionkey`.
//!
//! One [`WechatClient`] holds one pooled HTTP client and is cheap to clone; share it. It:
//! - builds every URL from the configured base with each query parameter URL-encoded, and never
//!   lets a URL (which carries the AppSecret or the access token) into an error or a log line;
//! - retries WeChat's "system busy" (errcode -1) with backoff, and never retries a transport
//!   failure, because the request may have reached WeChat and a login code is single use;
//! - caches access tokens in a [`TokenStore`], refreshes them ahead of expiry, makes one
//!   upstream call however many callers need a token at once (in this process, and across
//!   processes that share a store), and heals a rejected token by one refresh and one retry.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::Instrument as _;
use url::Url;

use crate::crypto::session_key_signature;
use crate::error::{ApiErrorKind, WechatError};
use crate::observe::{CallEvent, Endpoint, Observer};
use crate::token::{AccessToken, MemoryTokenStore, TokenStore};
use crate::types::{
    AppCredentials, AppId, Code2Session, JsCode, OpenId, ParseError, PhoneInfo, SessionKey, UnionId,
};

/// WeChat's API base URL, the default of [`ClientConfig::api_base`].
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";

/// WeChat's answers are a few hundred bytes; anything past this is not WeChat.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Each client adds up to this much to the refresh margin so that instances sharing a token
/// do not all decide to refresh it in the same second.
const MAX_REFRESH_JITTER_SECS: u64 = 60;
/// How often a caller waiting for another instance's refresh looks at the store.
const LEASE_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// A token this client fetched this recently is used even inside the refresh margin: WeChat
/// may keep handing out the same nearly expired token for a while, and refetching it on every
/// call would only burn quota.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// The longest wait between two busy retries, whatever the configured first backoff.
const MAX_BUSY_BACKOFF: Duration = Duration::from_secs(10);

/// Which WeChat API hands out access tokens.
///
/// ```
/// use wxauth_wechat::TokenMode;
/// assert_eq!(TokenMode::default(), TokenMode::Stable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenMode {
    /// `POST /cgi-bin/stable_token`: fetching does not invalidate the token other instances
    /// hold, so instances that refresh on their own never break each other.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: each fetch invalidates the previous token after a grace period.
    /// Only for accounts or proxies without `stable_token`; share one [`TokenStore`] then.
    Classic,
}

/// How the client reaches WeChat.
///
/// ```
/// use std::time::Duration;
/// use wxauth_wechat::{ClientConfig, TokenMode};
/// let config = ClientConfig {
///     api_base: "http://127.0.0.1:9000".parse().unwrap(),
///     timeout: Duration::from_secs(3),
///     ..ClientConfig::default()
/// };
/// assert_eq!(config.token_mode, TokenMode::Stable);
/// assert_eq!(config.busy_retries, 2);
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    /// WeChat's API base URL (default `https://api.weixin.qq.com`). It may carry a path prefix,
    /// e.g. behind a forwarding proxy.
    pub api_base: Url,
    /// The longest wait for a TCP (and TLS) connection, default 2 s.
    pub connect_timeout: Duration,
    /// The longest wait for a whole request, answer included, default 5 s.
    pub timeout: Duration,
    /// How many times WeChat's "system busy" (errcode -1) is retried, default 2.
    pub busy_retries: u32,
    /// The wait before the first busy retry, default 100 ms; it doubles for each further retry
    /// and is jittered.
    pub busy_backoff: Duration,
    /// Which API hands out access tokens, default [`TokenMode::Stable`].
    pub token_mode: TokenMode,
    /// How long before its expiry a cached access token is refreshed, default 300 s; each
    /// client adds a random 0 to 60 s so instances spread their refreshes.
    pub token_refresh_ahead: Duration,
    /// Most calls in flight to WeChat at once (0: no limit, the default). A call beyond it
    /// waits up to [`ClientConfig::concurrency_wait`] for a free place, then fails with
    /// [`WechatError::Overloaded`] without being sent.
    pub max_concurrency: usize,
    /// How long a call waits for a place under `max_concurrency`, default 1 s.
    pub concurrency_wait: Duration,
    /// Told about every call and access-token fetch (for metrics); none by default.
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            api_base: Url::parse(DEFAULT_API_BASE)
                .unwrap_or_else(|_| unreachable!("the default API base is a valid URL")),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            busy_retries: 2,
            busy_backoff: Duration::from_millis(100),
            token_mode: TokenMode::Stable,
            token_refresh_ahead: Duration::from_secs(300),
            max_concurrency: 0,
            concurrency_wait: Duration::from_secs(1),
            observer: None,
        }
    }
}

/// The base URL without a password or query, either of which could hold a secret.
fn redacted_url(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        // Fails only for URLs that cannot have a password, and those have none to hide.
        let _ = url.set_password(Some("redacted"));
    }
    url.set_query(None);
    url.to_string()
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_base", &redacted_url(&self.api_base))
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("busy_retries", &self.busy_retries)
            .field("busy_backoff", &self.busy_backoff)
            .field("token_mode", &self.token_mode)
            .field("token_refresh_ahead", &self.token_refresh_ahead)
            .field("max_concurrency", &self.max_concurrency)
            .field("concurrency_wait", &self.concurrency_wait)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// A client for WeChat's Mini Program server API. Clones share one connection pool and one
/// token cache.
///
/// ```no_run
/// # async fn demo() -> Result<(), wxauth_wechat::WechatError> {
/// use wxauth_wechat::{AppCredentials, AppId, AppSecret, ClientConfig, JsCode, WechatClient};
/// let client = WechatClient::new(ClientConfig::default())?;
/// let app = AppCredentials::new(AppId::parse("wx4f4bc4dec97d474b").unwrap(), AppSecret::new("…"));
/// let session = client.code2session(&app, &JsCode::parse("081abcDEF").unwrap()).await?;
/// println!("user {}", session.openid);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WechatClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    store: Arc<dyn TokenStore>,
    /// One refresher per app: callers that need a new token queue here, so one of them fetches
    /// and the rest find its token in the store.
    refreshers: StdMutex<HashMap<AppId, Arc<tokio::sync::Mutex<Refresher>>>>,
    /// This client's share of the refresh jitter, drawn once so its margin is stable.
    refresh_jitter: Duration,
    /// Places for calls in flight, when `max_concurrency` caps them.
    slots: Option<tokio::sync::Semaphore>,
}

/// What one app's refresher remembers between refreshes.
#[derive(Default)]
struct Refresher {
    /// The token this client last obtained, and when: the fallback when the store fails, and
    /// the guard against refetching a nearly expired token over and over.
    last: Option<(AccessToken, Instant)>,
}

impl fmt::Debug for WechatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatClient")
            .field("config", &self.inner.config)
            .field("refresh_jitter", &self.inner.refresh_jitter)
            .finish_non_exhaustive()
    }
}

/// One request to WeChat. `query` may hold secrets: it only ever goes into the URL.
struct Call<'a> {
    endpoint: Endpoint,
    app_id: &'a AppId,
    query: Vec<(&'static str, &'a str)>,
    /// A JSON body makes it a POST; none makes it a GET.
    body: Option<Value>,
}

impl WechatClient {
    /// A client that keeps access tokens in this process's memory.
    ///
    /// Builds one pooled HTTP client (rustls, keep-alive, no redirects: a redirect would carry
    /// the AppSecret to another host). Fails only on a base URL that cannot take a path.
    ///
    /// ```
    /// use wxauth_wechat::{ClientConfig, WechatClient};
    /// let client = WechatClient::new(ClientConfig::default()).unwrap();
    /// assert!(format!("{client:?}").contains("api.weixin.qq.com"));
    /// ```
    pub fn new(config: ClientConfig) -> Result<Self, WechatError> {
        Self::with_token_store(config, Arc::new(MemoryTokenStore::default()))
    }

    /// A client that keeps access tokens in `store`; give every instance of a service the
    /// same shared store so that they use one token.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wxauth_wechat::{ClientConfig, MemoryTokenStore, WechatClient};
    /// let store = Arc::new(MemoryTokenStore::default());
    /// let a = WechatClient::with_token_store(ClientConfig::default(), store.clone()).unwrap();
    /// let b = WechatClient::with_token_store(ClientConfig::default(), store).unwrap();
    /// # let _ = (a, b);
    /// ```
    pub fn with_token_store(
        config: ClientConfig,
        store: Arc<dyn TokenStore>,
    ) -> Result<Self, WechatError> {
        check_api_base(&config.api_base)?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .user_agent(concat!("wxauth-wechat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| WechatError::Config("the HTTP client could not be built".into()))?;
        let refresh_jitter = Duration::from_secs(rand::random_range(0..=MAX_REFRESH_JITTER_SECS));
        let config_slots = config
            .max_concurrency
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                store,
                refreshers: StdMutex::default(),
                refresh_jitter,
                slots: (config_slots > 0).then(|| tokio::sync::Semaphore::new(config_slots)),
            }),
        })
    }

    /// Exchanges a `wx.login` code for the user's openid, session_key and (for bound apps)
    /// unionid.
    ///
    /// The code is single use, so a transport failure is never retried: the first attempt may
    /// have consumed it. Only "system busy" is retried.
    ///
    /// ```no_run
    /// # async fn demo(client: wxauth_wechat::WechatClient, app: wxauth_wechat::AppCredentials)
    /// # -> Result<(), wxauth_wechat::WechatError> {
    /// use wxauth_wechat::{ApiErrorKind, JsCode};
    /// match client.code2session(&app, &JsCode::parse("081abcDEF").unwrap()).await {
    ///     Ok(session) => println!("user {}", session.openid),
    ///     Err(e) if e.api_kind() == Some(ApiErrorKind::CodeUsed) => println!("get a new code"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn code2session(
        &self,
        app: &AppCredentials,
        code: &JsCode,
    ) -> Result<Code2Session, WechatError> {
        let answer = self
            .call(&Call {
                endpoint: Endpoint::Code2Session,
                app_id: &app.app_id,
                query: vec![
                    ("appid", app.app_id.as_str()),
                    ("secret", app.secret.expose_secret()),
                    ("js_code", code.as_str()),
                    ("grant_type", "authorization_code"),
                ],
                body: None,
            })
            .await?;
        let unionid = match answer.get("unionid") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(_) => Some(parse_field(&answer, "unionid", UnionId::parse)?),
        };
        Ok(Code2Session {
            openid: parse_field(&answer, "openid", OpenId::parse)?,
            session_key: parse_field(&answer, "session_key", SessionKey::parse)?,
            unionid,
        })
    }

    /// The app's access token: from the token store while it is fresh, otherwise fetched
    /// (once, however many callers ask at the same time) and stored.
    ///
    /// ```no_run
    /// # async fn demo(client: wxauth_wechat::WechatClient, app: wxauth_wechat::AppCredentials)
    /// # -> Result<(), wxauth_wechat::WechatError> {
    /// let token = client.access_token(&app).await?;
    /// println!("valid until {}", token.expires_at_unix());
    /// # Ok(()) }
    /// ```
    pub async fn access_token(&self, app: &AppCredentials) -> Result<AccessToken, WechatError> {
        self.token(app, None).await
    }

    /// The phone number behind a `getPhoneNumber` button's `code` (the current API; the code is
    /// single use and valid 5 minutes).
    ///
    /// ```no_run
    /// # async fn demo(client: wxauth_wechat::WechatClient, app: wxauth_wechat::AppCredentials)
    /// # -> Result<(), wxauth_wechat::WechatError> {
    /// let phone = client.phone_number(&app, "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144").await?;
    /// println!("+{} {}", phone.country_code, phone.pure_phone_number);
    /// # Ok(()) }
    /// ```
    pub async fn phone_number(
        &self,
        app: &AppCredentials,
        code: &str,
    ) -> Result<PhoneInfo, WechatError> {
        self.with_access_token(app, |token| async move {
            let answer = self
                .call(&Call {
                    endpoint: Endpoint::PhoneNumber,
                    app_id: &app.app_id,
                    query: vec![("access_token", token.expose_secret())],
                    body: Some(json!({ "code": code })),
                })
                .await?;
            let phone_info = answer
                .get("phone_info")
                .cloned()
                .ok_or_else(|| WechatError::Protocol("`phone_info` is missing".into()))?;
            // serde's messages may quote the offending value (a phone number): keep them out.
            serde_json::from_value(phone_info).map_err(|_| {
                WechatError::Protocol("`phone_info` does not have the documented fields".into())
            })
        })
        .await
    }

    /// Ok(true) when WeChat accepts the signature, Ok(false) on 87009 (stale session_key).
    ///
    /// ```no_run
    /// # async fn demo(client: wxauth_wechat::WechatClient, app: wxauth_wechat::AppCredentials,
    /// #     openid: wxauth_wechat::OpenId, key: wxauth_wechat::SessionKey)
    /// # -> Result<(), wxauth_wechat::WechatError> {
    /// if !client.check_session_key(&app, &openid, &key).await? {
    ///     println!("the session_key is stale: ask the user to wx.login again");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check_session_key(
        &self,
        app: &AppCredentials,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<bool, WechatError> {
        let signature = session_key_signature(session_key, b"");
        let outcome = self
            .with_access_token(app, |token| {
                let signature = &signature;
                async move {
                    self.call(&Call {
                        endpoint: Endpoint::CheckSession,
                        app_id: &app.app_id,
                        query: session_key_query(&token, openid, signature),
                        body: None,
                    })
                    .await
                }
            })
            .await;
        match outcome {
            Ok(_) => Ok(true),
            Err(err) if err.api_kind() == Some(ApiErrorKind::BadSignature) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// A new session_key for the user (the returned Code2Session has unionid None).
    ///
    /// WeChat needs the user's current session_key to sign the request; the old key stops
    /// working.
    ///
    /// ```no_run
    /// # async fn demo(client: wxauth_wechat::WechatClient, app: wxauth_wechat::AppCredentials,
    /// #     openid: wxauth_wechat::OpenId, key: wxauth_wechat::SessionKey)
    /// # -> Result<(), wxauth_wechat::WechatError> {
    /// let fresh = client.reset_session_key(&app, &openid, &key).await?;
    /// assert!(client.check_session_key(&app, &openid, &fresh.session_key).await?);
    /// # Ok(()) }
    /// ```
    pub async fn reset_session_key(
        &self,
        app: &AppCredentials,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<Code2Session, WechatError> {
        let signature = session_key_signature(session_key, b"");
        let answer = self
            .with_access_token(app, |token| {
                let signature = &signature;
                async move {
                    self.call(&Call {
                        endpoint: Endpoint::ResetSessionKey,
                        app_id: &app.app_id,
                        query: session_key_query(&token, openid, signature),
                        body: None,
                    })
                    .await
                }
            })
            .await?;
        // WeChat echoes the openid; one that differs means the answer is not for this user.
        let answered_openid = match answer.get("openid") {
            None | Some(Value::Null) => openid.clone(),
            Some(_) => parse_field(&answer, "openid", OpenId::parse)?,
        };
        if answered_openid != *openid {
            return Err(WechatError::Protocol(
                "`openid` in the answer is not the requested user".into(),
            ));
        }
        Ok(Code2Session {
            openid: answered_openid,
            session_key: parse_field(&answer, "session_key", SessionKey::parse)?,
            unionid: None,
        })
    }

    /// Runs `call` with the app's access token; when WeChat rejects the token (40001, 40014,
    /// 42001), drops it from the store, gets a new one and runs `call` once more.
    async fn with_access_token<T, F, Fut>(
        &self,
        app: &AppCredentials,
        call: F,
    ) -> Result<T, WechatError>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, WechatError>>,
    {
        let token = self.token(app, None).await?;
        match call(token.clone()).await {
            Err(err)
                if err
                    .api_kind()
                    .is_some_and(ApiErrorKind::is_access_token_problem) =>
            {
                tracing::info!(
                    app_id = %app.app_id,
                    errcode = err.errcode(),
                    "WeChat rejected the access token; refreshing it and retrying once"
                );
                if let Err(store_err) = self.inner.store.invalidate(&app.app_id, &token).await {
                    tracing::warn!(app_id = %app.app_id, error = %store_err, "could not drop the rejected access token from the store");
                }
                let fresh = self.token(app, Some(&token)).await?;
                call(fresh).await
            }
            other => other,
        }
    }

    /// The refresh margin: refresh_ahead plus this client's jitter.
    fn refresh_margin(&self) -> Duration {
        self.inner.config.token_refresh_ahead + self.inner.refresh_jitter
    }

    fn refresher(&self, app_id: &AppId) -> Arc<tokio::sync::Mutex<Refresher>> {
        let mut refreshers = self
            .inner
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        refreshers.entry(app_id.clone()).or_default().clone()
    }

    /// A usable access token; `rejected` is one WeChat just refused, never to be handed out again.
    async fn token(
        &self,
        app: &AppCredentials,
        rejected: Option<&AccessToken>,
    ) -> Result<AccessToken, WechatError> {
        let margin = self.refresh_margin();
        // The common case: a fresh token in the store, no lock taken. A store failure is
        // reported below, where the slow path asks again.
        if let Ok(Some(token)) = self.inner.store.get(&app.app_id).await {
            if Some(&token) != rejected && token.is_fresh_at(now_unix(), margin) {
                return Ok(token);
            }
        }

        let refresher = self.refresher(&app.app_id);
        let mut refresher = refresher.lock().await;
        // Whoever held the lock before us has probably just stored a new token.
        let current = match self.inner.store.get(&app.app_id).await {
            Ok(token) => token,
            Err(err) => {
                tracing::warn!(app_id = %app.app_id, error = %err, "token store unavailable; using this process's own access token");
                refresher.last.as_ref().map(|(token, _)| token.clone())
            }
        };
        if let Some(token) = current.filter(|token| Some(token) != rejected) {
            let now = now_unix();
            let just_obtained = refresher
                .last
                .as_ref()
                .is_some_and(|(last, at)| *last == token && at.elapsed() < MIN_REFETCH_INTERVAL);
            if token.is_fresh_at(now, margin) || (just_obtained && token.is_valid_at(now)) {
                return Ok(token);
            }
        }

        let token = self.refresh(app, rejected).await?;
        refresher.last = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Gets a new token, as the one refresher among the instances sharing the store when the
    /// store's lease allows, or by waiting for the instance that holds it.
    async fn refresh(
        &self,
        app: &AppCredentials,
        rejected: Option<&AccessToken>,
    ) -> Result<AccessToken, WechatError> {
        let store = &self.inner.store;
        let lease = self.inner.config.timeout.saturating_mul(2);
        match store.try_lock(&app.app_id, lease).await {
            Ok(true) => {
                // Another instance may have stored a token between our read and the lease.
                let stored = match store.get(&app.app_id).await {
                    Ok(Some(token))
                        if Some(&token) != rejected
                            && token.is_fresh_at(now_unix(), self.refresh_margin()) =>
                    {
                        Some(token)
                    }
                    _ => None,
                };
                let result = match stored {
                    Some(token) => Ok(token),
                    None => self.fetch_and_store(app).await,
                };
                if let Err(err) = store.unlock(&app.app_id).await {
                    tracing::warn!(app_id = %app.app_id, error = %err, "could not release the token refresh lease; it runs out on its own");
                }
                result
            }
            Ok(false) => match self.wait_for_other_refresher(app, rejected).await {
                Some(token) => Ok(token),
                None => {
                    tracing::debug!(app_id = %app.app_id, "no token from the instance holding the refresh lease; fetching one");
                    self.fetch_and_store(app).await
                }
            },
            Err(err) => {
                tracing::warn!(app_id = %app.app_id, error = %err, "token store unavailable; fetching the access token directly");
                self.fetch_and_store(app).await
            }
        }
    }

    /// Polls the store for the token another instance is fetching, for up to one request
    /// timeout.
    async fn wait_for_other_refresher(
        &self,
        app: &AppCredentials,
        rejected: Option<&AccessToken>,
    ) -> Option<AccessToken> {
        let deadline = Instant::now() + self.inner.config.timeout;
        while Instant::now() < deadline {
            tokio::time::sleep(LEASE_POLL_INTERVAL).await;
            match self.inner.store.get(&app.app_id).await {
                Ok(Some(token))
                    if Some(&token) != rejected
                        && token.is_fresh_at(now_unix(), self.refresh_margin()) =>
                {
                    return Some(token);
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    async fn fetch_and_store(&self, app: &AppCredentials) -> Result<AccessToken, WechatError> {
        let token = self.fetch_token(app).await?;
        if let Err(err) = self.inner.store.put(&app.app_id, &token).await {
            tracing::warn!(app_id = %app.app_id, error = %err, "could not store the new access token");
        }
        Ok(token)
    }

    /// Asks WeChat for an access token, and tells the observer how that went.
    async fn fetch_token(&self, app: &AppCredentials) -> Result<AccessToken, WechatError> {
        let result = self.request_token(app).await;
        if let Some(observer) = &self.inner.config.observer {
            observer.token_fetched(&app.app_id, result.as_ref().map(|_| ()));
        }
        result
    }

    async fn request_token(&self, app: &AppCredentials) -> Result<AccessToken, WechatError> {
        let call = match self.inner.config.token_mode {
            // The secret goes in the body here, so it cannot end up in any URL.
            TokenMode::Stable => Call {
                endpoint: Endpoint::StableToken,
                app_id: &app.app_id,
                query: Vec::new(),
                body: Some(json!({
                    "grant_type": "client_credential",
                    "appid": app.app_id.as_str(),
                    "secret": app.secret.expose_secret(),
                    "force_refresh": false,
                })),
            },
            TokenMode::Classic => Call {
                endpoint: Endpoint::Token,
                app_id: &app.app_id,
                query: vec![
                    ("grant_type", "client_credential"),
                    ("appid", app.app_id.as_str()),
                    ("secret", app.secret.expose_secret()),
                ],
                body: None,
            },
        };
        let answer = self.call(&call).await?;
        let value = str_field(&answer, "access_token")?;
        if value.is_empty() {
            return Err(WechatError::Protocol("`access_token` is empty".into()));
        }
        let expires_in = answer
            .get("expires_in")
            .and_then(Value::as_i64)
            .filter(|secs| *secs > 0)
            .ok_or_else(|| {
                WechatError::Protocol("`expires_in` is missing or not a positive integer".into())
            })?;
        tracing::debug!(app_id = %app.app_id, expires_in, "obtained a new access token");
        Ok(AccessToken::new(
            value,
            now_unix().saturating_add(expires_in),
        ))
    }

    /// Sends `call`, retrying "system busy" with backoff.
    async fn call(&self, call: &Call<'_>) -> Result<Value, WechatError> {
        let config = &self.inner.config;
        let mut attempt = 0;
        loop {
            match self.call_once(call, attempt).await {
                Err(err)
                    if err.api_kind() == Some(ApiErrorKind::Busy)
                        && attempt < config.busy_retries =>
                {
                    let delay = busy_backoff(config.busy_backoff, attempt);
                    tracing::debug!(
                        path = call.endpoint.path(),
                        app_id = %call.app_id,
                        attempt,
                        delay_ms = millis(delay),
                        "WeChat is busy; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends `call` once (when a place under `max_concurrency` frees up in time), in a span
    /// naming the endpoint and app, and logs and reports the outcome.
    async fn call_once(&self, call: &Call<'_>, attempt: u32) -> Result<Value, WechatError> {
        let url = endpoint_url(
            &self.inner.config.api_base,
            call.endpoint.path(),
            &call.query,
        )?;
        let observer = self.inner.config.observer.as_deref();
        let _place = match &self.inner.slots {
            None => None,
            Some(slots) => {
                let wait = self.inner.config.concurrency_wait;
                match tokio::time::timeout(wait, slots.acquire()).await {
                    Ok(Ok(place)) => Some(place),
                    _ => {
                        tracing::warn!(
                            path = call.endpoint.path(),
                            app_id = %call.app_id,
                            max_concurrency = self.inner.config.max_concurrency,
                            "too many WeChat calls in flight; this one was not sent"
                        );
                        if let Some(observer) = observer {
                            observer.call_refused(call.endpoint, call.app_id);
                        }
                        return Err(WechatError::Overloaded);
                    }
                }
            }
        };
        let span = tracing::debug_span!(
            "wechat_call",
            path = call.endpoint.path(),
            app_id = %call.app_id,
            attempt
        );
        async {
            let started = Instant::now();
            let result = self.send(url, call.body.as_ref()).await;
            let elapsed = started.elapsed();
            if let Some(observer) = observer {
                observer.call_finished(&CallEvent {
                    endpoint: call.endpoint,
                    app_id: call.app_id,
                    outcome: result.as_ref().map(|_| ()),
                    elapsed,
                });
            }
            let elapsed_ms = millis(elapsed);
            match &result {
                Ok(_) => tracing::debug!(elapsed_ms, errcode = 0, "WeChat answered"),
                Err(WechatError::Api {
                    errcode, errmsg, ..
                }) => tracing::debug!(elapsed_ms, errcode, errmsg = %errmsg, "WeChat answered with an error"),
                Err(err) => tracing::debug!(elapsed_ms, error = %err, "the WeChat call failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn send(&self, url: Url, body: Option<&Value>) -> Result<Value, WechatError> {
        let request = match body {
            Some(body) => self.inner.http.post(url).json(body),
            None => self.inner.http.get(url),
        };
        let mut response = request
            .send()
            .await
            .map_err(|err| self.transport_error(err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(WechatError::Status(status.as_u16()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.transport_error(err))?
        {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(WechatError::Protocol("the answer is too large".into()));
            }
            answer.extend_from_slice(&chunk);
        }
        parse_answer(&answer)
    }

    /// Classifies a reqwest error without keeping it: its message names the URL, and the URL
    /// carries secrets.
    fn transport_error(&self, err: reqwest::Error) -> WechatError {
        let err = err.without_url();
        tracing::debug!(cause = %err, "transport failure talking to WeChat");
        if err.is_connect() {
            WechatError::Connect
        } else if err.is_timeout() {
            WechatError::Timeout(self.inner.config.timeout)
        } else if let Some(status) = err.status() {
            WechatError::Status(status.as_u16())
        } else {
            // The request was (or may have been) sent: never report it as "could not connect",
            // which callers may take as safe to retry.
            WechatError::Protocol("the connection broke before a complete answer".into())
        }
    }
}

/// The query of `checksession` and `resetusersessionkey`.
fn session_key_query<'a>(
    token: &'a AccessToken,
    openid: &'a OpenId,
    signature: &'a str,
) -> Vec<(&'static str, &'a str)> {
    vec![
        ("access_token", token.expose_secret()),
        ("openid", openid.as_str()),
        ("signature", signature),
        ("sig_method", "hmac_sha256"),
    ]
}

/// Checks that the base URL can take endpoint paths.
fn check_api_base(base: &Url) -> Result<(), WechatError> {
    if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
        return Err(WechatError::Config(format!(
            "the API base {} is not an http(s) URL",
            redacted_url(base)
        )));
    }
    Ok(())
}

/// `base` + `path` + the URL-encoded `query`. The base's own path is kept as a prefix.
fn endpoint_url(base: &Url, path: &str, query: &[(&str, &str)]) -> Result<Url, WechatError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| WechatError::Config("the API base URL cannot take a path".into()))?
        .pop_if_empty()
        .extend(path.split('/').filter(|segment| !segment.is_empty()));
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// Reads WeChat's answer: a JSON object that is either the payload or `{errcode, errmsg}`, where
/// errcode 0 (or none) means success.
fn parse_answer(body: &[u8]) -> Result<Value, WechatError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| WechatError::Protocol("the answer is not JSON".into()))?;
    if !value.is_object() {
        return Err(WechatError::Protocol(
            "the answer is not a JSON object".into(),
        ));
    }
    match value.get("errcode") {
        None | Some(Value::Null) => Ok(value),
        Some(errcode) => match errcode.as_i64() {
            Some(0) => Ok(value),
            Some(errcode) => {
                let errmsg = value.get("errmsg").and_then(Value::as_str).unwrap_or("");
                Err(WechatError::api(errcode, errmsg))
            }
            None => Err(WechatError::Protocol("`errcode` is not an integer".into())),
        },
    }
}

fn str_field<'v>(answer: &'v Value, name: &'static str) -> Result<&'v str, WechatError> {
    answer
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| WechatError::Protocol(format!("`{name}` is missing or not a string")))
}

/// A string field parsed into one of the crate's types. The message names the field and the
/// problem, never the value (it may be a session_key).
fn parse_field<T>(
    answer: &Value,
    name: &'static str,
    parse: impl FnOnce(String) -> Result<T, ParseError>,
) -> Result<T, WechatError> {
    let raw = str_field(answer, name)?;
    parse(raw.to_owned()).map_err(|err| WechatError::Protocol(format!("`{name}`: {err}")))
}

/// The wait before busy retry number `attempt + 1`: the first backoff doubled per attempt,
/// capped, with "equal jitter": half of it fixed so retries never come back to back, half
/// random so that callers that failed together do not retry together.
fn busy_backoff(first: Duration, attempt: u32) -> Duration {
    let ceiling = first
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BUSY_BACKOFF);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str) -> Url {
        Url::parse(url).unwrap()
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = ClientConfig::default();
        assert_eq!(config.api_base.as_str(), "https://api.weixin.qq.com/");
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.busy_retries, 2);
        assert_eq!(config.busy_backoff, Duration::from_millis(100));
        assert_eq!(config.token_mode, TokenMode::Stable);
        assert_eq!(config.token_refresh_ahead, Duration::from_secs(300));
    }

    #[test]
    fn endpoint_urls_keep_the_bases_path_prefix() {
        for prefix in ["http://h/wx", "http://h/wx/"] {
            let url = endpoint_url(&base(prefix), Endpoint::Code2Session.path(), &[]).unwrap();
            assert_eq!(url.as_str(), "http://h/wx/sns/jscode2session");
        }
        let url = endpoint_url(&base("http://h:8080"), Endpoint::Token.path(), &[]).unwrap();
        assert_eq!(url.as_str(), "http://h:8080/cgi-bin/token");
    }

    #[test]
    fn endpoint_urls_drop_the_bases_query_and_fragment() {
        let url = endpoint_url(
            &base("http://h/p?x=1#frag"),
            Endpoint::Token.path(),
            &[("a", "b")],
        )
        .unwrap();
        assert_eq!(url.as_str(), "http://h/p/cgi-bin/token?a=b");
    }

    #[test]
    fn every_query_parameter_is_url_encoded() {
        let url = endpoint_url(
            &base("https://api.weixin.qq.com"),
            Endpoint::Code2Session.path(),
            &[("secret", "a&b=c+d #e/f?"), ("js_code", "x y")],
        )
        .unwrap();
        assert_eq!(
            url.query(),
            Some("secret=a%26b%3Dc%2Bd+%23e%2Ff%3F&js_code=x+y")
        );
        let pairs: Vec<_> = url.query_pairs().collect();
        assert_eq!(pairs[0].1, "a&b=c+d #e/f?");
    }

    #[test]
    fn a_base_that_is_not_http_is_a_configuration_error() {
        for bad in ["mailto:someone@example.com", "ftp://example.com"] {
            let config = ClientConfig {
                api_base: base(bad),
                ..ClientConfig::default()
            };
            assert!(matches!(
                WechatClient::new(config).unwrap_err(),
                WechatError::Config(_)
            ));
        }
    }

    #[test]
    fn an_answer_without_errcode_or_with_errcode_zero_is_a_success() {
        assert_eq!(parse_answer(br#"{"openid":"o"}"#).unwrap()["openid"], "o");
        assert!(parse_answer(br#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        assert!(parse_answer(br#"{"errcode":null,"x":1}"#).is_ok());
    }

    #[test]
    fn a_non_zero_errcode_is_classified() {
        let err = parse_answer(br#"{"errcode":40163,"errmsg":"code been used"}"#).unwrap_err();
        assert_eq!(err.api_kind(), Some(ApiErrorKind::CodeUsed));
        assert_eq!(err.to_string(), "WeChat error 40163: code been used");
        let err = parse_answer(br#"{"errcode":-1}"#).unwrap_err();
        assert_eq!(err.api_kind(), Some(ApiErrorKind::Busy));
    }

    #[test]
    fn an_answer_that_is_not_a_json_object_is_a_protocol_error() {
        for body in [
            &b"<html>busy</html>"[..],
            b"",
            b"[1]",
            b"\"x\"",
            br#"{"errcode":"x"}"#,
        ] {
            assert!(
                matches!(parse_answer(body), Err(WechatError::Protocol(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_malformed_field_is_named_without_its_value() {
        let answer = json!({ "session_key": "not-a-key-but-secret" });
        let err = parse_field(&answer, "session_key", SessionKey::parse).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("session_key"));
        assert!(!message.contains("not-a-key-but-secret"));
        let err = parse_field(&answer, "openid", OpenId::parse).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected answer from the WeChat API: `openid` is missing or not a string"
        );
    }

    #[test]
    fn busy_backoff_doubles_with_jitter_and_is_capped() {
        let first = Duration::from_millis(100);
        for attempt in 0..4 {
            let ceiling = first * (1 << attempt);
            for _ in 0..50 {
                let delay = busy_backoff(first, attempt);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?}");
            }
        }
        assert!(busy_backoff(first, 40) <= MAX_BUSY_BACKOFF);
        assert!(busy_backoff(Duration::MAX, 1) <= MAX_BUSY_BACKOFF);
        assert_eq!(busy_backoff(Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn the_config_debug_output_hides_a_password_in_the_base_url() {
        let config = ClientConfig {
            api_base: base("https://user:hunter2@proxy.example/wx?key=abc"),
            ..ClientConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("key=abc"));
        assert!(debug.contains("proxy.example"));
    }

    #[test]
    fn the_refresh_jitter_stays_within_sixty_seconds() {
        for _ in 0..20 {
            let client = WechatClient::new(ClientConfig::default()).unwrap();
            assert!(client.refresh_margin() >= Duration::from_secs(300));
            assert!(client.refresh_margin() <= Duration::from_secs(360));
        }
    }

    #[tokio::test]
    async fn an_unreachable_wechat_is_a_connect_error_without_the_secret() {
        // Port 9 on localhost: nothing listens, the connection is refused at once.
        let config = ClientConfig {
            api_base: base("http://127.0.0.1:9"),
            ..ClientConfig::default()
        };
        let client = WechatClient::new(config).unwrap();
        let app = AppCredentials::new(
            AppId::parse("wxdemo").unwrap(),
            crate::AppSecret::new("the-app-secret"),
        );
        let err = client
            .code2session(&app, &JsCode::parse("code").unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, WechatError::Connect), "{err:?}");
        assert!(!format!("{err} {err:?} {client:?}").contains("the-app-secret"));
    }
}
