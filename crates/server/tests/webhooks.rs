//! Signed webhooks as a receiver sees them: real `wxauth serve` processes deliver to
//! tests/ext/webhook_receiver.py, which verifies every delivery with the `standardwebhooks`
//! package and records the webhook-ids. The gift case (one person through two mini programs,
//! concurrently, and a late merge), a receiver that is down for a while, `kill -9` in the
//! middle of deliveries, and two instances delivering together.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/ext.rs"]
mod ext;
// ext.rs and services.rs each include skip.rs: two copies of a small module, on purpose.
#[expect(clippy::duplicate_mod)]
#[path = "support/services.rs"]
mod services;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use backend::{Sql, TestBackend};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use wechat_sim::{SimApp, SimConfig, SimHandle};
use wxauth_wechat::{SessionKey, crypto};

const DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=";
/// The Standard Webhooks specification's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FEED_USER: &str = "feed";
const FEED_SECRET: &str = "feed-secret-0123456789";
const APP_A: &str = "wxaaaaaaaaaaaaaaa1";
const APP_B: &str = "wxbbbbbbbbbbbbbbb2";
const APP_U: &str = "wxccccccccccccccc3";
/// The webhook timeout of these tests; a hanging receiver waits longer than this.
const TIMEOUT_SECS: u64 = 1;
/// Longest a test waits for every event to arrive.
const ARRIVAL: Duration = Duration::from_secs(40);

