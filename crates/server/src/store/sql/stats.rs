//! The statistics tables (`stats_logins`, `stats_wechat`, `stats_active`): batches of additive
//! upserts and insert-ignores from [`crate::stats`], the reads of `GET /v1/admin/stats`, and
//! the purge of old distinct-person rows.

use sqlx::Row as _;

use super::{Dialect, SqlStore, store_error};
use crate::store::StoreError;

/// Rows per statement (4 to 6 parameters each, far below every backend's limit).
///
/// The statements are not kept prepared (`persistent(false)`): their text changes with the
/// number of rows, and a connection's statement cache of up to a hundred such statements,
/// each hundreds of parameters wide, would hold megabytes for a write made every few seconds.
const CHUNK: usize = 200;

/// What one flush writes.
#[derive(Debug, Clone, Default)]
pub struct StatsBatch {
    /// (hour start, app_id, outcome, count)
    pub logins: Vec<(i64, String, String, i64)>,
    /// (hour start, app_id, endpoint, errcode, calls, total ms)
    pub wechat: Vec<(i64, String, String, String, i64, i64)>,
    /// (hour start, app_id, user_id): a person active in an hour, written as the hour's and
    /// the day's rows, of the app and of all apps (`*`).
    pub active: Vec<(i64, Box<str>, Box<str>)>,
}

impl StatsBatch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.logins.is_empty() && self.wechat.is_empty() && self.active.is_empty()
    }
}

/// A stored count, as read back.
#[derive(Debug, Clone)]
pub struct LoginRow {
    /// Hour start.
    pub start: i64,
    /// The app.
    pub app_id: String,
    /// `new_person`, `new_identity`, `returning` or an error code.
    pub outcome: String,
    /// How many.
    pub n: i64,
}

/// A stored WeChat count.
#[derive(Debug, Clone)]
pub struct WechatRow {
    /// Hour start.
    pub start: i64,
    /// The app.
    pub app_id: String,
    /// The endpoint's short name.
    pub endpoint: String,
    /// `0`, an errcode, or a failure without one.
    pub errcode: String,
    /// Calls.
    pub calls: i64,
    /// Their summed time.
    pub total_ms: i64,
}

/// `VALUES (?, ?, ...), (...)` for `rows` rows of `columns` columns.
fn values(rows: usize, columns: usize) -> String {
    let one = format!("({})", vec!["?"; columns].join(", "));
    vec![one; rows].join(", ")
}

/// Distinct-person marks written in one transaction at most (four rows each), on MySQL and
/// PostgreSQL.
const MARKS_PER_TRANSACTION: usize = CHUNK;

/// Distinct-person marks in one write of SQLite's group commit at most (four rows each).
///
/// A flush after a burst of new persons holds thousands of marks. Written in transactions of
/// their own, each took the one writer from the logins queued behind it: measured on SQLite
/// right after 10 s of first logins, a transaction of 200 marks held the writer for 9 ms at
/// the median and 40 ms at most, and the p99 of a login at half the peak rate was 17 ms (6 ms
/// with the flush over). In the group commit, a few marks ride along in a batch of logins,
/// one write of the batch at a time, with no transaction or commit of their own: the same p99
/// 12–18 ms against 17–31 ms before, in runs taken in turn.
const MARKS_PER_GROUPED_WRITE: usize = 32;

/// A flush that failed, and whether its counts were written before (then only its
/// distinct-person marks are to be written again: counts are added, marks are idempotent).
#[derive(Debug)]
pub struct StatsFailure {
    /// What went wrong.
    pub error: StoreError,
    /// The counts of the flush are stored.
    pub counts_written: bool,
}

