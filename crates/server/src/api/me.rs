//! The logged-in user: the profile (`GET`/`PATCH /v1/me`), open-data decryption
//! (`POST /v1/me/userinfo`), the phone number (`POST /v1/me/phone`) and the avatar
//! (`POST /v1/me/avatar`, served back under `/media/`), the data export (`GET /v1/me/export`)
//! and account deletion (`DELETE /v1/me`, `POST /v1/me/delete`). Parse, call the service,
//! answer.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Multipart, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use axum::http::StatusCode;

use super::views::{MeView, PersonView};
use crate::config::LimitedAction;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated, ClientAddr};
use crate::service::account;
use crate::service::audit::{Actor, Requester};
use crate::service::login::ClientMeta;
use crate::service::people::{self, PhoneRequest, ProfilePatch, Profiled, UserInfoRequest};
use crate::service::sessions::Caller;
use crate::state::AppState;

/// The `/v1/me` routes. The avatar route takes larger bodies than the JSON ones.
pub fn router(avatar_max_bytes: usize) -> Router<AppState> {
    Router::new()
        // Mini programs' wx.request cannot send PATCH: POST does the same.
        .route(
            "/v1/me",
            get(me)
                .patch(update)
                .post(update_by_post)
                .delete(delete_account),
        )
        // wx.request has no DELETE on every base library.
        .route("/v1/me/delete", post(delete_account_by_post))
        .route("/v1/me/export", get(export))
        .route("/v1/me/userinfo", post(userinfo))
        .route("/v1/me/phone", post(phone))
        .route(
            "/v1/me/avatar",
            // Room for the multipart envelope around the file.
            post(avatar).layer(DefaultBodyLimit::max(avatar_max_bytes + 16 * 1024)),
        )
}

/// `?include=phone` shows the phone number unmasked.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

/// The person as the caller's identity sees them.
fn view(caller: &Caller, profiled: &Profiled, query: &MeQuery) -> Json<MeView> {
    Json(MeView::new(
        &profiled.user,
        &profiled.identities,
        &caller.principal.app_id,
        &caller.principal.openid,
        query.phone(),
    ))
}

/// The caller's full profile, with every identity of the person.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "me",
    security(("user_token" = [])),
    params(MeQuery),
    responses((status = 200, description = "The profile", body = MeView)),
)]
pub(crate) async fn me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
) -> Result<Json<MeView>, ApiError> {
    let profiled = people::profile(&state, &caller).await?;
    Ok(view(&caller, &profiled, &query))
}

/// Sets the fields a user chooses: nickname, avatar URL, gender, the app's own `extra`.
#[utoipa::path(
    patch,
    path = "/v1/me",
    tag = "me",
    security(("user_token" = [])),
    params(MeQuery),
    request_body = ProfilePatch,
    responses((status = 200, description = "The updated profile", body = MeView)),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
    ApiJson(patch): ApiJson<ProfilePatch>,
) -> Result<Json<MeView>, ApiError> {
    let profiled = people::update(&state, &caller, patch).await?;
    Ok(view(&caller, &profiled, &query))
}

/// `PATCH /v1/me` as POST, for `wx.request`, which cannot send PATCH.
#[utoipa::path(
    post,
    path = "/v1/me",
    tag = "me",
    security(("user_token" = [])),
    params(MeQuery),
    request_body = ProfilePatch,
    responses((status = 200, description = "The updated profile", body = MeView)),
)]
pub(crate) async fn update_by_post(
    state: State<AppState>,
    caller: Authenticated,
    query: ApiQuery<MeQuery>,
    patch: ApiJson<ProfilePatch>,
) -> Result<Json<MeView>, ApiError> {
    update(state, caller, query, patch).await
}

