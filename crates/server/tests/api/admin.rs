//! The admin API: operators with `[[admins]]` keys find persons, see and revoke their
//! sessions, erase them, and read the audit log; admin keys and user tokens never stand in
//! for each other.

use reqwest::StatusCode;
use wxauth::config::AdminConfig;
use wxauth::service::admins::NewAdminKey;

use crate::helpers::{Options, TestApp, assert_error, spawn_app_with, token};

/// A service with one operator, "ops"; returns it and the operator's key.
pub async fn spawn_with_admin() -> (TestApp, String) {
    let new = NewAdminKey::generate();
    let key_hash = new.key_hash.clone();
    let app = spawn_app_with(Options {
        tweak: Box::new(move |config| {
            config.admins.push(AdminConfig {
                name: "ops".to_owned(),
                key_hash,
            });
        }),
        ..Options::default()
    })
    .await;
    (app, new.key)
}

#[tokio::test]
async fn an_admin_key_is_not_a_user_token() {
    let (app, key) = spawn_with_admin().await;
    let login = app.login("alice").await;
    assert_eq!(
        app.me(&token(&login, "access_token")).await.status(),
        StatusCode::OK
    );
    assert_error(app.me(&key).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
