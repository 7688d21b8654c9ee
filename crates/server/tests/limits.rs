//! `[limits]` and `wechat.max_concurrency` in the real `wxauth serve`: a burst is refused 429
//! `rate_limited` with `Retry-After` before it costs a WeChat call, per address and per app;
//! the defaults refuse a flood and `"0"` turns a bucket off; two instances sharing Redis share
//! one budget; calls to WeChat beyond the cap are answered 503 `overloaded`; and every refusal
//! shows in `/metrics` (parsed by Prometheus's Python client).

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
// ext.rs and services.rs each load skip.rs for themselves.
#[allow(clippy::duplicate_mod)]
#[path = "support/services.rs"]
mod services;

use backend::{Sql, TestBackend};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use scrape::Scrape;
use serde_json::{Value, json};
use wechat_sim::DEMO_APP_ID;

const JSCODE2SESSION: &str = "/sns/jscode2session";

/// How many calls the simulator's WeChat `path` has had.
async fn wechat_calls(server: &binary::Wxauth, path: &str) -> u64 {
    let stats: Value = server
        .http
        .get(format!("{}/sim/stats", server.sim_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["by_path"][path].as_u64().unwrap_or(0)
}

/// A 429 `rate_limited` with a `Retry-After` of at least 1 and at most `max` seconds.
fn assert_rate_limited(status: StatusCode, headers: &HeaderMap, body: &Value, max: u64) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "{body}"
    );
    let retry_after: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=max).contains(&retry_after),
        "Retry-After {retry_after} is not within 1..={max}"
    );
}

