//! People: profiles set by the user (validated), from WeChat's open data (decrypted and
//! checked), the phone number, the avatar; and the rule for merging two persons found to be
//! one.

use axum::body::Bytes;
use serde::Deserialize;
use wxauth_wechat::crypto::{self, DecryptError, WatermarkCheck};
use wxauth_wechat::{AppCredentials, JsCode, PhoneInfo, SessionKey, UnionId, UserInfo};

use super::login;
use super::sessions::{self, Caller};
use crate::error::ApiError;
use crate::model::{Identity, Merge, Phone, ProfileUpdate, User};
use crate::state::AppState;
use crate::tokens::random_id;

/// WeChat's anonymous nickname since 2022: not worth overwriting a real one with.
const ANONYMOUS_NICKNAME: &str = "微信用户";
/// Largest `extra` object, serialized.
const EXTRA_MAX_BYTES: usize = 4096;
/// The columns' sizes, in characters: WeChat's data is cut to fit (a strict MySQL refuses an
/// overlong value, and no real city or language name comes near).
const PLACE_MAX_CHARS: usize = 255;
const LANGUAGE_MAX_CHARS: usize = 64;
const NICKNAME_MAX_CHARS: usize = 64;
/// Phone parts are refused beyond their columns (a cut number would be a wrong one).
const PHONE_COUNTRY_CODE_MAX_DIGITS: usize = 8;
const PHONE_NUMBER_MAX_DIGITS: usize = 32;

/// `text` without control characters, cut to at most `max` characters; `None` when nothing
/// is left.
fn fit(text: Option<String>, max: usize) -> Option<String> {
    let text = text?;
    if text.chars().count() <= max && !text.chars().any(char::is_control) {
        return Some(text).filter(|t| !t.trim().is_empty());
    }
    let fitted: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    Some(fitted).filter(|t| !t.trim().is_empty())
}

/// A person with every identity they have.
pub struct Profiled {
    /// The person.
    pub user: User,
    /// Their identities, oldest first.
    pub identities: Vec<Identity>,
}

/// The caller's person and identities.
pub async fn profile(state: &AppState, caller: &Caller) -> Result<Profiled, ApiError> {
    with_identities(state, caller.user.clone()).await
}

async fn with_identities(state: &AppState, user: User) -> Result<Profiled, ApiError> {
    let identities = state.stores.users.identities(&user.id).await?;
    Ok(Profiled { user, identities })
}

/// Applies an update to the caller's person (linking a unionid seen in open data) and shows
/// the result.
async fn apply(
    state: &AppState,
    caller: &Caller,
    update: &ProfileUpdate,
    unionid: Option<&UnionId>,
) -> Result<Profiled, ApiError> {
    // The same profile sent again (a client's on every launch): the person as this request
    // read it answers, without another read or a write. The read and a concurrent update race
    // as two updates would.
    if update.leaves(&caller.user, unionid) {
        return profile(state, caller).await;
    }
    let principal = &caller.principal;
    let user = state
        .stores
        .users
        .update_profile(
            &principal.app_id,
            &principal.openid,
            update,
            unionid,
            state.now(),
            merge,
        )
        .await?
        .ok_or(ApiError::Unauthorized(
            "the user of this session no longer exists",
        ))?;
    // A new avatar (uploaded, set by URL or from WeChat's data) replaces the stored file.
    let previous = caller.user.profile.avatar_url.as_deref();
    if update.avatar_url.is_some() && update.avatar_url.as_deref() != previous {
        remove_own_avatar(state, previous).await;
    }
    with_identities(state, user).await
}

/// `PATCH /v1/me` body: the fields a user sets (the avatar/nickname fill-in components).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
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

/// Sets what the user filled in.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    patch: ProfilePatch,
) -> Result<Profiled, ApiError> {
    let update = patch.validate()?;
    apply(state, caller, &update, None).await
}

/// `POST /v1/me/userinfo` body: what `wx.getUserInfo` gives, in snake_case or as WeChat names
/// it, plus an optional fresh `wx.login` code. No `Debug`: the code is a credential.
#[derive(Deserialize, utoipa::ToSchema)]
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

