//! `GET /openapi.json`: the OpenAPI 3.1 document of every route the service answers, made
//! from the handlers' `#[utoipa::path]` attributes and the request and response types
//! (`ToSchema`, `IntoParams`), so it says what the code does.
//!
//! Each operation's error answers are added here from [`error_codes`]: the `code` values the
//! route may answer with, grouped by the HTTP status [`ApiError::parts`] gives each code, as
//! `{"error": {"code", "message", "wechat_errcode"?}}` with `code` one of them.
//!
//! Not in the document: the web console under `/admin` (`/admin`, `/admin/` and the files
//! below it), a browser application's HTML, scripts and styles rather than an API (its data
//! comes from the admin API, which is documented). The test below knows these three routes
//! and fails on any other route the code registers without documenting it.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::path::{
    Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    Content, HeaderBuilder, OpenApi as Document, PathItem, RefOr, Required, ResponseBuilder,
};
use utoipa::{Modify, OpenApi};
use wxauth_wechat::WechatError;
use wxauth_wechat::crypto::DecryptError;

use super::{admin, auth, events, health, me, services, wellknown};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::StoreError;

/// The security scheme of a user's access token (`Authorization: Bearer <access_token>`).
pub const USER_TOKEN: &str = "user_token";
/// The security scheme of an operator's admin key (`Authorization: Bearer <admin key>`).
pub const ADMIN_KEY: &str = "admin_key";
/// The security scheme of a `[[services]]` credential (HTTP Basic `name:secret`).
pub const SERVICE_CREDENTIALS: &str = "service_credentials";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wxauth",
        description = "Login and identity service for WeChat Mini Programs. Every error is \
                       `{\"error\": {\"code\", \"message\"}}` with a stable `code`; each \
                       operation lists the codes it may answer with.",
    ),
    paths(
        auth::login,
        auth::refresh,
        auth::logout,
        auth::check,
        me::me,
        me::update,
        me::update_by_post,
        me::delete_account,
        me::delete_account_by_post,
        me::export,
        me::userinfo,
        me::phone,
        me::avatar,
        services::introspect,
        services::verify,
        services::verify_original,
        events::feed,
        admin::find_users,
        admin::user,
        admin::delete_user,
        admin::revoke_user_sessions,
        admin::revoke_session,
        admin::audit,
        admin::stats,
        health::healthz,
        health::readyz,
        wellknown::jwks,
        wellknown::metadata,
        openapi_json,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Logging in and out, tokens"),
        (name = "me", description = "The logged-in user"),
        (name = "services", description = "For the team's other services: introspection, \
                                           forward auth, the event feed"),
        (name = "admin", description = "For operators with an `[[admins]]` key"),
        (name = "tokens", description = "What verifiers of wxauth's tokens need"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "media", description = "Uploaded files"),
    ),
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = |scheme, description: &str| {
            let mut http = Http::new(scheme);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            USER_TOKEN,
            scheme(
                HttpAuthScheme::Bearer,
                "A user's access token, from POST /v1/auth/login or /v1/auth/refresh.",
            ),
        );
        components.add_security_scheme(
            ADMIN_KEY,
            scheme(
                HttpAuthScheme::Bearer,
                "An operator's admin key (an [[admins]] entry; `wxauth admin-key` makes one).",
            ),
        );
        components.add_security_scheme(
            SERVICE_CREDENTIALS,
            scheme(
                HttpAuthScheme::Basic,
                "A service's credentials: HTTP Basic name:secret of a [[services]] entry.",
            ),
        );
    }
}

/// The document as the main listener serves it: with `GET /metrics` when `metrics_here`.
pub fn document(metrics_here: bool) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.paths
        .paths
        .insert("/media/{file}".to_owned(), media_item());
    if metrics_here {
        doc.paths
            .paths
            .insert("/metrics".to_owned(), metrics_item());
    }
    add_errors(&mut doc);
    unique_operation_ids(&mut doc);
    doc
}

