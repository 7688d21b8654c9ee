//! The simulator, driven over HTTP as a backend and a test tool would drive it: every WeChat
//! endpoint's answers and errcodes, the clock, people, open data, faults and statistics.

// The harness helpers are test code too; clippy only exempts `#[test]` functions themselves.
#![expect(
    clippy::unwrap_used,
    reason = "test harness: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use clap::Parser as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimApp, SimConfig, SimHandle};
use wxauth_wechat::crypto::{self, DecryptError, WatermarkCheck};
use wxauth_wechat::{AppId, SessionKey};

const APP_A: &str = "wxaaaaaaaaaaaaaaaa";
const SECRET_A: &str = "secret-a";
const APP_B: &str = "wxbbbbbbbbbbbbbbbb";
const SECRET_B: &str = "secret-b";
const APP_U: &str = "wxcccccccccccccccc";
const SECRET_U: &str = "secret-u";

const SAMPLE_APPID: &str = "wx4f4bc4dec97d474b";
const SAMPLE_OPENID: &str = "oGZUI0egBJY1zhBYw2KhdUfwVJJE";
const SAMPLE_SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
const SAMPLE_UNIONID: &str = "ocMvos6NjeKLIBqg5Mr9QjxrP1FA";

// ----- harness -----

struct TestSim {
    handle: SimHandle,
    base: String,
    http: reqwest::Client,
}

async fn spawn_with(config: SimConfig) -> TestSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = wechat_sim::spawn(config, listener).await.unwrap();
    let base = handle.base_url();
    TestSim {
        handle,
        base,
        http: reqwest::Client::new(),
    }
}

/// The simulator with its demo app.
async fn spawn_demo() -> TestSim {
    spawn_with(SimConfig::default()).await
}

/// Two bound apps and one unbound.
async fn spawn_three_apps() -> TestSim {
    let apps = [
        format!("{APP_A}:{SECRET_A}"),
        format!("{APP_B}:{SECRET_B}"),
        format!("{APP_U}:{SECRET_U}:unbound"),
    ];
    spawn_with(SimConfig {
        apps: apps.iter().map(|s| SimApp::parse(s).unwrap()).collect(),
        keep_session_key: false,
    })
    .await
}

impl TestSim {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self.get(path, query).await;
        assert_eq!(response.status(), StatusCode::OK);
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.post_raw(path, body.to_string()).await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// A control call that must succeed.
    async fn control(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.post(path, &body).await;
        assert_eq!(status, StatusCode::OK, "{path} answered {answer}");
        answer
    }

    async fn delete(&self, path: &str) -> Value {
        let response = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn login(&self, appid: &str, user: &str) -> String {
        let answer = self
            .control("/sim/login", json!({"appid": appid, "user": user}))
            .await;
        answer["code"].as_str().unwrap().to_owned()
    }

    async fn person(&self, appid: &str, user: &str) -> Value {
        self.control("/sim/users", json!({"appid": appid, "user": user}))
            .await
    }

    async fn session_key(&self, appid: &str, user: &str) -> SessionKey {
        let person = self.person(appid, user).await;
        SessionKey::parse(person["session_key"].as_str().unwrap()).unwrap()
    }

    async fn code2session(&self, appid: &str, secret: &str, code: &str) -> Value {
        self.get_json(
            "/sns/jscode2session",
            &[
                ("appid", appid),
                ("secret", secret),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ],
        )
        .await
    }

    async fn demo_code2session(&self, code: &str) -> Value {
        self.code2session(DEMO_APP_ID, DEMO_APP_SECRET, code).await
    }

    async fn stable_token(&self, appid: &str, secret: &str, force_refresh: bool) -> Value {
        let body = json!({
            "grant_type": "client_credential",
            "appid": appid,
            "secret": secret,
            "force_refresh": force_refresh,
        });
        let (status, answer) = self.post("/cgi-bin/stable_token", &body).await;
        assert_eq!(status, StatusCode::OK);
        answer
    }

    async fn demo_stable_token(&self) -> String {
        let answer = self.stable_token(DEMO_APP_ID, DEMO_APP_SECRET, false).await;
        answer["access_token"].as_str().unwrap().to_owned()
    }

    async fn classic_token(&self, appid: &str, secret: &str) -> Value {
        self.get_json(
            "/cgi-bin/token",
            &[
                ("grant_type", "client_credential"),
                ("appid", appid),
                ("secret", secret),
            ],
        )
        .await
    }

    async fn check_session(&self, token: &str, openid: &str, signature: &str) -> Value {
        self.get_json(
            "/wxa/checksession",
            &[
                ("access_token", token),
                ("openid", openid),
                ("signature", signature),
                ("sig_method", "hmac_sha256"),
            ],
        )
        .await
    }

    /// The errcode checksession gives for `token`, with a correct signature for a demo user.
    async fn token_errcode(&self, token: &str) -> i64 {
        let person = self.person(DEMO_APP_ID, "token-prober").await;
        let key = SessionKey::parse(person["session_key"].as_str().unwrap()).unwrap();
        let signature = crypto::session_key_signature(&key, b"");
        let answer = self
            .check_session(token, person["openid"].as_str().unwrap(), &signature)
            .await;
        answer["errcode"].as_i64().unwrap()
    }

    async fn phone_number(&self, token: &str, code: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/wxa/business/getuserphonenumber", self.base))
            .query(&[("access_token", token)])
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn advance(&self, secs: u64) -> i64 {
        let answer = self
            .control("/sim/time", json!({ "advance_secs": secs }))
            .await;
        answer["now"].as_i64().unwrap()
    }

    async fn fault(&self, spec: Value) {
        assert_eq!(self.control("/sim/faults", spec).await, json!({"ok": true}));
    }

    async fn stats(&self) -> Value {
        self.get_json("/sim/stats", &[]).await
    }
}

/// Asserts WeChat's error shape: exactly errcode and errmsg, the errmsg ending in a rid.
#[track_caller]
fn assert_wechat_error(answer: &Value, errcode: i64, errmsg: &str) {
    assert_eq!(answer["errcode"], errcode, "answer: {answer}");
    let object = answer.as_object().unwrap();
    assert_eq!(object.len(), 2, "answer: {answer}");
    let message = answer["errmsg"].as_str().unwrap();
    let rid = message
        .strip_prefix(errmsg)
        .and_then(|rest| rest.strip_prefix(" rid: "))
        .unwrap_or_else(|| panic!("errmsg {message:?} is not {errmsg:?} + rid"));
    let parts: Vec<&str> = rid.split('-').collect();
    assert_eq!(parts.len(), 3, "rid {rid}");
    assert!(
        parts
            .iter()
            .all(|p| p.len() == 8 && p.bytes().all(|b| b.is_ascii_hexdigit())),
        "rid {rid}"
    );
}

#[track_caller]
fn assert_control_error(status: StatusCode, answer: &Value, expected: StatusCode, needle: &str) {
    assert_eq!(status, expected, "answer: {answer}");
    let object = answer.as_object().unwrap();
    assert_eq!(object.len(), 1, "answer: {answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

// ----- configuration and lifecycle -----

#[test]
fn app_specs_parse_bound_and_unbound_apps() {
    let bound = SimApp::parse("wx4f4bc4dec97d474b:somesecret").unwrap();
    assert_eq!(bound.appid, "wx4f4bc4dec97d474b");
    assert_eq!(bound.secret, "somesecret");
    assert!(bound.bound);
    let unbound = SimApp::parse("wx4f4bc4dec97d474b:somesecret:unbound").unwrap();
    assert!(!unbound.bound);
    let demo = SimApp::demo();
    assert_eq!(
        (demo.appid.as_str(), demo.secret.as_str(), demo.bound),
        (DEMO_APP_ID, DEMO_APP_SECRET, true)
    );
}

#[test]
fn bad_app_specs_are_refused_without_echoing_the_secret() {
    for spec in [
        "wxonly",
        "wxapp:",
        "wxapp:topsecret:maybe",
        "wxapp:topsecret:unbound:extra",
        "wx app:topsecret",
        ":topsecret",
    ] {
        let error = SimApp::parse(spec).unwrap_err();
        assert!(!error.contains("topsecret"), "{spec}: {error}");
    }
    let app = SimApp::parse("wxapp:topsecret").unwrap();
    assert!(!format!("{app:?}").contains("topsecret"));
}

#[test]
fn the_cli_arguments_take_repeated_apps_and_the_keep_flag() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: wechat_sim::Args,
    }
    let cli = Cli::parse_from([
        "wechat-sim",
        "--app",
        "wxaaaaaaaaaaaaaaaa:a",
        "--app",
        "wxbbbbbbbbbbbbbbbb:b:unbound",
        "--keep-session-key",
    ]);
    assert_eq!(cli.args.listen, "127.0.0.1:8081");
    let config = SimConfig::from_args(&cli.args).unwrap();
    assert_eq!(config.apps.len(), 2);
    assert!(!config.apps[1].bound);
    assert!(config.keep_session_key);
    let defaults = Cli::parse_from(["wechat-sim"]);
    assert!(
        SimConfig::from_args(&defaults.args)
            .unwrap()
            .apps
            .is_empty()
    );
}

#[tokio::test]
async fn an_appid_configured_twice_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        apps: vec![
            SimApp::parse("wxaaaaaaaaaaaaaaaa:one").unwrap(),
            SimApp::parse("wxaaaaaaaaaaaaaaaa:two").unwrap(),
        ],
        keep_session_key: false,
    };
    let error = wechat_sim::spawn(config, listener).await.err().unwrap();
    assert!(error.to_string().contains("configured twice"));
}