/// Decrypts `wx.getUserInfo` data with the caller's session_key (or a fresh one from `code`),
/// checks it, and updates the profile (linking a unionid found there).
pub async fn user_info(
    state: &AppState,
    caller: &Caller,
    request: UserInfoRequest,
) -> Result<Profiled, ApiError> {
    let app = state.configured_app(&caller.principal.app_id)?;
    if request.raw_data.is_some() != request.signature.is_some() {
        return Err(ApiError::InvalidRequest(
            "send raw_data and signature together, or neither".into(),
        ));
    }
    let session_key = session_key_for(state, app, caller, request.code).await?;
    let info: UserInfo = crypto::decrypt_user_info(
        &session_key,
        &request.encrypted_data,
        &request.iv,
        &watermark_check(state, app),
    )?;
    if info
        .open_id
        .as_deref()
        .is_some_and(|id| id != caller.principal.openid.as_str())
    {
        return Err(ApiError::OpenIdMismatch);
    }
    if let (Some(raw), Some(signature)) = (&request.raw_data, &request.signature)
        && !crypto::verify_raw_data_signature(raw, signature, &session_key)
    {
        return Err(ApiError::BadSignature);
    }
    // A unionId in the data links (and may merge) persons only when the data also names this
    // session's openid: data without an openId cannot show whose unionId it is.
    let unionid = info
        .union_id
        .clone()
        .filter(|_| info.open_id.as_deref() == Some(caller.principal.openid.as_str()))
        .and_then(|u| UnionId::parse(u).ok());
    let update = profile_update(info, &caller.user);
    apply(state, caller, &update, unionid.as_ref()).await
}

/// The session_key to decrypt with: a fresh one from `code` (kept on the session), or the
/// session's own.
async fn session_key_for(
    state: &AppState,
    app: &AppCredentials,
    caller: &Caller,
    code: Option<String>,
) -> Result<SessionKey, ApiError> {
    let Some(code) = code else {
        return sessions::session_key(state, &caller.session)
            .ok_or(ApiError::OpenData(DecryptError::Decrypt));
    };
    let code =
        JsCode::parse(code).map_err(|err| ApiError::InvalidRequest(err.to_string().into()))?;
    let fresh = login::exchange_code(state, app, &code).await?;
    if fresh.openid != caller.principal.openid {
        return Err(ApiError::IdentityMismatch);
    }
    sessions::set_session_key(state, &caller.session, &fresh.session_key).await?;
    Ok(fresh.session_key)
}

/// The profile fields worth storing from decrypted user info.
fn profile_update(info: UserInfo, current: &User) -> ProfileUpdate {
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let nickname = fit(info.nick_name, NICKNAME_MAX_CHARS)
        .filter(|n| !(n == ANONYMOUS_NICKNAME && current.profile.nickname.is_some()));
    ProfileUpdate {
        nickname,
        avatar_url: non_empty(info.avatar_url).filter(|u| u.len() <= 1024),
        gender: info.gender.filter(|g| (0..=2).contains(g)),
        city: fit(info.city, PLACE_MAX_CHARS),
        province: fit(info.province, PLACE_MAX_CHARS),
        country: fit(info.country, PLACE_MAX_CHARS),
        language: fit(info.language, LANGUAGE_MAX_CHARS),
        ..ProfileUpdate::default()
    }
}

/// `POST /v1/me/phone` body: the getPhoneNumber button's `code` (current API), or its
/// `encryptedData` and `iv` (legacy). No `Debug`: the code is a credential.
#[derive(Deserialize, utoipa::ToSchema)]
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

/// Binds the phone number from the getPhoneNumber button.
pub async fn phone(
    state: &AppState,
    caller: &Caller,
    request: PhoneRequest,
) -> Result<Profiled, ApiError> {
    let app = state.configured_app(&caller.principal.app_id)?;
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
            let key = sessions::session_key(state, &caller.session)
                .ok_or(ApiError::OpenData(DecryptError::Decrypt))?;
            crypto::decrypt_phone_info(&key, &data, &iv, &watermark_check(state, app))?
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "send either code, or encrypted_data and iv".into(),
            ));
        }
    };
    if !phone_parts_fit(&info.country_code, &info.pure_phone_number) {
        return Err(ApiError::OpenData(DecryptError::Malformed));
    }
    let update = ProfileUpdate {
        phone: Some(Phone {
            country_code: info.country_code,
            number: info.pure_phone_number,
        }),
        ..ProfileUpdate::default()
    };
    apply(state, caller, &update, None).await
}

