//! WeChat access tokens and where they are kept between calls.
//!
//! An access token is an app-wide credential (about 7200 s) that several WeChat APIs need.
//! Fetching one per call would hit WeChat's daily quota, and with the classic `/cgi-bin/token`
//! each fetch invalidates the tokens other instances hold. So the client keeps tokens in a
//! [`TokenStore`]: [`MemoryTokenStore`] for one process, or a shared implementation (Redis, a
//! database) so that every instance of a service uses, and refreshes, the same token.
//!
//! The store also offers a lease ([`TokenStore::try_lock`]) so that, across instances, one
//! refresher fetches while the others wait for its result.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};

use crate::types::AppId;

/// A WeChat access token with its expiry. Its `Debug` never shows the value.
///
/// ```
/// use wxauth_wechat::AccessToken;
/// let token = AccessToken::new("ACCESS_TOKEN_VALUE", 1_700_007_200);
/// assert_eq!(token.expose_secret(), "ACCESS_TOKEN_VALUE");
/// assert_eq!(token.expires_at_unix(), 1_700_007_200);
/// assert!(!format!("{token:?}").contains("ACCESS_TOKEN_VALUE"));
/// ```
#[derive(Clone)]
pub struct AccessToken {
    value: SecretString,
    expires_at_unix: i64,
}

impl AccessToken {
    /// Wraps a token value and the Unix second at which WeChat stops accepting it.
    ///
    /// ```
    /// let token = wxauth_wechat::AccessToken::new("T", 0);
    /// assert_eq!(token.expires_at_unix(), 0);
    /// ```
    pub fn new(value: impl Into<String>, expires_at_unix: i64) -> Self {
        Self {
            value: SecretString::from(value.into()),
            expires_at_unix,
        }
    }

    /// The token value. Call only to put it on the wire or into a token store.
    ///
    /// ```
    /// let token = wxauth_wechat::AccessToken::new("T", 0);
    /// assert_eq!(token.expose_secret(), "T");
    /// ```
    pub fn expose_secret(&self) -> &str {
        self.value.expose_secret()
    }

    /// When WeChat stops accepting the token, in Unix seconds.
    ///
    /// ```
    /// let token = wxauth_wechat::AccessToken::new("T", 1_700_000_000);
    /// assert_eq!(token.expires_at_unix(), 1_700_000_000);
    /// ```
    pub fn expires_at_unix(&self) -> i64 {
        self.expires_at_unix
    }

    /// Whether WeChat still accepts the token at `now_unix`.
    ///
    /// ```
    /// let token = wxauth_wechat::AccessToken::new("T", 100);
    /// assert!(token.is_valid_at(99));
    /// assert!(!token.is_valid_at(100));
    /// ```
    pub fn is_valid_at(&self, now_unix: i64) -> bool {
        now_unix < self.expires_at_unix
    }

    /// Whether the token is still valid at `now_unix` with at least `margin` to spare: the test
    /// for "no need to refresh yet".
    ///
    /// ```
    /// use std::time::Duration;
    /// let token = wxauth_wechat::AccessToken::new("T", 1_000);
    /// assert!(token.is_fresh_at(600, Duration::from_secs(300)));
    /// assert!(!token.is_fresh_at(700, Duration::from_secs(300)));
    /// ```
    pub fn is_fresh_at(&self, now_unix: i64, margin: Duration) -> bool {
        let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
        now_unix < self.expires_at_unix.saturating_sub(margin)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"[redacted]")
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

/// Two tokens are equal when their values are: a token refetched from WeChat may come back
/// with another expiry, but it is the same credential.
impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.expose_secret()
            .as_bytes()
            .ct_eq(other.expose_secret().as_bytes())
            .into()
    }
}

impl Eq for AccessToken {}

/// A token store failed (e.g. Redis could not be reached). The client falls back to fetching
/// from WeChat directly, so this never fails a call on its own.
///
/// ```
/// let err = wxauth_wechat::TokenStoreError("connection refused".into());
/// assert_eq!(err.to_string(), "token store: connection refused");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("token store: {0}")]
pub struct TokenStoreError(pub String);

