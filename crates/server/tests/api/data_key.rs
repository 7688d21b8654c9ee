//! Changing the data key: live sessions keep working under the previous key, `wxauth
//! rotate-data-key` seals everything again, and then the previous key can go.

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;

const NEW_DATA_KEY: &str = "bmV3LWRhdGEta2V5LTMyLWJ5dGVzLWxvbmctLXl5eXk=";

/// Sends open data encrypted with the user's current session_key: it decrypts only if the
/// service can still open the session_key it sealed.
async fn send_user_info(app: &TestApp, access: &str, user: &str, nickname: &str) -> StatusCode {
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": user, "profile": { "nickName": nickname } }),
        )
        .await;
    app.post_authed("/v1/me/userinfo", access, info)
        .await
        .status()
}

async fn rotate_data_key(app: &TestApp) -> String {
    let mut env = app.command_env();
    env.retain(|(name, _)| name != "WXAUTH_SECURITY__DATA_KEY");
    env.push(("WXAUTH_SECURITY__DATA_KEY".into(), NEW_DATA_KEY.into()));
    env.push((
        "WXAUTH_SECURITY__PREVIOUS_DATA_KEYS".into(),
        format!("[\"{TEST_DATA_KEY}\"]"),
    ));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .arg("rotate-data-key")
        .envs(env)
        .output()
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    said
}

#[tokio::test]
async fn a_data_key_rotation_keeps_live_sessions_and_then_needs_no_previous_key() {
    let app = spawn_app().await;
    let login = app.login("kim").await;
    let access = token(&login, "access_token");
    assert_eq!(
        send_user_info(&app, &access, "kim", "one").await,
        StatusCode::OK
    );

    // The new key seals from now on; the old one only opens.
    let app = app
        .restart_with(|config| {
            config.security.data_key = Some(SecretString::from(NEW_DATA_KEY));
            config.security.previous_data_keys = vec![SecretString::from(TEST_DATA_KEY)];
        })
        .await;
    assert_eq!(
        send_user_info(&app, &access, "kim", "two").await,
        StatusCode::OK
    );
    // A session started now is sealed under the new key.
    let later = app.login("lee").await;

    let said = rotate_data_key(&app).await;
    let place = if app.backend.redis_url.is_some() {
        "redis sessions"
    } else {
        "sessions"
    };
    let line = said
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{place} ")))
        .unwrap_or_else(|| panic!("no {place} line: {said}"));
    assert!(line.contains("1 sealed again, 1 current already"), "{line}");
    assert!(said.contains("can be removed"), "{said}");
    assert!(!said.contains(NEW_DATA_KEY) && !said.contains(TEST_DATA_KEY));
    // Again: nothing left to do.
    let again = rotate_data_key(&app).await;
    assert!(again.contains("0 sealed again"), "{again}");

    // Without the previous key, both sessions still open their session_keys.
    let app = app
        .restart_with(|config| config.security.previous_data_keys.clear())
        .await;
    assert_eq!(
        send_user_info(&app, &access, "kim", "three").await,
        StatusCode::OK
    );
    let later_access = token(&later, "access_token");
    assert_eq!(
        send_user_info(&app, &later_access, "lee", "four").await,
        StatusCode::OK
    );
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["nickname"], "three");
}

#[tokio::test]
async fn a_changed_data_key_without_the_previous_one_is_refused_with_what_to_do() {
    let app = spawn_app().await;
    let _ = app.login("max").await;
    let mut config = app.config();
    config.security.data_key = Some(SecretString::from(NEW_DATA_KEY));
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    // What the old key sealed (the JWT signing key) cannot be opened: the service says how to
    // change the key instead of starting with secrets it cannot read.
    let refused = wxauth::startup::Application::build(config)
        .await
        .err()
        .expect("the service refuses to start");
    let said = format!("{refused:#}");
    assert!(said.contains("security.previous_data_keys"), "{said}");
    assert!(said.contains("rotate-data-key"), "{said}");
}
