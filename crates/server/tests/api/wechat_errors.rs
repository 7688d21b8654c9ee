//! WeChat errcodes an operator must act on get their own error codes, with a message that
//! says where to fix them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Logs `user` in and asks WeChat for the phone number behind a fresh button code.
async fn bind_phone(app: &TestApp, user: &str) -> (String, reqwest::Response) {
    let login = app.login(user).await;
    let access = token(&login, "access_token");
    let button = app
        .sim("/sim/phone", json!({ "appid": app.app_id, "user": user }))
        .await;
    let response = app
        .post_authed("/v1/me/phone", &access, json!({ "code": button["code"] }))
        .await;
    (access, response)
}

#[tokio::test]
async fn a_server_ip_off_the_whitelist_is_a_502_saying_where_to_add_it() {
    let app = spawn_app().await;
    app.fault("/cgi-bin/stable_token", json!({ "errcode": 40164 }), 1)
        .await;
    let (access, response) = bind_phone(&app, "ida").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers().get("retry-after"), None);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error": {
            "code": "wechat_ip_not_whitelisted",
            "message": "WeChat refused this server's IP address: add this server's public IP \
                        to the mini program's IP whitelist in the WeChat admin console \
                        (开发管理 → 开发设置 → IP白名单)",
            "wechat_errcode": 40164,
        }})
    );
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["phone"], Value::Null, "nothing stored: {me}");

    // Once the IP is listed, the next attempt goes through.
    let (access, response) = bind_phone(&app, "ida").await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_ne!(me["phone"], Value::Null, "stored now: {me}");
}

#[tokio::test]
async fn a_used_up_phone_number_quota_is_a_503_of_its_own() {
    let app = spawn_app().await;
    app.fault(
        "/wxa/business/getuserphonenumber",
        json!({ "errcode": 1_400_001 }),
        1,
    )
    .await;
    let (access, response) = bind_phone(&app, "jan").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Retrying soon does not help: the owner has to top the quota up.
    assert_eq!(response.headers().get("retry-after"), None);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error": {
            "code": "phone_quota_exhausted",
            "message": "the mini program's phone-number quota is used up: phone numbers cannot \
                        be fetched until its owner tops the quota up in the WeChat admin console",
            "wechat_errcode": 1_400_001,
        }})
    );
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["phone"], Value::Null, "nothing stored: {me}");
}
