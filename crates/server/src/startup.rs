//! Building and running the service: `Application::build(config)` binds its own listener
//! (port 0 in tests), so callers learn the port before serving.
//!
//! The serving loop is hyper's, driven here rather than by `axum::serve`, for the limits a
//! public service needs (`[server]`): a deadline for each request's headers
//! (`header_read_timeout`) and for the whole request (`request_timeout`, answered 408), idle
//! connections closed (`idle_timeout`), a cap on open connections beyond which requests are
//! answered 503 `overloaded` (`max_connections`), and a shutdown that lets requests in flight
//! finish but ends within `shutdown_grace` whatever the clients do.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;
use wxauth_wechat::{ClientConfig, WechatClient};

use crate::api;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ServerConfig, TokenFormat, TokensConfig};
use crate::error::ApiError;
use crate::events::delivery::Workers;
use crate::jwt::{JwtSettings, KeyRing};
use crate::state::{AppState, Inner, Lifetimes, Media};
use crate::store;
use crate::store::signing_keys::SigningKeyStore;

/// How often expired tokens and sessions are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Connections beyond `server.max_connections` that are still answered (503); past these
/// they are closed at once, so a flood costs no more than this many small tasks.
const SHED_CONNECTIONS: usize = 1024;

/// A built service, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    limits: Limits,
    webhooks: Vec<crate::config::Webhook>,
}

