//! `wxauth import django`: brings the users of a Django backend built from the common mini
//! program tutorials into wxauth, so that they keep their accounts: each row of their user
//! table becomes a person with an identity (the app imported into, the row's openid).
//!
//! # Layout
//! - [`layout`]: the Django user tables known (`Wxuser`, a `User` extending `AbstractUser`, a
//!   `User` with `open_id`), how a table is recognised, and `--map FIELD=COLUMN`.
//! - [`source`]: the Django database, opened read-only, read as text.
//! - [`person`]: one row checked and turned into a person, or rejected with a reason.
//! - [`target`]: wxauth's database: which openids the app has, batched inserts.
//! - here: the run, from choosing the table to the summary.
//!
//! Rows are written [`BATCH_ROWS`] at a time, one transaction per batch, so an interrupted
//! import leaves whole batches behind; openids the app already has are skipped, so running
//! the import again finishes the job and changes nothing after that.

pub mod layout;
pub mod person;
pub mod source;
pub mod target;

use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal as _;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::Row as _;
use url::Url;
use wxauth_wechat::AppId;

use self::layout::{Field, Layout, Mapping};
use self::person::Person;
use self::source::Database;
use self::target::Target;
use crate::config::{Config, DatabaseUrl};
use crate::store::sql::SqlStore;

/// Rows per INSERT statement (and per transaction).
pub const BATCH_ROWS: usize = 500;

/// How many invalid rows, and how many warnings, the summary lists one by one.
const LISTED: usize = 10;

/// What `wxauth import django` was asked to do.
#[derive(Debug, Clone)]
pub struct DjangoImport {
    /// The Django database (`sqlite://`, `mysql://` or `postgres://`).
    pub from: DatabaseUrl,
    /// The mini program the openids belong to.
    pub app_id: AppId,
    /// The user table; found by its columns when not given.
    pub table: Option<String>,
    /// `FIELD=COLUMN` entries changing the table's mapping.
    pub map: Vec<String>,
    /// Django's MEDIA_URL, to turn avatar file paths into URLs.
    pub media_url: Option<Url>,
    /// Read and check everything, write nothing.
    pub dry_run: bool,
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Nothing was written.
    pub dry_run: bool,
    /// Rows read from the source table.
    pub read: u64,
    /// Persons created.
    pub created: u64,
    /// Rows whose openid the app had already.
    pub present: u64,
    /// Rows not imported.
    pub invalid: u64,
    /// Values dropped from imported rows.
    pub warnings: u64,
    /// The first invalid rows: which row, and why.
    pub invalid_rows: Vec<String>,
    /// The first warnings: which row, and what was dropped.
    pub warning_rows: Vec<String>,
}

impl Summary {
    fn invalid_row(&mut self, row: &str, reason: &str) {
        self.invalid += 1;
        if self.invalid_rows.len() < LISTED {
            self.invalid_rows.push(format!("{row}: {reason}"));
        }
    }

    fn warning(&mut self, row: &str, warning: &str) {
        self.warnings += 1;
        if self.warning_rows.len() < LISTED {
            self.warning_rows.push(format!("{row}: {warning}"));
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "Dry run: nothing was written. An import would do this:")?;
        }
        writeln!(
            f,
            "{} read, {} created, {} already present, {} invalid, {} warning{}",
            self.read,
            self.created,
            self.present,
            self.invalid,
            self.warnings,
            if self.warnings == 1 { "" } else { "s" }
        )?;
        if self.invalid > 0 {
            writeln!(f, "Invalid rows (not imported):")?;
            list(f, &self.invalid_rows, self.invalid)?;
        }
        if self.warnings > 0 {
            writeln!(f, "Warnings (imported without the value):")?;
            list(f, &self.warning_rows, self.warnings)?;
        }
        Ok(())
    }
}

fn list(f: &mut fmt::Formatter<'_>, lines: &[String], total: u64) -> fmt::Result {
    for line in lines {
        writeln!(f, "  {line}")?;
    }
    let more = total.saturating_sub(lines.len() as u64);
    if more > 0 {
        writeln!(f, "  ... and {more} more")?;
    }
    Ok(())
}

/// Runs an import into the database of `config`, printing what it reads and a progress bar
/// (on a terminal); returns the summary.
pub async fn run(config: &Config, options: &DjangoImport, now: i64) -> anyhow::Result<Summary> {
    let overrides = layout::parse_overrides(&options.map).map_err(anyhow::Error::msg)?;
    if !config
        .apps
        .iter()
        .any(|a| a.app_id == options.app_id.as_str())
    {
        eprintln!(
            "note: {} is not among the [[apps]] of the configuration; its users can log in \
             once it is",
            options.app_id
        );
    }

    let source = source::open_source(&options.from).await?;
    let (table, layout) = choose_table(&source, options.table.as_deref()).await?;
    let columns = source.columns(&table).await?;
    let mapping =
        Mapping::resolve(layout, &table, &columns, &overrides).map_err(anyhow::Error::msg)?;
    let total = source.count(&table).await?;

    println!(
        "Reading {table} ({}) from {}",
        layout.map_or("mapped with --map", |l| l.model),
        options.from.masked()
    );
    println!("  columns: {mapping}");
    println!(
        "  into app {} of {}{}",
        options.app_id,
        config.database.url.masked(),
        if options.dry_run { " (dry run)" } else { "" }
    );

    let target = if options.dry_run {
        Target::DryRun(existing_identities(&config.database.url).await?)
    } else {
        Target::Write(Box::new(SqlStore::connect(&config.database).await?))
    };

    let progress = progress_bar(total);
    let result = copy(&source, &table, &mapping, &target, options, now, &progress).await;
    progress.finish_and_clear();
    let mut summary = result?;
    summary.dry_run = options.dry_run;
    Ok(summary)
}

