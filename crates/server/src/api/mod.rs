//! The HTTP API: each area is a module with its own `router()`, merged here.

pub mod auth;
pub mod health;
pub mod me;
pub mod services;
mod views;
pub mod wellknown;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest JSON body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The whole service as one router.
pub fn router(state: AppState) -> Router {
    // Uploaded files; a missing one is a 404 in the API's error shape.
    let media = ServeDir::new(&state.media.dir)
        .not_found_service(axum::routing::any(|| async { ApiError::NotFound }));
    Router::new()
        .merge(auth::router())
        .merge(me::router(state.media.max_bytes))
        .merge(health::router())
        .merge(wellknown::router())
        .merge(services::router())
        .nest_service("/media", media)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                // The path only: no query string, no headers (they carry tokens).
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(CatchPanicLayer::custom(|_| panic_response()))
        .with_state(state)
}

fn panic_response() -> Response {
    tracing::error!("a request handler panicked");
    let mut response = ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response();
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
