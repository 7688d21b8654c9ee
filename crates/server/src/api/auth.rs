//! `POST /v1/auth/login`, `/refresh`, `/logout`, `/check`: parse, call the service, answer.

use axum::extract::{FromRequest as _, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::views::UserView;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, bearer_token};
use crate::service::login::{self, ClientMeta};
use crate::service::sessions::{self, TokenPair};
use crate::state::AppState;

/// The login, refresh, logout and check routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/check", post(check))
}

/// `POST /v1/auth/login` body. No `Debug`: the code is a credential for five minutes.
#[derive(Deserialize)]
pub struct LoginRequest {
    /// The code from `wx.login`.
    pub code: String,
    /// Which mini program; optional when only one is configured.
    #[serde(default)]
    pub app_id: Option<String>,
}

/// `POST /v1/auth/login` answer.
#[derive(Serialize)]
pub struct LoginResponse {
    /// The tokens.
    #[serde(flatten)]
    pub tokens: TokenPair,
    /// The user logged in.
    pub user: UserView,
    /// A new person was created by this login.
    pub is_new_user: bool,
    /// This mini program saw this person for the first time (they may be known from another).
    pub is_new_identity: bool,
}

async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let done = login::login(&state, request.app_id.as_deref(), request.code, meta).await?;
    Ok(Json(LoginResponse {
        user: UserView::new(&done.user, &done.app_id, &done.openid),
        tokens: done.tokens,
        is_new_user: done.is_new_user,
        is_new_identity: done.is_new_identity,
    }))
}

/// `POST /v1/auth/refresh` body. No `Debug`: it holds a token.
#[derive(Deserialize)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    sessions::refresh(&state, &request.refresh_token)
        .await
        .map(Json)
}

/// `POST /v1/auth/check` answer.
#[derive(Serialize)]
pub struct CheckResponse {
    /// Whether WeChat still accepts this session's session_key. When false, call `wx.login`
    /// and send the new code with the next encrypted data.
    pub session_key_valid: bool,
}

async fn check(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<CheckResponse>, ApiError> {
    let session_key_valid = sessions::check_session_key(&state, &caller).await?;
    Ok(Json(CheckResponse { session_key_valid }))
}

/// `POST /v1/auth/logout` body, optional. No `Debug`: it holds a token.
#[derive(Deserialize)]
pub struct LogoutRequest {
    /// The session's refresh token: logs out without a live access token.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// The largest logout body read.
const LOGOUT_BODY_LIMIT: usize = 16 * 1024;

/// Logs out by `{"refresh_token"}` or by the bearer access token, live or expired.
async fn logout(State(state): State<AppState>, request: Request) -> Result<StatusCode, ApiError> {
    let (parts, body) = request.into_parts();
    let access = match parts.headers.contains_key(AUTHORIZATION) {
        true => Some(bearer_token(&parts)?.to_owned()),
        false => None,
    };
    let bytes = axum::body::to_bytes(body, LOGOUT_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    // No body, or an empty one: the bearer token decides.
    let refresh = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let ApiJson(body) = ApiJson::<LogoutRequest>::from_request(request, &state).await?;
        body.refresh_token
    };
    sessions::logout(&state, access.as_deref(), refresh.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
