-- Phone numbers, app-specific profile fields, merges of persons, the shared WeChat access
-- token cache and the login-code cache.
ALTER TABLE users
    ADD COLUMN phone_country_code TEXT,
    ADD COLUMN phone_number TEXT,
    ADD COLUMN extra TEXT;

CREATE TABLE user_merges (
    merged_id    TEXT    PRIMARY KEY,
    survivor_id  TEXT    NOT NULL,
    unionid      TEXT    NOT NULL,
    merged_at    BIGINT  NOT NULL
);
CREATE INDEX user_merges_survivor ON user_merges (survivor_id);

CREATE TABLE wechat_tokens (
    app_id      TEXT    PRIMARY KEY,
    token       TEXT,
    expires_at  BIGINT  NOT NULL DEFAULT 0,
    lock_until  BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE login_codes (
    hash        TEXT    PRIMARY KEY,
    result      TEXT,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX login_codes_expires_at ON login_codes (expires_at);
