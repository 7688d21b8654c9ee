//! The admin API under `/v1/admin/`, for operators with an `[[admins]]` key: find persons,
//! see one whole (phone unmasked, identities, sessions, merges), revoke sessions, erase a
//! person, read the audit log and the login and WeChat statistics. Every call is written to
//! the audit log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::{AuditView, PersonView, UserRecordView};
use crate::error::ApiError;
use crate::extract::{Admin, ApiPath, ApiQuery};
use crate::model::UserId;
use crate::service::admin::{self, DEFAULT_LIMIT, MAX_LIMIT};
use crate::service::audit::{Actor, Requester};
use crate::service::login::ClientMeta;
use crate::state::AppState;
use crate::stats::{BucketSize, Report};
use crate::store::sql::UserFilter;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(find_users))
        .route("/v1/admin/users/{id}", get(user).delete(delete_user))
        .route(
            "/v1/admin/users/{id}/revoke-sessions",
            post(revoke_user_sessions),
        )
        .route("/v1/admin/sessions/{id}/revoke", post(revoke_session))
        .route("/v1/admin/audit", get(audit))
        .route("/v1/admin/stats", get(stats))
}

fn requester(admin: Admin, meta: ClientMeta) -> Requester {
    Requester {
        actor: Actor::Admin(admin.0),
        ip: meta.ip,
    }
}

/// `GET /v1/admin/users`: at most one of the filters, then paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// A person id.
    pub id: Option<String>,
    /// An openid (in any mini program).
    pub openid: Option<String>,
    /// A unionid.
    pub unionid: Option<String>,
    /// A whole phone number (national, or `+` with the country code).
    pub phone: Option<String>,
    /// A part of the nickname.
    pub q: Option<String>,
    /// Results per page (1 to 100, default 20).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl UsersQuery {
    fn filter(&self) -> Result<UserFilter, ApiError> {
        let given: Vec<(&str, &String)> = [
            ("id", &self.id),
            ("openid", &self.openid),
            ("unionid", &self.unionid),
            ("phone", &self.phone),
            ("q", &self.q),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
        .collect();
        let (name, value) = match given.as_slice() {
            [] => return Ok(UserFilter::All),
            [(name, value)] => (*name, value.trim().to_owned()),
            _ => {
                return Err(ApiError::InvalidRequest(
                    "search by one of id, openid, unionid, phone, q at a time".into(),
                ));
            }
        };
        if value.is_empty() || value.len() > 256 {
            return Err(ApiError::InvalidRequest(
                format!("{name} must be 1 to 256 characters").into(),
            ));
        }
        Ok(match name {
            "id" => UserFilter::Id(value),
            "openid" => UserFilter::OpenId(value),
            "unionid" => UserFilter::UnionId(value),
            "phone" => {
                let phone: String = value.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
                let digits = phone.strip_prefix('+').unwrap_or(&phone);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::InvalidRequest(
                        "phone must be a whole number: digits, optionally after + and the \
                         country code"
                            .into(),
                    ));
                }
                UserFilter::Phone(phone)
            }
            _ => UserFilter::Nickname(value),
        })
    }
}

/// Results per page as asked, checked.
fn limit(asked: Option<i64>) -> Result<i64, ApiError> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::InvalidRequest(
            format!("limit must be from 1 to {MAX_LIMIT}").into(),
        )),
    }
}

fn cursor(cursor: Option<&String>) -> Result<Option<&str>, ApiError> {
    match cursor.map(String::as_str) {
        Some(c) if c.is_empty() || c.len() > 64 => {
            Err(ApiError::InvalidRequest("the cursor is not valid".into()))
        }
        other => Ok(other),
    }
}

/// A page of persons.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersPage {
    /// The persons, by id (oldest first).
    pub users: Vec<UserRecordView>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// Finds persons by one of id, openid, unionid, phone or a part of the nickname (or lists
