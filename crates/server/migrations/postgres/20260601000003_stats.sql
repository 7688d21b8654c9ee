-- Login and WeChat statistics for GET /v1/admin/stats, per hour (UTC) and app. Each instance
-- adds its counts in memory and flushes them every few seconds as additive upserts: no
-- statement per login. Day figures are the sums of their hours, except distinct active persons,
-- which are kept per hour ('h') and per day ('d'), with app_id '*' for all apps together.
CREATE TABLE stats_logins (
    bucket_start  BIGINT       NOT NULL,
    app_id        TEXT         NOT NULL,
    outcome       TEXT         NOT NULL,
    n             BIGINT       NOT NULL,
    PRIMARY KEY (bucket_start, app_id, outcome)
);

CREATE TABLE stats_wechat (
    bucket_start  BIGINT       NOT NULL,
    app_id        TEXT         NOT NULL,
    endpoint      TEXT         NOT NULL,
    errcode       TEXT         NOT NULL,
    calls         BIGINT       NOT NULL,
    total_ms      BIGINT       NOT NULL,
    PRIMARY KEY (bucket_start, app_id, endpoint, errcode)
);

CREATE TABLE stats_active (
    period        TEXT         NOT NULL,
    bucket_start  BIGINT       NOT NULL,
    app_id        TEXT         NOT NULL,
    user_id       TEXT         NOT NULL,
    PRIMARY KEY (period, bucket_start, app_id, user_id)
);