/// `document(metrics_here)` as JSON.
pub fn document_json(metrics_here: bool) -> Result<Vec<u8>, serde_json::Error> {
    let mut doc = serde_json::to_value(document(metrics_here))?;
    camel_case_links(&mut doc);
    serde_json::to_vec(&doc)
}

/// utoipa 5 writes a Link object's fields in snake case (`operation_id`); OpenAPI names
/// them `operationId`, `operationRef` and `requestBody`.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}

/// `GET /openapi.json`, serving `document(metrics_here)`.
pub fn router(metrics_here: bool) -> Router<AppState> {
    let body = document_json(metrics_here).map(Bytes::from);
    let body = body.map_err(|err| err.to_string());
    Router::new().route("/openapi.json", get(move || openapi_json(body.clone())))
}

/// This document: every route of the service, its parameters, bodies, answers and error codes.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)),
)]
pub(crate) async fn openapi_json(body: Result<Bytes, String>) -> Response {
    match body {
        Ok(body) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => {
            ApiError::Internal(anyhow::anyhow!("the OpenAPI document: {err}")).into_response()
        }
    }
}

fn operation(id: &str, tag: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .tag(tag)
        .summary(Some(summary))
}

/// `GET /media/{file}`: uploaded files (avatars), served by the file server.
fn media_item() -> PathItem {
    let file: Parameter = ParameterBuilder::new()
        .name("file")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The file's path, as the avatar URL names it"))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    let image = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("image/png", Content::new(None::<Schema>))
            .content("image/jpeg", Content::new(None::<Schema>))
            .header("ETag", HeaderBuilder::new().schema(string()).build())
            .header(
                "Last-Modified",
                HeaderBuilder::new().schema(string()).build(),
            )
            .build()
    };
    let get = operation("media_file", "media", "An uploaded file (an avatar)")
        .parameter(file.clone())
        .response("200", image("The file"))
        .response("206", image("A byte range of the file"))
        .response(
            "304",
            ResponseBuilder::new().description("Not modified since the time or tag given"),
        )
        .build();
    let mut head = get.clone();
    head.operation_id = Some("media_file_head".to_owned());
    let mut item = PathItem::new(utoipa::openapi::HttpMethod::Get, get);
    item.head = Some(head);
    item
}

