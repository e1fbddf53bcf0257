//! The end-to-end degradation harness: both services as real child processes (so a scenario
//! can SIGKILL or SIGTERM them and read their exit codes) over real PostgreSQL, Redis and
//! RabbitMQ from the test kit, with a [`testkit::TcpProxy`] on booksvc → storagesvc and on
//! both services' AMQP connections to inject latency or partitions.
//!
//! - [`system`]: [`System`] — the dependencies, both services and the proxies, started together;
//! - [`service`]: [`Service`] — one child process: start, kill, terminate, restart;
//! - [`load`]: clients reading from booksvc and writing to storagesvc in the background,
//!   every answer recorded with the phase of the scenario it happened in;
//! - [`report`]: the figures a scenario measured, printed as one `DEGRADATION …` line.
//!
//! The scenarios themselves are in `tests/degradation/`.

pub mod fleet;
pub mod load;
pub mod report;
pub mod service;
pub mod system;
pub mod watch;

pub use load::{Load, Phase, Sample, Samples};
pub use report::Figures;
pub use service::Service;
pub use system::{Binaries, Options, System};

use std::time::Duration;

/// Retries `check` every 100 ms until it returns true or `within` has passed; returns
/// whether it ever did.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
