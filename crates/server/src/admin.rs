//! Operator actions that are not part of the HTTP API (the `wxauth` admin verbs); each calls
//! the same service function the API would.

use crate::model::UserId;
use crate::service::sessions;
use crate::store::{StoreError, Stores};

/// Revokes every live session of a person, in every mini program; returns how many.
/// `None` when there is no such person.
pub async fn revoke_user_sessions(
    stores: &Stores,
    user_id: &str,
    now: i64,
) -> Result<Option<u64>, StoreError> {
    sessions::revoke_user(stores, &UserId::new(user_id), "admin", now).await
}
