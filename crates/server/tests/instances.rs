//! Several real `wxauth serve` processes on one database and one Redis: any instance serves
//! any request, revocation is seen everywhere at once, and concurrent first logins spread
//! over instances still make one user. Instances started at the same moment on a fresh
//! database take turns applying the migrations, and all of them come up.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/services.rs"]
mod services;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use backend::{Sql, TestBackend};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimConfig, SimHandle};

const DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=";

/// One `wxauth serve` process.
struct Instance {
    child: Child,
    url: String,
}

async fn serve(backend: &TestBackend, sim: &SimHandle) -> Instance {
    listening(start(backend, sim)).await
}

/// Starts `wxauth serve` without waiting for it.
fn start(backend: &TestBackend, sim: &SimHandle) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .arg("serve")
        .envs(backend.env())
        .env("WXAUTH_SERVER__LISTEN", "127.0.0.1:0")
        .env("WXAUTH_WECHAT__API_BASE", sim.base_url())
        .env("WXAUTH_SECURITY__DATA_KEY", DATA_KEY)
        .env("TEST_APP_SECRET", DEMO_APP_SECRET)
        .env(
            "WXAUTH_APPS",
            format!("[{{app_id=\"{DEMO_APP_ID}\",secret_env=\"TEST_APP_SECRET\"}}]"),
        )
        .env("WXAUTH_LOG__FORMAT", "json")
        // Short enough for a test to wait past it.
        .env("WXAUTH_TOKENS__REFRESH_GRACE", "2s")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits until a started instance listens.
async fn listening(mut child: Child) -> Instance {
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
        }
        panic!("wxauth serve exited before listening:\n{}", said.join("\n"));
    })
    .await
    .expect("wxauth serve starts listening");
    // Keep reading the log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Instance {
        child,
        url: format!("http://{addr}"),
    }
}

