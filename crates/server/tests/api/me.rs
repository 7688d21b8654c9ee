//! The logged-in user and open-data decryption.

use reqwest::StatusCode;
use serde_json::{Value, json};
use wxauth_wechat::{SessionKey, crypto};

use crate::helpers::*;

/// Encrypts `plain` under `session_key` as WeChat would, in the API's request shape.
fn encrypted(session_key: &str, plain: &Value) -> Value {
    let key = SessionKey::parse(session_key).unwrap();
    let iv = [3u8; 16];
    json!({
        "encrypted_data": crypto::encrypt(&key, &iv, plain.to_string().as_bytes()),
        "iv": crypto::encode_iv(&iv),
    })
}

/// Pins a user's session_key in the simulator and logs them in; returns (login, openid).
async fn login_with_pinned_key(app: &TestApp, user: &str, key: &str) -> (Value, String) {
    let person = app
        .sim(
            "/sim/users",
            json!({ "appid": app.app_id, "user": user, "session_key": key }),
        )
        .await;
    let login = app.login(user).await;
    (login, person["openid"].as_str().unwrap().to_owned())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn me_shows_the_logged_in_user() {
    let app = spawn_app().await;
    let login = app.login("alice").await;
    let response = app.me(&token(&login, "access_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["id"], login["user"]["id"]);
    assert_eq!(me["openid"], login["user"]["openid"]);
    assert_eq!(me["app_id"], app.app_id);
    assert!(me.get("updated_at").is_some());
    assert!(!me.to_string().contains("session_key"));
}

#[tokio::test]
async fn user_info_from_wechat_updates_the_profile_with_emoji_intact() {
    let app = spawn_app().await;
    let login = app.login("bob").await;
    let access = token(&login, "access_token");
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "bob",
                    "profile": { "nickName": "小明😀🎉", "city": "Shenzhen", "gender": 1 } }),
        )
        .await;
    // Sent as WeChat names the fields, the way a mini program forwards them.
    let response = app.post_authed("/v1/me/userinfo", &access, info).await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["nickname"], "小明😀🎉");
    assert_eq!(me["city"], "Shenzhen");
    assert_eq!(me["gender"], 1);
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["nickname"], "小明😀🎉");
}

#[tokio::test]
async fn the_same_user_info_again_keeps_the_profile_but_undoes_a_change_made_since() {
    let app = spawn_app().await;
    let login = app.login("carol").await;
    let access = token(&login, "access_token");
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "carol",
                    "profile": { "nickName": "Carol", "city": "Wuhan", "gender": 2 } }),
        )
        .await;
    let first: Value = app
        .post_authed("/v1/me/userinfo", &access, info.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["nickname"], "Carol");
    // Sent again later: the same person, not written again.
    app.clock.advance(10);
    let again = app
        .post_authed("/v1/me/userinfo", &access, info.clone())
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["nickname"], "Carol");
    assert_eq!(again["updated_at"], first["updated_at"]);
    assert_eq!(again["identities"], first["identities"]);
    // Changed meanwhile by the user: the same data sets it back.
    let patched = app
        .patch_authed("/v1/me", &access, json!({ "nickname": "Caz" }))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let back: Value = app
        .post_authed("/v1/me/userinfo", &access, info)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(back["nickname"], "Carol");
    // As stored: an instance that shares no memory with this one reads the same.
    let other = app.sibling().await;
    let me: Value = other.me(&access).await.json().await.unwrap();
    assert_eq!(me["nickname"], "Carol");
    assert_eq!(me["city"], "Wuhan");
    // RFC 3339 in UTC: ordered as text.
    assert!(me["updated_at"].as_str().unwrap() > first["updated_at"].as_str().unwrap());
}

#[tokio::test]
async fn overlong_fields_in_wechat_data_are_cut_to_fit_their_columns() {
    let app = spawn_app().await;
    let login = app.login("olga").await;
    let access = token(&login, "access_token");
    let city = "深".repeat(300);
    let language = "z".repeat(100);
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "olga",
                    "profile": { "nickName": "😀".repeat(80), "city": city,
                                 "province": "p".repeat(256), "country": "c".repeat(999),
                                 "language": language } }),
        )
        .await;
    let response = app.post_authed("/v1/me/userinfo", &access, info).await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["city"], "深".repeat(255));
    assert_eq!(me["province"], "p".repeat(255));
    assert_eq!(me["country"], "c".repeat(255));
    assert_eq!(me["language"], "z".repeat(64));
    assert_eq!(me["nickname"], "😀".repeat(64));
}

#[tokio::test]
async fn data_under_a_rotated_session_key_fails_until_the_new_code_is_sent_with_it() {
    let app = spawn_app().await;
    let login = app.login("carol").await;
    let access = token(&login, "access_token");
    // The mini program calls wx.login again: WeChat rotates the session_key.
    let fresh_code = app.code("carol").await;
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "carol",
                                      "profile": { "nickName": "Carol" } }),
        )
        .await;

    let response = app
        .post_authed("/v1/me/userinfo", &access, info.clone())
        .await;
    let body = assert_error(response, StatusCode::BAD_REQUEST, "decrypt_failed").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wx.login")
    );

    let mut with_code = info;
    with_code["code"] = json!(fresh_code);
    let response = app.post_authed("/v1/me/userinfo", &access, with_code).await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["nickname"], "Carol");

    // The session now holds the new key: later data decrypts without a code.
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "carol",
                                      "profile": { "nickName": "Carol 2" } }),
        )
        .await;
    let response = app.post_authed("/v1/me/userinfo", &access, info).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_code_of_another_user_is_refused_with_the_data() {
    let app = spawn_app().await;
    let login = app.login("dave").await;
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "dave" }),
        )
        .await;
    let mut body = info;
    body["code"] = json!(app.code("mallory").await);
    let response = app
        .post_authed("/v1/me/userinfo", &token(&login, "access_token"), body)
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "identity_mismatch").await;
}

