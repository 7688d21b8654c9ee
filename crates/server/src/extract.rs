//! Request extractors whose rejections are the API's own errors: JSON bodies, query strings
//! and bearer tokens.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AccessCheck, Session};
use crate::tokens::{ACCESS_PREFIX, TokenHash};

/// A JSON body; malformed input answers 400/413/415 in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
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

/// The caller's live session, from `Authorization: Bearer wxa_...`.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Session);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        let now = state.now();
        match state
            .stores
            .sessions
            .authenticate(&TokenHash::of(token), now)
            .await?
        {
            AccessCheck::Valid(session) => {
                state.touch_later(&session, now);
                Ok(Self(session))
            }
            AccessCheck::Expired => Err(ApiError::TokenExpired),
            AccessCheck::Revoked => Err(ApiError::TokenRevoked),
            AccessCheck::Unknown => Err(ApiError::Unauthorized("the access token is not valid")),
        }
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
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
    if !scheme.eq_ignore_ascii_case("bearer") || !token.starts_with(ACCESS_PREFIX) {
        return Err(ApiError::Unauthorized(
            "send Authorization: Bearer <access_token>",
        ));
    }
    Ok(token)
}
