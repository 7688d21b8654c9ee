//! The API's one error type and its stable JSON shape:
//! `{"error": {"code": "<snake_case>", "message": "<text>", "wechat_errcode"?: n}}`.
//!
//! Codes are a contract with clients; messages are for people. Details of server-side failures
//! go to the log, never into the response.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wxauth_wechat::crypto::DecryptError;
use wxauth_wechat::{ApiErrorKind, WechatError};

use crate::store::StoreError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a missing or invalid field.
    #[error("{0}")]
    InvalidRequest(Cow<'static, str>),
    /// The body is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// An upload is not a PNG, JPEG or WebP image.
    #[error("not an image")]
    NotAnImage,
    /// An upload looks like an image but does not decode whole, or is too large to.
    #[error("invalid image")]
    InvalidImage(&'static str),
    /// The body is over the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// No such route.
    #[error("not found")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The requested byte range lies outside the file.
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// A conditional request's precondition (`If-Match`, `If-Unmodified-Since`) failed.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The request (headers, body and handling) did not complete within the time allowed.
    #[error("request timeout")]
    RequestTimeout,
    /// The service has as many connections as it takes; try again shortly.
    #[error("overloaded")]
    Overloaded,
    /// Several apps are configured and the request did not say which.
    #[error("app_id required")]
    AppIdRequired,
    /// The app_id is not configured here.
    #[error("unknown app")]
    UnknownApp,
    /// No usable credentials.
    #[error("unauthorized")]
    Unauthorized(&'static str),
    /// A service's credentials (HTTP Basic) are missing or wrong.
    #[error("invalid client")]
    InvalidClient,
    /// The token (or its session) expired.
    #[error("token expired")]
    TokenExpired,
    /// The session was revoked.
    #[error("token revoked")]
    TokenRevoked,
    /// A call to WeChat failed.
    #[error("wechat: {0}")]
    Wechat(#[from] WechatError),
    /// Open data could not be decrypted or failed a check.
    #[error("open data: {0}")]
    OpenData(#[from] DecryptError),
    /// The decrypted data belongs to another user.
    #[error("openid mismatch")]
    OpenIdMismatch,
    /// The rawData signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// A fresh code given with open data belongs to another user.
    #[error("identity mismatch")]
    IdentityMismatch,
    /// Another request is exchanging this login code with WeChat right now, and did not
    /// finish in time.
    #[error("code exchange in progress")]
    CodeInProgress,
    /// A store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A bug; details are logged, not sent.
    #[error("internal: {0}")]
    Internal(#[from] anyhow::Error),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    wechat_errcode: Option<i64>,
}

impl ApiError {
    /// The HTTP status, the stable code, and the message.
    pub fn parts(&self) -> (StatusCode, &'static str, Cow<'static, str>) {
        use ApiError as E;
        match self {
            E::InvalidRequest(message) => {
                (StatusCode::BAD_REQUEST, "invalid_request", message.clone())
            }
            E::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json".into(),
            ),
            E::NotAnImage => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_image",
                "the file is not a PNG, JPEG or WebP image".into(),
            ),
            E::InvalidImage(message) => {
                (StatusCode::BAD_REQUEST, "invalid_image", (*message).into())
            }
            E::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is over the size limit".into(),
            ),
            E::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such route".into()),
            E::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method".into(),
            ),
            E::RangeNotSatisfiable => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "the requested range lies outside the file".into(),
            ),
            E::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the file does not match the request's preconditions".into(),
            ),
            E::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request did not complete in time".into(),
            ),
            E::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the service is at its connection limit: retry shortly".into(),
            ),
            E::AppIdRequired => (
                StatusCode::BAD_REQUEST,
                "app_id_required",
                "several mini programs are configured: send app_id".into(),
            ),
            E::UnknownApp => (
                StatusCode::NOT_FOUND,
                "unknown_app",
                "this app_id is not configured on this service".into(),
            ),
            E::Unauthorized(message) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", (*message).into())
            }
            E::InvalidClient => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "send the service's credentials as HTTP Basic name:secret (a [[services]] entry)"
                    .into(),
            ),
            E::TokenExpired => (
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the token has expired: refresh it, or log in again".into(),
            ),
            E::TokenRevoked => (
                StatusCode::UNAUTHORIZED,
                "token_revoked",
                "the session was revoked: log in again".into(),
            ),
            E::Wechat(err) => wechat_parts(err),
            E::OpenData(DecryptError::Decrypt) => (
                StatusCode::BAD_REQUEST,
                "decrypt_failed",
                "the data could not be decrypted with this session's session_key, which has \
                 probably changed: call wx.login and send the new code together with the data"
                    .into(),
            ),
            E::OpenData(DecryptError::WatermarkMismatch) => (
                StatusCode::BAD_REQUEST,
                "watermark_mismatch",
                "the data was made for another mini program".into(),
            ),
            E::OpenData(DecryptError::Expired { .. }) => (
                StatusCode::BAD_REQUEST,
                "data_expired",
                "the data is too old: get it again from WeChat and send it at once".into(),
            ),
            E::OpenData(DecryptError::Malformed) => (
                StatusCode::BAD_REQUEST,
                "invalid_data",
                "the decrypted data does not have the expected fields".into(),
            ),
            E::OpenIdMismatch => (
                StatusCode::BAD_REQUEST,
                "openid_mismatch",
                "the data belongs to another user".into(),
            ),
            E::BadSignature => (
                StatusCode::BAD_REQUEST,
                "bad_signature",
                "the signature does not match raw_data".into(),
            ),
            E::IdentityMismatch => (
                StatusCode::BAD_REQUEST,
                "identity_mismatch",
                "the code belongs to another user than this session".into(),
            ),
            E::CodeInProgress => (
                StatusCode::CONFLICT,
                "code_in_progress",
                "another request is exchanging this code with WeChat right now: retry in a \
                 moment, or call wx.login for a new code"
                    .into(),
            ),
            E::Store(StoreError::Unavailable { store, .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the {store} is unavailable; try again shortly").into(),
            ),
            E::Store(StoreError::Other(_)) | E::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side".into(),
            ),
        }
    }
}