/// The receiver process.
struct Receiver {
    child: Child,
    control: String,
    http: reqwest::Client,
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Receiver {
    /// Starts the receiver on `port`, answering as `mode` says; `None` (a recorded skip)
    /// without the Python venv.
    async fn start(test: &str, port: u16, mode: &str) -> Option<Self> {
        let python = ext::python(test)?;
        let mut child = Command::new(python)
            .arg(ext::ext_dir().join("webhook_receiver.py"))
            .arg(port.to_string())
            .arg(SECRET)
            .arg(mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver starts")
            .unwrap()
            .expect("the receiver says where it listens");
        assert_eq!(line, format!("listening {port}"));
        Some(Self {
            child,
            control: format!("http://127.0.0.1:{port}/control"),
            http: reqwest::Client::new(),
        })
    }

    async fn mode(&self, mode: Value) {
        let response = self
            .http
            .post(format!("{}/mode", self.control))
            .json(&mode)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    async fn state(&self) -> Value {
        self.http
            .get(format!("{}/state", self.control))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until every id in `expected` was accepted; returns the state.
    async fn until_accepted(&self, expected: &[String]) -> Value {
        let deadline = tokio::time::Instant::now() + ARRIVAL;
        loop {
            let state = self.state().await;
            let got: HashSet<&str> = state["accepted"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap())
                .collect();
            if expected.iter().all(|id| got.contains(id.as_str())) {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every event arrived: {} of {} ({} attempts)",
                got.len(),
                expected.len(),
                state["attempts"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The simulator with two bound apps and an unbound one.
async fn sim() -> SimHandle {
    let apps = [(APP_A, true), (APP_B, true), (APP_U, false)]
        .iter()
        .map(|(id, bound)| SimApp {
            appid: (*id).to_owned(),
            secret: format!("secret-of-{id}"),
            bound: *bound,
        })
        .collect();
    wechat_sim::spawn(
        SimConfig {
            apps,
            keep_session_key: false,
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap()
}

/// One `wxauth serve` process.
struct Instance {
    child: Child,
    url: String,
}

/// The configuration of the processes: `backend`, the simulator, a webhook to the receiver's
/// port (retried for `retry_for`) and a service that may read the feed.
fn config_env(
    backend: &TestBackend,
    sim: &SimHandle,
    port: u16,
    retry_for: &str,
) -> Vec<(String, String)> {
    let apps = [APP_A, APP_B, APP_U]
        .iter()
        .map(|id| format!("{{app_id=\"{id}\",secret=\"secret-of-{id}\"}}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut env = backend.env();
    env.extend([
        ("WXAUTH_WECHAT__API_BASE".to_owned(), sim.base_url()),
        ("WXAUTH_SECURITY__DATA_KEY".to_owned(), DATA_KEY.to_owned()),
        ("WXAUTH_APPS".to_owned(), format!("[{apps}]")),
        (
            "WXAUTH_SERVICES".to_owned(),
            format!("[{{name=\"{FEED_USER}\",secret=\"{FEED_SECRET}\"}}]"),
        ),
        (
            "WXAUTH_WEBHOOKS".to_owned(),
            format!(
                "[{{url=\"http://127.0.0.1:{port}/hook\",secret=\"{SECRET}\",\
                 timeout=\"{TIMEOUT_SECS}s\",backoff=\"100ms\",max_backoff=\"400ms\",\
                 retry_for=\"{retry_for}\"}}]"
            ),
        ),
    ]);
    env
}

/// Starts `wxauth serve` on `backend`, delivering to the receiver's port.
async fn serve(backend: &TestBackend, sim: &SimHandle, port: u16) -> Instance {
    serve_with(config_env(backend, sim, port, "1h")).await
}

async fn serve_with(env: Vec<(String, String)>) -> Instance {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .arg("serve")
        .envs(env)
        .env("WXAUTH_SERVER__LISTEN", "127.0.0.1:0")
        .env("WXAUTH_SERVER__SHUTDOWN_GRACE", "3s")
        .env("WXAUTH_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        let mut said = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                said.push(line);
                continue;
            };
            if let Some(addr) = event["fields"]["addr"].as_str() {
                return addr.to_owned();
            }
            said.push(line);
        }
        panic!("wxauth serve exited before listening:\n{}", said.join("\n"));
    })
    .await
    .expect("wxauth serve starts listening");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Instance {
        child,
        url: format!("http://{addr}"),
    }
}

impl Instance {
    /// `kill -9`.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Drives the mini-program side.
struct Client {
    http: reqwest::Client,
    sim: String,
}

impl Client {
    fn new(sim: &SimHandle) -> Self {
        Self {
            http: reqwest::Client::new(),
            sim: sim.base_url(),
        }
    }

    async fn sim(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.sim))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn login(&self, on: &str, app_id: &str, user: &str) -> Value {
        let code = self
            .sim("/sim/login", json!({ "appid": app_id, "user": user }))
            .await;
        let response = self
            .http
            .post(format!("{on}/v1/auth/login"))
            .json(&json!({ "code": code["code"], "app_id": app_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "login of {user}");
        response.json().await.unwrap()
    }

    async fn authed(&self, on: &str, path: &str, login: &Value, body: Value) -> StatusCode {
        self.http
            .post(format!("{on}{path}"))
            .bearer_auth(login["access_token"].as_str().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Every event in the outbox, in order, through the feed.
    async fn events(&self, on: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = String::new();
        loop {
            let query = if after.is_empty() {
                "?limit=1000".to_owned()
            } else {
                format!("?limit=1000&after={after}")
            };
            let page: Value = self
                .http
                .get(format!("{on}/v1/events{query}"))
                .basic_auth(FEED_USER, Some(FEED_SECRET))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let got = page["events"].as_array().unwrap();
            if got.is_empty() {
                return events;
            }
            events.extend(got.iter().cloned());
            after = page["next_after"].as_str().unwrap().to_owned();
        }
    }

    /// The events, once `n` of them are there (they settle for a moment on MySQL and
    /// PostgreSQL).
    async fn at_least(&self, on: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let events = self.events(on).await;
            if events.len() >= n || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks what the receiver got against the outbox: every event, nothing unverified or
/// unknown, a duplicate only as a copy of the original, each person's events first received
/// in the order they happened.
fn assert_complete_and_in_order(state: &Value, events: &[Value]) {
    assert_eq!(state["invalid"], 0, "every delivery verifies");
    let by_id: HashMap<&str, &Value> = events
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    let accepted = state["accepted"].as_array().unwrap();
    let mut first_seen = Vec::new();
    let mut seen = HashSet::new();
    for delivery in accepted {
        let id = delivery["id"].as_str().unwrap();
        let event = by_id
            .get(id)
            .unwrap_or_else(|| panic!("unknown event {id}"));
        let body: Value = serde_json::from_str(delivery["body"].as_str().unwrap()).unwrap();
        assert_eq!(&body, *event, "a delivery carries the event as stored");
        if seen.insert(id) {
            first_seen.push(*event);
        }
    }
    assert_eq!(seen.len(), events.len(), "every event arrived");
    let mut per_person: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in &first_seen {
        per_person
            .entry(event["data"]["user_id"].as_str().unwrap())
            .or_default()
            .push(event["id"].as_str().unwrap());
    }
    for (person, received) in per_person {
        let happened: Vec<&str> = events
            .iter()
            .filter(|e| e["data"]["user_id"] == person)
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(received, happened, "the events of {person} in order");
    }
}

/// A few events per person: a login, a profile change, a login in the other app, a logout.
async fn busy_people(client: &Client, on: &str, prefix: &str, n: usize) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let user = format!("{prefix}{i}");
        let (http, sim, url) = (client.http.clone(), client.sim.clone(), on.to_owned());
        tasks.push(tokio::spawn(async move {
            let client = Client { http, sim };
            let on = url.as_str();
            let first = client.login(on, APP_A, &user).await;
            let status = client
                .authed(on, "/v1/me", &first, json!({ "nickname": user }))
                .await;
            assert_eq!(status, StatusCode::OK);
            let second = client.login(on, APP_B, &user).await;
            let status = client
                .authed(on, "/v1/auth/logout", &second, json!({}))
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    n * 5
}

#[tokio::test]
async fn the_gift_case_one_person_created_once_through_two_apps_and_a_merge_told() {
    let test = "webhooks: the gift case";
    let port = free_port();
    let Some(receiver) = Receiver::start(test, port, "ok").await else {
        return;
    };
    let backend = TestBackend::from_env().await;
    let sim = sim().await;
    let on = serve(&backend, &sim, port).await;
    let client = Client::new(&sim);

    // Both orders, and concurrently.
    client.login(&on.url, APP_A, "amy").await;
    client.login(&on.url, APP_B, "amy").await;
    client.login(&on.url, APP_B, "bob").await;
    client.login(&on.url, APP_A, "bob").await;
    let mut racing = Vec::new();
    for i in 0..4 {
        for app_id in [APP_A, APP_B, APP_B, APP_A] {
            let user = format!("racer{i}");
            let (http, sim, url) = (client.http.clone(), client.sim.clone(), on.url.clone());
            racing.push(tokio::spawn(async move {
                let client = Client { http, sim };
                let on = url.as_str();
                client.login(on, app_id, &user).await
            }));
        }
    }
    for login in racing {
        login.await.unwrap();
    }
    // A late merge: the unbound app first, then a bound one, then the unbound app's data
    // reveals the unionid.
    let key = "HyVFkGl5F5OQWJZZaNzBBg==";
    client
        .sim(
            "/sim/users",
            json!({ "appid": APP_U, "user": "ben", "session_key": key }),
        )
        .await;
    let in_u = client.login(&on.url, APP_U, "ben").await;
    let in_a = client.login(&on.url, APP_A, "ben").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let plain = json!({ "openId": in_u["user"]["openid"], "unionId": in_a["user"]["unionid"],
                        "watermark": { "appid": APP_U, "timestamp": now } });
    let iv = [7u8; 16];
    let body = json!({
        "encrypted_data": crypto::encrypt(&SessionKey::parse(key).unwrap(), &iv, plain.to_string().as_bytes()),
        "iv": crypto::encode_iv(&iv),
    });
    let status = client.authed(&on.url, "/v1/me/userinfo", &in_u, body).await;
    assert_eq!(status, StatusCode::OK);

    // amy, bob: a person and two identities each; four racers the same; ben: two persons
    // with an identity each, and the merge.
    let events = client.at_least(&on.url, 3 + 3 + 4 * 3 + 5).await;
    assert_eq!(events.len(), 23);
    let state = receiver.until_accepted(&ids(&events)).await;
    assert_complete_and_in_order(&state, &events);
    let accepted = state["accepted"].as_array().unwrap();
    let mut created: HashMap<&str, HashSet<&str>> = HashMap::new();
    for delivery in accepted.iter().filter(|d| d["type"] == "person.created") {
        created
            .entry(delivery["user_id"].as_str().unwrap())
            .or_default()
            .insert(delivery["id"].as_str().unwrap());
    }
    // amy, bob, four racers, and ben twice (two persons until the merge).
    assert_eq!(created.len(), 8, "{created:?}");
    assert!(created.values().all(|ids| ids.len() == 1), "{created:?}");
    let merged: Vec<Value> = accepted
        .iter()
        .filter(|d| d["type"] == "person.merged")
        .map(|d| serde_json::from_str::<Value>(d["body"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0]["data"]["survivor_id"], in_u["user"]["id"]);
    assert_eq!(merged[0]["data"]["merged_id"], in_a["user"]["id"]);
    on.kill().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_receiver_down_refusing_failing_then_hanging_gets_every_event_in_order_once_up() {
    let test = "webhooks: receiver down, then up";
    let port = free_port();
    let backend = TestBackend::from_env().await;
    let sim = sim().await;
    let on = serve(&backend, &sim, port).await;
    let client = Client::new(&sim);
    // Nothing listens: connections are refused.
    let n = busy_people(&client, &on.url, "down", 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let Some(receiver) = Receiver::start(test, port, "fail").await else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failed = receiver.state().await["attempts"].as_i64().unwrap();
    assert!(
        failed > 0,
        "deliveries were tried while the receiver answered 500"
    );
    receiver
        .mode(json!({ "mode": "hang", "hang_seconds": TIMEOUT_SECS * 3 }))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let state = receiver.state().await;
    assert!(
        state["attempts"].as_i64().unwrap() > failed,
        "tried while it hung"
    );
    assert_eq!(state["accepted"], json!([]));
    receiver.mode(json!({ "mode": "ok" })).await;

    let events = client.at_least(&on.url, n).await;
    assert_eq!(events.len(), n);
    let state = receiver.until_accepted(&ids(&events)).await;
    assert_complete_and_in_order(&state, &events);
    on.kill().await;
    receiver.stop().await;
}

#[tokio::test]
async fn kill_9_in_the_middle_of_deliveries_loses_nothing_after_a_restart() {
    let test = "webhooks: kill -9 mid-delivery";
    let port = free_port();
    let Some(receiver) = Receiver::start(test, port, "ok").await else {
        return;
    };
    // Each delivery takes a while, so that the kill lands in the middle of them.
    receiver
        .mode(json!({ "mode": "ok", "delay_ms": 300 }))
        .await;
    let backend = TestBackend::from_env().await;
    let sim = sim().await;
    let on = serve(&backend, &sim, port).await;
    let client = Client::new(&sim);
    let n = busy_people(&client, &on.url, "crash", 4).await;
    let events = client.at_least(&on.url, n).await;
    assert_eq!(events.len(), n);
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let accepted = receiver.state().await["accepted"].as_array().unwrap().len();
        if accepted > 0 {
            assert!(
                accepted < n,
                "the kill comes before every event is delivered"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "deliveries start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    on.kill().await;

    let on = serve(&backend, &sim, port).await;
    let state = receiver.until_accepted(&ids(&events)).await;
    assert_complete_and_in_order(&state, &events);
    on.kill().await;
    receiver.stop().await;
}

/// Two instances on one database deliver the same outbox: no webhook-id is ever in flight
/// twice at once, and nothing is sent twice.
async fn two_instances_deliver_together(sql: Sql) {
    let test = "webhooks: two instances";
    let port = free_port();
    let Some(receiver) = Receiver::start(test, port, "ok").await else {
        return;
    };
    receiver
        .mode(json!({ "mode": "ok", "delay_ms": 100 }))
        .await;
    let backend = TestBackend::provision(sql, false).await;
    let sim = sim().await;
    let a = serve(&backend, &sim, port).await;
    let b = serve(&backend, &sim, port).await;
    let client = Client::new(&sim);
    let (n_a, n_b) = tokio::join!(
        busy_people(&client, &a.url, "left", 5),
        busy_people(&client, &b.url, "right", 5)
    );
    let events = client.at_least(&a.url, n_a + n_b).await;
    assert_eq!(events.len(), n_a + n_b);
    let state = receiver.until_accepted(&ids(&events)).await;
    assert_complete_and_in_order(&state, &events);
    assert_eq!(
        state["overlaps"], 0,
        "no webhook-id in flight twice at once"
    );
    assert_eq!(
        state["accepted"].as_array().unwrap().len(),
        events.len(),
        "nothing sent twice"
    );
    a.kill().await;
    b.kill().await;
    receiver.stop().await;
}

#[tokio::test]
async fn two_instances_on_postgres_deliver_together_without_overlap() {
    if services::available(
        "webhooks: two instances on PostgreSQL",
        &[services::POSTGRES],
    ) {
        two_instances_deliver_together(Sql::Postgres).await;
    }
}

#[tokio::test]
async fn two_instances_on_mariadb_deliver_together_without_overlap() {
    if services::available("webhooks: two instances on MariaDB", &[services::MYSQL]) {
        two_instances_deliver_together(Sql::Mysql).await;
    }
}

/// Runs a `wxauth` command with `env`; returns (success, stdout).
async fn wxauth(env: &[(String, String)], args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .args(args)
        .envs(env.iter().cloned())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn failed_deliveries_are_listed_and_sent_again_with_their_webhook_ids() {
    let test = "webhooks: events list and redeliver";
    let port = free_port();
    let Some(receiver) = Receiver::start(test, port, "fail").await else {
        return;
    };
    let backend = TestBackend::from_env().await;
    let sim = sim().await;
    let env = config_env(&backend, &sim, port, "1s");
    let on = serve_with(env.clone()).await;
    let client = Client::new(&sim);
    client.login(&on.url, APP_A, "fay").await;
    let events = client.at_least(&on.url, 2).await;
    let ids = ids(&events);
    assert_eq!(ids.len(), 2);

    // Retried for a second, then given up.
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    let listed = loop {
        let (ok, listed) = wxauth(&env, &["events", "list", "--failed"]).await;
        assert!(ok, "{listed}");
        if ids.iter().all(|id| listed.contains(id.as_str())) {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deliveries fail: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        listed.contains("failed") && listed.contains("last: answered 500"),
        "{listed}"
    );
    assert!(listed.contains("person.created") && listed.contains("identity.created"));
    assert!(!listed.contains(SECRET.trim_start_matches("whsec_")));
    assert_eq!(receiver.state().await["accepted"], json!([]));

    receiver.mode(json!({ "mode": "ok" })).await;
    let (ok, said) = wxauth(&env, &["events", "redeliver", "--failed"]).await;
    assert!(ok && said.starts_with("2 failed"), "{said}");
    let state = receiver.until_accepted(&ids).await;
    assert_complete_and_in_order(&state, &events);
    let (ok, listed) = wxauth(&env, &["events", "list"]).await;
    assert!(ok);
    assert_eq!(listed.matches(" delivered (").count(), 2, "{listed}");

    // One event again, on purpose: the same webhook-id, so the receiver can tell.
    let (ok, said) = wxauth(&env, &["events", "redeliver", &ids[0]]).await;
    assert!(ok, "{said}");
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let state = receiver.state().await;
        let accepted = state["accepted"].as_array().unwrap();
        if accepted.len() == 3 {
            assert_eq!(accepted[2]["id"], ids[0].as_str());
            assert_complete_and_in_order(&state, &events);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event is sent again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, _) = wxauth(
        &env,
        &[
            "events",
            "redeliver",
            "01890a5d-ac96-774b-bcce-b302099a8057",
        ],
    )
    .await;
    assert!(!ok, "an unknown event is refused");

    let (ok, secret) = wxauth(&[], &["gen-webhook-secret"]).await;
    assert!(ok);
    let secret = secret.trim();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 6 + 44,
        "{secret}"
    );
    on.kill().await;
    receiver.stop().await;
}

/// Collects a child's stdout lines as they come.
fn collect_lines(
    stdout: tokio::process::ChildStdout,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Waits until a collected line satisfies `found`.
async fn until_line(
    lines: &std::sync::Mutex<Vec<String>>,
    what: &str,
    found: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while !lines.lock().unwrap().iter().any(|l| found(l)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_gift_once_example_grants_one_gift_per_person_against_the_demo() {
    let test = "webhooks: examples/gift-once against wxauth demo";
    let Some(python) = ext::python(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/webhooks");
    let mut receiver = Command::new(python)
        .arg(ext::repo_root().join("examples/gift-once/gift_once.py"))
        .args(["--port", &port.to_string(), "--secret", SECRET])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let said = collect_lines(receiver.stdout.take().unwrap());
    until_line(&said, "the receiver listens", |l| l.contains("listening")).await;

    let mut demo = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--sim-listen",
            "127.0.0.1:0",
        ])
        .args(["--webhook", &hook, "--webhook-secret", SECRET])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let printed = collect_lines(demo.stdout.take().unwrap());
    until_line(&printed, "the walkthrough is printed", |l| {
        l == wxauth::demo::WALKTHROUGH_END
    })
    .await;
    let printed = printed.lock().unwrap().clone();
    assert!(printed.iter().any(|l| l.contains(&hook)), "{printed:?}");
    // Steps 1 and 2 of the walkthrough, as the example's README says: a login.
    let login: Vec<&str> = printed
        .iter()
        .filter(|l| l.starts_with("CODE=") || l.starts_with("LOGIN="))
        .map(String::as_str)
        .collect();
    assert_eq!(login.len(), 2, "{printed:?}");
    let script = format!("set -e\n{}\n{}\n", login.join("\n"), login.join("\n"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(out.matches("\"is_new_user\":true").count(), 1, "{out}");
    assert_eq!(out.matches("\"is_new_user\":false").count(), 1, "{out}");

    until_line(&said, "the gift is granted", |l| {
        l.starts_with("gift granted to ")
    })
    .await;
    until_line(&said, "identity.created arrives", |l| {
        l.starts_with("identity.created")
    })
    .await;
    let gifts: Value = reqwest::get(format!("http://127.0.0.1:{port}/gifts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gifts["gifts"].as_array().unwrap().len(), 1, "{gifts}");

    // The same person.created again: the receiver knows its webhook-id.
    let env = vec![
        (
            "WXAUTH_DATABASE__URL".to_owned(),
            format!("sqlite://{}", dir.path().join("wxauth-demo.db").display()),
        ),
        (
            "WXAUTH_WEBHOOKS".to_owned(),
            format!("[{{url=\"{hook}\", secret=\"{SECRET}\"}}]"),
        ),
    ];
    let event_id = gifts["gifts"][0]["event_id"].as_str().unwrap();
    let (ok, out) = wxauth(&env, &["events", "redeliver", event_id]).await;
    assert!(ok, "{out}");
    until_line(&said, "the delivery comes again", |l| {
        l == "already handled"
    })
    .await;
    let granted = said
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("gift granted"))
        .count();
    assert_eq!(granted, 1);
    let _ = demo.kill().await;
    let _ = receiver.kill().await;
}

#[tokio::test]
async fn a_stopped_instance_finishes_its_attempts_and_holds_no_lease() {
    let test = "webhooks: graceful stop";
    let port = free_port();
    let Some(receiver) = Receiver::start(test, port, "hang").await else {
        return;
    };
    receiver
        .mode(json!({ "mode": "hang", "hang_seconds": TIMEOUT_SECS * 5 }))
        .await;
    let backend = TestBackend::from_env().await;
    let sim = sim().await;
    let mut on = serve(&backend, &sim, port).await;
    let client = Client::new(&sim);
    for user in ["gus", "hal", "ida"] {
        client.login(&on.url, APP_A, user).await;
    }
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while receiver.state().await["attempts"].as_i64().unwrap() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "deliveries start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGTERM while the attempts hang.
    let pid = on.child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(15), on.child.wait())
        .await
        .expect("wxauth stops")
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    assert_eq!(
        backend
            .count("webhook_deliveries WHERE lease_owner IS NOT NULL OR lease_until_ms > 0")
            .await,
        0,
        "nothing is left claimed"
    );
    assert_eq!(
        backend
            .count("webhook_deliveries WHERE state = 'pending'")
            .await,
        6
    );
    receiver.mode(json!({ "mode": "ok" })).await;
    let on = serve(&backend, &sim, port).await;
    let events = client.at_least(&on.url, 6).await;
    let state = receiver.until_accepted(&ids(&events)).await;
    assert_complete_and_in_order(&state, &events);
    on.kill().await;
    receiver.stop().await;
}
