//! Account deletion (注销: `DELETE /v1/me`, `POST /v1/me/delete`, and an operator's
//! `DELETE /v1/admin/users/{id}`) and the data export (`GET /v1/me/export`).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::spawn_with_admin;
use crate::helpers::{TestApp, assert_error, token};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01";

/// Uploads an avatar; returns the path of the stored file.
async fn upload_avatar(app: &TestApp, access: &str) -> std::path::PathBuf {
    let response = app
        .http
        .post(app.url("/v1/me/avatar"))
        .bearer_auth(access)
        .header("content-type", "image/png")
        .body(PNG)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    let url = me["avatar_url"].as_str().unwrap();
    let name = url.rsplit('/').next().unwrap();
    let path = app.backend.dir().join("media/avatars").join(name);
    assert!(path.exists(), "{}", path.display());
    path
}

#[tokio::test]
async fn a_deleted_account_leaves_nothing_readable_and_a_new_login_is_a_new_person() {
    let (app, key) = spawn_with_admin().await;
    let login = app
        .login_as_phone("alice", "Mozilla/5.0 MicroMessenger")
        .await;
    let access = token(&login, "access_token");
    app.set_nickname(&access, "Zelda-小爱-unique").await;
    app.bind_phone("alice", &access, "13987654321").await;
    let avatar = upload_avatar(&app, &access).await;
    let second = app.login("alice").await;
    let id = login["user"]["id"].as_str().unwrap().to_owned();
    let openid = login["user"]["openid"].as_str().unwrap().to_owned();
    let unionid = login["user"]["unionid"].as_str().unwrap().to_owned();
    let needles = [
        openid.as_str(),
        unionid.as_str(),
        "Zelda-小爱-unique",
        "13987654321",
    ];
    for needle in needles {
        assert!(
            !app.backend.where_found(needle).await.is_empty(),
            "{needle} is stored before the deletion"
        );
    }

    let response = app.delete_authed("/v1/me", &access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    for needle in needles {
        assert_eq!(
            app.backend.where_found(needle).await,
            Vec::<String>::new(),
            "{needle} is gone"
        );
    }
    assert!(!avatar.exists(), "the avatar file is deleted");
    for access in [access.clone(), token(&second, "access_token")] {
        assert_error(
            app.me(&access).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    let refreshed = app
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": token(&second, "refresh_token") }),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::UNAUTHORIZED);
    assert_error(
        app.admin_get(&format!("/v1/admin/users/{id}"), &key).await,
        StatusCode::NOT_FOUND,
        "user_not_found",
    )
    .await;

    let again = app.login("alice").await;
    assert_eq!(again["is_new_user"], true);
    assert_ne!(again["user"]["id"], id.as_str());
    assert_eq!(again["user"]["nickname"], Value::Null);
    let me: Value = app
        .me(&token(&again, "access_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["phone"], Value::Null);

    let page = app.admin_json("/v1/admin/audit", &key).await;
    let deletion = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.delete")
        .unwrap_or_else(|| panic!("{page}"));
    assert_eq!(deletion["actor_kind"], "user");
    assert_eq!(deletion["target"], format!("user:{id}"));
    assert_eq!(deletion["ip"], "127.0.0.1");
}

#[tokio::test]
async fn post_me_delete_and_an_operators_delete_erase_the_person_too() {
    let (app, key) = spawn_with_admin().await;
    let bob = app.login("bob").await;
    let response = app
        .post_authed("/v1/me/delete", &token(&bob, "access_token"), json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me(&token(&bob, "access_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.login("bob").await["is_new_user"], true);

    let carol = app.login("carol").await;
    let id = carol["user"]["id"].as_str().unwrap().to_owned();
    let openid = carol["user"]["openid"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/users/{id}");
    let response = app.delete_authed(&path, &key).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.backend.where_found(&openid).await, Vec::<String>::new());
    assert_eq!(
        app.me(&token(&carol, "access_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let again = app.delete_authed(&path, &key).await;
    assert_error(again, StatusCode::NOT_FOUND, "user_not_found").await;
    let page = app.admin_json("/v1/admin/audit", &key).await;
    let by_ops: Vec<_> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "user.delete" && e["actor"] == "ops")
        .collect();
    assert_eq!(by_ops.len(), 1, "{page}");
    assert_eq!(by_ops[0]["target"], format!("user:{id}"));
}

#[tokio::test]
async fn the_export_holds_everything_stored_about_the_person() {
    let (app, _key) = spawn_with_admin().await;
    let login = app
        .login_as_phone("dora", "Mozilla/5.0 MicroMessenger")
        .await;
    let access = token(&login, "access_token");
    app.set_nickname(&access, "Dora").await;
    app.bind_phone("dora", &access, "13700001111").await;
    let response = app.get_authed("/v1/me/export", &access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let export: Value = response.json().await.unwrap();
    assert_eq!(export["user"]["id"], login["user"]["id"]);
    assert_eq!(export["user"]["nickname"], "Dora");
    assert_eq!(
        export["user"]["phone"],
        json!({ "country_code": "86", "number": "13700001111" })
    );
    assert_eq!(
        export["identities"],
        json!([{
            "app_id": app.app_id,
            "openid": login["user"]["openid"],
            "created_at": export["identities"][0]["created_at"],
        }])
    );
    let session = &export["sessions"][0];
    assert_eq!(session["user_agent"], "Mozilla/5.0 MicroMessenger");
    assert_eq!(session["ip"], "127.0.0.1");
    assert_eq!(session["active"], true);
    assert!(session["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(export["merges"], json!([]));
    let text = export.to_string();
    assert!(!text.contains(&token(&login, "refresh_token")));
    assert!(!text.contains("session_key"));
    assert_error(
        app.get_authed("/v1/me/export", "wxa_nope").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn a_merged_person_is_exported_with_its_merge_and_erased_with_it() {
    const BOUND: &str = "wxaaaaaaaaaaaaaaa1";
    const UNBOUND: &str = "wxccccccccccccccc3";
    let apps = [(BOUND, true), (UNBOUND, false)];
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        apps: apps
            .iter()
            .map(|(id, _)| ((*id).to_owned(), format!("secret-of-{id}")))
            .collect(),
        sim_apps: Some(
            apps.iter()
                .map(|(id, bound)| wechat_sim::SimApp {
                    appid: (*id).to_owned(),
                    secret: format!("secret-of-{id}"),
                    bound: *bound,
                })
                .collect(),
        ),
        ..crate::helpers::Options::default()
    })
    .await;
    let key = "o0q0otL8aEzpcZL/FT9WsQ==";
    app.sim(
        "/sim/users",
        json!({ "appid": UNBOUND, "user": "max", "session_key": key }),
    )
    .await;
    let in_u = app.login_in(UNBOUND, "max").await;
    let in_b = app.login_in(BOUND, "max").await;
    let unionid = in_b["user"]["unionid"].as_str().unwrap().to_owned();
    // The unbound app has since been bound: WeChat now sends the unionid there too.
    let code = app.code_in(UNBOUND, "max").await;
    let answer =
        json!({ "openid": in_u["user"]["openid"], "session_key": key, "unionid": unionid });
    app.fault(
        "/sns/jscode2session",
        json!({ "body": answer.to_string() }),
        1,
    )
    .await;
    let response = app
        .post("/v1/auth/login", json!({ "code": code, "app_id": UNBOUND }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let merged: Value = response.json().await.unwrap();
    let access = token(&merged, "access_token");

    let export: Value = app
        .get_authed("/v1/me/export", &access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(export["identities"].as_array().unwrap().len(), 2);
    assert_eq!(export["merges"].as_array().unwrap().len(), 1, "{export}");
    assert_eq!(export["merges"][0]["unionid"], unionid.as_str());
    assert_eq!(export["merges"][0]["survivor_id"], export["user"]["id"]);
    assert_eq!(app.backend.count("user_merges").await, 1);
    assert_eq!(
        app.backend
            .count("audit_log WHERE action = 'person.merged' AND actor_kind = 'system'")
            .await,
        1,
        "the merge is a security event in the audit log"
    );

    let response = app.delete_authed("/v1/me", &access).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.backend.count("user_merges").await, 0);
    assert_eq!(app.backend.count("users").await, 0);
    for needle in [
        unionid.as_str(),
        in_u["user"]["openid"].as_str().unwrap(),
        in_b["user"]["openid"].as_str().unwrap(),
    ] {
        assert_eq!(app.backend.where_found(needle).await, Vec::<String>::new());
    }
    for login in [&in_u, &in_b] {
        assert_eq!(
            app.me(&token(login, "access_token")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn deletions_cut_off_at_random_moments_erase_all_or_nothing() {
    use rand::Rng as _;
    let (app, key) = spawn_with_admin().await;
    let mut people = Vec::new();
    for i in 0..30 {
        let login = app.login(&format!("leaver-{i}")).await;
        let access = token(&login, "access_token");
        let avatar = upload_avatar(&app, &access).await;
        let id = login["user"]["id"].as_str().unwrap().to_owned();
        let openid = login["user"]["openid"].as_str().unwrap().to_owned();
        people.push((id, openid, access, avatar));
    }
    let mut storm = tokio::task::JoinSet::new();
    for (_, _, access, _) in &people {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_micros(
                rand::rng().random_range(200..40_000),
            ))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let request = client.delete(app.url("/v1/me")).bearer_auth(access);
        storm.spawn(async move { request.send().await.is_ok() });
    }
    while storm.join_next().await.is_some() {}
    // Whatever was cut off finishes in its own task; then each person is whole or gone.
    let mut remaining = 0;
    for (id, openid, _, avatar) in &people {
        let settled = async {
            loop {
                let stored = app.backend.where_found(openid).await;
                let gone = stored.is_empty();
                if gone != avatar.exists() {
                    return gone;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        let gone = tokio::time::timeout(std::time::Duration::from_secs(10), settled)
            .await
            .unwrap_or_else(|_| panic!("{id}: rows and avatar file disagree"));
        if !gone {
            remaining += 1;
            // Nothing was left locked: the person can be deleted now.
            let response = app
                .delete_authed(&format!("/v1/admin/users/{id}"), &key)
                .await;
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
            assert!(!avatar.exists());
        }
    }
    assert_eq!(
        app.backend.count("users").await,
        0,
        "{remaining} finished by hand"
    );
    assert_eq!(app.backend.count("identities").await, 0);
}
