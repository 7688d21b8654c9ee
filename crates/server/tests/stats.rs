//! `GET /v1/admin/stats` of the real `wxauth serve`: logins by outcome, new persons and
//! identities, distinct active persons (across apps too), WeChat calls and errcodes, per hour
//! and day and app; counted in memory, written in batches and at shutdown, added up across
//! instances.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/binary.rs"]
mod binary;
#[path = "support/services.rs"]
mod services;

use std::time::Duration;

use backend::{Sql, TestBackend};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_sim::DEMO_APP_ID;
use wxauth::service::admins::NewAdminKey;

use binary::{SECOND_APP_ID, serve_two_apps_with_admin as serve, two_app_sim};

/// Logs `user` into `app_id`; the error code when it failed.
async fn login(server: &binary::Wxauth, app_id: &str, user: &str) -> Result<Value, String> {
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
    if status == StatusCode::OK {
        Ok(body)
    } else {
        Err(body["error"]["code"].as_str().unwrap_or("").to_owned())
    }
}

/// `GET /v1/admin/stats?QUERY` with the admin key.
async fn stats(server: &binary::Wxauth, key: &str, query: &str) -> (StatusCode, Value) {
    server
        .get(&format!("/v1/admin/stats?{query}"), Some(key))
        .await
}

/// The entries of `app_id` (`None`: the totals) that have something in them.
fn entries<'a>(report: &'a Value, app_id: Option<&str>) -> Vec<&'a Value> {
    let list = match app_id {
        Some(app) => report["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["app_id"] == app)
            .collect::<Vec<_>>(),
        None => report["totals"].as_array().unwrap().iter().collect(),
    };
    list.into_iter()
        .filter(|e| e["logins"] != 0 || e["login_errors"] != json!({}) || e["wechat_calls"] != 0)
        .collect()
}

/// The figures of `app_id` (`None`: all apps) over the whole range: counts added up over the
/// buckets. Distinct persons cannot be added up: they are given when the test's requests all
/// fell into one bucket (they do, unless it ran across the turn of an hour or a day).
fn figures(report: &Value, app_id: Option<&str>) -> Value {
    let found = entries(report, app_id);
    let sum = |field: &str| -> i64 { found.iter().map(|e| e[field].as_i64().unwrap()).sum() };
    let merge = |field: &str| {
        let mut merged = serde_json::Map::new();
        for entry in &found {
            for (k, v) in entry[field].as_object().unwrap() {
                let n = merged.get(k).and_then(Value::as_i64).unwrap_or(0) + v.as_i64().unwrap();
                merged.insert(k.clone(), json!(n));
            }
        }
        Value::Object(merged)
    };
    let active = match found.as_slice() {
        [one] => one["active_persons"].clone(),
        _ => Value::Null,
    };
    json!({
        "logins": sum("logins"),
        "new_persons": sum("new_persons"),
        "new_identities": sum("new_identities"),
        "active_persons": active,
        "login_errors": merge("login_errors"),
        "wechat_calls": sum("wechat_calls"),
        "wechat_errcodes": merge("wechat_errcodes"),
    })
}

/// `actual` is `expected`, but for distinct persons when they could not be given.
fn assert_figures(actual: Value, mut expected: Value, what: &str) {
    if actual["active_persons"].is_null() {
        expected["active_persons"] = Value::Null;
    }
    assert_eq!(actual, expected, "{what}");
}

