//! A database or Redis that goes away: requests get 503 `store_unavailable` (not 500, not a
//! hang), `/readyz` names the store that is down, and the service recovers on its own.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/services.rs"]
mod services;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::{Sql, TestBackend};
use proxy::Proxy;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimConfig};
use wxauth::Application;
use wxauth::config::{AppConfig, Config, DatabaseUrl};

/// Points `url` at the proxy instead of the real server.
fn through(url: &str, proxy: &Proxy) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_port(Some(proxy.addr.port())).unwrap();
    url.to_string()
}

struct Running {
    api: String,
    sim: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn run(config_for: impl FnOnce(&mut Config)) -> Running {
    let sim = wechat_sim::spawn(
        SimConfig::default(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.wechat.api_base = sim.base_url().parse().unwrap();
    config.security.data_key = Some(SecretString::from(
        "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=",
    ));
    config.apps = vec![AppConfig {
        app_id: DEMO_APP_ID.into(),
        secret: Some(SecretString::from(DEMO_APP_SECRET)),
        secret_file: None,
        secret_env: None,
    }];
    config_for(&mut config);
    let app = Application::build(config).await.unwrap();
    let api = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Running {
        api,
        sim: sim.base_url(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap(),
        _stop: stop,
    }
}

impl Running {
    /// A fresh `wx.login` code from the simulator.
    async fn code(&self, user: &str) -> String {
        let code: Value = self
            .http
            .post(format!("{}/sim/login", self.sim))
            .json(&json!({ "appid": DEMO_APP_ID, "user": user }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        code["code"].as_str().unwrap().to_owned()
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.api))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Logs in; returns the whole answer (both tokens).
    async fn login_pair(&self, user: &str) -> Value {
        let code = self.code(user).await;
        let (status, login) = self.post("/v1/auth/login", json!({ "code": code })).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        login
    }

    async fn login(&self, user: &str) -> String {
        self.login_pair(user).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn me(&self, token: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/v1/me", self.api))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn ready(&self) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/readyz", self.api))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Waits (bounded) until the service answers `/v1/me` again.
    async fn recovers(&self, token: &str) {
        for _ in 0..40 {
            if self.me(token).await.0 == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the service did not recover after the store came back");
    }
}

/// Cuts the store behind `proxy` and checks what clients and `/readyz` see.
async fn outage_and_recovery(app: &Running, proxy: &Proxy, store: &str) {
    let token = app.login("alice").await;
    assert_eq!(app.me(&token).await.0, StatusCode::OK);
    assert_eq!(app.ready().await.0, StatusCode::OK);

    proxy.down().await;
    let (status, body) = app.me(&token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable");
    let (status, body) = app.ready().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"][store], "unavailable", "{body}");

    proxy.up();
    app.recovers(&token).await;
    assert_eq!(app.ready().await.0, StatusCode::OK);
}

#[tokio::test]
async fn redis_going_away_gives_503_and_the_service_recovers_on_its_own() {
    if !services::available("redis outage", &[services::REDIS]) {
        return;
    }
    let backend = Arc::new(TestBackend::provision(Sql::Sqlite, true).await);
    let proxy = Proxy::start(services::REDIS).await;
    let redis_url = through(backend.redis_url.as_deref().unwrap(), &proxy);
    let app = run(|config| {
        backend.apply(config);
        config.sessions.redis_url = Some(DatabaseUrl::from(redis_url.as_str()));
        config.sessions.redis_timeout = Duration::from_secs(1);
    })
    .await;
    outage_and_recovery(&app, &proxy, "redis").await;
}

/// Runs `call`, returning what it gave and how long it took.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = call.await;
    (out, start.elapsed())
}

#[tokio::test]
async fn while_redis_is_cut_every_call_answers_503_within_its_redis_timeout() {
    if !services::available("redis timeout", &[services::REDIS]) {
        return;
    }
    let redis_timeout = Duration::from_secs(1);
    // A correctness bound, not a benchmark: the configured timeout plus ample slack for a
    // loaded machine. Before every call was bounded, a reconnect's retries took about 2.5 s.
    let bound = redis_timeout + Duration::from_secs(1);
    let backend = Arc::new(TestBackend::provision(Sql::Sqlite, true).await);
    let proxy = Proxy::start(services::REDIS).await;
    let redis_url = through(backend.redis_url.as_deref().unwrap(), &proxy);
    let app = run(|config| {
        backend.apply(config);
        config.sessions.redis_url = Some(DatabaseUrl::from(redis_url.as_str()));
        config.sessions.redis_timeout = redis_timeout;
    })
    .await;
    let login = app.login_pair("olga").await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let code = app.code("olga").await;

    proxy.down().await;
    // Twice each: the first call meets the dropped connection, the next ones the reconnect.
    for round in 1..=2 {
        let ((status, body), took) = timed(app.ready()).await;
        eprintln!("round {round}: /readyz answered {status} in {took:?}");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["checks"]["redis"], "unavailable", "{body}");
        assert!(took < bound, "/readyz took {took:?}");

        let ((status, body), took) = timed(app.me(&access)).await;
        eprintln!("round {round}: /v1/me answered {status} in {took:?}");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        assert!(took < bound, "/v1/me took {took:?}");

        let ((status, body), took) =
            timed(app.post("/v1/auth/refresh", json!({ "refresh_token": refresh }))).await;
        eprintln!("round {round}: refresh answered {status} in {took:?}");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        assert!(took < bound, "refresh took {took:?}");

        let ((status, body), took) =
            timed(app.post("/v1/auth/login", json!({ "code": code }))).await;
        eprintln!("round {round}: login answered {status} in {took:?}");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        assert!(took < bound, "login took {took:?}");
    }

    proxy.up();
    app.recovers(&access).await;
    assert_eq!(app.ready().await.0, StatusCode::OK);
    // The code was never spent while Redis was away: the login goes through now.
    let (status, body) = app.post("/v1/auth/login", json!({ "code": code })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post("/v1/auth/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn database_outage(sql: Sql, upstream: &str) {
    let backend = Arc::new(TestBackend::provision(sql, false).await);
    let proxy = Proxy::start(upstream).await;
    let url = through(&backend.database_url, &proxy);
    let app = run(|config| {
        backend.apply(config);
        config.database.url = DatabaseUrl::from(url.as_str());
        config.database.acquire_timeout = Duration::from_secs(1);
    })
    .await;
    outage_and_recovery(&app, &proxy, "database").await;
}

#[tokio::test]
async fn postgres_going_away_gives_503_and_the_service_recovers_on_its_own() {
    if services::available("postgres outage", &[services::POSTGRES]) {
        database_outage(Sql::Postgres, services::POSTGRES).await;
    }
}

#[tokio::test]
async fn mariadb_going_away_gives_503_and_the_service_recovers_on_its_own() {
    if services::available("mariadb outage", &[services::MYSQL]) {
        database_outage(Sql::Mysql, services::MYSQL).await;
    }
}
