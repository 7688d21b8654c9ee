//! Several mini programs, one person: linking by unionid, late linking and merges, racing
//! logins, and the WeChat access token shared between instances.

use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_sim::SimApp;
use wxauth_wechat::{SessionKey, crypto};

use crate::helpers::*;

const APP_A: &str = "wxaaaaaaaaaaaaaaa1";
const APP_B: &str = "wxbbbbbbbbbbbbbbb2";
const APP_U: &str = "wxccccccccccccccc3";

/// Two bound apps and one unbound one.
async fn three_apps() -> TestApp {
    let apps = [(APP_A, true), (APP_B, true), (APP_U, false)];
    spawn_app_with(Options {
        apps: apps
            .iter()
            .map(|(id, _)| ((*id).to_owned(), format!("secret-of-{id}")))
            .collect(),
        sim_apps: Some(
            apps.iter()
                .map(|(id, bound)| SimApp {
                    appid: (*id).to_owned(),
                    secret: format!("secret-of-{id}"),
                    bound: *bound,
                })
                .collect(),
        ),
        ..Options::default()
    })
    .await
}

async fn me(app: &TestApp, login: &Value) -> Value {
    let response = app.me(&token(login, "access_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn with_several_apps_login_must_name_a_known_app() {
    let app = three_apps().await;
    let code = app.code_in(APP_A, "amy").await;
    let response = app.post("/v1/auth/login", json!({ "code": code })).await;
    assert_error(response, StatusCode::BAD_REQUEST, "app_id_required").await;
    let response = app
        .post(
            "/v1/auth/login",
            json!({ "code": code, "app_id": "wxnope" }),
        )
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "unknown_app").await;
}

#[tokio::test]
async fn one_person_in_two_bound_apps_is_one_user() {
    let app = three_apps().await;
    let in_a = app.login_in(APP_A, "amy").await;
    assert_eq!(
        (in_a["is_new_user"].clone(), in_a["is_new_identity"].clone()),
        (json!(true), json!(true))
    );
    let in_b = app.login_in(APP_B, "amy").await;
    assert_eq!(in_b["user"]["id"], in_a["user"]["id"]);
    assert_eq!(
        (in_b["is_new_user"].clone(), in_b["is_new_identity"].clone()),
        (json!(false), json!(true))
    );
    assert_ne!(in_b["user"]["openid"], in_a["user"]["openid"]);
    assert_eq!(in_b["user"]["unionid"], in_a["user"]["unionid"]);
    let again = app.login_in(APP_B, "amy").await;
    assert_eq!(again["is_new_identity"], false);

    let me = me(&app, &in_b).await;
    let identities = me["identities"].as_array().unwrap();
    assert_eq!(identities.len(), 2);
    let apps: Vec<_> = identities
        .iter()
        .map(|i| i["app_id"].as_str().unwrap())
        .collect();
    assert_eq!(apps.len(), 2);
    assert!(apps.contains(&APP_A) && apps.contains(&APP_B));
    // An unbound app knows no unionid: the same human there is another person.
    let in_u = app.login_in(APP_U, "amy").await;
    assert_ne!(in_u["user"]["id"], in_a["user"]["id"]);
    assert_eq!(in_u["user"]["unionid"], Value::Null);
}

/// Logs `user` into the unbound app with a known session_key, sets a nickname there, then
/// into bound app A (a new person with the unionid). Returns (login U, login A, unionid).
async fn two_persons_for_one_human(app: &TestApp, user: &str, key: &str) -> (Value, Value, String) {
    app.sim(
        "/sim/users",
        json!({ "appid": APP_U, "user": user, "session_key": key }),
    )
    .await;
    let in_u = app.login_in(APP_U, user).await;
    let response = app
        .patch_authed(
            "/v1/me",
            &token(&in_u, "access_token"),
            json!({ "nickname": "Ben" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let in_a = app.login_in(APP_A, user).await;
    assert_ne!(in_a["user"]["id"], in_u["user"]["id"]);
    let response = app
        .patch_authed(
            "/v1/me",
            &token(&in_a, "access_token"),
            json!({ "nickname": "Benny", "gender": 1, "extra": { "gift": "claimed" } }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let unionid = in_a["user"]["unionid"].as_str().unwrap().to_owned();
    (in_u, in_a, unionid)
}

fn assert_merged(me: &Value, survivor: &Value) {
    assert_eq!(me["id"], survivor["user"]["id"]);
    // The survivor's own fields win; empty ones are filled from the merged person.
    assert_eq!(me["nickname"], "Ben");
    assert_eq!(me["gender"], 1);
    assert_eq!(me["extra"]["gift"], "claimed");
    assert_eq!(me["identities"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_unionid_in_decrypted_data_merges_the_two_persons_into_the_older() {
    let app = three_apps().await;
    let key = "HyVFkGl5F5OQWJZZaNzBBg==";
    let (in_u, in_a, unionid) = two_persons_for_one_human(&app, "ben", key).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let plain = json!({ "openId": in_u["user"]["openid"], "unionId": unionid, "nickName": "微信用户",
                        "watermark": { "appid": APP_U, "timestamp": now } });
    let iv = [1u8; 16];
    let body = json!({
        "encrypted_data": crypto::encrypt(&SessionKey::parse(key).unwrap(), &iv, plain.to_string().as_bytes()),
        "iv": crypto::encode_iv(&iv),
    });
    let response = app
        .post_authed("/v1/me/userinfo", &token(&in_u, "access_token"), body)
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Both sessions stay valid and now resolve to the survivor, the older person.
    assert_merged(&me(&app, &in_u).await, &in_u);
    assert_merged(&me(&app, &in_a).await, &in_u);
    assert_eq!(me(&app, &in_a).await["unionid"], unionid.as_str());
    let merges = app.backend.merges().await;
    assert_eq!(
        merges,
        vec![(
            in_a["user"]["id"].as_str().unwrap().to_owned(),
            in_u["user"]["id"].as_str().unwrap().to_owned()
        )]
    );
    // Logging in anywhere now gives the survivor.
    let later = app.login_in(APP_B, "ben").await;
    assert_eq!(later["user"]["id"], in_u["user"]["id"]);
}

#[tokio::test]
async fn a_unionid_in_decrypted_data_without_this_sessions_openid_links_nothing() {
    let app = three_apps().await;
    let key = "c2Vzc2lvbi1rZXktMTIzNA==";
    let (in_u, in_a, unionid) = two_persons_for_one_human(&app, "dan", key).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for plain in [
        json!({ "unionId": unionid, "nickName": "Dan",
                "watermark": { "appid": APP_U, "timestamp": now } }),
        json!({ "openId": in_a["user"]["openid"], "unionId": unionid, "nickName": "Dan",
                "watermark": { "appid": APP_U, "timestamp": now } }),
    ] {
        let iv = [2u8; 16];
        let body = json!({
            "encrypted_data": crypto::encrypt(&SessionKey::parse(key).unwrap(), &iv, plain.to_string().as_bytes()),
            "iv": crypto::encode_iv(&iv),
        });
        let response = app
            .post_authed("/v1/me/userinfo", &token(&in_u, "access_token"), body)
            .await;
        // Data naming another openid is refused; data naming none updates the profile only.
        if plain.get("openId").is_some() {
            assert_error(response, StatusCode::BAD_REQUEST, "openid_mismatch").await;
        } else {
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    assert_eq!(me(&app, &in_u).await["unionid"], Value::Null);
    assert_ne!(me(&app, &in_u).await["id"], me(&app, &in_a).await["id"]);
    assert!(app.backend.merges().await.is_empty());
}

#[tokio::test]
async fn a_unionid_appearing_at_login_merges_the_two_persons() {
    let app = three_apps().await;
    let key = "o0q0otL8aEzpcZL/FT9WsQ==";
    let (in_u, in_a, unionid) = two_persons_for_one_human(&app, "cat", key).await;
    // App U has since been bound to the open platform: WeChat now sends the unionid.
    let code = app.code_in(APP_U, "cat").await;
    let answer =
        json!({ "openid": in_u["user"]["openid"], "session_key": key, "unionid": unionid });
    app.fault(
        "/sns/jscode2session",
        json!({ "body": answer.to_string() }),
        1,
    )
    .await;
    let response = app
        .post("/v1/auth/login", json!({ "code": code, "app_id": APP_U }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let login: Value = response.json().await.unwrap();
    assert_eq!(login["user"]["id"], in_u["user"]["id"]);
    assert_eq!(login["user"]["unionid"], unionid.as_str());
    assert_merged(&me(&app, &in_a).await, &in_u);
    assert_eq!(app.backend.merges().await.len(), 1);
}

#[tokio::test]
async fn racing_first_logins_on_one_unionid_end_with_one_person() {
    let app = three_apps().await;
    let mut codes = Vec::new();
    for i in 0..20 {
        let app_id = if i % 2 == 0 { APP_A } else { APP_B };
        codes.push((app_id, app.code_in(app_id, "dan").await));
    }
    let logins = codes.into_iter().map(|(app_id, code)| {
        let http = app.http.clone();
        let url = app.url("/v1/auth/login");
        tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&json!({ "code": code, "app_id": app_id }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        })
    });
    let mut ids = std::collections::HashSet::new();
    for login in logins {
        ids.insert(
            login.await.unwrap()["user"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(app.backend.count("users").await, 1);
    assert_eq!(app.backend.count("identities").await, 2);
}

#[tokio::test]
async fn a_phone_number_is_bound_by_button_code_or_legacy_data_and_shown_masked() {
    let app = spawn_app().await;
    let login = app.login("eve").await;
    let access = token(&login, "access_token");
    let button = app
        .sim(
            "/sim/phone",
            json!({ "appid": app.app_id, "user": "eve", "phone": "13812345678" }),
        )
        .await;
    let first_code = button["code"].clone();
    let response = app
        .post_authed("/v1/me/phone", &access, json!({ "code": first_code }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(
        me["phone"],
        json!({ "country_code": "86", "number": "138****5678" })
    );
    let full: Value = app
        .get_authed("/v1/me?include=phone", &access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["phone"]["number"], "13812345678");

    // The legacy way: encrypted with the session_key.
    let button = app
        .sim(
            "/sim/phone",
            json!({ "appid": app.app_id, "user": "eve", "phone": "13900001111" }),
        )
        .await;
    let response = app
        .post_authed(
            "/v1/me/phone?include=phone",
            &access,
            json!({ "encryptedData": button["encryptedData"], "iv": button["iv"] }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["phone"]["number"], "13900001111");

    // A used button code, and a body with neither form.
    let response = app
        .post_authed("/v1/me/phone", &access, json!({ "code": first_code }))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "code_used").await;
    let response = app.post_authed("/v1/me/phone", &access, json!({})).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn an_invalid_access_token_during_a_phone_request_is_healed_by_one_refresh() {
    let app = spawn_app().await;
    let login = app.login("fay").await;
    let access = token(&login, "access_token");
    let bind = |code: Value| app.post_authed("/v1/me/phone", &access, json!({ "code": code }));
    let first = app
        .sim("/sim/phone", json!({ "appid": app.app_id, "user": "fay" }))
        .await;
    assert_eq!(bind(first["code"].clone()).await.status(), StatusCode::OK);

    app.fault(
        "/wxa/business/getuserphonenumber",
        json!({ "errcode": 40001 }),
        1,
    )
    .await;
    let second = app
        .sim("/sim/phone", json!({ "appid": app.app_id, "user": "fay" }))
        .await;
    assert_eq!(bind(second["code"].clone()).await.status(), StatusCode::OK);
    let stats = app.sim_stats().await;
    assert_eq!(stats["by_path"]["/wxa/business/getuserphonenumber"], 3);
    assert_eq!(stats["by_path"]["/cgi-bin/stable_token"], 2);
}

#[tokio::test]
async fn two_instances_on_one_store_fetch_one_wechat_token_per_app() {
    let a = spawn_app().await;
    let b = a.sibling().await;
    for (instance, user) in [(&a, "gus"), (&b, "hal"), (&a, "ivy"), (&b, "jon")] {
        let login = instance.login(user).await;
        let button = instance
            .sim(
                "/sim/phone",
                json!({ "appid": instance.app_id, "user": user }),
            )
            .await;
        let response = instance
            .post_authed(
                "/v1/me/phone",
                &token(&login, "access_token"),
                json!({ "code": button["code"] }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let stats = a.sim_stats().await;
    assert_eq!(
        stats["by_app"][&a.app_id]["/cgi-bin/stable_token"], 1,
        "{stats}"
    );
    assert_eq!(stats["by_path"]["/wxa/business/getuserphonenumber"], 4);
}

#[tokio::test]
async fn check_tells_whether_the_session_key_is_still_valid() {
    let app = spawn_app().await;
    let login = app.login("kim").await;
    let access = token(&login, "access_token");
    let check: Value = app
        .post_authed("/v1/auth/check", &access, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(check, json!({ "session_key_valid": true }));
    // wx.login again without telling the server: WeChat rotated the key.
    app.code("kim").await;
    let check: Value = app
        .post_authed("/v1/auth/check", &access, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(check, json!({ "session_key_valid": false }));
    let response = app
        .http
        .post(app.url("/v1/auth/check"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
