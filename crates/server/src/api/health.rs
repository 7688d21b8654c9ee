//! Liveness and readiness for load balancers and orchestrators.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// `GET /healthz`, `GET /readyz`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// `GET /healthz` answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always "ok".
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// `GET /readyz` answer.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// "ready", or "unavailable" when a store does not answer.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
    /// Each store in use: "ok" or "unavailable".
    #[schema(value_type = BTreeMap<String, String>, example = json!({"database": "ok"}))]
    pub checks: BTreeMap<&'static str, &'static str>,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "Up", body = Health)),
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Every store in use answers; 503 naming the ones that do not.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Every store answers", body = Readiness),
        (status = 503, description = "A store does not answer", body = Readiness),
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let mut checks = BTreeMap::new();
    let mut ready = true;
    for (store, result) in state.stores.readiness().await {
        if let Err(err) = &result {
            tracing::warn!(store, error = %err, "readiness check failed");
            ready = false;
        }
        let status = if result.is_ok() { "ok" } else { "unavailable" };
        checks.insert(store, status);
    }
    crate::instruments::ready(ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        checks,
    };
    (status, Json(body))
}
