//! The client against the WeChat simulator, over real HTTP: every API, every errcode and
//! fault path, token caching and single-flight, and secrets kept out of errors and logs.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimApp, SimConfig, SimHandle};
use wxauth_wechat::{
    AccessToken, ApiErrorKind, AppCredentials, AppId, AppSecret, ClientConfig, JsCode,
    MemoryTokenStore, OpenId, SessionKey, TokenMode, TokenStore, TokenStoreError, WechatClient,
    WechatError, crypto,
};

const JSCODE2SESSION: &str = "/sns/jscode2session";
const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
const TOKEN: &str = "/cgi-bin/token";
const PHONE: &str = "/wxa/business/getuserphonenumber";
const CHECK_SESSION: &str = "/wxa/checksession";
const RESET_SESSION_KEY: &str = "/wxa/resetusersessionkey";

/// An unbound second app, for the unionid test.
const UNBOUND_APP_ID: &str = "wx00000000000000aa";
const UNBOUND_APP_SECRET: &str = "unbound-secret-0000";

/// A running simulator and a plain HTTP client for its control API.
struct TestSim {
    handle: SimHandle,
    control: reqwest::Client,
}

impl TestSim {
    async fn start() -> Self {
        Self::start_with(SimConfig::default()).await
    }

    async fn start_with(config: SimConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = wechat_sim::spawn(config, listener).await.unwrap();
        Self {
            handle,
            control: reqwest::Client::new(),
        }
    }

    /// A client config pointing at the simulator, with fast busy retries.
    fn config(&self) -> ClientConfig {
        ClientConfig {
            api_base: self.handle.base_url().parse().unwrap(),
            busy_backoff: Duration::from_millis(1),
            ..ClientConfig::default()
        }
    }

    fn client(&self) -> WechatClient {
        WechatClient::new(self.config()).unwrap()
    }

    /// POSTs to the control API and returns its JSON answer; any refusal fails the test.
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .control
            .post(format!("{}{path}", self.handle.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path} {body}: {status} {answer}");
        answer
    }

    /// The user as the simulator sees them (openid, session_key, unionid, ...).
    async fn user(&self, appid: &str, user: &str) -> Value {
        self.post("/sim/users", json!({ "appid": appid, "user": user }))
            .await
    }

    /// `wx.login` for `user` of the demo app.
    async fn login(&self, user: &str) -> JsCode {
        self.login_to(DEMO_APP_ID, user).await
    }

    async fn login_to(&self, appid: &str, user: &str) -> JsCode {
        let answer = self
            .post("/sim/login", json!({ "appid": appid, "user": user }))
            .await;
        JsCode::parse(answer["code"].as_str().unwrap()).unwrap()
    }

    async fn fault(&self, fault: Value) {
        self.post("/sim/faults", fault).await;
    }

    async fn advance_clock(&self, secs: u64) {
        self.post("/sim/time", json!({ "advance_secs": secs }))
            .await;
    }

