//! `POST /v1/auth/login`, `/refresh`, `/logout`, `/check`: parse, call the service, answer.

use axum::extract::{FromRequest as _, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::UserView;
use crate::config::LimitedAction;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, ClientAddr, bearer_token};
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
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    /// The code from `wx.login`.
    pub code: String,
    /// Which mini program; optional when only one is configured.
    #[serde(default)]
    pub app_id: Option<String>,
}

/// `POST /v1/auth/login` answer.
#[derive(Serialize, ToSchema)]
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

/// Logs a mini-program user in with a `wx.login` code.
///
/// The code is exchanged with WeChat (`code2session`); the answer is a new session's tokens
/// and the user, made on first login.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, description = "Logged in", body = LoginResponse)),
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    meta: ClientMeta,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let app_id = state
        .app(request.app_id.as_deref())
        .ok()
        .map(|app| &app.app_id);
    // Refused before anything costs a WeChat call or a write; an unknown app is refused by
    // the login itself.
    let result = match state.limiter.check(LimitedAction::Login, ip, app_id).await {
        Ok(()) => login::login(&state, request.app_id.as_deref(), request.code, meta).await,
        Err(refused) => Err(refused),
    };
    let outcome = match &result {
        Ok(done) if done.is_new_user => "new_person",
        Ok(done) if done.is_new_identity => "new_identity",
        Ok(_) => "returning",
        Err(err) => err.parts().1,
    };
    crate::instruments::login(app_id, outcome);
    if let Some(app_id) = app_id {
        let user = result.as_ref().ok().map(|done| &done.user.id);
        state.stats.login(app_id, outcome, user);
    }
    let done = result?;
    Ok(Json(LoginResponse {
        user: UserView::new(&done.user, &done.app_id, &done.openid),
        tokens: done.tokens,
        is_new_user: done.is_new_user,
        is_new_identity: done.is_new_identity,
    }))
}

/// `POST /v1/auth/refresh` body. No `Debug`: it holds a token.
#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// Trades a refresh token for a new token pair (the old refresh token is then spent).
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses((status = 200, description = "A new token pair", body = TokenPair)),
)]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    sessions::refresh(&state, &request.refresh_token, ip)
        .await
        .map(Json)
}

/// `POST /v1/auth/check` answer.
#[derive(Serialize, ToSchema)]
pub struct CheckResponse {
    /// Whether WeChat still accepts this session's session_key. When false, call `wx.login`
    /// and send the new code with the next encrypted data.
    pub session_key_valid: bool,
}

/// Asks WeChat whether the session's session_key is still valid.
#[utoipa::path(
    post,
    path = "/v1/auth/check",
    tag = "auth",
    security(("user_token" = [])),
    responses((status = 200, description = "The session_key's state", body = CheckResponse)),
)]
pub(crate) async fn check(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Authenticated(caller): Authenticated,
) -> Result<Json<CheckResponse>, ApiError> {
    state
        .limiter
        .check(LimitedAction::Check, ip, Some(&caller.principal.app_id))
        .await?;
    let session_key_valid = sessions::check_session_key(&state, &caller).await?;
    Ok(Json(CheckResponse { session_key_valid }))
}

/// `POST /v1/auth/logout` body, optional. No `Debug`: it holds a token.
#[derive(Deserialize, ToSchema)]
pub struct LogoutRequest {
    /// The session's refresh token: logs out without a live access token.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// The largest logout body read.
const LOGOUT_BODY_LIMIT: usize = 16 * 1024;

/// Logs out by `{"refresh_token"}` or by the bearer access token, live or expired.
///
/// Send the bearer access token, or the session's refresh token in the body (or both).
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    security(("user_token" = []), ()),
    request_body(content = Option<LogoutRequest>, content_type = "application/json"),
    responses((status = 204, description = "The session is revoked")),
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    request: Request,
) -> Result<StatusCode, ApiError> {
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
