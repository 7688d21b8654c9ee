//! The HTTP API: each area is a module with its own `router()`, merged here, plus uploaded
//! files under `/media/` and the layers every response passes through.
//!
//! Every answer the application gives is either a success or `{"error":{"code","message"}}`:
//! unknown routes and methods, bad query strings, a request that took too long, and the file
//! server's own refusals (missing file, wrong method, bad range) included.

pub mod admin;
pub mod auth;
pub mod console;
pub mod events;
pub mod health;
pub mod me;
pub mod openapi;
pub mod services;
mod views;
pub mod wellknown;

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_RANGE, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest JSON body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Longest file name a file system takes (NAME_MAX); a longer one cannot name a stored file.
const MAX_NAME_BYTES: usize = 255;

/// The whole service as one router. A request (reading its body included) that takes longer
/// than `request_timeout` is answered 408 `request_timeout`; `None` sets no limit.
pub fn router(state: AppState, request_timeout: Option<Duration>, metrics_here: bool) -> Router {
    let mut api = Router::new();
    if metrics_here {
        api = api.route("/metrics", get(crate::instruments::render));
    }
    let api = api
        .merge(auth::router())
        .merge(me::router(state.media.max_bytes))
        .merge(health::router())
        .merge(wellknown::router())
        .merge(services::router())
        .merge(admin::router())
        .merge(events::router())
        .merge(console::router())
        .merge(openapi::router(metrics_here))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Token responses must not be cached (RFC 6749 §5.1); nor must profiles and phone
        // numbers. Only /media (added below, outside this layer) is cacheable.
        .layer(no_store());
    api.nest_service("/media", media(state.media.dir.clone()))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeLimitLayer(request_timeout))
        .layer(CatchPanicLayer::custom(|_| panic_response()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                // The path only: no query string, no headers (they carry tokens).
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(nosniff())
        .layer(console::HeadersLayer)
        // `Router::layer` wraps each route (and the fallback) on its own, after routing, so the
        // matched template is known; added last, it wraps the layers above: the timeout's 408
        // and a panic's 500 are counted too.
        .layer(crate::instruments::HttpMetricsLayer::new(&["/media"]))
        .with_state(state)
}

/// `GET /metrics` alone, for `[metrics] listen`.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", get(crate::instruments::render))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(nosniff())
}

/// An answer given outside the router (the connection limit), with the headers every routed
/// answer gets.
pub fn edge_response(error: ApiError) -> Response {
    let mut response = error.into_response();
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn no_store() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

fn nosniff() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
}

/// The handler runs (and reads the body) within the limit, or the request is dropped and
/// answered 408. Dropping it is what a client disconnect does too: nothing is left half-done.
/// A plain service (no boxing): it is on every request.
#[derive(Clone, Copy)]
struct TimeLimitLayer(Option<Duration>);

impl<S> tower::Layer<S> for TimeLimitLayer {
    type Service = TimeLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeLimit {
            inner,
            limit: self.0,
        }
    }
}

#[derive(Clone)]
struct TimeLimit<S> {
    inner: S,
    limit: Option<Duration>,
}

impl<S, B> tower::Service<Request<B>> for TimeLimit<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TimeLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.call(request);
        match self.limit {
            None => TimeLimitFuture::Unlimited { inner },
            Some(limit) => TimeLimitFuture::Limited {
                inner: tokio::time::timeout(limit, inner),
                limit,
            },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = TimeLimitProj]
    enum TimeLimitFuture<F> {
        Unlimited { #[pin] inner: F },
        Limited { #[pin] inner: tokio::time::Timeout<F>, limit: Duration },
    }
}

impl<F> Future for TimeLimitFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TimeLimitProj::Unlimited { inner } => inner.poll(cx),
            TimeLimitProj::Limited { inner, limit } => match std::task::ready!(inner.poll(cx)) {
                Ok(response) => Poll::Ready(response),
                Err(_) => {
                    tracing::info!(
                        limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                        "request timed out"
                    );
                    Poll::Ready(Ok(ApiError::RequestTimeout.into_response()))
                }
            },
        }
    }
}

/// Uploaded files. Directories are not listed or redirected to; the file server's own
/// empty-bodied refusals become the API's errors, and the files are sandboxed should a
/// browser open one.
fn media(
    dir: PathBuf,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let files = ServeDir::new(dir).append_index_html_on_directories(false);
    tower::service_fn(move |request: Request| {
        let files = files.clone();
        async move {
            let mut response = if names_a_possible_file(request.uri().path()) {
                let response = files
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|never| match never {});
                media_errors(response.map(Body::new))
            } else {
                ApiError::NotFound.into_response()
            };
            response
                .headers_mut()
                .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
            Ok(response)
        }
    })
}

/// Whether a path could name a file at all; a name over the file system's limit would make
/// the file server fail (500) instead of finding nothing.
fn names_a_possible_file(path: &str) -> bool {
    path.split('/')
        .all(|segment| percent_encoding::percent_decode_str(segment).count() <= MAX_NAME_BYTES)
}

/// Replaces the file server's empty error answers with the API's error shape, keeping the
/// headers that explain them (`Allow`, `Content-Range`).
fn media_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::RANGE_NOT_SATISFIABLE => ApiError::RangeNotSatisfiable,
        StatusCode::PRECONDITION_FAILED => ApiError::PreconditionFailed,
        status if status.is_client_error() => {
            ApiError::InvalidRequest("this request cannot be served".into())
        }
        status => ApiError::Internal(anyhow::anyhow!("serving a media file failed: {status}")),
    };
    let mut mapped = error.into_response();
    for name in [ALLOW, CONTENT_RANGE] {
        if let Some(value) = response.headers().get(&name) {
            mapped.headers_mut().insert(name, value.clone());
        }
    }
    mapped
}

fn panic_response() -> Response {
    tracing::error!("a request handler panicked");
    let mut response = ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response();
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use super::names_a_possible_file;

    #[test]
    fn names_longer_than_the_file_system_takes_are_not_files() {
        assert!(names_a_possible_file("/avatars/a.png"));
        assert!(names_a_possible_file(&format!(
            "/avatars/{}",
            "a".repeat(255)
        )));
        assert!(!names_a_possible_file(&format!(
            "/avatars/{}",
            "a".repeat(256)
        )));
        // Counted after percent-decoding, as the file server reads it.
        assert!(!names_a_possible_file(&format!(
            "/avatars/{}",
            "%C3%A9".repeat(128)
        )));
        assert!(names_a_possible_file(&format!(
            "/avatars/{}",
            "%41".repeat(255)
        )));
    }
}
