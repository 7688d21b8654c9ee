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

use sqlx::{AnyConnection, Row as _};
use tokio::sync::Notify;
use wxauth_wechat::{AppId, OpenId};

use super::{Dialect, Query, SqlStore, store_error};
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
    tx: &mut AnyConnection,
    event: &Event,
) -> Result<(), sqlx::Error> {
    bind_event(sqlx::query(store.q(INSERT)), event, wall_ms())
        .execute(&mut *tx)
        .await?;
    for endpoint in store.outbox.endpoints() {
        if endpoint.takes(event.kind) {
            bind_delivery(
                sqlx::query(store.q(DELIVERY)),
                &endpoint.url,
                store.settle_ms(),
                event,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

const INSERT: &str = "INSERT INTO events (id, type, user_id, occurred_at, created_ms, payload) \
                      VALUES (?, ?, ?, ?, ?, ?)";

/// A delivery of an event to an endpoint. Its first attempt waits for the event to settle, so
/// that an earlier event of the same person still being committed is seen first (see the
/// module's comment).
const DELIVERY: &str = "INSERT INTO webhook_deliveries (endpoint, event_seq, user_id, state, \
     attempts, next_attempt_ms, retry_from_ms, lease_until_ms) \
     SELECT ?, seq, user_id, 'pending', 0, created_ms + ?, created_ms, 0 FROM events \
     WHERE id = ?";

/// The statements that write some events and their deliveries, as part of one text of
/// statements (SQLite runs a text's statements in order, in one execution): [`Inserts::sql`]
/// appends them to the text, [`Inserts::bind`] binds their values in the same order.
pub(super) struct Inserts<'a> {
    events: &'a [Event],
    endpoints: &'a [Endpoint],
    settle_ms: i64,
    created_ms: i64,
}

impl<'a> Inserts<'a> {
    /// `endpoints` as [`Outbox::endpoints`] gives them; `settle_ms` as
    /// [`SqlStore::settle_ms`].
    pub(super) fn new(events: &'a [Event], endpoints: &'a [Endpoint], settle_ms: i64) -> Self {
        Self {
            events,
            endpoints,
            settle_ms,
            created_ms: wall_ms(),
        }
    }

    fn endpoints_of(&self, event: &'a Event) -> impl Iterator<Item = &'a Endpoint> + use<'a> {
        self.endpoints.iter().filter(|e| e.takes(event.kind))
    }

    /// Appends the statements (each after a `; `).
    pub(super) fn sql(&self, text: &mut String) {
        for event in self.events {
            text.push_str("; ");
            text.push_str(INSERT);
            for _ in self.endpoints_of(event) {
                text.push_str("; ");
                text.push_str(DELIVERY);
            }
        }
    }

    /// Binds the statements' values, in [`Inserts::sql`]'s order.
    pub(super) fn bind<'q>(&self, mut query: Query<'q>) -> Query<'q>
    where
        'a: 'q,
    {
        for event in self.events {
            query = bind_event(query, event, self.created_ms);
            for endpoint in self.endpoints_of(event) {
                query = bind_delivery(query, &endpoint.url, self.settle_ms, event);
            }
        }
        query
    }
}

/// Binds [`INSERT`]'s values.
fn bind_event<'q>(query: Query<'q>, event: &'q Event, created_ms: i64) -> Query<'q> {
    query
        .bind(event.id.as_str())
        .bind(event.kind)
        .bind(event.user_id.as_str())
        .bind(event.occurred_at)
        .bind(created_ms)
        .bind(event.to_json())
}

/// Binds [`DELIVERY`]'s values.
fn bind_delivery<'q>(
    query: Query<'q>,
    endpoint: &'q str,
    settle_ms: i64,
    event: &'q Event,
) -> Query<'q> {
    query.bind(endpoint).bind(settle_ms).bind(event.id.as_str())
}

/// The person behind an identity, inside a transaction.
pub(super) async fn person_of(
    store: &SqlStore,
    tx: &mut AnyConnection,
    app_id: &str,
    openid: &str,
) -> Result<Option<UserId>, sqlx::Error> {
    const SQL: &str = "SELECT user_id FROM identities WHERE app_id = ? AND openid = ?";
    let row = sqlx::query(store.q(SQL))
        .bind(app_id)
        .bind(openid)
        .fetch_optional(&mut *tx)
        .await?;
    row.map(|row| row.try_get::<String, _>(0).map(UserId::new))
        .transpose()
}