/// The table to read: the one given (which must exist), or the only one that looks like a
/// Django user table.
async fn choose_table(
    source: &Database,
    given: Option<&str>,
) -> anyhow::Result<(String, Option<&'static Layout>)> {
    let tables = source.tables().await?;
    let found = || {
        if tables.is_empty() {
            "the database has no tables".to_owned()
        } else {
            format!("tables found: {}", tables.join(", "))
        }
    };
    if let Some(given) = given {
        let Some(table) = tables
            .iter()
            .find(|t| t.as_str() == given)
            .or_else(|| tables.iter().find(|t| t.eq_ignore_ascii_case(given)))
        else {
            anyhow::bail!("the source has no table {given:?} ({})", found());
        };
        let layout = layout::recognise(&source.columns(table).await?);
        return Ok((table.clone(), layout));
    }
    let mut candidates = Vec::new();
    for table in &tables {
        if let Some(layout) = layout::recognise(&source.columns(table).await?) {
            candidates.push((table.clone(), layout));
        }
    }
    if candidates.len() > 1 {
        let named: Vec<_> = candidates
            .iter()
            .filter(|(table, layout)| layout.default_table == Some(table.as_str()))
            .collect();
        if let [only] = named.as_slice() {
            return Ok((only.0.clone(), Some(only.1)));
        }
        let listed: Vec<String> = candidates
            .iter()
            .map(|(table, layout)| format!("{table} ({})", layout.model))
            .collect();
        anyhow::bail!(
            "several tables look like Django user tables: {}; choose one with --table",
            listed.join(", ")
        );
    }
    match candidates.pop() {
        Some((table, layout)) => Ok((table, Some(layout))),
        None => anyhow::bail!(
            "no table looks like a Django user table (app01_wxuser, authorization_user, or a \
             User with username, nickname and user_avatar); name it with --table and say \
             which column is the openid with --map openid=COLUMN ({})",
            found()
        ),
    }
}

/// For a dry run: wxauth's database as it is, if it has identities yet.
async fn existing_identities(url: &DatabaseUrl) -> anyhow::Result<Option<Database>> {
    let Some(db) = source::open_existing(url).await? else {
        return Ok(None);
    };
    let has_identities = db
        .tables()
        .await?
        .iter()
        .any(|t| t.eq_ignore_ascii_case("identities"));
    Ok(has_identities.then_some(db))
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} rows ({per_sec:0}, {eta} left)",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}

async fn copy(
    source: &Database,
    table: &str,
    mapping: &Mapping,
    target: &Target,
    options: &DjangoImport,
    now: i64,
    progress: &ProgressBar,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    // Each openid's first row, to name it when another row repeats it.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut batch: Vec<Person> = Vec::with_capacity(BATCH_ROWS);
    let key = mapping.position(&Field::Key);
    let openid = mapping.position(&Field::OpenId);

    let sql = source.select(table, mapping);
    let mut rows = sqlx::query(&sql).fetch(&source.pool);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(source::plain)
        .with_context(|| format!("Failed to read {table}"))?
    {
        summary.read += 1;
        progress.inc(1);
        let values: Vec<Option<String>> = (0..mapping.columns.len())
            .map(|i| row.try_get::<Option<String>, _>(i))
            .collect::<Result<_, _>>()
            .map_err(source::plain)
            .with_context(|| format!("Failed to read row {} of {table} as text", summary.read))?;
        let name = row_name(&values, key, openid, summary.read);
        match person::check(&values, mapping, options.media_url.as_ref()) {
            Err(reason) => summary.invalid_row(&name, &reason),
            Ok(checked) => {
                if let Some(first) = seen.get(&checked.person.openid) {
                    summary.invalid_row(&name, &format!("openid repeats {first}"));
                    continue;
                }
                seen.insert(checked.person.openid.clone(), name.clone());
                for warning in &checked.warnings {
                    summary.warning(&name, warning);
                }
                batch.push(checked.person);
                if batch.len() == BATCH_ROWS {
                    flush(target, options, &mut batch, &mut summary, now).await?;
                }
            }
        }
    }
    flush(target, options, &mut batch, &mut summary, now).await?;
    Ok(summary)
}

async fn flush(
    target: &Target,
    options: &DjangoImport,
    batch: &mut Vec<Person>,
    summary: &mut Summary,
    now: i64,
) -> anyhow::Result<()> {
    let outcome = target.import(options.app_id.as_str(), batch, now).await?;
    summary.created += outcome.created;
    summary.present += outcome.present;
    batch.clear();
    Ok(())
}

/// How reports name a row: its key and openid when known.
fn row_name(
    values: &[Option<String>],
    key: Option<usize>,
    openid: Option<usize>,
    nth: u64,
) -> String {
    let short = |s: &str| -> String {
        if s.chars().count() > 40 {
            format!("{}...", s.chars().take(40).collect::<String>())
        } else {
            s.to_owned()
        }
    };
    let key = key
        .and_then(|i| values[i].as_deref())
        .map_or_else(|| format!("row {nth}"), |k| format!("id {}", short(k)));
    match openid.and_then(|i| values[i].as_deref()) {
        Some(openid) if !openid.is_empty() => format!("{key} (openid {})", short(openid)),
        _ => key,
    }
}
