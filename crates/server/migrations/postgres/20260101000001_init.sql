-- PostgreSQL. Text is UTF-8 and compared exactly, so emoji and case-sensitive openids are safe.

CREATE TABLE users (
    id          TEXT    PRIMARY KEY,
    unionid     TEXT    UNIQUE,
    nickname    TEXT,
    avatar_url  TEXT,
    gender      BIGINT  NOT NULL DEFAULT 0,
    city        TEXT,
    province    TEXT,
    country     TEXT,
    language    TEXT,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE identities (
    app_id      TEXT    NOT NULL,
    openid      TEXT    NOT NULL,
    user_id     TEXT    NOT NULL REFERENCES users (id),
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (app_id, openid)
);
CREATE INDEX identities_user_id ON identities (user_id);

CREATE TABLE sessions (
    id              TEXT    PRIMARY KEY,
    app_id          TEXT    NOT NULL,
    openid          TEXT    NOT NULL,
    session_key     TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    last_seen_at    BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    revoked_at      BIGINT,
    revoke_reason   TEXT,
    user_agent      TEXT,
    ip              TEXT
);
CREATE INDEX sessions_identity ON sessions (app_id, openid);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE tokens (
    hash        TEXT    PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL CHECK (kind IN ('access', 'refresh')),
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT
);
CREATE INDEX tokens_session_id ON tokens (session_id);
CREATE INDEX tokens_expires_at ON tokens (expires_at);
