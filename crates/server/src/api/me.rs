//! The logged-in user: the profile (`GET`/`PATCH /v1/me`), open-data decryption
//! (`POST /v1/me/userinfo`), the phone number (`POST /v1/me/phone`) and the avatar
//! (`POST /v1/me/avatar`, served back under `/media/`).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Multipart, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use wxauth_wechat::crypto::{self, DecryptError, WatermarkCheck};
use wxauth_wechat::{
    AppCredentials, AppId, JsCode, OpenId, PhoneInfo, SessionKey, UnionId, UserInfo,
};

use super::views::MeView;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use crate::state::AppState;
use crate::store::{ProfileUpdate, Session, User};
use crate::tokens::random_id;

/// WeChat's anonymous nickname since 2022: not worth overwriting a real one with.
const ANONYMOUS_NICKNAME: &str = "微信用户";
/// Largest `extra` object, serialized.
const EXTRA_MAX_BYTES: usize = 4096;

/// The `/v1/me` routes. The avatar route takes larger bodies than the JSON ones.
pub fn router(avatar_max_bytes: usize) -> Router<AppState> {
    Router::new()
        // Mini programs' wx.request cannot send PATCH: POST does the same.
        .route("/v1/me", get(me).patch(update).post(update))
        .route("/v1/me/userinfo", post(userinfo))
        .route("/v1/me/phone", post(phone))
        .route(
            "/v1/me/avatar",
            // Room for the multipart envelope around the file.
            post(avatar).layer(DefaultBodyLimit::max(avatar_max_bytes + 16 * 1024)),
        )
}

/// The session's identity, parsed back from the store.
pub(crate) fn identity(session: &Session) -> Result<(AppId, OpenId), ApiError> {
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

/// `?include=phone` shows the phone number unmasked.
#[derive(Debug, Default, Deserialize)]
pub struct MeQuery {
    /// Comma-separated extras to include; `phone` is the only one.
    #[serde(default)]
    pub include: Option<String>,
}

impl MeQuery {
    fn phone(&self) -> bool {
        self.include
            .as_deref()
            .is_some_and(|v| v.split(',').any(|part| part.trim() == "phone"))
    }
}

/// The user as the API shows it, with identities.
async fn view(
    state: &AppState,
    user: &User,
    app_id: &AppId,
    openid: &OpenId,
    query: &MeQuery,
) -> Result<Json<MeView>, ApiError> {
    let identities = state.stores.users.identities(&user.id).await?;
    Ok(Json(MeView::new(
        user,
        &identities,
        app_id.as_str(),
        openid.as_str(),
        query.phone(),
    )))
}

/// Applies an update to the session's person and shows the result.
async fn apply(
    state: &AppState,
    session: &Session,
    update: &ProfileUpdate,
    unionid: Option<&UnionId>,
    query: &MeQuery,
) -> Result<Json<MeView>, ApiError> {
    let (app_id, openid) = identity(session)?;
    let user = state
        .stores
        .users
        .update_profile(&app_id, &openid, update, unionid, state.now())
        .await?
        .ok_or(ApiError::Unauthorized(
            "the user of this session no longer exists",
        ))?;
    view(state, &user, &app_id, &openid, query).await
}

async fn me(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
) -> Result<Json<MeView>, ApiError> {
    let (app_id, openid) = identity(&session)?;
    let user = current_user(&state, &app_id, &openid).await?;
    view(&state, &user, &app_id, &openid, &query).await
}

/// `PATCH /v1/me` body: the fields a user sets (the avatar/nickname fill-in components).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    /// 1 to 64 characters, no control characters.
    #[serde(default)]
    pub nickname: Option<String>,
    /// An http(s) URL.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    #[serde(default)]
    pub gender: Option<i64>,
    /// A JSON object of the app's own fields, at most 4 KiB; replaces the stored one.
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
}