/// `session.revoked` for a session of an identity, inside a transaction (nothing when the
/// identity's person is gone: there is nobody to tell about).
pub(super) async fn session_revoked(
    store: &SqlStore,
    tx: &mut AnyConnection,
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

/// A delivery claimed for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The event's position.
    pub event_seq: i64,
    /// The event id (the webhook-id).
    pub event_id: String,
    /// The envelope (the body).
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When retrying started (the event, or its redelivery), wall-clock ms.
    pub retry_from_ms: i64,
}

/// What became of an attempt.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// A 2xx.
    Delivered,
    /// Try again at `next_attempt_ms`.
    Retry {
        /// When (wall-clock ms).
        next_attempt_ms: i64,
        /// What went wrong (no secrets: a status or an error kind).
        error: String,
    },
    /// Retried for long enough: given up.
    Failed {
        /// What went wrong last.
        error: String,
    },
}

/// One delivery, as `wxauth events list` shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// The event's position.
    pub event_seq: i64,
    /// The endpoint URL.
    pub endpoint: String,
    /// pending, delivered or failed.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last error.
    pub last_error: Option<String>,
}

/// Most deliveries of one endpoint claimed at once.
pub const CLAIM_BATCH: i64 = 32;

impl SqlStore {
    /// Claims up to [`CLAIM_BATCH`] deliveries due at `endpoint` for `lease_ms`: pending, due,
    /// not leased by a live claim, and the earliest undelivered one of their person there
    /// (a later event of a person waits while an earlier one is retried). Two instances never
    /// claim one delivery at once: rows are locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL
    /// and MariaDB/MySQL; SQLite serializes writers) and the lease is checked again as it
    /// is taken.
    pub async fn claim_deliveries(
        &self,
        endpoint: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let (endpoint, owner) = (endpoint.to_owned(), owner.to_owned());
        self.detached_quiet(move |store| {
            let (endpoint, owner) = (endpoint.clone(), owner.clone());
            async move {
                store
                    .run_claim_deliveries(&endpoint, &owner, lease_ms)
                    .await
            }
        })
        .await
    }

