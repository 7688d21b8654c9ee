//! `wxauth-bench`: an on-demand load benchmark of the real service.
//!
//! It starts the WeChat simulator and `wxauth::Application` in this process, each on a
//! loopback port 0, against the storage chosen on the command line, then drives them over real
//! HTTP with concurrent clients for a fixed time per scenario and prints throughput and
//! latency percentiles. The simulator's cost is included in the figures.
//!
//! # Layout
//! - `stack`: starting and stopping the simulator and the service.
//! - `load`: the scenarios and the clients that run them.
//! - `report`: recorded durations → percentiles → a table or JSON.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde_json::Value;

mod load;
mod report;
mod stack;

use load::{Load, Scenario};
use report::Summary;
use stack::{Stack, Storage};

/// Measure wxauth's login, profile and refresh endpoints under concurrent load.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The database: sqlite://FILE, or the URL of an existing, empty MySQL/MariaDB or
    /// PostgreSQL database. Default: a SQLite file in a temp directory.
    #[arg(long)]
    database_url: Option<String>,
    /// Keep sessions in this Redis (under a unique key prefix) instead of the database.
    #[arg(long)]
    redis_url: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Users in the pool: returning users for login, logged-in users for me.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    users: u64,
    /// Most timed requests per scenario, whatever the time left.
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..=50_000_000))]
    max_requests: u64,
    /// The service's database pool size (`database.max_connections`).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_connections: u32,
    /// Access tokens as "opaque" (the default) or "jwt".
    #[arg(long, default_value = "opaque", value_parser = ["opaque", "jwt"])]
    token_format: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!(
            "wxauth-bench: this is a debug build; use `cargo run --release` for real figures"
        );
    }
    let stack = Stack::start(Storage {
        database_url: args.database_url.clone(),
        redis_url: args.redis_url.clone(),
        max_connections: args.max_connections,
        token_format: if args.token_format == "jwt" {
            wxauth::config::TokenFormat::Jwt
        } else {
            wxauth::config::TokenFormat::Opaque
        },
    })
    .await?;
    let concurrency = usize::from(args.concurrency);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .context("Failed to build the HTTP client")?;
    let load = Arc::new(Load {
        http,
        api: stack.api.clone(),
        sim: stack.sim.clone(),
        app_id: stack.app_id.to_owned(),
        concurrency,
        duration: Duration::from_secs(args.seconds),
        max_requests: args.max_requests,
        users: args.users,
        service: (
            stack::BENCH_SERVICE.0.to_owned(),
            stack::BENCH_SERVICE.1.to_owned(),
        ),
    });

    let mut summaries = Vec::new();
    for scenario in args.scenario.expand() {
        if !args.json {
            eprintln!(
                "wxauth-bench: running {} for {} s…",
                scenario.name(),
                args.seconds
            );
        }
        let (tally, wall) = load::run(&load, scenario)
            .await
            .with_context(|| format!("The {} scenario failed", scenario.name()))?;
        summaries.push(Summary::new(scenario.name(), tally, wall));
    }

    let header = header(&args, &stack);
    // Connections must be idle-closed before the service's graceful shutdown can finish.
    drop(load);
    stack.stop().await?;
    if args.json {
        let json = report::json(&header, &summaries);
        println!(
            "{}",
            serde_json::to_string_pretty(&json).context("Failed to write the JSON report")?
        );
    } else {
        print!("{}", report::table(&header, &summaries));
    }
    Ok(())
}

/// What the run was, for the report.
fn header(args: &Args, stack: &Stack) -> Vec<(&'static str, Value)> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        ("database", Value::from(stack.database.as_str())),
        (
            "sessions",
            Value::from(match &stack.redis {
                Some((_, prefix)) => format!("redis (prefix {prefix})"),
                None => "sql".to_owned(),
            }),
        ),
        ("concurrency", Value::from(args.concurrency)),
        ("seconds", Value::from(args.seconds)),
        ("users", Value::from(args.users)),
        ("pool", Value::from(args.max_connections)),
        ("cpus", Value::from(cpus)),
        (
            "build",
            Value::from(if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }),
        ),
    ]
}