#[tokio::test]
async fn the_base_url_dials_loopback_when_listening_on_all_interfaces() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let handle = wechat_sim::spawn(SimConfig::default(), listener)
        .await
        .unwrap();
    let port = handle.addr().port();
    assert_eq!(handle.base_url(), format!("http://127.0.0.1:{port}"));
    let answer: Value = reqwest::get(format!("{}/sim/stats", handle.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["total"], 0);
    handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = spawn_demo().await;
    let base = sim.base.clone();
    sim.handle.shutdown().await;
    let result = reqwest::Client::new()
        .get(format!("{base}/sim/stats"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(result.is_err());
}

// ----- code2Session -----

#[tokio::test]
async fn a_login_code_exchanges_for_the_openid_session_key_and_unionid() {
    let sim = spawn_demo().await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    assert_eq!(code.len(), 32);
    let response = sim
        .get(
            "/sns/jscode2session",
            &[
                ("appid", DEMO_APP_ID),
                ("secret", DEMO_APP_SECRET),
                ("js_code", &code),
                ("grant_type", "authorization_code"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // WeChat labels this JSON as plain text; clients must cope.
    assert_eq!(response.headers()["content-type"], "text/plain");
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let person = sim.person(DEMO_APP_ID, "alice").await;
    assert_eq!(
        answer,
        json!({
            "session_key": person["session_key"],
            "openid": wechat_sim::people::derive_openid(DEMO_APP_ID, "alice"),
            "unionid": person["unionid"],
        })
    );
    assert!(answer.get("errcode").is_none());
    assert_eq!(answer["openid"].as_str().unwrap().len(), 28);
}

#[tokio::test]
async fn a_wrong_or_missing_appid_is_40013() {
    let sim = spawn_demo().await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    let answer = sim
        .code2session("wx0000000000000000", DEMO_APP_SECRET, &code)
        .await;
    assert_wechat_error(&answer, 40013, "invalid appid");
    let answer = sim
        .get_json(
            "/sns/jscode2session",
            &[("secret", DEMO_APP_SECRET), ("js_code", &code)],
        )
        .await;
    assert_wechat_error(&answer, 40013, "invalid appid");
}

#[tokio::test]
async fn a_wrong_or_missing_secret_is_40125() {
    let sim = spawn_demo().await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    let answer = sim.code2session(DEMO_APP_ID, "wrong", &code).await;
    assert_wechat_error(&answer, 40125, "invalid appsecret");
    let answer = sim
        .get_json(
            "/sns/jscode2session",
            &[("appid", DEMO_APP_ID), ("js_code", &code)],
        )
        .await;
    assert_wechat_error(&answer, 40125, "invalid appsecret");
    // Refused calls do not use the code up.
    assert!(sim.demo_code2session(&code).await.get("openid").is_some());
}

#[tokio::test]
async fn a_missing_or_empty_code_is_41008() {
    let sim = spawn_demo().await;
    let answer = sim
        .get_json(
            "/sns/jscode2session",
            &[("appid", DEMO_APP_ID), ("secret", DEMO_APP_SECRET)],
        )
        .await;
    assert_wechat_error(&answer, 41008, "missing code");
    let answer = sim.demo_code2session("").await;
    assert_wechat_error(&answer, 41008, "missing code");
}

#[tokio::test]
async fn an_unknown_code_is_40029() {
    let sim = spawn_demo().await;
    let answer = sim
        .demo_code2session("0000000000000000000000000000000")
        .await;
    assert_wechat_error(&answer, 40029, "invalid code");
}

#[tokio::test]
async fn errcodes_are_checked_appid_then_secret_then_code() {
    let sim = spawn_demo().await;
    let answer = sim.code2session("wxnope", "wrong", "").await;
    assert_eq!(answer["errcode"], 40013);
    let answer = sim.code2session(DEMO_APP_ID, "wrong", "").await;
    assert_eq!(answer["errcode"], 40125);
    let answer = sim.code2session(DEMO_APP_ID, DEMO_APP_SECRET, "").await;
    assert_eq!(answer["errcode"], 41008);
}

#[tokio::test]
async fn a_wrong_grant_type_is_40002() {
    let sim = spawn_demo().await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    let answer = sim
        .get_json(
            "/sns/jscode2session",
            &[
                ("appid", DEMO_APP_ID),
                ("secret", DEMO_APP_SECRET),
                ("js_code", &code),
                ("grant_type", "client_credential"),
            ],
        )
        .await;
    assert_wechat_error(&answer, 40002, "invalid grant_type");
}

#[tokio::test]
async fn a_code_expires_after_five_minutes_of_sim_time() {
    let sim = spawn_demo().await;
    let fresh = sim.login(DEMO_APP_ID, "alice").await;
    let stale = sim.login(DEMO_APP_ID, "bob").await;
    sim.advance(240).await;
    assert!(sim.demo_code2session(&fresh).await.get("openid").is_some());
    sim.advance(61).await;
    assert_wechat_error(&sim.demo_code2session(&stale).await, 40029, "invalid code");
}

#[tokio::test]
async fn a_code_can_be_used_only_once() {
    let sim = spawn_demo().await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    assert!(sim.demo_code2session(&code).await.get("openid").is_some());
    assert_wechat_error(&sim.demo_code2session(&code).await, 40163, "code been used");
    // Once expired, a used code is simply invalid.
    sim.advance(301).await;
    assert_wechat_error(&sim.demo_code2session(&code).await, 40029, "invalid code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_exchanged_concurrently_succeeds_exactly_once() {
    let sim = spawn_demo().await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    let url = format!("{}/sns/jscode2session", sim.base);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let request = sim.http.get(&url).query(&[
                ("appid", DEMO_APP_ID),
                ("secret", DEMO_APP_SECRET),
                ("js_code", code.as_str()),
            ]);
            tokio::spawn(async move {
                let body = request.send().await.unwrap().bytes().await.unwrap();
                serde_json::from_slice::<Value>(&body).unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    let successes = answers.iter().filter(|a| a.get("openid").is_some()).count();
    let reused = answers.iter().filter(|a| a["errcode"] == 40163).count();
    assert_eq!((successes, reused), (1, 15));
}

#[tokio::test]
async fn a_code_from_another_app_is_40029() {
    let sim = spawn_three_apps().await;
    let code = sim.login(APP_A, "alice").await;
    let answer = sim.code2session(APP_B, SECRET_B, &code).await;
    assert_wechat_error(&answer, 40029, "invalid code");
    assert!(
        sim.code2session(APP_A, SECRET_A, &code)
            .await
            .get("openid")
            .is_some()
    );
}

#[tokio::test]
async fn the_101st_exchange_for_one_user_within_a_minute_is_45011() {
    let sim = spawn_demo().await;
    for _ in 0..100 {
        let code = sim.login(DEMO_APP_ID, "busy").await;
        let answer = sim.demo_code2session(&code).await;
        assert!(answer.get("openid").is_some(), "{answer}");
    }
    let code = sim.login(DEMO_APP_ID, "busy").await;
    assert_wechat_error(
        &sim.demo_code2session(&code).await,
        45011,
        "api minute-quota reach limit  mustslower  retry next minute",
    );
    // Another person is not limited.
    let other = sim.login(DEMO_APP_ID, "calm").await;
    assert!(sim.demo_code2session(&other).await.get("openid").is_some());
    // The refused call did not use the code; a minute later it works.
    sim.advance(60).await;
    assert!(sim.demo_code2session(&code).await.get("openid").is_some());
}

// ----- people -----

#[tokio::test]
async fn an_unbound_app_never_reveals_a_unionid() {
    let sim = spawn_three_apps().await;
    let code = sim.login(APP_U, "alice").await;
    let answer = sim.code2session(APP_U, SECRET_U, &code).await;
    assert!(answer.get("openid").is_some());
    assert!(answer.get("unionid").is_none(), "{answer}");
    let person = sim.person(APP_U, "alice").await;
    assert_eq!(person["unionid"], Value::Null);
    let data = sim
        .control("/sim/userinfo", json!({"appid": APP_U, "user": "alice"}))
        .await;
    let key = sim.session_key(APP_U, "alice").await;
    let app = AppId::parse(APP_U).unwrap();
    let info = crypto::decrypt_user_info(
        &key,
        data["encryptedData"].as_str().unwrap(),
        data["iv"].as_str().unwrap(),
        &WatermarkCheck::new(&app),
    )
    .unwrap();
    assert_eq!(info.union_id, None);
    assert_eq!(info.open_id.as_deref(), answer["openid"].as_str());
}

#[tokio::test]
async fn one_person_has_one_unionid_and_a_different_openid_in_each_bound_app() {
    let sim = spawn_three_apps().await;
    let code_a = sim.login(APP_A, "alice").await;
    let code_b = sim.login(APP_B, "alice").await;
    let in_a = sim.code2session(APP_A, SECRET_A, &code_a).await;
    let in_b = sim.code2session(APP_B, SECRET_B, &code_b).await;
    assert_eq!(in_a["unionid"], in_b["unionid"]);
    assert!(in_a["unionid"].as_str().unwrap().starts_with('o'));
    assert_ne!(in_a["openid"], in_b["openid"]);
    let bob = sim.login(APP_A, "bob").await;
    let bob = sim.code2session(APP_A, SECRET_A, &bob).await;
    assert_ne!(bob["unionid"], in_a["unionid"]);
    assert_ne!(bob["openid"], in_a["openid"]);
}

#[tokio::test]
async fn openids_and_unionids_are_the_same_after_a_restart() {
    let first = spawn_demo().await.person(DEMO_APP_ID, "alice").await;
    let second = spawn_demo().await.person(DEMO_APP_ID, "alice").await;
    assert_eq!(first["openid"], second["openid"]);
    assert_eq!(first["unionid"], second["unionid"]);
    assert_eq!(first["phone"], second["phone"]);
    assert_ne!(first["session_key"], second["session_key"]);
}

#[tokio::test]
async fn a_new_person_has_the_anonymous_profile_and_a_chinese_mobile() {
    let sim = spawn_demo().await;
    let person = sim.person(DEMO_APP_ID, "alice").await;
    assert_eq!(person["appid"], DEMO_APP_ID);
    assert_eq!(person["user"], "alice");
    assert_eq!(
        person["profile"],
        json!({
            "nickName": "微信用户",
            "gender": 0,
            "language": "zh_CN",
            "city": "",
            "province": "",
            "country": "",
            "avatarUrl": wechat_sim::people::DEFAULT_AVATAR_URL,
        })
    );
    let phone = &person["phone"];
    let number = phone["purePhoneNumber"].as_str().unwrap();
    assert!(number.starts_with("138") && number.len() == 11);
    assert_eq!(phone["phoneNumber"], number);
    assert_eq!(phone["countryCode"], "86");
    assert!(SessionKey::parse(person["session_key"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn each_login_rotates_the_session_key() {
    let sim = spawn_demo().await;
    let first = sim.login(DEMO_APP_ID, "alice").await;
    let first = sim.demo_code2session(&first).await;
    let second = sim.login(DEMO_APP_ID, "alice").await;
    let second = sim.demo_code2session(&second).await;
    assert_ne!(first["session_key"], second["session_key"]);
    assert_eq!(first["openid"], second["openid"]);
}

#[tokio::test]
async fn keep_session_key_keeps_the_key_across_logins() {
    let sim = spawn_with(SimConfig {
        apps: vec![],
        keep_session_key: true,
    })
    .await;
    let first = sim.login(DEMO_APP_ID, "alice").await;
    let first = sim.demo_code2session(&first).await;
    let second = sim.login(DEMO_APP_ID, "alice").await;
    let second = sim.demo_code2session(&second).await;
    assert_eq!(first["session_key"], second["session_key"]);
}

#[tokio::test]
async fn a_pinned_session_key_survives_logins_until_changed() {
    let sim = spawn_demo().await;
    let pinned = "HyVFkGl5F5OQWJZZaNzBBg==";
    sim.control(
        "/sim/users",
        json!({"appid": DEMO_APP_ID, "user": "alice", "session_key": pinned}),
    )
    .await;
    for _ in 0..2 {
        let code = sim.login(DEMO_APP_ID, "alice").await;
        assert_eq!(sim.demo_code2session(&code).await["session_key"], pinned);
    }
    sim.control(
        "/sim/users",
        json!({"appid": DEMO_APP_ID, "user": "alice", "session_key": SAMPLE_SESSION_KEY}),
    )
    .await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    assert_eq!(
        sim.demo_code2session(&code).await["session_key"],
        SAMPLE_SESSION_KEY
    );
}

async fn spawn_sample_app() -> TestSim {
    spawn_with(SimConfig {
        apps: vec![SimApp::parse(&format!("{SAMPLE_APPID}:somesecret")).unwrap()],
        keep_session_key: false,
    })
    .await
}

fn band_profile() -> Value {
    json!({
        "nickName": "Band",
        "gender": 1,
        "language": "zh_CN",
        "city": "Guangzhou",
        "province": "Guangdong",
        "country": "CN",
        "avatarUrl": "http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0",
    })
}

#[tokio::test]
async fn wechats_published_sample_person_can_be_set_up_exactly() {
    let sim = spawn_sample_app().await;
    let person = sim
        .control(
            "/sim/users",
            json!({
                "appid": SAMPLE_APPID,
                "user": "band",
                "openid": SAMPLE_OPENID,
                "session_key": SAMPLE_SESSION_KEY,
                "unionid": SAMPLE_UNIONID,
                "profile": band_profile(),
                "phone": "13580006666",
            }),
        )
        .await;
    assert_eq!(
        person,
        json!({
            "appid": SAMPLE_APPID,
            "user": "band",
            "openid": SAMPLE_OPENID,
            "unionid": SAMPLE_UNIONID,
            "session_key": SAMPLE_SESSION_KEY,
            "profile": band_profile(),
            "phone": {"phoneNumber": "13580006666", "purePhoneNumber": "13580006666", "countryCode": "86"},
        })
    );
    let code = sim.login(SAMPLE_APPID, "band").await;
    let answer = sim.code2session(SAMPLE_APPID, "somesecret", &code).await;
    assert_eq!(
        answer,
        json!({"session_key": SAMPLE_SESSION_KEY, "openid": SAMPLE_OPENID, "unionid": SAMPLE_UNIONID})
    );
    let data = sim
        .control(
            "/sim/userinfo",
            json!({"appid": SAMPLE_APPID, "user": "band"}),
        )
        .await;
    let key = SessionKey::parse(SAMPLE_SESSION_KEY).unwrap();
    let app = AppId::parse(SAMPLE_APPID).unwrap();
    let info = crypto::decrypt_user_info(
        &key,
        data["encryptedData"].as_str().unwrap(),
        data["iv"].as_str().unwrap(),
        &WatermarkCheck::new(&app),
    )
    .unwrap();
    assert_eq!(info.nick_name.as_deref(), Some("Band"));
    assert_eq!(info.city.as_deref(), Some("Guangzhou"));
    assert_eq!(info.open_id.as_deref(), Some(SAMPLE_OPENID));
    assert_eq!(info.union_id.as_deref(), Some(SAMPLE_UNIONID));
}

#[tokio::test]
async fn sim_users_refuses_a_session_key_that_is_not_sixteen_bytes_of_base64() {
    let sim = spawn_demo().await;
    for bad in ["c2hvcnQ=", "not base64!", ""] {
        let (status, answer) = sim
            .post(
                "/sim/users",
                &json!({"appid": DEMO_APP_ID, "user": "alice", "session_key": bad}),
            )
            .await;
        assert_control_error(status, &answer, StatusCode::BAD_REQUEST, "session_key");
    }
}

#[tokio::test]
async fn control_calls_for_an_unknown_app_are_404() {
    let sim = spawn_demo().await;
    for path in ["/sim/users", "/sim/login", "/sim/userinfo", "/sim/phone"] {
        let (status, answer) = sim
            .post(
                path,
                &json!({"appid": "wx0000000000000000", "user": "alice"}),
            )
            .await;
        assert_control_error(status, &answer, StatusCode::NOT_FOUND, "wx0000000000000000");
    }
}

#[tokio::test]
async fn an_openid_or_unionid_of_another_person_is_refused_and_nothing_changes() {
    let sim = spawn_demo().await;
    let alice = sim.person(DEMO_APP_ID, "alice").await;
    let bob = sim.person(DEMO_APP_ID, "bob").await;
    let (status, answer) = sim
        .post(
            "/sim/users",
            &json!({"appid": DEMO_APP_ID, "user": "bob", "openid": alice["openid"], "profile": {"nickName": "Bobby"}}),
        )
        .await;
    assert_control_error(status, &answer, StatusCode::BAD_REQUEST, "openid");
    let (status, answer) = sim
        .post(
            "/sim/users",
            &json!({"appid": DEMO_APP_ID, "user": "bob", "unionid": alice["unionid"]}),
        )
        .await;
    assert_control_error(status, &answer, StatusCode::BAD_REQUEST, "unionid");
    assert_eq!(sim.person(DEMO_APP_ID, "bob").await, bob);
}

#[tokio::test]
async fn a_changed_openid_is_what_wechat_answers_from_then_on() {
    let sim = spawn_demo().await;
    sim.control(
        "/sim/users",
        json!({"appid": DEMO_APP_ID, "user": "alice", "openid": "oCustomOpenid0000000000000000"}),
    )
    .await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    assert_eq!(
        sim.demo_code2session(&code).await["openid"],
        "oCustomOpenid0000000000000000"
    );
    // The old openid is free again and checksession knows only the new one.
    let token = sim.demo_stable_token().await;
    let key = sim.session_key(DEMO_APP_ID, "alice").await;
    let signature = crypto::session_key_signature(&key, b"");
    let old = wechat_sim::people::derive_openid(DEMO_APP_ID, "alice");
    assert_eq!(
        sim.check_session(&token, &old, &signature).await["errcode"],
        40003
    );
    assert_eq!(
        sim.check_session(&token, "oCustomOpenid0000000000000000", &signature)
            .await["errcode"],
        0
    );
}

#[tokio::test]
async fn malformed_control_bodies_are_400_with_a_plain_message() {
    let sim = spawn_demo().await;
    let cases: [(&str, &str, &str); 9] = [
        ("/sim/login", "{not json", "invalid JSON"),
        ("/sim/login", "", "invalid JSON"),
        ("/sim/login", "[1,2]", "invalid JSON"),
        ("/sim/login", r#"{"appid":"wx1234567890abcdef"}"#, "user"),
        (
            "/sim/login",
            r#"{"appid":"wx1234567890abcdef","user":""}"#,
            "user",
        ),
        (
            "/sim/login",
            r#"{"appid":"wx1234567890abcdef","user":"a","usr":"b"}"#,
            "usr",
        ),
        (
            "/sim/users",
            r#"{"appid":"wx1234567890abcdef","user":"a","profile":{"gender":7}}"#,
            "gender",
        ),
        (
            "/sim/users",
            r#"{"appid":"wx1234567890abcdef","user":"a","phone":"12ab"}"#,
            "digits",
        ),
        ("/sim/time", r#"{"advance_secs":-5}"#, "invalid JSON"),
    ];
    for (path, body, needle) in cases {
        let response = sim.post_raw(path, body).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_control_error(status, &answer, StatusCode::BAD_REQUEST, needle);
    }
}

// ----- userinfo -----

#[tokio::test]
async fn userinfo_decrypts_with_the_current_session_key_and_its_signature_verifies() {
    let sim = spawn_demo().await;
    let now = sim.get_json("/sim/time", &[]).await["now"]
        .as_i64()
        .unwrap();
    let data = sim
        .control(
            "/sim/userinfo",
            json!({"appid": DEMO_APP_ID, "user": "alice"}),
        )
        .await;
    let mut fields: Vec<&String> = data.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["encryptedData", "iv", "rawData", "signature"]);
    let person = sim.person(DEMO_APP_ID, "alice").await;
    let key = SessionKey::parse(person["session_key"].as_str().unwrap()).unwrap();
    let raw_data = data["rawData"].as_str().unwrap();
    assert!(crypto::verify_raw_data_signature(
        raw_data,
        data["signature"].as_str().unwrap(),
        &key
    ));
    let raw: Value = serde_json::from_str(raw_data).unwrap();
    assert_eq!(raw, person["profile"]);
    assert!(raw_data.starts_with(r#"{"nickName":"微信用户","gender":0,"language":"zh_CN""#));
    let app = AppId::parse(DEMO_APP_ID).unwrap();
    let check = WatermarkCheck::new(&app).max_age(now, Duration::from_secs(60));
    let info = crypto::decrypt_user_info(
        &key,
        data["encryptedData"].as_str().unwrap(),
        data["iv"].as_str().unwrap(),
        &check,
    )
    .unwrap();
    assert_eq!(info.open_id.as_deref(), person["openid"].as_str());
    assert_eq!(info.union_id.as_deref(), person["unionid"].as_str());
    assert_eq!(info.nick_name.as_deref(), Some("微信用户"));
    assert_eq!(info.gender, Some(0));
    assert_eq!(info.watermark.appid, DEMO_APP_ID);
    assert!((info.watermark.timestamp - now).abs() <= 2);
}

#[tokio::test]
async fn userinfo_profile_overrides_are_stored_and_emoji_survive() {
    let sim = spawn_demo().await;
    let data = sim
        .control(
            "/sim/userinfo",
            json!({"appid": DEMO_APP_ID, "user": "alice", "profile": {"nickName": "小明😀", "gender": 2, "city": "Shenzhen"}}),
        )
        .await;
    let key = sim.session_key(DEMO_APP_ID, "alice").await;
    let app = AppId::parse(DEMO_APP_ID).unwrap();
    let info = crypto::decrypt_user_info(
        &key,
        data["encryptedData"].as_str().unwrap(),
        data["iv"].as_str().unwrap(),
        &WatermarkCheck::new(&app),
    )
    .unwrap();
    assert_eq!(info.nick_name.as_deref(), Some("小明😀"));
    assert_eq!(info.gender, Some(2));
    assert_eq!(info.city.as_deref(), Some("Shenzhen"));
    assert!(data["rawData"].as_str().unwrap().contains("小明😀"));
    let person = sim.person(DEMO_APP_ID, "alice").await;
    assert_eq!(person["profile"]["nickName"], "小明😀");
    assert_eq!(person["profile"]["language"], "zh_CN");
}

#[tokio::test]
async fn userinfo_made_before_a_new_login_no_longer_decrypts() {
    let sim = spawn_demo().await;
    let data = sim
        .control(
            "/sim/userinfo",
            json!({"appid": DEMO_APP_ID, "user": "alice"}),
        )
        .await;
    let old_key = sim.session_key(DEMO_APP_ID, "alice").await;
    sim.login(DEMO_APP_ID, "alice").await;
    let new_key = sim.session_key(DEMO_APP_ID, "alice").await;
    assert_ne!(old_key, new_key);
    let app = AppId::parse(DEMO_APP_ID).unwrap();
    let (encrypted, iv) = (
        data["encryptedData"].as_str().unwrap(),
        data["iv"].as_str().unwrap(),
    );
    assert_eq!(
        crypto::decrypt_user_info(&new_key, encrypted, iv, &WatermarkCheck::new(&app)).unwrap_err(),
        DecryptError::Decrypt
    );
    assert!(crypto::decrypt_user_info(&old_key, encrypted, iv, &WatermarkCheck::new(&app)).is_ok());
}

// ----- phone -----

#[tokio::test]
async fn a_phone_code_gives_the_phone_number_once() {
    let sim = spawn_demo().await;
    let pressed = sim
        .control(
            "/sim/phone",
            json!({"appid": DEMO_APP_ID, "user": "alice", "phone": "13912345678"}),
        )
        .await;
    let code = pressed["code"].as_str().unwrap();
    assert_eq!(code.len(), 64);
    let token = sim.demo_stable_token().await;
    let now = sim.get_json("/sim/time", &[]).await["now"]
        .as_i64()
        .unwrap();
    let mut answer = sim.phone_number(&token, code).await;
    let timestamp = answer["phone_info"]["watermark"]["timestamp"]
        .as_i64()
        .unwrap();
    assert!((timestamp - now).abs() <= 2);
    answer["phone_info"]["watermark"]["timestamp"] = json!(0);
    assert_eq!(
        answer,
        json!({
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": "13912345678",
                "purePhoneNumber": "13912345678",
                "countryCode": "86",
                "watermark": {"timestamp": 0, "appid": DEMO_APP_ID},
            },
        })
    );
    assert_wechat_error(
        &sim.phone_number(&token, code).await,
        40163,
        "code been used",
    );
    assert_wechat_error(
        &sim.phone_number(&token, "feedface").await,
        40029,
        "invalid code",
    );
}

#[tokio::test]
async fn the_legacy_phone_form_decrypts_to_the_same_number() {
    let sim = spawn_demo().await;
    let pressed = sim
        .control("/sim/phone", json!({"appid": DEMO_APP_ID, "user": "alice"}))
        .await;
    let key = sim.session_key(DEMO_APP_ID, "alice").await;
    let app = AppId::parse(DEMO_APP_ID).unwrap();
    let phone = crypto::decrypt_phone_info(
        &key,
        pressed["encryptedData"].as_str().unwrap(),
        pressed["iv"].as_str().unwrap(),
        &WatermarkCheck::new(&app),
    )
    .unwrap();
    let person = sim.person(DEMO_APP_ID, "alice").await;
    assert_eq!(phone.pure_phone_number, person["phone"]["purePhoneNumber"]);
    assert_eq!(phone.phone_number, phone.pure_phone_number);
    assert_eq!(phone.country_code, "86");
    assert_eq!(phone.watermark.appid, DEMO_APP_ID);
    let token = sim.demo_stable_token().await;
    let answer = sim
        .phone_number(&token, pressed["code"].as_str().unwrap())
        .await;
    assert_eq!(
        answer["phone_info"]["purePhoneNumber"],
        phone.pure_phone_number
    );
}

#[tokio::test]
async fn a_foreign_phone_number_carries_its_country_code() {
    let sim = spawn_demo().await;
    let pressed = sim
        .control(
            "/sim/phone",
            json!({"appid": DEMO_APP_ID, "user": "alice", "phone": {"countryCode": "1", "purePhoneNumber": "2025550100"}}),
        )
        .await;
    let token = sim.demo_stable_token().await;
    let answer = sim
        .phone_number(&token, pressed["code"].as_str().unwrap())
        .await;
    assert_eq!(answer["phone_info"]["phoneNumber"], "+1 2025550100");
    assert_eq!(answer["phone_info"]["purePhoneNumber"], "2025550100");
    assert_eq!(answer["phone_info"]["countryCode"], "1");
    // The override is stored.
    let person = sim.person(DEMO_APP_ID, "alice").await;
    assert_eq!(person["phone"]["phoneNumber"], "+1 2025550100");
}

#[tokio::test]
async fn a_phone_code_expires_after_five_minutes_and_only_works_for_its_app() {
    let sim = spawn_three_apps().await;
    let code_a = sim
        .control("/sim/phone", json!({"appid": APP_A, "user": "alice"}))
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_b = sim.stable_token(APP_B, SECRET_B, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_wechat_error(
        &sim.phone_number(&token_b, &code_a).await,
        40029,
        "invalid code",
    );
    sim.advance(301).await;
    let token_a = sim.stable_token(APP_A, SECRET_A, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_wechat_error(
        &sim.phone_number(&token_a, &code_a).await,
        40029,
        "invalid code",
    );
}

#[tokio::test]
async fn getuserphonenumber_checks_the_token_then_the_body() {
    let sim = spawn_demo().await;
    let response = sim
        .post_raw("/wxa/business/getuserphonenumber", r#"{"code":"x"}"#)
        .await;
    let answer: Value = response.json().await.unwrap();
    assert_wechat_error(&answer, 41001, "access_token missing");
    assert_wechat_error(
        &sim.phone_number("86_nope", "x").await,
        40001,
        "invalid credential, access_token is invalid or not latest",
    );
    let token = sim.demo_stable_token().await;
    for body in ["{oops", "{}", r#"{"code":""}"#, "[]"] {
        let response = sim
            .http
            .post(format!("{}/wxa/business/getuserphonenumber", sim.base))
            .query(&[("access_token", token.as_str())])
            .body(body)
            .send()
            .await
            .unwrap();
        let answer: Value = response.json().await.unwrap();
        assert_wechat_error(&answer, 47001, "data format error");
    }
}

// ----- access tokens -----

#[tokio::test]
async fn the_stable_token_stays_the_same_until_its_last_five_minutes() {
    let sim = spawn_demo().await;
    let first = sim.stable_token(DEMO_APP_ID, DEMO_APP_SECRET, false).await;
    assert_eq!(first["expires_in"], 7200);
    assert_eq!(first.as_object().unwrap().len(), 2);
    let token = first["access_token"].as_str().unwrap();
    assert!(token.len() >= 100);
    sim.advance(100).await;
    let again = sim.stable_token(DEMO_APP_ID, DEMO_APP_SECRET, false).await;
    assert_eq!(again["access_token"], token);
    let left = again["expires_in"].as_i64().unwrap();
    assert!((7095..=7100).contains(&left), "{left}");
    // Into its last five minutes: a new one, and the old one works until it expires.
    sim.advance(6801).await;
    let renewed = sim.stable_token(DEMO_APP_ID, DEMO_APP_SECRET, false).await;
    assert_ne!(renewed["access_token"], token);
    assert_eq!(renewed["expires_in"], 7200);
    assert_eq!(sim.token_errcode(token).await, 0);
    sim.advance(300).await;
    assert_eq!(sim.token_errcode(token).await, 42001);
    assert_eq!(
        sim.token_errcode(renewed["access_token"].as_str().unwrap())
            .await,
        0
    );
}

#[tokio::test]
async fn force_refresh_makes_a_new_stable_token_and_kills_the_old_one() {
    let sim = spawn_demo().await;
    let old = sim.demo_stable_token().await;
    let new = sim.stable_token(DEMO_APP_ID, DEMO_APP_SECRET, true).await;
    let new = new["access_token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(sim.token_errcode(&old).await, 40001);
    assert_eq!(sim.token_errcode(new).await, 0);
    assert_eq!(sim.demo_stable_token().await, new);
}

#[tokio::test]
async fn each_classic_token_leaves_the_previous_one_five_minutes() {
    let sim = spawn_demo().await;
    let first = sim.classic_token(DEMO_APP_ID, DEMO_APP_SECRET).await;
    assert_eq!(first["expires_in"], 7200);
    let first = first["access_token"].as_str().unwrap().to_owned();
    let second = sim.classic_token(DEMO_APP_ID, DEMO_APP_SECRET).await;
    let second = second["access_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(sim.token_errcode(&first).await, 0);
    sim.advance(301).await;
    assert_eq!(sim.token_errcode(&first).await, 40001);
    assert_eq!(sim.token_errcode(&second).await, 0);
    // Classic and stable tokens live apart.
    let stable = sim.demo_stable_token().await;
    sim.classic_token(DEMO_APP_ID, DEMO_APP_SECRET).await;
    sim.advance(301).await;
    assert_eq!(sim.token_errcode(&stable).await, 0);
}

#[tokio::test]
async fn a_token_expires_after_7200_seconds_with_42001() {
    let sim = spawn_demo().await;
    let stable = sim.demo_stable_token().await;
    let classic = sim.classic_token(DEMO_APP_ID, DEMO_APP_SECRET).await;
    let classic = classic["access_token"].as_str().unwrap();
    sim.advance(7190).await;
    assert_eq!(sim.token_errcode(&stable).await, 0);
    sim.advance(11).await;
    assert_eq!(sim.token_errcode(&stable).await, 42001);
    assert_eq!(sim.token_errcode(classic).await, 42001);
    let answer = sim.check_session(&stable, "o", "x").await;
    assert_wechat_error(&answer, 42001, "access_token expired");
}

#[tokio::test]
async fn token_endpoints_refuse_a_bad_grant_type_appid_or_secret() {
    let sim = spawn_demo().await;
    let stable = |grant: &str, appid: &str, secret: &str| json!({"grant_type": grant, "appid": appid, "secret": secret});
    let cases = [
        (
            stable("password", DEMO_APP_ID, DEMO_APP_SECRET),
            40002,
            "invalid grant_type",
        ),
        (
            stable("client_credential", "wx0000000000000000", DEMO_APP_SECRET),
            40013,
            "invalid appid",
        ),
        (
            stable("client_credential", DEMO_APP_ID, "nope"),
            40125,
            "invalid appsecret",
        ),
        (
            json!({"grant_type": "client_credential", "secret": DEMO_APP_SECRET}),
            40013,
            "invalid appid",
        ),
    ];
    for (body, errcode, errmsg) in cases {
        let (_, answer) = sim.post("/cgi-bin/stable_token", &body).await;
        assert_wechat_error(&answer, errcode, errmsg);
    }
    let answer = sim
        .classic_token("wx0000000000000000", DEMO_APP_SECRET)
        .await;
    assert_wechat_error(&answer, 40013, "invalid appid");
    let answer = sim.classic_token(DEMO_APP_ID, "nope").await;
    assert_wechat_error(&answer, 40125, "invalid appsecret");
    let answer = sim
        .get_json(
            "/cgi-bin/token",
            &[("appid", DEMO_APP_ID), ("secret", DEMO_APP_SECRET)],
        )
        .await;
    assert_wechat_error(&answer, 40002, "invalid grant_type");
}

#[tokio::test]
async fn a_stable_token_request_that_is_not_json_is_47001() {
    let sim = spawn_demo().await;
    for body in [
        "not json",
        "",
        "[]",
        r#"{"grant_type":"client_credential","appid":"wx1234567890abcdef","secret":"demo-secret-0123456789abcdef0123","force_refresh":"yes"}"#,
    ] {
        let response = sim.post_raw("/cgi-bin/stable_token", body).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_wechat_error(&response.json().await.unwrap(), 47001, "data format error");
    }
}

// ----- checksession and resetusersessionkey -----

#[tokio::test]
async fn checksession_accepts_the_current_key_and_rejects_a_stale_one() {
    let sim = spawn_demo().await;
    let token = sim.demo_stable_token().await;
    let person = sim.person(DEMO_APP_ID, "alice").await;
    let openid = person["openid"].as_str().unwrap();
    let key = SessionKey::parse(person["session_key"].as_str().unwrap()).unwrap();
    let signature = crypto::session_key_signature(&key, b"");
    assert_eq!(
        sim.check_session(&token, openid, &signature).await,
        json!({"errcode": 0, "errmsg": "ok"})
    );
    sim.login(DEMO_APP_ID, "alice").await;
    assert_wechat_error(
        &sim.check_session(&token, openid, &signature).await,
        87009,
        "invalid signature",
    );
    let answer = sim
        .get_json(
            "/wxa/checksession",
            &[
                ("access_token", token.as_str()),
                ("openid", openid),
                ("signature", &signature),
                ("sig_method", "md5"),
            ],
        )
        .await;
    assert_eq!(answer["errcode"], 87009);
}

#[tokio::test]
async fn checksession_refuses_an_unknown_openid_and_a_missing_token() {
    let sim = spawn_demo().await;
    let token = sim.demo_stable_token().await;
    assert_wechat_error(
        &sim.check_session(&token, "oUnknown", "00").await,
        40003,
        "invalid openid",
    );
    let answer = sim
        .get_json("/wxa/checksession", &[("openid", "oUnknown")])
        .await;
    assert_wechat_error(&answer, 41001, "access_token missing");
    assert_wechat_error(
        &sim.check_session("86_forged", "oUnknown", "00").await,
        40001,
        "invalid credential, access_token is invalid or not latest",
    );
}

#[tokio::test]
async fn resetusersessionkey_gives_a_new_key_that_checksession_then_accepts() {
    let sim = spawn_demo().await;
    let token = sim.demo_stable_token().await;
    let person = sim.person(DEMO_APP_ID, "alice").await;
    let openid = person["openid"].as_str().unwrap();
    let old = SessionKey::parse(person["session_key"].as_str().unwrap()).unwrap();
    let old_signature = crypto::session_key_signature(&old, b"");
    let query = |signature: &str| {
        vec![
            ("access_token".to_owned(), token.clone()),
            ("openid".to_owned(), openid.to_owned()),
            ("signature".to_owned(), signature.to_owned()),
            ("sig_method".to_owned(), "hmac_sha256".to_owned()),
        ]
    };
    let q = query(&old_signature);
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let answer = sim.get_json("/wxa/resetusersessionkey", &q).await;
    assert_eq!(answer["errcode"], 0);
    assert_eq!(answer["errmsg"], "ok");
    assert_eq!(answer["openid"], openid);
    let new = SessionKey::parse(answer["session_key"].as_str().unwrap()).unwrap();
    assert_ne!(new, old);
    assert_eq!(sim.session_key(DEMO_APP_ID, "alice").await, new);
    assert_eq!(
        sim.check_session(&token, openid, &old_signature).await["errcode"],
        87009
    );
    let new_signature = crypto::session_key_signature(&new, b"");
    assert_eq!(
        sim.check_session(&token, openid, &new_signature).await["errcode"],
        0
    );
    // The stale signature cannot reset the key again.
    let answer = sim.get_json("/wxa/resetusersessionkey", &q).await;
    assert_wechat_error(&answer, 87009, "invalid signature");
}

// ----- faults -----

#[tokio::test]
async fn an_errcode_fault_answers_without_using_the_code_up() {
    let sim = spawn_demo().await;
    sim.fault(json!({"path": "/sns/jscode2session", "errcode": -1, "times": 1}))
        .await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    let response = sim
        .get(
            "/sns/jscode2session",
            &[
                ("appid", DEMO_APP_ID),
                ("secret", DEMO_APP_SECRET),
                ("js_code", &code),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_wechat_error(&answer, -1, "system error");
    assert!(sim.demo_code2session(&code).await.get("openid").is_some());
}

#[tokio::test]
async fn an_http_status_fault_answers_that_status_with_a_short_text() {
    let sim = spawn_demo().await;
    sim.fault(json!({"path": "/cgi-bin/stable_token", "http_status": 503, "times": 1}))
        .await;
    let response = sim
        .post_raw(
            "/cgi-bin/stable_token",
            json!({"grant_type": "client_credential", "appid": DEMO_APP_ID, "secret": DEMO_APP_SECRET}).to_string(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.text().await.unwrap(), "Service Unavailable");
    assert!(sim.demo_stable_token().await.len() > 10);
}

#[tokio::test]
async fn a_body_fault_answers_that_raw_body() {
    let sim = spawn_demo().await;
    sim.fault(json!({"path": "/sns/jscode2session", "body": "<html>gateway</html>", "times": 1}))
        .await;
    sim.fault(
        json!({"path": "/sns/jscode2session", "body": "oops", "http_status": 502, "times": 1}),
    )
    .await;
    sim.fault(json!({"path": "/sns/jscode2session", "body": {"errcode": 40226, "errmsg": "blocked"}, "times": 1}))
        .await;
    let call = || sim.get("/sns/jscode2session", &[("appid", DEMO_APP_ID)]);
    let first = call().await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.text().await.unwrap(), "<html>gateway</html>");
    let second = call().await;
    assert_eq!(second.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(second.text().await.unwrap(), "oops");
    let third: Value = call().await.json().await.unwrap();
    assert_eq!(third, json!({"errcode": 40226, "errmsg": "blocked"}));
}

#[tokio::test]
async fn a_delay_fault_waits_then_proceeds_normally() {
    let sim = spawn_demo().await;
    sim.fault(json!({"path": "/sns/jscode2session", "delay_ms": 300, "times": 1}))
        .await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    let started = Instant::now();
    let answer = sim.demo_code2session(&code).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(answer.get("openid").is_some());
    // The delayed call used the code up, as a real slow answer would.
    let started = Instant::now();
    assert_eq!(sim.demo_code2session(&code).await["errcode"], 40163);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn a_delayed_call_the_client_gave_up_on_still_uses_the_code_up() {
    let sim = spawn_demo().await;
    sim.fault(json!({"path": "/sns/jscode2session", "delay_ms": 1000, "times": 1}))
        .await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = impatient
        .get(format!("{}/sns/jscode2session", sim.base))
        .query(&[
            ("appid", DEMO_APP_ID),
            ("secret", DEMO_APP_SECRET),
            ("js_code", code.as_str()),
            ("grant_type", "authorization_code"),
        ])
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    // WeChat went on with the call after the client hung up, as a real slow answer would.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_wechat_error(&sim.demo_code2session(&code).await, 40163, "code been used");
}

#[tokio::test]
async fn a_delay_with_an_errcode_waits_then_answers_the_errcode() {
    let sim = spawn_demo().await;
    sim.fault(json!({"path": "/cgi-bin/token", "delay_ms": 200, "errcode": 45009, "times": 1}))
        .await;
    let started = Instant::now();
    let answer = sim.classic_token(DEMO_APP_ID, DEMO_APP_SECRET).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_wechat_error(&answer, 45009, "simulated error");
}

#[tokio::test]
async fn faults_queue_in_order_and_run_out_after_their_times() {
    let sim = spawn_demo().await;
    sim.fault(json!({"path": "/sns/jscode2session", "errcode": 45011, "times": 2}))
        .await;
    sim.fault(json!({"path": "/sns/jscode2session", "http_status": 500, "times": 1}))
        .await;
    // A fault on another path does not touch this one.
    sim.fault(json!({"path": "/cgi-bin/token", "errcode": -1, "times": 5}))
        .await;
    let code = sim.login(DEMO_APP_ID, "alice").await;
    assert_eq!(sim.demo_code2session(&code).await["errcode"], 45011);
    assert_eq!(sim.demo_code2session(&code).await["errcode"], 45011);
    let response = sim
        .get(
            "/sns/jscode2session",
            &[
                ("appid", DEMO_APP_ID),
                ("secret", DEMO_APP_SECRET),
                ("js_code", &code),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(sim.demo_code2session(&code).await.get("openid").is_some());
}

#[tokio::test]
async fn deleting_faults_clears_every_queue() {
    let sim = spawn_demo().await;
    sim.fault(json!({"path": "/sns/jscode2session", "errcode": -1, "times": 10}))
        .await;
    sim.fault(json!({"path": "/cgi-bin/stable_token", "errcode": -1}))
        .await;
    assert_eq!(sim.delete("/sim/faults").await, json!({"ok": true}));
    let code = sim.login(DEMO_APP_ID, "alice").await;
    assert!(sim.demo_code2session(&code).await.get("openid").is_some());
    assert!(sim.demo_stable_token().await.len() > 10);
}

#[tokio::test]
async fn bad_fault_specs_are_refused() {
    let sim = spawn_demo().await;
    let cases = [
        (
            json!({"path": "/sns/nope", "errcode": -1, "times": 1}),
            "path",
        ),
        (
            json!({"path": "/sns/jscode2session", "errcode": -1, "times": 0}),
            "times",
        ),
        (
            json!({"path": "/sns/jscode2session", "http_status": 99, "times": 1}),
            "http_status",
        ),
        (
            json!({"path": "/sns/jscode2session", "http_status": 1000, "times": 1}),
            "http_status",
        ),
        (json!({"path": "/sns/jscode2session", "times": 1}), "needs"),
        (
            json!({"path": "/sns/jscode2session", "errcode": -1, "bogus": 1}),
            "bogus",
        ),
    ];
    for (spec, needle) in cases {
        let (status, answer) = sim.post("/sim/faults", &spec).await;
        assert_control_error(status, &answer, StatusCode::BAD_REQUEST, needle);
    }
}

// ----- statistics -----

#[tokio::test]
async fn stats_count_every_wechat_call_by_path_and_app() {
    let sim = spawn_three_apps().await;
    assert_eq!(
        sim.stats().await,
        json!({"total": 0, "by_path": {}, "by_app": {}})
    );
    let code = sim.login(APP_A, "alice").await;
    sim.code2session(APP_A, SECRET_A, &code).await;
    sim.code2session(APP_A, SECRET_A, &code).await; // 40163, still counted
    sim.get("/sns/jscode2session", &[]).await; // no appid
    let token = sim.stable_token(APP_B, SECRET_B, false).await;
    let token = token["access_token"].as_str().unwrap();
    sim.check_session(token, "o", "x").await; // owned by APP_B
    sim.check_session("86_unknown", "o", "x").await;
    sim.fault(json!({"path": "/cgi-bin/token", "http_status": 500}))
        .await;
    sim.get("/cgi-bin/token", &[("appid", APP_U)]).await; // faulted, still counted
    // Control calls are not WeChat calls.
    sim.person(APP_A, "bob").await;
    assert_eq!(
        sim.stats().await,
        json!({
            "total": 7,
            "by_path": {
                "/sns/jscode2session": 3,
                "/cgi-bin/stable_token": 1,
                "/wxa/checksession": 2,
                "/cgi-bin/token": 1,
            },
            "by_app": {
                APP_A: {"/sns/jscode2session": 2},
                APP_B: {"/cgi-bin/stable_token": 1, "/wxa/checksession": 1},
                APP_U: {"/cgi-bin/token": 1},
                "unknown": {"/sns/jscode2session": 1, "/wxa/checksession": 1},
            },
        })
    );
    assert_eq!(sim.delete("/sim/stats").await, json!({"ok": true}));
    assert_eq!(
        sim.stats().await,
        json!({"total": 0, "by_path": {}, "by_app": {}})
    );
}

// ----- clock and robustness -----

#[tokio::test]
async fn sim_time_moves_the_clock_forward() {
    let sim = spawn_demo().await;
    let before = sim.get_json("/sim/time", &[]).await["now"]
        .as_i64()
        .unwrap();
    let after = sim.advance(3600).await;
    assert!((after - before - 3600).abs() <= 2);
    let now = sim.get_json("/sim/time", &[]).await["now"]
        .as_i64()
        .unwrap();
    assert!(now >= after);
}

#[tokio::test]
async fn malformed_wechat_requests_get_wechat_answers_and_never_break_the_simulator() {
    let sim = spawn_demo().await;
    let raw = |path: &str| format!("{}{path}", sim.base);
    let garbage_queries = [
        "/sns/jscode2session?%ZZ=%&appid",
        "/sns/jscode2session?appid=%E4%B8&&&==",
        "/cgi-bin/token?grant_type",
        "/wxa/checksession?access_token=%00%FF",
        "/wxa/resetusersessionkey?openid[]=1",
    ];
    for url in garbage_queries {
        let response = sim.http.get(raw(url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(answer["errcode"].as_i64().unwrap() != 0, "{url}: {answer}");
    }
    let response = sim
        .http
        .post(raw("/wxa/business/getuserphonenumber?access_token="))
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["errcode"], 41001);
    let code = sim.login(DEMO_APP_ID, "alice").await;
    assert!(sim.demo_code2session(&code).await.get("openid").is_some());
}
