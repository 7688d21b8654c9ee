//! Prometheus metrics: the recorder (installed once per process), `GET /metrics`, the HTTP
//! layer that counts and times every routed request, and the recording points the rest of the
//! service calls (logins, WeChat calls, store errors, rate-limit refusals).
//!
//! Every label value is bounded: route templates (never raw paths), configured AppIDs, fixed
//! outcome and errcode names, HTTP methods and statuses.
//!
//! The HTTP layer is on every request, so it is built not to cost: the counter and histogram
//! handles of each (route, method, status) are made once and kept where the route's own
//! service finds them again, so a request takes no lock, hashes nothing and allocates nothing
//! beyond what the recorder does to keep a latency sample.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use metrics::{Counter, Histogram, Label, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wxauth_wechat::AppId;
use wxauth_wechat::observe::{CallEvent, Endpoint, Observer, outcome_label};

use crate::store::StoreError;

/// Requests by route template, method and status.
pub const HTTP_REQUESTS: &str = "wxauth_http_requests_total";
/// Request latency by route template and method.
pub const HTTP_DURATION: &str = "wxauth_http_request_duration_seconds";
/// Logins by app and outcome.
pub const LOGINS: &str = "wxauth_logins_total";
/// Calls to WeChat by endpoint, app and errcode.
pub const WECHAT_CALLS: &str = "wxauth_wechat_calls_total";
/// WeChat call latency by endpoint.
pub const WECHAT_DURATION: &str = "wxauth_wechat_call_duration_seconds";
/// Calls not sent because `wechat.max_concurrency` calls were in flight.
pub const WECHAT_REFUSED: &str = "wxauth_wechat_calls_refused_total";
/// Access tokens fetched from WeChat, by app and result.
pub const TOKEN_REFRESHES: &str = "wxauth_wechat_token_refreshes_total";
/// Store failures by store and kind.
pub const STORE_ERRORS: &str = "wxauth_store_errors_total";
/// Requests refused by `[limits]`, by action and bucket.
pub const RATE_LIMITED: &str = "wxauth_rate_limited_total";
/// 1 when the last readiness check passed, 0 when it failed.
pub const READY: &str = "wxauth_ready";
/// Webhook delivery attempts by endpoint and outcome.
pub const WEBHOOK_DELIVERIES: &str = "wxauth_webhook_deliveries_total";
/// Age of the oldest event an endpoint still waits for (0 when none waits).
pub const WEBHOOK_OLDEST_PENDING: &str = "wxauth_webhook_oldest_pending_seconds";

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const WECHAT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often histograms are drained into their buckets between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use. In a process that already has another
/// `metrics` recorder, the handle renders only what is recorded through it (nothing).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            (HTTP_DURATION, HTTP_BUCKETS),
            (WECHAT_DURATION, WECHAT_BUCKETS),
        ] {
            builder = match builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            {
                Ok(builder) => builder,
                Err(_) => unreachable!("the bucket lists are not empty"),
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by route template, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency (until the response head) by route template and method"
    );
    describe_counter!(
        LOGINS,
        "Logins by app and outcome: new_person, new_identity, returning, or the error code"
    );
    describe_counter!(
        WECHAT_CALLS,
        "Calls to the WeChat API by endpoint, app and errcode (0: success)"
    );
    describe_histogram!(
        WECHAT_DURATION,
        Unit::Seconds,
        "WeChat API call latency by endpoint"
    );
    describe_counter!(
        WECHAT_REFUSED,
        "WeChat calls not sent because wechat.max_concurrency calls were in flight"
    );
    describe_counter!(
        TOKEN_REFRESHES,
        "Access tokens fetched from WeChat, by app and result"
    );
    describe_counter!(STORE_ERRORS, "Store failures by store and kind");
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by [limits], by action and bucket (ip, app)"
    );
    describe_gauge!(READY, "1 when the last readiness check passed, else 0");
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook delivery attempts by endpoint and outcome: delivered, retry, failed"
    );
    describe_gauge!(
        WEBHOOK_OLDEST_PENDING,
        Unit::Seconds,
        "Age of the oldest event a webhook endpoint has not received yet (0 when none waits)"
    );
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
}

/// Drains histograms now and then, so that their memory stays bounded between scrapes.
pub async fn upkeep_loop() {
    let handle = handle();
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        interval.tick().await;
        handle.run_upkeep();
    }
}

/// The label of an app that was resolved from the configuration ("none" before one was).
fn app_label(app_id: Option<&AppId>) -> String {
    app_id.map_or_else(|| "none".to_owned(), |id| id.as_str().to_owned())
}