/// Erases the caller's person whole (注销): afterwards nothing of it is readable, its tokens
/// are dead, and a later login of the same WeChat user makes a new person.
#[utoipa::path(
    delete,
    path = "/v1/me",
    tag = "me",
    security(("user_token" = [])),
    responses((status = 204, description = "The person is erased")),
)]
pub(crate) async fn delete_account(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: ClientMeta,
) -> Result<StatusCode, ApiError> {
    let by = Requester {
        actor: Actor::User,
        ip: meta.ip,
    };
    account::delete_person(&state, &caller.user.id, &by).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/me` as POST, for base libraries whose `wx.request` has no DELETE.
#[utoipa::path(
    post,
    path = "/v1/me/delete",
    tag = "me",
    security(("user_token" = [])),
    responses((status = 204, description = "The person is erased")),
)]
pub(crate) async fn delete_account_by_post(
    state: State<AppState>,
    caller: Authenticated,
    meta: ClientMeta,
) -> Result<StatusCode, ApiError> {
    delete_account(state, caller, meta).await
}

/// Everything stored about the caller's person, as JSON (PIPL's right of access).
#[utoipa::path(
    get,
    path = "/v1/me/export",
    tag = "me",
    security(("user_token" = [])),
    responses((status = 200, description = "The person's whole record", body = PersonView)),
)]
pub(crate) async fn export(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<PersonView>, ApiError> {
    let record = account::person_record(&state, &caller.user.id)
        .await?
        .ok_or(ApiError::Unauthorized(
            "the user of this session no longer exists",
        ))?;
    Ok(Json(PersonView::new(&record, state.now())))
}

/// Decrypts `wx.getUserInfo` data and stores the profile in it.
///
/// With `code` (a fresh `wx.login` code), the code is exchanged first so the data decrypts
/// with the newest session_key.
#[utoipa::path(
    post,
    path = "/v1/me/userinfo",
    tag = "me",
    security(("user_token" = [])),
    params(MeQuery),
    request_body = UserInfoRequest,
    responses((status = 200, description = "The updated profile", body = MeView)),
)]
pub(crate) async fn userinfo(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
    ApiJson(request): ApiJson<UserInfoRequest>,
) -> Result<Json<MeView>, ApiError> {
    limit(&state, LimitedAction::Userinfo, ip, &caller).await?;
    let profiled = people::user_info(&state, &caller, request).await?;
    Ok(view(&caller, &profiled, &query))
}

/// Binds the phone number from the getPhoneNumber button: its `code`, or (legacy)
/// `encrypted_data` and `iv`.
#[utoipa::path(
    post,
    path = "/v1/me/phone",
    tag = "me",
    security(("user_token" = [])),
    params(MeQuery),
    request_body = PhoneRequest,
    responses((status = 200, description = "The updated profile", body = MeView)),
)]
pub(crate) async fn phone(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
    ApiJson(request): ApiJson<PhoneRequest>,
) -> Result<Json<MeView>, ApiError> {
    limit(&state, LimitedAction::Phone, ip, &caller).await?;
    let profiled = people::phone(&state, &caller, request).await?;
    Ok(view(&caller, &profiled, &query))
}

/// Uploads the avatar (PNG, JPEG or WebP), as `wx.uploadFile` sends it (multipart, field
/// `file`) or as the bare image. It is decoded, re-encoded and served under `/media/`.
#[utoipa::path(
    post,
    path = "/v1/me/avatar",
    tag = "me",
    security(("user_token" = [])),
    params(MeQuery),
    request_body(
        description = "The image: a multipart form with the field `file`, or the image itself",
        content(
            (AvatarUpload = "multipart/form-data"),
            ("image/png"),
            ("image/jpeg"),
            ("image/webp"),
        ),
    ),
    responses((status = 200, description = "The updated profile", body = MeView)),
)]
pub(crate) async fn avatar(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<MeQuery>,
    request: Request,
) -> Result<Json<MeView>, ApiError> {
    // Before the upload is read.
    limit(&state, LimitedAction::Avatar, ip, &caller).await?;
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
    let profiled = people::avatar(&state, &caller, bytes).await?;
    Ok(view(&caller, &profiled, &query))
}

/// The multipart form of an avatar upload.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct AvatarUpload {
    /// The image file.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Takes a token from the caller's address's and app's buckets for `action`.
async fn limit(
    state: &AppState,
    action: LimitedAction,
    ip: Option<std::net::IpAddr>,
    caller: &Caller,
) -> Result<(), ApiError> {
    state
        .limiter
        .check(action, ip, Some(&caller.principal.app_id))
        .await
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
