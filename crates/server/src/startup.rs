//! Building and running the service: `Application::build(config)` binds its own listener
//! (port 0 in tests), so callers learn the port before serving.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use wxauth_wechat::{ClientConfig, WechatClient};

use crate::api;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, TokensConfig};
use crate::jwt::{JwtSettings, KeyRing};
use crate::state::{AppState, Inner, Lifetimes, Media};
use crate::store;
use crate::store::signing_keys::SigningKeyStore;

/// How often expired tokens and sessions are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// A built service, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
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
        if config.database.url == crate::config::DatabaseConfig::default().url {
            tracing::warn!(
                "database.url is not set: using {} in the working directory",
                config.database.url.masked()
            );
        }
        let stores = store::connect(&config.database, &config.sessions, &resolved.data_key).await?;
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
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("Failed to listen on {}", config.server.listen))?;
        let addr = listener
            .local_addr()
            .context("Failed to read the bound address")?;
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
            },
            watermark_max_age: Some(config.security.watermark_max_age).filter(|d| !d.is_zero()),
            wechat_timeout: config.wechat.timeout,
            client_ip: crate::client_ip::ClientIp::new(resolved.trusted_proxies),
            keys,
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

    /// Serves until `shutdown` completes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let purge = tokio::spawn(purge_loop(self.state.clone()));
        let reload_keys = tokio::spawn(self.state.keys.clone().reload_loop());
        let app = api::router(self.state);
        let result = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        purge.abort();
        reload_keys.abort();
        result
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
