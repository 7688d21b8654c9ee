//! What wxauth does, without HTTP: handlers parse a request, call one function here and
//! serialize what it gives; the CLI's operator verbs call the same functions.
//!
//! - [`login`]: a `wx.login` code exchanged once, a person found or created, a session opened.
//! - [`sessions`]: a token authenticated into a [`sessions::Caller`], refresh, revoke, the
//!   session_key.
//! - [`account`]: a person's data exported, or erased whole.
//! - [`admin`]: what operators do through the admin API; [`admins`]: their keys.
//! - [`audit`]: the audit log.
//! - [`clients`]: the team's services and their credentials.
//! - [`people`]: profiles (validation, open data, phone, avatar) and the merge rule.

pub mod account;
pub mod admin;
pub mod admins;
pub mod audit;
pub mod clients;
pub mod login;
pub mod people;
pub mod sessions;

/// Runs an operation of several steps (writes in more than one store, then files) in a task
/// of its own and waits for it: a request dropped meanwhile (a client that hung up, a request
/// timeout) cannot stop it halfway.
pub(crate) async fn to_completion<T, F>(operation: F) -> Result<T, crate::error::ApiError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, crate::error::ApiError>> + Send + 'static,
{
    tokio::spawn(operation).await.map_err(|err| {
        crate::error::ApiError::Internal(anyhow::anyhow!("an operation did not finish: {err}"))
    })?
}
