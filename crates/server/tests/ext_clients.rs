//! Real clients written elsewhere, against the real service: PyJWT (`PyJWKClient`) and Node's
//! jose (`createRemoteJWKSet`) verify wxauth's JWTs by the published key set alone, and nginx
//! puts the real `wxauth serve` in front of another service with `auth_request`.
//! `scripts/ext-tools` installs the clients (see tests/support/ext.rs).

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/ext.rs"]
mod ext;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimConfig};
use wxauth::jwt::{Claims, JwtAlgorithm, Subject};

use backend::TestBackend;
use helpers::{Options, TestApp, spawn_app, spawn_app_with};

/// A JWT verifier from another ecosystem.
#[derive(Debug, Clone)]
enum Verifier {
    /// tests/ext/verify_jwt.py under the venv's Python.
    PyJwt(std::path::PathBuf),
    /// tests/ext/verify_jwt.mjs under Node.
    Jose(ext::Node),
}

/// What a verifier said: the claims it accepted, or the reason it refused.
#[derive(Debug)]
enum Verdict {
    Accepted(Value),
    Refused(String),
}

impl Verifier {
    /// The verifiers installed (each missing one is a recorded skip of `test`).
    fn available(test: &str) -> Vec<Self> {
        let mut verifiers = Vec::new();
        if let Some(python) = ext::python(&format!("{test} (PyJWT)")) {
            verifiers.push(Self::PyJwt(python));
        }
        if let Some(node) = ext::node(&format!("{test} (jose)")) {
            verifiers.push(Self::Jose(node));
        }
        verifiers
    }

    async fn verify(&self, jwks_url: &str, token: &str, issuer: &str, audience: &str) -> Verdict {
        let mut command = match self {
            Self::PyJwt(python) => {
                let mut command = Command::new(python);
                command.arg(ext::ext_dir().join("verify_jwt.py"));
                command
            }
            Self::Jose(node) => {
                // The script finds jose in tests/ext/node_modules, beside it.
                let mut command = Command::new(&node.bin);
                command.arg(ext::ext_dir().join("verify_jwt.mjs"));
                command
            }
        };
        command.args([jwks_url, token, issuer, audience]);
        let output = ext::run(&mut command).await;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        match output.status.code() {
            Some(0) => Verdict::Accepted(serde_json::from_slice(&output.stdout).unwrap()),
            Some(1) => {
                assert!(stderr.starts_with("rejected: "), "{self:?}: {stderr}");
                Verdict::Refused(stderr)
            }
            other => panic!("{self:?} failed ({other:?}):\n{stderr}"),
        }
    }
}

fn jwks_url(app: &TestApp) -> String {
    app.url("/.well-known/jwks.json")
}

fn sign(app: &TestApp, now: i64) -> (Claims, String) {
    let keys = &app.state.keys;
    let claims = keys.claims(
        Subject {
            user_id: "0190d5a8-0000-7000-8000-000000000001",
            session_id: "sess-1",
            app_id: &app.app_id,
            openid: "oGZUI0egBJY1zhBYw2KhdUfwVJJE",
            unionid: Some("ocMvos6NjeKLIBqg5Mr9QjxrP1FA"),
        },
        now,
    );
    let token = keys.sign(&claims).unwrap();
    (claims, token)
}

fn accepted(verdict: Verdict, who: &Verifier) -> Value {
    match verdict {
        Verdict::Accepted(claims) => claims,
        Verdict::Refused(why) => panic!("{who:?} refused a good token: {why}"),
    }
}

fn refused(verdict: Verdict, who: &Verifier) -> String {
    match verdict {
        Verdict::Refused(why) => why,
        Verdict::Accepted(claims) => panic!("{who:?} accepted a bad token: {claims}"),
    }
}