/// `GET /metrics` on the main listener (when `[metrics] listen` does not move it).
fn metrics_item() -> PathItem {
    let get = operation(
        "metrics",
        "health",
        "Prometheus metrics (text exposition format)",
    )
    .response(
        "200",
        ResponseBuilder::new().description("The metrics").content(
            "text/plain; version=0.0.4; charset=utf-8",
            Content::new(Some(string())),
        ),
    )
    .build();
    PathItem::new(utoipa::openapi::HttpMethod::Get, get)
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// Codes any route may answer with: the time limit, the connection limit, a bug.
const EVERY: &[&str] = &["request_timeout", "overloaded", "internal"];
/// A JSON body's refusals.
const JSON_BODY: &[&str] = &[
    "invalid_request",
    "unsupported_media_type",
    "payload_too_large",
];
/// A bearer access token's refusals.
const USER: &[&str] = &[
    "unauthorized",
    "token_expired",
    "token_revoked",
    "store_unavailable",
];
/// An admin key's refusals, and the admin routes' parameter checks.
const ADMIN: &[&str] = &["unauthorized", "invalid_request", "store_unavailable"];
/// A `[[services]]` credential's refusal.
const SERVICE: &[&str] = &["invalid_client", "store_unavailable"];
/// What exchanging a code with WeChat may answer.
const CODE_EXCHANGE: &[&str] = &[
    "invalid_request",
    "invalid_code",
    "code_used",
    "code_in_progress",
    "risky_user",
    "rate_limited",
    "wechat_busy",
    "wechat_config_error",
    "wechat_ip_not_whitelisted",
    "wechat_error",
    "wechat_timeout",
    "wechat_unavailable",
    "overloaded",
    "unknown_app",
];
/// What any other WeChat call may answer.
const WECHAT_CALL: &[&str] = &[
    "rate_limited",
    "wechat_busy",
    "wechat_config_error",
    "wechat_ip_not_whitelisted",
    "wechat_error",
    "wechat_timeout",
    "wechat_unavailable",
    "overloaded",
    "unknown_app",
];
/// Decrypting open data.
const OPEN_DATA: &[&str] = &[
    "decrypt_failed",
    "watermark_mismatch",
    "data_expired",
    "invalid_data",
    "openid_mismatch",
];

/// The error codes each operation (by the id its attribute gives) may answer with, besides
/// [`EVERY`]; `None` for an operation not listed, which the tests refuse.
pub fn error_codes(operation_id: &str) -> Option<Vec<&'static str>> {
    let groups: &[&[&str]] = match operation_id {
        "login" => &[
            JSON_BODY,
            CODE_EXCHANGE,
            &["app_id_required", "store_unavailable"],
        ],
        "refresh" => &[
            JSON_BODY,
            &[
                "unauthorized",
                "token_expired",
                "token_revoked",
                "rate_limited",
                "store_unavailable",
            ],
        ],
        "logout" => &[JSON_BODY, USER],
        "check" => &[USER, WECHAT_CALL, &["invalid_request"]],
        "me" | "export" | "delete_account" | "delete_account_by_post" => {
            &[USER, &["invalid_request"]]
        }
        "update" | "update_by_post" => &[USER, JSON_BODY],
        "userinfo" => &[
            USER,
            JSON_BODY,
            OPEN_DATA,
            CODE_EXCHANGE,
            &["bad_signature", "identity_mismatch"],
        ],
        "phone" => &[
            USER,
            JSON_BODY,
            OPEN_DATA,
            WECHAT_CALL,
            &["invalid_code", "code_used", "phone_quota_exhausted"],
        ],
        "avatar" => &[
            USER,
            JSON_BODY,
            &["rate_limited", "unsupported_image", "invalid_image"],
        ],
        "introspect" => &[SERVICE, JSON_BODY],
        "verify" | "verify_original" => &[USER, &["invalid_request"]],
        "feed" => &[SERVICE, &["invalid_request"]],
        "find_users" | "audit" | "stats" => &[ADMIN],
        "user" | "delete_user" | "revoke_user_sessions" => &[ADMIN, &["user_not_found"]],
        "revoke_session" => &[ADMIN, &["session_not_found"]],
        "healthz" | "readyz" | "jwks" | "metadata" | "openapi_json" | "metrics" => &[],
        "media_file" | "media_file_head" => &[&[
            "not_found",
            "invalid_request",
            "range_not_satisfiable",
            "precondition_failed",
        ]],
        _ => return None,
    };
    let mut codes: Vec<&'static str> = EVERY.to_vec();
    for group in groups {
        for code in group.iter() {
            if !codes.contains(code) {
                codes.push(code);
            }
        }
    }
    Some(codes)
}

