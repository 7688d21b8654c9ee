//! `wechat-sim`: a stand-in for WeChat's Mini Program server API, for local development, the
//! demo, tests and benchmarks.
//!
//! It answers the WeChat endpoints a login backend calls (`/sns/jscode2session`, the two
//! access-token endpoints, `getuserphonenumber`, `checksession`, `resetusersessionkey`) with
//! WeChat's paths, parameters, JSON shapes and errcodes, and adds a control API under `/sim/`
//! that plays the mini-program side (`wx.login`, `getUserInfo`, the phone button), moves the
//! clock and injects faults.
//!
//! # Layout
//! - `clock`: the simulator's clock (real time plus an offset tests can move).
//! - [`people`]: simulated people: deterministic openids and unionids, profiles, phones.
//! - `state`: everything the simulator remembers (people, codes, tokens, quotas) and the
//!   rules WeChat applies to them, as plain methods over that state.
//! - `wechat_api`: the WeChat endpoints, answering exactly as WeChat does.
//! - `control`: the `/sim/...` control API.
//! - `faults`: queued faults and call statistics for the WeChat endpoints.
//!
//! Start it with [`spawn`] (tests own the listener, port 0) or [`run`] (the binary).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod clock;
mod control;
mod faults;
pub mod people;
mod state;
mod wechat_api;

/// The AppID of the demo app the simulator serves when no app is configured.
pub const DEMO_APP_ID: &str = "wx1234567890abcdef";

/// The AppSecret of the demo app. Public on purpose: it only ever opens the simulator.
pub const DEMO_APP_SECRET: &str = "demo-secret-0123456789abcdef0123";

/// One mini program the simulator knows.
#[derive(Clone)]
pub struct SimApp {
    /// Its AppID.
    pub appid: String,
    /// Its AppSecret.
    pub secret: String,
    /// Whether it is bound to the (single, simulated) Open Platform account, which is what
    /// makes WeChat reveal unionids to it.
    pub bound: bool,
}

impl std::fmt::Debug for SimApp {
    // Hand-written so that logging a config never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimApp")
            .field("appid", &self.appid)
            .field("secret", &"[redacted]")
            .field("bound", &self.bound)
            .finish()
    }
}

impl SimApp {
    /// Parses `APPID:SECRET` (a bound app) or `APPID:SECRET:unbound`.
    ///
    /// The error never repeats the spec, since it holds a secret.
    ///
    /// ```
    /// let app = wechat_sim::SimApp::parse("wx4f4bc4dec97d474b:s3cret:unbound").unwrap();
    /// assert_eq!(app.appid, "wx4f4bc4dec97d474b");
    /// assert!(!app.bound);
    /// assert!(wechat_sim::SimApp::parse("wxonly").is_err());
    /// ```
    pub fn parse(spec: &str) -> Result<Self, String> {
        const SHAPE: &str = "expected APPID:SECRET or APPID:SECRET:unbound";
        let mut parts = spec.split(':');
        let (Some(appid), Some(secret)) = (parts.next(), parts.next()) else {
            return Err(format!("invalid app: {SHAPE}"));
        };
        let bound = match parts.next() {
            None | Some("bound") => true,
            Some("unbound") => false,
            Some(_) => return Err(format!("invalid app: {SHAPE}")),
        };
        if parts.next().is_some() {
            return Err(format!("invalid app: {SHAPE}"));
        }
        wxauth_wechat::AppId::parse(appid).map_err(|e| format!("invalid app: {e}"))?;
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "invalid app {appid}: the secret must be printable ASCII without spaces"
            ));
        }
        Ok(Self {
            appid: appid.to_owned(),
            secret: secret.to_owned(),
            bound,
        })
    }

    /// The demo app: [`DEMO_APP_ID`] / [`DEMO_APP_SECRET`], bound.
    pub fn demo() -> Self {
        Self {
            appid: DEMO_APP_ID.to_owned(),
            secret: DEMO_APP_SECRET.to_owned(),
            bound: true,
        }
    }
}

/// How to run the simulator.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// The apps it serves; empty means one demo app ([`SimApp::demo`]).
    pub apps: Vec<SimApp>,
    /// Keep each user's session_key across `/sim/login` instead of rotating it, as WeChat
    /// does while a session is still fresh.
    pub keep_session_key: bool,
}

impl SimConfig {
    /// Builds the config from command-line [`Args`].
    pub fn from_args(args: &Args) -> Result<Self, String> {
        let apps = args
            .apps
            .iter()
            .map(|spec| SimApp::parse(spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            apps,
            keep_session_key: args.keep_session_key,
        })
    }

    /// The apps actually served: the configured ones, or the demo app when there are none.
    /// Refuses an AppID given twice, since the two secrets would contradict each other.
    pub fn effective_apps(&self) -> Result<Vec<SimApp>, String> {
        if self.apps.is_empty() {
            return Ok(vec![SimApp::demo()]);
        }
        let mut seen = HashSet::new();
        for app in &self.apps {
            if !seen.insert(app.appid.as_str()) {
                return Err(format!("app {} is configured twice", app.appid));
            }
        }
        Ok(self.apps.clone())
    }
}

/// Command-line arguments, shared by the `wechat-sim` binary and `wxauth sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// A mini program to serve (repeatable). Without any, serves the demo app
    /// wx1234567890abcdef with secret demo-secret-0123456789abcdef0123.
    #[arg(long = "app", value_name = "APPID:SECRET[:unbound]")]
    pub apps: Vec<String>,
    /// Keep each user's session_key across logins instead of rotating it on every wx.login.
    #[arg(long)]
    pub keep_session_key: bool,
}

/// The simulator's whole HTTP surface: the WeChat endpoints and the `/sim/` control API.
///
/// Fails when the config names an AppID twice.
pub fn router(config: SimConfig) -> Result<axum::Router, String> {
    let sim = Arc::new(state::Sim::new(config)?);
    Ok(axum::Router::new()
        .merge(wechat_api::router())
        .merge(control::router())
        .with_state(sim))
}

/// Runs the simulator as a program: binds `args.listen`, logs the address and the apps
/// (never their secrets) and serves until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = SimConfig::from_args(&args).map_err(anyhow::Error::msg)?;
    let apps = config.effective_apps().map_err(anyhow::Error::msg)?;
    let app = router(config.clone()).map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("Failed to listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("Failed to read the listening address")?;
    tracing::info!(%addr, keep_session_key = config.keep_session_key, "wechat-sim listening");
    for app in &apps {
        tracing::info!(appid = %app.appid, bound = app.bound, "serving app");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("The simulator's server failed")
}

/// Starts the simulator on a listener the caller bound (port 0 in tests) and returns at once.
pub async fn spawn(config: SimConfig, listener: TcpListener) -> std::io::Result<SimHandle> {
    let app = router(config).map_err(std::io::Error::other)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            // A dropped handle is not a request to stop: `spawn(..).await?.base_url()` must
            // leave a usable server behind. It then lives as long as the runtime.
            if stopped.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "wechat-sim server failed");
        }
    });
    Ok(SimHandle { addr, stop, task })
}

/// A running simulator started by [`spawn`].
///
/// Dropping the handle leaves the server running until the tokio runtime ends.
pub struct SimHandle {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SimHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:8081`; a wildcard listen address is replaced by
    /// loopback so the URL can be dialled.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Stops accepting calls, lets calls in flight finish, and waits for the server to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
