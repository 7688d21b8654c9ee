//! Tokens and sessions: bearer checks, refresh rotation and reuse, logout, expiry, restart.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.post(
        "/v1/auth/refresh",
        json!({ "refresh_token": refresh_token }),
    )
    .await
}

#[tokio::test]
async fn a_missing_or_bad_bearer_token_is_unauthorized_with_a_challenge() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/v1/me")).send().await.unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"wxauth\""
    );
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    for header in [
        "Bearer",
        "Basic abc",
        "Bearer wxa_nonsense",
        "Bearer wxr_abc",
        "Bearer 😀",
    ] {
        let response = app
            .http
            .get(app.url("/v1/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("www-authenticate"));
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

#[tokio::test]
async fn refresh_rotates_the_pair() {
    let app = spawn_app().await;
    let login = app.login("alice").await;
    let response = refresh(&app, &token(&login, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.unwrap();
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 7200);
    let new_access = token(&pair, "access_token");
    assert_ne!(new_access, token(&login, "access_token"));
    assert_ne!(
        token(&pair, "refresh_token"),
        token(&login, "refresh_token")
    );
    assert_eq!(app.me(&new_access).await.status(), StatusCode::OK);
    // The new refresh token works once more.
    let again = refresh(&app, &token(&pair, "refresh_token")).await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_refresh_token_used_twice_revokes_the_whole_session() {
    let app = spawn_app().await;
    let login = app.login("bob").await;
    let first_refresh = token(&login, "refresh_token");
    let pair: Value = refresh(&app, &first_refresh).await.json().await.unwrap();

    // Past tokens.refresh_grace (10 s), a second use is reuse.
    app.clock.advance(11);
    let reuse = refresh(&app, &first_refresh).await;
    assert_error(reuse, StatusCode::UNAUTHORIZED, "token_revoked").await;
    // Every token of the session is dead now, old and new.
    for access in [token(&login, "access_token"), token(&pair, "access_token")] {
        assert_error(
            app.me(&access).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }
    let rotated = refresh(&app, &token(&pair, "refresh_token")).await;
    assert_error(rotated, StatusCode::UNAUTHORIZED, "token_revoked").await;
    // Another session of the same user is untouched.
    let other = app.login("bob").await;
    assert_eq!(
        app.me(&token(&other, "access_token")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_refresh_expires_the_access_token_it_replaces() {
    let app = spawn_app().await;
    let login = app.login("rhea").await;
    let old_access = token(&login, "access_token");
    let pair: Value = refresh(&app, &token(&login, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_error(
        app.me(&old_access).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;
    assert_eq!(
        app.me(&token(&pair, "access_token")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_same_refresh_token_again_within_the_grace_gets_the_same_pair() {
    let app = spawn_app().await;
    let login = app.login("gus").await;
    let used = token(&login, "refresh_token");
    // A double submit: both presenters at once.
    let (a, b) = tokio::join!(refresh(&app, &used), refresh(&app, &used));
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(b.status(), StatusCode::OK);
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(a["access_token"], b["access_token"]);
    assert_eq!(a["refresh_token"], b["refresh_token"]);
    // A retry after a lost answer, 9 s later: still the same pair, its lifetimes counted on.
    app.clock.advance(9);
    let retry: Value = refresh(&app, &used).await.json().await.unwrap();
    assert_eq!(retry["access_token"], a["access_token"]);
    assert_eq!(retry["refresh_token"], a["refresh_token"]);
    assert_eq!(retry["expires_in"], 7200 - 9);
    let access = token(&a, "access_token");
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    // The successor moves the session on as usual.
    let next = refresh(&app, &token(&a, "refresh_token")).await;
    assert_eq!(next.status(), StatusCode::OK);
    // Past the grace the first token is reuse again, and ends the session.
    app.clock.advance(2);
    let reuse = refresh(&app, &used).await;
    assert_error(reuse, StatusCode::UNAUTHORIZED, "token_revoked").await;
    let next: Value = next.json().await.unwrap();
    assert_error(
        app.me(&token(&next, "access_token")).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
}

#[tokio::test]
async fn without_a_refresh_grace_a_second_use_is_reuse_at_once() {
    let app = spawn_app_with(Options {
        tweak: Box::new(|config| config.tokens.refresh_grace = std::time::Duration::ZERO),
        ..Options::default()
    })
    .await;
    let login = app.login("hal").await;
    let used = token(&login, "refresh_token");
    assert_eq!(refresh(&app, &used).await.status(), StatusCode::OK);
    let reuse = refresh(&app, &used).await;
    assert_error(reuse, StatusCode::UNAUTHORIZED, "token_revoked").await;
    if app.backend.redis_url.is_none() {
        assert_eq!(app.backend.count("refresh_grace").await, 0);
    }
}

#[tokio::test]
async fn logout_by_refresh_token_needs_no_live_access_token() {
    let app = spawn_app().await;
    let login = app.login("ivy").await;
    let access = token(&login, "access_token");
    let refresh_token = token(&login, "refresh_token");
    // Hours later: the access token has expired; the session and its refresh token have not.
    app.clock.advance(3 * 3600);
    let response = app
        .post("/v1/auth/logout", json!({ "refresh_token": refresh_token }))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let again = refresh(&app, &refresh_token).await;
    assert_error(again, StatusCode::UNAUTHORIZED, "token_revoked").await;
    assert_error(
        app.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    // Logging out an ended session again is done already.
    let twice = app
        .post("/v1/auth/logout", json!({ "refresh_token": refresh_token }))
        .await;
    assert_eq!(twice.status(), StatusCode::NO_CONTENT);

    for (body, code) in [
        (
            json!({ "refresh_token": "wxr_doesnotexist" }),
            "unauthorized",
        ),
        (json!({ "refresh_token": access }), "unauthorized"),
        (json!({}), "unauthorized"),
        (json!({ "refresh_token": 5 }), "invalid_request"),
    ] {
        let status = if code == "unauthorized" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_error(app.post("/v1/auth/logout", body).await, status, code).await;
    }
}

#[tokio::test]
async fn logout_with_an_expired_access_token_ends_its_live_session() {
    let app = spawn_app().await;
    let login = app.login("jon").await;
    let access = token(&login, "access_token");
    app.clock.advance(3 * 3600);
    assert_error(
        app.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;
    let response = app.post_authed("/v1/auth/logout", &access, json!({})).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let again = refresh(&app, &token(&login, "refresh_token")).await;
    assert_error(again, StatusCode::UNAUTHORIZED, "token_revoked").await;
    // Without any body at all, too.
    let other = app.login("jon").await;
    app.clock.advance(3 * 3600);
    let response = app
        .http
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(token(&other, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let again = refresh(&app, &token(&other, "refresh_token")).await;
    assert_error(again, StatusCode::UNAUTHORIZED, "token_revoked").await;
}

#[tokio::test]
async fn an_unknown_refresh_token_is_unauthorized() {
    let app = spawn_app().await;
    for value in ["wxr_doesnotexist", "wxa_notarefreshtoken", ""] {
        let response = refresh(&app, value).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

#[tokio::test]
async fn logout_revokes_the_session_at_once() {
    let app = spawn_app().await;
    let login = app.login("carol").await;
    let access = token(&login, "access_token");
    let response = app.post_authed("/v1/auth/logout", &access, json!({})).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let me = app.me(&access).await;
    let challenge = me.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_error(me, StatusCode::UNAUTHORIZED, "token_revoked").await;
    let again = refresh(&app, &token(&login, "refresh_token")).await;
    assert_error(again, StatusCode::UNAUTHORIZED, "token_revoked").await;
    let logout_again = app.post_authed("/v1/auth/logout", &access, json!({})).await;
    assert_error(logout_again, StatusCode::UNAUTHORIZED, "token_revoked").await;
}

#[tokio::test]
async fn sessions_revoked_by_the_admin_command_are_refused_by_the_running_service() {
    let app = spawn_app().await;
    let login = app.login("cleo").await;
    let access = token(&login, "access_token");
    // Used first, so that whatever the service keeps of the token is warm.
    for _ in 0..3 {
        assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    }
    let user_id = login["user"]["id"].as_str().unwrap().to_owned();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .args(["revoke-sessions", "--user", &user_id])
        .envs(app.command_env())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Another process wrote the revocation: the service sees it within a second.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let me = app.me(&access).await;
        if me.status() == StatusCode::UNAUTHORIZED {
            assert_error(me, StatusCode::UNAUTHORIZED, "token_revoked").await;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked token still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_access_token_expires_after_its_ttl_and_refresh_restores_access() {
    let app = spawn_app().await;
    let login = app.login("dave").await;
    let access = token(&login, "access_token");
    app.clock.advance(7199);
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    app.clock.advance(1);
    assert_error(
        app.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;

    let pair: Value = refresh(&app, &token(&login, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.me(&token(&pair, "access_token")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_refresh_token_expires_after_its_ttl() {
    let app = spawn_app().await;
    let login = app.login("erin").await;
    app.clock.advance(30 * 86400);
    let response = refresh(&app, &token(&login, "refresh_token")).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[tokio::test]
async fn a_session_ends_at_its_maximum_age_however_often_it_is_refreshed() {
    let app = spawn_app_with(Options {
        tweak: Box::new(|config| {
            config.tokens.session_max_age = std::time::Duration::from_secs(3 * 3600);
        }),
        ..Options::default()
    })
    .await;
    let login = app.login("fay").await;
    app.clock.advance(2 * 3600);
    let pair: Value = refresh(&app, &token(&login, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    // Only an hour of the session is left, and the new tokens say so.
    assert_eq!(pair["expires_in"], 3600);
    assert_eq!(pair["refresh_expires_in"], 3600);
    app.clock.advance(3600);
    let access = token(&pair, "access_token");
    assert_error(
        app.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;
    let response = refresh(&app, &token(&pair, "refresh_token")).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[tokio::test]
async fn a_restart_keeps_sessions_valid_and_revoked_ones_revoked() {
    let app = spawn_app().await;
    let kept = app.login("gus").await;
    let ended = app.login("gus").await;
    let ended_access = token(&ended, "access_token");
    app.post_authed("/v1/auth/logout", &ended_access, json!({}))
        .await;

    let app = app.restart().await;
    assert_eq!(
        app.me(&token(&kept, "access_token")).await.status(),
        StatusCode::OK
    );
    assert_error(
        app.me(&ended_access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let response = refresh(&app, &token(&kept, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn only_token_hashes_and_sealed_session_keys_are_stored() {
    let app = spawn_app().await;
    app.sim(
        "/sim/users",
        json!({ "appid": app.app_id, "user": "hal", "session_key": SAMPLE_SESSION_KEY }),
    )
    .await;
    let login = app.login("hal").await;
    let text = app.backend.stored_text().await;
    assert!(text.len() > 100, "something was stored: {text}");
    assert!(!text.contains(&token(&login, "access_token")[4..]));
    assert!(!text.contains(&token(&login, "refresh_token")[4..]));
    assert!(!text.contains(SAMPLE_SESSION_KEY));
}

#[tokio::test]
async fn an_operator_can_revoke_every_session_of_a_user_at_once() {
    let app = spawn_app().await;
    let first = app.login("ivy").await;
    let second = app.login("ivy").await;
    let other = app.login("jay").await;
    let user_id = first["user"]["id"].as_str().unwrap();
    let revoked = wxauth::admin::revoke_user_sessions(&app.state.stores, user_id, app.clock_now())
        .await
        .unwrap();
    assert_eq!(revoked, Some(2));
    for login in [&first, &second] {
        assert_error(
            app.me(&token(login, "access_token")).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
        let response = refresh(&app, &token(login, "refresh_token")).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "token_revoked").await;
    }
    assert_eq!(
        app.me(&token(&other, "access_token")).await.status(),
        StatusCode::OK
    );
    // A new login works, and an unknown user is reported as such.
    let again = app.login("ivy").await;
    assert_eq!(
        app.me(&token(&again, "access_token")).await.status(),
        StatusCode::OK
    );
    let none =
        wxauth::admin::revoke_user_sessions(&app.state.stores, "no-such-user", app.clock_now())
            .await
            .unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn nothing_accumulates_after_sessions_expire() {
    let app = spawn_app().await;
    let kept = app.login("kay").await;
    let idle = app.login("lou").await;
    let _ = refresh(&app, &token(&idle, "refresh_token")).await;
    // `kept` is refreshed again after 8 days; `idle` is never used again.
    app.clock.advance(8 * 86400);
    let pair: Value = refresh(&app, &token(&kept, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    assert!(pair["refresh_token"].is_string(), "{pair}");
    app.clock.advance(23 * 86400);
    let now = app.clock_now();
    let purged = app
        .state
        .stores
        .sessions
        .purge_expired(now, now - 30 * 86400)
        .await
        .unwrap();
    if app.backend.redis_url.is_some() {
        // Redis deletes by itself: every key it holds for us must carry a TTL.
        assert_eq!(purged, 0);
        assert!(app.backend.keys_without_ttl().await.is_empty());
    } else {
        assert!(purged > 0);
        // Only the session still in use is left.
        assert_eq!(app.backend.count_sessions().await, 1);
        // Its live refresh token, and its last access token (expired, kept so that it still
        // logs its session out); the used refresh token and older access tokens have gone.
        assert_eq!(app.backend.count("tokens").await, 2);
        assert_eq!(app.backend.count("refresh_grace").await, 0);
    }
}

async fn login_from(app: &TestApp, forwarded: &str) {
    let code = app.code("max").await;
    let response = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", forwarded)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_client_ip_comes_from_forwarding_headers_only_behind_a_trusted_proxy() {
    let direct = spawn_app().await;
    login_from(&direct, "203.0.113.7").await;
    assert_eq!(
        direct.backend.session_ips().await,
        vec![Some("127.0.0.1".to_owned())]
    );

    let behind_lb = spawn_app_with(Options {
        tweak: Box::new(|config| config.server.trusted_proxies = vec!["127.0.0.0/8".into()]),
        ..Options::default()
    })
    .await;
    login_from(&behind_lb, "203.0.113.7, 127.0.0.1").await;
    assert_eq!(
        behind_lb.backend.session_ips().await,
        vec![Some("203.0.113.7".to_owned())]
    );
}