/// Where the client keeps access tokens between calls, one per app, and the lease that makes
/// one instance the refresher.
///
/// Implement it over shared storage to let several instances share one token:
///
/// ```
/// use std::time::Duration;
/// use wxauth_wechat::{AccessToken, AppId, TokenStore, TokenStoreError};
///
/// /// A store that keeps nothing: every call fetches a fresh token.
/// struct NoStore;
///
/// #[async_trait::async_trait]
/// impl TokenStore for NoStore {
///     async fn get(&self, _: &AppId) -> Result<Option<AccessToken>, TokenStoreError> {
///         Ok(None)
///     }
///     async fn put(&self, _: &AppId, _: &AccessToken) -> Result<(), TokenStoreError> {
///         Ok(())
///     }
///     async fn invalidate(&self, _: &AppId, _: &AccessToken) -> Result<(), TokenStoreError> {
///         Ok(())
///     }
///     async fn try_lock(&self, _: &AppId, _: Duration) -> Result<bool, TokenStoreError> {
///         Ok(true)
///     }
///     async fn unlock(&self, _: &AppId) -> Result<(), TokenStoreError> {
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The stored token for `app_id`, if any (expired or not: the client decides).
    async fn get(&self, app_id: &AppId) -> Result<Option<AccessToken>, TokenStoreError>;

    /// Stores `token` for `app_id`, replacing any other.
    async fn put(&self, app_id: &AppId, token: &AccessToken) -> Result<(), TokenStoreError>;

    /// Removes the token only if it is still `stale` (another instance may already have replaced it).
    async fn invalidate(&self, app_id: &AppId, stale: &AccessToken) -> Result<(), TokenStoreError>;

    /// Takes the cross-instance refresh lease for `ttl`; false when someone else holds it.
    ///
    /// The lease must expire on its own after `ttl`, so that a refresher that dies does not
    /// block the others.
    async fn try_lock(&self, app_id: &AppId, ttl: Duration) -> Result<bool, TokenStoreError>;

    /// Releases the refresh lease taken by [`TokenStore::try_lock`].
    async fn unlock(&self, app_id: &AppId) -> Result<(), TokenStoreError>;
}

/// A [`TokenStore`] in this process's memory: the default. Instances of a service that each
/// use one do not share tokens; with `stable_token` that is safe, only more calls to WeChat.
///
/// ```
/// # tokio_test_block_on(async {
/// use wxauth_wechat::{AccessToken, AppId, MemoryTokenStore, TokenStore};
/// let store = MemoryTokenStore::default();
/// let app = AppId::parse("wxdemo").unwrap();
/// store.put(&app, &AccessToken::new("T", 100)).await.unwrap();
/// assert_eq!(store.get(&app).await.unwrap(), Some(AccessToken::new("T", 100)));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Default)]
pub struct MemoryTokenStore {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    tokens: HashMap<AppId, AccessToken>,
    /// When each app's refresh lease runs out.
    leases: HashMap<AppId, Instant>,
}

impl MemoryTokenStore {
    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // Every critical section leaves the maps consistent, so a panic elsewhere while the
        // lock was held does not make the data unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_lock_at(&self, app_id: &AppId, ttl: Duration, now: Instant) -> bool {
        let mut state = self.state();
        match state.leases.get(app_id) {
            Some(until) if *until > now => false,
            _ => {
                state.leases.insert(app_id.clone(), now + ttl);
                true
            }
        }
    }
}

