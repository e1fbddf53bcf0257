//! Both services inside the test's own process, built exactly as their `main`s build them
//! (`Application::build` + `run_until_stopped`), for tests that need to reach behind a
//! service: its cache, its read path, its in-process hit layer. Scenarios that kill, signal
//! or restart a service use [`System`](crate::System)'s child processes instead.
//!
//! - [`Storagesvc`]: on a fresh database, publishing to a given AMQP URL or to a port nothing
//!   listens on (its outbox relay then keeps retrying, which the read path never notices);
//!   writes books with its write token;
//! - [`Booksvc`]: reading from a given storagesvc URL, on the shared Redis (or a given one)
//!   under a key prefix of its own, with its consumer on a given AMQP URL or turned off.
//!
//! Each runs until [`Storagesvc::stop`]/[`Booksvc::stop`], or until it is dropped: a test that
//! fails half-way does not leave a service running.

mod booksvc;
mod storagesvc;

pub use booksvc::{Booksvc, BooksvcOptions};
pub use storagesvc::{Storagesvc, StoragesvcOptions};

/// `http://127.0.0.1:<port>` with a port nothing listens on (and that this process never
/// hands out again): a dependency that refuses every connection.
pub fn unreachable_http_url() -> anyhow::Result<String> {
    Ok(format!("http://127.0.0.1:{}", crate::service::free_port()?))
}

/// An AMQP URL whose port nothing listens on.
fn unreachable_amqp_url() -> anyhow::Result<String> {
    Ok(format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        crate::service::free_port()?
    ))
}

/// booksvc shares storagesvc's metrics recorder: the metrics facade allows one per process
/// (see `booksvc::metrics::adopt_recorder`).
fn share_metrics_recorder() -> anyhow::Result<()> {
    ::booksvc::metrics::adopt_recorder(::storagesvc::metrics::install_recorder()?);
    Ok(())
}