/// A login ended: `outcome` is `new_person`, `new_identity`, `returning` or an error code.
pub fn login(app_id: Option<&AppId>, outcome: &'static str) {
    counter!(LOGINS, "app_id" => app_label(app_id), "outcome" => outcome).increment(1);
}

/// A store failed (a request answered 503/500 for it, or background work).
pub fn store_error(err: &StoreError) {
    let (store, kind) = match err {
        StoreError::Unavailable { store, .. } => (*store, "unavailable"),
        StoreError::Other(_) => ("unknown", "other"),
    };
    counter!(STORE_ERRORS, "store" => store, "kind" => kind).increment(1);
}

/// A store failed in a way the caller tolerates (the rate limiter going on without Redis).
pub fn store_unavailable(store: &'static str) {
    counter!(STORE_ERRORS, "store" => store, "kind" => "unavailable").increment(1);
}

/// A request was refused by a rate limit (`bucket`: "ip" or "app").
pub fn rate_limited(action: &'static str, bucket: &'static str) {
    counter!(RATE_LIMITED, "action" => action, "bucket" => bucket).increment(1);
}

/// One webhook delivery attempt; `endpoint` is the configured URL as shown (password masked).
pub fn webhook_attempt(endpoint: &str, outcome: &'static str) {
    counter!(WEBHOOK_DELIVERIES, "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// How long the oldest event waiting for `endpoint` has waited.
pub fn webhook_oldest_pending(endpoint: &str, age: Duration) {
    gauge!(WEBHOOK_OLDEST_PENDING, "endpoint" => endpoint.to_owned()).set(age.as_secs_f64());
}

/// The readiness check passed or failed.
pub fn ready(ok: bool) {
    gauge!(READY).set(if ok { 1.0 } else { 0.0 });
}

/// Something told about each WeChat call besides the metrics (the stats aggregator).
pub trait WechatSink: Send + Sync + 'static {
    /// One call ended with the outcome `errcode` (see [`outcome_label`]).
    fn wechat_call(&self, app_id: &AppId, endpoint: Endpoint, errcode: &'static str, ms: u64);
}

/// The WeChat client's observer: metrics, and the optional sink.
pub struct WechatMetrics {
    sink: Option<Arc<dyn WechatSink>>,
    latency: [Histogram; Endpoint::ALL.len()],
}

impl WechatMetrics {
    /// Metrics, and each call passed on to `sink` too.
    pub fn new(sink: Option<Arc<dyn WechatSink>>) -> Self {
        handle();
        Self {
            sink,
            latency: Endpoint::ALL
                .map(|endpoint| histogram!(WECHAT_DURATION, "endpoint" => endpoint.name())),
        }
    }
}

impl Observer for WechatMetrics {
    fn call_finished(&self, event: &CallEvent<'_>) {
        let errcode = outcome_label(event.outcome);
        let endpoint = event.endpoint.name();
        counter!(
            WECHAT_CALLS,
            "endpoint" => endpoint,
            "app_id" => event.app_id.as_str().to_owned(),
            "errcode" => errcode
        )
        .increment(1);
        if let Some(i) = Endpoint::ALL.iter().position(|e| *e == event.endpoint) {
            self.latency[i].record(event.elapsed.as_secs_f64());
        }
        if let Some(sink) = &self.sink {
            let ms = u64::try_from(event.elapsed.as_millis()).unwrap_or(u64::MAX);
            sink.wechat_call(event.app_id, event.endpoint, errcode, ms);
        }
    }

    fn token_fetched(&self, app_id: &AppId, outcome: Result<(), &wxauth_wechat::WechatError>) {
        let result = if outcome.is_ok() { "ok" } else { "error" };
        counter!(TOKEN_REFRESHES, "app_id" => app_id.as_str().to_owned(), "result" => result)
            .increment(1);
    }

    fn call_refused(&self, endpoint: Endpoint, _app_id: &AppId) {
        counter!(WECHAT_REFUSED, "endpoint" => endpoint.name()).increment(1);
    }
}

/// The HTTP methods that get their own label; any other is "other".
const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PATCH,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

fn method_index(method: &Method) -> usize {
    METHODS
        .iter()
        .position(|m| m == method)
        .unwrap_or(METHODS.len())
}

fn method_label(index: usize) -> &'static str {
    METHODS.get(index).map_or("other", Method::as_str)
}

/// Counts and times every request by its route template. Add it with `Router::layer`, so
/// that it runs inside the router, where the matched route is known.
#[derive(Clone, Default)]
pub struct HttpMetricsLayer {
    nested: Arc<[(&'static str, &'static RouteMetrics)]>,
}

impl HttpMetricsLayer {
    /// A layer recording into the process's recorder. Services nested under `nested`
    /// prefixes (axum gives their requests no matched route) are labelled `PREFIX/*`.
    pub fn new(nested: &[&'static str]) -> Self {
        handle();
        Self {
            nested: nested
                .iter()
                .map(|prefix| (*prefix, route_metrics(&format!("{prefix}/{{*tail}}"))))
                .collect(),
        }
    }
}

impl<S> tower::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            route: Arc::new(ServedRoute {
                nested: self.nested.clone(),
                seen: OnceLock::new(),
            }),
        }
    }
}