impl Instance {
    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

struct Cluster {
    http: reqwest::Client,
    sim: SimHandle,
}

impl Cluster {
    async fn code(&self, user: &str) -> String {
        let v: Value = self
            .http
            .post(format!("{}/sim/login", self.sim.base_url()))
            .json(&json!({ "appid": DEMO_APP_ID, "user": user }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["code"].as_str().unwrap().to_owned()
    }

    async fn login(&self, on: &Instance, user: &str) -> Value {
        let code = self.code(user).await;
        let response = self
            .http
            .post(format!("{}/v1/auth/login", on.url))
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn me(&self, on: &Instance, token: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/v1/me", on.url))
            .bearer_auth(token.as_str().unwrap())
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn post(
        &self,
        on: &Instance,
        path: &str,
        token: Option<&Value>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}{path}", on.url)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token.as_str().unwrap());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn two_instances_share_everything(sql: Sql) {
    let backend = TestBackend::provision(sql, true).await;
    let sim = wechat_sim::spawn(
        SimConfig::default(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let cluster = Cluster {
        http: reqwest::Client::new(),
        sim,
    };
    let a = serve(&backend, &cluster.sim).await;
    let b = serve(&backend, &cluster.sim).await;

    // A token issued by A works on B.
    let kept = cluster.login(&a, "alice").await;
    assert_eq!(
        cluster.me(&b, &kept["access_token"]).await.0,
        StatusCode::OK
    );

    // Logout on A is refused on B at once.
    let ended = cluster.login(&a, "alice").await;
    let (status, _) = cluster
        .post(
            &a,
            "/v1/auth/logout",
            Some(&ended["access_token"]),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = cluster.me(&b, &ended["access_token"]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );

    // Refresh on B of a pair from A works; the same token again on A at once (a retry) gets
    // the same pair; after the grace, reuse on A is detected and ends the session.
    let pair = cluster.login(&a, "bob").await;
    let refresh = json!({ "refresh_token": pair["refresh_token"] });
    let (status, rotated) = cluster
        .post(&b, "/v1/auth/refresh", None, refresh.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, replayed) = cluster
        .post(&a, "/v1/auth/refresh", None, refresh.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed["refresh_token"], rotated["refresh_token"]);
    assert_eq!(replayed["access_token"], rotated["access_token"]);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (status, body) = cluster.post(&a, "/v1/auth/refresh", None, refresh).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    let (status, _) = cluster.me(&b, &rotated["access_token"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // 50 concurrent first logins of one new user, spread over A and B, make one user.
    let users_before = backend.count("users").await;
    let mut codes = Vec::new();
    for _ in 0..50 {
        codes.push(cluster.code("carol").await);
    }
    let logins = codes.into_iter().enumerate().map(|(i, code)| {
        let url = format!("{}/v1/auth/login", if i % 2 == 0 { &a.url } else { &b.url });
        let http = cluster.http.clone();
        tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&json!({ "code": code }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        })
    });
    let mut ids = HashSet::new();
    let mut new_users = 0;
    for login in logins {
        let login = login.await.unwrap();
        ids.insert(login["user"]["id"].as_str().unwrap().to_owned());
        new_users += usize::from(login["is_new_user"] == true);
    }
    assert_eq!((ids.len(), new_users), (1, 1));
    assert_eq!(backend.count("users").await, users_before + 1);

    // Both restart; every live session survives, revoked ones stay revoked.
    a.stop().await;
    b.stop().await;
    let a = serve(&backend, &cluster.sim).await;
    let b = serve(&backend, &cluster.sim).await;
    for on in [&a, &b] {
        assert_eq!(
            cluster.me(on, &kept["access_token"]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            cluster.me(on, &ended["access_token"]).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_instances_on_mariadb_and_redis_behave_as_one() {
    if services::available("instances on MariaDB", &[services::MYSQL, services::REDIS]) {
        two_instances_share_everything(Sql::Mysql).await;
    }
}

#[tokio::test]
async fn two_instances_on_postgres_and_redis_behave_as_one() {
    if services::available(
        "instances on PostgreSQL",
        &[services::POSTGRES, services::REDIS],
    ) {
        two_instances_share_everything(Sql::Postgres).await;
    }
}

/// Starts `n` instances at the same moment on a fresh database; every one must come up.
async fn instances_started_at_once_all_become_ready(sql: Sql, n: usize) {
    let backend = TestBackend::provision(sql, false).await;
    let sim = wechat_sim::spawn(
        SimConfig::default(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let children: Vec<Child> = (0..n).map(|_| start(&backend, &sim)).collect();
    let mut instances = Vec::new();
    for child in children {
        instances.push(listening(child).await);
    }
    let http = reqwest::Client::new();
    for instance in &instances {
        let response = http
            .get(format!("{}/readyz", instance.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The migrations ran exactly once each.
    let applied = backend.count("_sqlx_migrations").await;
    assert_eq!(
        applied,
        i64::try_from(std::fs::read_dir(migrations_dir(sql)).unwrap().count()).unwrap()
    );
    for instance in instances {
        instance.stop().await;
    }
}

fn migrations_dir(sql: Sql) -> std::path::PathBuf {
    let backend = match sql {
        Sql::Sqlite => "sqlite",
        Sql::Mysql => "mysql",
        Sql::Postgres => "postgres",
    };
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
}

#[tokio::test]
async fn four_instances_started_at_once_on_a_fresh_mariadb_database_all_become_ready() {
    if services::available("parallel start on MariaDB", &[services::MYSQL]) {
        instances_started_at_once_all_become_ready(Sql::Mysql, 4).await;
    }
}

#[tokio::test]
async fn four_instances_started_at_once_on_a_fresh_postgres_database_all_become_ready() {
    if services::available("parallel start on PostgreSQL", &[services::POSTGRES]) {
        instances_started_at_once_all_become_ready(Sql::Postgres, 4).await;
    }
}

#[tokio::test]
async fn four_processes_started_at_once_on_a_fresh_sqlite_file_all_come_up() {
    instances_started_at_once_all_become_ready(Sql::Sqlite, 4).await;
}