#[tokio::test]
async fn garbage_and_tampered_data_all_answer_decrypt_failed() {
    let app = spawn_app().await;
    let login = app.login("erin").await;
    let access = token(&login, "access_token");
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "erin" }),
        )
        .await;
    let data = info["encryptedData"].as_str().unwrap().to_owned();
    let mut flipped = data.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let cases = [
        json!({ "encrypted_data": "not base64!", "iv": info["iv"] }),
        json!({ "encrypted_data": data, "iv": "AAAA" }),
        json!({ "encrypted_data": "QUJD", "iv": info["iv"] }),
        json!({ "encrypted_data": "", "iv": info["iv"] }),
        json!({ "encrypted_data": String::from_utf8(flipped).unwrap(), "iv": info["iv"] }),
    ];
    for body in cases {
        let response = app.post_authed("/v1/me/userinfo", &access, body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "decrypt_failed").await;
    }
}

#[tokio::test]
async fn data_for_another_app_old_data_and_another_users_data_are_refused() {
    let app = spawn_app().await;
    let key = "HyVFkGl5F5OQWJZZaNzBBg==";
    let (login, openid) = login_with_pinned_key(&app, "fay", key).await;
    let access = token(&login, "access_token");

    let other_app = encrypted(
        key,
        &json!({ "openId": openid, "nickName": "x",
        "watermark": { "appid": "wx0000000000000000", "timestamp": now() } }),
    );
    let response = app.post_authed("/v1/me/userinfo", &access, other_app).await;
    assert_error(response, StatusCode::BAD_REQUEST, "watermark_mismatch").await;

    let stale = encrypted(
        key,
        &json!({ "openId": openid, "nickName": "x",
        "watermark": { "appid": app.app_id, "timestamp": now() - 700 } }),
    );
    let response = app.post_authed("/v1/me/userinfo", &access, stale).await;
    assert_error(response, StatusCode::BAD_REQUEST, "data_expired").await;

    let someone_else = encrypted(
        key,
        &json!({ "openId": "oSomeoneElse000000000000000", "nickName": "x",
        "watermark": { "appid": app.app_id, "timestamp": now() } }),
    );
    let response = app
        .post_authed("/v1/me/userinfo", &access, someone_else)
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "openid_mismatch").await;

    let fine = encrypted(
        key,
        &json!({ "openId": openid, "nickName": "Fay",
        "watermark": { "appid": app.app_id, "timestamp": now() } }),
    );
    let response = app.post_authed("/v1/me/userinfo", &access, fine).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn freshness_is_judged_by_the_service_clock() {
    let app = spawn_app().await;
    let login = app.login("gus").await;
    let access = token(&login, "access_token");
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "gus" }),
        )
        .await;
    app.clock.advance(11 * 60);
    let response = app.post_authed("/v1/me/userinfo", &access, info).await;
    assert_error(response, StatusCode::BAD_REQUEST, "data_expired").await;
}

#[tokio::test]
async fn a_raw_data_signature_is_checked_when_given() {
    let app = spawn_app().await;
    let login = app.login("hal").await;
    let access = token(&login, "access_token");
    let info = app
        .sim(
            "/sim/userinfo",
            json!({ "appid": app.app_id, "user": "hal" }),
        )
        .await;

    let mut forged = info.clone();
    forged["rawData"] = json!("{\"nickName\":\"forged\"}");
    let response = app.post_authed("/v1/me/userinfo", &access, forged).await;
    assert_error(response, StatusCode::BAD_REQUEST, "bad_signature").await;

    let mut half = info.clone();
    half.as_object_mut().unwrap().remove("signature");
    let response = app.post_authed("/v1/me/userinfo", &access, half).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;

    let response = app.post_authed("/v1/me/userinfo", &access, info).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn wechats_published_sample_decrypts_through_the_api() {
    let app = spawn_app_with(Options {
        apps: vec![(SAMPLE_APP_ID.into(), "sample-secret".into())],
        // Unbound: login gives no unionid, so the one in the data is recorded.
        sim_apps: Some(vec![wechat_sim::SimApp {
            appid: SAMPLE_APP_ID.into(),
            secret: "sample-secret".into(),
            bound: false,
        }]),
        tweak: Box::new(|config| {
            config.security.watermark_max_age = std::time::Duration::ZERO;
        }),
    })
    .await;
    app.sim(
        "/sim/users",
        json!({ "appid": SAMPLE_APP_ID, "user": "band",
                "openid": SAMPLE_OPENID, "session_key": SAMPLE_SESSION_KEY }),
    )
    .await;
    let login = app.login("band").await;
    assert_eq!(login["user"]["openid"], SAMPLE_OPENID);
    assert_eq!(login["user"]["unionid"], Value::Null);
    let response = app
        .post_authed(
            "/v1/me/userinfo",
            &token(&login, "access_token"),
            json!({ "encrypted_data": SAMPLE_ENCRYPTED, "iv": SAMPLE_IV }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["nickname"], "Band");
    assert_eq!(me["city"], "Guangzhou");
    assert_eq!(me["unionid"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
}