impl fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryTokenStore")
            .field("apps", &state.tokens.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenStore for MemoryTokenStore {
    async fn get(&self, app_id: &AppId) -> Result<Option<AccessToken>, TokenStoreError> {
        Ok(self.state().tokens.get(app_id).cloned())
    }

    async fn put(&self, app_id: &AppId, token: &AccessToken) -> Result<(), TokenStoreError> {
        self.state().tokens.insert(app_id.clone(), token.clone());
        Ok(())
    }

    async fn invalidate(&self, app_id: &AppId, stale: &AccessToken) -> Result<(), TokenStoreError> {
        let mut state = self.state();
        if state.tokens.get(app_id) == Some(stale) {
            state.tokens.remove(app_id);
        }
        Ok(())
    }

    async fn try_lock(&self, app_id: &AppId, ttl: Duration) -> Result<bool, TokenStoreError> {
        Ok(self.try_lock_at(app_id, ttl, Instant::now()))
    }

    async fn unlock(&self, app_id: &AppId) -> Result<(), TokenStoreError> {
        self.state().leases.remove(app_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str) -> AppId {
        AppId::parse(id).unwrap()
    }

    #[test]
    fn a_tokens_debug_output_hides_its_value() {
        let token = AccessToken::new("super-secret-token", 42);
        let debug = format!("{token:?}");
        assert!(!debug.contains("super-secret-token"));
        assert!(debug.contains("42"));
    }

    #[test]
    fn tokens_with_the_same_value_are_equal_whatever_their_expiry() {
        assert_eq!(AccessToken::new("a", 1), AccessToken::new("a", 2));
        assert_ne!(AccessToken::new("a", 1), AccessToken::new("b", 1));
    }

    #[test]
    fn a_token_is_fresh_only_with_the_margin_to_spare() {
        let token = AccessToken::new("t", 1_000);
        let margin = Duration::from_secs(300);
        assert!(token.is_fresh_at(699, margin));
        assert!(!token.is_fresh_at(700, margin));
        assert!(token.is_valid_at(999));
        assert!(!token.is_valid_at(1_000));
        assert!(!token.is_fresh_at(0, Duration::MAX));
    }

    #[tokio::test]
    async fn the_memory_store_keeps_one_token_per_app() {
        let store = MemoryTokenStore::default();
        store
            .put(&app("wxa"), &AccessToken::new("A", 1))
            .await
            .unwrap();
        store
            .put(&app("wxb"), &AccessToken::new("B", 1))
            .await
            .unwrap();
        store
            .put(&app("wxa"), &AccessToken::new("A2", 1))
            .await
            .unwrap();
        assert_eq!(
            store.get(&app("wxa")).await.unwrap(),
            Some(AccessToken::new("A2", 1))
        );
        assert_eq!(
            store.get(&app("wxb")).await.unwrap(),
            Some(AccessToken::new("B", 1))
        );
        assert_eq!(store.get(&app("wxc")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn invalidating_removes_the_token_only_while_it_is_still_the_stale_one() {
        let store = MemoryTokenStore::default();
        let stale = AccessToken::new("old", 1);
        store
            .put(&app("wxa"), &AccessToken::new("new", 1))
            .await
            .unwrap();
        store.invalidate(&app("wxa"), &stale).await.unwrap();
        assert_eq!(
            store.get(&app("wxa")).await.unwrap(),
            Some(AccessToken::new("new", 1))
        );

        store.put(&app("wxa"), &stale).await.unwrap();
        store.invalidate(&app("wxa"), &stale).await.unwrap();
        assert_eq!(store.get(&app("wxa")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_refresh_lease_is_exclusive_until_unlocked() {
        let store = MemoryTokenStore::default();
        let ttl = Duration::from_secs(60);
        assert!(store.try_lock(&app("wxa"), ttl).await.unwrap());
        assert!(!store.try_lock(&app("wxa"), ttl).await.unwrap());
        assert!(store.try_lock(&app("wxb"), ttl).await.unwrap());
        store.unlock(&app("wxa")).await.unwrap();
        assert!(store.try_lock(&app("wxa"), ttl).await.unwrap());
    }

    #[test]
    fn an_abandoned_refresh_lease_runs_out_after_its_ttl() {
        let store = MemoryTokenStore::default();
        let ttl = Duration::from_secs(10);
        let start = Instant::now();
        assert!(store.try_lock_at(&app("wxa"), ttl, start));
        assert!(!store.try_lock_at(&app("wxa"), ttl, start + Duration::from_secs(9)));
        assert!(store.try_lock_at(&app("wxa"), ttl, start + Duration::from_secs(10)));
    }

    #[test]
    fn the_memory_stores_debug_output_names_apps_but_no_token() {
        let store = MemoryTokenStore::default();
        store
            .state()
            .tokens
            .insert(app("wxa"), AccessToken::new("hidden-value", 1));
        let debug = format!("{store:?}");
        assert!(debug.contains("wxa"));
        assert!(!debug.contains("hidden-value"));
    }
}