    /// How many calls WeChat's `path` has received.
    async fn calls(&self, path: &str) -> u64 {
        let stats: Value = self
            .control
            .get(format!("{}/sim/stats", self.handle.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["by_path"][path].as_u64().unwrap_or(0)
    }
}

fn demo_app() -> AppCredentials {
    AppCredentials::new(
        AppId::parse(DEMO_APP_ID).unwrap(),
        AppSecret::new(DEMO_APP_SECRET),
    )
}

fn now_unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn api_kind(result: Result<impl std::fmt::Debug, WechatError>) -> ApiErrorKind {
    result.unwrap_err().api_kind().expect("an errcode")
}

// ----- code2session -----

#[tokio::test]
async fn code2session_returns_the_users_openid_session_key_and_unionid() {
    let sim = TestSim::start().await;
    let user = sim.user(DEMO_APP_ID, "alice").await;
    let code = sim.login("alice").await;

    let session = sim.client().code2session(&demo_app(), &code).await.unwrap();

    let current = sim.user(DEMO_APP_ID, "alice").await;
    assert_eq!(session.openid.as_str(), user["openid"]);
    assert_eq!(session.session_key.expose_secret(), current["session_key"]);
    assert_eq!(
        session.unionid.as_ref().map(|id| id.as_str()),
        user["unionid"].as_str()
    );
    assert!(session.unionid.is_some(), "the demo app is bound");
}

#[tokio::test]
async fn an_app_not_bound_to_an_open_platform_account_gets_no_unionid() {
    let sim = TestSim::start_with(SimConfig {
        apps: vec![
            SimApp::demo(),
            SimApp {
                appid: UNBOUND_APP_ID.into(),
                secret: UNBOUND_APP_SECRET.into(),
                bound: false,
            },
        ],
        keep_session_key: false,
    })
    .await;
    let app = AppCredentials::new(
        AppId::parse(UNBOUND_APP_ID).unwrap(),
        AppSecret::new(UNBOUND_APP_SECRET),
    );
    let code = sim.login_to(UNBOUND_APP_ID, "bob").await;

    let session = sim.client().code2session(&app, &code).await.unwrap();

    assert_eq!(session.unionid, None);
}

#[tokio::test]
async fn an_unknown_code_is_an_invalid_code() {
    let sim = TestSim::start().await;
    let result = sim
        .client()
        .code2session(&demo_app(), &JsCode::parse("no-such-code").unwrap())
        .await;
    let err = result.unwrap_err();
    assert_eq!(err.errcode(), Some(40029));
    assert_eq!(err.api_kind(), Some(ApiErrorKind::InvalidCode));
}

#[tokio::test]
async fn a_code_older_than_five_minutes_is_an_invalid_code() {
    let sim = TestSim::start().await;
    let code = sim.login("alice").await;
    sim.advance_clock(301).await;
    let result = sim.client().code2session(&demo_app(), &code).await;
    assert_eq!(api_kind(result), ApiErrorKind::InvalidCode);
}

#[tokio::test]
async fn a_code_used_twice_is_refused_the_second_time() {
    let sim = TestSim::start().await;
    let client = sim.client();
    let code = sim.login("alice").await;
    client.code2session(&demo_app(), &code).await.unwrap();

    let result = client.code2session(&demo_app(), &code).await;

    assert_eq!(api_kind(result), ApiErrorKind::CodeUsed);
    assert_eq!(sim.calls(JSCODE2SESSION).await, 2);
}

#[tokio::test]
async fn a_wrong_secret_is_an_invalid_secret() {
    let sim = TestSim::start().await;
    let app = AppCredentials::new(
        AppId::parse(DEMO_APP_ID).unwrap(),
        AppSecret::new("wrong-secret"),
    );
    let code = sim.login("alice").await;
    let err = sim.client().code2session(&app, &code).await.unwrap_err();
    assert_eq!(err.errcode(), Some(40125));
    assert_eq!(err.api_kind(), Some(ApiErrorKind::InvalidSecret));
    assert!(!format!("{err} {err:?}").contains("wrong-secret"));
}

#[tokio::test]
async fn an_unknown_appid_is_an_invalid_appid() {
    let sim = TestSim::start().await;
    let app = AppCredentials::new(
        AppId::parse("wx0123456789abcdef").unwrap(),
        AppSecret::new(DEMO_APP_SECRET),
    );
    let code = sim.login("alice").await;
    let result = sim.client().code2session(&app, &code).await;
    assert_eq!(api_kind(result), ApiErrorKind::InvalidAppId);
}

#[tokio::test]
async fn a_high_risk_user_is_refused() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": JSCODE2SESSION, "errcode": 40226 }))
        .await;
    let code = sim.login("alice").await;
    let err = sim
        .client()
        .code2session(&demo_app(), &code)
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(40226));
    assert_eq!(err.api_kind(), Some(ApiErrorKind::RiskyUser));
}

#[tokio::test]
async fn a_frequency_limit_fault_is_rate_limited_and_not_retried() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": JSCODE2SESSION, "errcode": 45011 }))
        .await;
    let code = sim.login("alice").await;
    let result = sim.client().code2session(&demo_app(), &code).await;
    assert_eq!(api_kind(result), ApiErrorKind::RateLimited);
    assert_eq!(sim.calls(JSCODE2SESSION).await, 1);
}

#[tokio::test]
async fn the_101st_code2session_for_one_user_within_a_minute_is_rate_limited() {
    let sim = TestSim::start().await;
    let client = sim.client();
    for _ in 0..100 {
        let code = sim.login("alice").await;
        client.code2session(&demo_app(), &code).await.unwrap();
    }
    let code = sim.login("alice").await;
    let result = client.code2session(&demo_app(), &code).await;
    assert_eq!(api_kind(result), ApiErrorKind::RateLimited);
}

