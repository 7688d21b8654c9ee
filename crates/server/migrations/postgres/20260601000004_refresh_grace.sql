-- The pair a refresh handed out, sealed with the data key, kept for tokens.refresh_grace: the
-- same refresh token presented again just after (a double submit, a retry after a lost
-- answer) gets that pair back instead of revoking the session as reuse.
CREATE TABLE refresh_grace (
    hash        TEXT    PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    successor   TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX refresh_grace_session_id ON refresh_grace (session_id);
CREATE INDEX refresh_grace_expires_at ON refresh_grace (expires_at);