#[tokio::test]
async fn stats_count_logins_persons_and_wechat_errcodes_per_app_and_bucket() {
    let backend = TestBackend::from_env().await;
    let sim = two_app_sim().await;
    let admin = NewAdminKey::generate();
    let server = serve(&backend, &sim, &admin.key_hash).await;

    // A new person, the same person again, the same person in the second mini program (a new
    // identity, linked by unionid), a new person there, and a code WeChat refuses.
    login(&server, DEMO_APP_ID, "alice").await.unwrap();
    let alice = login(&server, DEMO_APP_ID, "alice").await.unwrap();
    login(&server, SECOND_APP_ID, "alice").await.unwrap();
    login(&server, SECOND_APP_ID, "bob").await.unwrap();
    server.fault("/sns/jscode2session", 40029, 1).await;
    assert_eq!(
        login(&server, DEMO_APP_ID, "carol").await.unwrap_err(),
        "invalid_code"
    );
    let token = alice["access_token"].as_str().unwrap();
    assert_eq!(server.get("/v1/me", Some(token)).await.0, StatusCode::OK);

    let demo = json!({
        "logins": 2, "new_persons": 1, "new_identities": 1, "active_persons": 1,
        "login_errors": { "invalid_code": 1 },
        "wechat_calls": 3, "wechat_errcodes": { "40029": 1 },
    });
    let second = json!({
        "logins": 2, "new_persons": 1, "new_identities": 2, "active_persons": 2,
        "login_errors": {}, "wechat_calls": 2, "wechat_errcodes": {},
    });
    // Alice is one person in both apps: two distinct persons in all.
    let all = json!({
        "logins": 4, "new_persons": 2, "new_identities": 3, "active_persons": 2,
        "login_errors": { "invalid_code": 1 },
        "wechat_calls": 5, "wechat_errcodes": { "40029": 1 },
    });
    for bucket in ["hour", "day"] {
        let (status, report) = stats(&server, &admin.key, &format!("bucket={bucket}")).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["bucket"], bucket);
        assert_figures(figures(&report, Some(DEMO_APP_ID)), demo.clone(), bucket);
        assert_figures(
            figures(&report, Some(SECOND_APP_ID)),
            second.clone(),
            bucket,
        );
        assert_figures(figures(&report, None), all.clone(), bucket);
        let totals = report["totals"].as_array().unwrap();
        // Every bucket of the range is there, empty ones included, one bucket apart.
        let size = if bucket == "hour" { 3600 } else { 86_400 };
        assert!(totals.len() >= 7, "{report}");
        for pair in totals.windows(2) {
            assert_eq!(
                pair[1]["start"].as_i64().unwrap() - pair[0]["start"].as_i64().unwrap(),
                size
            );
        }
        let demo_entries = entries(&report, Some(DEMO_APP_ID));
        let calls: i64 = demo_entries
            .iter()
            .map(|e| e["wechat"]["jscode2session"]["calls"].as_i64().unwrap_or(0))
            .sum();
        assert_eq!(calls, 3);
        assert!(
            demo_entries
                .iter()
                .all(|e| e["wechat"]["jscode2session"]["avg_ms"].as_f64().unwrap() >= 0.0)
        );
    }

    // One app only.
    let (status, report) = stats(
        &server,
        &admin.key,
        &format!("bucket=hour&app_id={SECOND_APP_ID}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        report["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["app_id"] == SECOND_APP_ID)
    );
    assert_figures(figures(&report, None), second, "one app");

    // A range in the past has nothing; explicit dates are read as UTC.
    let (status, report) = stats(&server, &admin.key, "from=2020-01-01&to=2020-01-03").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["from"], 1_577_836_800);
    assert_eq!(report["to"], 1_578_009_600);
    assert_eq!(report["series"], json!([]));
    assert_eq!(report["totals"].as_array().unwrap().len(), 2);

    // What was counted since the last flush is written at shutdown, and read back by the
    // next process.
    login(&server, DEMO_APP_ID, "dave").await.unwrap();
    server.terminate().await;
    let server = serve(&backend, &sim, &admin.key_hash).await;
    let (_, report) = stats(&server, &admin.key, "bucket=day").await;
    let demo = figures(&report, Some(DEMO_APP_ID));
    assert_eq!(
        (demo["logins"].as_i64(), demo["new_persons"].as_i64()),
        (Some(3), Some(2))
    );
}

#[tokio::test]
async fn the_stats_route_takes_an_admin_key_and_checks_its_query() {
    let backend = TestBackend::from_env().await;
    let sim = two_app_sim().await;
    let admin = NewAdminKey::generate();
    let server = serve(&backend, &sim, &admin.key_hash).await;
    let user = login(&server, DEMO_APP_ID, "erin").await.unwrap();

    let (status, body) = server.get("/v1/admin/stats", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _) = server
        .get(
            "/v1/admin/stats",
            Some(user["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a user token is no admin key"
    );
    for query in [
        "bucket=week",
        "from=2026-02-01&to=2026-01-01",
        "from=yesterday",
        "app_id=not-an-app",
        "bucket=hour&from=2020-01-01&to=2021-01-01",
        "unknown=1",
    ] {
        let (status, body) = stats(&server, &admin.key, query).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{query}: {body}"
        );
    }
    // A read is in the audit log.
    assert_eq!(stats(&server, &admin.key, "").await.0, StatusCode::OK);
    let (status, audit) = server.get("/v1/admin/audit", Some(&admin.key)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "stats.read"),
        "{audit}"
    );
}

#[tokio::test]
async fn instances_add_up_their_counts() {
    let test = "stats::instances_add_up_their_counts";
    if !services::available(test, &[services::POSTGRES]) {
        return;
    }
    let backend = TestBackend::provision(Sql::Postgres, false).await;
    let sim = two_app_sim().await;
    let admin = NewAdminKey::generate();
    let a = serve(&backend, &sim, &admin.key_hash).await;
    let b = serve(&backend, &sim, &admin.key_hash).await;
    login(&a, DEMO_APP_ID, "fay").await.unwrap();
    login(&b, DEMO_APP_ID, "gus").await.unwrap();
    login(&b, DEMO_APP_ID, "fay").await.unwrap();
    // B writes its counts within its flush interval (5 s); A's are written when asked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, report) = stats(&a, &admin.key, "bucket=day").await;
        assert_eq!(status, StatusCode::OK);
        let demo = figures(&report, Some(DEMO_APP_ID));
        if demo["logins"] == 3 {
            assert_eq!(demo["new_persons"], 2);
            if !demo["active_persons"].is_null() {
                assert_eq!(demo["active_persons"], 2, "fay counts once");
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's counts never arrived: {report}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