#[tokio::test]
async fn system_busy_is_retried_and_the_code_still_works() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": JSCODE2SESSION, "errcode": -1, "times": 2 }))
        .await;
    let code = sim.login("alice").await;

    let session = sim.client().code2session(&demo_app(), &code).await;

    assert!(session.is_ok(), "{session:?}");
    assert_eq!(sim.calls(JSCODE2SESSION).await, 3);
}

#[tokio::test]
async fn system_busy_gives_up_after_the_configured_retries() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": JSCODE2SESSION, "errcode": -1, "times": 10 }))
        .await;
    let code = sim.login("alice").await;

    let result = sim.client().code2session(&demo_app(), &code).await;

    assert_eq!(api_kind(result), ApiErrorKind::Busy);
    assert_eq!(sim.calls(JSCODE2SESSION).await, 3, "1 call + 2 retries");
}

#[tokio::test]
async fn system_busy_is_not_retried_when_retries_are_off() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": JSCODE2SESSION, "errcode": -1, "times": 10 }))
        .await;
    let client = WechatClient::new(ClientConfig {
        busy_retries: 0,
        ..sim.config()
    })
    .unwrap();
    let code = sim.login("alice").await;

    let result = client.code2session(&demo_app(), &code).await;

    assert_eq!(api_kind(result), ApiErrorKind::Busy);
    assert_eq!(sim.calls(JSCODE2SESSION).await, 1);
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout_and_is_never_retried() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": JSCODE2SESSION, "delay_ms": 1500 }))
        .await;
    let timeout = Duration::from_millis(300);
    let client = WechatClient::new(ClientConfig {
        timeout,
        ..sim.config()
    })
    .unwrap();
    let code = sim.login("alice").await;

    let err = client.code2session(&demo_app(), &code).await.unwrap_err();

    assert!(
        matches!(err, WechatError::Timeout(t) if t == timeout),
        "{err:?}"
    );
    assert_eq!(sim.calls(JSCODE2SESSION).await, 1);
}