/// One of each error the API answers with, so the document takes each code's status from
/// [`ApiError::parts`] itself.
pub fn every_error() -> Vec<ApiError> {
    use ApiError as E;
    // Every errcode `ApiErrorKind::from_errcode` tells apart, and one it does not.
    let wechat = [
        -1, 40029, 40163, 41008, 40226, 45011, 40013, 40125, 40001, 42001, 87009, 40164, 1_400_001,
        99_999,
    ]
    .into_iter()
    .map(|errcode| E::Wechat(WechatError::api(errcode, "")))
    .chain([
        E::Wechat(WechatError::Connect),
        E::Wechat(WechatError::Timeout(std::time::Duration::from_secs(1))),
        E::Wechat(WechatError::Overloaded),
        E::Wechat(WechatError::Status(500)),
        E::Wechat(WechatError::Protocol(String::new())),
        E::Wechat(WechatError::Config(String::new())),
    ]);
    let errors = vec![
        E::InvalidRequest("".into()),
        E::UnsupportedMediaType,
        E::NotAnImage,
        E::InvalidImage(""),
        E::PayloadTooLarge,
        E::NotFound,
        E::MethodNotAllowed,
        E::RangeNotSatisfiable,
        E::PreconditionFailed,
        E::RequestTimeout,
        E::Overloaded,
        E::AppIdRequired,
        E::UnknownApp,
        E::UserNotFound,
        E::SessionNotFound,
        E::Unauthorized(""),
        E::InvalidClient,
        E::TokenExpired,
        E::TokenRevoked,
        E::OpenData(DecryptError::Decrypt),
        E::OpenData(DecryptError::WatermarkMismatch),
        E::OpenData(DecryptError::Expired { age_secs: 0 }),
        E::OpenData(DecryptError::Malformed),
        E::OpenIdMismatch,
        E::BadSignature,
        E::IdentityMismatch,
        E::CodeInProgress,
        E::RateLimited { retry_after: 1 },
        E::Store(StoreError::Unavailable {
            store: "database",
            source: anyhow::anyhow!(""),
        }),
        E::Internal(anyhow::anyhow!("")),
    ];
    for error in &errors {
        // A new variant fails to compile here until it has a sample above.
        match error {
            E::InvalidRequest(_)
            | E::UnsupportedMediaType
            | E::NotAnImage
            | E::InvalidImage(_)
            | E::PayloadTooLarge
            | E::NotFound
            | E::MethodNotAllowed
            | E::RangeNotSatisfiable
            | E::PreconditionFailed
            | E::RequestTimeout
            | E::Overloaded
            | E::AppIdRequired
            | E::UnknownApp
            | E::UserNotFound
            | E::SessionNotFound
            | E::Unauthorized(_)
            | E::InvalidClient
            | E::TokenExpired
            | E::TokenRevoked
            | E::Wechat(_)
            | E::OpenData(_)
            | E::OpenIdMismatch
            | E::BadSignature
            | E::IdentityMismatch
            | E::CodeInProgress
            | E::RateLimited { .. }
            | E::Store(_)
            | E::Internal(_) => {}
        }
    }
    errors.into_iter().chain(wechat).collect()
}

/// Each error code's HTTP status.
pub fn statuses() -> BTreeMap<&'static str, u16> {
    every_error()
        .iter()
        .map(|error| {
            let (status, code, _) = error.parts();
            (code, status.as_u16())
        })
        .collect()
}

/// The operations of a path, by method.
pub fn operations_mut(item: &mut PathItem) -> [(&'static str, &mut Option<Operation>); 8] {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
}

/// The error body whose `code` is one of `codes`.
fn error_schema(codes: &[&str]) -> Schema {
    let detail = ObjectBuilder::new()
        .property(
            "code",
            string()
                .enum_values(Some(codes.iter().copied()))
                .description(Some("The stable error code")),
        )
        .required("code")
        .property(
            "message",
            string().description(Some("What went wrong and what to do, for people")),
        )
        .required("message")
        .property(
            "wechat_errcode",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("WeChat's errcode, when WeChat refused")),
        );
    ObjectBuilder::new()
        .property("error", detail)
        .required("error")
        .build()
        .into()
}

/// The headers an error answer of `status` carries.
fn error_headers(status: u16, mut response: ResponseBuilder) -> ResponseBuilder {
    if status == 401 {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(string())
                .description(Some("The challenge: Bearer (with error=\"invalid_token\" for an expired or revoked token) or Basic"))
                .build(),
        );
    }
    if matches!(status, 409 | 429 | 503) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    response
}