#[tokio::test]
async fn a_burst_is_refused_with_retry_after_before_it_reaches_wechat() {
    let test = "limits::a_burst_is_refused_with_retry_after_before_it_reaches_wechat";
    let Some(python) = ext::python(test) else {
        return;
    };
    let backend = TestBackend::from_env().await;
    let sim = binary::sim().await;
    let server = binary::serve(
        &backend,
        &sim,
        &[
            ("WXAUTH_LIMITS__LOGIN__PER_IP", "3/m"),
            ("WXAUTH_LIMITS__CHECK__PER_IP", "0"),
            ("WXAUTH_LIMITS__CHECK__PER_APP", "2/h"),
        ],
    )
    .await;

    // Three logins from one address, then the fourth is refused without calling WeChat; a
    // token comes back every 20 s.
    let mut tokens = Vec::new();
    for user in ["ann", "ben", "cat"] {
        tokens.push(server.logged_in(user).await["access_token"].clone());
    }
    let (status, headers, body) = server.login("dan").await;
    assert_rate_limited(status, &headers, &body, 20);
    assert_eq!(wechat_calls(&server, JSCODE2SESSION).await, 3);

    // Per app: two checks an hour for the whole app, whoever asks.
    for token in &tokens[..2] {
        let (status, _, body) = server
            .post("/v1/auth/check", token.as_str(), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = server
        .post("/v1/auth/check", tokens[2].as_str(), json!({}))
        .await;
    assert_rate_limited(status, &headers, &body, 1800);

    let scrape = Scrape::take(&python, &server.metrics_endpoint()).await;
    assert_eq!(
        scrape.value(
            "wxauth_rate_limited_total",
            &[("action", "login"), ("bucket", "ip")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "wxauth_rate_limited_total",
            &[("action", "check"), ("bucket", "app")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "wxauth_logins_total",
            &[("app_id", DEMO_APP_ID), ("outcome", "rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "wxauth_http_requests_total",
            &[("route", "/v1/auth/login"), ("status", "429")]
        ),
        1.0
    );
}

/// Sends `n` session checks with `token`; the status of each.
async fn checks(server: &binary::Wxauth, token: &str, n: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(
            server
                .post("/v1/auth/check", Some(token), json!({}))
                .await
                .0,
        );
    }
    statuses
}

#[tokio::test]
async fn the_defaults_refuse_a_flood_and_zero_turns_a_bucket_off() {
    let backend = TestBackend::from_env().await;
    let sim = binary::sim().await;
    // The default for checks: 60 a minute per address.
    let limited = binary::serve(&backend, &sim, &[]).await;
    let token = limited.logged_in("eve").await["access_token"].clone();
    let statuses = checks(&limited, token.as_str().unwrap(), 61).await;
    assert!(
        statuses[..60].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(statuses[60], StatusCode::TOO_MANY_REQUESTS);
    limited.terminate().await;

    let open = binary::serve(
        &backend,
        &sim,
        &[
            ("WXAUTH_LIMITS__CHECK__PER_IP", "0"),
            ("WXAUTH_LIMITS__CHECK__PER_APP", "0"),
        ],
    )
    .await;
    let token = open.logged_in("eve").await["access_token"].clone();
    let statuses = checks(&open, token.as_str().unwrap(), 70).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn instances_sharing_redis_share_one_budget() {
    let test = "limits::instances_sharing_redis_share_one_budget";
    if !services::available(test, &[services::POSTGRES, services::REDIS]) {
        return;
    }
    let backend = TestBackend::provision(Sql::Postgres, true).await;
    let sim = binary::sim().await;
    let settings = [("WXAUTH_LIMITS__LOGIN__PER_IP", "4/m")];
    let a = binary::serve(&backend, &sim, &settings).await;
    let b = binary::serve(&backend, &sim, &settings).await;
    a.logged_in("fay").await;
    b.logged_in("gus").await;
    a.logged_in("hal").await;
    b.logged_in("ivy").await;
    // Four taken between them: the fifth is refused on either.
    let (status, headers, body) = a.login("jon").await;
    assert_rate_limited(status, &headers, &body, 15);
    let (status, headers, body) = b.login("kim").await;
    assert_rate_limited(status, &headers, &body, 15);
}

#[tokio::test]
async fn calls_to_wechat_beyond_max_concurrency_are_answered_503_overloaded() {
    let test = "limits::calls_to_wechat_beyond_max_concurrency_are_answered_503_overloaded";
    let Some(python) = ext::python(test) else {
        return;
    };
    let backend = TestBackend::from_env().await;
    let sim = binary::sim().await;
    let server = binary::serve(
        &backend,
        &sim,
        &[
            ("WXAUTH_WECHAT__MAX_CONCURRENCY", "1"),
            ("WXAUTH_WECHAT__CONCURRENCY_WAIT", "200ms"),
        ],
    )
    .await;
    // The first login holds the only place for two seconds.
    server
        .sim(
            "/sim/faults",
            json!({ "path": JSCODE2SESSION, "delay_ms": 2000, "times": 1 }),
        )
        .await;
    let slow_code = server.code("lea").await;
    let second_code = server.code("max").await;
    let slow = server.post("/v1/auth/login", None, json!({ "code": slow_code }));
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        server
            .post("/v1/auth/login", None, json!({ "code": second_code }))
            .await
    };
    let ((slow_status, _, slow_body), (status, headers, body)) = tokio::join!(slow, second);
    assert_eq!(slow_status, StatusCode::OK, "{slow_body}");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")),
        "{body}"
    );
    assert_eq!(headers[RETRY_AFTER], "1");
    assert_eq!(wechat_calls(&server, JSCODE2SESSION).await, 1);
    // The refused code was never sent, so it still works.
    let (status, _, body) = server
        .post("/v1/auth/login", None, json!({ "code": second_code }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let scrape = Scrape::take(&python, &server.metrics_endpoint()).await;
    assert_eq!(
        scrape.value(
            "wxauth_wechat_calls_refused_total",
            &[("endpoint", "jscode2session")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "wxauth_logins_total",
            &[("app_id", DEMO_APP_ID), ("outcome", "overloaded")]
        ),
        1.0
    );
}
