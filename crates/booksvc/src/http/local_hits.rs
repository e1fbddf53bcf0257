//! The fast path of a local answer: `GET /books/{id}` answered from the in-process hit layer
//! ([`crate::cache::local`]) before the request span is made, when nobody could see that span
//! (docs/decisions/0014-untraced-local-hits.md). A local answer is a fresh hit, or, while the
//! breaker would refuse any call (an outage), a stale copy
//! ([`crate::service::BookService::local_answer`]).
//!
//! A request span costs a local hit about as much as the hit itself (making, entering and
//! closing it in two layers, its ids: ~22k instructions against ~34k for the rest of the hit,
//! callgrind, docs/benchmarks.md). Yet a local answer sends nothing on (no call to storagesvc,
//! no Redis) and logs nothing at the default level, so without an exporter its span is seen
//! by nobody. This layer therefore answers without one, unless
//! - spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT`): then every request has its span, as
//!   the trace a caller follows would otherwise miss booksvc; or
//! - the request span's own DEBUG line (`tower_http::trace::on_response`) is enabled: then a
//!   hit logs, and its line carries the span's ids and request id.
//!
//! Everything else goes on to the traced stack, unchanged: misses, answers from Redis, every
//! other route, bad ids. The answer is built by the handler's own function
//! ([`super::books::json`]); the request id is a layer outside this one, and the HTTP metrics
//! are recorded here into the same series as the metrics layer inside it uses (that layer,
//! axum's `from_fn`, boxes a clone of the stack and a future per request: a fast answer skips
//! it).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::http::{Method, Request, Response};
use futures::TryFutureExt;
use futures::future::{Either, MapOk, Ready, ready};
use tower::{Layer, Service};
use tracing::Level;

use super::books::{Books, json};
use super::extract::parse_book_id;
use crate::metrics::HttpMetrics;

/// The route template a fast answer is counted under.
const ROUTE: &str = "/books/{id}";

/// Wraps the traced stack with the fast path; see the module docs.
#[derive(Clone)]
pub(super) struct LocalHitsLayer {
    books: Arc<Books>,
    series: Arc<HttpMetrics>,
    spans_seen: bool,
}

impl LocalHitsLayer {
    /// `series`: the HTTP metrics the rest of the stack records into; `spans_seen`: whether a
    /// request span could be seen ([`spans_seen`]): then every request goes on to be traced.
    pub(super) fn new(
        books: Arc<Books>,
        series: Arc<HttpMetrics>,
        spans_seen: bool,
    ) -> LocalHitsLayer {
        LocalHitsLayer {
            books,
            series,
            spans_seen,
        }
    }
}

/// Whether a local answer's request span could be seen, decided once (neither the exporter
/// nor the log filter changes while the process runs): spans are exported, or the span's own
/// DEBUG line is enabled by the installed subscriber.
pub(super) fn spans_seen() -> bool {
    crate::telemetry::spans_exported()
        || tracing::enabled!(target: "tower_http::trace::on_response", Level::DEBUG)
}

impl<S> Layer<S> for LocalHitsLayer {
    type Service = LocalHits<S>;

    fn layer(&self, inner: S) -> LocalHits<S> {
        LocalHits {
            inner,
            books: Arc::clone(&self.books),
            series: Arc::clone(&self.series),
            spans_seen: self.spans_seen,
        }
    }
}

/// The service of [`LocalHitsLayer`].
#[derive(Clone)]
pub(super) struct LocalHits<S> {
    inner: S,
    books: Arc<Books>,
    series: Arc<HttpMetrics>,
    spans_seen: bool,
}

type ToBody<B> = fn(Response<B>) -> Response<Body>;

impl<S, B> Service<Request<Body>> for LocalHits<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    B: HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, MapOk<S::Future, ToBody<B>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some(response) = self.local_answer(&request) {
            return Either::Left(ready(Ok(response)));
        }
        // `Body::new` does not box a body that already is one; the traced stack's answer
        // would be converted the same way by the route it returns to.
        let to_body: ToBody<B> = |response| response.map(Body::new);
        Either::Right(self.inner.call(request).map_ok(to_body))
    }
}

impl<S> LocalHits<S> {
    /// The answer to `request` if the local layer can give it and it may go untraced.
    fn local_answer(&self, request: &Request<Body>) -> Option<Response<Body>> {
        if request.method() != Method::GET || self.spans_seen {
            return None;
        }
        let started = Instant::now();
        let id = book_id(request.uri().path())?;
        let served = self.books.service.local_answer(id)?;
        let response = json(served.value, &served.source, &self.books.hit_headers);
        let elapsed = started.elapsed();
        self.series
            .record(&Method::GET, Some(ROUTE), response.status(), elapsed);
        Some(response)
    }
}

/// The id in `/books/{id}` when the route would accept it as it is (digits only, so nothing
/// to percent-decode); `None` for every other path, which the router then answers.
fn book_id(path: &str) -> Option<i64> {
    let raw = path.strip_prefix("/books/")?;
    parse_book_id(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::book_id;

    #[test]
    fn only_an_id_the_route_accepts_as_written_takes_the_fast_path() {
        assert_eq!(book_id("/books/1"), Some(1));
        assert_eq!(book_id("/books/007"), Some(7));
        assert_eq!(book_id(&format!("/books/{}", i64::MAX)), Some(i64::MAX));
        for path in [
            "/books/",
            "/books/0",
            "/books/-1",
            "/books/%31",
            "/books/1/",
            "/books/1/2",
            "/books/9223372036854775808",
            "/books",
            "/book/1",
            "//books/1",
        ] {
            assert_eq!(book_id(path), None, "{path}");
        }
    }
}
