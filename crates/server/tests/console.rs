//! The web console at `/admin/` of the real `wxauth serve`: its files and their headers (a
//! strict Content-Security-Policy on every answer, content types, caching), and an operator
//! using it in a real headless Chromium (tests/ext/console.mjs with playwright-core): signing
//! in, the dashboard's charts drawn from the logins this test made, both languages, finding a
//! user, revoking their session, whose token is then refused, and another's sessions all at
//! once.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/binary.rs"]
mod binary;
#[path = "support/ext.rs"]
mod ext;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use backend::TestBackend;
use reqwest::StatusCode;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
    X_CONTENT_TYPE_OPTIONS,
};
use serde_json::{Value, json};
use wechat_sim::DEMO_APP_ID;
use wxauth::service::admins::NewAdminKey;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                   object-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'none'";

/// A nickname that would run a script if the console put it in the page as HTML.
const MARKUP_NICKNAME: &str = "<img src=x onerror=\"window.__xss=1\">carol";

/// Longest the browser script may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);

use binary::{SECOND_APP_ID, serve_two_apps_with_admin as serve, two_app_sim};

/// Logs `user` into `app_id`, which must work; the answer.
async fn login_to(server: &binary::Wxauth, app_id: &str, user: &str) -> Value {
    let code = server
        .sim("/sim/login", json!({ "appid": app_id, "user": user }))
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = server
        .post(
            "/v1/auth/login",
            None,
            json!({ "code": code, "app_id": app_id }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "login of {user} to {app_id}: {body}"
    );
    body
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &reqwest::header::HeaderName) -> &'a str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("{} has no {name}", response.url()))
}

