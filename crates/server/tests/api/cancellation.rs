//! Requests dropped at any moment: clients that hang up mid-login or mid-refresh leave no
//! transaction, lock or half-written change behind, so the next logins work at once.

use std::time::Duration;

use rand::Rng as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// How many requests are cut off in flight.
const DROPPED: usize = 400;
/// How many times.
const ROUNDS: usize = 6;

/// Sends `body` to `path` and hangs up after `after`, whatever the service is doing then.
/// True when the answer came first.
async fn post_and_hang_up(app: &TestApp, path: &str, body: Value, after: Duration) -> bool {
    let client = reqwest::Client::builder()
        .timeout(after)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    client.post(app.url(path)).json(&body).send().await.is_ok()
}

#[tokio::test]
async fn logins_and_refreshes_dropped_at_random_moments_leave_nothing_behind() {
    let app = spawn_app().await;
    // Refresh chains to cut into: each refresh token is presented once, then dropped.
    let mut refresh_tokens = Vec::new();
    for i in 0..40 {
        refresh_tokens.push(token(
            &app.login(&format!("chain-{i}")).await,
            "refresh_token",
        ));
    }
    let app = std::sync::Arc::new(app);
    for round in 0..ROUNDS {
        // Codes for first and returning logins, fetched before the storm.
        let mut jobs = Vec::with_capacity(DROPPED);
        for i in 0..DROPPED {
            let user = if i % 3 == 0 {
                format!("returning-{}", i % 10)
            } else {
                format!("new-{round}-{i}")
            };
            jobs.push(json!({ "code": app.code(&user).await }));
        }
        let mut storm = tokio::task::JoinSet::new();
        for (i, body) in jobs.into_iter().enumerate() {
            let app = app.clone();
            // From "before the handler runs" to "after it is done": every await point between.
            let after = Duration::from_micros(rand::rng().random_range(500..120_000));
            let (path, body) = match refresh_tokens.get(i / 2) {
                Some(refresh) if round == 0 && i % 2 == 1 => {
                    ("/v1/auth/refresh", json!({ "refresh_token": refresh }))
                }
                _ => ("/v1/auth/login", body),
            };
            storm.spawn(async move { post_and_hang_up(&app, path, body, after).await });
        }
        let mut answered = 0;
        while let Some(done) = storm.join_next().await {
            answered += usize::from(done.unwrap());
        }
        // Most must have been cut off, or the test tests nothing.
        assert!(
            answered < DROPPED / 2,
            "{answered} of {DROPPED} answered in time"
        );
    }

    // At once: ready, and new logins, returning logins and refreshes all work.
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "{}",
        ready.text().await.unwrap()
    );
    let mut after = tokio::task::JoinSet::new();
    for i in 0..20 {
        let app = app.clone();
        after.spawn(async move {
            let user = if i % 2 == 0 {
                format!("after-{i}")
            } else {
                format!("returning-{i}")
            };
            let login = app.login(&user).await;
            let response = app
                .post(
                    "/v1/auth/refresh",
                    json!({ "refresh_token": token(&login, "refresh_token") }),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK, "refresh after the storm");
            let pair: Value = response.json().await.unwrap();
            let me = app.me(&token(&pair, "access_token")).await;
            assert_eq!(me.status(), StatusCode::OK, "/v1/me after the storm");
        });
    }
    while let Some(done) = after.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn readiness_fails_while_the_database_cannot_take_a_write() {
    use crate::backend::Sql;
    use sqlx::{Connection as _, Executor as _};

    let app = spawn_app().await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // Another client holds the write lock (SQLite) or a lock on the table the probe writes.
    sqlx::any::install_default_drivers();
    let mut other = sqlx::AnyConnection::connect(&app.backend.database_url)
        .await
        .unwrap();
    let lock = match app.backend.sql {
        Sql::Sqlite => "BEGIN IMMEDIATE",
        Sql::Mysql => "LOCK TABLES login_codes WRITE",
        Sql::Postgres => "BEGIN; LOCK TABLE login_codes IN ACCESS EXCLUSIVE MODE",
    };
    other.execute(lock).await.unwrap();
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "unavailable", "{body}");

    let unlock = match app.backend.sql {
        Sql::Mysql => "UNLOCK TABLES",
        Sql::Sqlite | Sql::Postgres => "ROLLBACK",
    };
    other.execute(unlock).await.unwrap();
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
