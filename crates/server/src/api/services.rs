//! What the team's other services call: `POST /v1/introspect` (RFC 7662, for services with a
//! `[[services]]` credential) and `/v1/verify` (forward auth for nginx `auth_request`, Traefik
//! ForwardAuth, Caddy `forward_auth`, Envoy ext_authz).

use axum::extract::{FromRequest as _, Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Ref, Schema, Type};
use utoipa::{PartialSchema as _, ToSchema};

use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use crate::service::sessions::{self, Principal};
use crate::state::AppState;

/// The introspection and forward-auth routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/introspect", post(introspect))
        .route("/v1/verify", any(verify))
        // Envoy's ext_authz (HTTP mode) appends the original path to its path prefix.
        .route("/v1/verify/{*original}", any(verify_original))
}

/// An introspection request (form-encoded as RFC 7662 says, or JSON). No `Debug`: it holds a
/// token.
#[derive(Deserialize, ToSchema)]
pub struct IntrospectRequest {
    /// The token to look at.
    pub token: String,
    /// What the caller thinks it is ("access_token", "refresh_token"); only a hint.
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// RFC 7662's answer: `active` alone for anything but a live access token.
#[derive(Debug, Serialize)]
pub struct Introspection {
    /// Whether the token is a live access token of a live session.
    pub active: bool,
    /// The rest, when active.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub token: Option<ActiveToken>,
}

/// `{"active": false}`, or `{"active": true}` with the fields of [`ActiveToken`].
impl utoipa::PartialSchema for Introspection {
    fn schema() -> RefOr<Schema> {
        let active = |value: bool| {
            ObjectBuilder::new()
                .property(
                    "active",
                    ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .enum_values(Some([value]))
                        .description(Some(
                            "Whether the token is a live access token of a live session",
                        )),
                )
                .required("active")
        };
        OneOfBuilder::new()
            .item(active(false))
            .item(
                AllOfBuilder::new()
                    .item(active(true))
                    .item(Ref::from_schema_name(ActiveToken::name())),
            )
            .description(Some(
                "RFC 7662's answer: `active` alone for anything but a live access token",
            ))
            .into()
    }
}

impl ToSchema for Introspection {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ActiveToken::name().into_owned(), ActiveToken::schema()));
        ActiveToken::schemas(schemas);
    }
}

/// What introspection tells about a live token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveToken {
    /// The person's id.
    pub sub: String,
    /// The session.
    pub sid: String,
    /// The mini program.
    pub app_id: String,
    /// The client the token was issued to: the mini program.
    pub client_id: String,
    /// The openid in that mini program.
    pub openid: String,
    /// The person across mini programs, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// Always "Bearer".
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// The issuer.
    pub iss: String,
    /// The audiences.
    pub aud: Vec<String>,
}

impl ActiveToken {
    fn new(principal: Principal, state: &AppState) -> Self {
        let settings = state.keys.settings();
        Self {
            sub: principal.user_id.to_string(),
            sid: principal.session_id,
            app_id: principal.app_id.to_string(),
            client_id: principal.app_id.to_string(),
            openid: principal.openid.to_string(),
            unionid: principal.unionid.map(|u| u.to_string()),
            token_type: "Bearer",
            iat: principal.issued_at,
            exp: principal.expires_at,
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
        }
    }
}

/// RFC 7662 token introspection, for the team's services: whether a token is a live access
/// token, and whose.
///
/// The caller authenticates with its `[[services]]` credentials (HTTP Basic). Anything but a
/// live access token of a live session answers `{"active": false}`.
#[utoipa::path(
    post,
    path = "/v1/introspect",
    tag = "services",
    security(("service_credentials" = [])),
    request_body(content(
        (IntrospectRequest = "application/x-www-form-urlencoded"),
        (IntrospectRequest = "application/json"),
    )),
    responses((status = 200, description = "What the token is", body = Introspection)),
)]
pub(crate) async fn introspect(State(state): State<AppState>, request: Request) -> Response {
    if let Err(err) = authenticate_service(&state, request.headers()) {
        return err.into_response();
    }
    let body = match read_introspect_request(request).await {
        Ok(body) => body,
        Err(err) => return err.into_response(),
    };
    let answer = match sessions::resolve(&state, &body.token).await {
        Ok(caller) => Introspection {
            active: true,
            token: Some(ActiveToken::new(caller.principal, &state)),
        },
        // A store that cannot answer is not a "no": the caller should retry.
        Err(err @ ApiError::Store(_)) => return err.into_response(),
        Err(_) => Introspection {
            active: false,
            token: None,
        },
    };
    let mut response = Json(answer).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The body as a form (RFC 7662) or, when so labelled, JSON.
async fn read_introspect_request(request: Request) -> Result<IntrospectRequest, ApiError> {
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if is_json {
        let ApiJson(body) = ApiJson::<IntrospectRequest>::from_request(request, &()).await?;
        return Ok(body);
    }
    match Form::<IntrospectRequest>::from_request(request, &()).await {
        Ok(Form(body)) => Ok(body),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::PayloadTooLarge)
        }
        Err(rejection) if rejection.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Err(ApiError::UnsupportedMediaType)
        }
        Err(_) => Err(ApiError::InvalidRequest(
            "send token=... as application/x-www-form-urlencoded (or {\"token\": ...} as JSON)"
                .into(),
        )),
    }
}