#[tokio::test]
async fn a_non_success_http_status_is_a_status_error() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": JSCODE2SESSION, "http_status": 502 }))
        .await;
    let code = sim.login("alice").await;
    let err = sim
        .client()
        .code2session(&demo_app(), &code)
        .await
        .unwrap_err();
    assert!(matches!(err, WechatError::Status(502)), "{err:?}");
    assert_eq!(sim.calls(JSCODE2SESSION).await, 1);
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_a_protocol_error() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": JSCODE2SESSION, "body": "<html>504 Gateway Time-out</html>" }))
        .await;
    let code = sim.login("alice").await;
    let err = sim
        .client()
        .code2session(&demo_app(), &code)
        .await
        .unwrap_err();
    assert!(matches!(err, WechatError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn an_answer_without_a_session_key_is_a_protocol_error() {
    let sim = TestSim::start().await;
    sim.fault(
        json!({ "path": JSCODE2SESSION, "body": { "openid": "oGZUI0egBJY1zhBYw2KhdUfwVJJE" } }),
    )
    .await;
    let code = sim.login("alice").await;
    let err = sim
        .client()
        .code2session(&demo_app(), &code)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected answer from the WeChat API: `session_key` is missing or not a string"
    );
}

#[tokio::test]
async fn a_malformed_session_key_is_a_protocol_error_that_does_not_repeat_it() {
    let sim = TestSim::start().await;
    sim.fault(json!({
        "path": JSCODE2SESSION,
        "body": { "openid": "oGZUI0egBJY1zhBYw2KhdUfwVJJE", "session_key": "bm90LXNpeHRlZW4tYnl0ZXMtbG9uZw==" }
    }))
    .await;
    let code = sim.login("alice").await;
    let err = sim
        .client()
        .code2session(&demo_app(), &code)
        .await
        .unwrap_err();
    assert!(matches!(err, WechatError::Protocol(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("bm90LXNpeHRlZW4tYnl0ZXMtbG9uZw"));
}

// ----- access tokens -----

#[tokio::test]
async fn the_access_token_comes_from_stable_token_and_is_cached() {
    let sim = TestSim::start().await;
    let client = sim.client();

    let first = client.access_token(&demo_app()).await.unwrap();
    let second = client.access_token(&demo_app()).await.unwrap();

    assert_eq!(first, second);
    assert!(first.expires_at_unix() > now_unix() + 7000);
    assert_eq!(sim.calls(STABLE_TOKEN).await, 1);
    assert_eq!(sim.calls(TOKEN).await, 0);
}

#[tokio::test]
async fn classic_mode_uses_the_old_token_endpoint() {
    let sim = TestSim::start().await;
    let client = WechatClient::new(ClientConfig {
        token_mode: TokenMode::Classic,
        ..sim.config()
    })
    .unwrap();

    client.access_token(&demo_app()).await.unwrap();
    client.access_token(&demo_app()).await.unwrap();

    assert_eq!(sim.calls(TOKEN).await, 1);
    assert_eq!(sim.calls(STABLE_TOKEN).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_callers_make_one_upstream_token_call() {
    let sim = TestSim::start().await;
    // A slow WeChat widens the window in which the callers pile up.
    sim.fault(json!({ "path": STABLE_TOKEN, "delay_ms": 200 }))
        .await;
    let client = sim.client();

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        calls.spawn(async move { client.access_token(&demo_app()).await });
    }
    let tokens: Vec<AccessToken> = calls
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert!(tokens.iter().all(|token| *token == tokens[0]));
    assert_eq!(sim.calls(STABLE_TOKEN).await, 1);
}

#[tokio::test]
async fn two_clients_sharing_a_token_store_make_one_upstream_call() {
    let sim = TestSim::start().await;
    let store = Arc::new(MemoryTokenStore::default());
    let a = WechatClient::with_token_store(sim.config(), store.clone()).unwrap();
    let b = WechatClient::with_token_store(sim.config(), store).unwrap();

    let from_a = a.access_token(&demo_app()).await.unwrap();
    let from_b = b.access_token(&demo_app()).await.unwrap();

    assert_eq!(from_a, from_b);
    assert_eq!(sim.calls(STABLE_TOKEN).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_sharing_a_store_refreshing_at_once_make_one_upstream_call() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": STABLE_TOKEN, "delay_ms": 200 }))
        .await;
    let store = Arc::new(MemoryTokenStore::default());
    let a = WechatClient::with_token_store(sim.config(), store.clone()).unwrap();
    let b = WechatClient::with_token_store(sim.config(), store).unwrap();

    let app = demo_app();
    let (from_a, from_b) = tokio::join!(a.access_token(&app), b.access_token(&app));

    assert_eq!(from_a.unwrap(), from_b.unwrap());
    assert_eq!(sim.calls(STABLE_TOKEN).await, 1);
}

#[tokio::test]
async fn a_client_waits_for_the_instance_holding_the_refresh_lease() {
    let sim = TestSim::start().await;
    let store = Arc::new(MemoryTokenStore::default());
    let app = demo_app();
    // Another instance holds the lease and stores its token a moment later.
    assert!(
        store
            .try_lock(&app.app_id, Duration::from_secs(10))
            .await
            .unwrap()
    );
    let theirs = AccessToken::new("token-from-another-instance", now_unix() + 7200);
    let publisher = {
        let (store, app_id, theirs) = (store.clone(), app.app_id.clone(), theirs.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            store.put(&app_id, &theirs).await.unwrap();
            store.unlock(&app_id).await.unwrap();
        })
    };
    let client = WechatClient::with_token_store(sim.config(), store).unwrap();

    let token = client.access_token(&app).await.unwrap();

    publisher.await.unwrap();
    assert_eq!(token, theirs);
    assert_eq!(sim.calls(STABLE_TOKEN).await, 0);
}

#[tokio::test]
async fn a_client_fetches_itself_when_the_lease_holder_never_delivers() {
    let sim = TestSim::start().await;
    let store = Arc::new(MemoryTokenStore::default());
    let app = demo_app();
    assert!(
        store
            .try_lock(&app.app_id, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let client = WechatClient::with_token_store(
        ClientConfig {
            timeout: Duration::from_millis(300),
            ..sim.config()
        },
        store.clone(),
    )
    .unwrap();

    let token = client.access_token(&app).await.unwrap();

    assert_eq!(sim.calls(STABLE_TOKEN).await, 1);
    assert_eq!(store.get(&app.app_id).await.unwrap(), Some(token));
}

#[tokio::test]
async fn a_stored_token_close_to_expiry_is_refreshed_ahead_of_time() {
    let sim = TestSim::start().await;
    let store = Arc::new(MemoryTokenStore::default());
    let app = demo_app();
    let nearly_expired = AccessToken::new("nearly-expired", now_unix() + 200);
    store.put(&app.app_id, &nearly_expired).await.unwrap();
    let client = WechatClient::with_token_store(sim.config(), store.clone()).unwrap();

    let token = client.access_token(&app).await.unwrap();

    assert_ne!(token, nearly_expired);
    assert_eq!(sim.calls(STABLE_TOKEN).await, 1);
    assert_eq!(store.get(&app.app_id).await.unwrap(), Some(token));
}

#[tokio::test]
async fn a_stored_token_with_time_to_spare_is_used_as_is() {
    let sim = TestSim::start().await;
    let store = Arc::new(MemoryTokenStore::default());
    let app = demo_app();
    let fresh = AccessToken::new("fresh-enough", now_unix() + 3600);
    store.put(&app.app_id, &fresh).await.unwrap();
    let client = WechatClient::with_token_store(sim.config(), store).unwrap();

    assert_eq!(client.access_token(&app).await.unwrap(), fresh);
    assert_eq!(sim.calls(STABLE_TOKEN).await, 0);
}

/// A store that always fails, like an unreachable Redis.
struct BrokenStore;

#[async_trait::async_trait]
impl TokenStore for BrokenStore {
    async fn get(&self, _: &AppId) -> Result<Option<AccessToken>, TokenStoreError> {
        Err(TokenStoreError("connection refused".into()))
    }
    async fn put(&self, _: &AppId, _: &AccessToken) -> Result<(), TokenStoreError> {
        Err(TokenStoreError("connection refused".into()))
    }
    async fn invalidate(&self, _: &AppId, _: &AccessToken) -> Result<(), TokenStoreError> {
        Err(TokenStoreError("connection refused".into()))
    }
    async fn try_lock(&self, _: &AppId, _: Duration) -> Result<bool, TokenStoreError> {
        Err(TokenStoreError("connection refused".into()))
    }
    async fn unlock(&self, _: &AppId) -> Result<(), TokenStoreError> {
        Err(TokenStoreError("connection refused".into()))
    }
}

#[tokio::test]
async fn a_broken_token_store_does_not_fail_the_call() {
    let sim = TestSim::start().await;
    let client = WechatClient::with_token_store(sim.config(), Arc::new(BrokenStore)).unwrap();
    let phone = sim
        .post(
            "/sim/phone",
            json!({ "appid": DEMO_APP_ID, "user": "alice" }),
        )
        .await;

    let first = client.access_token(&demo_app()).await.unwrap();
    let second = client.access_token(&demo_app()).await.unwrap();
    let info = client
        .phone_number(&demo_app(), phone["code"].as_str().unwrap())
        .await;

    assert_eq!(first, second);
    assert!(info.is_ok(), "{info:?}");
    // The process keeps its own copy while the store is down.
    assert_eq!(sim.calls(STABLE_TOKEN).await, 1);
}

#[tokio::test]
async fn a_token_request_with_a_wrong_secret_is_an_invalid_secret() {
    let sim = TestSim::start().await;
    for mode in [TokenMode::Stable, TokenMode::Classic] {
        let client = WechatClient::new(ClientConfig {
            token_mode: mode,
            ..sim.config()
        })
        .unwrap();
        let app = AppCredentials::new(
            AppId::parse(DEMO_APP_ID).unwrap(),
            AppSecret::new("not-the-secret"),
        );
        let err = client.access_token(&app).await.unwrap_err();
        assert_eq!(
            err.api_kind(),
            Some(ApiErrorKind::InvalidSecret),
            "{mode:?}"
        );
        assert!(!format!("{err} {err:?}").contains("not-the-secret"));
    }
}

// ----- phone numbers -----

#[tokio::test]
async fn the_phone_number_behind_a_phone_code_is_returned() {
    let sim = TestSim::start().await;
    let pressed = sim
        .post(
            "/sim/phone",
            json!({ "appid": DEMO_APP_ID, "user": "alice", "phone": "13800138000" }),
        )
        .await;

    let phone = sim
        .client()
        .phone_number(&demo_app(), pressed["code"].as_str().unwrap())
        .await
        .unwrap();

    assert_eq!(phone.phone_number, "13800138000");
    assert_eq!(phone.pure_phone_number, "13800138000");
    assert_eq!(phone.country_code, "86");
    assert_eq!(phone.watermark.appid, DEMO_APP_ID);
}

#[tokio::test]
async fn a_phone_code_used_twice_is_refused() {
    let sim = TestSim::start().await;
    let client = sim.client();
    let pressed = sim
        .post(
            "/sim/phone",
            json!({ "appid": DEMO_APP_ID, "user": "alice" }),
        )
        .await;
    let code = pressed["code"].as_str().unwrap();
    client.phone_number(&demo_app(), code).await.unwrap();

    let result = client.phone_number(&demo_app(), code).await;

    assert_eq!(api_kind(result), ApiErrorKind::CodeUsed);
}

#[tokio::test]
async fn a_rejected_access_token_is_refreshed_once_and_the_call_retried() {
    let sim = TestSim::start().await;
    let client = sim.client();
    client.access_token(&demo_app()).await.unwrap();
    sim.fault(json!({ "path": PHONE, "errcode": 40001 })).await;
    let pressed = sim
        .post(
            "/sim/phone",
            json!({ "appid": DEMO_APP_ID, "user": "alice" }),
        )
        .await;

    let phone = client
        .phone_number(&demo_app(), pressed["code"].as_str().unwrap())
        .await;

    assert!(phone.is_ok(), "{phone:?}");
    assert_eq!(sim.calls(PHONE).await, 2);
    assert_eq!(sim.calls(STABLE_TOKEN).await, 2);
}

#[tokio::test]
async fn a_token_rejected_twice_gives_up_after_one_retry() {
    let sim = TestSim::start().await;
    sim.fault(json!({ "path": PHONE, "errcode": 40001, "times": 5 }))
        .await;
    let pressed = sim
        .post(
            "/sim/phone",
            json!({ "appid": DEMO_APP_ID, "user": "alice" }),
        )
        .await;

    let result = sim
        .client()
        .phone_number(&demo_app(), pressed["code"].as_str().unwrap())
        .await;

    assert_eq!(api_kind(result), ApiErrorKind::AccessTokenInvalid);
    assert_eq!(sim.calls(PHONE).await, 2);
}

#[tokio::test]
async fn a_token_that_expired_at_wechat_is_replaced_and_the_call_retried() {
    let sim = TestSim::start().await;
    let client = sim.client();
    let old = client.access_token(&demo_app()).await.unwrap();
    // WeChat's clock runs past the token's expiry; ours still thinks it fresh.
    sim.advance_clock(7201).await;
    let pressed = sim
        .post(
            "/sim/phone",
            json!({ "appid": DEMO_APP_ID, "user": "alice" }),
        )
        .await;

    let phone = client
        .phone_number(&demo_app(), pressed["code"].as_str().unwrap())
        .await;

    assert!(phone.is_ok(), "{phone:?}");
    assert_ne!(client.access_token(&demo_app()).await.unwrap(), old);
    assert_eq!(sim.calls(STABLE_TOKEN).await, 2);
}

// ----- session keys -----

#[tokio::test]
async fn the_current_session_key_checks_true() {
    let sim = TestSim::start().await;
    let client = sim.client();
    let code = sim.login("alice").await;
    let session = client.code2session(&demo_app(), &code).await.unwrap();

    let valid = client
        .check_session_key(&demo_app(), &session.openid, &session.session_key)
        .await
        .unwrap();

    assert!(valid);
    assert_eq!(sim.calls(CHECK_SESSION).await, 1);
}

#[tokio::test]
async fn a_session_key_rotated_by_a_new_login_checks_false() {
    let sim = TestSim::start().await;
    let client = sim.client();
    let code = sim.login("alice").await;
    let session = client.code2session(&demo_app(), &code).await.unwrap();
    sim.login("alice").await;

    let valid = client
        .check_session_key(&demo_app(), &session.openid, &session.session_key)
        .await
        .unwrap();

    assert!(!valid);
}

#[tokio::test]
async fn checking_the_key_of_an_unknown_openid_is_an_error() {
    let sim = TestSim::start().await;
    let result = sim
        .client()
        .check_session_key(
            &demo_app(),
            &OpenId::parse("o-nobody").unwrap(),
            &SessionKey::generate(),
        )
        .await;
    assert_eq!(result.unwrap_err().errcode(), Some(40003));
}

#[tokio::test]
async fn a_reset_session_key_checks_true_and_the_old_one_false() {
    let sim = TestSim::start().await;
    let client = sim.client();
    let code = sim.login("alice").await;
    let session = client.code2session(&demo_app(), &code).await.unwrap();

    let reset = client
        .reset_session_key(&demo_app(), &session.openid, &session.session_key)
        .await
        .unwrap();

    assert_eq!(reset.openid, session.openid);
    assert_eq!(reset.unionid, None);
    assert_ne!(reset.session_key, session.session_key);
    assert_eq!(
        sim.user(DEMO_APP_ID, "alice").await["session_key"],
        reset.session_key.expose_secret()
    );
    assert!(
        client
            .check_session_key(&demo_app(), &reset.openid, &reset.session_key)
            .await
            .unwrap()
    );
    assert!(
        !client
            .check_session_key(&demo_app(), &session.openid, &session.session_key)
            .await
            .unwrap()
    );
    assert_eq!(sim.calls(RESET_SESSION_KEY).await, 1);
}

#[tokio::test]
async fn resetting_with_a_stale_session_key_is_a_bad_signature() {
    let sim = TestSim::start().await;
    let client = sim.client();
    let code = sim.login("alice").await;
    let session = client.code2session(&demo_app(), &code).await.unwrap();
    sim.login("alice").await;

    let result = client
        .reset_session_key(&demo_app(), &session.openid, &session.session_key)
        .await;

    assert_eq!(api_kind(result), ApiErrorKind::BadSignature);
}

#[tokio::test]
async fn open_data_from_the_simulator_decrypts_with_the_session_key() {
    let sim = TestSim::start().await;
    let code = sim.login("alice").await;
    let session = sim.client().code2session(&demo_app(), &code).await.unwrap();
    let data = sim
        .post(
            "/sim/userinfo",
            json!({ "appid": DEMO_APP_ID, "user": "alice" }),
        )
        .await;

    let app = demo_app();
    let info = crypto::decrypt_user_info(
        &session.session_key,
        data["encryptedData"].as_str().unwrap(),
        data["iv"].as_str().unwrap(),
        &crypto::WatermarkCheck::new(&app.app_id),
    )
    .unwrap();

    assert_eq!(info.open_id.as_deref(), Some(session.openid.as_str()));
    assert!(crypto::verify_raw_data_signature(
        data["rawData"].as_str().unwrap(),
        data["signature"].as_str().unwrap(),
        &session.session_key,
    ));
}

// ----- secrets -----

/// A log sink for the test's thread.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn no_secret_code_or_token_appears_in_errors_debug_output_or_logs() {
    use tracing_subscriber::layer::SubscriberExt as _;

    // Capture everything this crate logs, at every level, on this (the only) thread.
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("wxauth_wechat", tracing::Level::TRACE),
        );
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = TestSim::start().await;
    let client = WechatClient::new(ClientConfig {
        timeout: Duration::from_millis(300),
        ..sim.config()
    })
    .unwrap();
    let app = demo_app();
    let wrong = AppCredentials::new(app.app_id.clone(), AppSecret::new("wrong-secret-value"));
    let mut errors = Vec::new();
    let mut secrets = vec![DEMO_APP_SECRET.to_owned(), "wrong-secret-value".to_owned()];

    // Successes: a login, a token, a phone, a check, a reset.
    let code = sim.login("alice").await;
    secrets.push(code.as_str().to_owned());
    let session = client.code2session(&app, &code).await.unwrap();
    secrets.push(session.session_key.expose_secret().to_owned());
    let token = client.access_token(&app).await.unwrap();
    secrets.push(token.expose_secret().to_owned());
    let pressed = sim
        .post(
            "/sim/phone",
            json!({ "appid": DEMO_APP_ID, "user": "alice" }),
        )
        .await;
    let phone_code = pressed["code"].as_str().unwrap().to_owned();
    secrets.push(phone_code.clone());
    client.phone_number(&app, &phone_code).await.unwrap();
    client
        .check_session_key(&app, &session.openid, &session.session_key)
        .await
        .unwrap();
    let reset = client
        .reset_session_key(&app, &session.openid, &session.session_key)
        .await
        .unwrap();
    secrets.push(reset.session_key.expose_secret().to_owned());

    // Failures of every kind.
    errors.push(client.code2session(&wrong, &code).await.unwrap_err());
    errors.push(client.code2session(&app, &code).await.unwrap_err());
    // A fresh client: the first one has a token cached for this AppID.
    let fresh = WechatClient::new(sim.config()).unwrap();
    errors.push(fresh.access_token(&wrong).await.unwrap_err());
    for fault in [
        json!({ "path": JSCODE2SESSION, "errcode": -1, "times": 3 }),
        json!({ "path": JSCODE2SESSION, "http_status": 500 }),
        json!({ "path": JSCODE2SESSION, "body": "not json" }),
        json!({ "path": JSCODE2SESSION, "delay_ms": 1000 }),
    ] {
        sim.fault(fault).await;
        let code = sim.login("alice").await;
        secrets.push(code.as_str().to_owned());
        errors.push(client.code2session(&app, &code).await.unwrap_err());
    }
    sim.fault(json!({ "path": PHONE, "errcode": 40001, "times": 2 }))
        .await;
    errors.push(client.phone_number(&app, &phone_code).await.unwrap_err());
    let unreachable = WechatClient::new(ClientConfig {
        api_base: "http://127.0.0.1:9".parse().unwrap(),
        ..ClientConfig::default()
    })
    .unwrap();
    errors.push(unreachable.code2session(&app, &code).await.unwrap_err());
    assert!(errors.iter().any(|e| matches!(e, WechatError::Timeout(_))));
    assert!(errors.iter().any(|e| matches!(e, WechatError::Connect)));

    let mut seen = format!("{client:?}\n{unreachable:?}\n{app:?}\n{token:?}\n{session:?}\n");
    for err in &errors {
        seen.push_str(&format!("{err}\n{err:?}\n"));
    }
    let logs = logs.text();
    assert!(
        logs.contains("wechat_call"),
        "the calls were logged: {logs}"
    );
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "{secret} in {seen}");
        assert!(!logs.contains(secret.as_str()), "{secret} in the logs");
    }
}

/// Records what the client tells its observer.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(&'static str, &'static str)>>,
    tokens: Mutex<Vec<bool>>,
    refused: Mutex<Vec<&'static str>>,
}

impl wxauth_wechat::observe::Observer for Recorder {
    fn call_finished(&self, event: &wxauth_wechat::observe::CallEvent<'_>) {
        let label = wxauth_wechat::observe::outcome_label(event.outcome);
        self.calls
            .lock()
            .unwrap()
            .push((event.endpoint.name(), label));
    }

    fn token_fetched(&self, _app_id: &AppId, outcome: Result<(), &WechatError>) {
        self.tokens.lock().unwrap().push(outcome.is_ok());
    }

    fn call_refused(&self, endpoint: wxauth_wechat::observe::Endpoint, _app_id: &AppId) {
        self.refused.lock().unwrap().push(endpoint.name());
    }
}

#[tokio::test]
async fn the_observer_hears_every_call_each_busy_retry_and_each_token_fetch() {
    let sim = TestSim::start().await;
    let recorder = Arc::new(Recorder::default());
    let client = WechatClient::new(ClientConfig {
        observer: Some(recorder.clone()),
        ..sim.config()
    })
    .unwrap();
    let app = demo_app();
    sim.fault(json!({ "path": JSCODE2SESSION, "errcode": -1, "times": 1 }))
        .await;
    let code = sim.login("olga").await;
    client.code2session(&app, &code).await.unwrap();
    let bad = JsCode::parse("not-a-code-the-sim-knows").unwrap();
    let err = client.code2session(&app, &bad).await.unwrap_err();
    assert_eq!(err.errcode(), Some(40029));
    client.access_token(&app).await.unwrap();
    assert_eq!(
        *recorder.calls.lock().unwrap(),
        [
            ("jscode2session", "-1"),
            ("jscode2session", "0"),
            ("jscode2session", "40029"),
            ("stable_token", "0"),
        ]
    );
    assert_eq!(*recorder.tokens.lock().unwrap(), [true]);
    assert!(recorder.refused.lock().unwrap().is_empty());
}

#[tokio::test]
async fn calls_beyond_max_concurrency_wait_then_fail_unsent() {
    let sim = TestSim::start().await;
    let recorder = Arc::new(Recorder::default());
    let client = WechatClient::new(ClientConfig {
        max_concurrency: 1,
        concurrency_wait: Duration::from_millis(100),
        observer: Some(recorder.clone()),
        ..sim.config()
    })
    .unwrap();
    let app = demo_app();
    // The first call holds the only place for a second.
    sim.fault(json!({ "path": JSCODE2SESSION, "delay_ms": 1000, "times": 1 }))
        .await;
    let first = sim.login("pia").await;
    let second = sim.login("quinn").await;
    let (slow, refused) = tokio::join!(client.code2session(&app, &first), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.code2session(&app, &second).await
    });
    slow.unwrap();
    assert!(
        matches!(refused, Err(WechatError::Overloaded)),
        "{refused:?}"
    );
    assert_eq!(
        sim.calls(JSCODE2SESSION).await,
        1,
        "the refused call was not sent"
    );
    assert_eq!(*recorder.refused.lock().unwrap(), ["jscode2session"]);
    // With the place free again, calls go through.
    let third = sim.login("quinn").await;
    client.code2session(&app, &third).await.unwrap();
}
