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
use std::time::Duration;

use wxauth_wechat::{
    AppCredentials, AppId, Code2Session, JsCode, OpenId, SessionKey, UnionId, WechatError,
};

use super::views::UserView;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use crate::state::AppState;
use crate::store::{CodeClaim, RefreshOutcome, Session, TokenEntry};
use crate::tokens::{ACCESS_PREFIX, NewToken, REFRESH_PREFIX, TokenHash, random_id};

/// `POST /v1/auth/login`, `/v1/auth/refresh`, `/v1/auth/logout`.
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
    /// This mini program saw this person for the first time (they may be known from another).
    pub is_new_identity: bool,
}

/// The client's address and agent, kept on the session (where it was used from).
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// The client's address (the peer, or what a trusted proxy forwarded).
    pub ip: Option<String>,
    /// The User-Agent header (capped).
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| {
                state
                    .client_ip
                    .resolve(info.0.ip(), &parts.headers)
                    .to_string()
            });
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
    let wx = exchange_code(state, app, &code).await?;
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
        is_new_identity: outcome.is_new_identity,
    })
}

/// How long WeChat keeps a login code valid, and so how long its exchange is remembered.
const CODE_LIFETIME_SECS: i64 = 300;

/// What a remembered exchange holds (sealed at rest).
#[derive(Serialize, Deserialize)]
struct Remembered {
    openid: String,
    unionid: Option<String>,
    session_key: String,
}

/// Exchanges a login code with WeChat at most once. A retry of the same code within its five
/// minutes (a client whose response was lost) gets the remembered answer instead of
/// WeChat's "code already used"; a concurrent duplicate waits for the first exchange.
pub async fn exchange_code(
    state: &AppState,
    app: &AppCredentials,
    code: &JsCode,
) -> Result<Code2Session, ApiError> {
    let hash = TokenHash::of(&format!("{}:{}", app.app_id, code.as_str())).to_hex();
    let context = format!("login_code:{hash}");
    // Poll for a concurrent exchange at most as long as that exchange may take.
    let deadline = tokio::time::Instant::now() + state.wechat_timeout + Duration::from_secs(1);
    loop {
        let now = state.now();
        match state
            .stores
            .codes
            .claim(&hash, now, now + CODE_LIFETIME_SECS)
            .await?
        {
            CodeClaim::Claimed => {
                // The exchange finishes in its own task even if this request is dropped: a
                // claim left neither fulfilled nor released would make every retry of the
                // code wait for an exchange that never ends.
                let exchange = tokio::spawn(exchange_claimed(
                    state.clone(),
                    app.clone(),
                    code.clone(),
                    hash,
                    context,
                    now,
                ));
                return exchange
                    .await
                    .map_err(|err| anyhow::anyhow!("a code exchange did not finish: {err}"))?;
            }
            CodeClaim::Done(sealed) => {
                let Some(remembered) = state
                    .data_key
                    .open_bytes(&sealed, &context)
                    .ok()
                    .and_then(|json| serde_json::from_slice::<Remembered>(&json).ok())
                else {
                    // Sealed under another data key: forget it and ask WeChat, which will
                    // say whether the code is still good.
                    tracing::warn!("a remembered login code could not be opened");
                    state.stores.codes.release(&hash).await?;
                    continue;
                };
                return Ok(Code2Session {
                    openid: OpenId::parse(remembered.openid).map_err(anyhow::Error::from)?,
                    unionid: remembered
                        .unionid
                        .map(UnionId::parse)
                        .transpose()
                        .map_err(anyhow::Error::from)?,
                    session_key: SessionKey::parse(remembered.session_key)
                        .map_err(anyhow::Error::from)?,
                });
            }
            CodeClaim::Pending => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::Wechat(WechatError::api(
                        40163,
                        "code been used (another request is still exchanging it)",
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Asks WeChat about a claimed code, then remembers the answer (or gives the claim up).
async fn exchange_claimed(
    state: AppState,
    app: AppCredentials,
    code: JsCode,
    hash: String,
    context: String,
    now: i64,
) -> Result<Code2Session, ApiError> {
    let result = state.wechat.code2session(&app, &code).await;
    let Ok(wx) = result else {
        state.stores.codes.release(&hash).await?;
        return result.map_err(ApiError::from);
    };
    let remembered = Remembered {
        openid: wx.openid.to_string(),
        unionid: wx.unionid.as_ref().map(ToString::to_string),
        session_key: wx.session_key.expose_secret().to_owned(),
    };
    let json = serde_json::to_vec(&remembered).map_err(anyhow::Error::from)?;
    let sealed = state.data_key.seal_bytes(&json, &context);
    state
        .stores
        .codes
        .fulfil(&hash, &sealed, now + CODE_LIFETIME_SECS)
        .await?;
    Ok(wx)
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

/// `POST /v1/auth/check` answer.
#[derive(Serialize)]
pub struct CheckResponse {
    /// Whether WeChat still accepts this session's session_key. When false, call `wx.login`
    /// and send the new code with the next encrypted data.
    pub session_key_valid: bool,
}

async fn check(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<CheckResponse>, ApiError> {
    let (app_id, openid) = super::me::identity(&session)?;
    let app = state.app(Some(app_id.as_str()))?;
    let session_key_valid = match super::me::session_key_of(&state, &session) {
        Some(key) => state.wechat.check_session_key(app, &openid, &key).await?,
        None => false,
    };
    Ok(Json(CheckResponse { session_key_valid }))
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
