-- The pair a refresh handed out, sealed with the data key, kept for tokens.refresh_grace: the
-- same refresh token presented again just after (a double submit, a retry after a lost
-- answer) gets that pair back instead of revoking the session as reuse.
CREATE TABLE refresh_grace (
    hash        CHAR(64)      NOT NULL PRIMARY KEY,
    session_id  VARCHAR(64)   NOT NULL,
    successor   VARCHAR(8192) NOT NULL,
    expires_at  BIGINT        NOT NULL,
    KEY refresh_grace_session_id (session_id),
    KEY refresh_grace_expires_at (expires_at),
    CONSTRAINT refresh_grace_session FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
