//! Starting the service and the simulator, and typed request helpers.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimApp, SimConfig, SimHandle};
use wxauth::Application;
use wxauth::clock::ManualClock;
use wxauth::config::{AppConfig, Config};

pub use crate::backend::TestBackend;

/// WeChat's published sample app and identity.
pub const SAMPLE_APP_ID: &str = "wx4f4bc4dec97d474b";
pub const SAMPLE_SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
pub const SAMPLE_OPENID: &str = "oGZUI0egBJY1zhBYw2KhdUfwVJJE";
pub const SAMPLE_IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
pub const SAMPLE_ENCRYPTED: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";

/// A data key for tests.
pub const TEST_DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=";

/// A running simulator shared by one or more service instances.
pub struct Sim {
    _handle: SimHandle,
    pub url: String,
}

impl Sim {
    pub async fn start(apps: Vec<SimApp>) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = wechat_sim::spawn(
            SimConfig {
                apps,
                keep_session_key: false,
            },
            listener,
        )
        .await
        .unwrap();
        let url = handle.base_url();
        Arc::new(Self {
            _handle: handle,
            url,
        })
    }
}

/// How to build a test service.
pub struct Options {
    /// Apps configured on the service: (app_id, secret).
    pub apps: Vec<(String, String)>,
    /// Apps known to the simulator (default: the same as `apps`).
    pub sim_apps: Option<Vec<SimApp>>,
    /// Tweaks to the config before build.
    pub tweak: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            apps: vec![(DEMO_APP_ID.to_owned(), DEMO_APP_SECRET.to_owned())],
            sim_apps: None,
            tweak: Box::new(|_| {}),
        }
    }
}

/// One running service, its simulator, its clock and its storage.
pub struct TestApp {
    pub addr: String,
    pub sim: Arc<Sim>,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    pub app_id: String,
    pub backend: Arc<TestBackend>,
    /// The running service's state (for operator actions).
    pub state: wxauth::state::AppState,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    // Server-side warnings and errors show in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("wxauth=warn")),
        )
        .with_test_writer()
        .try_init();
    let sim_apps = options.sim_apps.unwrap_or_else(|| {
        options
            .apps
            .iter()
            .map(|(id, secret)| SimApp {
                appid: id.clone(),
                secret: secret.clone(),
                bound: true,
            })
            .collect()
    });
    let sim = Sim::start(sim_apps).await;
    let backend = Arc::new(TestBackend::from_env().await);
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    backend.apply(&mut config);
    config.storage.media_dir = backend.dir().join("media");
    config.wechat.api_base = sim.url.parse().unwrap();
    config.wechat.timeout = Duration::from_secs(2);
    config.security.data_key = Some(SecretString::from(TEST_DATA_KEY));
    config.apps = options
        .apps
        .iter()
        .map(|(id, secret)| AppConfig {
            app_id: id.clone(),
            secret: Some(SecretString::from(secret.as_str())),
            secret_file: None,
            secret_env: None,
        })
        .collect();
    (options.tweak)(&mut config);
    let app_id = options.apps[0].0.clone();
    start(config, sim, backend, ManualClock::new(), app_id).await
}

async fn start(
    config: Config,
    sim: Arc<Sim>,
    backend: Arc<TestBackend>,
    clock: ManualClock,
    app_id: String,
) -> TestApp {
    let app = Application::build_with_clock(config.clone(), Arc::new(clock.clone()))
        .await
        .expect("the test service builds");
    let addr = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until(async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        addr,
        sim,
        clock,
        http: reqwest::Client::new(),
        app_id,
        backend,
        state,
        config,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// Another instance on the same storage, simulator and clock (a second server process
    /// would behave the same; this one shares nothing in memory with the first).
    pub async fn sibling(&self) -> TestApp {
        start(
            self.config.clone(),
            self.sim.clone(),
            self.backend.clone(),
            self.clock.clone(),
            self.app_id.clone(),
        )
        .await
    }

    /// Logs `user` in through `app_id`.
    pub async fn login_in(&self, app_id: &str, user: &str) -> Value {
        let code = self.code_in(app_id, user).await;
        let response = self
            .post("/v1/auth/login", json!({ "code": code, "app_id": app_id }))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "login of {user} in {app_id}"
        );
        response.json().await.unwrap()
    }

    pub async fn patch_authed(&self, path: &str, token: &str, body: Value) -> Response {
        self.http
            .patch(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The configuration this instance runs with.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// Stops this instance and starts a new one on the same database, simulator and clock.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// As [`TestApp::restart`], with a changed configuration.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        self.stop_now().await;
        tweak(&mut self.config);
        start(
            self.config.clone(),
            self.sim.clone(),
            self.backend.clone(),
            self.clock.clone(),
            self.app_id.clone(),
        )
        .await
    }

    async fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Now, by the service's clock.
    /// The environment under which a `wxauth` command works on this app's stores.
    pub fn command_env(&self) -> Vec<(String, String)> {
        let mut env = self.backend.env();
        env.push((
            "WXAUTH_SECURITY__DATA_KEY".to_owned(),
            TEST_DATA_KEY.to_owned(),
        ));
        env.push(("WXTEST_APP_SECRET".to_owned(), DEMO_APP_SECRET.to_owned()));
        env.push((
            "WXAUTH_APPS".to_owned(),
            format!("[{{app_id=\"{DEMO_APP_ID}\",secret_env=\"WXTEST_APP_SECRET\"}}]"),
        ));
        env
    }

    pub fn clock_now(&self) -> i64 {
        use wxauth::clock::Clock as _;
        self.clock.now()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.addr, path)
    }

    /// POST JSON to the simulator's control API.
    pub async fn sim(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{}", self.sim.url, path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "sim {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// The simulator's call counts.
    pub async fn sim_stats(&self) -> Value {
        self.http
            .get(format!("{}/sim/stats", self.sim.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Makes the next `times` calls to a WeChat path fail as described.
    pub async fn fault(&self, path: &str, fault: Value, times: u32) {
        let mut body = fault;
        body["path"] = json!(path);
        body["times"] = json!(times);
        self.sim("/sim/faults", body).await;
    }

    /// Logs `user` in while the next `times` code2Session calls fail as `fault` says.
    pub async fn login_through_fault(&self, user: &str, fault: Value, times: u32) -> Response {
        let code = self.code(user).await;
        self.fault("/sns/jscode2session", fault, times).await;
        self.post("/v1/auth/login", json!({ "code": code })).await
    }

    /// What `wx.login` gives `user` in the default app.
    pub async fn code(&self, user: &str) -> String {
        self.code_in(&self.app_id.clone(), user).await
    }

    pub async fn code_in(&self, app_id: &str, user: &str) -> String {
        let v = self
            .sim("/sim/login", json!({"appid": app_id, "user": user}))
            .await;
        v["code"].as_str().unwrap().to_owned()
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_authed(&self, path: &str, token: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_authed(&self, path: &str, token: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Logs `user` in through the default app and returns the login response.
    pub async fn login(&self, user: &str) -> Value {
        let code = self.code(user).await;
        let response = self.post("/v1/auth/login", json!({ "code": code })).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {user}");
        response.json().await.unwrap()
    }

    pub async fn me(&self, token: &str) -> Response {
        self.get_authed("/v1/me", token).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads an error response and checks its status and code; returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status for {code}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a message: {body}"
    );
    body
}

pub fn token(login: &Value, field: &str) -> String {
    login[field].as_str().unwrap().to_owned()
}
