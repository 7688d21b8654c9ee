//! Login, refresh and logout.
//!
//! Login exchanges the `wx.login` code with WeChat once, finds or creates the person, seals the
//! session_key into a new session and hands back an access/refresh pair. Refresh rotates the
//! pair; presenting a used refresh token again revokes the whole session.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use wxauth_wechat::{AppId, JsCode, OpenId, SessionKey};

use super::views::UserView;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use crate::state::AppState;
use crate::store::{RefreshOutcome, Session, TokenEntry};
use crate::tokens::{ACCESS_PREFIX, NewToken, REFRESH_PREFIX, TokenHash, random_id};

/// `POST /v1/auth/login`, `/v1/auth/refresh`, `/v1/auth/logout`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    /// The code from `wx.login`.
    pub code: String,
    /// Which mini program; optional when only one is configured.
    #[serde(default)]
    pub app_id: Option<String>,
}

/// A new access/refresh pair.
#[derive(Serialize)]
pub struct TokenPair {
    /// Bearer token for API calls.
    pub access_token: String,
    /// Always "Bearer".
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Single-use token for `POST /v1/auth/refresh`.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
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
}

/// The client's address and agent, kept on the session for the admin view.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// The peer address.
    pub ip: Option<String>,
    /// The User-Agent header (capped).
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip().to_string());
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(Self { ip, user_agent })
    }
}

async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    login_with_code(&state, request, meta).await.map(Json)
}

/// Exchanges a login code and opens a session.
pub async fn login_with_code(
    state: &AppState,
    request: LoginRequest,
    meta: ClientMeta,
) -> Result<LoginResponse, ApiError> {
    let app = state.app(request.app_id.as_deref())?;
    let code = JsCode::parse(request.code)
        .map_err(|err| ApiError::InvalidRequest(err.to_string().into()))?;
    let wx = state.wechat.code2session(app, &code).await?;
    let now = state.now();
    let outcome = state
        .stores
        .users
        .login(&app.app_id, &wx.openid, wx.unionid.as_ref(), now)
        .await?;
    let tokens = open_session(state, &app.app_id, &wx.openid, &wx.session_key, meta, now).await?;
    tracing::info!(
        app_id = %app.app_id,
        user_id = %outcome.user.id,
        is_new_user = outcome.is_new_user,
        "login"
    );
    Ok(LoginResponse {
        tokens,
        user: UserView::new(&outcome.user, app.app_id.as_str(), wx.openid.as_str()),
        is_new_user: outcome.is_new_user,
    })
}

/// Stores a new session for the identity and mints its first token pair.
async fn open_session(
    state: &AppState,
    app_id: &AppId,
    openid: &OpenId,
    session_key: &SessionKey,
    meta: ClientMeta,
    now: i64,
) -> Result<TokenPair, ApiError> {
    let id = random_id();
    let expires_at = now + state.lifetimes.session;
    let session = Session {
        sealed_session_key: state.data_key.seal(session_key, &id),
        id,
        app_id: app_id.to_string(),
        openid: openid.to_string(),
        created_at: now,
        last_seen_at: now,
        expires_at,
        revoked_at: None,
        user_agent: meta.user_agent,
        ip: meta.ip,
    };
    let (pair, access, refresh) = mint_pair(state, now, expires_at);
    state
        .stores
        .sessions
        .create(&session, access, refresh)
        .await?;
    Ok(pair)
}

/// Mints an access/refresh pair that ends no later than the session.
fn mint_pair(state: &AppState, now: i64, session_end: i64) -> (TokenPair, TokenEntry, TokenEntry) {
    let access = NewToken::generate(ACCESS_PREFIX);
    let refresh = NewToken::generate(REFRESH_PREFIX);
    let access_exp = (now + state.lifetimes.access).min(session_end);
    let refresh_exp = (now + state.lifetimes.refresh).min(session_end);
    let pair = TokenPair {
        access_token: access.value,
        token_type: "Bearer",
        expires_in: access_exp - now,
        refresh_token: refresh.value,
        refresh_expires_in: refresh_exp - now,
    };
    (
        pair,
        TokenEntry {
            hash: access.hash,
            expires_at: access_exp,
        },
        TokenEntry {
            hash: refresh.hash,
            expires_at: refresh_exp,
        },
    )
}

/// `POST /v1/auth/refresh` body.
#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    if !request.refresh_token.starts_with(REFRESH_PREFIX) {
        return Err(ApiError::Unauthorized("the refresh token is not valid"));
    }
    let now = state.now();
    // Lifetimes are capped to the session's end inside the store, which knows it.
    let (mut pair, access, refresh) = mint_pair(&state, now, i64::MAX);
    let outcome = state
        .stores
        .sessions
        .rotate(&TokenHash::of(&request.refresh_token), access, refresh, now)
        .await?;
    match outcome {
        RefreshOutcome::Rotated(session) => {
            pair.expires_in = pair.expires_in.min(session.expires_at - now);
            pair.refresh_expires_in = pair.refresh_expires_in.min(session.expires_at - now);
            Ok(Json(pair))
        }
        RefreshOutcome::Reused => {
            tracing::warn!("refresh token presented twice: session revoked");
            Err(ApiError::TokenRevoked)
        }
        RefreshOutcome::Revoked => Err(ApiError::TokenRevoked),
        RefreshOutcome::Expired => Err(ApiError::TokenExpired),
        RefreshOutcome::Unknown => Err(ApiError::Unauthorized("the refresh token is not valid")),
    }
}

async fn logout(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<StatusCode, ApiError> {
    state
        .stores
        .sessions
        .revoke(&session.id, "logout", state.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
