//! The audit log: every operator action (the admin API, the CLI's verbs) and every security
//! event (a refresh token used twice, a revocation by an operator, a merge of persons, an
//! erasure), with who, what, which target, when and from where. Targets are ids only, never
//! a person's data, so an erased person leaves nothing readable here.

use serde_json::Value;

use crate::model::{AuditEntry, UserId};
use crate::store::{StoreError, Stores};

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator through the admin API, by its `[[admins]]` name.
    Admin(String),
    /// An operator through a `wxauth` command.
    Cli,
    /// The person themselves (deleting their account).
    User,
    /// The service, on its own (reuse detection, a merge).
    System,
}

impl Actor {
    fn parts(&self) -> (&'static str, Option<String>) {
        match self {
            Self::Admin(name) => ("admin", Some(name.clone())),
            Self::Cli => ("cli", None),
            Self::User => ("user", None),
            Self::System => ("system", None),
        }
    }
}

/// Whoever asked, and from where.
#[derive(Debug, Clone)]
pub struct Requester {
    /// Who.
    pub actor: Actor,
    /// The client's address, when over HTTP.
    pub ip: Option<String>,
}

/// A target named by a person's id.
pub fn user_target(id: &UserId) -> String {
    format!("user:{id}")
}

/// A target named by a session's id.
pub fn session_target(id: &str) -> String {
    format!("session:{id}")
}

/// A new entry: `action` on `target` by `by`, now.
pub fn entry(
    by: &Requester,
    action: &str,
    target: Option<String>,
    detail: Option<Value>,
    now: i64,
) -> AuditEntry {
    let (actor_kind, actor) = by.actor.parts();
    AuditEntry {
        id: uuid::Uuid::now_v7().to_string(),
        occurred_at: now,
        actor_kind: actor_kind.to_owned(),
        actor,
        action: action.to_owned(),
        target,
        ip: by.ip.clone(),
        detail: detail.map(|d| d.to_string()),
    }
}

/// Writes an entry; a failure is the caller's failure (an operator action that cannot be
/// recorded is reported, not silently done).
pub async fn record(stores: &Stores, entry: &AuditEntry) -> Result<(), StoreError> {
    stores.sql.append_audit(entry).await
}

/// Writes an entry for an event that has happened already (and must not be undone for want
/// of a log line): a failure is logged.
pub async fn record_event(stores: &Stores, entry: &AuditEntry) {
    if let Err(err) = record(stores, entry).await {
        tracing::error!(action = %entry.action, error = %err, "could not write the audit log");
    }
}
