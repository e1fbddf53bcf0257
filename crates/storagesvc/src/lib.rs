//! storagesvc: owns the books in PostgreSQL and publishes a book-changed event for every write
//! through a transactional outbox.
//!
//! # Layout
//! - [`config`]: every setting as an environment variable, parsed once, one-line errors.
//! - [`app`]: [`Application`] — build (database, migrations, seed, listener) and run until stopped.
//! - [`http`]: the router and every handler (books, health probes, `/metrics`, the OpenAPI
//!   description), the app state, extractors and [`http::ApiError`].
//! - [`books`]: the SQL for the books table and the rules a book obeys.
//! - [`paging`]: `?limit=N&after=ID` on `GET /books` and the `Link` to the next page.
//! - [`outbox`]: `enqueue` (the one way to emit an event) and the outbox table's queries.
//! - [`relay`]: [`relay::OutboxRelay`], publishing outbox rows to RabbitMQ with confirms.
//! - [`seed`]: the original two books, written once into an empty table.
//! - [`database`]: the pool, waiting for PostgreSQL at start-up, migrations.
//! - [`serve`]: the HTTP server loop: header-read timeout and a connection cap.
//! - [`metrics`]: every Prometheus series, its name and labels, and the recorder.
//! - [`telemetry`]: logging set-up, and span export over OTLP when configured.
//! - [`log_format`]: the JSON log lines: span fields, and trace ids at the top level.
//! - [`trace_context`]: W3C trace context: request and event spans that continue a caller's
//!   trace, their ids in every log line, the context handed on.
//! - [`secret`]: [`secret::Secret`], a configured value kept out of logs until used.
//!
//! # Data flow
//! A write request passes the [`http`] extractors (token, id, `If-Match`, JSON), then the
//! handler opens a transaction, writes through [`books`], adds the event with
//! [`outbox::enqueue`] and commits: the row and its event exist together or not at all. The
//! commit's `NOTIFY` wakes the [`relay`], which publishes the row to the `books` exchange,
//! waits for the broker's confirm and only then marks the row sent. Reads go straight to
//! [`books`].

pub mod app;
pub mod books;
pub mod config;
pub mod database;
pub mod http;
pub mod log_format;
pub mod metrics;
pub mod outbox;
pub mod paging;
pub mod relay;
pub mod secret;
pub mod seed;
pub mod serve;
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
