//! The client's typed error: WeChat errcodes sorted by what a backend should do about them,
//! plus transport and protocol failures.
//!
//! Messages never carry a secret: WeChat's `errmsg` is kept (it names no secret), URLs are not.

use std::time::Duration;

/// What kind of WeChat errcode this is, following the table in the project's DOMAIN notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// -1: system busy; retried with backoff before it reaches the caller.
    Busy,
    /// 40029: the login code is invalid or expired; the client needs a new one.
    InvalidCode,
    /// 40163: the login code was already used.
    CodeUsed,
    /// 41008: no code was sent.
    MissingCode,
    /// 40226: a high-risk user; refuse the login.
    RiskyUser,
    /// 45011: too many calls for this user (100 a minute); retry after a minute.
    RateLimited,
    /// 40013: the AppID is wrong (configuration error).
    InvalidAppId,
    /// 40125: the AppSecret is wrong (configuration error).
    InvalidSecret,
    /// 40001 / 40014: the access token is invalid (or no longer the latest).
    AccessTokenInvalid,
    /// 42001: the access token expired.
    AccessTokenExpired,
    /// 87009: the signature is wrong: the session_key is stale.
    BadSignature,
    /// 40164: the calling server's IP is not on the app's IP whitelist (WeChat admin console:
    /// 开发管理 → 开发设置 → IP白名单). Blocks `stable_token`, hence everything that needs an
    /// access token, such as the phone number (configuration error).
    IpNotWhitelisted,
    /// 1400001: the mini program's paid phone-number quota is used up; the owner must top it
    /// up before phone numbers can be fetched again.
    PhoneQuotaExhausted,
    /// Any other errcode.
    Other,
}

impl ApiErrorKind {
    /// Classifies a WeChat errcode.
    ///
    /// ```
    /// use wxauth_wechat::ApiErrorKind;
    /// assert_eq!(ApiErrorKind::from_errcode(40163), ApiErrorKind::CodeUsed);
    /// assert_eq!(ApiErrorKind::from_errcode(40164), ApiErrorKind::IpNotWhitelisted);
    /// assert_eq!(ApiErrorKind::from_errcode(1400001), ApiErrorKind::PhoneQuotaExhausted);
    /// assert_eq!(ApiErrorKind::from_errcode(12345), ApiErrorKind::Other);
    /// ```
    pub fn from_errcode(errcode: i64) -> Self {
        match errcode {
            -1 => Self::Busy,
            40029 => Self::InvalidCode,
            40163 => Self::CodeUsed,
            41008 => Self::MissingCode,
            40226 => Self::RiskyUser,
            45011 => Self::RateLimited,
            40013 => Self::InvalidAppId,
            40125 => Self::InvalidSecret,
            40001 | 40014 => Self::AccessTokenInvalid,
            42001 => Self::AccessTokenExpired,
            87009 => Self::BadSignature,
            40164 => Self::IpNotWhitelisted,
            1_400_001 => Self::PhoneQuotaExhausted,
            _ => Self::Other,
        }
    }

    /// Whether a fresh access token and one retry may cure it.
    ///
    /// ```
    /// use wxauth_wechat::ApiErrorKind;
    /// assert!(ApiErrorKind::from_errcode(42001).is_access_token_problem());
    /// assert!(!ApiErrorKind::from_errcode(40029).is_access_token_problem());
    /// ```
    pub fn is_access_token_problem(self) -> bool {
        matches!(self, Self::AccessTokenInvalid | Self::AccessTokenExpired)
    }
}

/// A call to WeChat that did not give the expected answer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WechatError {
    /// WeChat answered with a non-zero errcode.
    #[error("WeChat error {errcode}: {errmsg}")]
    Api {
        /// What to do about it.
        kind: ApiErrorKind,
        /// WeChat's errcode.
        errcode: i64,
        /// WeChat's errmsg (it names no secret).
        errmsg: String,
    },
    /// WeChat could not be reached: the connection failed, so the request was not sent.
    #[error("could not connect to the WeChat API")]
    Connect,
    /// WeChat did not answer in time. The request may have reached WeChat and been acted on
    /// (a login code used up), so it is never retried.
    #[error("the WeChat API did not answer within {0:?}")]
    Timeout(Duration),
    /// WeChat answered with a non-success HTTP status.
    #[error("the WeChat API answered HTTP {0}")]
    Status(u16),
    /// WeChat's answer was not what its API documents (not JSON, or a field missing), or the
    /// connection broke after the request was sent (so it may have been acted on).
    #[error("unexpected answer from the WeChat API: {0}")]
    Protocol(String),
    /// The client is misconfigured (e.g. an API base URL that cannot take a path); nothing was sent.
    #[error("WeChat client configuration: {0}")]
    Config(String),
    /// `max_concurrency` calls were in flight for longer than `concurrency_wait`: this one was
    /// not sent.
    #[error("too many calls to the WeChat API in flight")]
    Overloaded,
}

impl WechatError {
    /// The errcode, when WeChat gave one.
    ///
    /// ```
    /// use wxauth_wechat::WechatError;
    /// assert_eq!(WechatError::Connect.errcode(), None);
    /// ```
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// The errcode's kind, when WeChat gave one.
    ///
    /// ```
    /// use wxauth_wechat::{ApiErrorKind, WechatError};
    /// assert_eq!(WechatError::api(45011, "slow down").api_kind(), Some(ApiErrorKind::RateLimited));
    /// assert_eq!(WechatError::Status(502).api_kind(), None);
    /// ```
    pub fn api_kind(&self) -> Option<ApiErrorKind> {
        match self {
            Self::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Builds the error for a non-zero errcode.
    ///
    /// ```
    /// let err = wxauth_wechat::WechatError::api(40163, "code been used");
    /// assert_eq!(err.to_string(), "WeChat error 40163: code been used");
    /// ```
    pub fn api(errcode: i64, errmsg: impl Into<String>) -> Self {
        Self::Api {
            kind: ApiErrorKind::from_errcode(errcode),
            errcode,
            errmsg: errmsg.into(),
        }
    }
}
