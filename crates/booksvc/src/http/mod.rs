//! The HTTP API: routes, shared state, the middleware stack and every handler: the books
//! (`books`), the probes ([`health`]), the Prometheus scrape (`scrape`) and the OpenAPI
//! description (`openapi`).
//!
//! [`router`] is all of it, without a socket, so tests can drive it with `oneshot`.
//! Middleware, outermost first: request id (taken from `x-request-id` when it is at most
//! 128 characters of `[A-Za-z0-9._-]`, generated otherwise) → id echoed on the response →
//! a local answer given at once when its span could not be seen (`local_hits`, which
//! records its own HTTP metrics) → HTTP metrics → trace span carrying the request id and
//! continuing the caller's W3C trace context. Handlers only read, so there is no body to
//! limit.

mod books;
mod error;
mod extract;
mod headers;
pub mod health;
mod local_hits;
mod openapi;
mod request_ids;
mod scrape;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, Request, Response, Uri};
use axum::{Router, middleware};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};
use tracing::{Level, Span};

pub use self::error::{ApiError, DEFAULT_RETRY_AFTER, ErrorBody};
pub use self::extract::{BookId, Page, RequestId};
pub use self::headers::{
    AGE, CACHE_STATUS, HitHeaders, X_CACHE, cache_headers, insert_cache_headers,
};
pub use self::health::ready_timeout;
use self::local_hits::LocalHitsLayer;
pub use self::openapi::{CacheStatus, NextLink, XCache, description};
pub use self::request_ids::SequentialIds;
use crate::client::REQUEST_ID_HEADER;
use crate::consumer::ConsumerStatus;
use crate::service::BookService;
use crate::{metrics, trace_context};

/// What every handler can reach. Cheap to clone: each field is a handle.
#[derive(Clone)]
pub struct AppState {
    /// The read path.
    pub service: BookService,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Cancelled when shutdown starts; readiness answers 503 from then on.
    pub shutdown: CancellationToken,
    /// How long a readiness probe waits for storagesvc.
    pub ready_timeout: Duration,
    /// The event consumer's state; `None` when `CONSUMER_ENABLED` is false.
    pub consumer: Option<ConsumerStatus>,
}

/// The route templates, as the `route` label of the HTTP metrics names them (a test checks
/// they are the description's paths).
const ROUTES: [&str; 7] = [
    "/",
    "/books",
    "/books/{id}",
    "/healthz/live",
    "/healthz/ready",
    "/metrics",
    "/openapi.json",
];

/// Every route of the service, with its middleware. Whether a request span could be seen
/// (spans exported, per the `OTEL_*` variables as [`crate::telemetry::init`] reads them, or
/// the span's DEBUG line enabled by the installed subscriber) is decided here, once.
pub fn router(state: AppState) -> Router {
    router_with(state, local_hits::spans_seen())
}

/// [`router`], told whether request spans could be seen (local answers are then traced too).
pub fn router_with(state: AppState, spans_seen: bool) -> Router {
    let books = Arc::new(books::Books::new(state.service.clone()));
    let series = metrics::http_metrics(&ROUTES);
    let local_hits = LocalHitsLayer::new(Arc::clone(&books), Arc::clone(&series), spans_seen);
    let (routes, _description) = openapi::routes(books::router(books)).split_for_parts();
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware_stack(local_hits, series))
        .with_state(state)
}

/// The middleware, outermost first, as one layer: each `Router::layer` call wraps the
/// router in a boxed service that is cloned for every request (five layers cost more than the
/// hit itself, callgrind: docs/benchmarks.md); one stack is one box.
fn middleware_stack(
    local_hits: LocalHitsLayer,
    series: Arc<metrics::HttpMetrics>,
) -> impl tower::Layer<
    axum::routing::Route,
    Service: tower::Service<
        Request<Body>,
        Response: axum::response::IntoResponse + 'static,
        Error: Into<std::convert::Infallible> + 'static,
        Future: Send + 'static,
    > + Clone
                 + Send
                 + Sync
                 + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    ServiceBuilder::new()
        .layer(MapRequestLayer::new(drop_unusable_request_id))
        .layer(SetRequestIdLayer::new(
            request_id.clone(),
            SequentialIds::new(),
        ))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(local_hits)
        .layer(middleware::from_fn_with_state(series, metrics::track_http))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(on_response)
                // The read path logs its own failures: reads with nothing to serve as one
                // outage (`events::outage`), the breaker its changes of state.
                .on_failure(()),
        )
}