impl SqlStore {
    /// Writes a flush, run to its end whatever happens to the caller: the counts added to
    /// the stored ones in one transaction, then the distinct persons inserted once, in
    /// transactions of [`MARKS_PER_TRANSACTION`] marks (on SQLite in the group commit,
    /// [`MARKS_PER_GROUPED_WRITE`] at a time).
    pub async fn add_stats(&self, batch: std::sync::Arc<StatsBatch>) -> Result<(), StatsFailure> {
        if !batch.logins.is_empty() || !batch.wechat.is_empty() {
            let counts = batch.clone();
            self.detached_quiet(move |store| {
                let batch = counts.clone();
                async move { store.write_counts(&batch).await }
            })
            .await
            .map_err(|error| StatsFailure {
                error,
                counts_written: false,
            })?;
        }
        if batch.active.is_empty() {
            return Ok(());
        }
        // On SQLite in the writer's group commit, one write queued after the other (so that a
        // batch of logins carries at most one of them).
        let grouped = self.dialect() == Dialect::Sqlite;
        let per_write = if grouped {
            MARKS_PER_GROUPED_WRITE
        } else {
            MARKS_PER_TRANSACTION
        };
        self.detached_quiet(move |store| {
            let batch = batch.clone();
            async move {
                for start in (0..batch.active.len()).step_by(per_write) {
                    let marks = start..(start + per_write).min(batch.active.len());
                    if grouped {
                        store.write_marks_grouped(batch.clone(), marks).await?;
                    } else {
                        store.write_marks(&batch.active[marks]).await?;
                    }
                }
                Ok(())
            }
        })
        .await
        .map_err(|error| StatsFailure {
            error,
            counts_written: true,
        })
    }

