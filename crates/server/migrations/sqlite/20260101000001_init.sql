-- Persons: one row per human, linked across mini programs by unionid.
CREATE TABLE users (
    id          TEXT PRIMARY KEY NOT NULL,
    unionid     TEXT UNIQUE,
    nickname    TEXT,
    avatar_url  TEXT,
    gender      INTEGER NOT NULL DEFAULT 0,
    city        TEXT,
    province    TEXT,
    country     TEXT,
    language    TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- Identities: one row per (mini program, openid), pointing at its person.
CREATE TABLE identities (
    app_id      TEXT NOT NULL,
    openid      TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, openid)
) STRICT, WITHOUT ROWID;
CREATE INDEX identities_user_id ON identities (user_id);

-- Login sessions of one identity; the session_key is sealed with the data key.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY NOT NULL,
    app_id          TEXT NOT NULL,
    openid          TEXT NOT NULL,
    session_key     TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    revoke_reason   TEXT,
    user_agent      TEXT,
    ip              TEXT
) STRICT;
CREATE INDEX sessions_identity ON sessions (app_id, openid);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Access and refresh tokens, by SHA-256 only. A used refresh token stays until it expires so
-- that presenting it again is recognised as reuse.
CREATE TABLE tokens (
    hash        TEXT PRIMARY KEY NOT NULL,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX tokens_session_id ON tokens (session_id);
CREATE INDEX tokens_expires_at ON tokens (expires_at);