impl Application {
    /// Resolves the config, opens the stores (applying migrations) and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with a clock of the caller's (tests move time with it).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let resolved = config.resolve().map_err(|problems| {
            anyhow::anyhow!(
                "the configuration has problems (run `wxauth check-config`):\n- {}",
                problems.join("\n- ")
            )
        })?;
        // Bound first: a taken port is reported before anything touches the database.
        let listener = bind(config.server.listen).await?;
        let addr = listener
            .local_addr()
            .context("Failed to read the bound address")?;
        if config.database.url == crate::config::DatabaseConfig::default().url {
            tracing::warn!(
                "database.url is not set: using {} in the working directory",
                config.database.url.masked()
            );
        }
        ensure_media_dir(&config.storage.media_dir)?;
        let stores = store::connect(&config.database, &config.sessions, &resolved.data_key).await?;
        stores.sql.set_endpoints(endpoints(&resolved.webhooks));
        let wechat_config = ClientConfig {
            api_base: config.wechat.api_base.clone(),
            timeout: config.wechat.timeout,
            connect_timeout: config.wechat.connect_timeout,
            busy_retries: config.wechat.busy_retries,
            ..ClientConfig::default()
        };
        // The access-token cache is shared with every other instance through the store.
        let wechat = WechatClient::with_token_store(wechat_config, stores.wechat_tokens.clone())
            .context("Failed to build the WeChat client")?;
        let default_app = match resolved.apps.as_slice() {
            [only] => Some(only.app_id.clone()),
            _ => None,
        };
        let apps: HashMap<_, _> = resolved
            .apps
            .into_iter()
            .map(|app| (app.app_id.clone(), app))
            .collect();
        let public_url = match &config.server.public_url {
            Some(url) => url.clone(),
            None => {
                if addr.ip().is_unspecified() {
                    tracing::warn!(
                        %addr,
                        "server.public_url is not set and the listener has no single address: \
                         avatar links will not work; set server.public_url"
                    );
                }
                url::Url::parse(&format!("http://{addr}"))
                    .context("Failed to derive server.public_url")?
            }
        };
        if config.tokens.format == TokenFormat::Jwt
            && config.tokens.issuer.is_none()
            && config.server.public_url.is_none()
        {
            tracing::warn!(
                issuer = %public_url,
                "tokens.issuer and server.public_url are not set: JWTs name this instance's \
                 address as their issuer, which other instances do not accept; set \
                 server.public_url"
            );
        }
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let keys = KeyRing::load(
            SigningKeyStore::new(&stores.sql),
            resolved.data_key.clone(),
            JwtSettings {
                issuer: issuer(&config.tokens, &public_url),
                audience: config.tokens.audience.clone(),
                algorithm: config.tokens.jwt_algorithm,
                access_ttl: secs(config.tokens.access_ttl),
            },
            clock.clone(),
        )
        .await?;
        let state = AppState::new(Inner {
            apps,
            default_app,
            wechat,
            stores,
            data_key: resolved.data_key,
            clock,
            lifetimes: Lifetimes {
                access: secs(config.tokens.access_ttl),
                refresh: secs(config.tokens.refresh_ttl),
                session: secs(config.tokens.session_max_age),
                refresh_grace: secs(config.tokens.refresh_grace),
            },
            watermark_max_age: Some(config.security.watermark_max_age).filter(|d| !d.is_zero()),
            wechat_timeout: config.wechat.timeout,
            client_ip: crate::client_ip::ClientIp::new(resolved.trusted_proxies),
            keys,
            feed_wait_cap: feed_wait_cap(&config.server),
            events_retention: config.events.retention,
            token_format: config.tokens.format,
            services: crate::service::clients::ServiceClients::new(&resolved.services),
            media: Media {
                dir: config.storage.media_dir.clone(),
                max_bytes: config.storage.avatar_max_bytes,
                public_url,
            },
        });
        Ok(Self {
            listener,
            addr,
            state,
            limits: Limits::new(&config.server),
            webhooks: resolved.webhooks,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (for in-process tools and tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until Ctrl-C or SIGTERM, then finishes in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (for at most
    /// `server.shutdown_grace`).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let purge = tokio::spawn(purge_loop(self.state.clone()));
        let reload_keys = tokio::spawn(self.state.keys.clone().reload_loop());
        let deliveries = Workers::start(self.state.stores.sql.clone(), &self.webhooks)
            .map_err(std::io::Error::other)?;
        let app = api::router(self.state, self.limits.request_timeout);
        serve(self.listener, app, self.limits, shutdown).await;
        purge.abort();
        reload_keys.abort();
        // Attempts in flight end within their timeout; what is left is given back.
        let grace = self
            .webhooks
            .iter()
            .map(|hook| hook.timeout)
            .max()
            .unwrap_or_default()
            .min(self.limits.shutdown_grace);
        deliveries.shutdown(grace).await;
        Ok(())
    }
}

/// The webhook endpoints as the outbox keys their deliveries.
pub fn endpoints(webhooks: &[crate::config::Webhook]) -> Vec<store::sql::events::Endpoint> {
    webhooks
        .iter()
        .map(|hook| store::sql::events::Endpoint {
            url: hook.url.to_string(),
            types: hook.types.clone(),
        })
        .collect()
}

/// A feed call answers a second before `server.request_timeout` would cut it off.
fn feed_wait_cap(server: &ServerConfig) -> Duration {
    let cap = api::events::MAX_WAIT;
    if server.request_timeout.is_zero() {
        cap
    } else {
        cap.min(
            server
                .request_timeout
                .saturating_sub(Duration::from_secs(1)),
        )
    }
}

/// Binds the listener; a failure says which setting picks the address.
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        let why = match err.kind() {
            std::io::ErrorKind::AddrInUse => {
                "the address is already in use (by another wxauth, or another program)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)"
            }
            std::io::ErrorKind::AddrNotAvailable => "this machine has no such address",
            _ => "the address cannot be listened on",
        };
        anyhow::Error::new(err).context(format!(
            "Failed to listen on {addr}: {why}. Choose another address with server.listen in \
             the config file or the WXAUTH_SERVER__LISTEN environment variable (wxauth serve), \
             or with --listen (wxauth demo)"
        ))
    })
}

/// Creates `storage.media_dir` (and its parents) when missing, and checks that this process may
/// write there, so a wrong path or owner is reported at start and not at the first upload.
fn ensure_media_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let hint = "set storage.media_dir (WXAUTH_STORAGE__MEDIA_DIR) to a directory this user may \
                write, or create it with the right owner";
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "Failed to create the media directory {}: {hint}",
            dir.display()
        )
    })?;
    let probe = dir.join(format!(".wxauth-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "The media directory {} is not writable: {hint}",
                dir.display()
            )
        })
}