impl ProfilePatch {
    /// Checks every field, naming the first bad one.
    pub fn validate(self) -> Result<ProfileUpdate, ApiError> {
        let bad = |message: &'static str| ApiError::InvalidRequest(message.into());
        if let Some(nickname) = &self.nickname {
            let count = nickname.chars().count();
            if nickname.trim().is_empty() || count > 64 {
                return Err(bad("nickname must be 1 to 64 characters"));
            }
            if nickname.chars().any(char::is_control) {
                return Err(bad("nickname must not contain control characters"));
            }
        }
        if let Some(url) = &self.avatar_url {
            let ok = url.len() <= 1024
                && url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(bad(
                    "avatar_url must be an http(s) URL of at most 1024 characters",
                ));
            }
        }
        if let Some(gender) = self.gender
            && !(0..=2).contains(&gender)
        {
            return Err(bad("gender must be 0 (unknown), 1 or 2"));
        }
        let extra = match self.extra {
            None => None,
            Some(value @ serde_json::Value::Object(_)) => {
                let text = value.to_string();
                if text.len() > EXTRA_MAX_BYTES {
                    return Err(bad("extra must be at most 4 KiB of JSON"));
                }
                Some(text)
            }
            Some(_) => return Err(bad("extra must be a JSON object")),
        };
        Ok(ProfileUpdate {
            nickname: self.nickname,
            avatar_url: self.avatar_url,
            gender: self.gender,
            extra,
            ..ProfileUpdate::default()
        })
    }
}

async fn update(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
    ApiJson(patch): ApiJson<ProfilePatch>,
) -> Result<Json<MeView>, ApiError> {
    let update = patch.validate()?;
    apply(&state, &session, &update, None, &query).await
}

/// `POST /v1/me/userinfo` body: what `wx.getUserInfo` gives, in snake_case or as WeChat names
/// it, plus an optional fresh `wx.login` code. No `Debug`: the code is a credential.
#[derive(Deserialize)]
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

fn watermark_check<'a>(state: &AppState, app: &'a AppCredentials) -> WatermarkCheck<'a> {
    let check = WatermarkCheck::new(&app.app_id);
    match state.watermark_max_age {
        Some(max_age) => check.max_age(state.now(), max_age),
        None => check,
    }
}

async fn userinfo(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
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
    let info: UserInfo = crypto::decrypt_user_info(
        &session_key,
        &request.encrypted_data,
        &request.iv,
        &watermark_check(&state, app),
    )?;
    if info
        .open_id
        .as_deref()
        .is_some_and(|id| id != openid.as_str())
    {
        return Err(ApiError::OpenIdMismatch);
    }
    if let (Some(raw), Some(signature)) = (&request.raw_data, &request.signature)
        && !crypto::verify_raw_data_signature(raw, signature, &session_key)
    {
        return Err(ApiError::BadSignature);
    }

    let current = current_user(&state, &app_id, &openid).await?;
    let unionid = info.union_id.clone().and_then(|u| UnionId::parse(u).ok());
    let update = profile_update(info, &current);
    apply(&state, &session, &update, unionid.as_ref(), &query).await
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
            let fresh = super::auth::exchange_code(state, app, &code).await?;
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
        None => session_key_of(state, session).ok_or(ApiError::OpenData(DecryptError::Decrypt)),
    }
}

/// The session's own session_key; `None` only when the data key changed since it was sealed
/// (a fresh code heals that, as it heals a rotated key).
pub(crate) fn session_key_of(state: &AppState, session: &Session) -> Option<SessionKey> {
    match state
        .data_key
        .open(&session.sealed_session_key, &session.id)
    {
        Ok(key) => Some(key),
        Err(err) => {
            tracing::warn!(session_id = %session.id, error = %err, "cannot open session_key");
            None
        }
    }
}

/// The profile fields worth storing from decrypted user info.
fn profile_update(info: UserInfo, current: &User) -> ProfileUpdate {
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let nickname = non_empty(info.nick_name)
        .filter(|n| !(n == ANONYMOUS_NICKNAME && current.nickname.is_some()))
        .map(|n| n.chars().filter(|c| !c.is_control()).take(64).collect());
    ProfileUpdate {
        nickname,
        avatar_url: non_empty(info.avatar_url).filter(|u| u.len() <= 1024),
        gender: info.gender.filter(|g| (0..=2).contains(g)),
        city: non_empty(info.city),
        province: non_empty(info.province),
        country: non_empty(info.country),
        language: non_empty(info.language),
        ..ProfileUpdate::default()
    }
}

/// `POST /v1/me/phone` body: the getPhoneNumber button's `code` (current API), or its
/// `encryptedData` and `iv` (legacy). No `Debug`: the code is a credential.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneRequest {
    /// The button's code (5 minutes, single use).
    #[serde(default)]
    pub code: Option<String>,
    /// Legacy: encryptedData.
    #[serde(default, alias = "encryptedData")]
    pub encrypted_data: Option<String>,
    /// Legacy: iv.
    #[serde(default)]
    pub iv: Option<String>,
}

