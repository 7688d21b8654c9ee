//! What other services need to trust wxauth's tokens: the public signing keys (RFC 7517) and
//! the authorization-server metadata that points at them (RFC 8414).
//!
//! The keys are published whatever `tokens.format` says: with opaque tokens nothing is signed
//! yet, but verifiers can be set up before the switch to JWTs, and the switch needs no
//! restart of theirs.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::state::AppState;

/// How long verifiers and proxies may cache the documents. Short against the time a
/// rotated-out key stays published, so a cache never misses a key for long.
const CACHE_CONTROL: &str = "public, max-age=300";

/// `GET /.well-known/jwks.json`, `GET /.well-known/oauth-authorization-server`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
}

/// The published public keys, from memory; a reread of the database is started now and then,
/// so a key another instance made shows within seconds.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "tokens",
    responses((status = 200, description = "The JSON Web Key Set (RFC 7517)", body = Object,
        headers(("Cache-Control" = String)),
        example = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "...", "x": "..."}]}))),
)]
pub(crate) async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    state.keys.refresh_soon();
    (
        [(header::CACHE_CONTROL, CACHE_CONTROL)],
        Json(state.keys.jwks()),
    )
}

/// RFC 8414 metadata: the issuer, where its keys are, and how to introspect a token.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "tokens",
    responses((status = 200, description = "Authorization-server metadata (RFC 8414)", body = Object,
        headers(("Cache-Control" = String)))),
)]
pub(crate) async fn metadata(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, CACHE_CONTROL)],
        Json(metadata_document(&state)),
    )
}

fn metadata_document(state: &AppState) -> Value {
    let base = state.media.public_url.as_str().trim_end_matches('/');
    json!({
        "issuer": state.keys.settings().issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{base}/v1/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        // wxauth logs users in from a mini program's code, not through OAuth redirects.
        "response_types_supported": [],
    })
}
