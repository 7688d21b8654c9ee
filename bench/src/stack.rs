//! The system under test: the WeChat simulator and the real `wxauth::Application`, both on
//! port 0 in this process, with the storage the command line chose.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimConfig, SimHandle};
use wxauth::Application;
use wxauth::config::{
    AppConfig, Config, DatabaseUrl, LimitsConfig, LogConfig, LogFormat, Rate, ServiceConfig,
    SessionStoreKind, TokenFormat,
};

/// A data key for the benchmark only: it seals simulated session_keys in a throwaway database.
/// The service credential the introspection scenario uses (name, secret).
pub const BENCH_SERVICE: (&str, &str) = ("bench", "bench-only-service-secret");
const BENCH_DATA_KEY: &str = "YmVuY2gtb25seS1kYXRhLWtleS1ub3QtZm9yLXByb2Q=";

/// Token lifetimes long enough that nothing expires during a run (at most 3 scenarios of 10
/// minutes), short enough that what an interrupted run leaves in Redis expires within the hour.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Where the service keeps its data.
pub struct Storage {
    /// `sqlite://…`, `mysql://…` or `postgres://…`; `None` for a SQLite file in a temp dir.
    pub database_url: Option<String>,
    /// Redis for sessions, when given.
    pub redis_url: Option<String>,
    /// Most database connections in the service's pool.
    pub max_connections: u32,
    /// Opaque or JWT access tokens.
    pub token_format: TokenFormat,
}

/// The running simulator and service.
pub struct Stack {
    /// The service's base URL.
    pub api: String,
    /// The simulator's base URL.
    pub sim: String,
    /// The mini program users log in to.
    pub app_id: &'static str,
    /// The database, as shown (password masked).
    pub database: String,
    /// Redis (URL, key prefix), when sessions are in Redis.
    pub redis: Option<(String, String)>,
    sim_handle: SimHandle,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    // Holds the SQLite file and the media directory until the stack is dropped.
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the simulator, then the service pointed at it, quietly (log level warn unless
    /// `RUST_LOG` says otherwise).
    pub async fn start(storage: Storage) -> anyhow::Result<Self> {
        wxauth::telemetry::init(&LogConfig {
            level: "warn".to_owned(),
            format: LogFormat::Text,
        });
        let dir = tempfile::tempdir().context("Failed to create a temp directory")?;

        let sim_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("Failed to bind the simulator")?;
        let sim_handle = wechat_sim::spawn(SimConfig::default(), sim_listener)
            .await
            .context("Failed to start the simulator")?;
        let sim = sim_handle.base_url();

        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().context("loopback address")?;
        let database_url = storage
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
        config.database.url = DatabaseUrl::from(database_url.as_str());
        config.database.max_connections = storage.max_connections;
        config.storage.media_dir = dir.path().join("media");
        config.wechat.api_base = sim.parse().context("Failed to parse the simulator URL")?;
        config.security.data_key = Some(SecretString::from(BENCH_DATA_KEY));
        config.tokens.access_ttl = TOKEN_TTL;
        config.tokens.refresh_ttl = TOKEN_TTL;
        config.tokens.session_max_age = TOKEN_TTL;
        config.tokens.format = storage.token_format;
        config.services = vec![ServiceConfig {
            name: BENCH_SERVICE.0.to_owned(),
            secret: Some(SecretString::from(BENCH_SERVICE.1)),
            secret_file: None,
            secret_env: None,
        }];
        config.apps = vec![AppConfig {
            app_id: DEMO_APP_ID.to_owned(),
            secret: Some(SecretString::from(DEMO_APP_SECRET)),
            secret_file: None,
            secret_env: None,
        }];
        // Every client is 127.0.0.1 and the load is far beyond one app's: the limits stay on,
        // so that their cost is in the figures, but never refuse.
        config.limits =
            LimitsConfig::all(Rate::per(1_000_000_000, std::time::Duration::from_secs(1)));
        let redis = storage.redis_url.map(|url| {
            let prefix = unique_prefix();
            config.sessions.store = SessionStoreKind::Redis;
            config.sessions.redis_url = Some(DatabaseUrl::from(url.as_str()));
            config.sessions.key_prefix = prefix.clone();
            (url, prefix)
        });

        let app = Application::build(config)
            .await
            .with_context(|| format!("Failed to start wxauth on {}", mask(&database_url)))?;
        let api = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            api,
            sim,
            app_id: DEMO_APP_ID,
            database: mask(&database_url),
            redis,
            sim_handle,
            stop,
            server,
            _dir: dir,
        })
    }

    /// Stops the service and the simulator (each given a few seconds to finish), then deletes
    /// the run's Redis keys.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let grace = Duration::from_secs(5);
        match tokio::time::timeout(grace, self.server).await {
            Ok(joined) => joined
                .context("The service task panicked")?
                .context("The service failed")?,
            Err(_) => eprintln!("wxauth-bench: the service did not stop within {grace:?}"),
        }
        if tokio::time::timeout(grace, self.sim_handle.shutdown())
            .await
            .is_err()
        {
            eprintln!("wxauth-bench: the simulator did not stop within {grace:?}");
        }
        if let Some((url, prefix)) = &self.redis {
            delete_keys(url, prefix)
                .await
                .with_context(|| format!("Failed to delete the Redis keys under {prefix}"))?;
        }
        Ok(())
    }
}

/// Deletes every key under `prefix` (a run leaves tens of thousands of sessions behind).
async fn delete_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url).context("Failed to parse the Redis URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("Failed to connect to Redis")?;
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn mask(url: &str) -> String {
    DatabaseUrl::from(url).masked()
}

/// A Redis key prefix no other run (or deployment) uses.
fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("wxauth:bench:{}-{nanos}:", std::process::id())
}
