//! What operators do through the admin API (and the CLI's verbs), each action written to the
//! audit log with the operator's name and address.

use serde_json::json;

use crate::error::ApiError;
use crate::model::{AuditEntry, User, UserId};
use crate::service::account::{self, PersonRecord};
use crate::service::audit::{self, Requester};
use crate::service::sessions;
use crate::state::AppState;
use crate::store::sql::UserFilter;

/// Most results in one page.
pub const MAX_LIMIT: i64 = 100;
/// Results in a page when the request does not say.
pub const DEFAULT_LIMIT: i64 = 20;

/// A page of results and the cursor of the next one (`None` at the end).
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The results.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next_cursor: Option<String>,
}

/// Finds persons; the audit entry names what was searched by, not the value (which may be a
/// phone number).
pub async fn find_users(
    state: &AppState,
    by: &Requester,
    filter: &UserFilter,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page<User>, ApiError> {
    let searched_by = match filter {
        UserFilter::All => "all",
        UserFilter::Id(_) => "id",
        UserFilter::OpenId(_) => "openid",
        UserFilter::UnionId(_) => "unionid",
        UserFilter::Phone(_) => "phone",
        UserFilter::Nickname(_) => "q",
    };
    let entry = audit::entry(
        by,
        "users.search",
        None,
        Some(json!({ "by": searched_by })),
        state.now(),
    );
    audit::record(&state.stores, &entry).await?;
    let mut users = state
        .stores
        .sql
        .find_users(filter, cursor, limit + 1)
        .await?;
    let next_cursor = if users.len() as i64 > limit {
        users.truncate(usize::try_from(limit).unwrap_or(0));
        users.last().map(|u| u.id.to_string())
    } else {
        None
    };
    Ok(Page {
        items: users,
        next_cursor,
    })
}

/// One person with everything stored about them.
pub async fn user(
    state: &AppState,
    by: &Requester,
    user_id: &UserId,
) -> Result<PersonRecord, ApiError> {
    let entry = audit::entry(
        by,
        "user.view",
        Some(audit::user_target(user_id)),
        None,
        state.now(),
    );
    audit::record(&state.stores, &entry).await?;
    account::person_record(state, user_id)
        .await?
        .ok_or(ApiError::UserNotFound)
}

/// Revokes every live session of a person, at once; returns how many there were.
pub async fn revoke_user_sessions(
    state: &AppState,
    by: &Requester,
    user_id: &UserId,
) -> Result<u64, ApiError> {
    let (state, by, user_id) = (state.clone(), by.clone(), user_id.clone());
    super::to_completion(async move { run_revoke_user_sessions(&state, &by, &user_id).await }).await
}

async fn run_revoke_user_sessions(
    state: &AppState,
    by: &Requester,
    user_id: &UserId,
) -> Result<u64, ApiError> {
    let now = state.now();
    let revoked = sessions::revoke_user(&state.stores, user_id, "admin", now)
        .await?
        .ok_or(ApiError::UserNotFound)?;
    let entry = audit::entry(
        by,
        "user.revoke_sessions",
        Some(audit::user_target(user_id)),
        Some(json!({ "revoked": revoked })),
        now,
    );
    audit::record(&state.stores, &entry).await?;
    Ok(revoked)
}

/// Revokes one session at once; `true` when it was live until now.
pub async fn revoke_session(
    state: &AppState,
    by: &Requester,
    session_id: &str,
) -> Result<bool, ApiError> {
    let (state, by, session_id) = (state.clone(), by.clone(), session_id.to_owned());
    super::to_completion(async move { run_revoke_session(&state, &by, &session_id).await }).await
}

async fn run_revoke_session(
    state: &AppState,
    by: &Requester,
    session_id: &str,
) -> Result<bool, ApiError> {
    let now = state.now();
    let record = state
        .stores
        .sessions
        .get(session_id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let was_live = record.session.revoked_at.is_none() && record.session.expires_at > now;
    state
        .stores
        .sessions
        .revoke(session_id, "admin", now)
        .await?;
    let entry = audit::entry(
        by,
        "session.revoke",
        Some(audit::session_target(session_id)),
        Some(json!({ "was_live": was_live })),
        now,
    );
    audit::record(&state.stores, &entry).await?;
    Ok(was_live)
}

/// Erases a person (see [`account::delete_person`]); the erasure's own audit entry names
/// the operator.
pub async fn delete_user(
    state: &AppState,
    by: &Requester,
    user_id: &UserId,
) -> Result<(), ApiError> {
    if account::delete_person(state, user_id, by).await? {
        Ok(())
    } else {
        Err(ApiError::UserNotFound)
    }
}

/// A page of the audit log, newest first.
pub async fn audit_log(
    state: &AppState,
    by: &Requester,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page<AuditEntry>, ApiError> {
    let entry = audit::entry(by, "audit.read", None, None, state.now());
    audit::record(&state.stores, &entry).await?;
    let mut entries = state.stores.sql.audit_page(cursor, limit + 1).await?;
    let next_cursor = if entries.len() as i64 > limit {
        entries.truncate(usize::try_from(limit).unwrap_or(0));
        entries.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Page {
        items: entries,
        next_cursor,
    })
}

/// The login and WeChat statistics of `[from, to)`, by `size` buckets, for one app or all.
/// This instance's counts not yet written are written first, so the answer includes every
/// request this instance has answered; other instances' show within
/// [`crate::stats::FLUSH_INTERVAL`].
pub async fn stats(
    state: &AppState,
    by: &Requester,
    size: crate::stats::BucketSize,
    from: i64,
    to: i64,
    app_id: Option<&str>,
) -> Result<crate::stats::Report, ApiError> {
    let detail = serde_json::json!({ "from": from, "to": to, "app_id": app_id });
    let entry = audit::entry(by, "stats.read", None, Some(detail), state.now());
    audit::record(&state.stores, &entry).await?;
    state.stats.flush().await?;
    Ok(crate::stats::report(&state.stores.sql, size, from, to, app_id).await?)
}