    async fn write_counts(&self, batch: &StatsBatch) -> Result<(), StoreError> {
        let mysql = self.dialect() == Dialect::MySql;
        let mut tx = self.begin().await?;
        for rows in batch.logins.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO stats_logins (bucket_start, app_id, outcome, n) VALUES {} {}",
                values(rows.len(), 4),
                if mysql {
                    "ON DUPLICATE KEY UPDATE n = n + VALUES(n)"
                } else {
                    "ON CONFLICT (bucket_start, app_id, outcome) DO UPDATE SET n = stats_logins.n + excluded.n"
                }
            );
            let sql = self.prepare(&sql);
            let mut query = sqlx::query(&sql).persistent(false);
            for (start, app, outcome, n) in rows {
                query = query
                    .bind(*start)
                    .bind(app.as_str())
                    .bind(outcome.as_str())
                    .bind(*n);
            }
            query.execute(&mut *tx).await.map_err(store_error)?;
        }
        for rows in batch.wechat.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO stats_wechat (bucket_start, app_id, endpoint, errcode, calls, total_ms) \
                 VALUES {} {}",
                values(rows.len(), 6),
                if mysql {
                    "ON DUPLICATE KEY UPDATE calls = calls + VALUES(calls), \
                     total_ms = total_ms + VALUES(total_ms)"
                } else {
                    "ON CONFLICT (bucket_start, app_id, endpoint, errcode) DO UPDATE SET \
                     calls = stats_wechat.calls + excluded.calls, \
                     total_ms = stats_wechat.total_ms + excluded.total_ms"
                }
            );
            let sql = self.prepare(&sql);
            let mut query = sqlx::query(&sql).persistent(false);
            for (start, app, endpoint, errcode, calls, ms) in rows {
                query = query
                    .bind(*start)
                    .bind(app.as_str())
                    .bind(endpoint.as_str())
                    .bind(errcode.as_str())
                    .bind(*calls)
                    .bind(*ms);
            }
            query.execute(&mut *tx).await.map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    /// The distinct-person marks `marks` of `batch` as one write of SQLite's group commit.
    async fn write_marks_grouped(
        &self,
        batch: std::sync::Arc<StatsBatch>,
        marks: std::ops::Range<usize>,
    ) -> Result<(), StoreError> {
        self.grouped(false, move |store, conn| {
            let (batch, marks) = (batch.clone(), marks.clone());
            Box::pin(async move {
                store.write_marks_in(conn, &batch.active[marks]).await?;
                Ok(((), true))
            })
        })
        .await
    }

    /// Distinct-person marks in one transaction (see [`SqlStore::write_marks_in`]).
    async fn write_marks(&self, marks: &[(i64, Box<str>, Box<str>)]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        self.write_marks_in(&mut tx, marks).await?;
        tx.commit().await.map_err(store_error)
    }

    /// Distinct-person marks, inside the caller's transaction: four rows a mark (rows
    /// repeated across marks, e.g. one person's day, are ignored).
    async fn write_marks_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        marks: &[(i64, Box<str>, Box<str>)],
    ) -> Result<(), StoreError> {
        let mysql = self.dialect() == Dialect::MySql;
        for marks in marks.chunks(CHUNK / 4) {
            let rows = marks.len() * 4;
            let sql = if mysql {
                format!(
                    "INSERT IGNORE INTO stats_active (period, bucket_start, app_id, user_id) \
                     VALUES {}",
                    values(rows, 4)
                )
            } else {
                format!(
                    "INSERT INTO stats_active (period, bucket_start, app_id, user_id) VALUES {} \
                     ON CONFLICT DO NOTHING",
                    values(rows, 4)
                )
            };
            let sql = self.prepare(&sql);
            let mut query = sqlx::query(&sql).persistent(false);
            for (hour, app, user) in marks {
                let day = crate::stats::day_of(*hour);
                for (period, start) in [("h", *hour), ("d", day)] {
                    for app in [&**app, crate::stats::ALL_APPS] {
                        query = query.bind(period).bind(start).bind(app).bind(&**user);
                    }
                }
            }
            query.execute(&mut *conn).await.map_err(store_error)?;
        }
        Ok(())
    }

    /// Login counts of the hours in `[from, to)`, of one app or all.
    pub async fn stats_logins(
        &self,
        from: i64,
        to: i64,
        app_id: Option<&str>,
    ) -> Result<Vec<LoginRow>, StoreError> {
        const ALL: &str = "SELECT bucket_start, app_id, outcome, n FROM stats_logins \
                           WHERE bucket_start >= ? AND bucket_start < ?";
        const ONE: &str = "SELECT bucket_start, app_id, outcome, n FROM stats_logins \
                           WHERE bucket_start >= ? AND bucket_start < ? AND app_id = ?";
        let mut query = sqlx::query(self.q(if app_id.is_some() { ONE } else { ALL }))
            .bind(from)
            .bind(to);
        if let Some(app) = app_id {
            query = query.bind(app.to_owned());
        }
        let rows = query.fetch_all(self.pool()).await.map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(LoginRow {
                    start: row.try_get(0)?,
                    app_id: row.try_get(1)?,
                    outcome: row.try_get(2)?,
                    n: row.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    /// WeChat counts of the hours in `[from, to)`, of one app or all.
    pub async fn stats_wechat(
        &self,
        from: i64,
        to: i64,
        app_id: Option<&str>,
    ) -> Result<Vec<WechatRow>, StoreError> {
        const ALL: &str = "SELECT bucket_start, app_id, endpoint, errcode, calls, total_ms \
                           FROM stats_wechat WHERE bucket_start >= ? AND bucket_start < ?";
        const ONE: &str = "SELECT bucket_start, app_id, endpoint, errcode, calls, total_ms \
                           FROM stats_wechat WHERE bucket_start >= ? AND bucket_start < ? \
                           AND app_id = ?";
        let mut query = sqlx::query(self.q(if app_id.is_some() { ONE } else { ALL }))
            .bind(from)
            .bind(to);
        if let Some(app) = app_id {
            query = query.bind(app.to_owned());
        }
        let rows = query.fetch_all(self.pool()).await.map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(WechatRow {
                    start: row.try_get(0)?,
                    app_id: row.try_get(1)?,
                    endpoint: row.try_get(2)?,
                    errcode: row.try_get(3)?,
                    calls: row.try_get(4)?,
                    total_ms: row.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    /// Distinct persons per (bucket, app) of `period` ('h' or 'd') in `[from, to)`; app `*`
    /// is all apps together.
    pub async fn stats_active(
        &self,
        period: &'static str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        const SQL: &str = "SELECT bucket_start, app_id, COUNT(*) FROM stats_active \
                           WHERE period = ? AND bucket_start >= ? AND bucket_start < ? \
                           GROUP BY bucket_start, app_id";
        let rows = sqlx::query(self.q(SQL))
            .bind(period)
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    /// Deletes the distinct-person rows of hours before `hours_before` and of days before
    /// `days_before`; returns how many went.
    pub async fn purge_stats(
        &self,
        hours_before: i64,
        days_before: i64,
    ) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM stats_active WHERE period = ? AND bucket_start < ?";
        let hours = self
            .write_one_quiet(SQL, move |q| q.bind("h").bind(hours_before))
            .await?;
        let days = self
            .write_one_quiet(SQL, move |q| q.bind("d").bind(days_before))
            .await?;
        Ok(hours + days)
    }
}

#[cfg(test)]
mod tests {
    use super::values;

    #[test]
    fn values_lists_one_group_per_row() {
        assert_eq!(values(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
