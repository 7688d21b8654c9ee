//! Statistics for `GET /v1/admin/stats`: logins (by outcome), new persons and identities,
//! distinct active persons, WeChat calls and errcodes, per hour (UTC) and app.
//!
//! Recording costs no database write on the request path: each event is added to counters in
//! memory, and every [`FLUSH_INTERVAL`] (and at shutdown) the counters are written as additive
//! upserts in one transaction, and the distinct persons as insert-ignores (a person once an
//! hour and app, see [`Written`]) in transactions of a few hundred. What a flush could not
//! write is kept and tried again with the next one (counts only when their transaction
//! failed, so nothing is counted twice). Each instance flushes its own counts; the tables add
//! them up.
//!
//! A person counts as active in an hour (and a day) when they log in, or use a token (recorded
//! with the session's "last seen", at most once a minute per session).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use wxauth_wechat::AppId;
use wxauth_wechat::observe::Endpoint;

use crate::clock::Clock;
use crate::model::UserId;
use crate::store::StoreError;
use crate::store::sql::{SqlStore, StatsBatch, StatsFailure};

/// How often the counters are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Hourly distinct-person rows are kept this long (then only the daily ones).
pub const ACTIVE_HOURS_KEPT: i64 = 35 * DAY;
/// Daily distinct-person rows are kept this long.
pub const ACTIVE_DAYS_KEPT: i64 = 400 * DAY;

/// The app of the all-apps distinct-person rows.
pub(crate) const ALL_APPS: &str = "*";

/// Distinct (hour, app, person) marks held at most before a flush is started early: a
/// bound on the memory between flushes at any login rate (about 100 bytes a mark).
pub const ACTIVE_FLUSH_AT: usize = 32_768;

/// Marks held at most while flushes fail (the database is away): beyond, new ones are not
/// counted.
const ACTIVE_MAX: usize = 8 * ACTIVE_FLUSH_AT;

/// Counters not yet written.
///
/// A person's activity is kept once per hour and app (the hour's and the day's rows, of the
/// app and of all apps, are made from it when written), as one compact entry.
#[derive(Debug, Default)]
struct Pending {
    logins: BTreeMap<(i64, String, String), i64>,
    wechat: BTreeMap<(i64, String, String, String), (i64, i64)>,
    /// (hour start, app_id, user_id)
    active: HashSet<(i64, Box<str>, Box<str>)>,
    /// The marks of the current hour already written (kept across flushes).
    written: Written,
}

/// The (hour, app, person) marks of one hour this process has written, as 64-bit hashes: a
/// person seen again in that hour is not written again (its rows exist, the insert would be
/// ignored), so that a flush writes the persons new to the hour, not everyone active in the
/// last seconds. Two marks of the same hash (about one in 10^9 at 250,000 marks) would count
/// one person less that hour.
#[derive(Debug, Default)]
struct Written {
    hour: i64,
    marks: HashSet<u64>,
    hasher: std::hash::RandomState,
}

/// Marks remembered as written at most (about 4 MB); beyond, marks are written again, which
/// only costs their ignored inserts.
const WRITTEN_MAX: usize = 262_144;

impl Written {
    fn hash(&self, hour: i64, app: &str, user: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, (hour, app, user))
    }

    fn has(&self, hour: i64, app: &str, user: &str) -> bool {
        self.hour == hour && self.marks.contains(&self.hash(hour, app, user))
    }

    /// Remembers the marks of a written batch (those of the newest hour seen).
    fn add(&mut self, marks: &[(i64, Box<str>, Box<str>)]) {
        for (hour, app, user) in marks {
            if *hour > self.hour {
                self.hour = *hour;
                self.marks.clear();
            }
            if *hour == self.hour && self.marks.len() < WRITTEN_MAX {
                let hash = self.hash(*hour, app, user);
                self.marks.insert(hash);
            }
        }
    }
}

