//! The command line: `wxauth demo | serve | migrate | check-config | sim | gen-key |
//! gen-secret | gen-admin-key | gen-webhook-secret | revoke-sessions | keys | events |
//! import django`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clock::{Clock as _, SystemClock, rfc3339};
use crate::config::{Config, DatabaseConfig, DatabaseUrl, SessionStoreKind, duration, is_app_id};
use crate::seal::DataKey;
use crate::service::admins::NewAdminKey;
use crate::startup::Application;
use crate::store::check;
use crate::store::signing_keys::{SigningKeyStore, StoredKey};
use crate::{admin, demo, import, jwt, store, telemetry};

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
        /// Send the demo's events to this webhook endpoint (see docs/events.md).
        #[arg(long, value_name = "URL", requires = "webhook_secret")]
        webhook: Option<url::Url>,
        /// The webhook's signing secret (`wxauth gen-webhook-secret`).
        #[arg(long, value_name = "WHSEC", requires = "webhook")]
        webhook_secret: Option<String>,
    },
    /// Run the service.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Check the configuration, connect to the database and Redis, and explain every problem.
    CheckConfig {
        /// Check the configuration only: do not connect to the database or Redis.
        #[arg(long)]
        offline: bool,
    },
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
    /// Print a new random service secret (base64url of 32 bytes, no padding) for a
    /// [[services]] entry.
    GenSecret,
    /// Print a new admin key (for the operator) and the [[admins]] entry with its hash (for
    /// the configuration). The key itself is stored nowhere.
    GenAdminKey {
        /// The operator's name, as the audit log will record it.
        #[arg(long, default_value = "admin", value_parser = admin_name)]
        name: String,
    },
    /// Seal every stored secret (session_keys, signing keys, WeChat tokens) again under the
    /// current security.data_key, opening them with security.previous_data_keys; afterwards
    /// the previous keys can be removed from the configuration.
    RotateDataKey,
    /// Print a new random webhook signing secret (whsec_ and base64 of 32 bytes) for a
    /// [[webhooks]] entry.
    GenWebhookSecret,
    /// The event outbox and its webhook deliveries.
    Events {
        /// What to do.
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The JWT signing keys.
    Keys {
        /// What to do with them.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Bring users over from another backend into wxauth's database.
    #[command(subcommand)]
    Import(ImportCommand),
}

/// Where `wxauth import` reads users from.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// The user table of a Django backend (the Wxuser model, a User extending AbstractUser,
    /// or a User with open_id): each row becomes a person with an identity in the app.
    /// Openids the app has already are skipped, so it can run again.
    Django(DjangoArgs),
}

