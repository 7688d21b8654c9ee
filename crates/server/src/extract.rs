//! Request extractors whose rejections are the API's own errors: JSON bodies, query strings,
//! bearer tokens (authenticated by the service), admin keys and the client's address.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::service::login::ClientMeta;
use crate::service::sessions::{self, Caller};
use crate::state::AppState;

/// A JSON body, which must be an object (serde would also read a struct from an array of its
/// fields' values); malformed input answers 400/413/415 in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        if !value.is_object() {
            return Err(ApiError::InvalidRequest(
                "the JSON body must be an object".into(),
            ));
        }
        serde_json::from_value(value).map(Self).map_err(|err| {
            ApiError::InvalidRequest(
                format!("the JSON body does not fit this request: {err}").into(),
            )
        })
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonDataError(err) => ApiError::InvalidRequest(
            format!(
                "the JSON body does not fit this request: {}",
                err.body_text()
            )
            .into(),
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::InvalidRequest("the body is not valid JSON".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::InvalidRequest("the body could not be read".into()),
    }
}

/// A query string; one that does not fit `T` (an unknown value, a key given twice) answers 400
/// `invalid_request` in the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::InvalidRequest(
                format!(
                    "the query string does not fit this request: {}",
                    rejection.body_text()
                )
                .into(),
            )),
        }
    }
}

/// A path parameter; one that cannot be read answers 400 `invalid_request`.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::InvalidRequest(
                format!(
                    "the path does not fit this request: {}",
                    rejection.body_text()
                )
                .into(),
            )),
        }
    }
}

/// The caller of an authenticated route, from `Authorization: Bearer <access token>`.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        sessions::authenticate(state, token).await.map(Self)
    }
}

/// The client's address: the peer, or what a trusted proxy forwarded (`None` only for a
/// request that did not come over a socket).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

/// Set once a forwarded address was seen from a peer that is not a trusted proxy.
static UNTRUSTED_FORWARDING_SEEN: AtomicBool = AtomicBool::new(false);

impl ClientAddr {
    fn of(parts: &Parts, state: &AppState) -> Self {
        Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| {
                    let peer = info.0.ip();
                    if !state.client_ip.trusts(peer)
                        && parts.headers.contains_key("x-forwarded-for")
                        && !UNTRUSTED_FORWARDING_SEEN.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(
                            %peer,
                            "a request came with X-Forwarded-For from an address that is not in \
                             server.trusted_proxies: if wxauth is behind a proxy, list it there, \
                             or every client counts as the proxy's address (rate limits per \
                             address would then throttle everyone together)"
                        );
                    }
                    state.client_ip.resolve(peer, &parts.headers)
                }),
        )
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, state))
    }
}

/// An operator of the admin API, from `Authorization: Bearer <admin key>`: the name its
/// `[[admins]]` entry gives. A user's access token is never an admin key (nor the reverse:
/// `/v1/me` refuses admin keys), so both answer 401 here.
#[derive(Debug, Clone)]
pub struct Admin(pub String);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        const HOW: &str = "send Authorization: Bearer <admin key> (an [[admins]] entry)";
        let key = bearer_token(parts).map_err(|_| ApiError::Unauthorized(HOW))?;
        state
            .admins
            .authenticate(key)
            .map(|name| Self(name.to_owned()))
            .ok_or(ApiError::Unauthorized("the admin key is not valid"))
    }
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = ClientAddr::of(parts, state).0.map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(Self { ip, user_agent })
    }
}

pub(crate) fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "send Authorization: Bearer <access_token>",
        ))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid"))?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized(
        "send Authorization: Bearer <access_token>",
    ))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized(
            "send Authorization: Bearer <access_token>",
        ));
    }
    Ok(token)
}
