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

/// Every store answers; 503 naming the ones that do not.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.stores.users.ping().await;
    if let Err(err) = &database {
        tracing::warn!(error = %err, "readiness: database check failed");
    }
    let ok = database.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": { "database": if database.is_ok() { "ok" } else { "unavailable" } },
    });
    (status, Json(body))
}