/// Adds each operation's error answers, by status.
fn add_errors(doc: &mut Document) {
    let statuses = statuses();
    for item in doc.paths.paths.values_mut() {
        for (_, operation) in operations_mut(item) {
            let Some(operation) = operation else { continue };
            let id = operation.operation_id.clone().unwrap_or_default();
            let codes = error_codes(&id).unwrap_or_else(|| EVERY.to_vec());
            let mut by_status: BTreeMap<u16, BTreeSet<&str>> = BTreeMap::new();
            for code in codes {
                let status = statuses.get(code).copied().unwrap_or(500);
                by_status.entry(status).or_default().insert(code);
            }
            for (status, codes) in by_status {
                let codes: Vec<&str> = codes.into_iter().collect();
                let schema = error_schema(&codes);
                let key = status.to_string();
                let mut description = format!("Error: {}", codes.join(", "));
                let schema = match operation.responses.responses.remove(&key) {
                    // A status the route also answers without an error (readiness's 503):
                    // either body.
                    Some(RefOr::T(existing)) => {
                        description = format!(
                            "{}; or an error: {}",
                            existing.description,
                            codes.join(", ")
                        );
                        existing
                            .content
                            .get("application/json")
                            .and_then(|content| content.schema.clone())
                            .map(|other| {
                                Schema::OneOf(
                                    OneOfBuilder::new().item(other).item(schema.clone()).build(),
                                )
                            })
                            .unwrap_or(schema)
                    }
                    _ => schema,
                };
                let response = ResponseBuilder::new()
                    .description(description)
                    .content("application/json", Content::new(Some(schema)));
                operation
                    .responses
                    .responses
                    .insert(key, RefOr::T(error_headers(status, response).build()));
            }
        }
    }
}

