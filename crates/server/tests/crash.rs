//! `kill -9` in the middle of a burst of writes on SQLite, where the writes of the moment are
//! committed together: after a restart on the same file, every login and refresh that was
//! answered holds (its tokens work, its person is there), and nothing half-written is left.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/binary.rs"]
mod binary;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::{Sql, TestBackend};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_sim::DEMO_APP_ID;
/// Clients writing at once.
const WRITERS: usize = 16;
/// Answered writes before the kill.
const BEFORE_KILL: usize = 150;

/// What a client was answered: the person, the newest token pair, and whether that pair is
/// the refresh's (the login's pair, when the refresh after it was cut off).
#[derive(Clone)]
struct Answered {
    user_id: String,
    access: String,
    refresh: String,
    refreshed: bool,
}

/// A burst from one address: the per-address limits would answer it 429.
const NO_LIMITS: &[(&str, &str)] = &[
    ("WXAUTH_LIMITS__LOGIN__PER_IP", "0"),
    ("WXAUTH_LIMITS__LOGIN__PER_APP", "0"),
    ("WXAUTH_LIMITS__REFRESH__PER_IP", "0"),
    ("WXAUTH_LIMITS__REFRESH__PER_APP", "0"),
];

/// One client: first logins of new people, each followed by a refresh, until `stop`; what was
/// answered goes to `answered`. A request cut off by the kill ends the client: `true` then.
async fn write_until_killed(
    worker: usize,
    api: String,
    sim: String,
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<Answered>>>,
) -> bool {
    let http = reqwest::Client::new();
    for i in 0_u64.. {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let code = binary::code(&http, &sim, &format!("crash-{worker}-{i}")).await;
        let Some(login) = post(
            &http,
            &api,
            "/v1/auth/login",
            json!({ "code": code, "app_id": DEMO_APP_ID }),
        )
        .await
        else {
            return true;
        };
        let mut latest = Answered {
            user_id: login["user"]["id"].as_str().unwrap().to_owned(),
            access: login["access_token"].as_str().unwrap().to_owned(),
            refresh: login["refresh_token"].as_str().unwrap().to_owned(),
            refreshed: false,
        };
        // The login alone counts as answered until its refresh is.
        let index = {
            let mut answered = answered.lock().unwrap();
            answered.push(latest.clone());
            answered.len() - 1
        };
        let Some(pair) = refresh(&http, &api, &latest.refresh).await else {
            return true;
        };
        latest.access = pair["access_token"].as_str().unwrap().to_owned();
        latest.refresh = pair["refresh_token"].as_str().unwrap().to_owned();
        latest.refreshed = true;
        answered.lock().unwrap()[index] = latest;
    }
    unreachable!("a client writes until it is stopped or cut off")
}

/// The body of a 200 answer; `None` when the request was cut off.
async fn post(http: &reqwest::Client, api: &str, path: &str, body: Value) -> Option<Value> {
    let response = http
        .post(format!("{api}{path}"))
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = response.status();
    let body: Value = response.json().await.ok()?;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    Some(body)
}

/// A refresh of `token`: the new pair; `None` when the request was cut off.
async fn refresh(http: &reqwest::Client, api: &str, token: &str) -> Option<Value> {
    post(
        http,
        api,
        "/v1/auth/refresh",
        json!({ "refresh_token": token }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_burst_of_logins_and_refreshes_loses_nothing_answered() {
    let backend = TestBackend::provision(Sql::Sqlite, false).await;
    let sim = binary::sim().await;
    let on = binary::serve(&backend, &sim, NO_LIMITS).await;

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|worker| {
            tokio::spawn(write_until_killed(
                worker,
                on.url.clone(),
                sim.base_url(),
                stop.clone(),
                answered.clone(),
            ))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered.lock().unwrap().len() < BEFORE_KILL {
        assert!(
            tokio::time::Instant::now() < deadline,
            "logins are answered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Killed while every client has a write in flight.
    on.kill().await;
    stop.store(true, Ordering::Relaxed);
    let mut cut_off = 0;
    for writer in writers {
        cut_off += usize::from(writer.await.unwrap());
    }
    assert!(cut_off > 0, "the kill lands while writes are in flight");
    let answered = answered.lock().unwrap().clone();

    let on = binary::serve(&backend, &sim, NO_LIMITS).await;
    let http = reqwest::Client::new();
    for a in &answered {
        let access = if a.refreshed {
            a.access.clone()
        } else {
            // The refresh was cut off: committed or not, the login's refresh token still gets
            // a working pair (the same one again within the grace period when it was).
            let pair = refresh(&http, &on.url, &a.refresh)
                .await
                .expect("the refresh token of an answered login rotates");
            pair["access_token"].as_str().unwrap().to_owned()
        };
        let me = http
            .get(format!("{}/v1/me", on.url))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), StatusCode::OK, "an answered session holds");
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["id"], a.user_id.as_str(), "{me}");
    }
    // The newest refresh token of each is the one that works: a sample, each once.
    for a in answered.iter().filter(|a| a.refreshed).step_by(10) {
        refresh(&http, &on.url, &a.refresh)
            .await
            .expect("the answered refresh token rotates");
    }
    // Every person has their identity: nothing half-written.
    assert_eq!(
        backend.count("users").await,
        backend.count("identities").await
    );
    assert!(backend.count("users").await >= i64::try_from(answered.len()).unwrap());
    on.kill().await;
}