async fn phone(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
    ApiJson(request): ApiJson<PhoneRequest>,
) -> Result<Json<MeView>, ApiError> {
    let (app_id, _) = identity(&session)?;
    let app = state.app(Some(app_id.as_str()))?;
    let info: PhoneInfo = match request {
        PhoneRequest {
            code: Some(code),
            encrypted_data: None,
            iv: None,
        } => {
            let code = JsCode::parse(code)
                .map_err(|err| ApiError::InvalidRequest(err.to_string().into()))?;
            let info = state.wechat.phone_number(app, code.as_str()).await?;
            if info.watermark.appid != app.app_id.as_str() {
                return Err(ApiError::OpenData(DecryptError::WatermarkMismatch));
            }
            info
        }
        PhoneRequest {
            code: None,
            encrypted_data: Some(data),
            iv: Some(iv),
        } => {
            let key = session_key_of(&state, &session)
                .ok_or(ApiError::OpenData(DecryptError::Decrypt))?;
            crypto::decrypt_phone_info(&key, &data, &iv, &watermark_check(&state, app))?
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "send either code, or encrypted_data and iv".into(),
            ));
        }
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(&info.pure_phone_number) || !digits(&info.country_code) {
        return Err(ApiError::OpenData(DecryptError::Malformed));
    }
    let update = ProfileUpdate {
        phone_country_code: Some(info.country_code),
        phone_number: Some(info.pure_phone_number),
        ..ProfileUpdate::default()
    };
    apply(&state, &session, &update, None, &query).await
}

/// Image formats accepted for avatars, recognised by their first bytes.
fn image_extension(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

async fn avatar(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
    request: Request,
) -> Result<Json<MeView>, ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = if content_type.starts_with("multipart/form-data") {
        file_field(
            Multipart::from_request(request, &state)
                .await
                .map_err(|err| {
                    ApiError::InvalidRequest(
                        format!("the multipart body is not valid: {err}").into(),
                    )
                })?,
        )
        .await?
    } else if content_type.starts_with("image/") {
        Bytes::from_request(request, &state)
            .await
            .map_err(|err| body_error(err.status()))?
    } else {
        return Err(ApiError::UnsupportedMediaType);
    };
    if bytes.len() > state.media.max_bytes {
        return Err(ApiError::PayloadTooLarge);
    }
    let extension = image_extension(&bytes).ok_or(ApiError::NotAnImage)?;
    let name = format!("{}.{extension}", random_id());
    let dir = state.media.dir.join("avatars");
    store_file(&dir, &name, &bytes).await?;
    let url = media_url(&state.media.public_url, &name)?;
    let update = ProfileUpdate {
        avatar_url: Some(url.to_string()),
        ..ProfileUpdate::default()
    };
    apply(&state, &session, &update, None, &query).await
}

/// The public link of an avatar, under the service's public URL (whatever path it has).
fn media_url(public_url: &url::Url, name: &str) -> Result<url::Url, ApiError> {
    let mut base = public_url.clone();
    if !base.path().ends_with('/') {
        // Without the slash, joining would replace the last segment of the path.
        base.set_path(&format!("{}/", base.path()));
    }
    Ok(base
        .join(&format!("media/avatars/{name}"))
        .map_err(anyhow::Error::from)?)
}

/// The bytes of the form field `file`, as `wx.uploadFile` sends it.
async fn file_field(mut multipart: Multipart) -> Result<Bytes, ApiError> {
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|err| body_error(err.status()))?;
        let Some(field) = field else {
            return Err(ApiError::InvalidRequest(
                "the multipart body has no field named file".into(),
            ));
        };
        if field.name() == Some("file") {
            return field.bytes().await.map_err(|err| body_error(err.status()));
        }
    }
}

fn body_error(status: axum::http::StatusCode) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::InvalidRequest("the upload could not be read".into())
    }
}

/// Writes a file whole or not at all: to a temporary name, then renamed.
async fn store_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Result<(), ApiError> {
    use anyhow::Context as _;
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("Failed to create {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, bytes)
        .await
        .with_context(|| format!("Failed to write {}", tmp.display()))?;
    tokio::fs::rename(&tmp, dir.join(name))
        .await
        .with_context(|| format!("Failed to store the avatar in {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::media_url;

    #[test]
    fn avatar_links_keep_the_public_urls_path() {
        let at = |base: &str| {
            media_url(&url::Url::parse(base).unwrap(), "a.png")
                .unwrap()
                .to_string()
        };
        assert_eq!(at("https://x.cn"), "https://x.cn/media/avatars/a.png");
        assert_eq!(
            at("https://x.cn/auth"),
            "https://x.cn/auth/media/avatars/a.png"
        );
        assert_eq!(
            at("https://x.cn/auth/"),
            "https://x.cn/auth/media/avatars/a.png"
        );
    }
}