    async fn run_claim_deliveries(
        &self,
        endpoint: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        const DUE: &str = "SELECT d.event_seq, d.attempts, d.retry_from_ms \
             FROM webhook_deliveries d \
             WHERE d.endpoint = ? AND d.state = 'pending' AND d.next_attempt_ms <= ? \
             AND d.lease_until_ms <= ? AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
             WHERE p.endpoint = d.endpoint AND p.user_id = d.user_id AND p.state = 'pending' \
             AND p.event_seq < d.event_seq) \
             ORDER BY d.event_seq LIMIT ?";
        const LEASE: &str = "UPDATE webhook_deliveries SET lease_owner = ?, lease_until_ms = ? \
             WHERE endpoint = ? AND event_seq = ? AND state = 'pending' AND lease_until_ms <= ?";
        const PAYLOAD: &str = "SELECT id, payload FROM events WHERE seq = ?";
        const ANY_DUE: &str = "SELECT 1 FROM webhook_deliveries WHERE endpoint = ? \
             AND state = 'pending' AND next_attempt_ms <= ? AND lease_until_ms <= ? LIMIT 1";
        let now = wall_ms();
        // Most polls find nothing: a plain read says so without a write transaction (which on
        // SQLite would take the one writer every time).
        let anything = sqlx::query(self.q(ANY_DUE))
            .bind(endpoint)
            .bind(now)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        if anything.is_none() {
            return Ok(Vec::new());
        }
        let due = match self.dialect {
            Dialect::Sqlite => DUE.to_owned(),
            _ => format!("{DUE} FOR UPDATE SKIP LOCKED"),
        };
        let due = self.prepare(&due);
        let mut tx = self.begin().await?;
        let rows = sqlx::query(&due)
            .bind(endpoint)
            .bind(now)
            .bind(now)
            .bind(CLAIM_BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let event_seq: i64 = row.try_get(0).map_err(store_error)?;
            let leased = sqlx::query(self.q(LEASE))
                .bind(owner)
                .bind(now + lease_ms)
                .bind(endpoint)
                .bind(event_seq)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
            if leased != 1 {
                continue;
            }
            let event = sqlx::query(self.q(PAYLOAD))
                .bind(event_seq)
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
            claimed.push(Claimed {
                event_seq,
                event_id: event.try_get(0).map_err(store_error)?,
                payload: event.try_get(1).map_err(store_error)?,
                attempts: row.try_get(1).map_err(store_error)?,
                retry_from_ms: row.try_get(2).map_err(store_error)?,
            });
        }
        tx.commit().await.map_err(store_error)?;
        Ok(claimed)
    }

    /// Records what an attempt came to, if `owner` still holds the lease.
    pub async fn record_attempt(
        &self,
        endpoint: &str,
        event_seq: i64,
        owner: &str,
        attempt: Attempt,
    ) -> Result<(), StoreError> {
        const DELIVERED: &str = "UPDATE webhook_deliveries SET state = 'delivered', \
             attempts = attempts + 1, delivered_ms = ?, lease_owner = NULL, lease_until_ms = 0, \
             last_error = NULL WHERE endpoint = ? AND event_seq = ? AND lease_owner = ? \
             AND state = 'pending'";
        const RETRY: &str = "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, \
             next_attempt_ms = ?, lease_owner = NULL, lease_until_ms = 0, last_error = ? \
             WHERE endpoint = ? AND event_seq = ? AND lease_owner = ? AND state = 'pending'";
        let (endpoint, owner) = (endpoint.to_owned(), owner.to_owned());
        let now = wall_ms();
        match attempt {
            Attempt::Delivered => {
                self.write_one_quiet(DELIVERED, move |q| {
                    q.bind(now)
                        .bind(endpoint.clone())
                        .bind(event_seq)
                        .bind(owner.clone())
                })
                .await?
            }
            Attempt::Retry {
                next_attempt_ms,
                error,
            } => {
                self.write_one_quiet(RETRY, move |q| {
                    q.bind("pending")
                        .bind(next_attempt_ms)
                        .bind(error.clone())
                        .bind(endpoint.clone())
                        .bind(event_seq)
                        .bind(owner.clone())
                })
                .await?
            }
            Attempt::Failed { error } => {
                self.write_one_quiet(RETRY, move |q| {
                    q.bind("failed")
                        .bind(now)
                        .bind(error.clone())
                        .bind(endpoint.clone())
                        .bind(event_seq)
                        .bind(owner.clone())
                })
                .await?
            }
        };
        Ok(())
    }

    /// When the oldest event still waiting for `endpoint` was written (wall-clock ms), if any
    /// waits (for the `wxauth_webhook_oldest_pending_seconds` gauge).
    pub async fn oldest_pending_ms(&self, endpoint: &str) -> Result<Option<i64>, StoreError> {
        const SQL: &str = "SELECT e.created_ms FROM webhook_deliveries d \
             JOIN events e ON e.seq = d.event_seq \
             WHERE d.endpoint = ? AND d.state = 'pending' ORDER BY d.event_seq LIMIT 1";
        sqlx::query_scalar::<_, i64>(self.q(SQL))
            .bind(endpoint)
            .fetch_optional(self.pool())
            .await
            .map_err(store_error)
    }

    /// Gives up the leases `owner` still holds (at shutdown), so another instance may send
    /// them at once instead of after the lease.
    pub async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until_ms = 0 \
                           WHERE lease_owner = ? AND state = 'pending'";
        let owner = owner.to_owned();
        self.write_one_quiet(SQL, move |q| q.bind(owner.clone()))
            .await
    }

    /// Deletes events written before `before_ms` that no configured endpoint still waits
    /// for, with their deliveries; returns how many events went.
    pub async fn purge_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.detached_quiet(move |store| async move { store.run_purge_events(before_ms).await })
            .await
    }

    async fn run_purge_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        const BATCH: usize = 500;
        let endpoints = self.outbox.endpoints();
        let mut sql = String::from("SELECT e.seq FROM events e WHERE e.created_ms < ?");
        if !endpoints.is_empty() {
            sql.push_str(
                " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = e.seq \
                 AND d.state = 'pending' AND d.endpoint IN (",
            );
            sql.push_str(&vec!["?"; endpoints.len()].join(", "));
            sql.push_str("))");
        }
        sql.push_str(&format!(" ORDER BY e.seq LIMIT {BATCH}"));
        let sql = self.prepare(&sql);
        let mut purged = 0;
        loop {
            let mut query = sqlx::query(&sql).bind(before_ms);
            for endpoint in &endpoints {
                query = query.bind(endpoint.url.as_str());
            }
            let seqs: Vec<i64> = query
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(store_error)?;
            if seqs.is_empty() {
                return Ok(purged);
            }
            let list = vec!["?"; seqs.len()].join(", ");
            let deliveries = self.prepare(&format!(
                "DELETE FROM webhook_deliveries WHERE event_seq IN ({list})"
            ));
            let events = self.prepare(&format!("DELETE FROM events WHERE seq IN ({list})"));
            let mut tx = self.begin().await?;
            for statement in [&deliveries, &events] {
                let mut query = sqlx::query(statement);
                for seq in &seqs {
                    query = query.bind(*seq);
                }
                query.execute(&mut *tx).await.map_err(store_error)?;
            }
            tx.commit().await.map_err(store_error)?;
            purged += seqs.len() as u64;
            if seqs.len() < BATCH {
                return Ok(purged);
            }
        }
    }

    /// The newest events (with a failed delivery only, when `failed`), newest first, and
    /// their deliveries.
    pub async fn list_events(
        &self,
        failed: bool,
        limit: i64,
    ) -> Result<Vec<(StoredEvent, Vec<DeliveryRow>)>, StoreError> {
        const ALL: &str = "SELECT seq, id, type, user_id, occurred_at, payload FROM events \
                           ORDER BY seq DESC LIMIT ?";
        const FAILED: &str = "SELECT seq, id, type, user_id, occurred_at, payload FROM events e \
             WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = e.seq \
             AND d.state = 'failed') ORDER BY seq DESC LIMIT ?";
        const DELIVERIES: &str = "SELECT event_seq, endpoint, state, attempts, last_error \
             FROM webhook_deliveries WHERE event_seq = ? ORDER BY endpoint";
        let rows = sqlx::query(self.q(if failed { FAILED } else { ALL }))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let event = StoredEvent {
                seq: row.try_get("seq").map_err(store_error)?,
                id: row.try_get("id").map_err(store_error)?,
                kind: row.try_get("type").map_err(store_error)?,
                user_id: row.try_get("user_id").map_err(store_error)?,
                occurred_at: row.try_get("occurred_at").map_err(store_error)?,
                payload: row.try_get("payload").map_err(store_error)?,
            };
            let deliveries = sqlx::query(self.q(DELIVERIES))
                .bind(event.seq)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?
                .iter()
                .map(|d| {
                    Ok(DeliveryRow {
                        event_seq: d.try_get(0)?,
                        endpoint: d.try_get(1)?,
                        state: d.try_get(2)?,
                        attempts: d.try_get(3)?,
                        last_error: d.try_get(4)?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(store_error)?;
            out.push((event, deliveries));
        }
        Ok(out)
    }

    /// Sends an event again to every configured endpoint that takes its type (from the start
    /// of its retry window); `false` when there is no such event.
    pub async fn redeliver(&self, event_id: &str) -> Result<bool, StoreError> {
        let event_id = event_id.to_owned();
        self.detached_quiet(move |store| {
            let event_id = event_id.clone();
            async move { store.run_redeliver(&event_id).await }
        })
        .await
    }

    async fn run_redeliver(&self, event_id: &str) -> Result<bool, StoreError> {
        const EVENT: &str = "SELECT seq, type, user_id FROM events WHERE id = ?";
        const RESET: &str = "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
             next_attempt_ms = ?, retry_from_ms = ?, lease_owner = NULL, lease_until_ms = 0, \
             last_error = NULL, delivered_ms = NULL WHERE endpoint = ? AND event_seq = ?";
        const ADD: &str = "INSERT INTO webhook_deliveries (endpoint, event_seq, user_id, state, \
             attempts, next_attempt_ms, retry_from_ms, lease_until_ms) \
             VALUES (?, ?, ?, 'pending', 0, ?, ?, 0)";
        let now = wall_ms();
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query(self.q(EVENT))
            .bind(event_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?
        else {
            tx.rollback().await.map_err(store_error)?;
            return Ok(false);
        };
        let seq: i64 = row.try_get(0).map_err(store_error)?;
        let kind: String = row.try_get(1).map_err(store_error)?;
        let user_id: String = row.try_get(2).map_err(store_error)?;
        for endpoint in self.outbox.endpoints() {
            if !endpoint.takes(&kind) {
                continue;
            }
            let reset = sqlx::query(self.q(RESET))
                .bind(now)
                .bind(now)
                .bind(endpoint.url.as_str())
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
            if reset == 0 {
                sqlx::query(self.q(ADD))
                    .bind(endpoint.url.as_str())
                    .bind(seq)
                    .bind(user_id.as_str())
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
            }
        }
        tx.commit().await.map_err(store_error)?;
        self.events_written();
        Ok(true)
    }

    /// Sends every failed delivery again; returns how many.
    pub async fn redeliver_failed(&self) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
             next_attempt_ms = ?, retry_from_ms = ?, lease_owner = NULL, lease_until_ms = 0, \
             last_error = NULL WHERE state = 'failed'";
        let now = wall_ms();
        let n = self
            .write_one_quiet(SQL, move |q| q.bind(now).bind(now))
            .await?;
        self.events_written();
        Ok(n)
    }
}
