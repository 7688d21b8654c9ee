//! The event outbox in SQL: events written inside the transaction of the change they describe
//! ([`insert`]), one delivery row per configured webhook endpoint beside each, the feed read in
//! order.
//!
//! Order is `seq`, the database's counter. On MySQL/MariaDB and PostgreSQL a counter value is
//! taken at insert, not at commit: a transaction that took 10 may commit after one that took
//! 11. A reader that moved past 11 would never see 10. So an event is shown (in the feed, and
//! to the delivery worker) only once it has *settled*: [`SETTLE_MS`] after it was written, by
//! which time every transaction that took an earlier number has ended (they are a few
//! statements long). SQLite has one writer at a time, so there the counter is the commit
//! order and nothing waits.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Any, Row as _, Transaction};
use tokio::sync::Notify;
use wxauth_wechat::{AppId, OpenId};

use super::{Dialect, SqlStore, store_error};
use crate::events::{Event, Through};
use crate::model::UserId;
use crate::store::StoreError;

/// How long an event written on MySQL/MariaDB or PostgreSQL waits before it is shown: longer
/// than any transaction that writes one lasts.
pub const SETTLE_MS: i64 = 1000;

/// Where events go besides the feed: the webhook endpoints, each with the types it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL (the key of its deliveries).
    pub url: String,
    /// The event types it takes; `None`: all.
    pub types: Option<Vec<String>>,
}

impl Endpoint {
    fn takes(&self, kind: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == kind))
    }
}

/// What every handle on one database shares about events.
#[derive(Debug, Default)]
pub struct Outbox {
    endpoints: RwLock<Vec<Endpoint>>,
    /// Woken after a transaction that wrote events has committed (in this process).
    pub written: Notify,
}

