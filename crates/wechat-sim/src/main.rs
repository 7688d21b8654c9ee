//! The `wechat-sim` binary: the simulator on its own, for local development and demos.

use clap::Parser as _;

/// A stand-in for WeChat's Mini Program server API, with a control API under /sim/.
#[derive(clap::Parser, Debug)]
#[command(name = "wechat-sim", version, about)]
struct Cli {
    #[command(flatten)]
    args: wechat_sim::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    wechat_sim::run(Cli::parse().args).await
}