fn wechat_parts(err: &WechatError) -> (StatusCode, &'static str, Cow<'static, str>) {
    match err {
        WechatError::Api { kind, .. } => match kind {
            ApiErrorKind::InvalidCode => (
                StatusCode::BAD_REQUEST,
                "invalid_code",
                "the code is invalid or expired: call wx.login for a new one".into(),
            ),
            ApiErrorKind::CodeUsed => (
                StatusCode::BAD_REQUEST,
                "code_used",
                "the code was already used: call wx.login for a new one".into(),
            ),
            ApiErrorKind::MissingCode => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code is required".into(),
            ),
            ApiErrorKind::RiskyUser => (
                StatusCode::FORBIDDEN,
                "risky_user",
                "WeChat flags this user as high-risk; login refused".into(),
            ),
            ApiErrorKind::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many logins for this user: retry in a minute".into(),
            ),
            ApiErrorKind::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "wechat_busy",
                "WeChat is busy: retry shortly".into(),
            ),
            ApiErrorKind::InvalidAppId | ApiErrorKind::InvalidSecret => (
                StatusCode::BAD_GATEWAY,
                "wechat_config_error",
                "WeChat refused this service's app credentials".into(),
            ),
            ApiErrorKind::IpNotWhitelisted => (
                StatusCode::BAD_GATEWAY,
                "wechat_ip_not_whitelisted",
                "WeChat refused this server's IP address: add this server's public IP to the \
                 mini program's IP whitelist in the WeChat admin console (开发管理 → 开发设置 → \
                 IP白名单)"
                    .into(),
            ),
            ApiErrorKind::PhoneQuotaExhausted => (
                StatusCode::SERVICE_UNAVAILABLE,
                "phone_quota_exhausted",
                "the mini program's phone-number quota is used up: phone numbers cannot be \
                 fetched until its owner tops the quota up in the WeChat admin console"
                    .into(),
            ),
            _ => (
                StatusCode::BAD_GATEWAY,
                "wechat_error",
                "WeChat answered with an error".into(),
            ),
        },
        WechatError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "wechat_timeout",
            "WeChat did not answer in time".into(),
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            "wechat_unavailable",
            "WeChat could not be reached or gave an unexpected answer".into(),
        ),
    }
}