/// `[server]` as the serving loop uses it; a zero turns a limit off.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_connections: Option<usize>,
    shutdown_grace: Duration,
}

impl Limits {
    fn new(server: &ServerConfig) -> Self {
        let set = |d: Duration| Some(d).filter(|d| !d.is_zero());
        Self {
            header_read_timeout: set(server.header_read_timeout),
            request_timeout: set(server.request_timeout),
            idle_timeout: set(server.idle_timeout),
            max_connections: Some(server.max_connections).filter(|n| *n > 0),
            shutdown_grace: server.shutdown_grace,
        }
    }

    /// How long a connection may sit with nothing to do: before its first request, the
    /// header deadline applies too.
    fn quiet_limit(&self, served: bool) -> Option<Duration> {
        let before_first = if served {
            None
        } else {
            self.header_read_timeout
        };
        [before_first, self.idle_timeout]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What becomes of an accepted connection.
enum Admission {
    /// Served; holds its place under `max_connections` (if there is a limit).
    Serve(Option<OwnedSemaphorePermit>),
    /// Over the limit: every request on it is answered 503 `overloaded`.
    Shed(OwnedSemaphorePermit),
    /// Over the limit and the shedding allowance: closed at once.
    Refuse,
}

/// Accepts connections until `shutdown`, then stops accepting, lets requests in flight finish
/// within the grace period and closes whatever is left.
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let builder = http_builder(&limits);
    let mut shed_builder = builder.clone();
    shed_builder.http1().keep_alive(false);
    let open = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let shed = Arc::new(Semaphore::new(SHED_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut shedding = false;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = done
                    && err.is_panic()
                {
                    tracing::error!("a connection task panicked");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
        };
        let admission = match &open {
            None => Admission::Serve(None),
            Some(open) => match open.clone().try_acquire_owned() {
                Ok(permit) => Admission::Serve(Some(permit)),
                Err(_) => match shed.clone().try_acquire_owned() {
                    Ok(permit) => Admission::Shed(permit),
                    Err(_) => Admission::Refuse,
                },
            },
        };
        match admission {
            Admission::Serve(permit) => {
                if shedding {
                    tracing::info!("below server.max_connections again");
                    shedding = false;
                }
                let activity = Arc::new(Activity::new());
                let service = routed(app.clone(), peer, activity.clone());
                let conn = builder.serve_connection(io(stream), service).into_owned();
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    let _permit = permit;
                    run_connection(conn, &activity, limits).await;
                });
            }
            Admission::Shed(permit) => {
                if !shedding {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "at server.max_connections: answering new connections 503 overloaded"
                    );
                    shedding = true;
                }
                let activity = Arc::new(Activity::new());
                let service = overloaded(activity.clone());
                let conn = shed_builder
                    .serve_connection(io(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    let _permit = permit;
                    run_connection(conn, &activity, limits).await;
                });
            }
            Admission::Refuse => drop(stream),
        }
    }
    // No new connections from here on.
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting connections; finishing requests in flight"
    );
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            grace_ms = u64::try_from(limits.shutdown_grace.as_millis()).unwrap_or(u64::MAX),
            "server.shutdown_grace is over: closing the connections still busy"
        );
    }
    connections.shutdown().await;
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
}

fn io(stream: TcpStream) -> TokioIo<TcpStream> {
    // Answers are small: send them at once rather than waiting to fill a packet.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY");
    }
    TokioIo::new(stream)
}

/// A connection runs until it ends, or until it has been idle too long.
async fn run_connection<C>(conn: C, activity: &Activity, limits: Limits)
where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    tokio::select! {
        result = conn => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
        () = activity.quiet_for(limits) => {
            tracing::debug!("closing an idle connection");
        }
    }
}

