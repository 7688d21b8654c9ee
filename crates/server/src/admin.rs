//! Operator actions that are not part of the HTTP API (the `wxauth` admin verbs).

use crate::store::{StoreError, Stores};

/// Revokes every live session of a person, in every mini program; returns how many.
/// `None` when there is no such person.
pub async fn revoke_user_sessions(
    stores: &Stores,
    user_id: &str,
    now: i64,
) -> Result<Option<u64>, StoreError> {
    let identities = stores.users.identities(user_id).await?;
    if identities.is_empty() {
        return Ok(None);
    }
    let mut revoked = 0;
    for identity in identities {
        revoked += stores
            .sessions
            .revoke_identity(&identity.app_id, &identity.openid, "admin", now)
            .await?;
    }
    tracing::info!(user_id, revoked, "sessions revoked by an operator");
    Ok(Some(revoked))
}
