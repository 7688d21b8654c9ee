//! `GET /metrics` of the real `wxauth serve`, scraped and parsed by Prometheus's Python client
//! (`prometheus_client.parser`, tests/ext/scrape_metrics.py): the counters move as users log
//! in and logins fail (the simulator answers errcodes), label values are route templates and
//! never raw paths, and `[metrics] listen` moves the endpoint off the main listener.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/binary.rs"]
mod binary;
#[path = "support/ext.rs"]
mod ext;
#[path = "support/scrape.rs"]
mod scrape;

use backend::TestBackend;
use reqwest::StatusCode;
use scrape::Scrape;
use serde_json::json;
use wechat_sim::DEMO_APP_ID;

const JSCODE2SESSION: &str = "/sns/jscode2session";

#[tokio::test]
async fn the_counters_move_as_users_log_in_and_logins_fail() {
    let test = "metrics::the_counters_move_as_users_log_in_and_logins_fail";
    let Some(python) = ext::python(test) else {
        return;
    };
    let backend = TestBackend::from_env().await;
    let sim = binary::sim().await;
    let server = binary::serve(&backend, &sim, &[]).await;
    let endpoint = server.metrics_endpoint();
    let before = Scrape::take(&python, &endpoint).await;
    let app = DEMO_APP_ID;
    let logins = |outcome: &'static str| [("app_id", app), ("outcome", outcome)];
    for outcome in ["new_person", "returning", "invalid_code", "code_used"] {
        assert_eq!(
            before.value("wxauth_logins_total", &logins(outcome)),
            0.0,
            "{outcome}"
        );
    }

    // A new person, the same person again, and two logins WeChat refuses.
    let first = server.logged_in("alice").await;
    server.logged_in("alice").await;
    server.fault(JSCODE2SESSION, 40029, 1).await;
    let (status, _, body) = server.login("bob").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_code"))
    );
    server.fault(JSCODE2SESSION, 40163, 1).await;
    let (status, _, body) = server.login("bob").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("code_used"))
    );
    // An authenticated read, a check (which needs an access token from WeChat; the first
    // session's session_key went stale with the second login: 87009), and a path no route
    // has, carrying a user id.
    let token = first["access_token"].as_str().unwrap();
    assert_eq!(server.get("/v1/me", Some(token)).await.0, StatusCode::OK);
    let (status, _, _) = server.post("/v1/auth/check", Some(token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let raw_path = format!("/v1/users/{}", first["user"]["id"].as_str().unwrap());
    assert_eq!(server.get(&raw_path, None).await.0, StatusCode::NOT_FOUND);
    let (status, _) = server.get("/media/avatars/missing.png", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let after = Scrape::take(&python, &endpoint).await;
    assert_eq!(
        after.value("wxauth_logins_total", &logins("new_person")),
        1.0
    );
    assert_eq!(
        after.value("wxauth_logins_total", &logins("returning")),
        1.0
    );
    assert_eq!(
        after.value("wxauth_logins_total", &logins("invalid_code")),
        1.0
    );
    assert_eq!(
        after.value("wxauth_logins_total", &logins("code_used")),
        1.0
    );
    assert_eq!(after.family_type("wxauth_logins"), Some("counter"));

    // WeChat calls by endpoint and errcode, with their latency.
    let calls = |errcode: &'static str| [("endpoint", "jscode2session"), ("errcode", errcode)];
    assert_eq!(after.value("wxauth_wechat_calls_total", &calls("0")), 2.0);
    assert_eq!(
        after.value("wxauth_wechat_calls_total", &calls("40029")),
        1.0
    );
    assert_eq!(
        after.value("wxauth_wechat_calls_total", &calls("40163")),
        1.0
    );
    assert_eq!(
        after.family_type("wxauth_wechat_call_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(
        after.value(
            "wxauth_wechat_call_duration_seconds_count",
            &[("endpoint", "jscode2session")]
        ),
        4.0
    );
    assert_eq!(
        after.value(
            "wxauth_wechat_calls_total",
            &[("endpoint", "checksession"), ("errcode", "87009")]
        ),
        1.0
    );
    assert_eq!(
        after.value(
            "wxauth_wechat_token_refreshes_total",
            &[("app_id", app), ("result", "ok")]
        ),
        1.0
    );

    // HTTP requests by route template, method and status.
    let login_route = |status: &'static str| {
        [
            ("route", "/v1/auth/login"),
            ("method", "POST"),
            ("status", status),
        ]
    };
    assert_eq!(
        after.value("wxauth_http_requests_total", &login_route("200")),
        2.0
    );
    assert_eq!(
        after.value("wxauth_http_requests_total", &login_route("400")),
        2.0
    );
    assert_eq!(
        after.value(
            "wxauth_http_requests_total",
            &[("route", "/v1/me"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        after.value(
            "wxauth_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        after.value(
            "wxauth_http_requests_total",
            &[("route", "/media/*"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        after.family_type("wxauth_http_request_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(
        after.value(
            "wxauth_http_request_duration_seconds_count",
            &[("route", "/v1/auth/login"), ("method", "POST")]
        ),
        4.0
    );
    // Every bucket up to +Inf holds the one /v1/me request at most, +Inf holds it.
    assert_eq!(
        after.value(
            "wxauth_http_request_duration_seconds_bucket",
            &[("route", "/v1/me"), ("le", "+Inf")]
        ),
        1.0
    );
    let routes = after.label_values("wxauth_http_requests_total", "route");
    assert!(
        !routes.iter().any(|r| r.contains("/v1/users")),
        "a raw path became a label: {routes:?}"
    );
    assert!(
        routes
            .iter()
            .all(|r| r == "unmatched" || r.starts_with('/'))
    );
}

#[tokio::test]
async fn metrics_listen_moves_the_endpoint_off_the_main_listener() {
    let test = "metrics::metrics_listen_moves_the_endpoint_off_the_main_listener";
    let Some(python) = ext::python(test) else {
        return;
    };
    let backend = TestBackend::from_env().await;
    let sim = binary::sim().await;
    let server = binary::serve(&backend, &sim, &[("WXAUTH_METRICS__LISTEN", "127.0.0.1:0")]).await;
    let metrics_url = server
        .metrics_url
        .clone()
        .expect("the metrics address is logged");
    assert_ne!(metrics_url, server.url);

    // Not on the main listener any more: an ordinary unknown route.
    let (status, body) = server.get("/metrics", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    server.logged_in("carol").await;
    let scrape = Scrape::take(&python, &format!("{metrics_url}/metrics")).await;
    assert_eq!(
        scrape.value(
            "wxauth_logins_total",
            &[("app_id", DEMO_APP_ID), ("outcome", "new_person")]
        ),
        1.0
    );
    // The main listener's requests are counted there, the refused /metrics included.
    assert_eq!(
        scrape.value(
            "wxauth_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    // Only /metrics is served there.
    let response = server
        .http
        .get(format!("{metrics_url}/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    server.terminate().await;
}

#[tokio::test]
async fn webhook_deliveries_and_the_oldest_waiting_event_are_measured() {
    let test = "metrics::webhook_deliveries_and_the_oldest_waiting_event_are_measured";
    let Some(python) = ext::python(test) else {
        return;
    };
    let backend = TestBackend::from_env().await;
    let sim = binary::sim().await;
    // An endpoint nothing listens on: every attempt fails and is retried.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let hooks = format!(
        "[{{url=\"{url}\", secret=\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", backoff=\"1s\", \
         max_backoff=\"1s\"}}]"
    );
    let server = binary::serve(&backend, &sim, &[("WXAUTH_WEBHOOKS", hooks.as_str())]).await;
    let endpoint = server.metrics_endpoint();
    server.logged_in("dora").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (mut retries, mut oldest) = (0.0, 0.0);
    while std::time::Instant::now() < deadline {
        let scrape = Scrape::take(&python, &endpoint).await;
        assert_eq!(
            scrape.family_type("wxauth_webhook_oldest_pending_seconds"),
            Some("gauge")
        );
        retries = scrape.value(
            "wxauth_webhook_deliveries_total",
            &[("endpoint", url.as_str()), ("outcome", "retry")],
        );
        oldest = scrape.value(
            "wxauth_webhook_oldest_pending_seconds",
            &[("endpoint", url.as_str())],
        );
        if retries >= 1.0 && oldest > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(retries >= 1.0, "retries counted: {retries}");
    assert!(oldest > 0.0, "the waiting events' age: {oldest}");
    assert_eq!(
        Scrape::take(&python, &endpoint).await.value(
            "wxauth_webhook_deliveries_total",
            &[("endpoint", url.as_str()), ("outcome", "delivered")]
        ),
        0.0
    );
    server.terminate().await;
}
