//! Operator actions that are not part of the HTTP API (the `wxauth` admin verbs); each calls
//! the same service function the API would.

use crate::model::UserId;
use crate::service::{audit, sessions};
use crate::store::{StoreError, Stores};

/// Revokes every live session of a person, in every mini program; returns how many.
/// `None` when there is no such person.
pub async fn revoke_user_sessions(
    stores: &Stores,
    user_id: &str,
    now: i64,
) -> Result<Option<u64>, StoreError> {
    let user_id = UserId::new(user_id);
    let revoked = sessions::revoke_user(stores, &user_id, "admin", now).await?;
    if let Some(revoked) = revoked {
        let by = audit::Requester {
            actor: audit::Actor::Cli,
            ip: None,
        };
        let entry = audit::entry(
            &by,
            "user.revoke_sessions",
            Some(audit::user_target(&user_id)),
            Some(serde_json::json!({ "revoked": revoked })),
            now,
        );
        audit::record(stores, &entry).await?;
    }
    Ok(revoked)
}