impl Pending {
    fn into_batch(self) -> StatsBatch {
        StatsBatch {
            logins: self
                .logins
                .into_iter()
                .map(|((start, app, outcome), n)| (start, app, outcome, n))
                .collect(),
            wechat: self
                .wechat
                .into_iter()
                .map(|((start, app, endpoint, errcode), (calls, ms))| {
                    (start, app, endpoint, errcode, calls, ms)
                })
                .collect(),
            active: self.active.into_iter().collect(),
        }
    }

    /// Takes a batch that could not be written back in.
    fn restore(&mut self, batch: &StatsBatch) {
        for (start, app, outcome, n) in &batch.logins {
            *self
                .logins
                .entry((*start, app.clone(), outcome.clone()))
                .or_default() += n;
        }
        for (start, app, endpoint, errcode, calls, ms) in &batch.wechat {
            let entry = self
                .wechat
                .entry((*start, app.clone(), endpoint.clone(), errcode.clone()))
                .or_default();
            entry.0 += calls;
            entry.1 += ms;
        }
        self.restore_active(&batch.active);
    }

    /// Takes distinct-person marks that could not be written back in.
    fn restore_active(&mut self, marks: &[(i64, Box<str>, Box<str>)]) {
        for mark in marks {
            if self.active.len() >= ACTIVE_MAX {
                break;
            }
            self.active.insert(mark.clone());
        }
    }
}

/// The recorder: shared by the request handlers and the WeChat client's observer.
pub struct Stats {
    pending: Mutex<Pending>,
    /// Wakes the flush loop early when [`ACTIVE_FLUSH_AT`] marks are held.
    full: tokio::sync::Notify,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
    sql: Arc<SqlStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

fn hour_of(t: i64) -> i64 {
    t - t.rem_euclid(HOUR)
}

pub(crate) fn day_of(t: i64) -> i64 {
    t - t.rem_euclid(DAY)
}

impl Stats {
    /// Writes to `sql`, timing events by `clock`.
    pub fn new(sql: Arc<SqlStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            pending: Mutex::default(),
            full: tokio::sync::Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
            sql,
            clock,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A login ended with `outcome` (`new_person`, `new_identity`, `returning` or an error
    /// code); `user` logged in when it worked.
    pub fn login(&self, app_id: &AppId, outcome: &'static str, user: Option<&UserId>) {
        let now = self.clock.now();
        let mut pending = self.pending();
        *pending
            .logins
            .entry((hour_of(now), app_id.as_str().to_owned(), outcome.to_owned()))
            .or_default() += 1;
        if let Some(user) = user
            && mark_active(&mut pending, now, app_id, user)
        {
            self.full.notify_one();
        }
    }

    /// A person used a token of `app_id`.
    pub fn active(&self, app_id: &AppId, user: &UserId) {
        let now = self.clock.now();
        if mark_active(&mut self.pending(), now, app_id, user) {
            self.full.notify_one();
        }
    }

    /// Writes what has been counted since the last flush; on failure it is kept for the next.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _one = self.flushing.lock().await;
        let batch = {
            let mut pending = self.pending();
            let written = std::mem::take(&mut pending.written);
            let taken = std::mem::replace(
                &mut *pending,
                Pending {
                    written,
                    ..Pending::default()
                },
            );
            taken.into_batch()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let batch = Arc::new(batch);
        match self.sql.add_stats(batch.clone()).await {
            Ok(()) => {
                self.pending().written.add(&batch.active);
                Ok(())
            }
            Err(StatsFailure {
                error,
                counts_written,
            }) => {
                let mut pending = self.pending();
                if counts_written {
                    pending.restore_active(&batch.active);
                } else {
                    pending.restore(&batch);
                }
                Err(error)
            }
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] (sooner when [`ACTIVE_FLUSH_AT`] marks are held),
    /// and purges old distinct-person rows now and then.
    pub async fn flush_loop(self: Arc<Self>) {
        let mut interval = tokio::time::interval(FLUSH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = self.full.notified() => interval.reset(),
            }
            if let Err(err) = self.flush().await {
                crate::instruments::store_error(&err);
                tracing::warn!(error = %err, "could not write the statistics; trying again later");
            }
            // About every ten minutes.
            if ticks % 120 == 0 {
                let now = self.clock.now();
                if let Err(err) = self
                    .sql
                    .purge_stats(now - ACTIVE_HOURS_KEPT, now - ACTIVE_DAYS_KEPT)
                    .await
                {
                    tracing::warn!(error = %err, "could not purge old statistics");
                }
            }
            ticks += 1;
        }
    }
}

/// Marks a person active in this hour; `true` when a flush should start now.
fn mark_active(pending: &mut Pending, now: i64, app_id: &AppId, user: &UserId) -> bool {
    let len = pending.active.len();
    if len >= ACTIVE_MAX {
        return true;
    }
    let hour = hour_of(now);
    if pending.written.has(hour, app_id.as_str(), user.as_str()) {
        return false;
    }
    pending.active.insert((
        hour,
        app_id.as_str().into(),
        user.to_string().into_boxed_str(),
    ));
    len + 1 >= ACTIVE_FLUSH_AT
}

impl crate::instruments::WechatSink for Stats {
    fn wechat_call(&self, app_id: &AppId, endpoint: Endpoint, errcode: &'static str, ms: u64) {
        let now = self.clock.now();
        let mut pending = self.pending();
        let entry = pending
            .wechat
            .entry((
                hour_of(now),
                app_id.as_str().to_owned(),
                endpoint.name().to_owned(),
                errcode.to_owned(),
            ))
            .or_default();
        entry.0 += 1;
        entry.1 += i64::try_from(ms).unwrap_or(i64::MAX);
    }
}

/// Hours or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BucketSize {
    /// One hour, UTC.
    Hour,
    /// One day, UTC.
    Day,
}

impl BucketSize {
    /// Seconds in a bucket.
    pub fn secs(self) -> i64 {
        match self {
            Self::Hour => HOUR,
            Self::Day => DAY,
        }
    }