impl Outbox {
    /// The configured endpoints.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The wall clock in milliseconds (not the service's clock, which tests stop: settling and
/// leases are about real time).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes an event (and its deliveries) inside the caller's transaction: it exists exactly
/// when the change does. Call [`SqlStore::events_written`] after the commit to wake the
/// delivery worker and waiting feed readers at once (they would otherwise see it on their
/// next poll).
pub async fn insert(
    store: &SqlStore,
    tx: &mut Transaction<'static, Any>,
    event: &Event,
) -> Result<(), sqlx::Error> {
    const INSERT: &str = "INSERT INTO events (id, type, user_id, occurred_at, created_ms, \
                          payload) VALUES (?, ?, ?, ?, ?, ?)";
    const DELIVERY: &str = "INSERT INTO webhook_deliveries (endpoint, event_seq, user_id, \
         state, attempts, next_attempt_ms, retry_from_ms, lease_until_ms) \
         SELECT ?, seq, user_id, 'pending', 0, created_ms, created_ms, 0 FROM events WHERE id = ?";
    sqlx::query(store.q(INSERT))
        .bind(event.id.as_str())
        .bind(event.kind)
        .bind(event.user_id.as_str())
        .bind(event.occurred_at)
        .bind(wall_ms())
        .bind(event.to_json())
        .execute(&mut **tx)
        .await?;
    for endpoint in store.outbox.endpoints() {
        if endpoint.takes(event.kind) {
            sqlx::query(store.q(DELIVERY))
                .bind(endpoint.url)
                .bind(event.id.as_str())
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// The person behind an identity, inside a transaction.
pub(super) async fn person_of(
    store: &SqlStore,
    tx: &mut Transaction<'static, Any>,
    app_id: &str,
    openid: &str,
) -> Result<Option<UserId>, sqlx::Error> {
    const SQL: &str = "SELECT user_id FROM identities WHERE app_id = ? AND openid = ?";
    let row = sqlx::query(store.q(SQL))
        .bind(app_id)
        .bind(openid)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|row| row.try_get::<String, _>(0).map(UserId::new))
        .transpose()
}

/// `session.revoked` for a session of an identity, inside a transaction (nothing when the
/// identity's person is gone: there is nobody to tell about).
pub(super) async fn session_revoked(
    store: &SqlStore,
    tx: &mut Transaction<'static, Any>,
    session_id: &str,
    app_id: &str,
    openid: &str,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let Some(user_id) = person_of(store, tx, app_id, openid).await? else {
        return Ok(());
    };
    let (Ok(app_id), Ok(openid)) = (AppId::parse(app_id), OpenId::parse(openid)) else {
        return Ok(());
    };
    let event = Event::session_revoked(
        &user_id,
        Through {
            app_id: &app_id,
            openid: &openid,
        },
        session_id,
        reason,
        now,
    );
    insert(store, tx, &event).await
}

/// A page of the feed.
#[derive(Debug, Clone)]
pub struct FeedPage {
    /// The events (their envelopes as stored), in order.
    pub events: Vec<String>,
    /// The cursor for the next call: the last event looked at (returned or skipped by the
    /// type filter), or the caller's own when nothing was.
    pub next_after: Option<String>,
}

/// A stored event, as the CLI lists it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its position.
    pub seq: i64,
    /// The event id.
    pub id: String,
    /// The type.
    pub kind: String,
    /// The person.
    pub user_id: String,
    /// When it happened (Unix seconds).
    pub occurred_at: i64,
    /// The envelope.
    pub payload: String,
}

impl SqlStore {
    /// Wakes what waits for new events, after a commit that wrote some.
    pub fn events_written(&self) {
        self.outbox.written.notify_waiters();
    }

    /// The shared outbox state.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Sets the webhook endpoints that new events get a delivery row for.
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        *self
            .outbox
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = endpoints;
    }

    /// How long events wait before they are shown, on this backend.
    pub fn settle_ms(&self) -> i64 {
        match self.dialect {
            Dialect::Sqlite => 0,
            _ => SETTLE_MS,
        }
    }

    /// Writes events in a transaction of their own (for changes made outside the database:
    /// Redis sessions).
    pub async fn emit_sessions_revoked(
        &self,
        revoked: Vec<(String, String, String)>,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        if revoked.is_empty() {
            return Ok(());
        }
        let reason = reason.to_owned();
        self.detached_quiet(move |store| {
            let (revoked, reason) = (revoked.clone(), reason.clone());
            async move {
                let mut tx = store.begin().await?;
                for (session_id, app_id, openid) in &revoked {
                    session_revoked(&store, &mut tx, session_id, app_id, openid, &reason, now)
                        .await
                        .map_err(store_error)?;
                }
                tx.commit().await.map_err(store_error)?;
                store.events_written();
                Ok(())
            }
        })
        .await
    }

    /// The position of an event, by id.
    async fn seq_of(&self, id: &str) -> Result<Option<i64>, StoreError> {
        const SQL: &str = "SELECT seq FROM events WHERE id = ?";
        let row = sqlx::query(self.q(SQL))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.map(|row| row.try_get::<i64, _>(0))
            .transpose()
            .map_err(store_error)
    }

    /// The settled events after the one named `after` (from the oldest kept when `None`), of
    /// the given types (all when `None`), at most `limit`. `None` when `after` names no
    /// stored event.
    pub async fn read_events(
        &self,
        after: Option<&str>,
        types: Option<&[String]>,
        limit: u32,
    ) -> Result<Option<FeedPage>, StoreError> {
        const FIRST_UNSETTLED: &str =
            "SELECT MIN(seq) FROM events WHERE seq > ? AND created_ms > ?";
        let from = match after {
            None => 0,
            Some(id) => match self.seq_of(id).await? {
                Some(seq) => seq,
                None => return Ok(None),
            },
        };
        // Events from the first one not yet settled on are left for a later call.
        let until = if self.settle_ms() > 0 {
            let row = sqlx::query(self.q(FIRST_UNSETTLED))
                .bind(from)
                .bind(wall_ms() - self.settle_ms())
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            row.try_get::<Option<i64>, _>(0).map_err(store_error)?
        } else {
            None
        }
        .unwrap_or(i64::MAX);
        let mut sql = String::from("SELECT seq, id, payload FROM events WHERE seq > ? AND seq < ?");
        if let Some(types) = types {
            sql.push_str(" AND type IN (");
            sql.push_str(&vec!["?"; types.len()].join(", "));
            sql.push(')');
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        let sql = self.prepare(&sql);
        let mut query = sqlx::query(&sql).bind(from).bind(until);
        for kind in types.unwrap_or_default() {
            query = query.bind(kind.as_str());
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut events = Vec::with_capacity(rows.len());
        let mut last = after.map(str::to_owned);
        for row in &rows {
            last = Some(row.try_get::<String, _>("id").map_err(store_error)?);
            events.push(row.try_get::<String, _>("payload").map_err(store_error)?);
        }
        // A filtered page that is not full looked at everything up to `until`: the cursor
        // moves past the events it skipped, so the next call does not read them again.
        if types.is_some() && rows.len() < limit as usize {
            const LAST_SEEN: &str =
                "SELECT id FROM events WHERE seq > ? AND seq < ? ORDER BY seq DESC LIMIT 1";
            let row = sqlx::query(self.q(LAST_SEEN))
                .bind(from)
                .bind(until)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
            if let Some(row) = row {
                last = Some(row.try_get::<String, _>(0).map_err(store_error)?);
            }
        }
        Ok(Some(FeedPage {
            events,
            next_after: last,
        }))
    }
}
