-- Phone numbers, app-specific profile fields, merges of persons, the shared WeChat access
-- token cache and the login-code cache.
ALTER TABLE users
    ADD COLUMN phone_country_code VARCHAR(8) NULL,
    ADD COLUMN phone_number VARCHAR(32) NULL,
    ADD COLUMN extra VARCHAR(4096) NULL;

CREATE TABLE user_merges (
    merged_id    VARCHAR(36)  NOT NULL PRIMARY KEY,
    survivor_id  VARCHAR(36)  NOT NULL,
    unionid      VARCHAR(128) NOT NULL,
    merged_at    BIGINT       NOT NULL,
    KEY user_merges_survivor (survivor_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE wechat_tokens (
    app_id      VARCHAR(64)  NOT NULL PRIMARY KEY,
    token       VARCHAR(1024) NULL,
    expires_at  BIGINT       NOT NULL DEFAULT 0,
    lock_until  BIGINT       NOT NULL DEFAULT 0
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE login_codes (
    hash        CHAR(64)      NOT NULL PRIMARY KEY,
    result      VARCHAR(1024) NULL,
    expires_at  BIGINT        NOT NULL,
    KEY login_codes_expires_at (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