/// What one layered service (one route's handler, or the fallback) knows of its route.
struct ServedRoute {
    nested: Arc<[(&'static str, &'static RouteMetrics)]>,
    /// The template of its first matched request (its address and length, as axum keeps one
    /// string per route) and that template's handles.
    seen: OnceLock<(usize, usize, &'static RouteMetrics)>,
}

impl ServedRoute {
    /// The handles for a request: after the first, without a lock or a hash for a route's
    /// own service; by the process-wide table otherwise.
    fn metrics(&self, template: Option<&str>, path: &str) -> &'static RouteMetrics {
        let Some(template) = template else {
            return self
                .nested
                .iter()
                .find(|(prefix, _)| {
                    path.strip_prefix(prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
                .map_or_else(|| &*UNMATCHED_ROUTE, |(_, metrics)| *metrics);
        };
        let at = (template.as_ptr() as usize, template.len());
        if let Some(&(ptr, len, metrics)) = self.seen.get()
            && (ptr, len) == at
        {
            return metrics;
        }
        let metrics = route_metrics(template);
        // A service that serves several templates keeps the first; the others use the table.
        let _ = self.seen.set((at.0, at.1, metrics));
        metrics
    }
}

/// The handles of every route template the process has served: a fixed, small set, kept for
/// the life of the process (the recorder is the process's too).
static ROUTES: LazyLock<RwLock<HashMap<Box<str>, &'static RouteMetrics>>> =
    LazyLock::new(RwLock::default);

static UNMATCHED_ROUTE: LazyLock<RouteMetrics> =
    LazyLock::new(|| RouteMetrics::new(Arc::from(UNMATCHED)));

fn route_metrics(template: &str) -> &'static RouteMetrics {
    if let Some(found) = ROUTES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(template)
    {
        return found;
    }
    let mut routes = ROUTES.write().unwrap_or_else(PoisonError::into_inner);
    routes
        .entry(template.into())
        .or_insert_with(|| Box::leak(Box::new(RouteMetrics::new(route_label(template)))))
}

/// The label of a matched template: a nested service's catch-all tail (`/media/...`) is
/// written `*`.
fn route_label(template: &str) -> Arc<str> {
    match template.find("/{*") {
        Some(at) => Arc::from(format!("{}/*", &template[..at])),
        None => Arc::from(template),
    }
}

/// How many (method, status) pairs of a route get a counter found without a lock; a route
/// answers with only a few.
const STATUS_SLOTS: usize = 12;

/// One route's handles: a latency histogram per method, a counter per (method, status).
struct RouteMetrics {
    route: Arc<str>,
    latency: [OnceLock<Histogram>; METHODS.len() + 1],
    counts: [StatusSlot; STATUS_SLOTS],
    /// The pairs beyond the slots.
    more: Mutex<Vec<(u16, Counter)>>,
}

/// A (method, status) pair's counter: `key` is 0 while the slot is free, and set once.
#[derive(Default)]
struct StatusSlot {
    key: AtomicU16,
    counter: OnceLock<Counter>,
}

impl RouteMetrics {
    fn new(route: Arc<str>) -> Self {
        Self {
            route,
            latency: Default::default(),
            counts: Default::default(),
            more: Mutex::default(),
        }
    }

    fn record(&self, method: usize, status: u16, elapsed: Duration) {
        self.latency[method]
            .get_or_init(|| {
                metrics::with_recorder(|recorder| {
                    recorder.register_histogram(
                        &metrics::Key::from_parts(
                            HTTP_DURATION,
                            vec![
                                Label::new("route", self.route.clone()),
                                Label::new("method", method_label(method)),
                            ],
                        ),
                        &METADATA,
                    )
                })
            })
            .record(elapsed.as_secs_f64());
        self.count(method, status);
    }

