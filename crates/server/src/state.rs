//! The one shared state every handler gets: configuration resolved once at start-up, the
//! WeChat client, the stores, the data key and the clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wxauth_wechat::{AppCredentials, AppId, WechatClient};

use crate::clock::Clock;
use crate::error::ApiError;
use crate::seal::DataKey;
use crate::store::{Session, Stores};

/// Cheap to clone: everything sits behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// Configured apps by AppID.
    pub apps: HashMap<AppId, AppCredentials>,
    /// The app used when a request names none (only when exactly one is configured).
    pub default_app: Option<AppId>,
    /// The WeChat client (one pooled HTTP client).
    pub wechat: WechatClient,
    /// Users and sessions.
    pub stores: Stores,
    /// Seals session_keys at rest.
    pub data_key: DataKey,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Lifetimes.
    pub lifetimes: Lifetimes,
    /// Oldest open data accepted; `None` turns the check off.
    pub watermark_max_age: Option<Duration>,
    /// Uploaded avatars.
    pub media: Media,
    /// Finds the client's address behind trusted proxies.
    pub client_ip: crate::client_ip::ClientIp,
    /// The WeChat call timeout (how long to wait for a concurrent exchange of one code).
    pub wechat_timeout: Duration,
    /// What access tokens are minted as.
    pub token_format: crate::config::TokenFormat,
    /// The team's services allowed to introspect tokens.
    pub services: crate::service::clients::ServiceClients,
    /// The JWT signing keys (published at `/.well-known/jwks.json` whatever the token format).
    pub keys: crate::jwt::KeyRing,
    /// The longest a feed call waits for events (below `server.request_timeout`).
    pub feed_wait_cap: Duration,
    /// How long events are kept once delivered.
    pub events_retention: Duration,
}

/// Where uploads go and how they are reached.
#[derive(Debug, Clone)]
pub struct Media {
    /// The directory served at `/media/`.
    pub dir: std::path::PathBuf,
    /// Largest avatar accepted.
    pub max_bytes: usize,
    /// The service's public URL, for the links handed out.
    pub public_url: url::Url,
}

/// Token and session lifetimes, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Access token.
    pub access: i64,
    /// Refresh token (and idle timeout).
    pub refresh: i64,
    /// Absolute session lifetime.
    pub session: i64,
    /// How long a just-used refresh token still answers with its successor pair.
    pub refresh_grace: i64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// Now, by the state's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The app a request means: the one named, or the only one configured.
    pub fn app(&self, app_id: Option<&str>) -> Result<&AppCredentials, ApiError> {
        match app_id {
            Some(id) => {
                let id = AppId::parse(id).map_err(|_| ApiError::UnknownApp)?;
                self.apps.get(&id).ok_or(ApiError::UnknownApp)
            }
            None => self
                .default_app
                .as_ref()
                .and_then(|id| self.apps.get(id))
                .ok_or(ApiError::AppIdRequired),
        }
    }

    /// A configured app by its id (the app of a session).
    pub fn configured_app(&self, app_id: &AppId) -> Result<&AppCredentials, ApiError> {
        self.apps.get(app_id).ok_or(ApiError::UnknownApp)
    }

    /// Records use of a session without holding up the request; at most once a minute, so
    /// an authenticated request stays one read.
    pub fn touch_later(&self, session: &Session, now: i64) {
        if now - session.last_seen_at < crate::store::sql::TOUCH_EVERY {
            return;
        }
        let sessions = self.stores.sessions.clone();
        let id = session.id.clone();
        tokio::spawn(async move {
            if let Err(err) = sessions.touch(&id, now).await {
                tracing::debug!(error = %err, "could not record session use");
            }
        });
    }
}
