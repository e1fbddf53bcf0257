//! The HTTP API: routes, shared state, the middleware stack and every handler: the books
//! (`books`), the probes ([`health`]), the Prometheus scrape (`scrape`) and the OpenAPI
//! description (`openapi`).
//!
//! [`router`] is all of it, without a socket, so tests can drive it with `oneshot`.
//! Middleware, outermost first: request id (taken from `x-request-id` when it is at most
//! 128 characters of `[A-Za-z0-9._-]`, generated otherwise) →
//! trace span carrying that id and continuing the caller's W3C trace context → id echoed on
//! the response → HTTP metrics → the database outage log → body limit.

mod books;
mod error;
mod extract;
pub mod health;
mod openapi;
mod scrape;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{HeaderName, Request, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Router, middleware};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use self::error::ApiError;
use self::error::DatabaseFailure;
pub use self::extract::{
    BookId, Budget, IfMatch, JsonBody, Page, REQUEST_TIMEOUT_HEADER, WriteAccess,
};
pub use self::openapi::{ErrorBody, description};
use crate::config::Secret;
use crate::relay::RelayStatus;
use crate::{metrics, trace_context};
use events::Outage;

/// The header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every handler can reach. Cheap to clone: each field is a handle.
#[derive(Clone)]
pub struct AppState {
    /// The PostgreSQL pool (small acquire timeout: a down database answers 503 quickly).
    pub pool: PgPool,
    /// The write token; `None` refuses every write.
    pub write_token: Option<Arc<Secret>>,
    /// `BODY_LIMIT`, for the 413 message.
    pub body_limit: usize,
    /// The relay's broker state, for readiness.
    pub relay: RelayStatus,
    /// Cancelled when shutdown starts; readiness answers 503 from then on.
    pub shutdown: CancellationToken,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// How long a readiness probe waits for PostgreSQL.
    pub ready_timeout: Duration,
    /// The last readiness check of PostgreSQL, shared by all probes.
    pub postgres_check: health::PostgresCheck,
    /// Client-side bound on a request's database work (see [`crate::database::step_timeout`]).
    pub db_timeout: Duration,
}

/// The route templates, as the `route` label of the HTTP metrics names them (a test checks
/// they are the description's paths).
const ROUTES: [&str; 6] = [
    "/books",
    "/books/{id}",
    "/healthz/live",
    "/healthz/ready",
    "/metrics",
    "/openapi.json",
];

/// Every route of the service, with its middleware.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let body_limit = state.body_limit;
    let (routes, _description) = openapi::routes().split_for_parts();
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::new(Outage::new("PostgreSQL, requests")),
            log_database_outage,
        ))
        .layer(middleware::from_fn_with_state(
            metrics::http_metrics(&ROUTES),
            metrics::track_http,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(on_response)
                // ApiError logs the cause of a 5xx once, with its chain; a second, cause-less
                // error line per failure would only be noise.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::map_request(drop_unusable_request_id))
        .with_state(state)
}

/// Longest `x-request-id` taken from a client, and longest path written into a log line.
pub const MAX_LOGGED_LEN: usize = 128;

/// Removes an incoming `x-request-id` that is longer than [`MAX_LOGGED_LEN`] or has characters
/// outside `[A-Za-z0-9._-]`, so a fresh one is generated instead: the id goes into every log
/// line of the request (and on to storagesvc), so a client must not choose its size or content.
async fn drop_unusable_request_id(mut request: Request<Body>) -> Request<Body> {
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

/// One span per request (see [`trace_context::http_server_span`]): it continues the caller's
/// trace, and every log line inside it (errors included) carries the request id, `trace_id`
/// and `span_id`.
fn request_span<B>(request: &Request<B>) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    trace_context::http_server_span(request, request_id, clipped(request.uri().path()))
}

/// Records the answer's status on the request span and logs it: at info, but a 503 at debug:
/// during an outage every request is one, and the outage is logged as a whole
/// (`log_database_outage`).
fn on_response<B>(response: &axum::http::Response<B>, latency: Duration, span: &Span) {
    trace_context::record_http_status(span, response.status());
    let status = response.status().as_u16();
    let latency_ms = latency.as_millis();
    if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        tracing::debug!(status, latency_ms, "answered");
    } else {
        tracing::info!(status, latency_ms, "answered");
    }
}

/// Logs the database failures behind 503s as one outage rather than a line each (see
/// [`events::outage`]). A 2xx on a books route ends it: only a database answer gives one.
async fn log_database_outage(
    State(outage): State<Arc<Outage>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let books_route = request.uri().path().starts_with("/books");
    let response = next.run(request).await;
    if let Some(DatabaseFailure(cause)) = response.extensions().get() {
        outage.failed(cause);
    } else if books_route && response.status().is_success() {
        outage.succeeded();
    }
    response
}

async fn unknown_route(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    //! The router without a socket or a database.

    use axum::body::Body;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    use super::*;

    /// A state whose database is nowhere: nothing here may need it.
    fn offline_state() -> AppState {
        AppState {
            pool: PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("lazy pool"),
            write_token: None,
            body_limit: 1024,
            relay: RelayStatus::default(),
            shutdown: CancellationToken::new(),
            metrics: PrometheusBuilder::new().build_recorder().handle(),
            ready_timeout: Duration::from_millis(50),
            postgres_check: Default::default(),
            db_timeout: Duration::from_millis(50),
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
            .filter(|line| line.starts_with("storagesvc_http_request"))
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
            ("delete", "/books"),
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
}
