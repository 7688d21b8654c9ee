//! What the client tells an [`Observer`]: each call to WeChat (endpoint, app, outcome, time
//! taken), each access-token fetch, and each call not sent because too many were in flight.
//! A service turns these into its metrics; the crate itself depends on no metrics library.

use std::time::Duration;

use crate::error::WechatError;
use crate::types::AppId;

/// The WeChat endpoints the client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /sns/jscode2session`
    Code2Session,
    /// `POST /cgi-bin/stable_token`
    StableToken,
    /// `GET /cgi-bin/token`
    Token,
    /// `POST /wxa/business/getuserphonenumber`
    PhoneNumber,
    /// `GET /wxa/checksession`
    CheckSession,
    /// `GET /wxa/resetusersessionkey`
    ResetSessionKey,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 6] = [
        Self::Code2Session,
        Self::StableToken,
        Self::Token,
        Self::PhoneNumber,
        Self::CheckSession,
        Self::ResetSessionKey,
    ];

    /// The path below the API base.
    ///
    /// ```
    /// use wxauth_wechat::observe::Endpoint;
    /// assert_eq!(Endpoint::Code2Session.path(), "/sns/jscode2session");
    /// ```
    pub fn path(self) -> &'static str {
        match self {
            Self::Code2Session => "/sns/jscode2session",
            Self::StableToken => "/cgi-bin/stable_token",
            Self::Token => "/cgi-bin/token",
            Self::PhoneNumber => "/wxa/business/getuserphonenumber",
            Self::CheckSession => "/wxa/checksession",
            Self::ResetSessionKey => "/wxa/resetusersessionkey",
        }
    }

    /// A short name, fit for a metric label.
    ///
    /// ```
    /// use wxauth_wechat::observe::Endpoint;
    /// assert_eq!(Endpoint::PhoneNumber.name(), "getuserphonenumber");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Code2Session => "jscode2session",
            Self::StableToken => "stable_token",
            Self::Token => "token",
            Self::PhoneNumber => "getuserphonenumber",
            Self::CheckSession => "checksession",
            Self::ResetSessionKey => "resetusersessionkey",
        }
    }
}

/// One call to WeChat as it ended (each busy retry is a call of its own).
#[derive(Debug)]
pub struct CallEvent<'a> {
    /// What was called.
    pub endpoint: Endpoint,
    /// For which app.
    pub app_id: &'a AppId,
    /// `Ok` for errcode 0, else what went wrong (an errcode, a timeout, ...).
    pub outcome: Result<(), &'a WechatError>,
    /// From sending the request to reading the whole answer (or failing).
    pub elapsed: Duration,
}

/// Told what the client does. Every method has an empty default; they are called on the
/// request's task, so they must be quick and must not block.
pub trait Observer: Send + Sync + 'static {
    /// A call to WeChat ended.
    fn call_finished(&self, _event: &CallEvent<'_>) {}

    /// An access token was fetched from WeChat (`Ok`), or fetching it failed.
    fn token_fetched(&self, _app_id: &AppId, _outcome: Result<(), &WechatError>) {}

    /// A call was not sent: `max_concurrency` calls were in flight for longer than
    /// `concurrency_wait`.
    fn call_refused(&self, _endpoint: Endpoint, _app_id: &AppId) {}
}

/// A bounded label for an outcome: `"0"` for success, the errcode of the errcodes the
/// client knows (the ones [`crate::ApiErrorKind`] names), `"other"` for any other errcode, and
/// `"timeout"`, `"connect"`, `"http_status"`, `"protocol"`, `"config"`, `"overloaded"` for
/// failures without one. Never more than these values, whatever WeChat answers.
///
/// ```
/// use wxauth_wechat::WechatError;
/// use wxauth_wechat::observe::outcome_label;
/// assert_eq!(outcome_label(Ok(())), "0");
/// assert_eq!(outcome_label(Err(&WechatError::api(40029, "invalid code"))), "40029");
/// assert_eq!(outcome_label(Err(&WechatError::api(99999, "new"))), "other");
/// assert_eq!(outcome_label(Err(&WechatError::Connect)), "connect");
/// ```
pub fn outcome_label(outcome: Result<(), &WechatError>) -> &'static str {
    let Err(err) = outcome else { return "0" };
    match err {
        WechatError::Api { errcode, .. } => match errcode {
            -1 => "-1",
            40001 => "40001",
            40013 => "40013",
            40014 => "40014",
            40029 => "40029",
            40125 => "40125",
            40163 => "40163",
            40164 => "40164",
            40226 => "40226",
            41008 => "41008",
            42001 => "42001",
            45011 => "45011",
            87009 => "87009",
            1_400_001 => "1400001",
            _ => "other",
        },
        WechatError::Timeout(_) => "timeout",
        WechatError::Connect => "connect",
        WechatError::Status(_) => "http_status",
        WechatError::Protocol(_) => "protocol",
        WechatError::Config(_) => "config",
        WechatError::Overloaded => "overloaded",
    }
}