/// Whether a phone number's parts are digits that fit their columns.
fn phone_parts_fit(country_code: &str, number: &str) -> bool {
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    digits(country_code, PHONE_COUNTRY_CODE_MAX_DIGITS) && digits(number, PHONE_NUMBER_MAX_DIGITS)
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

/// Largest upload decoded, in pixels a side: anything larger is refused before its pixels are
/// allocated.
const AVATAR_MAX_DECODED_SIDE: u32 = 4096;
/// Largest avatar stored, in pixels a side (WeChat's own are 132 or 640): larger ones are
/// scaled down.
const AVATAR_MAX_SIDE: u32 = 640;
/// Most memory one decode may take.
const AVATAR_MAX_DECODE_BYTES: u64 = 128 << 20;

/// Decodes an upload whole and encodes it again, upright by its EXIF orientation and at most
/// [`AVATAR_MAX_SIDE`] a side: what is stored is pixels only, never the bytes sent (no
/// metadata, no GPS position of a phone photo, nothing appended to or hidden in the file).
/// JPEG stays JPEG; PNG and WebP become PNG. Returns the file and its extension.
fn reencode_avatar(bytes: &[u8]) -> Result<(Vec<u8>, &'static str), ApiError> {
    use image::{DynamicImage, ImageDecoder as _, ImageError, ImageFormat, ImageReader, Limits};
    let format = match image_extension(bytes).ok_or(ApiError::NotAnImage)? {
        "png" => ImageFormat::Png,
        "jpg" => ImageFormat::Jpeg,
        _ => ImageFormat::WebP,
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(AVATAR_MAX_DECODED_SIDE);
    limits.max_image_height = Some(AVATAR_MAX_DECODED_SIDE);
    limits.max_alloc = Some(AVATAR_MAX_DECODE_BYTES);
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    reader.limits(limits);
    let refused = |err: ImageError| match err {
        ImageError::Limits(_) => ApiError::InvalidImage(
            "the image is larger than 4096 pixels a side; send a smaller one",
        ),
        _ => ApiError::InvalidImage("the image is damaged or incomplete and cannot be decoded"),
    };
    let mut decoder = reader.into_decoder().map_err(refused)?;
    let orientation = decoder.orientation().map_err(refused)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(refused)?;
    image.apply_orientation(orientation);
    if image.width() > AVATAR_MAX_SIDE || image.height() > AVATAR_MAX_SIDE {
        image = image.thumbnail(AVATAR_MAX_SIDE, AVATAR_MAX_SIDE);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    let extension = if format == ImageFormat::Jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        DynamicImage::ImageRgb8(image.to_rgb8())
            .write_with_encoder(encoder)
            .map_err(anyhow::Error::from)?;
        "jpg"
    } else {
        image
            .write_to(&mut out, ImageFormat::Png)
            .map_err(anyhow::Error::from)?;
        "png"
    };
    Ok((out.into_inner(), extension))
}

/// The file name of one of this service's avatars, from its URL (`None` for any other URL).
fn own_avatar_name(public_url: &url::Url, avatar_url: &str) -> Option<String> {
    let prefix = media_url(public_url, "").ok()?;
    let name = avatar_url.strip_prefix(prefix.as_str())?;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    plain.then(|| name.to_owned())
}

/// Deletes the avatar file a new avatar replaced, when it was one of this service's.
pub(crate) async fn remove_own_avatar(state: &AppState, avatar_url: Option<&str>) {
    let Some(name) = avatar_url.and_then(|url| own_avatar_name(&state.media.public_url, url))
    else {
        return;
    };
    let path = state.media.dir.join("avatars").join(&name);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(file = %path.display(), error = %err, "cannot delete a replaced avatar")
        }
    }
}