/// them all), a page at a time.
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    security(("admin_key" = [])),
    params(UsersQuery),
    responses((status = 200, description = "A page of persons", body = UsersPage, links(
        ("user" = (operation_id = "user", parameters(("id" = "$response.body#/users/0/id")))),
        ("delete_user" = (operation_id = "delete_user", parameters(("id" = "$response.body#/users/0/id")))),
        ("revoke_user_sessions" = (operation_id = "revoke_user_sessions", parameters(("id" = "$response.body#/users/0/id")))),
        ("next_page" = (operation_id = "find_users", parameters(("cursor" = "$response.body#/next_cursor")))),
    ))),
)]
pub(crate) async fn find_users(
    State(state): State<AppState>,
    admin: Admin,
    meta: ClientMeta,
    ApiQuery(query): ApiQuery<UsersQuery>,
) -> Result<Json<UsersPage>, ApiError> {
    let filter = query.filter()?;
    let limit = limit(query.limit)?;
    let cursor = cursor(query.cursor.as_ref())?;
    let by = requester(admin, meta);
    let page = admin::find_users(&state, &by, &filter, cursor, limit).await?;
    Ok(Json(UsersPage {
        users: page.items.iter().map(UserRecordView::new).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One person whole: phone unmasked, identities, sessions, merges.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The person's id")),
    responses((status = 200, description = "The person", body = PersonView, links(
        ("revoke_session" = (operation_id = "revoke_session", parameters(("id" = "$response.body#/sessions/0/id")))),
    ))),
)]
pub(crate) async fn user(
    State(state): State<AppState>,
    admin: Admin,
    meta: ClientMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PersonView>, ApiError> {
    let by = requester(admin, meta);
    let record = admin::user(&state, &by, &UserId::new(id)).await?;
    Ok(Json(PersonView::new(&record, state.now())))
}

/// Erases a person whole: profile, identities, sessions, uploaded files.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The person's id")),
    responses((status = 204, description = "The person is erased")),
)]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    admin: Admin,
    meta: ClientMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let by = requester(admin, meta);
    admin::delete_user(&state, &by, &UserId::new(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions a revocation ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Sessions that were live and are now revoked.
    pub revoked: u64,
}

/// Revokes every live session of a person.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/revoke-sessions",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The person's id")),
    responses((status = 200, description = "How many sessions were revoked", body = Revoked)),
)]
pub(crate) async fn revoke_user_sessions(
    State(state): State<AppState>,
    admin: Admin,
    meta: ClientMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Revoked>, ApiError> {
    let by = requester(admin, meta);
    let revoked = admin::revoke_user_sessions(&state, &by, &UserId::new(id)).await?;
    Ok(Json(Revoked { revoked }))
}

/// Revokes one session.
#[utoipa::path(
    post,
    path = "/v1/admin/sessions/{id}/revoke",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, description = "1 when the session was live, else 0", body = Revoked)),
)]
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    admin: Admin,
    meta: ClientMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Revoked>, ApiError> {
    let by = requester(admin, meta);
    let was_live = admin::revoke_session(&state, &by, &id).await?;
    Ok(Json(Revoked {
        revoked: u64::from(was_live),
    }))
}

/// `GET /v1/admin/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries per page (1 to 100, default 20).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The entries, newest first.
    pub entries: Vec<AuditView>,
    /// Pass as `cursor` for the next (older) page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// The audit log, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    security(("admin_key" = [])),
    params(AuditQuery),
    responses((status = 200, description = "A page of the audit log", body = AuditPage, links(
        ("next_page" = (operation_id = "audit", parameters(("cursor" = "$response.body#/next_cursor")))),
    ))),
)]
pub(crate) async fn audit(
    State(state): State<AppState>,
    admin: Admin,
    meta: ClientMeta,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = limit(query.limit)?;
    let cursor = cursor(query.cursor.as_ref())?;
    let by = requester(admin, meta);
    let page = admin::audit_log(&state, &by, cursor, limit).await?;
    Ok(Json(AuditPage {
        entries: page.items.iter().map(AuditView::new).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `GET /v1/admin/stats`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Start: Unix seconds, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC); default 7 days
    /// (`bucket=day`) or 24 hours (`bucket=hour`) before `to`.
    pub from: Option<String>,
    /// End (exclusive), written like `from`; default now.
    pub to: Option<String>,
    /// One app only.
    pub app_id: Option<String>,
    /// `day` (default) or `hour`.
    pub bucket: Option<String>,
}

/// Most buckets one answer spans.
const MAX_BUCKETS: i64 = 31 * 24;

/// A time as the stats query takes it, in Unix seconds.
fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    let bad = || {
        ApiError::InvalidRequest(
            format!("{name} must be Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)").into(),
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    let timestamp = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    let at = humantime::parse_rfc3339(&timestamp).map_err(|_| bad())?;
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_secs();
    i64::try_from(secs).map_err(|_| bad())
}

/// Login and WeChat statistics per hour or day, per app and in total.
#[utoipa::path(
    get,
    path = "/v1/admin/stats",
    tag = "admin",
    security(("admin_key" = [])),
    params(StatsQuery),
    responses((status = 200, description = "The figures", body = Report)),
)]
pub(crate) async fn stats(
    State(state): State<AppState>,
    admin: Admin,
    meta: ClientMeta,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<Report>, ApiError> {
    let size = match query.bucket.as_deref() {
        None | Some("day") => BucketSize::Day,
        Some("hour") => BucketSize::Hour,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "bucket must be day or hour".into(),
            ));
        }
    };
    let to = match &query.to {
        Some(text) => parse_time("to", text)?,
        None => state.now(),
    };
    let from = match &query.from {
        Some(text) => parse_time("from", text)?,
        None => {
            let span = match size {
                BucketSize::Day => 7,
                BucketSize::Hour => 24,
            };
            to - span * size.secs()
        }
    };
    if from >= to {
        return Err(ApiError::InvalidRequest("from must be before to".into()));
    }
    let max_buckets = match size {
        BucketSize::Day => 400,
        BucketSize::Hour => MAX_BUCKETS,
    };
    if (to - from + size.secs() - 1) / size.secs() > max_buckets {
        return Err(ApiError::InvalidRequest(
            format!("at most {max_buckets} buckets of this size at a time").into(),
        ));
    }
    if let Some(app_id) = &query.app_id
        && !crate::config::is_app_id(app_id)
    {
        return Err(ApiError::InvalidRequest(
            "app_id must be an AppID (wx and 16 hex characters)".into(),
        ));
    }
    let by = requester(admin, meta);
    let report = admin::stats(&state, &by, size, from, to, query.app_id.as_deref()).await?;
    Ok(Json(report))
}
