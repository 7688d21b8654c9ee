//! Liveness and readiness for load balancers and orchestrators.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`, `GET /readyz`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Every store in use answers; 503 naming the ones that do not.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    for (store, result) in state.stores.readiness().await {
        if let Err(err) = &result {
            tracing::warn!(store, error = %err, "readiness check failed");
            ready = false;
        }
        let status = if result.is_ok() { "ok" } else { "unavailable" };
        checks.insert(store.to_owned(), json!(status));
    }
    crate::instruments::ready(ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": checks,
    });
    (status, Json(body))
}
