-- The audit log: what operators did through the admin API or the CLI, and the security
-- events (refresh-token reuse, revocations by an operator, merges, deletions). Rows name
-- persons and sessions by id only, never by openid, nickname or phone, so that an erased
-- person leaves nothing readable here. The id is a UUIDv7: time-ordered, the paging cursor.
CREATE TABLE audit_log (
    id           VARCHAR(36)   NOT NULL PRIMARY KEY,
    occurred_at  BIGINT        NOT NULL,
    actor_kind   VARCHAR(16)   NOT NULL,
    actor        VARCHAR(128)  NULL,
    action       VARCHAR(64)   NOT NULL,
    target       VARCHAR(128)  NULL,
    ip           VARCHAR(64)   NULL,
    detail       VARCHAR(1024) NULL,
    KEY audit_log_occurred_at (occurred_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Finding persons by phone number in the admin API.
CREATE INDEX users_phone_number ON users (phone_number);