    fn period(self) -> &'static str {
        match self {
            Self::Hour => "h",
            Self::Day => "d",
        }
    }

    /// The start of the bucket holding `t`.
    pub fn floor(self, t: i64) -> i64 {
        t - t.rem_euclid(self.secs())
    }
}

/// The figures of one bucket (of one app, or of all of them).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// Successful logins.
    pub logins: i64,
    /// Logins that made a new person.
    pub new_persons: i64,
    /// Logins that made a new identity (a new person's first included).
    pub new_identities: i64,
    /// Distinct persons who logged in or used a token.
    pub active_persons: i64,
    /// Failed logins by error code.
    pub login_errors: BTreeMap<String, i64>,
    /// Calls to WeChat.
    pub wechat_calls: i64,
    /// Calls to WeChat that did not answer errcode 0, by errcode (or failure).
    pub wechat_errcodes: BTreeMap<String, i64>,
    /// Per WeChat endpoint.
    pub wechat: BTreeMap<String, EndpointFigures>,
}

/// One WeChat endpoint in one bucket.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct EndpointFigures {
    /// Calls.
    pub calls: i64,
    /// Calls that did not answer errcode 0, by errcode (or failure).
    pub errcodes: BTreeMap<String, i64>,
    /// Mean time of a call, in milliseconds.
    pub avg_ms: f64,
    #[serde(skip)]
    total_ms: i64,
}

/// One app's figures in one bucket.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AppBucket {
    /// The bucket's start (Unix seconds).
    pub start: i64,
    /// The app.
    pub app_id: String,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// All apps' figures in one bucket.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TotalBucket {
    /// The bucket's start (Unix seconds).
    pub start: i64,
    /// The figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// The answer of `GET /v1/admin/stats`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// `hour` or `day`.
    pub bucket: BucketSize,
    /// Start of the first bucket (Unix seconds).
    pub from: i64,
    /// End of the last bucket (exclusive).
    pub to: i64,
    /// Per bucket and app, buckets with something in them, in time order.
    pub series: Vec<AppBucket>,
    /// Per bucket, every bucket of the range, the apps asked for together.
    pub totals: Vec<TotalBucket>,
}

