//! booksvc answers clients from storagesvc, protected by a circuit breaker, retry with
//! backoff, and a Redis cache of the last good data.
//!
//! # Layout
//! - [`config`]: every setting as an environment variable, parsed once, one-line errors.
//! - [`app`]: [`Application`] — build (read path, listener) and run until stopped.
//! - [`http`]: the router and every handler (books, health probes and readiness modes,
//!   `/metrics`, the OpenAPI description), the app state, extractors, cache headers and
//!   [`http::ApiError`].
//! - [`service`]: the read path composed in one function: cache → coalesced retry around
//!   breaker-guarded calls → fill, or stale fallback, or 503.
//! - [`coalesce`]: single flight; concurrent misses for one key make one storagesvc call.
//! - [`breaker`]: the circuit breaker state machine (gobreaker's semantics).
//! - [`probe`]: the breaker's active probe, so it closes without waiting for a cache miss.
//! - [`retry`]: exponential backoff with jitter, bounded by the request deadline.
//! - [`book`]: [`book::Book`] and [`book::CachedBook`], the types every other module speaks.
//! - [`client`]: the typed storagesvc client; statuses mapped once to not-found / transient / permanent.
//! - [`cache`]: the Redis cache of the last good data; fills and events race, versions decide;
//!   and the in-process hit layer in front of it, kept coherent by events.
//! - [`consumer`]: warms the cache from book-changed events: retry queues, DLQ, a pause when
//!   an event finds Redis down, reconnect on broker loss.
//! - [`paging`]: `?limit=N&after=ID` on the list routes and the `Link` to the next page.
//! - [`rebuild`]: `booksvc rebuild-cache`, refilling Redis from storagesvc page by page.
//! - [`redrive`]: `booksvc redrive-dlq`, moving dead letters back for another go.
//! - [`serve`]: the HTTP server loop: header-read timeout and a connection cap.
//! - [`metrics`]: every Prometheus series, its name and labels, and the recorder.
//! - [`telemetry`]: logging set-up, and span export over OTLP when configured.
//! - [`log_format`]: the JSON log lines: span fields, and trace ids at the top level.
//! - [`trace_context`]: W3C trace context: request and event spans that continue a caller's
//!   trace, their ids in every log line, the context handed on.
//! - [`secret`]: [`secret::Secret`], a configured value kept out of logs until used.
//!
//! # Data flow
//! A read passes the [`http`] extractors (id, request id) to [`service::BookService`]. It
//! looks in the local hit layer ([`cache::LocalCache`]), then in the [`cache`]; a fresh entry
//! is the answer (`X-Cache: hit`). Otherwise it joins
//! the [`coalesce`] flight for that key, whose task calls storagesvc through [`client`],
//! each attempt asking the [`breaker`] first, with pauses and limits from [`retry`], all
//! within `REQUEST_BUDGET`; the answer fills the cache and is served (`miss`). If storagesvc
//! fails or the breaker is open, the entry the lookup found is served (`stale`), or, with
//! nothing cached, a 503 with `Retry-After`. The event [`consumer`] writes into the same
//! cache through [`cache::BookCache::apply_event`], so a book is cached (and the pages reflect
//! it) as soon as its event arrives, before anyone reads it.

pub mod app;
pub mod book;
pub mod breaker;
pub mod cache;
pub mod client;
pub mod coalesce;
pub mod config;
pub mod consumer;
pub mod http;
pub mod log_format;
pub mod metrics;
pub mod paging;
pub mod probe;
pub mod rebuild;
pub mod redrive;
pub mod retry;
pub mod secret;
pub mod serve;
pub mod service;
pub mod telemetry;
pub mod trace_context;

pub use app::Application;
pub use config::Settings;

#[cfg(test)]
mod module_graph {
    /// The top-level modules depend on each other without a cycle; `--nocapture` prints the
    /// graph.
    #[test]
    fn the_modules_form_a_graph_without_cycles() {
        testkit::module_graph::assert_crate_acyclic(env!("CARGO_MANIFEST_DIR"));
    }
}