    /// Counts one answer of a pair: a scan of a few atomics, claiming a free slot for a new
    /// pair.
    fn count(&self, method: usize, status: u16) {
        let key = status_key(method, status);
        let register = || self.register_counter(method, status);
        for slot in &self.counts {
            let mut seen = slot.key.load(Ordering::Acquire);
            if seen == 0 {
                seen = match slot
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => key,
                    Err(other) => other,
                };
            }
            if seen == key {
                slot.counter.get_or_init(register).increment(1);
                return;
            }
        }
        let mut more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        match more.iter().find(|(k, _)| *k == key) {
            Some((_, counter)) => counter.increment(1),
            None => {
                let counter = register();
                counter.increment(1);
                more.push((key, counter));
            }
        }
    }

    fn register_counter(&self, method: usize, status: u16) -> Counter {
        metrics::with_recorder(|recorder| {
            recorder.register_counter(
                &metrics::Key::from_parts(
                    HTTP_REQUESTS,
                    vec![
                        Label::new("route", self.route.clone()),
                        Label::new("method", method_label(method)),
                        Label::new("status", status.to_string()),
                    ],
                ),
                &METADATA,
            )
        })
    }
}

/// A (method, status) pair as one non-zero number.
fn status_key(method: usize, status: u16) -> u16 {
    // At most METHODS.len() + 1 methods, statuses below 1000 (the http crate's range).
    (method as u16 + 1) * 1000 + status % 1000
}

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The service [`HttpMetricsLayer`] makes.
#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    route: Arc<ServedRoute>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for HttpMetrics<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let route = self.route.metrics(
            request
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
            request.uri().path(),
        );
        let method = method_index(request.method());
        ResponseFuture {
            inner: self.inner.call(request),
            route,
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`HttpMetrics`]: records when the response is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        route: &'static RouteMetrics,
        method: usize,
        started: Instant,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            this.route.record(
                *this.method,
                response.status().as_u16(),
                this.started.elapsed(),
            );
        }
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_services_tail_is_one_label() {
        assert_eq!(
            &*route_label("/media/{*__private__axum_nest_tail_param}"),
            "/media/*"
        );
        assert_eq!(&*route_label("/v1/me"), "/v1/me");
    }

    #[test]
    fn every_method_and_status_of_a_route_is_counted_apart_beyond_the_slots() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let rendered = recorder.handle();
        let route = RouteMetrics::new(Arc::from("/v1/test"));
        metrics::with_local_recorder(&recorder, || {
            // More pairs than lock-free slots, each recorded a different number of times.
            for (n, status) in (200..220).enumerate() {
                for _ in 0..=n {
                    route.record(0, status, Duration::from_millis(1));
                }
            }
            route.record(1, 200, Duration::from_millis(1));
        });
        let text = rendered.render();
        for (n, status) in (200..220).enumerate() {
            let line = format!(
                "{HTTP_REQUESTS}{{route=\"/v1/test\",method=\"GET\",status=\"{status}\"}} {}",
                n + 1
            );
            assert!(text.contains(&line), "{line} missing in:\n{text}");
        }
        assert!(text.contains(&format!(
            "{HTTP_REQUESTS}{{route=\"/v1/test\",method=\"POST\",status=\"200\"}} 1"
        )));
    }

    #[test]
    fn a_routes_own_service_finds_its_handles_again_and_others_use_the_table() {
        let served = ServedRoute {
            nested: Arc::from([("/files", route_metrics("/files/{*tail}"))]),
            seen: OnceLock::new(),
        };
        let one = String::from("/v1/one/{id}");
        let first = served.metrics(Some(&one), "/v1/one/1");
        assert!(std::ptr::eq(first, served.metrics(Some(&one), "/v1/one/2")));
        // The same text elsewhere is the same route; another template is another.
        let copy = one.clone();
        assert!(std::ptr::eq(
            first,
            served.metrics(Some(&copy), "/v1/one/3")
        ));
        let other = served.metrics(Some("/v1/two"), "/v1/two");
        assert!(!std::ptr::eq(first, other));
        assert_eq!(&*other.route, "/v1/two");
        // No template: a nested prefix, or unmatched.
        assert_eq!(&*served.metrics(None, "/files/a.png").route, "/files/*");
        assert_eq!(&*served.metrics(None, "/filesystem").route, UNMATCHED);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(method_index(&Method::GET)), "GET");
        let odd = Method::from_bytes(b"PROPFIND").unwrap_or(Method::TRACE);
        assert_eq!(method_label(method_index(&odd)), "other");
    }
}
