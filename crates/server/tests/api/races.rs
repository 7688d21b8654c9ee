//! Store operations racing each other on one database: none may fail because the database
//! picked it as a deadlock victim (InnoDB does so even for single statements, e.g. a purge by
//! expiry beside a delete by key, since they lock a row's index entries in opposite orders).

use std::sync::Arc;

use crate::helpers::*;

/// Claims, fulfils and releases per worker.
const ROUNDS: usize = 150;
/// Workers claiming codes beside the purge.
const WORKERS: usize = 6;

#[tokio::test]
async fn code_claims_and_releases_beside_the_purge_never_fail() {
    let app = Arc::new(spawn_app().await);
    let now = app.clock_now();
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let codes = &app.state.stores.codes;
            for round in 0..ROUNDS {
                let hash = format!("race-{worker}-{round}");
                // Already expired half of the time, so that the purge deletes what a worker
                // is about to delete or update.
                let expires_at = now + (round % 2) as i64;
                codes.claim(&hash, now, expires_at).await.unwrap();
                if round % 3 == 0 {
                    codes.fulfil(&hash, "{}", expires_at).await.unwrap();
                }
                codes.release(&hash).await.unwrap();
            }
        }));
    }
    for _ in 0..2 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let sessions = &app.state.stores.sessions;
            for _ in 0..ROUNDS {
                sessions.purge_expired(now + 1, now - 1).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
