//! The logged-in user: `GET /v1/me` and open-data decryption (`POST /v1/me/userinfo`).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use wxauth_wechat::crypto::{self, WatermarkCheck};
use wxauth_wechat::{AppCredentials, AppId, JsCode, OpenId, SessionKey, UnionId, UserInfo};

use super::views::MeView;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use crate::state::AppState;
use crate::store::{ProfileUpdate, Session, User};

/// WeChat's anonymous nickname since 2022: not worth overwriting a real one with.
const ANONYMOUS_NICKNAME: &str = "微信用户";

/// `GET /v1/me`, `POST /v1/me/userinfo`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/me/userinfo", post(userinfo))
}

/// The session's identity, parsed back from the store.
fn identity(session: &Session) -> Result<(AppId, OpenId), ApiError> {
    let app_id = AppId::parse(session.app_id.as_str()).map_err(anyhow::Error::from)?;
    let openid = OpenId::parse(session.openid.as_str()).map_err(anyhow::Error::from)?;
    Ok((app_id, openid))
}

async fn current_user(state: &AppState, app_id: &AppId, openid: &OpenId) -> Result<User, ApiError> {
    state
        .stores
        .users
        .user_by_identity(app_id, openid)
        .await?
        .ok_or(ApiError::Unauthorized(
            "the user of this session no longer exists",
        ))
}

async fn me(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<MeView>, ApiError> {
    let (app_id, openid) = identity(&session)?;
    let user = current_user(&state, &app_id, &openid).await?;
    Ok(Json(MeView::new(&user, app_id.as_str(), openid.as_str())))
}

/// `POST /v1/me/userinfo` body: what `wx.getUserInfo` gives, in snake_case or as WeChat names
/// it, plus an optional fresh `wx.login` code.
#[derive(Debug, Deserialize)]
pub struct UserInfoRequest {
    /// encryptedData.
    #[serde(alias = "encryptedData")]
    pub encrypted_data: String,
    /// iv.
    pub iv: String,
    /// rawData, to check against `signature`.
    #[serde(default, alias = "rawData")]
    pub raw_data: Option<String>,
    /// signature = sha1(rawData + session_key).
    #[serde(default)]
    pub signature: Option<String>,
    /// A fresh `wx.login` code: exchanged first, so the data decrypts with the newest key.
    #[serde(default)]
    pub code: Option<String>,
}

async fn userinfo(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(request): ApiJson<UserInfoRequest>,
) -> Result<Json<MeView>, ApiError> {
    let (app_id, openid) = identity(&session)?;
    let app = state.app(Some(app_id.as_str()))?;
    if request.raw_data.is_some() != request.signature.is_some() {
        return Err(ApiError::InvalidRequest(
            "send raw_data and signature together, or neither".into(),
        ));
    }
    let session_key = session_key_for(&state, app, &session, &openid, request.code).await?;

    let now = state.now();
    let mut check = WatermarkCheck::new(&app.app_id);
    if let Some(max_age) = state.watermark_max_age {
        check = check.max_age(now, max_age);
    }
    let info: UserInfo =
        crypto::decrypt_user_info(&session_key, &request.encrypted_data, &request.iv, &check)?;
    if info
        .open_id
        .as_deref()
        .is_some_and(|id| id != openid.as_str())
    {
        return Err(ApiError::OpenIdMismatch);
    }
    if let (Some(raw), Some(signature)) = (&request.raw_data, &request.signature) {
        if !crypto::verify_raw_data_signature(raw, signature, &session_key) {
            return Err(ApiError::BadSignature);
        }
    }

    let current = current_user(&state, &app_id, &openid).await?;
    let update = profile_update(info.clone(), &current);
    let unionid = info.union_id.and_then(|u| UnionId::parse(u).ok());
    let user = state
        .stores
        .users
        .update_profile(&app_id, &openid, &update, unionid.as_ref(), now)
        .await?
        .ok_or(ApiError::Unauthorized(
            "the user of this session no longer exists",
        ))?;
    Ok(Json(MeView::new(&user, app_id.as_str(), openid.as_str())))
}

/// The session_key to decrypt with: a fresh one from `code` (stored on the session), or the
/// session's own.
async fn session_key_for(
    state: &AppState,
    app: &AppCredentials,
    session: &Session,
    openid: &OpenId,
    code: Option<String>,
) -> Result<SessionKey, ApiError> {
    match code {
        Some(code) => {
            let code = JsCode::parse(code)
                .map_err(|err| ApiError::InvalidRequest(err.to_string().into()))?;
            let fresh = state.wechat.code2session(app, &code).await?;
            if &fresh.openid != openid {
                return Err(ApiError::IdentityMismatch);
            }
            let sealed = state.data_key.seal(&fresh.session_key, &session.id);
            state
                .stores
                .sessions
                .set_session_key(&session.id, &sealed)
                .await?;
            Ok(fresh.session_key)
        }
        None => state
            .data_key
            .open(&session.sealed_session_key, &session.id)
            .map_err(|err| {
                // Only a changed data key gets here; a new code heals it like a rotated key.
                tracing::warn!(session_id = %session.id, error = %err, "cannot open session_key");
                ApiError::OpenData(crypto::DecryptError::Decrypt)
            }),
    }
}

/// The profile fields worth storing from decrypted user info.
fn profile_update(info: UserInfo, current: &User) -> ProfileUpdate {
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let nickname = non_empty(info.nick_name)
        .filter(|n| !(n == ANONYMOUS_NICKNAME && current.nickname.is_some()))
        .map(|n| n.chars().take(64).collect());
    ProfileUpdate {
        nickname,
        avatar_url: non_empty(info.avatar_url).filter(|u| u.len() <= 1024),
        gender: info.gender.filter(|g| (0..=2).contains(g)),
        city: non_empty(info.city),
        province: non_empty(info.province),
        country: non_empty(info.country),
        language: non_empty(info.language),
    }
}
