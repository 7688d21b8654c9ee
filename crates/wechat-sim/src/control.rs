//! The control API under `/sim/`: plays the mini-program side (`wx.login`, `getUserInfo`, the
//! getPhoneNumber button), sets people up, moves the clock, injects faults and reports
//! statistics.
//!
//! JSON in and out; errors are 400 or 404 with `{"error": "plain message"}`. Bodies are read
//! as JSON whatever their content type, so `curl -d '{...}'` works without a header.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wxauth_wechat::{OpenId, SessionKey, UnionId, crypto};

use crate::faults::{Fault, FaultSpec, StatsSnapshot};
use crate::people::{Phone, ProfilePatch};
use crate::state::{PersonUpdate, PersonView, Sim};

/// The longest simulated user name accepted.
const MAX_USER_LEN: usize = 256;

/// A refused control call: a status and a plain message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    /// 400, 404 (or 413 for an oversized body).
    pub status: StatusCode,
    /// What is wrong, in plain words.
    pub message: String,
}

impl ControlError {
    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// A JSON body whose rejection is a [`ControlError`], read whatever the content type.
#[derive(Debug, Clone)]
pub struct ControlJson<T>(pub T);

impl<S, T> FromRequest<S> for ControlJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ControlError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ControlError {
                status: rejection.status(),
                message: rejection.body_text(),
            })?;
        serde_json::from_slice(&bytes)
            .map(ControlJson)
            .map_err(|e| ControlError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// The control routes.
pub fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/sim/users", post(upsert_user))
        .route("/sim/login", post(login))
        .route("/sim/userinfo", post(user_info))
        .route("/sim/phone", post(phone))
        .route("/sim/faults", post(add_fault).delete(clear_faults))
        .route("/sim/stats", axum::routing::get(stats).delete(reset_stats))
        .route("/sim/time", axum::routing::get(time).post(advance_time))
}

fn check_user(user: &str) -> Result<(), ControlError> {
    if user.is_empty() {
        return Err(ControlError::bad_request("user must not be empty"));
    }
    if user.chars().count() > MAX_USER_LEN {
        return Err(ControlError::bad_request(format!(
            "user must be at most {MAX_USER_LEN} characters"
        )));
    }
    Ok(())
}

fn ok() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "ok": true }))
}

/// `POST /sim/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertUser {
    appid: String,
    user: String,
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
    profile: Option<ProfilePatch>,
    phone: Option<serde_json::Value>,
}

async fn upsert_user(
    State(sim): State<Arc<Sim>>,
    ControlJson(req): ControlJson<UpsertUser>,
) -> Result<axum::Json<PersonView>, ControlError> {
    check_user(&req.user)?;
    let bad = |e: wxauth_wechat::ParseError| ControlError::bad_request(e.to_string());
    let update = PersonUpdate {
        openid: req.openid.map(OpenId::parse).transpose().map_err(bad)?,
        session_key: req
            .session_key
            .map(SessionKey::parse)
            .transpose()
            .map_err(|e| {
                ControlError::bad_request(format!("{e}: it must be 16 bytes in base64"))
            })?,
        unionid: req.unionid.map(UnionId::parse).transpose().map_err(bad)?,
        profile: req
            .profile
            .map(|patch| patch.validate().map(|()| patch))
            .transpose()
            .map_err(ControlError::bad_request)?,
        phone: req
            .phone
            .as_ref()
            .map(Phone::from_json)
            .transpose()
            .map_err(ControlError::bad_request)?,
    };
    sim.upsert_person(&req.appid, &req.user, update)
        .map(axum::Json)
}

/// `POST /sim/login`, `{"appid","user"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Who {
    appid: String,
    user: String,
}

#[derive(Debug, Serialize)]
struct LoginAnswer {
    code: String,
}

async fn login(
    State(sim): State<Arc<Sim>>,
    ControlJson(req): ControlJson<Who>,
) -> Result<axum::Json<LoginAnswer>, ControlError> {
    check_user(&req.user)?;
    let code = sim.login(&req.appid, &req.user)?;
    Ok(axum::Json(LoginAnswer { code }))
}