impl ApiError {
    /// Headers that go with the error: the `WWW-Authenticate` challenge of a 401, and
    /// `Retry-After` where waiting helps.
    fn headers(&self) -> Vec<(header::HeaderName, HeaderValue)> {
        use ApiError as E;
        let challenge = |error: &'static str| {
            format!(
                "Bearer realm=\"wxauth\", error=\"invalid_token\", error_description=\"{error}\""
            )
        };
        let www = match self {
            E::Unauthorized(_) => Some("Bearer realm=\"wxauth\"".to_owned()),
            E::InvalidClient => Some("Basic realm=\"wxauth\"".to_owned()),
            E::TokenExpired => Some(challenge("token_expired")),
            E::TokenRevoked => Some(challenge("token_revoked")),
            _ => None,
        };
        let retry_after = match self {
            E::Wechat(WechatError::Api {
                kind: ApiErrorKind::RateLimited,
                ..
            }) => Some("60"),
            E::Wechat(WechatError::Api {
                kind: ApiErrorKind::Busy,
                ..
            })
            | E::Store(StoreError::Unavailable { .. })
            | E::CodeInProgress
            | E::Overloaded => Some("1"),
            _ => None,
        };
        let mut headers = Vec::new();
        if let Some(value) = www.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.push((header::WWW_AUTHENTICATE, value));
        }
        if let Some(seconds) = retry_after {
            headers.push((header::RETRY_AFTER, HeaderValue::from_static(seconds)));
        }
        headers
    }

    /// Server-side failures go to the log (with details that never reach the client).
    fn log(&self, status: StatusCode) {
        match self {
            ApiError::Store(err) if status.is_server_error() => {
                tracing::error!(error = ?anyhow_chain(err), "store failure");
            }
            ApiError::Internal(err) => tracing::error!(error = ?err, "internal error"),
            ApiError::Wechat(
                err @ WechatError::Api {
                    kind: ApiErrorKind::InvalidAppId | ApiErrorKind::InvalidSecret,
                    ..
                },
            ) => {
                // Credentials rejected by WeChat is an operator problem: say so loudly.
                tracing::error!(error = %err, "WeChat rejected the configured AppID/AppSecret");
            }
            ApiError::Wechat(
                err @ WechatError::Api {
                    kind: ApiErrorKind::IpNotWhitelisted,
                    ..
                },
            ) => {
                tracing::error!(
                    error = %err,
                    "WeChat refused this server's IP: add its public IP to the app's IP \
                     whitelist (开发管理 → 开发设置 → IP白名单)"
                );
            }
            ApiError::Wechat(err) if status.is_server_error() => {
                tracing::warn!(error = %err, "WeChat call failed");
            }
            _ => {}
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        self.log(status);
        let wechat_errcode = match &self {
            ApiError::Wechat(err) => err.errcode(),
            _ => None,
        };
        let body = Body {
            error: Detail {
                code,
                message: &message,
                wechat_errcode,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().extend(self.headers());
        response
    }
}

fn anyhow_chain(err: &StoreError) -> String {
    match err {
        StoreError::Unavailable { source, .. } => format!("{source:#}"),
        StoreError::Other(source) => format!("{source:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(err: ApiError) -> (StatusCode, Vec<(String, String)>, String) {
        let response = err.into_response();
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| *name != header::CONTENT_TYPE)
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap_or_default();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn a_code_still_being_exchanged_is_its_own_conflict_not_a_wechat_errcode() {
        let (status, headers, body) = body_of(ApiError::CodeInProgress).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(headers, [("retry-after".to_owned(), "1".to_owned())]);
        assert_eq!(
            body,
            r#"{"error":{"code":"code_in_progress","message":"another request is exchanging this code with WeChat right now: retry in a moment, or call wx.login for a new code"}}"#
        );
    }

    #[tokio::test]
    async fn expired_tokens_are_challenged_as_invalid_tokens() {
        let (status, headers, _) = body_of(ApiError::TokenExpired).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            headers,
            [(
                "www-authenticate".to_owned(),
                r#"Bearer realm="wxauth", error="invalid_token", error_description="token_expired""#
                    .to_owned()
            )]
        );
    }

    #[tokio::test]
    async fn wechat_rate_limits_say_when_to_retry() {
        let err = ApiError::Wechat(WechatError::api(45011, "api minute-quota reach limit"));
        let (status, headers, body) = body_of(err).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers, [("retry-after".to_owned(), "60".to_owned())]);
        assert!(body.contains(r#""wechat_errcode":45011"#), "{body}");
    }
}