/// An operation answering several methods gets one id per method (`verify_get`, ...).
fn unique_operation_ids(doc: &mut Document) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for item in doc.paths.paths.values_mut() {
        for (_, operation) in operations_mut(item) {
            if let Some(id) = operation.as_ref().and_then(|o| o.operation_id.clone()) {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    for item in doc.paths.paths.values_mut() {
        for (method, operation) in operations_mut(item) {
            if let Some(operation) = operation
                && let Some(id) = &operation.operation_id
                && seen.get(id).is_some_and(|n| *n > 1)
            {
                operation.operation_id = Some(format!("{id}_{method}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The console's routes, left out of the document on purpose (see the module's docs).
    const UNDOCUMENTED: &[(&str, &str)] = &[
        ("/admin", "get"),
        ("/admin/", "get"),
        ("/admin/{path}", "get"),
    ];

    /// What `any(...)` answers: every method OpenAPI has.
    const ANY: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.map(|e| e.path()).unwrap_or_default();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }

    /// The text from `open` (just after an opening parenthesis) to its closing one.
    fn inside_parens(text: &str) -> &str {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '(' => depth += 1,
                ')' if depth == 0 => return &text[..i],
                ')' => depth -= 1,
                _ => {}
            }
        }
        panic!("unbalanced parentheses in {text:?}")
    }

    /// Splits a call's arguments at the top-level commas.
    fn arguments(text: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let (mut depth, mut start, mut in_string) = (0i32, 0, false);
        for (i, c) in text.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '(' | '[' | '{' if !in_string => depth += 1,
                ')' | ']' | '}' if !in_string => depth -= 1,
                ',' if !in_string && depth == 0 => {
                    parts.push(text[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(text[start..].trim());
        // A trailing comma.
        parts.retain(|part| !part.is_empty());
        parts
    }

    /// The methods of a method router such as `get(a).post(b).layer(...)`: the names of the
    /// calls chained at the top level.
    fn methods(expr: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        let mut rest = expr.trim();
        while !rest.is_empty() {
            let name_end = rest
                .find('(')
                .unwrap_or_else(|| panic!("not a call chain: {expr:?}"));
            let name = rest[..name_end].trim().trim_start_matches('.').trim();
            let name = name.rsplit("::").next().unwrap_or(name);
            let args = inside_parens(&rest[name_end + 1..]);
            if name == "any" {
                found.extend_from_slice(ANY);
            } else if let Some(method) = ANY.iter().find(|m| **m == name) {
                found.push(*method);
            }
            rest = rest[name_end + 1 + args.len() + 1..].trim();
        }
        found
    }

    /// A route's path as written: a literal, or a `const` of the same file.
    fn path_of(arg: &str, file: &str) -> String {
        if let Some(literal) = arg.strip_prefix('"') {
            return literal.trim_end_matches('"').to_owned();
        }
        let name = arg.rsplit("::").next().unwrap_or(arg);
        let decl = format!("const {name}: &str = \"");
        let at = file
            .find(&decl)
            .unwrap_or_else(|| panic!("route path {arg} is neither a literal nor a const here"));
        let rest = &file[at + decl.len()..];
        rest[..rest.find('"').unwrap_or(0)].to_owned()
    }

    /// Every `(path, method)` the source registers with `.route(...)`, in OpenAPI's spelling
    /// (`{*rest}` → `{rest}`), and every prefix nested with `.nest(...)`/`.nest_service(...)`.
    fn registered() -> (BTreeSet<(String, &'static str)>, BTreeSet<String>) {
        let mut files = Vec::new();
        rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let (mut routes, mut nested) = (BTreeSet::new(), BTreeSet::new());
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // A file's tests serve nothing.
            let text = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let code: String = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                for (at, _) in code.match_indices(call) {
                    let args = arguments(inside_parens(&code[at + call.len()..]));
                    let route = path_of(args[0], &code).replace("{*", "{");
                    if call == ".route(" {
                        assert_eq!(args.len(), 2, "{}: {args:?}", path.display());
                        let methods = methods(args[1]);
                        assert!(
                            !methods.is_empty(),
                            "{}: no method in {args:?}",
                            path.display()
                        );
                        for method in methods {
                            routes.insert((route.clone(), method));
                        }
                    } else {
                        nested.insert(route);
                    }
                }
            }
        }
        (routes, nested)
    }

    fn documented(doc: &mut Document) -> BTreeSet<(String, &'static str)> {
        let mut found = BTreeSet::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in operations_mut(item) {
                if operation.is_some() {
                    found.insert((path.clone(), method));
                }
            }
        }
        found
    }

    #[test]
    fn the_route_scanner_reads_method_routers_and_paths() {
        assert_eq!(
            methods("get(me)\n.patch(update).post(x).delete(y)"),
            ["get", "patch", "post", "delete"]
        );
        assert_eq!(
            methods("post(avatar).layer(DefaultBodyLimit::max(n + 16 * 1024))"),
            ["post"]
        );
        assert_eq!(methods("get(move || f(body.clone()).get(1))"), ["get"]);
        assert_eq!(methods("axum::routing::any(verify)").len(), 8);
        assert_eq!(
            path_of("PREFIX", "pub const PREFIX: &str = \"/admin\";"),
            "/admin"
        );
        assert_eq!(
            arguments("\"/a\", get(f(1, 2))"),
            ["\"/a\"", "get(f(1, 2))"]
        );
    }

    #[test]
    fn every_route_the_code_registers_is_documented_and_nothing_else() {
        let (routes, nested) = registered();
        let mut doc = document(true);
        let documented = documented(&mut doc);
        for (path, method) in UNDOCUMENTED {
            let route = ((*path).to_owned(), *method);
            assert!(
                routes.contains(&route),
                "{method} {path} is no longer routed: drop it from UNDOCUMENTED"
            );
            assert!(
                !documented.contains(&route),
                "{method} {path} is documented: drop it from UNDOCUMENTED"
            );
        }
        let undocumented: Vec<_> = routes
            .iter()
            .filter(|(path, method)| !UNDOCUMENTED.contains(&(path.as_str(), *method)))
            .filter(|route| !documented.contains(*route))
            .collect();
        assert!(
            undocumented.is_empty(),
            "routed but not in the OpenAPI document: {undocumented:?}"
        );
        let nested_paths: Vec<_> = nested.iter().map(|prefix| format!("{prefix}/")).collect();
        let unrouted: Vec<_> = documented
            .iter()
            .filter(|route| !routes.contains(*route))
            .filter(|(path, _)| !nested_paths.iter().any(|prefix| path.starts_with(prefix)))
            .collect();
        assert!(
            unrouted.is_empty(),
            "documented but not routed: {unrouted:?}"
        );
        for prefix in &nested_paths {
            assert!(
                documented.iter().any(|(path, _)| path.starts_with(prefix)),
                "{prefix}... is served but not documented"
            );
        }
        // The scan sees the routes there are.
        assert!(routes.contains(&("/v1/auth/login".to_owned(), "post")));
        assert!(routes.contains(&("/v1/verify/{original}".to_owned(), "trace")));
        assert!(nested.contains("/media"));
    }

    #[test]
    fn metrics_are_documented_only_where_served() {
        assert!(document(true).paths.paths.contains_key("/metrics"));
        assert!(!document(false).paths.paths.contains_key("/metrics"));
    }

    #[test]
    fn every_operation_has_its_error_codes_and_every_code_is_an_api_error() {
        let statuses = statuses();
        let mut doc = ApiDoc::openapi();
        doc.paths
            .paths
            .insert("/media/{file}".to_owned(), media_item());
        doc.paths
            .paths
            .insert("/metrics".to_owned(), metrics_item());
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in operations_mut(item) {
                let Some(operation) = operation else { continue };
                let id = operation.operation_id.clone().unwrap_or_default();
                let codes = error_codes(&id).unwrap_or_else(|| {
                    panic!("{method} {path} ({id}) has no entry in error_codes")
                });
                for code in codes {
                    assert!(
                        statuses.contains_key(code),
                        "{id}: {code} is no ApiError's code"
                    );
                }
            }
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_security_and_error_codes_by_status() {
        let doc: serde_json::Value =
            serde_json::from_slice(&document_json(true).unwrap_or_default()).unwrap_or_default();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1.")),
            "{}",
            doc["openapi"]
        );
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes[USER_TOKEN]["scheme"], "bearer");
        assert_eq!(schemes[ADMIN_KEY]["scheme"], "bearer");
        assert_eq!(schemes[SERVICE_CREDENTIALS]["scheme"], "basic");
        let login = &doc["paths"]["/v1/auth/login"]["post"]["responses"];
        let codes = |response: &serde_json::Value| -> Vec<String> {
            serde_json::from_value(
                response["content"]["application/json"]["schema"]["properties"]["error"]
                    ["properties"]["code"]["enum"]
                    .clone(),
            )
            .unwrap_or_default()
        };
        let bad_request = codes(&login["400"]);
        for code in [
            "invalid_request",
            "invalid_code",
            "code_used",
            "app_id_required",
        ] {
            assert!(
                bad_request.iter().any(|c| c == code),
                "{code} not in {bad_request:?}"
            );
        }
        assert_eq!(codes(&login["409"]), ["code_in_progress"]);
        assert_eq!(codes(&login["404"]), ["unknown_app"]);
        assert!(login["429"]["headers"]["Retry-After"].is_object());
        // Readiness answers 503 with its own body, or the connection limit's error.
        let not_ready = &doc["paths"]["/readyz"]["get"]["responses"]["503"];
        assert_eq!(
            not_ready["description"],
            "A store does not answer; or an error: overloaded"
        );
        assert_eq!(
            not_ready["content"]["application/json"]["schema"]["oneOf"][0]["$ref"],
            "#/components/schemas/Readiness"
        );
        let me = &doc["paths"]["/v1/me"]["get"];
        assert_eq!(me["security"][0][USER_TOKEN], serde_json::json!([]));
        let unauthorized = codes(&me["responses"]["401"]);
        assert_eq!(
            unauthorized,
            ["token_expired", "token_revoked", "unauthorized"]
        );
        assert!(me["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
        assert_eq!(
            codes(&doc["paths"]["/v1/admin/users/{id}"]["get"]["responses"]["404"]),
            ["user_not_found"]
        );
        // One id per operation, also where one handler answers several methods.
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|paths| paths.values())
            .flat_map(|item| item.as_object().into_iter().flat_map(|ops| ops.values()))
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let unique: BTreeSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        assert!(ids.contains(&"verify_trace"));
        // Links name their target as OpenAPI spells it.
        let link = &doc["paths"]["/v1/admin/users"]["get"]["responses"]["200"]["links"]["user"];
        assert_eq!(link["operationId"], "user");
        assert!(link.get("operation_id").is_none());
    }
}