async fn good_and_bad_tokens_are_told_apart(app: &TestApp, test: &str) {
    let now = app.clock_now();
    let (claims, token) = sign(app, now);
    let (_, expired) = sign(app, now - 86_400);
    for verifier in Verifier::available(test) {
        let verdict = verifier
            .verify(&jwks_url(app), &token, &app.addr, "wxauth")
            .await;
        assert_eq!(
            accepted(verdict, &verifier),
            serde_json::to_value(&claims).unwrap()
        );

        let verdict = verifier
            .verify(&jwks_url(app), &token, &app.addr, "payments")
            .await;
        let why = refused(verdict, &verifier);
        assert!(why.to_lowercase().contains("aud"), "{verifier:?}: {why}");

        let verdict = verifier
            .verify(
                &jwks_url(app),
                &token,
                "https://elsewhere.example.com",
                "wxauth",
            )
            .await;
        let why = refused(verdict, &verifier);
        assert!(why.to_lowercase().contains("iss"), "{verifier:?}: {why}");

        let verdict = verifier
            .verify(&jwks_url(app), &expired, &app.addr, "wxauth")
            .await;
        let why = refused(verdict, &verifier);
        assert!(why.to_lowercase().contains("exp"), "{verifier:?}: {why}");

        // The payload swapped for another's under the same signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            expired.split('.').nth(1).unwrap(),
            parts[2]
        );
        let verdict = verifier
            .verify(&jwks_url(app), &forged, &app.addr, "wxauth")
            .await;
        refused(verdict, &verifier);
    }
}

#[tokio::test]
async fn pyjwt_and_jose_accept_an_eddsa_token_by_the_published_keys_and_refuse_bad_ones() {
    let app = spawn_app().await;
    good_and_bad_tokens_are_told_apart(
        &app,
        "ext_clients::pyjwt_and_jose_accept_an_eddsa_token_by_the_published_keys_and_refuse_bad_ones",
    )
    .await;
}

#[tokio::test]
async fn pyjwt_and_jose_accept_an_es256_token_by_the_published_keys_and_refuse_bad_ones() {
    let app = spawn_app_with(Options {
        tweak: Box::new(|config| config.tokens.jwt_algorithm = JwtAlgorithm::ES256),
        ..Options::default()
    })
    .await;
    good_and_bad_tokens_are_told_apart(
        &app,
        "ext_clients::pyjwt_and_jose_accept_an_es256_token_by_the_published_keys_and_refuse_bad_ones",
    )
    .await;
}

#[tokio::test]
async fn after_a_rotation_pyjwt_and_jose_accept_new_tokens_by_the_new_kid_and_old_ones_still() {
    let app = spawn_app().await;
    let now = app.clock_now();
    let old_kid = app.state.keys.current_kid();
    let (old_claims, old_token) = sign(&app, now);
    let new_kid = app.state.keys.rotate().await.unwrap();
    assert_ne!(new_kid, old_kid);
    let (new_claims, new_token) = sign(&app, now);
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    for verifier in Verifier::available(
        "ext_clients::after_a_rotation_pyjwt_and_jose_accept_new_tokens_by_the_new_kid_and_old_ones_still",
    ) {
        for (token, claims) in [(&new_token, &new_claims), (&old_token, &old_claims)] {
            let verdict = verifier
                .verify(&jwks_url(&app), token, &app.addr, "wxauth")
                .await;
            assert_eq!(
                accepted(verdict, &verifier),
                serde_json::to_value(claims).unwrap()
            );
        }
    }
}

const DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=";

/// One `wxauth serve` process; its URL.
async fn serve(
    backend: &TestBackend,
    sim_url: &str,
    extra_env: &[(&str, &str)],
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .arg("serve")
        .envs(backend.env())
        .env("WXAUTH_SERVER__LISTEN", "127.0.0.1:0")
        .env("WXAUTH_STORAGE__MEDIA_DIR", backend.dir().join("media"))
        .env("WXAUTH_WECHAT__API_BASE", sim_url)
        .env("WXAUTH_SECURITY__DATA_KEY", DATA_KEY)
        .env("TEST_APP_SECRET", DEMO_APP_SECRET)
        .env(
            "WXAUTH_APPS",
            format!("[{{app_id=\"{DEMO_APP_ID}\",secret_env=\"TEST_APP_SECRET\"}}]"),
        )
        .env("WXAUTH_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        let mut said = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = event["fields"]["addr"].as_str()
            {
                return addr.to_owned();
            }
            said.push(line);
        }
        panic!("wxauth serve exited before listening:\n{}", said.join("\n"));
    })
    .await
    .expect("wxauth serve starts listening");
    // Keep reading the log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}

/// A real `wxauth serve` on a fresh backend, its simulator, and a logged-in user.
struct Served {
    _backend: TestBackend,
    _sim: wechat_sim::SimHandle,
    _server: Child,
    url: String,
    http: reqwest::Client,
    login: Value,
}