/// Reads the figures of `[from, to)` (aligned to whole buckets) for one app or all.
pub async fn report(
    sql: &SqlStore,
    size: BucketSize,
    from: i64,
    to: i64,
    app_id: Option<&str>,
) -> Result<Report, StoreError> {
    let from = size.floor(from);
    let to = size.floor(to - 1) + size.secs();
    let mut series: BTreeMap<(i64, String), Figures> = BTreeMap::new();
    let mut totals: BTreeMap<i64, Figures> = (0..)
        .map(|i| from + i * size.secs())
        .take_while(|start| *start < to)
        .map(|start| (start, Figures::default()))
        .collect();
    for row in sql.stats_logins(from, to, app_id).await? {
        let start = size.floor(row.start);
        for figures in [
            series.entry((start, row.app_id.clone())).or_default(),
            totals.entry(start).or_default(),
        ] {
            match row.outcome.as_str() {
                "new_person" => {
                    figures.logins += row.n;
                    figures.new_persons += row.n;
                    figures.new_identities += row.n;
                }
                "new_identity" => {
                    figures.logins += row.n;
                    figures.new_identities += row.n;
                }
                "returning" => figures.logins += row.n,
                code => *figures.login_errors.entry(code.to_owned()).or_default() += row.n,
            }
        }
    }
    for row in sql.stats_wechat(from, to, app_id).await? {
        let start = size.floor(row.start);
        for figures in [
            series.entry((start, row.app_id.clone())).or_default(),
            totals.entry(start).or_default(),
        ] {
            figures.wechat_calls += row.calls;
            let endpoint = figures.wechat.entry(row.endpoint.clone()).or_default();
            endpoint.calls += row.calls;
            endpoint.total_ms += row.total_ms;
            if row.errcode != "0" {
                *figures
                    .wechat_errcodes
                    .entry(row.errcode.clone())
                    .or_default() += row.calls;
                *endpoint.errcodes.entry(row.errcode.clone()).or_default() += row.calls;
            }
        }
    }
    let mut active: HashMap<(i64, String), i64> = HashMap::new();
    for (start, app, n) in sql.stats_active(size.period(), from, to).await? {
        active.insert((start, app), n);
    }
    for ((start, app), n) in &active {
        if app == ALL_APPS {
            continue;
        }
        if app_id.is_some_and(|only| only != app) {
            continue;
        }
        series
            .entry((*start, app.clone()))
            .or_default()
            .active_persons = *n;
    }
    for (start, figures) in &mut totals {
        let key = (*start, app_id.unwrap_or(ALL_APPS).to_owned());
        figures.active_persons = active.get(&key).copied().unwrap_or(0);
    }
    let finish = |mut figures: Figures| {
        for endpoint in figures.wechat.values_mut() {
            if endpoint.calls > 0 {
                endpoint.avg_ms = endpoint.total_ms as f64 / endpoint.calls as f64;
            }
        }
        figures
    };
    Ok(Report {
        bucket: size,
        from,
        to,
        series: series
            .into_iter()
            .map(|((start, app_id), figures)| AppBucket {
                start,
                app_id,
                figures: finish(figures),
            })
            .collect(),
        totals: totals
            .into_iter()
            .map(|(start, figures)| TotalBucket {
                start,
                figures: finish(figures),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_on_whole_utc_hours_and_days() {
        let t = 1_764_655_385; // 2025-12-02T06:03:05Z
        assert_eq!(BucketSize::Hour.floor(t), 1_764_655_200);
        assert_eq!(BucketSize::Day.floor(t), 1_764_633_600);
        assert_eq!(hour_of(t), 1_764_655_200);
    }

    #[test]
    fn activity_is_kept_once_an_hour_and_the_marks_held_are_bounded() {
        let app = AppId::parse("wx1234567890abcdef".to_owned()).unwrap();
        let mut pending = Pending::default();
        let someone = UserId::new("someone".to_owned());
        assert!(!mark_active(&mut pending, 10, &app, &someone));
        assert!(!mark_active(&mut pending, 20, &app, &someone));
        assert_eq!(pending.active.len(), 1, "once per hour, app and person");
        let mut asked_for_a_flush = false;
        for i in 0..ACTIVE_MAX + 10 {
            let user = UserId::new(format!("u{i}"));
            let full = mark_active(&mut pending, 10, &app, &user);
            if pending.active.len() < ACTIVE_FLUSH_AT {
                assert!(!full);
            } else {
                asked_for_a_flush |= full;
            }
        }
        assert!(asked_for_a_flush);
        assert_eq!(pending.active.len(), ACTIVE_MAX);
    }

    #[test]
    fn a_person_written_this_hour_is_not_written_again_until_the_next() {
        let app = AppId::parse("wx1234567890abcdef".to_owned()).unwrap();
        let (a, b) = (UserId::new("a".to_owned()), UserId::new("b".to_owned()));
        let mut pending = Pending::default();
        mark_active(&mut pending, 10, &app, &a);
        let batch = std::mem::take(&mut pending.active);
        pending.written.add(&batch.into_iter().collect::<Vec<_>>());
        // The same hour: a is written already, b is new.
        mark_active(&mut pending, 20, &app, &a);
        mark_active(&mut pending, 30, &app, &b);
        assert_eq!(
            pending.active.iter().map(|m| &*m.2).collect::<Vec<_>>(),
            ["b"]
        );
        // Another app, or the next hour: a is new there.
        let other = AppId::parse("wx0000000000000000".to_owned()).unwrap();
        mark_active(&mut pending, 40, &other, &a);
        mark_active(&mut pending, HOUR + 10, &app, &a);
        assert_eq!(pending.active.len(), 3);
        // Once the next hour is written, the last one's marks are forgotten.
        pending
            .written
            .add(&[(HOUR, app.as_str().into(), "b".into())]);
        assert_eq!(
            (pending.written.hour, pending.written.marks.len()),
            (HOUR, 1)
        );
        let mut full = Written::default();
        let many: Vec<_> = (0..WRITTEN_MAX + 5)
            .map(|i| (0, "wx".into(), format!("u{i}").into_boxed_str()))
            .collect();
        full.add(&many);
        assert_eq!(full.marks.len(), WRITTEN_MAX);
    }

    #[tokio::test]
    async fn a_flush_whose_marks_fail_after_its_counts_writes_the_marks_again_and_not_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let sql = Arc::new(SqlStore::sqlite_in(dir.path()).await);
        let clock = crate::clock::ManualClock::new();
        let stats = Stats::new(sql.clone(), Arc::new(clock.clone()));
        let app = AppId::parse("wx1234567890abcdef".to_owned()).unwrap();
        // More persons than one write of marks takes (in a transaction, or in the group commit).
        for i in 0..450 {
            stats.login(&app, "returning", Some(&UserId::new(format!("u{i}"))));
        }
        let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
        sqlx::query(&rename("stats_active", "stats_active_away"))
            .execute(sql.writer())
            .await
            .unwrap();
        assert!(stats.flush().await.is_err());
        sqlx::query(&rename("stats_active_away", "stats_active"))
            .execute(sql.writer())
            .await
            .unwrap();
        stats.flush().await.unwrap();
        let hour = hour_of(clock.now());
        let logins = sql.stats_logins(hour, hour + HOUR, None).await.unwrap();
        assert_eq!(
            logins.iter().map(|row| row.n).sum::<i64>(),
            450,
            "counted once"
        );
        let active = sql.stats_active("h", hour, hour + HOUR).await.unwrap();
        assert!(
            active.contains(&(hour, app.as_str().to_owned(), 450)),
            "{active:?}"
        );
        assert!(
            active.contains(&(hour, ALL_APPS.to_owned(), 450)),
            "{active:?}"
        );
    }

    #[test]
    fn a_failed_flush_is_added_back_to_what_came_since() {
        let mut pending = Pending::default();
        pending
            .logins
            .insert((0, "wx".into(), "returning".into()), 2);
        let failed = std::mem::take(&mut pending).into_batch();
        pending
            .logins
            .insert((0, "wx".into(), "returning".into()), 1);
        pending.restore(&failed);
        assert_eq!(pending.logins[&(0, "wx".into(), "returning".into())], 3);
    }
}
