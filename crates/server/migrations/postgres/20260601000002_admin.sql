-- The audit log: what operators did through the admin API or the CLI, and the security
-- events (refresh-token reuse, revocations by an operator, merges, deletions). Rows name
-- persons and sessions by id only, never by openid, nickname or phone, so that an erased
-- person leaves nothing readable here. The id is a UUIDv7: time-ordered, the paging cursor.
CREATE TABLE audit_log (
    id           TEXT    PRIMARY KEY,
    occurred_at  BIGINT  NOT NULL,
    actor_kind   TEXT    NOT NULL,
    actor        TEXT,
    action       TEXT    NOT NULL,
    target       TEXT,
    ip           TEXT,
    detail       TEXT
);
CREATE INDEX audit_log_occurred_at ON audit_log (occurred_at);

-- Finding persons by phone number in the admin API.
CREATE INDEX users_phone_number ON users (phone_number);
