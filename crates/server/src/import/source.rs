//! The Django database: opened read-only where the backend allows it, its tables and columns
//! listed, and a user table read row by row with every value as text (so that dates, numbers
//! and booleans of any backend arrive the same way).

use std::str::FromStr as _;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection as _, Row as _};

use super::layout::Mapping;
use crate::config::DatabaseUrl;
use crate::store::sql::Dialect;

/// An open database and its dialect.
#[derive(Debug, Clone)]
pub struct Database {
    /// The connections.
    pub pool: AnyPool,
    /// Which backend.
    pub dialect: Dialect,
}

/// Opens the Django database at `url`: SQLite files read-only (`mode=ro`).
pub async fn open_source(url: &DatabaseUrl) -> anyhow::Result<Database> {
    let dialect = Dialect::of_url(url.expose()).with_context(|| {
        format!(
            "--from must start with sqlite://, mysql:// or postgres:// (got {})",
            url.masked()
        )
    })?;
    let target = match dialect {
        Dialect::Sqlite => read_only_sqlite(url.expose()),
        _ => url.expose().to_owned(),
    };
    connect(&target, dialect)
        .await
        .with_context(|| format!("Failed to open the Django database {}", url.masked()))
}

/// Opens a database without creating or changing anything (for a dry run's look at wxauth's
/// own database). `None` when there is nothing there yet: a SQLite file that does not exist.
pub async fn open_existing(url: &DatabaseUrl) -> anyhow::Result<Option<Database>> {
    let dialect = Dialect::of_url(url.expose()).with_context(|| {
        format!(
            "database.url must start with sqlite://, mysql:// or postgres:// (got {})",
            url.masked()
        )
    })?;
    let target = match dialect {
        Dialect::Sqlite => {
            if !sqlite_file_exists(url.expose()) {
                return Ok(None);
            }
            read_only_sqlite(url.expose())
        }
        _ => url.expose().to_owned(),
    };
    let database = connect(&target, dialect)
        .await
        .with_context(|| format!("Failed to connect to the database {}", url.masked()))?;
    Ok(Some(database))
}

async fn connect(url: &str, dialect: Dialect) -> anyhow::Result<Database> {
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(url).context("the URL cannot be parsed")?;
    // One connection first: a pool retries until its timeout and then says only that it
    // timed out; this says why (refused, access denied, no such database, no such file).
    AnyConnection::connect_with(&options)
        .await
        .map_err(plain)?
        .close()
        .await
        .map_err(plain)?;
    let pool = AnyPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(plain)?;
    Ok(Database { pool, dialect })
}

/// The URL with any `mode=` replaced by `mode=ro`.
fn read_only_sqlite(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("mode="))
        .collect();
    params.push("mode=ro");
    format!("{base}?{}", params.join("&"))
}

fn sqlite_file_exists(url: &str) -> bool {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or(rest);
    path == ":memory:" || std::path::Path::new(path).exists()
}

impl Database {
    /// Quotes a table or column name for this dialect.
    pub fn quote(&self, name: &str) -> String {
        match self.dialect {
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// The tables of the database (of the connection's schema), by name.
    pub async fn tables(&self) -> anyhow::Result<Vec<String>> {
        let sql = match self.dialect {
            Dialect::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            Dialect::MySql => {
                "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME"
            }
            Dialect::Postgres => {
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = current_schema() ORDER BY table_name"
            }
        };
        self.strings(sql, None)
            .await
            .map_err(plain)
            .context("Failed to list the tables")
    }

    /// The columns of a table, in their order.
    pub async fn columns(&self, table: &str) -> anyhow::Result<Vec<String>> {
        let sql = match self.dialect {
            Dialect::Sqlite => "SELECT name FROM pragma_table_info(?) ORDER BY cid",
            Dialect::MySql => {
                "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
            }
            Dialect::Postgres => {
                "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position"
            }
        };
        self.strings(sql, Some(table))
            .await
            .map_err(plain)
            .with_context(|| format!("Failed to list the columns of {table}"))
    }

    async fn strings(&self, sql: &str, bind: Option<&str>) -> Result<Vec<String>, sqlx::Error> {
        let mut query = sqlx::query(sql);
        if let Some(value) = bind {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(|row| row.try_get::<String, _>(0)).collect()
    }

    /// How many rows a table has.
    pub async fn count(&self, table: &str) -> anyhow::Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.quote(table));
        let n: i64 = sqlx::query(&sql)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(plain)
            .with_context(|| format!("Failed to count the rows of {table}"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The query that reads the mapped columns of a table as text, in key order.
    pub fn select(&self, table: &str, mapping: &Mapping) -> String {
        let text = match self.dialect {
            Dialect::MySql => "CHAR",
            _ => "TEXT",
        };
        let columns: Vec<String> = mapping
            .columns
            .iter()
            .map(|(_, column)| format!("CAST({} AS {text})", self.quote(column)))
            .collect();
        let mut sql = format!("SELECT {} FROM {}", columns.join(", "), self.quote(table));
        if let Some(key) = mapping.key_column() {
            sql.push_str(&format!(" ORDER BY {}", self.quote(key)));
        }
        sql
    }
}

/// A driver error as one message: its `Display` already includes what its source says.
pub fn plain(err: sqlx::Error) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_source_is_always_opened_read_only() {
        assert_eq!(read_only_sqlite("sqlite://a.db"), "sqlite://a.db?mode=ro");
        assert_eq!(
            read_only_sqlite("sqlite://a.db?mode=rwc&cache=shared"),
            "sqlite://a.db?cache=shared&mode=ro"
        );
    }
}