impl Served {
    async fn start(extra_env: &[(&str, &str)]) -> Self {
        let backend = TestBackend::from_env().await;
        let sim = wechat_sim::spawn(
            SimConfig::default(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .await
        .unwrap();
        let (server, url) = serve(&backend, &sim.base_url(), extra_env).await;
        let http = reqwest::Client::new();
        let code: Value = http
            .post(format!("{}/sim/login", sim.base_url()))
            .json(&json!({ "appid": DEMO_APP_ID, "user": "alice" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let login: Value = http
            .post(format!("{url}/v1/auth/login"))
            .json(&json!({ "code": code["code"] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            _backend: backend,
            _sim: sim,
            _server: server,
            url,
            http,
            login,
        }
    }

    fn token(&self) -> String {
        self.login["access_token"].as_str().unwrap().to_owned()
    }

    /// Logs another simulated user in; returns the login answer.
    async fn login_as(&self, user: &str) -> Value {
        let code: Value = self
            .http
            .post(format!("{}/sim/login", self._sim.base_url()))
            .json(&json!({ "appid": DEMO_APP_ID, "user": user }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.http
            .post(format!("{}/v1/auth/login", self.url))
            .json(&json!({ "code": code["code"] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send().await.unwrap()
    }

    async fn through(&self, nginx: &ext::Nginx, bearer: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(nginx.url("/orders/42"));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send().await.unwrap()
    }
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_the_real_service_lets_through_only_accepted_tokens() {
    let Some(nginx_bin) = ext::nginx(
        "ext_clients::nginx_auth_request_in_front_of_the_real_service_lets_through_only_accepted_tokens",
    ) else {
        return;
    };
    let served = Served::start(&[]).await;
    let token = served.token();

    // GET /v1/me answers 200 for a live token and 401 otherwise: enough to show the plumbing.
    let upstream = ext::EchoUpstream::start().await;
    let auth = format!("{}/v1/me", served.url);
    let nginx = ext::Nginx::start(&nginx_bin, &auth, upstream.addr).await;

    let response = served.through(&nginx, None).await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{}",
        nginx.error_log()
    );
    let response = served.through(&nginx, Some("wxa_not-a-token")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        upstream.hits(),
        0,
        "nothing reaches the upstream unauthenticated"
    );

    let response = served.through(&nginx, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", nginx.error_log());
    let echoed = ext::json_or_text(&response.bytes().await.unwrap());
    assert_eq!(echoed["path"], "/orders/42");
    assert_eq!(echoed["authorization"], format!("Bearer {token}"));
    assert_eq!(upstream.hits(), 1);

    // Logging out revokes the token at once, behind nginx too.
    let logout = served
        .http
        .post(format!("{}/v1/auth/logout", served.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(logout.status().is_success());
    let response = served.through(&nginx, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn nginx_passes_the_user_id_from_v1_verify_to_the_upstream_for_a_jwt() {
    let Some(nginx_bin) = ext::nginx(
        "ext_clients::nginx_passes_the_user_id_from_v1_verify_to_the_upstream_for_a_jwt",
    ) else {
        return;
    };
    let served = Served::start(&[("WXAUTH_TOKENS__FORMAT", "jwt")]).await;
    let token = served.token();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let upstream = ext::EchoUpstream::start().await;
    let auth = format!("{}/v1/verify", served.url);
    let nginx = ext::Nginx::start(&nginx_bin, &auth, upstream.addr).await;

    let response = served.through(&nginx, None).await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{}",
        nginx.error_log()
    );
    assert_eq!(upstream.hits(), 0);

    let response = served.through(&nginx, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", nginx.error_log());
    let echoed = ext::json_or_text(&response.bytes().await.unwrap());
    assert_eq!(echoed["x_wxauth_user_id"], served.login["user"]["id"]);
    assert_eq!(upstream.hits(), 1);

    // Garbage, a logged-out token and a revoked one (refresh-token reuse) are refused by
    // nginx at once, and never reach the upstream.
    let response = served.through(&nginx, Some("eyJ.garbage.token")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let logout = served
        .post("/v1/auth/logout", Some(&token), json!({}))
        .await;
    assert!(logout.status().is_success());
    let response = served.through(&nginx, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "logged out");

    let bob = served.login_as("bob").await;
    let bob_token = bob["access_token"].as_str().unwrap().to_owned();
    let response = served.through(&nginx, Some(&bob_token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = ext::json_or_text(&response.bytes().await.unwrap());
    assert_eq!(echoed["x_wxauth_user_id"], bob["user"]["id"]);
    for _ in 0..2 {
        served
            .post(
                "/v1/auth/refresh",
                None,
                json!({ "refresh_token": bob["refresh_token"] }),
            )
            .await;
    }
    let response = served.through(&nginx, Some(&bob_token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "revoked");
    assert_eq!(upstream.hits(), 2);
}
