-- MySQL 8 / MariaDB 10.11+. utf8mb4 everywhere so emoji nicknames survive; the binary collation
-- keeps identifiers case-sensitive (openids differ by case). Columns are VARCHAR rather than
-- TEXT so every backend reads them as text.

CREATE TABLE users (
    id          VARCHAR(36)   NOT NULL PRIMARY KEY,
    unionid     VARCHAR(128)  NULL UNIQUE,
    nickname    VARCHAR(255)  NULL,
    avatar_url  VARCHAR(1024) NULL,
    gender      BIGINT        NOT NULL DEFAULT 0,
    city        VARCHAR(255)  NULL,
    province    VARCHAR(255)  NULL,
    country     VARCHAR(255)  NULL,
    language    VARCHAR(64)   NULL,
    created_at  BIGINT        NOT NULL,
    updated_at  BIGINT        NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE identities (
    app_id      VARCHAR(64)   NOT NULL,
    openid      VARCHAR(128)  NOT NULL,
    user_id     VARCHAR(36)   NOT NULL,
    created_at  BIGINT        NOT NULL,
    PRIMARY KEY (app_id, openid),
    KEY identities_user_id (user_id),
    CONSTRAINT identities_user FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE sessions (
    id              VARCHAR(64)   NOT NULL PRIMARY KEY,
    app_id          VARCHAR(64)   NOT NULL,
    openid          VARCHAR(128)  NOT NULL,
    session_key     VARCHAR(255)  NOT NULL,
    created_at      BIGINT        NOT NULL,
    last_seen_at    BIGINT        NOT NULL,
    expires_at      BIGINT        NOT NULL,
    revoked_at      BIGINT        NULL,
    revoke_reason   VARCHAR(64)   NULL,
    user_agent      VARCHAR(512)  NULL,
    ip              VARCHAR(64)   NULL,
    KEY sessions_identity (app_id, openid),
    KEY sessions_expires_at (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE tokens (
    hash        CHAR(64)      NOT NULL PRIMARY KEY,
    session_id  VARCHAR(64)   NOT NULL,
    kind        VARCHAR(16)   NOT NULL,
    expires_at  BIGINT        NOT NULL,
    used_at     BIGINT        NULL,
    KEY tokens_session_id (session_id),
    KEY tokens_expires_at (expires_at),
    CONSTRAINT tokens_session FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