/// Stores an uploaded avatar under the media directory and sets it as the caller's (the one
/// it replaces is deleted).
pub async fn avatar(state: &AppState, caller: &Caller, bytes: Bytes) -> Result<Profiled, ApiError> {
    if bytes.len() > state.media.max_bytes {
        return Err(ApiError::PayloadTooLarge);
    }
    // Decoding is CPU work: off the async workers.
    let (file, extension) = tokio::task::spawn_blocking(move || reencode_avatar(&bytes))
        .await
        .map_err(anyhow::Error::from)??;
    let name = format!("{}.{extension}", random_id());
    let dir = state.media.dir.join("avatars");
    store_file(&dir, &name, &file).await?;
    let url = media_url(&state.media.public_url, &name)?;
    let update = ProfileUpdate {
        avatar_url: Some(url.to_string()),
        ..ProfileUpdate::default()
    };
    apply(state, caller, &update, None).await
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

/// The merge rule: two persons found to hold one unionid become one. The older survives (by
/// creation time, then id, so that every instance decides alike); its non-empty profile
/// fields win and the other's fill the gaps; the phone moves as a pair; the survivor takes
/// the unionid.
pub fn merge(a: &User, b: &User, unionid: &UnionId, now: i64) -> Merge {
    let (survivor, merged) = if (a.created_at, &a.id) <= (b.created_at, &b.id) {
        (a, b)
    } else {
        (b, a)
    };
    let fill = |own: &Option<String>, other: &Option<String>| {
        own.clone()
            .filter(|v| !v.is_empty())
            .or_else(|| other.clone())
    };
    let (s, m) = (&survivor.profile, &merged.profile);
    let profile = crate::model::Profile {
        nickname: fill(&s.nickname, &m.nickname),
        avatar_url: fill(&s.avatar_url, &m.avatar_url),
        gender: if s.gender != 0 { s.gender } else { m.gender },
        city: fill(&s.city, &m.city),
        province: fill(&s.province, &m.province),
        country: fill(&s.country, &m.country),
        language: fill(&s.language, &m.language),
    };
    Merge {
        survivor: User {
            id: survivor.id.clone(),
            unionid: Some(unionid.clone()),
            profile,
            phone: survivor.phone.clone().or_else(|| merged.phone.clone()),
            extra: fill(&survivor.extra, &merged.extra),
            created_at: survivor.created_at,
            updated_at: now,
        },
        merged: merged.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Profile, UserId};

    #[test]
    fn decrypted_text_is_cut_to_its_column_by_characters() {
        let long = "深".repeat(300);
        let fitted = fit(Some(long), PLACE_MAX_CHARS).unwrap();
        assert_eq!(fitted.chars().count(), PLACE_MAX_CHARS);
        assert_eq!(fit(Some("Shen\u{0}zhen".into()), 255).unwrap(), "Shenzhen");
        assert_eq!(fit(Some("😀".repeat(70)), 64).unwrap().chars().count(), 64);
        assert_eq!(fit(Some("  ".into()), 64), None);
        assert_eq!(fit(None, 64), None);
    }

    #[test]
    fn phone_parts_are_refused_beyond_their_columns() {
        assert!(phone_parts_fit("86", "13812345678"));
        assert!(phone_parts_fit("12345678", &"1".repeat(32)));
        assert!(!phone_parts_fit("123456789", "13812345678"));
        assert!(!phone_parts_fit("86", &"1".repeat(33)));
        assert!(!phone_parts_fit("", "1"));
        assert!(!phone_parts_fit("86", "138-1234"));
    }

    fn person(id: &str, created_at: i64, profile: Profile, phone: Option<&str>) -> User {
        User {
            id: UserId::new(id),
            unionid: None,
            profile,
            phone: phone.map(|number| Phone {
                country_code: "86".to_owned(),
                number: number.to_owned(),
            }),
            extra: None,
            created_at,
            updated_at: created_at,
        }
    }

    fn unionid() -> UnionId {
        UnionId::parse("o6_bmasdasdsad6_2sgVt7hMZOPfL").unwrap()
    }

    #[test]
    fn the_older_person_survives_whichever_side_it_is_on() {
        let old = person("b", 100, Profile::default(), None);
        let new = person("a", 200, Profile::default(), None);
        for (x, y) in [(&old, &new), (&new, &old)] {
            let decided = merge(x, y, &unionid(), 300);
            assert_eq!(decided.survivor.id.as_str(), "b");
            assert_eq!(decided.merged.as_str(), "a");
            assert_eq!(decided.survivor.unionid, Some(unionid()));
            assert_eq!(decided.survivor.created_at, 100);
            assert_eq!(decided.survivor.updated_at, 300);
        }
    }

    #[test]
    fn persons_created_in_the_same_second_are_ordered_by_id() {
        let x = person("019a", 100, Profile::default(), None);
        let y = person("019b", 100, Profile::default(), None);
        assert_eq!(merge(&y, &x, &unionid(), 1).survivor.id.as_str(), "019a");
        assert_eq!(merge(&x, &y, &unionid(), 1).survivor.id.as_str(), "019a");
    }

    #[test]
    fn the_survivors_fields_win_and_the_others_fill_the_gaps() {
        let survivor = person(
            "s",
            1,
            Profile {
                nickname: Some("Old".to_owned()),
                city: Some(String::new()),
                gender: 0,
                ..Profile::default()
            },
            None,
        );
        let merged = person(
            "m",
            2,
            Profile {
                nickname: Some("New".to_owned()),
                city: Some("Shenzhen".to_owned()),
                gender: 2,
                language: Some("zh_CN".to_owned()),
                ..Profile::default()
            },
            Some("13800000000"),
        );
        let decided = merge(&survivor, &merged, &unionid(), 3).survivor;
        assert_eq!(decided.profile.nickname.as_deref(), Some("Old"));
        assert_eq!(decided.profile.city.as_deref(), Some("Shenzhen"));
        assert_eq!(decided.profile.gender, 2);
        assert_eq!(decided.profile.language.as_deref(), Some("zh_CN"));
        assert_eq!(
            decided.phone.map(|p| p.number).as_deref(),
            Some("13800000000")
        );
    }

    #[test]
    fn the_phone_moves_as_a_pair() {
        let mut survivor = person("s", 1, Profile::default(), Some("13900000000"));
        survivor.phone.as_mut().unwrap().country_code = "852".to_owned();
        let merged = person("m", 2, Profile::default(), Some("13800000000"));
        let phone = merge(&survivor, &merged, &unionid(), 3)
            .survivor
            .phone
            .unwrap();
        assert_eq!(
            (phone.country_code.as_str(), phone.number.as_str()),
            ("852", "13900000000")
        );
    }

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
