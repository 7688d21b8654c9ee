-- The event outbox: each event is written in the same transaction as the change it describes.
-- seq gives the order (the feed's and the per-person delivery order); id (a UUIDv7) is what
-- receivers see (the feed cursor, the webhook-id). created_ms is the writer's wall clock, for
-- the short settling delay before an event is shown (see store/sql/events.rs).
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    type         TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    occurred_at  INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    payload      TEXT    NOT NULL
);
CREATE INDEX events_created_ms ON events (created_ms);

-- One row per (webhook endpoint, event): pending until a 2xx (delivered) or until retry_for
-- has passed (failed). A claim is a lease: lease_owner and lease_until_ms, so a dead instance's
-- claims expire.
CREATE TABLE webhook_deliveries (
    endpoint         TEXT    NOT NULL,
    event_seq        INTEGER NOT NULL,
    user_id          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  INTEGER NOT NULL,
    retry_from_ms    INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until_ms   INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    delivered_ms     INTEGER,
    PRIMARY KEY (endpoint, event_seq)
);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (endpoint, state, event_seq);
CREATE INDEX webhook_deliveries_person ON webhook_deliveries (endpoint, user_id, event_seq);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_seq);