/// Checks `Authorization: Basic name:secret` against `[[services]]`.
pub(crate) fn authenticate_service(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::InvalidClient)?;
    let (scheme, encoded) = header.split_once(' ').ok_or(ApiError::InvalidClient)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::InvalidClient);
    }
    let decoded = BASE64
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(ApiError::InvalidClient)?;
    let (name, secret) = decoded.split_once(':').ok_or(ApiError::InvalidClient)?;
    state
        .services
        .authenticate(name, secret)
        .map(|_| ())
        .ok_or(ApiError::InvalidClient)
}

/// The identity headers a forward-auth answer carries.
const USER_ID: HeaderName = HeaderName::from_static("x-wxauth-user-id");
const APP_ID: HeaderName = HeaderName::from_static("x-wxauth-app-id");
const OPENID: HeaderName = HeaderName::from_static("x-wxauth-openid");
const SESSION_ID: HeaderName = HeaderName::from_static("x-wxauth-session-id");
const UNIONID: HeaderName = HeaderName::from_static("x-wxauth-unionid");

/// Forward auth: 204 with the caller's identity in `X-Wxauth-*` headers, or 401 with
/// `WWW-Authenticate: Bearer error="invalid_token"` (which the mini-program client answers by
/// refreshing).
#[utoipa::path(
    method(get, post, put, patch, delete, head, options, trace),
    path = "/v1/verify",
    tag = "services",
    security(("user_token" = [])),
    responses((status = 204, description = "The token is good: who it belongs to", headers(
        ("X-Wxauth-User-Id" = String, description = "The person's id"),
        ("X-Wxauth-App-Id" = String, description = "The mini program"),
        ("X-Wxauth-Openid" = String, description = "The openid in that mini program"),
        ("X-Wxauth-Session-Id" = String, description = "The session"),
        ("X-Wxauth-Unionid" = String, description = "The unionid, when known"),
    ))),
)]
pub(crate) async fn verify(caller: Result<Authenticated, ApiError>) -> Response {
    let caller = match caller {
        Ok(Authenticated(caller)) => caller,
        Err(err) => {
            let unauthorized = err.parts().0 == StatusCode::UNAUTHORIZED;
            let mut response = err.into_response();
            if unauthorized {
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wxauth\", error=\"invalid_token\""),
                );
            }
            return response;
        }
    };
    let p = caller.principal;
    let mut headers = HeaderMap::new();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(USER_ID, p.user_id.as_str());
    set(APP_ID, p.app_id.as_str());
    set(OPENID, p.openid.as_str());
    set(SESSION_ID, &p.session_id);
    if let Some(unionid) = &p.unionid {
        set(UNIONID, unionid.as_str());
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// Forward auth as Envoy's ext_authz (HTTP mode) asks it: the original request's path after
/// `/v1/verify/`. The same answer as `/v1/verify`.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options, trace),
    path = "/v1/verify/{original}",
    tag = "services",
    security(("user_token" = [])),
    params(("original" = String, Path, description = "The original request's path")),
    responses((status = 204, description = "The token is good: who it belongs to", headers(
        ("X-Wxauth-User-Id" = String, description = "The person's id"),
        ("X-Wxauth-App-Id" = String, description = "The mini program"),
        ("X-Wxauth-Openid" = String, description = "The openid in that mini program"),
        ("X-Wxauth-Session-Id" = String, description = "The session"),
        ("X-Wxauth-Unionid" = String, description = "The unionid, when known"),
    ))),
)]
pub(crate) async fn verify_original(caller: Result<Authenticated, ApiError>) -> Response {
    verify(caller).await
}
