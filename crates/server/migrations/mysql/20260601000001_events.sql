-- The event outbox: each event is written in the same transaction as the change it describes.
-- seq gives the order (the feed's and the per-person delivery order); id (a UUIDv7) is what
-- receivers see (the feed cursor, the webhook-id). created_ms is the writer's wall clock, for
-- the short settling delay before an event is shown (see store/sql/events.rs).
CREATE TABLE events (
    seq          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    id           VARCHAR(36)  NOT NULL,
    type         VARCHAR(64)  NOT NULL,
    user_id      VARCHAR(36)  NOT NULL,
    occurred_at  BIGINT       NOT NULL,
    created_ms   BIGINT       NOT NULL,
    payload      VARCHAR(8000) NOT NULL,
    UNIQUE KEY events_id (id),
    KEY events_created_ms (created_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per (webhook endpoint, event): pending until a 2xx (delivered) or until retry_for
-- has passed (failed). A claim is a lease: lease_owner and lease_until_ms, so a dead instance's
-- claims expire.
CREATE TABLE webhook_deliveries (
    endpoint         VARCHAR(512) NOT NULL,
    event_seq        BIGINT       NOT NULL,
    user_id          VARCHAR(36)  NOT NULL,
    state            VARCHAR(16)  NOT NULL,
    attempts         BIGINT       NOT NULL DEFAULT 0,
    next_attempt_ms  BIGINT       NOT NULL,
    retry_from_ms    BIGINT       NOT NULL,
    lease_owner      VARCHAR(64)  NULL,
    lease_until_ms   BIGINT       NOT NULL DEFAULT 0,
    last_error       VARCHAR(512) NULL,
    delivered_ms     BIGINT       NULL,
    PRIMARY KEY (endpoint, event_seq),
    KEY webhook_deliveries_state (endpoint, state, event_seq),
    KEY webhook_deliveries_person (endpoint, user_id, event_seq),
    KEY webhook_deliveries_event (event_seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
