//! One real `wxauth serve` process on a test backend, against a simulator, with typed request
//! helpers. Extra `WXAUTH_*` settings go on top of a working config.

// Shared by several test crates, each of which uses only a part.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimConfig, SimHandle};

use super::backend::TestBackend;

const DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=";

/// A simulator on a free loopback port.
pub async fn sim() -> SimHandle {
    wechat_sim::spawn(
        SimConfig::default(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap()
}

/// A second mini program, bound to the same Open Platform account as the demo app (unionids
/// link them).
pub const SECOND_APP_ID: &str = "wx00000000000000b2";
pub const SECOND_APP_SECRET: &str = "second-app-secret-000000000000000";

/// A simulator with the demo app and [`SECOND_APP_ID`].
pub async fn two_app_sim() -> SimHandle {
    let app = |appid: &str, secret: &str| wechat_sim::SimApp {
        appid: appid.to_owned(),
        secret: secret.to_owned(),
        bound: true,
    };
    wechat_sim::spawn(
        SimConfig {
            apps: vec![
                app(DEMO_APP_ID, DEMO_APP_SECRET),
                app(SECOND_APP_ID, SECOND_APP_SECRET),
            ],
            keep_session_key: false,
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap()
}

/// `wxauth serve` with both apps and an operator `ops` whose key has the hash `key_hash`.
pub async fn serve_two_apps_with_admin(
    backend: &TestBackend,
    sim: &SimHandle,
    key_hash: &str,
) -> Wxauth {
    let apps = format!(
        "[{{app_id=\"{DEMO_APP_ID}\",secret_env=\"TEST_APP_SECRET\"}},\
         {{app_id=\"{SECOND_APP_ID}\",secret_env=\"TEST_SECOND_SECRET\"}}]"
    );
    let admins = format!("[{{name=\"ops\",key_hash=\"{key_hash}\"}}]");
    serve(
        backend,
        sim,
        &[
            ("WXAUTH_APPS", apps.as_str()),
            ("TEST_SECOND_SECRET", SECOND_APP_SECRET),
            ("WXAUTH_ADMINS", admins.as_str()),
        ],
    )
    .await
}

/// A `wx.login` code of the demo app for `user`, from the simulator at `sim_url`.
pub async fn code(http: &reqwest::Client, sim_url: &str, user: &str) -> String {
    let response = http
        .post(format!("{sim_url}/sim/login"))
        .json(&json!({ "appid": DEMO_APP_ID, "user": user }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let v: Value = response.json().await.unwrap();
    v["code"].as_str().unwrap().to_owned()
}

/// A running `wxauth serve`.
pub struct Wxauth {
    child: Child,
    /// `http://ADDR` of the main listener.
    pub url: String,
    /// `http://ADDR` of `[metrics] listen`, when it is set.
    pub metrics_url: Option<String>,
    /// The simulator's base URL.
    pub sim_url: String,
    /// A client with a timeout.
    pub http: reqwest::Client,
}

/// Starts `wxauth serve` on `backend` against `sim` with `settings`, and waits until it
/// listens.
pub async fn serve(backend: &TestBackend, sim: &SimHandle, settings: &[(&str, &str)]) -> Wxauth {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxauth"));
    command.arg("serve").current_dir(backend.dir());
    // The test runner's own settings and allocator tunables stay out of the process.
    for (key, _) in std::env::vars() {
        if key.starts_with("WXAUTH_") || key.starts_with("MALLOC_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .envs(backend.env())
        .env("WXAUTH_SERVER__LISTEN", "127.0.0.1:0")
        .env("WXAUTH_STORAGE__MEDIA_DIR", backend.dir().join("media"))
        .env("WXAUTH_WECHAT__API_BASE", sim.base_url())
        .env("WXAUTH_SECURITY__DATA_KEY", DATA_KEY)
        .env("TEST_APP_SECRET", DEMO_APP_SECRET)
        .env(
            "WXAUTH_APPS",
            format!("[{{app_id=\"{DEMO_APP_ID}\",secret_env=\"TEST_APP_SECRET\"}}]"),
        )
        .env("WXAUTH_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, metrics_addr) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut said = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = event["fields"]["addr"].as_str()
            {
                let metrics_addr = event["fields"]["metrics_addr"].as_str().map(str::to_owned);
                return (addr.to_owned(), metrics_addr);
            }
            said.push(line);
        }
        panic!("wxauth serve exited before listening:\n{}", said.join("\n"));
    })
    .await
    .expect("wxauth serve starts listening");
    // Keep reading the log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Wxauth {
        child,
        url: format!("http://{addr}"),
        metrics_url: metrics_addr.map(|addr| format!("http://{addr}")),
        sim_url: sim.base_url(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

impl Wxauth {
    /// A URL on the main listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A request to the simulator's control API.
    pub async fn sim(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.sim_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    /// A `wx.login` code for `user`.
    pub async fn code(&self, user: &str) -> String {
        code(&self.http, &self.sim_url, user).await
    }

    /// The next `times` calls to a WeChat path answer `errcode`.
    pub async fn fault(&self, path: &str, errcode: i64, times: u32) {
        self.sim(
            "/sim/faults",
            json!({ "path": path, "errcode": errcode, "times": times }),
        )
        .await;
    }

    /// Logs `user` in: the status, the headers and the body.
    pub async fn login(&self, user: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let code = self.code(user).await;
        self.post("/v1/auth/login", None, json!({ "code": code }))
            .await
    }

    /// Logs `user` in, which must work; the answer.
    pub async fn logged_in(&self, user: &str) -> Value {
        let (status, _, body) = self.login(user).await;
        assert_eq!(status, StatusCode::OK, "login of {user}: {body}");
        body
    }

    /// A POST with an optional bearer token.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// A GET with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Where `/metrics` is served.
    pub fn metrics_endpoint(&self) -> String {
        format!(
            "{}/metrics",
            self.metrics_url.as_deref().unwrap_or(&self.url)
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// `kill -9`: the process ends at once, whatever it was doing.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let exited = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(exited.is_ok(), "wxauth did not exit within 30 s of SIGTERM");
    }
}