/// Longest `x-request-id` taken from a client, and longest path written into a log line.
pub const MAX_LOGGED_LEN: usize = 128;

/// Removes an incoming `x-request-id` that is longer than [`MAX_LOGGED_LEN`] or has characters
/// outside `[A-Za-z0-9._-]`, so a fresh one is generated instead: the id goes into every log
/// line of the request (and on to storagesvc), so a client must not choose its size or content.
/// A plain function (tower's `MapRequest`): axum's async `map_request` boxes a future and a
/// clone of the inner service per request.
fn drop_unusable_request_id(mut request: Request<Body>) -> Request<Body> {
    let usable = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_none_or(|value| is_usable_request_id(value.as_bytes()));
    if !usable {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

fn is_usable_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LOGGED_LEN
        && id
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// `text` cut to at most [`MAX_LOGGED_LEN`] bytes (on a character boundary), for log fields.
fn clipped(text: &str) -> &str {
    if text.len() <= MAX_LOGGED_LEN {
        return text;
    }
    let mut end = MAX_LOGGED_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One span per request (see [`trace_context::http_server_span`]), at INFO: it continues the
/// caller's trace, goes on to storagesvc with the call, and every log line inside it carries
/// the request id, `trace_id` and `span_id`.
fn request_span<B>(request: &Request<B>) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    trace_context::http_server_span(request, request_id, clipped(request.uri().path()))
}

/// Records the response's status on the request span; the response is logged at DEBUG only:
/// a line per cache hit would cost more than the hit.
fn on_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    trace_context::record_http_status(span, response.status());
    DefaultOnResponse::new()
        .level(Level::DEBUG)
        .on_response(response, latency, span);
}

async fn unknown_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    //! The router without a socket: input errors never reach the read path.

    use std::time::Duration;

    use axum::body::{Body, to_bytes};
    use axum::http::{Method, Request, StatusCode};
    use metrics_exporter_prometheus::PrometheusBuilder;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::breaker::{BreakerSettings, CircuitBreaker};
    use crate::cache::{BookCache, CacheSettings};
    use crate::client::StorageClient;
    use crate::retry::RetrySettings;
    use crate::service::ReadPath;

    /// A read path whose dependencies are nowhere, behind a breaker of `breaker` settings.
    fn offline_path(breaker: BreakerSettings) -> ReadPath {
        ReadPath {
            cache: BookCache::new(CacheSettings::new("redis://127.0.0.1:1")).expect("lazy cache"),
            client: StorageClient::new("http://127.0.0.1:1", Duration::from_millis(50))
                .expect("client"),
            breaker: CircuitBreaker::new(breaker),
            retry: RetrySettings::default(),
            fresh_ttl: Duration::from_secs(5),
            budget: Duration::from_secs(1),
            redis_timeout: Duration::from_millis(50),
            stale_soft_timeout: Duration::from_millis(50),
        }
    }

    /// A state whose dependencies are nowhere: nothing here may need them.
    fn offline_state() -> AppState {
        let path = offline_path(BreakerSettings::default());
        AppState {
            service: BookService::new(path),
            metrics: PrometheusBuilder::new().build_recorder().handle(),
            shutdown: CancellationToken::new(),
            ready_timeout: Duration::from_millis(50),
            consumer: None,
        }
    }

    #[tokio::test]
    async fn input_errors_are_json_with_the_right_status() {
        let cases = [
            (Method::GET, "/books/abc", StatusCode::BAD_REQUEST),
            (Method::GET, "/books/0", StatusCode::BAD_REQUEST),
            (Method::GET, "/nowhere", StatusCode::NOT_FOUND),
            (Method::POST, "/books", StatusCode::METHOD_NOT_ALLOWED),
            (Method::DELETE, "/books/1", StatusCode::METHOD_NOT_ALLOWED),
        ];
        let router = router(offline_state());
        for (method, path, status) in cases {
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .body(Body::empty())
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), status, "{method} {path}");
            let body = to_bytes(response.into_body(), 64 * 1024)
                .await
                .expect("body");
            let json: Value = serde_json::from_slice(&body).expect("JSON body");
            assert!(json["error"].is_string(), "{method} {path}: {json}");
        }
    }

    /// The `method` and `route` label values of every HTTP series in `text`.
    fn http_labels(text: &str) -> Vec<(String, String)> {
        let label = |line: &str, name: &str| {
            let start = line.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            let end = line[start..].find('"').expect("closing quote") + start;
            line[start..end].to_owned()
        };
        text.lines()
            .filter(|line| line.starts_with("booksvc_http_request"))
            .map(|line| (label(line, "method"), label(line, "route")))
            .collect()
    }

    #[tokio::test]
    async fn made_up_methods_and_paths_add_no_metric_series() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // The test's runtime is this thread: every request records into this recorder.
        let _recorder = ::metrics::set_default_local_recorder(&recorder);
        let router = router(offline_state());
        let requests = [
            ("GET", "/healthz/live"),
            ("BREW", "/books/1"),
            ("M8913", "/healthz/live"),
            ("PROPFIND", "/no/such/path/8913"),
            ("GET", "/books/1/../../etc/8913"),
            ("get", "/"),
        ];
        for (method, path) in requests {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .expect("request");
            router.clone().oneshot(request).await.expect("infallible");
        }

        let text = handle.render();
        let labels = http_labels(&text);
        assert!(!labels.is_empty(), "no HTTP series in:\n{text}");
        for (method, route) in &labels {
            let known_method = crate::metrics::requests::METHODS.contains(&method.as_str());
            assert!(
                known_method || method == "other",
                "method {method:?}:\n{text}"
            );
            let known_route = ROUTES.contains(&route.as_str());
            assert!(
                known_route || route == "unmatched",
                "route {route:?}:\n{text}"
            );
        }
        assert!(
            !text.contains("8913"),
            "a raw path or method leaked:\n{text}"
        );
        let other = labels
            .iter()
            .filter(|(method, _)| method == "other")
            .count();
        assert!(
            other >= 2,
            "made-up methods are recorded as `other`:\n{text}"
        );
    }

    #[tokio::test]
    async fn nothing_to_serve_is_a_503_with_retry_after_within_the_budget() {
        let request = Request::get("/books/1")
            .body(Body::empty())
            .expect("request");
        let started = std::time::Instant::now();
        let response = router(offline_state())
            .oneshot(request)
            .await
            .expect("infallible");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");
    }

    /// Counts the request spans made (`request`, [`trace_context::http_server_span`]).
    #[derive(Clone, Default)]
    struct RequestSpans(Arc<std::sync::atomic::AtomicUsize>);

    impl RequestSpans {
        fn made(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RequestSpans {
        fn on_new_span(
            &self,
            attributes: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attributes.metadata().name() == "request" {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    /// [`offline_state`] whose live local layer holds book 1.
    fn state_with_a_local_hit() -> AppState {
        state_with_a_local_hit_and(BreakerSettings::default())
    }

    /// [`state_with_a_local_hit`] with a breaker of `breaker` settings.
    fn state_with_a_local_hit_and(breaker: BreakerSettings) -> AppState {
        let offline = offline_state();
        let local = crate::cache::LocalCache::new(crate::cache::LocalCacheSettings {
            max_entries: 10,
            max_age: Duration::from_secs(60),
            fresh_ttl: Duration::from_secs(5),
        });
        local.go_live();
        let ticket = local.ticket().expect("live");
        let body = axum::body::Bytes::from_static(br#"{"id":1,"title":"Dune"}"#);
        assert!(local.store_book(1, ticket, 1, body, Duration::ZERO));
        let path = offline_path(breaker);
        AppState {
            service: BookService::with_local(path, local),
            ..offline
        }
    }

    /// Book 2 in the local layer as read from Redis six seconds after its write: past
    /// `CACHE_FRESH_TTL` (5 s), a stale copy.
    fn store_a_stale_copy_of_book_2(state: &AppState) {
        let local = state.service.local();
        let ticket = local.ticket().expect("live");
        let body = axum::body::Bytes::from_static(br#"{"id":2,"title":"Emma"}"#);
        assert!(local.store_book(2, ticket, 1, body, Duration::from_secs(6)));
    }

    /// `GET path` through `router` under a subscriber with `filter`: the answer and the
    /// request spans made.
    async fn get_counting_spans(
        router: Router,
        path: &str,
        filter: &str,
    ) -> (axum::response::Response, usize) {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt;

        testkit::log_capture::keep_callsites_live();
        let spans = RequestSpans::default();
        let filter: tracing_subscriber::filter::Targets = filter.parse().expect("filter");
        let subscriber = tracing_subscriber::registry().with(spans.clone().with_filter(filter));
        // The test's runtime is this thread, so the request runs under this subscriber.
        let _default = tracing::subscriber::set_default(subscriber);
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        (response, spans.made())
    }

    #[tokio::test]
    async fn a_local_hit_goes_without_a_span_only_when_nobody_could_see_it() {
        // No exporter, INFO: a hit's span would log nothing and be sent nowhere.
        let untraced = router_with(state_with_a_local_hit(), false);
        let (hit, spans) = get_counting_spans(untraced.clone(), "/books/1", "info").await;
        assert_eq!(hit.status(), StatusCode::OK);
        assert_eq!(hit.headers()[X_CACHE], "hit");
        let status = hit.headers()[CACHE_STATUS].to_str().expect("ASCII");
        assert!(status.starts_with("booksvc; hit; ttl="), "{status}");
        assert!(hit.headers().contains_key(REQUEST_ID_HEADER), "{hit:?}");
        let body = to_bytes(hit.into_body(), 1024).await.expect("body");
        assert_eq!(&body[..], br#"{"id":1,"title":"Dune"}"#);
        assert_eq!(spans, 0, "an untraced hit made a request span");
        // Everything else is traced: a bad id, another route.
        let (bad, spans) = get_counting_spans(untraced.clone(), "/books/x1", "info").await;
        assert_eq!((bad.status(), spans), (StatusCode::BAD_REQUEST, 1));
        let (live, spans) = get_counting_spans(untraced, "/healthz/live", "info").await;
        assert_eq!((live.status(), spans), (StatusCode::OK, 1));

        // Spans exported: every request is traced, hits too.
        let exported = router_with(state_with_a_local_hit(), true);
        let (hit, spans) = get_counting_spans(exported, "/books/1", "info").await;
        assert_eq!(
            (hit.status(), hit.headers()[X_CACHE].clone()),
            (StatusCode::OK, "hit".parse().unwrap())
        );
        assert_eq!(spans, 1, "an exported hit must have its span");

        // The request's DEBUG line enabled where the router is built: the hit logs, so it is
        // traced.
        let debug = {
            use tracing_subscriber::layer::SubscriberExt;
            testkit::log_capture::keep_callsites_live();
            let filter: tracing_subscriber::filter::Targets =
                "info,tower_http=debug".parse().expect("filter");
            let subscriber = tracing_subscriber::registry().with(filter);
            tracing::subscriber::with_default(subscriber, || router(state_with_a_local_hit()))
        };
        let (hit, spans) = get_counting_spans(debug, "/books/1", "info,tower_http=debug").await;
        assert_eq!((hit.status(), spans), (StatusCode::OK, 1));
    }

    #[tokio::test]
    async fn a_stale_copy_is_answered_at_once_only_while_no_call_could_go_out() {
        let state = state_with_a_local_hit();
        store_a_stale_copy_of_book_2(&state);
        let breaker = state.service.path().breaker.clone();
        let router = router_with(state, false);

        // Breaker closed: the read path asks (Redis and storagesvc are nowhere here), so the
        // copy is not the answer.
        let (closed, spans) = get_counting_spans(router.clone(), "/books/2", "info").await;
        assert_eq!(closed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(spans, 1, "not a local answer: traced");

        // The read's own failed attempts count too: fail calls until the breaker opens.
        while let Ok(permit) = breaker.try_acquire() {
            permit.failure();
        }
        let (open, spans) = get_counting_spans(router, "/books/2", "info").await;
        assert_eq!(open.status(), StatusCode::OK);
        assert_eq!(open.headers()[X_CACHE], "stale");
        let status = open.headers()[CACHE_STATUS]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(status.starts_with("booksvc; hit; ttl=-"), "{status}");
        assert!(status.ends_with("; detail=circuit-open"), "{status}");
        assert_eq!(spans, 0, "a local answer nobody could see made a span");
        let body = to_bytes(open.into_body(), 1024).await.expect("body");
        assert_eq!(&body[..], br#"{"id":2,"title":"Emma"}"#);
    }

    #[tokio::test]
    async fn a_stale_copy_is_answered_at_once_while_another_read_refreshes_it() {
        // A breaker that never opens here: only the flight in the air makes the copy the answer.
        let never_opens = BreakerSettings {
            consecutive_failures: 0,
            failure_ratio: 2.0,
            ..BreakerSettings::default()
        };
        let state = state_with_a_local_hit_and(never_opens);
        store_a_stale_copy_of_book_2(&state);
        let router = router_with(state, false);

        // No flight yet: the copy is not the answer. This read finds nothing in Redis (there
        // is none), so it starts the book's flight and waits for it (a 503 within the budget).
        let first = tokio::spawn(
            router.clone().oneshot(
                Request::get("/books/2")
                    .body(Body::empty())
                    .expect("request"),
            ),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The flight is in the air (retrying within the budget): a read with a copy in memory
        // does not queue behind it; the copy is the answer, at once and untraced.
        let (late, spans) = get_counting_spans(router, "/books/2", "info").await;
        assert_eq!(late.status(), StatusCode::OK);
        assert_eq!(late.headers()[X_CACHE], "stale");
        let status = late.headers()[CACHE_STATUS]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(status.starts_with("booksvc; fwd=stale; ttl=-"), "{status}");
        // Whether or not the flight's first attempt has failed yet: this read did not wait.
        assert!(status.ends_with("; detail=soft-timeout"), "{status}");
        assert_eq!(spans, 0);
        let first = first.await.expect("joined").expect("infallible");
        assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_fast_local_answer_is_counted_like_any_request() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // The test's runtime is this thread: every request records into this recorder.
        let _recorder = ::metrics::set_default_local_recorder(&recorder);
        let router = router_with(state_with_a_local_hit(), false);
        for _ in 0..3 {
            let request = Request::get("/books/1")
                .body(Body::empty())
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.headers()[X_CACHE], "hit");
        }
        let text = handle.render();
        let counted = text.lines().any(|line| {
            line.starts_with("booksvc_http_requests_total{")
                && line.contains(r#"method="GET""#)
                && line.contains(r#"route="/books/{id}""#)
                && line.contains(r#"status="200""#)
                && line.ends_with(" 3")
        });
        assert!(counted, "three fast hits not counted:\n{text}");
        assert!(
            text.contains("booksvc_http_request_duration_seconds"),
            "no duration recorded:\n{text}"
        );
    }
}
