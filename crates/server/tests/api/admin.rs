//! The admin API: operators with `[[admins]]` keys find persons, see and revoke their
//! sessions, erase them, and read the audit log; admin keys and user tokens never stand in
//! for each other.

use reqwest::StatusCode;
use serde_json::{Value, json};
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

impl TestApp {
    /// GET an admin route with a key.
    pub async fn admin_get(&self, path: &str, key: &str) -> reqwest::Response {
        self.get_authed(path, key).await
    }

    /// GET an admin route that must answer 200; its body.
    pub async fn admin_json(&self, path: &str, key: &str) -> Value {
        let response = self.admin_get(path, key).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// POST to an admin route (no body).
    pub async fn admin_post(&self, path: &str, key: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// DELETE with a bearer token or key.
    pub async fn delete_authed(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Logs `user` in with a User-Agent, as a phone would.
    pub async fn login_as_phone(&self, user: &str, user_agent: &str) -> Value {
        let code = self.code(user).await;
        let response = self
            .http
            .post(self.url("/v1/auth/login"))
            .header("user-agent", user_agent)
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Binds a phone number to the person logged in as `user`.
    pub async fn bind_phone(&self, user: &str, access: &str, phone: &str) {
        let button = self
            .sim(
                "/sim/phone",
                json!({ "appid": self.app_id, "user": user, "phone": phone }),
            )
            .await;
        let response = self
            .post_authed("/v1/me/phone", access, json!({ "code": button["code"] }))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Sets the nickname of the person behind `access`.
    pub async fn set_nickname(&self, access: &str, nickname: &str) {
        let response = self
            .patch_authed("/v1/me", access, json!({ "nickname": nickname }))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// The audit log's entries, newest first, as (actor, action, target).
async fn audit_actions(app: &TestApp, key: &str) -> Vec<(Value, String, Value)> {
    let page = app.admin_json("/v1/admin/audit?limit=100", key).await;
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].clone(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].clone(),
            )
        })
        .collect()
}

const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/admin/users"),
    ("GET", "/v1/admin/users/some-id"),
    ("DELETE", "/v1/admin/users/some-id"),
    ("POST", "/v1/admin/users/some-id/revoke-sessions"),
    ("POST", "/v1/admin/sessions/some-id/revoke"),
    ("GET", "/v1/admin/audit"),
];

#[tokio::test]
async fn admin_routes_refuse_no_key_a_wrong_key_and_a_user_token() {
    let (app, key) = spawn_with_admin().await;
    let login = app.login("alice").await;
    let user_token = token(&login, "access_token");
    let wrong = NewAdminKey::generate().key;
    for (method, path) in ADMIN_ROUTES {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let bare = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_error(bare, StatusCode::UNAUTHORIZED, "unauthorized").await;
        for credential in [&wrong, &user_token, &key[..key.len() - 1].to_owned()] {
            let response = app
                .http
                .request(method.clone(), app.url(path))
                .bearer_auth(credential)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer realm=\"wxauth\""
            );
            assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }
    // The user's token still works where it belongs; the key works on the admin API.
    assert_eq!(app.me(&user_token).await.status(), StatusCode::OK);
    assert_eq!(
        app.admin_get("/v1/admin/users", &key).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_operator_finds_a_person_by_id_openid_unionid_phone_and_nickname() {
    let (app, key) = spawn_with_admin().await;
    let login = app.login("alice").await;
    let access = token(&login, "access_token");
    app.set_nickname(&access, "Alice 小爱").await;
    app.bind_phone("alice", &access, "13812345678").await;
    let other = app.login("bob").await;
    app.set_nickname(&token(&other, "access_token"), "Bob")
        .await;
    let id = login["user"]["id"].as_str().unwrap();
    let openid = login["user"]["openid"].as_str().unwrap();
    let unionid = login["user"]["unionid"].as_str().unwrap();
    for query in [
        format!("id={id}"),
        format!("openid={openid}"),
        format!("unionid={unionid}"),
        "phone=13812345678".to_owned(),
        "phone=%2B8613812345678".to_owned(),
        "q=alice".to_owned(),
        "q=%E5%B0%8F%E7%88%B1".to_owned(),
    ] {
        let page = app
            .admin_json(&format!("/v1/admin/users?{query}"), &key)
            .await;
        let users = page["users"].as_array().unwrap();
        assert_eq!(users.len(), 1, "{query}: {page}");
        assert_eq!(users[0]["id"], id, "{query}");
        assert_eq!(users[0]["phone"]["number"], "13812345678", "unmasked");
        assert_eq!(page["next_cursor"], Value::Null);
    }
    for query in [
        "phone=1381234567",
        "phone=%2B113812345678",
        "phone=%2B86",
        "q=carol",
        "id=nobody",
        "q=%25",
    ] {
        let page = app
            .admin_json(&format!("/v1/admin/users?{query}"), &key)
            .await;
        assert_eq!(page["users"], json!([]), "{query}");
    }
    let all = app.admin_json("/v1/admin/users", &key).await;
    assert_eq!(all["users"].as_array().unwrap().len(), 2);
    for bad in [
        "id=a&q=b",
        "limit=0",
        "limit=101",
        "limit=ten",
        "phone=abc",
        "q=",
        "color=red",
    ] {
        let response = app.admin_get(&format!("/v1/admin/users?{bad}"), &key).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let searches: Vec<_> = audit_actions(&app, &key)
        .await
        .into_iter()
        .filter(|(_, action, _)| action == "users.search")
        .collect();
    assert_eq!(searches.len(), 7 + 6 + 1);
    assert!(searches.iter().all(|(actor, _, _)| actor == "ops"));
}

#[tokio::test]
async fn the_cursor_pages_through_every_person_once() {
    let (app, key) = spawn_with_admin().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let login = app.login(&format!("user{i}")).await;
        ids.push(login["user"]["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/admin/users?limit=2".to_owned();
    loop {
        let page = app.admin_json(&path, &key).await;
        let users = page["users"].as_array().unwrap();
        assert!(users.len() <= 2);
        seen.extend(users.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/admin/users?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    ids.sort();
    assert_eq!(seen, ids, "each once, oldest first");
}

#[tokio::test]
async fn a_persons_page_shows_sessions_and_revoking_them_stops_their_tokens_at_once() {
    let (app, key) = spawn_with_admin().await;
    let phone = app
        .login_as_phone("alice", "Mozilla/5.0 MicroMessenger/8.0.50")
        .await;
    let second = app.login("alice").await;
    let id = phone["user"]["id"].as_str().unwrap().to_owned();
    let access = token(&phone, "access_token");
    app.bind_phone("alice", &access, "13812345678").await;
    // Used (and so cached on SQLite) before the revocation.
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);

    let person = app.admin_json(&format!("/v1/admin/users/{id}"), &key).await;
    assert_eq!(person["user"]["id"], id.as_str());
    assert_eq!(person["user"]["phone"]["number"], "13812345678");
    assert_eq!(person["identities"].as_array().unwrap().len(), 1);
    let sessions = person["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{person}");
    let first = sessions
        .iter()
        .find(|s| s["user_agent"] == "Mozilla/5.0 MicroMessenger/8.0.50")
        .unwrap_or_else(|| panic!("{person}"));
    assert_eq!(first["app_id"], app.app_id.as_str());
    assert_eq!(first["ip"], "127.0.0.1");
    assert_eq!(first["active"], true);
    assert_eq!(first["revoked"], false);
    for field in ["created_at", "last_seen_at", "expires_at"] {
        assert!(first[field].as_str().unwrap().ends_with('Z'), "{field}");
    }
    assert!(!person.to_string().contains("session_key"));

    // One session by id...
    let sid = first["id"].as_str().unwrap().to_owned();
    let response = app
        .admin_post(&format!("/v1/admin/sessions/{sid}/revoke"), &key)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"revoked": 1})
    );
    assert_error(
        app.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let other = token(&second, "access_token");
    assert_eq!(app.me(&other).await.status(), StatusCode::OK);
    let again = app
        .admin_post(&format!("/v1/admin/sessions/{sid}/revoke"), &key)
        .await;
    assert_eq!(again.json::<Value>().await.unwrap(), json!({"revoked": 0}));

    // ...then all of the person's.
    let response = app
        .admin_post(&format!("/v1/admin/users/{id}/revoke-sessions"), &key)
        .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"revoked": 1})
    );
    assert_error(
        app.me(&other).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let refreshed = app
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": token(&second, "refresh_token") }),
        )
        .await;
    assert_error(refreshed, StatusCode::UNAUTHORIZED, "token_revoked").await;

    let person = app.admin_json(&format!("/v1/admin/users/{id}"), &key).await;
    for session in person["sessions"].as_array().unwrap() {
        assert_eq!(session["revoked"], true, "{session}");
        assert_eq!(session["active"], false);
        assert_eq!(session["revoke_reason"], "admin");
        assert!(session["revoked_at"].is_string());
    }
    let actions = audit_actions(&app, &key).await;
    let target = |kind: &str, id: &str| json!(format!("{kind}:{id}"));
    assert!(actions.contains(&(
        json!("ops"),
        "session.revoke".to_owned(),
        target("session", &sid)
    )));
    assert!(actions.contains(&(
        json!("ops"),
        "user.revoke_sessions".to_owned(),
        target("user", &id)
    )));
    assert!(actions.contains(&(json!("ops"), "user.view".to_owned(), target("user", &id))));
}

#[tokio::test]
async fn unknown_persons_and_sessions_are_not_found() {
    let (app, key) = spawn_with_admin().await;
    for (method, path, code) in [
        ("GET", "/v1/admin/users/nobody", "user_not_found"),
        ("DELETE", "/v1/admin/users/nobody", "user_not_found"),
        (
            "POST",
            "/v1/admin/users/nobody/revoke-sessions",
            "user_not_found",
        ),
        (
            "POST",
            "/v1/admin/sessions/nothing/revoke",
            "session_not_found",
        ),
    ] {
        let response = app
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::NOT_FOUND, code).await;
    }
    for bad in ["limit=0", "cursor=", "since=1"] {
        let response = app.admin_get(&format!("/v1/admin/audit?{bad}"), &key).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_from_where_and_pages_newest_first() {
    let (app, key) = spawn_with_admin().await;
    let login = app.login("alice").await;
    let id = login["user"]["id"].as_str().unwrap().to_owned();
    let response = app
        .admin_post(&format!("/v1/admin/users/{id}/revoke-sessions"), &key)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = app.admin_json("/v1/admin/audit?limit=1", &key).await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    // The read itself is an admin action, and the newest.
    assert_eq!(entries[0]["action"], "audit.read");
    let cursor = page["next_cursor"].as_str().unwrap();
    let older = app
        .admin_json(&format!("/v1/admin/audit?limit=1&cursor={cursor}"), &key)
        .await;
    let entry = &older["entries"][0];
    assert_eq!(entry["action"], "user.revoke_sessions");
    assert_eq!(entry["actor_kind"], "admin");
    assert_eq!(entry["actor"], "ops");
    assert_eq!(entry["target"], format!("user:{id}"));
    assert_eq!(entry["ip"], "127.0.0.1");
    assert_eq!(entry["detail"], json!({ "revoked": 1 }));
    assert!(entry["occurred_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(older["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_reused_refresh_token_and_a_cli_revocation_are_security_events_in_the_audit_log() {
    let (app, key) = spawn_with_admin().await;
    let login = app.login("alice").await;
    let refresh = token(&login, "refresh_token");
    let first = app
        .post("/v1/auth/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    // Past tokens.refresh_grace (10 s), a second use is reuse.
    app.clock.advance(11);
    let reused = app
        .post("/v1/auth/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_error(reused, StatusCode::UNAUTHORIZED, "token_revoked").await;

    let id = login["user"]["id"].as_str().unwrap().to_owned();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .args(["revoke-sessions", "--user", &id])
        .envs(app.command_env())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let page = app.admin_json("/v1/admin/audit", &key).await;
    let entries = page["entries"].as_array().unwrap();
    let reuse = entries
        .iter()
        .find(|e| e["action"] == "session.refresh_token_reused")
        .unwrap_or_else(|| panic!("{page}"));
    assert_eq!(reuse["actor_kind"], "system");
    assert!(reuse["target"].as_str().unwrap().starts_with("session:"));
    let cli = entries
        .iter()
        .find(|e| e["action"] == "user.revoke_sessions")
        .unwrap_or_else(|| panic!("{page}"));
    assert_eq!(cli["actor_kind"], "cli");
    assert_eq!(cli["target"], format!("user:{id}"));
}

#[tokio::test]
async fn audit_entries_past_the_retention_are_purged() {
    let (app, key) = spawn_with_admin().await;
    app.admin_json("/v1/admin/users", &key).await;
    app.clock.advance(181 * 86400);
    app.admin_json("/v1/admin/users?q=x", &key).await;
    wxauth::startup::purge(&app.state).await;
    let page = app.admin_json("/v1/admin/audit", &key).await;
    let details: Vec<_> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].clone(), e["detail"].clone()))
        .collect();
    assert_eq!(
        details,
        [
            (json!("audit.read"), Value::Null),
            (json!("users.search"), json!({ "by": "q" })),
        ]
    );
}

#[tokio::test]
async fn a_revocation_on_one_instance_is_refused_on_another_at_once() {
    let (a, key) = spawn_with_admin().await;
    let b = a.sibling().await;
    let login = b.login("alice").await;
    let access = token(&login, "access_token");
    assert_eq!(b.me(&access).await.status(), StatusCode::OK);
    let id = login["user"]["id"].as_str().unwrap();
    let person = a.admin_json(&format!("/v1/admin/users/{id}"), &key).await;
    assert_eq!(person["sessions"].as_array().unwrap().len(), 1);
    let response = a
        .admin_post(&format!("/v1/admin/users/{id}/revoke-sessions"), &key)
        .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"revoked": 1})
    );
    // SQLite is one process's file: a second process on it (as here) keeps live tokens in
    // memory and sees another's write within a second. Elsewhere: at once.
    let one_process_store =
        a.backend.sql == crate::backend::Sql::Sqlite && a.backend.redis_url.is_none();
    if one_process_store {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.me(&access).await.status() == StatusCode::OK {
            assert!(tokio::time::Instant::now() < deadline, "still accepted");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert_error(
        b.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
}