/// Waits out a failed accept. Most failures concern one connection; running out of file
/// descriptors does not, and retrying at once would only spin.
async fn accept_failed(err: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) {
        tracing::debug!(error = %err, "a connection failed while being accepted");
        return;
    }
    tracing::warn!(error = %err, "cannot accept connections (out of file descriptors?)");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The router as hyper calls it: each request carries the peer address (for
/// `ConnectInfo<SocketAddr>`), and the connection's activity is recorded.
fn routed(
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<TrackedBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<TrackedBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let handling = activity.begin();
        let app = app.clone();
        let activity = activity.clone();
        async move {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = app
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {});
            drop(handling);
            Ok(track(response, activity))
        }
    })
}

/// What connections over the limit are answered: 503 `overloaded`, and the connection closed.
fn overloaded(
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<TrackedBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<TrackedBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |_request: hyper::Request<Incoming>| {
        let handling = activity.begin();
        let activity = activity.clone();
        async move {
            drop(handling);
            Ok(track(api::edge_response(ApiError::Overloaded), activity))
        }
    })
}

fn track(response: Response, activity: Arc<Activity>) -> hyper::Response<TrackedBody> {
    response.map(|inner| TrackedBody { inner, activity })
}

/// When a connection last did something, and whether a request is being handled on it.
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when a request has been handled, to start counting idle time.
    handled: Notify,
}

#[derive(Debug, Clone, Copy)]
struct ActivityState {
    /// Requests on this connection whose handler is running.
    handling: usize,
    /// The last time a request arrived or was answered, or a piece of an answer was sent.
    last: Instant,
    /// Whether any request arrived yet.
    served: bool,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                handling: 0,
                last: Instant::now(),
                served: false,
            }),
            handled: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut ActivityState)) -> ActivityState {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut state);
        *state
    }

    fn begin(self: &Arc<Self>) -> Handling {
        self.update(|s| {
            s.handling += 1;
            s.served = true;
            s.last = Instant::now();
        });
        Handling(self.clone())
    }

    fn touch(&self) {
        self.update(|s| s.last = Instant::now());
    }

    /// Completes once the connection has been quiet (no handler running, nothing sent) for
    /// its limit; never, when there is none.
    async fn quiet_for(&self, limits: Limits) {
        loop {
            // Registered before reading the state, so a request finishing in between is seen.
            let mut handled = pin!(self.handled.notified());
            handled.as_mut().enable();
            let state = self.update(|_| {});
            let Some(limit) = limits.quiet_limit(state.served) else {
                return std::future::pending().await;
            };
            if state.handling > 0 {
                handled.await;
                continue;
            }
            let deadline = state.last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = handled => {}
            }
        }
    }
}

/// A request being handled; dropped when its answer is ready (or the request is abandoned).
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.update(|s| {
            s.handling = s.handling.saturating_sub(1);
            s.last = Instant::now();
        });
        self.0.handled.notify_waiters();
    }
}

/// A response body that records progress, so a download that is moving is not idle while
/// one the client stopped reading is.
struct TrackedBody {
    inner: Body,
    activity: Arc<Activity>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_ready() {
            this.activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `tokens.issuer`, or the public URL without its trailing slash.
pub fn issuer(tokens: &TokensConfig, public_url: &url::Url) -> String {
    match &tokens.issuer {
        Some(issuer) => issuer.trim().to_owned(),
        None => public_url.as_str().trim_end_matches('/').to_owned(),
    }
}

async fn purge_loop(state: AppState) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        interval.tick().await;
        let now = state.now();
        // A session's refresh tokens all end within refresh_ttl of its last rotation.
        let idle_before = now - state.lifetimes.refresh;
        match state.stores.sessions.purge_expired(now, idle_before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "purged expired tokens and sessions"),
            Err(err) => tracing::warn!(error = %err, "could not purge expired sessions"),
        }
        let retention = i64::try_from(state.events_retention.as_millis()).unwrap_or(i64::MAX);
        let before = store::sql::events::wall_ms().saturating_sub(retention);
        match state.stores.sql.purge_events(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "purged events past events.retention"),
            Err(err) => tracing::warn!(error = %err, "could not purge old events"),
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
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
