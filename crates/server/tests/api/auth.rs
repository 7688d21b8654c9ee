//! Login: codes, users, and how WeChat's answers reach the client.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_first_login_returns_tokens_and_a_new_user() {
    let app = spawn_app().await;
    let login = app.login("alice").await;

    let access = token(&login, "access_token");
    let refresh = token(&login, "refresh_token");
    assert!(access.starts_with("wxa_") && access.len() == 47, "{access}");
    assert!(refresh.starts_with("wxr_") && refresh.len() == 47);
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 7200);
    assert_eq!(login["refresh_expires_in"], 30 * 86400);
    assert_eq!(login["is_new_user"], true);
    let user = &login["user"];
    assert_eq!(user["app_id"], app.app_id);
    assert!(user["openid"].as_str().unwrap().starts_with('o'));
    assert!(user["unionid"].is_string());
    assert!(user["id"].is_string());
    assert_eq!(user["gender"], 0);
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    // The session_key stays on the server.
    assert!(login.get("session_key").is_none());
    assert!(!login.to_string().contains("session_key"));
}

#[tokio::test]
async fn a_second_login_finds_the_same_user() {
    let app = spawn_app().await;
    let first = app.login("bob").await;
    let second = app.login("bob").await;
    assert_eq!(first["user"]["id"], second["user"]["id"]);
    assert_eq!(second["is_new_user"], false);
    assert_ne!(first["access_token"], second["access_token"]);
    let other = app.login("carol").await;
    assert_ne!(other["user"]["id"], first["user"]["id"]);
}

#[tokio::test]
async fn a_code_retried_within_its_five_minutes_is_exchanged_with_wechat_once() {
    let app = spawn_app().await;
    let code = app.code("dave").await;
    let first: serde_json::Value = app
        .post("/v1/auth/login", json!({ "code": code }))
        .await
        .json()
        .await
        .unwrap();
    // The response was lost; the client sends the same code again.
    let retry = app.post("/v1/auth/login", json!({ "code": code })).await;
    assert_eq!(retry.status(), StatusCode::OK);
    let retry: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(retry["user"]["id"], first["user"]["id"]);
    assert_eq!(
        (first["is_new_user"].clone(), retry["is_new_user"].clone()),
        (json!(true), json!(false))
    );
    assert_ne!(retry["access_token"], first["access_token"]);
    assert_eq!(app.sim_stats().await["by_path"]["/sns/jscode2session"], 1);

    // Five concurrent requests with one code: one exchange, one identity.
    let code = app.code("dave").await;
    let requests = (0..5).map(|_| {
        let http = app.http.clone();
        let url = app.url("/v1/auth/login");
        let code = code.clone();
        tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&json!({ "code": code }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<serde_json::Value>().await.unwrap()
        })
    });
    for request in requests {
        assert_eq!(request.await.unwrap()["user"]["id"], first["user"]["id"]);
    }
    assert_eq!(app.sim_stats().await["by_path"]["/sns/jscode2session"], 2);
}

#[tokio::test]
async fn a_code_already_used_elsewhere_is_rejected() {
    let app = spawn_app().await;
    let code = app.code("dave").await;
    // Another backend exchanged it directly with WeChat.
    let direct = app
        .http
        .get(format!(
            "{}/sns/jscode2session?appid={}&secret={}&js_code={code}&grant_type=authorization_code",
            app.sim.url,
            app.app_id,
            wechat_sim::DEMO_APP_SECRET
        ))
        .send()
        .await
        .unwrap();
    assert!(direct.text().await.unwrap().contains("openid"));
    let response = app.post("/v1/auth/login", json!({ "code": code })).await;
    let body = assert_error(response, StatusCode::BAD_REQUEST, "code_used").await;
    assert_eq!(body["error"]["wechat_errcode"], 40163);
}

#[tokio::test]
async fn a_retry_after_five_minutes_is_an_expired_code() {
    let app = spawn_app().await;
    let code = app.code("dave").await;
    let ok = app.post("/v1/auth/login", json!({ "code": code })).await;
    assert_eq!(ok.status(), StatusCode::OK);
    app.clock.advance(301);
    app.sim("/sim/time", json!({ "advance_secs": 301 })).await;
    let late = app.post("/v1/auth/login", json!({ "code": code })).await;
    assert_error(late, StatusCode::BAD_REQUEST, "invalid_code").await;
}

#[tokio::test]
async fn login_with_an_unknown_code_is_rejected() {
    let app = spawn_app().await;
    let response = app
        .post("/v1/auth/login", json!({ "code": "0a1b2c3d4e5f" }))
        .await;
    let body = assert_error(response, StatusCode::BAD_REQUEST, "invalid_code").await;
    assert_eq!(body["error"]["wechat_errcode"], 40029);
}

