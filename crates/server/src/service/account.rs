//! A person's own data: everything stored about them (the export, and what the admin view
//! shows), and erasure, the one way a person is deleted, by themselves (`DELETE /v1/me`) or
//! by an operator (`DELETE /v1/admin/users/{id}`).

use crate::error::ApiError;
use crate::model::{Identity, MergeRecord, User, UserId};
use crate::service::audit::{self, Requester};
use crate::state::AppState;
use crate::store::SessionRecord;

/// Everything stored about a person.
#[derive(Debug, Clone)]
pub struct PersonRecord {
    /// The person: profile, phone, the app's fields.
    pub user: User,
    /// Its identities in each mini program.
    pub identities: Vec<Identity>,
    /// The sessions of those identities (live, expired or revoked, until purged).
    pub sessions: Vec<SessionRecord>,
    /// The persons merged into this one.
    pub merges: Vec<MergeRecord>,
}

/// Everything stored about a person; `None` when there is no such person.
pub async fn person_record(
    state: &AppState,
    user_id: &UserId,
) -> Result<Option<PersonRecord>, ApiError> {
    let Some(user) = state.stores.sql.user_by_id(user_id).await? else {
        return Ok(None);
    };
    let identities = state.stores.users.identities(user_id).await?;
    let mut sessions = Vec::new();
    for identity in &identities {
        sessions.extend(
            state
                .stores
                .sessions
                .list_identity(&identity.app_id, &identity.openid)
                .await?,
        );
    }
    sessions.sort_by_key(|s| std::cmp::Reverse(s.session.created_at));
    let merges = state.stores.sql.merges_into(user_id).await?;
    Ok(Some(PersonRecord {
        user,
        identities,
        sessions,
        merges,
    }))
}

/// Erases a person: profile, phone, avatar file, identities, merge records, every session
/// (in the database and in Redis) with its tokens, all at once, in one transaction with its
/// audit entry. A later login of the same WeChat user makes a new person. `false` when
/// there was no such person.
pub async fn delete_person(
    state: &AppState,
    user_id: &UserId,
    by: &Requester,
) -> Result<bool, ApiError> {
    let (state, user_id, by) = (state.clone(), user_id.clone(), by.clone());
    super::to_completion(async move { erase(&state, &user_id, &by).await }).await
}

async fn erase(state: &AppState, user_id: &UserId, by: &Requester) -> Result<bool, ApiError> {
    let stores = &state.stores;
    // Sessions in Redis go first, so the person is logged out even if the erasure below
    // fails (it can be asked again); and again afterwards, for any login that slipped in.
    let identities = stores.users.identities(user_id).await?;
    if stores.redis.is_some() {
        for identity in &identities {
            stores
                .sessions
                .delete_identity(&identity.app_id, &identity.openid)
                .await?;
        }
    }
    let entry = audit::entry(
        by,
        "user.delete",
        Some(audit::user_target(user_id)),
        None,
        state.now(),
    );
    let Some(erased) = stores.sql.erase_person(user_id, &entry).await? else {
        return Ok(false);
    };
    if stores.redis.is_some() {
        for identity in &erased.identities {
            stores
                .sessions
                .delete_identity(&identity.app_id, &identity.openid)
                .await?;
        }
    }
    if let Some(url) = &erased.user.profile.avatar_url {
        remove_avatar(state, url).await;
    }
    tracing::info!(%user_id, identities = erased.identities.len(), "person erased");
    Ok(true)
}

/// Deletes an uploaded avatar file that `url` links to (a link elsewhere is left alone).
async fn remove_avatar(state: &AppState, url: &str) {
    let Some(name) = own_avatar_name(&state.media.public_url, url) else {
        return;
    };
    let path = state.media.dir.join("avatars").join(name);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "could not delete an avatar");
        }
    }
}

/// The file name of an avatar this service stored, from its link; `None` for any other link.
fn own_avatar_name<'a>(public_url: &url::Url, url: &'a str) -> Option<&'a str> {
    let mut base = public_url.as_str().to_owned();
    if !base.ends_with('/') {
        base.push('/');
    }
    let name = url.strip_prefix(&base)?.strip_prefix("media/avatars/")?;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    plain.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::own_avatar_name;

    #[test]
    fn only_links_to_this_services_avatars_name_a_file() {
        let base = url::Url::parse("https://id.example.com/auth").unwrap();
        assert_eq!(
            own_avatar_name(&base, "https://id.example.com/auth/media/avatars/ab12.png"),
            Some("ab12.png")
        );
        assert_eq!(
            own_avatar_name(&base, "https://cdn.example.com/media/avatars/ab12.png"),
            None
        );
        assert_eq!(
            own_avatar_name(&base, "https://id.example.com/auth/media/avatars/../x"),
            None
        );
        assert_eq!(
            own_avatar_name(&base, "https://id.example.com/auth/media/avatars/a/b.png"),
            None
        );
    }
}
