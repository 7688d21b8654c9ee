-- Login and WeChat statistics for GET /v1/admin/stats, per hour (UTC) and app. Each instance
-- adds its counts in memory and flushes them every few seconds as additive upserts: no
-- statement per login. Day figures are the sums of their hours, except distinct active persons,
-- which are kept per hour ('h') and per day ('d'), with app_id '*' for all apps together.
CREATE TABLE stats_logins (
    bucket_start  BIGINT       NOT NULL,
    app_id        VARCHAR(32)  NOT NULL,
    outcome       VARCHAR(64)  NOT NULL,
    n             BIGINT       NOT NULL,
    PRIMARY KEY (bucket_start, app_id, outcome)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE stats_wechat (
    bucket_start  BIGINT       NOT NULL,
    app_id        VARCHAR(32)  NOT NULL,
    endpoint      VARCHAR(32)  NOT NULL,
    errcode       VARCHAR(16)  NOT NULL,
    calls         BIGINT       NOT NULL,
    total_ms      BIGINT       NOT NULL,
    PRIMARY KEY (bucket_start, app_id, endpoint, errcode)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE stats_active (
    period        CHAR(1)      NOT NULL,
    bucket_start  BIGINT       NOT NULL,
    app_id        VARCHAR(32)  NOT NULL,
    user_id       VARCHAR(36)  NOT NULL,
    PRIMARY KEY (period, bucket_start, app_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