#[tokio::test]
async fn login_with_an_expired_code_is_rejected() {
    let app = spawn_app().await;
    let code = app.code("erin").await;
    app.sim("/sim/time", json!({ "advance_secs": 301 })).await;
    let response = app.post("/v1/auth/login", json!({ "code": code })).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_code").await;
}

#[tokio::test]
async fn fifty_concurrent_first_logins_of_one_user_make_one_user() {
    let app = spawn_app().await;
    let mut codes = Vec::new();
    for _ in 0..50 {
        codes.push(app.code("frank").await);
    }
    let logins = codes.into_iter().map(|code| {
        let http = app.http.clone();
        let url = app.url("/v1/auth/login");
        tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&json!({ "code": code }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<serde_json::Value>().await.unwrap()
        })
    });
    let mut ids = std::collections::HashSet::new();
    let mut new_users = 0;
    for login in logins {
        let login = login.await.unwrap();
        ids.insert(login["user"]["id"].as_str().unwrap().to_owned());
        if login["is_new_user"] == true {
            new_users += 1;
        }
    }
    assert_eq!(ids.len(), 1, "one person: {ids:?}");
    assert_eq!(new_users, 1);

    let users = app.backend.count("users").await;
    let sessions = app.backend.count_sessions().await;
    assert_eq!((users, sessions), (1, 50));
}

#[tokio::test]
async fn an_unknown_app_id_is_not_found() {
    let app = spawn_app().await;
    let code = app.code("gina").await;
    let response = app
        .post(
            "/v1/auth/login",
            json!({ "code": code, "app_id": "wx0000000000000000" }),
        )
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "unknown_app").await;
}

#[tokio::test]
async fn the_app_id_may_be_given_when_only_one_app_is_configured() {
    let app = spawn_app().await;
    let code = app.code("hank").await;
    let response = app
        .post(
            "/v1/auth/login",
            json!({ "code": code, "app_id": app.app_id }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_high_risk_user_is_refused() {
    let app = spawn_app().await;
    let response = app
        .login_through_fault("ivan", json!({ "errcode": 40226 }), 1)
        .await;
    let body = assert_error(response, StatusCode::FORBIDDEN, "risky_user").await;
    assert_eq!(body["error"]["wechat_errcode"], 40226);
}

#[tokio::test]
async fn wechats_rate_limit_becomes_429_with_retry_after() {
    let app = spawn_app().await;
    let response = app
        .login_through_fault("judy", json!({ "errcode": 45011 }), 1)
        .await;
    assert_eq!(response.headers()["retry-after"], "60");
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn a_busy_wechat_is_retried_and_then_reported() {
    let app = spawn_app().await;
    // Busy once: the retry succeeds.
    let response = app
        .login_through_fault("kate", json!({ "errcode": -1 }), 1)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Busy on every try: 503.
    let response = app
        .login_through_fault("kate", json!({ "errcode": -1 }), 3)
        .await;
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "wechat_busy").await;
}

#[tokio::test]
async fn a_slow_wechat_times_out_with_504_and_the_code_is_not_resent() {
    let app = spawn_app().await;
    let response = app
        .login_through_fault("leo", json!({ "delay_ms": 2500 }), 1)
        .await;
    assert_error(response, StatusCode::GATEWAY_TIMEOUT, "wechat_timeout").await;
    let stats = app.sim_stats().await;
    assert_eq!(stats["by_path"]["/sns/jscode2session"], 1);
}

#[tokio::test]
async fn a_broken_wechat_answer_is_a_502() {
    let app = spawn_app().await;
    let response = app
        .login_through_fault("mia", json!({ "http_status": 500 }), 1)
        .await;
    assert_error(response, StatusCode::BAD_GATEWAY, "wechat_unavailable").await;

    let response = app
        .login_through_fault("mia", json!({ "body": "<html>oops</html>" }), 1)
        .await;
    assert_error(response, StatusCode::BAD_GATEWAY, "wechat_unavailable").await;
}

#[tokio::test]
async fn a_wrong_app_secret_is_a_configuration_error_that_does_not_leak_the_secret() {
    let app = spawn_app_with(Options {
        apps: vec![("wxaaaaaaaaaaaaaaaa".into(), "the-wrong-secret".into())],
        sim_apps: Some(vec![wechat_sim::SimApp {
            appid: "wxaaaaaaaaaaaaaaaa".into(),
            secret: "the-right-secret".into(),
            bound: true,
        }]),
        ..Options::default()
    })
    .await;
    let code = app.code("nick").await;
    let response = app.post("/v1/auth/login", json!({ "code": code })).await;
    let body = assert_error(response, StatusCode::BAD_GATEWAY, "wechat_config_error").await;
    assert_eq!(body["error"]["wechat_errcode"], 40125);
    assert!(!body.to_string().contains("the-wrong-secret"));
}
