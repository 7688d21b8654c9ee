//! The command line: `wxauth demo | serve | migrate | check-config | sim | gen-key`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::clock::{Clock as _, SystemClock};
use crate::config::Config;
use crate::seal::DataKey;
use crate::startup::Application;
use crate::{admin, demo, store, telemetry};

/// Login and identity service for WeChat Mini Programs.
#[derive(Debug, Parser)]
#[command(name = "wxauth", version, about)]
pub struct Cli {
    /// The TOML config file (default: ./wxauth.toml when present). Environment variables
    /// WXAUTH_<SECTION>__<KEY> override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service with a built-in WeChat simulator and SQLite, and print a walkthrough.
    Demo {
        /// Address for the API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo keeps its data.
        #[arg(long, default_value = demo::DEMO_DATABASE_URL)]
        database: String,
        /// Address for the built-in WeChat simulator (another free port is used if taken).
        #[arg(long, default_value = "127.0.0.1:8081")]
        sim_listen: SocketAddr,
    },
    /// Run the service.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Check the configuration and explain every problem.
    CheckConfig,
    /// Run the WeChat simulator alone.
    Sim(wechat_sim::Args),
    /// Print a new random data key (base64 of 32 bytes) for security.data_key.
    GenKey,
    /// Revoke every session of a user (in every mini program) at once.
    RevokeSessions {
        /// The user's id (as `GET /v1/me` shows it).
        #[arg(long)]
        user: String,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::GenKey = cli.command {
        println!("{}", DataKey::generate_encoded());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo {
            listen,
            database,
            sim_listen,
        } => {
            demo::run(listen, database, sim_listen).await?;
        }
        Command::Serve => {
            let config = load(cli.config)?;
            telemetry::init(&config.log);
            let app = Application::build(config).await?;
            tracing::info!(addr = %app.local_addr(), "wxauth listening");
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let config = load(cli.config)?;
            telemetry::init(&config.log);
            store::migrate(&config.database).await?;
            println!("migrations applied to {}", config.database.url.masked());
        }
        Command::CheckConfig => return Ok(check_config(cli.config)),
        Command::Sim(args) => {
            telemetry::init(&crate::config::LogConfig::default());
            wechat_sim::run(args).await?;
        }
        Command::GenKey => println!("{}", DataKey::generate_encoded()),
        Command::RevokeSessions { user } => {
            let config = load(cli.config)?;
            telemetry::init(&config.log);
            let resolved = config.resolve().map_err(|problems| {
                anyhow::anyhow!(
                    "the configuration has problems:\n- {}",
                    problems.join("\n- ")
                )
            })?;
            let stores =
                store::connect(&config.database, &config.sessions, &resolved.data_key).await?;
            match admin::revoke_user_sessions(&stores, &user, SystemClock.now()).await? {
                Some(n) => println!("revoked {n} session(s) of user {user}"),
                None => {
                    eprintln!("no user with id {user}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load(file: Option<PathBuf>) -> anyhow::Result<Config> {
    Config::load(file.as_deref()).map_err(|problem| {
        anyhow::anyhow!("cannot read the configuration:\n{problem}\n(run `wxauth check-config`)")
    })
}

fn check_config(file: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(file.as_deref()) {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("The configuration cannot be read:\n- {problem}");
            return ExitCode::from(2);
        }
    };
    match config.resolve() {
        Ok(resolved) => {
            println!("The configuration is valid.");
            println!("  listen:      {}", config.server.listen);
            println!("  database:    {}", config.database.url.masked());
            println!("  wechat:      {}", config.wechat.api_base);
            let ids: Vec<_> = resolved.apps.iter().map(|a| a.app_id.to_string()).collect();
            println!("  apps:        {}", ids.join(", "));
            println!(
                "  tokens:      access {}, refresh {}, session at most {}",
                humantime::format_duration(config.tokens.access_ttl),
                humantime::format_duration(config.tokens.refresh_ttl),
                humantime::format_duration(config.tokens.session_max_age)
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("The configuration has {} problem(s):", problems.len());
            for problem in problems {
                eprintln!("- {problem}");
            }
            ExitCode::FAILURE
        }
    }
}