fn assert_console_headers(response: &reqwest::Response) {
    assert_eq!(
        header(response, &CONTENT_SECURITY_POLICY),
        CSP,
        "{}",
        response.url()
    );
    assert_eq!(header(response, &X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(
        header(response, &"x-frame-options".parse().unwrap()),
        "DENY"
    );
}

#[tokio::test]
async fn console_files_come_with_a_strict_policy_types_and_caching() {
    let backend = TestBackend::from_env().await;
    let sim = two_app_sim().await;
    let admin = NewAdminKey::generate();
    let server = serve(&backend, &sim, &admin.key_hash).await;
    let http = no_redirects();

    let response = http.get(server.url("/admin")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&response, &LOCATION), "/admin/");
    assert_console_headers(&response);

    let response = http.get(server.url("/admin/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_console_headers(&response);
    assert_eq!(header(&response, &CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(&response, &CACHE_CONTROL), "no-store");
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="app.js"></script>"#));
    // Nothing inline: every script has a src, no style element or attribute.
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script type=\"module\" src=").count()
    );
    assert!(
        !page.contains("<style") && !page.contains("style="),
        "{page}"
    );

    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("charts.js", "text/javascript; charset=utf-8"),
        ("i18n.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let url = server.url(&format!("/admin/{file}"));
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_console_headers(&response);
        assert_eq!(header(&response, &CONTENT_TYPE), content_type, "{file}");
        assert_eq!(header(&response, &CACHE_CONTROL), "no-cache", "{file}");
        let etag = header(&response, &ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{file}: {etag}");
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty());
        // Unchanged: 304, no body.
        let again = http
            .get(&url)
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{file}");
        assert_eq!(header(&again, &ETAG), etag);
        assert_console_headers(&again);
        assert!(again.bytes().await.unwrap().is_empty());
        // Another version: the file.
        let other = http
            .get(&url)
            .header(IF_NONE_MATCH, "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::OK, "{file}");
        assert_eq!(other.bytes().await.unwrap(), body);
    }

    // Unknown console paths, and other methods: the API's errors, with the policy.
    for path in [
        "/admin/nothing.js",
        "/admin/index.html",
        "/admin/users/123",
        "/admin/app.js/more",
    ] {
        let response = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_console_headers(&response);
        assert!(header(&response, &CONTENT_TYPE).starts_with("application/json"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    let response = http.post(server.url("/admin/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_console_headers(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");

    // Only the console's answers carry its policy.
    let response = http
        .get(server.url("/v1/admin/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(CONTENT_SECURITY_POLICY).is_none());
    server.terminate().await;
}

/// The Cargo target directory these tests were built in.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap()
}

#[tokio::test]
async fn an_operator_signs_in_sees_the_logins_finds_a_user_and_revokes_their_session() {
    const TEST: &str = "console in Chromium";
    let Some(node) = ext::node(TEST) else { return };
    let Some(chromium) = ext::chromium(TEST) else {
        return;
    };
    if !ext::has_node_package(TEST, &node, "playwright-core") {
        return;
    }
    let backend = TestBackend::from_env().await;
    let sim = two_app_sim().await;
    let admin = NewAdminKey::generate();
    let server = serve(&backend, &sim, &admin.key_hash).await;

    // Three persons log in, one of them twice, one through the second mini program; one login
    // fails (WeChat refuses the code).
    let nickname = "小明 console";
    let alice = login_to(&server, DEMO_APP_ID, "console-alice").await;
    let alice_token = alice["access_token"].as_str().unwrap().to_owned();
    let alice_id = alice["user"]["id"].as_str().unwrap().to_owned();
    let (status, _, body) = server
        .post(
            "/v1/me",
            Some(&alice_token),
            json!({ "nickname": nickname }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bob = [
        login_to(&server, DEMO_APP_ID, "console-bob").await,
        login_to(&server, DEMO_APP_ID, "console-bob").await,
    ];
    let bob_openid = bob[0]["user"]["openid"].as_str().unwrap().to_owned();
    let bob_id = bob[0]["user"]["id"].as_str().unwrap().to_owned();
    // Carol's nickname is markup: the console must show it as text.
    let carol = login_to(&server, SECOND_APP_ID, "console-carol").await;
    let (status, _, body) = server
        .post(
            "/v1/me",
            carol["access_token"].as_str(),
            json!({ "nickname": MARKUP_NICKNAME }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.fault("/sns/jscode2session", 40029, 1).await;
    let code = server
        .sim(
            "/sim/login",
            json!({ "appid": DEMO_APP_ID, "user": "console-dave" }),
        )
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = server
        .post(
            "/v1/auth/login",
            None,
            json!({ "code": code, "app_id": DEMO_APP_ID }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_code");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Alice's token works until the operator revokes her session.
    let (status, _) = server.get("/v1/me", Some(&alice_token)).await;
    assert_eq!(status, StatusCode::OK);

    let screenshots = target_dir().join("console-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    let config = json!({
        "url": server.url,
        "key": admin.key,
        "chromium": chromium,
        "screenshots": screenshots,
        "nickname": nickname,
        "user_id": alice_id,
        "day": now - now % 86_400,
        "hour": now - now % 3600,
        "logins": { DEMO_APP_ID: 3, SECOND_APP_ID: 1 },
        "new_persons": { DEMO_APP_ID: 2, SECOND_APP_ID: 1 },
        "second_app": SECOND_APP_ID,
        "bob_openid": bob_openid,
        "bob_id": bob_id,
        "markup_nickname": MARKUP_NICKNAME,
        "failed_code": "invalid_code",
        "errcode": "40029",
    });
    let mut command = tokio::process::Command::new(&node.bin);
    command
        .arg(ext::ext_dir().join("console.mjs"))
        .arg(config.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    let output = tokio::time::timeout(BROWSER_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("console.mjs did not finish in {BROWSER_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "console.mjs failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();

    // The session revoked in the browser was Alice's, and her token is refused now.
    let (status, person) = server
        .get(&format!("/v1/admin/users/{alice_id}"), Some(&admin.key))
        .await;
    assert_eq!(status, StatusCode::OK);
    let sessions = person["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{person}");
    assert_eq!(sessions[0]["id"], result["revoked_session"]);
    assert_eq!(sessions[0]["revoke_reason"], "admin");
    let (status, body) = server.get("/v1/me", Some(&alice_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "token_revoked");
    // Bob's two sessions went with "Revoke all sessions".
    for pair in &bob {
        let token = pair["access_token"].as_str().unwrap();
        let (status, body) = server.get("/v1/me", Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "token_revoked");
    }

    for page in [
        "00-signin-zh",
        "01-signin",
        "02-dashboard",
        "02-dashboard-hourly",
        "03-dashboard-zh",
        "04-users",
        "05-user",
        "06-user-revoked",
        "06-users-all",
        "06-user-revoked-all",
        "07-audit",
    ] {
        let file = screenshots.join(format!("{page}.png"));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", file.display());
    }
    server.terminate().await;
}
