//! The web console at `/admin/`: a few static files built into the binary (nothing to install
//! or build beyond `cargo build`), which sign in with an admin key and read everything through
//! the admin API. Pages are routed in the browser (`/admin/#/users/...`), so the server only
//! knows the files.
//!
//! Every answer under `/admin` carries a strict `Content-Security-Policy` (scripts, styles and
//! data from the console's own origin only; no inline script or style; no framing): see
//! [`HeadersLayer`]. The page is never cached; the other files are revalidated with their `ETag`.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use axum::Router;
use axum::http::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
    REFERRER_POLICY, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;

/// Where the console lives.
pub const PREFIX: &str = "/admin";

/// The policy of every console answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                       object-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
                       form-action 'none'";

/// A file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../assets/console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("charts.js", JS),
    asset!("i18n.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The `ETag` of each asset (a hash of its content), in [`ASSETS`] order.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.body);
                let tag = format!("\"{}\"", hex::encode(&digest[..12]));
                HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
            })
            .collect()
    })
}

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(PREFIX, get(to_index))
        .route("/admin/", get(index))
        .route("/admin/{*path}", get(file))
}

async fn to_index() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(LOCATION, HeaderValue::from_static("/admin/"))],
    )
        .into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn file(headers: HeaderMap, ApiPath(path): ApiPath<String>) -> Result<Response, ApiError> {
    match ASSETS.iter().position(|asset| asset.name == path) {
        // The page itself only at `/admin/`.
        Some(i) if i != 0 => Ok(serve(i, &headers)),
        _ => Err(ApiError::NotFound),
    }
}

fn serve(i: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let cache = if i == 0 {
        // The page names the other files; never kept, so a new version is seen at once.
        HeaderValue::from_static("no-store")
    } else {
        HeaderValue::from_static("no-cache")
    };
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == "*" || tag.trim().as_bytes() == etag.as_bytes())
        });
    let mut response = if fresh && i != 0 {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, cache);
    if i != 0 {
        headers.insert(ETAG, etag.clone());
    }
    response
}

/// Whether `path` is the console's.
fn is_console(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Adds the console's security headers to every answer under `/admin`, whatever gave it (a
/// file, a 404, a 405, a timeout). A plain service, not a middleware function: it is on every
/// request, and costs a prefix test and nothing else for the API's.
#[derive(Clone, Copy, Default)]
pub struct HeadersLayer;

impl<S> tower::Layer<S> for HeadersLayer {
    type Service = Headers<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Headers { inner }
    }
}

/// The service [`HeadersLayer`] makes.
#[derive(Clone)]
pub struct Headers<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Headers<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = HeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        HeadersFuture {
            console: is_console(request.uri().path()),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Headers`].
    pub struct HeadersFuture<F> {
        #[pin]
        inner: F,
        console: bool,
    }
}

impl<F, E> Future for HeadersFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut output = std::task::ready!(this.inner.poll(cx));
        if *this.console
            && let Ok(response) = &mut output
        {
            let headers = response.headers_mut();
            headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        }
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths_are_the_prefix_and_below_it() {
        assert!(is_console("/admin"));
        assert!(is_console("/admin/"));
        assert!(is_console("/admin/app.js"));
        assert!(!is_console("/administrator"));
        assert!(!is_console("/v1/admin/users"));
    }

    #[test]
    fn every_asset_has_its_own_etag() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