/// `POST /sim/userinfo`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserInfoRequest {
    appid: String,
    user: String,
    profile: Option<ProfilePatch>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserInfoAnswer {
    encrypted_data: String,
    iv: String,
    raw_data: String,
    signature: String,
}

async fn user_info(
    State(sim): State<Arc<Sim>>,
    ControlJson(req): ControlJson<UserInfoRequest>,
) -> Result<axum::Json<UserInfoAnswer>, ControlError> {
    /// The decrypted form, in the field order of WeChat's published sample.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Plain<'a> {
        open_id: &'a str,
        #[serde(flatten)]
        profile: &'a crate::people::Profile,
        #[serde(skip_serializing_if = "Option::is_none")]
        union_id: Option<&'a str>,
        watermark: &'a crate::state::Watermark,
    }
    check_user(&req.user)?;
    if let Some(patch) = &req.profile {
        patch.validate().map_err(ControlError::bad_request)?;
    }
    let m = sim.user_info(&req.appid, &req.user, req.profile.as_ref())?;
    let raw_data = to_json(&m.profile)?;
    let plain = to_json(&Plain {
        open_id: &m.openid,
        profile: &m.profile,
        union_id: m.unionid.as_deref(),
        watermark: &m.watermark,
    })?;
    let iv: [u8; 16] = rand::random();
    Ok(axum::Json(UserInfoAnswer {
        encrypted_data: crypto::encrypt(&m.session_key, &iv, plain.as_bytes()),
        iv: crypto::encode_iv(&iv),
        signature: crypto::raw_data_signature(&raw_data, &m.session_key),
        raw_data,
    }))
}

/// `POST /sim/phone`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneRequest {
    appid: String,
    user: String,
    phone: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PhoneAnswer {
    code: String,
    encrypted_data: String,
    iv: String,
}

async fn phone(
    State(sim): State<Arc<Sim>>,
    ControlJson(req): ControlJson<PhoneRequest>,
) -> Result<axum::Json<PhoneAnswer>, ControlError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Plain<'a> {
        #[serde(flatten)]
        phone: &'a Phone,
        watermark: &'a crate::state::Watermark,
    }
    check_user(&req.user)?;
    let phone = req
        .phone
        .as_ref()
        .map(Phone::from_json)
        .transpose()
        .map_err(ControlError::bad_request)?;
    let m = sim.press_phone_button(&req.appid, &req.user, phone)?;
    let plain = to_json(&Plain {
        phone: &m.phone,
        watermark: &m.watermark,
    })?;
    let iv: [u8; 16] = rand::random();
    Ok(axum::Json(PhoneAnswer {
        code: m.code,
        encrypted_data: crypto::encrypt(&m.session_key, &iv, plain.as_bytes()),
        iv: crypto::encode_iv(&iv),
    }))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, ControlError> {
    serde_json::to_string(value).map_err(|e| ControlError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot serialize: {e}"),
    })
}

async fn add_fault(
    State(sim): State<Arc<Sim>>,
    ControlJson(spec): ControlJson<FaultSpec>,
) -> Result<axum::Json<serde_json::Value>, ControlError> {
    let (path, fault, times) = Fault::from_spec(spec).map_err(ControlError::bad_request)?;
    sim.faults.push(path, fault, times);
    Ok(ok())
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> axum::Json<serde_json::Value> {
    sim.faults.clear();
    ok()
}

async fn stats(State(sim): State<Arc<Sim>>) -> axum::Json<StatsSnapshot> {
    axum::Json(sim.stats.snapshot())
}

async fn reset_stats(State(sim): State<Arc<Sim>>) -> axum::Json<serde_json::Value> {
    sim.stats.reset();
    ok()
}

/// `POST /sim/time`, `{"advance_secs": N}` with N >= 0.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceTime {
    advance_secs: u64,
}

async fn time(State(sim): State<Arc<Sim>>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "now": sim.clock.now() }))
}

async fn advance_time(
    State(sim): State<Arc<Sim>>,
    ControlJson(req): ControlJson<AdvanceTime>,
) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "now": sim.clock.advance(req.advance_secs) }))
}
