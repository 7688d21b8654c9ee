//! wxauth's own database: which openids an app has already, and batched inserts of persons
//! with their identities.
//!
//! A batch is one transaction: look up which of its openids the app has, then one multi-row
//! INSERT into `users` and one into `identities` for the rest. A login of one of these users
//! while the import runs may create the identity first; the insert then hits the primary key,
//! the transaction rolls back whole, and the batch is tried again (finding that openid
//! present).

use std::collections::HashSet;

use anyhow::Context as _;
use sqlx::{Any, AnyPool, Row as _, Transaction};

use super::person::Person;
use super::source::{Database, plain};
use crate::store::sql::{Dialect, SqlStore};

/// How many times a batch is tried when it loses a race with a login.
const BATCH_ATTEMPTS: usize = 5;

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Persons (and identities) created.
    pub created: u64,
    /// Openids the app had already.
    pub present: u64,
}

/// Where persons go: wxauth's database, or nowhere in a dry run.
#[derive(Debug)]
pub enum Target {
    /// Writes (migrations applied).
    Write(Box<SqlStore>),
    /// Only looks; `None` when wxauth's database has no identities table yet.
    DryRun(Option<Database>),
}

impl Target {
    /// Creates the persons of a batch whose openids the app does not have yet (a dry run
    /// only counts them).
    pub async fn import(
        &self,
        app_id: &str,
        persons: &[Person],
        now: i64,
    ) -> anyhow::Result<BatchOutcome> {
        if persons.is_empty() {
            return Ok(BatchOutcome::default());
        }
        match self {
            Self::DryRun(None) => Ok(BatchOutcome {
                created: persons.len() as u64,
                present: 0,
            }),
            Self::DryRun(Some(db)) => {
                let sql = present_sql(db.dialect, persons.len());
                let mut query = sqlx::query(&sql).bind(app_id);
                for person in persons {
                    query = query.bind(person.openid.as_str());
                }
                let present = query
                    .fetch_all(&db.pool)
                    .await
                    .map_err(plain)
                    .context("Failed to look up the openids wxauth has")?
                    .len() as u64;
                Ok(BatchOutcome {
                    created: persons.len() as u64 - present,
                    present,
                })
            }
            Self::Write(store) => write(store, app_id, persons, now).await,
        }
    }
}

async fn write(
    store: &SqlStore,
    app_id: &str,
    persons: &[Person],
    now: i64,
) -> anyhow::Result<BatchOutcome> {
    let mut last_error = None;
    for _ in 0..BATCH_ATTEMPTS {
        let mut tx = begin(store.pool(), store.dialect())
            .await
            .map_err(plain)
            .context("Failed to start a transaction in wxauth's database")?;
        match write_in(&mut tx, store.dialect(), app_id, persons, now).await {
            Ok(outcome) => {
                tx.commit()
                    .await
                    .map_err(plain)
                    .context("Failed to commit a batch to wxauth's database")?;
                return Ok(outcome);
            }
            Err(err) => {
                // The batch is void either way; the error says why.
                let _ = tx.rollback().await;
                if !lost_a_race(&err) {
                    return Err(plain(err)).context("Failed to write a batch to wxauth's database");
                }
                last_error = Some(err);
            }
        }
    }
    Err(anyhow::anyhow!(
        "a batch kept colliding with logins after {BATCH_ATTEMPTS} attempts: {}",
        last_error.map(|e| e.to_string()).unwrap_or_default()
    ))
}

async fn begin(pool: &AnyPool, dialect: Dialect) -> Result<Transaction<'static, Any>, sqlx::Error> {
    // SQLite cannot turn a read transaction into a write one while another connection
    // writes: take the write lock up front, as the store does.
    match dialect {
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        _ => pool.begin().await,
    }
}

async fn write_in(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
    app_id: &str,
    persons: &[Person],
    now: i64,
) -> Result<BatchOutcome, sqlx::Error> {
    let sql = present_sql(dialect, persons.len());
    let mut query = sqlx::query(&sql).bind(app_id);
    for person in persons {
        query = query.bind(person.openid.as_str());
    }
    let present: HashSet<String> = query
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    let new: Vec<(&Person, String)> = persons
        .iter()
        .filter(|p| !present.contains(&p.openid))
        .map(|p| (p, uuid::Uuid::now_v7().to_string()))
        .collect();
    if !new.is_empty() {
        let sql = rows_sql(
            dialect,
            "INSERT INTO users (id, unionid, nickname, avatar_url, gender, city, province, \
             country, language, phone_country_code, phone_number, extra, created_at, updated_at) \
             VALUES ",
            "(?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            new.len(),
        );
        let mut query = sqlx::query(&sql);
        for (person, id) in &new {
            let (code, number) = match &person.phone {
                Some((code, number)) => (Some(code.as_str()), Some(number.as_str())),
                None => (None, None),
            };
            query = query
                .bind(id.as_str())
                .bind(person.nickname.as_deref())
                .bind(person.avatar_url.as_deref())
                .bind(person.gender)
                .bind(person.city.as_deref())
                .bind(person.province.as_deref())
                .bind(person.country.as_deref())
                .bind(person.language.as_deref())
                .bind(code)
                .bind(number)
                .bind(person.extra.as_deref())
                .bind(person.created_at.unwrap_or(now))
                .bind(now);
        }
        query.execute(&mut **tx).await?;

        let sql = rows_sql(
            dialect,
            "INSERT INTO identities (app_id, openid, user_id, created_at) VALUES ",
            "(?, ?, ?, ?)",
            new.len(),
        );
        let mut query = sqlx::query(&sql);
        for (person, id) in &new {
            query = query
                .bind(app_id)
                .bind(person.openid.as_str())
                .bind(id.as_str())
                .bind(person.created_at.unwrap_or(now));
        }
        query.execute(&mut **tx).await?;
    }
    Ok(BatchOutcome {
        created: new.len() as u64,
        present: present.len() as u64,
    })
}

/// `SELECT openid FROM identities WHERE app_id = ? AND openid IN (?, …)` for `n` openids.
fn present_sql(dialect: Dialect, n: usize) -> String {
    let marks = vec!["?"; n].join(", ");
    placeholders(
        dialect,
        &format!("SELECT openid FROM identities WHERE app_id = ? AND openid IN ({marks})"),
    )
}

/// `head` followed by `n` copies of `row`, comma-separated.
fn rows_sql(dialect: Dialect, head: &str, row: &str, n: usize) -> String {
    let mut sql = String::with_capacity(head.len() + n * (row.len() + 2));
    sql.push_str(head);
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    placeholders(dialect, &sql)
}

/// `?` placeholders as PostgreSQL wants them (`$1`, `$2`, …).
fn placeholders(dialect: Dialect, sql: &str) -> String {
    if dialect != Dialect::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() * 2);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A unique key collision or a deadlock: a concurrent login got there first.
fn lost_a_race(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || matches!(db.code().as_deref(), Some("40001" | "40P01" | "1213"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_statements_have_one_placeholder_per_value() {
        assert_eq!(
            rows_sql(Dialect::Sqlite, "INSERT INTO t (a, b) VALUES ", "(?, ?)", 3),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)"
        );
        assert_eq!(
            present_sql(Dialect::Postgres, 2),
            "SELECT openid FROM identities WHERE app_id = $1 AND openid IN ($2, $3)"
        );
    }
}