/// `wxauth import django` options.
#[derive(Debug, clap::Args)]
pub struct DjangoArgs {
    /// The Django database: sqlite://FILE (opened read-only), mysql://USER:PASS@HOST/DB or
    /// postgres://USER:PASS@HOST/DB.
    #[arg(long = "from", value_name = "URL", value_parser = database_url)]
    pub from: DatabaseUrl,
    /// The mini program whose openids the table holds.
    #[arg(long, value_name = "APP_ID")]
    pub app_id: String,
    /// The user table (default: the one table that looks like a Django user table).
    #[arg(long)]
    pub table: Option<String>,
    /// Which column fills which field, FIELD=COLUMN (FIELD= leaves a field out). Fields: key,
    /// openid, nickname, avatar_url, gender, city, province, country, language, phone,
    /// created_at, extra.NAME.
    #[arg(long, value_name = "FIELD=COLUMN,...", value_delimiter = ',')]
    pub map: Vec<String>,
    /// Django's MEDIA_URL, e.g. https://example.com/media/: avatar file paths (ImageField)
    /// become URLs under it; without it they are left out.
    #[arg(long, value_name = "URL")]
    pub media_url: Option<url::Url>,
    /// Read and check every row and print the summary, but write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wxauth events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Show the newest events and where each webhook delivery stands.
    List {
        /// Only events with a delivery that failed (retried for retry_for without a 2xx).
        #[arg(long)]
        failed: bool,
        /// How many events at most.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send an event again to every configured webhook (with its original webhook-id), or
    /// every failed delivery.
    Redeliver {
        /// The event id (as `wxauth events list` shows it).
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<String>,
        /// Every failed delivery instead.
        #[arg(long)]
        failed: bool,
    },
}

/// `wxauth keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new current signing key (of tokens.jwt_algorithm); the old one stays published
    /// until every token it signed has expired.
    Rotate,
    /// Show the signing keys: kid, algorithm, when made, current or retiring (until when).
    List,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(refusal) = config_not_read(&cli) {
        eprintln!("error: {refusal}");
        return ExitCode::from(2);
    }
    match &cli.command {
        Command::GenKey => {
            println!("{}", DataKey::generate_encoded());
            return ExitCode::SUCCESS;
        }
        Command::GenSecret => {
            println!("{}", generate_service_secret());
            return ExitCode::SUCCESS;
        }
        Command::GenAdminKey { name } => {
            print!("{}", admin_key_text(name, &NewAdminKey::generate()));
            return ExitCode::SUCCESS;
        }
        Command::GenWebhookSecret => {
            println!("{}", crate::events::delivery::generate_secret());
            return ExitCode::SUCCESS;
        }
        _ => {}
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

/// `--config` is global, but `demo`, `sim` and `gen-key` read no configuration: saying so beats
/// silently running with settings other than the ones the file holds.
fn config_not_read(cli: &Cli) -> Option<String> {
    let file = cli.config.as_ref()?;
    let (command, instead) = match cli.command {
        Command::Demo { .. } => (
            "demo",
            "it runs with its own settings (a built-in simulator, SQLite and a demo key); \
             its options are --listen, --database, --sim-listen and --webhook. To run with \
             this file, \
             use `wxauth --config FILE serve`",
        ),
        Command::Sim(_) => (
            "sim",
            "the simulator takes its settings as options (see `wxauth sim --help`)",
        ),
        Command::GenKey => ("gen-key", "it only prints a new random key"),
        Command::GenSecret => ("gen-secret", "it only prints a new random service secret"),
        Command::GenAdminKey { .. } => ("gen-admin-key", "it only prints a new admin key"),
        Command::GenWebhookSecret => (
            "gen-webhook-secret",
            "it only prints a new random webhook secret",
        ),
        _ => return None,
    };
    Some(format!(
        "`wxauth {command}` reads no configuration file, so --config {} would be ignored: \
         {instead}",
        file.display()
    ))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo {
            listen,
            database,
            sim_listen,
            webhook,
            webhook_secret,
        } => {
            let webhook = webhook.zip(webhook_secret);
            demo::run(listen, database, sim_listen, webhook).await?;
        }
        Command::Serve => {
            let config = load(cli.config)?;
            telemetry::init(&config.log);
            let app = Application::build(config).await?;
            match app.metrics_addr() {
                Some(metrics_addr) => {
                    tracing::info!(addr = %app.local_addr(), %metrics_addr, "wxauth listening");
                }
                None => tracing::info!(addr = %app.local_addr(), "wxauth listening"),
            }
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let config = load(cli.config)?;
            telemetry::init(&config.log);
            store::migrate(&config.database).await?;
            println!("migrations applied to {}", config.database.url.masked());
        }
        Command::CheckConfig { offline } => return Ok(check_config(cli.config, offline).await),
        Command::Sim(args) => {
            telemetry::init(&crate::config::LogConfig::default());
            wechat_sim::run(args).await?;
        }
        Command::GenKey => println!("{}", DataKey::generate_encoded()),
        Command::GenSecret => println!("{}", generate_service_secret()),
        Command::GenAdminKey { name } => {
            print!("{}", admin_key_text(&name, &NewAdminKey::generate()));
        }
        Command::GenWebhookSecret => println!("{}", crate::events::delivery::generate_secret()),
        Command::Events { command } => {
            let config = load(cli.config)?;
            telemetry::init(&config.log);
            return events_command(&config, command).await;
        }
        Command::Keys { command } => {
            let config = load(cli.config)?;
            telemetry::init(&config.log);
            let resolved = config.resolve().map_err(|problems| {
                anyhow::anyhow!(
                    "the configuration has problems:\n- {}",
                    problems.join("\n- ")
                )
            })?;
            let sql = store::sql::SqlStore::connect(&config.database).await?;
            let keys = SigningKeyStore::new(&sql);
            let now = SystemClock.now();
            match command {
                KeysCommand::Rotate => {
                    let access_ttl =
                        i64::try_from(config.tokens.access_ttl.as_secs()).unwrap_or(i64::MAX);
                    let retire_after = jwt::retire_after(now, access_ttl);
                    let algorithm = config.tokens.jwt_algorithm;
                    let kid = jwt::rotate(&keys, &resolved.data_key, algorithm, now, retire_after)
                        .await?;
                    say(&format!(
                        "made the signing key {kid} ({algorithm}); it signs from now on\n\
                         older keys stay published until {} at the latest; running instances \
                         switch within {}\n",
                        rfc3339(retire_after),
                        humantime::format_duration(jwt::RELOAD_EVERY)
                    ));
                }
                KeysCommand::List => say(&key_table(&keys.all().await?, now)),
            }
        }
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
        Command::RotateDataKey => {
            let config = load(cli.config)?;
            telemetry::init(&config.log);
            let resolved = config.resolve().map_err(|problems| {
                anyhow::anyhow!(
                    "the configuration has problems:\n- {}",
                    problems.join("\n- ")
                )
            })?;
            let key = &resolved.data_key;
            let stores = store::connect(&config.database, &config.sessions, key).await?;
            let report = store::reseal::reseal_all(&stores, key).await?;
            println!("sealed again under data key {}:", key.id());
            let mut unreadable = 0;
            for place in &report {
                println!(
                    "  {:<26} {} sealed again, {} current already{}",
                    place.place,
                    place.resealed,
                    place.current,
                    match place.unreadable {
                        0 => String::new(),
                        n => format!(", {n} opened by no configured key"),
                    }
                );
                unreadable += place.unreadable;
            }
            if unreadable > 0 {
                eprintln!(
                    "warning: {unreadable} value(s) were sealed by a key that is not configured \
                     (not security.data_key nor security.previous_data_keys): they were left as \
                     they are and cannot be opened"
                );
            } else {
                println!(
                    "Every stored secret is sealed under the current key: \
                     security.previous_data_keys can be removed."
                );
            }
        }
        Command::Import(ImportCommand::Django(args)) => {
            let config = load(cli.config)?;
            return import_django(&config, args).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A URL kept in a type whose `Debug` hides its password.
fn database_url(value: &str) -> Result<DatabaseUrl, String> {
    Ok(DatabaseUrl::from(value))
}

/// Exit status of an import that finished but left rows out (they are listed).
const IMPORT_HAD_INVALID_ROWS: u8 = 3;

async fn import_django(config: &Config, args: DjangoArgs) -> anyhow::Result<ExitCode> {
    // The value is not echoed: a pasted AppSecret would end up on the screen.
    if !is_app_id(&args.app_id) {
        anyhow::bail!("--app-id must be an AppID: wx followed by 16 hexadecimal characters");
    }
    let app_id = wxauth_wechat::AppId::parse(args.app_id.as_str())
        .map_err(|err| anyhow::anyhow!("--app-id: {err}"))?;
    let options = import::DjangoImport {
        from: args.from,
        app_id,
        table: args.table,
        map: args.map,
        media_url: args.media_url,
        dry_run: args.dry_run,
    };
    let summary = import::run(config, &options, SystemClock.now()).await?;
    print!("{summary}");
    Ok(if summary.invalid > 0 {
        ExitCode::from(IMPORT_HAD_INVALID_ROWS)
    } else {
        ExitCode::SUCCESS
    })
}

/// An operator's name fit to be written into the TOML entry as it is.
fn admin_name(value: &str) -> Result<String, String> {
    let name = value.trim();
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(
            "the name must be non-empty, without quotes, backslashes or control \
                    characters"
                .to_owned(),
        );
    }
    Ok(name.to_owned())
}

/// What `wxauth gen-admin-key` prints: the key on a line of its own, then the entry to paste.
fn admin_key_text(name: &str, new: &NewAdminKey) -> String {
    format!(
        "# The admin key, for the operator (send it as Authorization: Bearer <key>). Only its\n\
         # hash is kept: it cannot be shown again.\n\
         {key}\n\
         # Add to the configuration:\n\
         [[admins]]\n\
         name = \"{name}\"\n\
         key_hash = \"{hash}\"\n",
        key = new.key,
        hash = new.key_hash,
    )
}

async fn events_command(config: &Config, command: EventsCommand) -> anyhow::Result<ExitCode> {
    let webhooks = config.resolve_webhooks().map_err(|problems| {
        anyhow::anyhow!(
            "the configuration has problems:\n- {}",
            problems.join("\n- ")
        )
    })?;
    let sql = store::sql::SqlStore::connect(&config.database).await?;
    sql.set_endpoints(crate::startup::endpoints(&webhooks));
    match command {
        EventsCommand::List { failed, limit } => {
            say(&event_table(&sql.list_events(failed, limit.max(1)).await?));
        }
        EventsCommand::Redeliver { id: Some(id), .. } => {
            if !sql.redeliver(&id).await? {
                eprintln!("no event with id {id} (events are kept for events.retention)");
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "event {id} queued again for {} webhook(s); running instances send it",
                webhooks.len()
            );
        }
        EventsCommand::Redeliver { id: None, .. } => {
            let n = sql.redeliver_failed().await?;
            println!("{n} failed deliver(ies) queued again; running instances send them");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `wxauth events list`: one line per event, newest first, each delivery under it.
fn event_table(
    events: &[(
        store::sql::events::StoredEvent,
        Vec<store::sql::events::DeliveryRow>,
    )],
) -> String {
    if events.is_empty() {
        return "no events\n".to_owned();
    }
    let mut out = format!("{:36}  {:16}  {:20}  USER\n", "ID", "TYPE", "OCCURRED");
    for (event, deliveries) in events {
        out.push_str(&format!(
            "{:36}  {:16}  {:20}  {}\n",
            event.id,
            event.kind,
            rfc3339(event.occurred_at),
            event.user_id
        ));
        for d in deliveries {
            let error = d
                .last_error
                .as_deref()
                .map(|e| format!(", last: {e}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "    -> {}  {} ({} attempt(s){error})\n",
                DatabaseUrl::from(d.endpoint.as_str()).masked(),
                d.state,
                d.attempts
            ));
        }
    }
    out
}

/// 32 random bytes, base64url without padding.
fn generate_service_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// `wxauth keys list`: one line per key, newest first.
fn key_table(keys: &[StoredKey], now: i64) -> String {
    if keys.is_empty() {
        return "no signing keys yet: the service makes one when it first starts\n".to_owned();
    }
    let width = keys.iter().map(|k| k.kid.len()).max().unwrap_or(0).max(3);
    let mut out = format!(
        "{:width$}  {:9}  {:20}  STATUS\n",
        "KID", "ALGORITHM", "CREATED"
    );
    for key in keys {
        let status = match key.retire_after {
            None => "current".to_owned(),
            Some(at) if at > now => format!("retiring, published until {}", rfc3339(at)),
            Some(at) => format!("retired at {}", rfc3339(at)),
        };
        out.push_str(&format!(
            "{:width$}  {:9}  {:20}  {status}\n",
            key.kid,
            key.algorithm,
            rfc3339(key.created_at)
        ));
    }
    out
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
fn say(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn load(file: Option<PathBuf>) -> anyhow::Result<Config> {
    Config::load(file.as_deref()).map_err(|problem| {
        anyhow::anyhow!("cannot read the configuration:\n{problem}\n(run `wxauth check-config`)")
    })
}

async fn check_config(file: Option<PathBuf>, offline: bool) -> ExitCode {
    let config = match Config::load(file.as_deref()) {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("The configuration cannot be read:\n- {problem}");
            return ExitCode::from(2);
        }
    };
    let resolved = config.resolve();
    let data_key = resolved.as_ref().ok().map(|r| r.data_key.clone());
    let mut problems = resolved.err().unwrap_or_default();
    let mut warnings = Vec::new();
    let mut facts: Vec<(&str, String)> = vec![("listen", config.server.listen.to_string())];
    if config.database.url == DatabaseConfig::default().url {
        warnings.push(format!(
            "database.url is not set: {} in the working directory is used",
            config.database.url.masked()
        ));
    }

    let mut take = |report: check::Report, facts: &mut Vec<_>| {
        facts.extend(report.facts);
        problems.extend(report.problems);
        warnings.extend(report.warnings);
    };
    if offline {
        facts.push((
            "database",
            format!("{} (not checked: --offline)", config.database.url.masked()),
        ));
    } else {
        take(check::database(&config.database).await, &mut facts);
    }
    match (config.sessions.store, &config.sessions.redis_url) {
        (SessionStoreKind::Sql, _) => facts.push((
            "sessions",
            "in the database (sessions.store = \"sql\")".to_owned(),
        )),
        (SessionStoreKind::Redis, Some(url)) if offline => facts.push((
            "sessions",
            format!("redis {} (not checked: --offline)", url.masked()),
        )),
        (SessionStoreKind::Redis, None) => {
            facts.push(("sessions", "redis (sessions.redis_url not set)".to_owned()));
        }
        (SessionStoreKind::Redis, Some(_)) => {
            take(check::redis(&config.sessions).await, &mut facts);
        }
    }

    facts.push(("wechat", config.wechat.api_base.to_string()));
    let ids: Vec<_> = config
        .apps
        .iter()
        .map(|a| a.app_id.as_str())
        .filter(|id| is_app_id(id))
        .collect();
    facts.push(("apps", ids.join(", ")));
    let hooks: Vec<_> = config
        .webhooks
        .iter()
        .map(|h| DatabaseUrl::from(h.url.as_str()).masked())
        .collect();
    facts.push((
        "webhooks",
        if hooks.is_empty() {
            "none (events only in the feed, GET /v1/events)".to_owned()
        } else {
            hooks.join(", ")
        },
    ));
    facts.push((
        "events",
        format!("kept {}", duration::format(config.events.retention)),
    ));
    let tokens = &config.tokens;
    facts.push((
        "tokens",
        format!(
            "access {}, refresh {}, session at most {}",
            duration::format(tokens.access_ttl),
            duration::format(tokens.refresh_ttl),
            duration::format(tokens.session_max_age)
        ),
    ));

    let admins: Vec<_> = config.admins.iter().map(|a| a.name.trim()).collect();
    facts.push((
        "admins",
        if admins.is_empty() {
            "none: the admin API refuses every request".to_owned()
        } else {
            admins.join(", ")
        },
    ));
    facts.push((
        "audit",
        format!("entries kept {}", duration::format(config.audit.retention)),
    ));
    if let Some(key) = data_key {
        let previous: Vec<&str> = key.previous_ids().collect();
        facts.push((
            "data key",
            match previous.as_slice() {
                [] => format!("id {}", key.id()),
                ids => format!(
                    "id {}; previous (open only) {}: run `wxauth rotate-data-key`, then remove them",
                    key.id(),
                    ids.join(", ")
                ),
            },
        ));
    }

    let valid = problems.is_empty();
    if valid {
        println!("The configuration is valid.");
    } else {
        eprintln!("The configuration has {} problem(s):", problems.len());
        for problem in &problems {
            eprintln!("- {problem}");
        }
    }
    for (label, text) in facts {
        println!("  {:<12} {text}", format!("{label}:"));
    }
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn a_service_secret_is_32_random_bytes_in_unpadded_base64url() {
        let secret = generate_service_secret();
        assert_eq!(URL_SAFE_NO_PAD.decode(&secret).unwrap().len(), 32);
        assert!(!secret.contains('='));
        assert_ne!(secret, generate_service_secret());
    }

    #[test]
    fn the_key_table_tells_current_retiring_and_retired_keys_apart() {
        let key = |kid: &str, generation, retire_after| StoredKey {
            kid: kid.to_owned(),
            generation,
            algorithm: "EdDSA".to_owned(),
            sealed_private_key: "sealed".to_owned(),
            public_jwk: "{}".to_owned(),
            created_at: 1_700_000_000,
            retire_after,
        };
        let table = key_table(
            &[
                key("new", 3, None),
                key("old", 2, Some(1_700_003_600)),
                key("older", 1, Some(1_699_999_000)),
            ],
            1_700_000_000,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("KID"));
        assert!(lines[1].starts_with("new  ") && lines[1].ends_with("current"));
        assert!(lines[2].ends_with("retiring, published until 2023-11-14T23:13:20Z"));
        assert!(lines[3].contains("retired at"));
        assert!(!table.contains("sealed"));
        assert!(key_table(&[], 0).contains("no signing keys yet"));
    }
}
