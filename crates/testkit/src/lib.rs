//! Real PostgreSQL, Redis and RabbitMQ for tests — never mocks.
//!
//! # Layout
//! - [`backend`](mod@backend): picks how servers run, once per process (`TESTKIT_BACKEND`).
//! - `local`: private server processes started from locally installed binaries, each in its
//!   own temporary directory and guarded by a watchdog that cleans up when the test process dies.
//! - `containers`: the same servers as Docker containers through testcontainers.
//! - [`Postgres`], [`Redis`], [`RabbitMq`]: the handles tests use; each wraps one of the two
//!   backends and offers the same operations (fresh namespaces, stop, start again).
//! - [`RabbitMqCluster`]: a private N-node RabbitMQ cluster (local backend only) whose nodes a
//!   test can kill, stop and start one at a time.
//! - [`LoadBalancer`]: a private HAProxy in front of several replicas of a service,
//!   health-checking their readiness route.
//! - [`TcpProxy`]: a TCP forwarder that adds latency, cuts or refuses connections on demand.
//! - [`eventually`]: the one loop that waits for a condition to come true.
//! - [`OtlpReceiver`]: an OTLP/HTTP trace receiver that decodes the spans a service exports.
//! - [`module_graph`]: a crate's top-level modules and the references between them, read from
//!   its sources; each service's unit tests assert it has no cycles.
//!
//! # Use
//! A test asks for a server shared by its whole test binary and isolates itself with a
//! fresh namespace; a test that stops the server starts a private one instead:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let database_url = testkit::Postgres::shared().await?.fresh_database().await?;
//! let amqp_url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
//! let redis = testkit::Redis::start().await?; // private: this test may stop it
//! redis.stop().await?;
//! # Ok(()) }
//! ```
//!
//! Servers started here never outlive the test process: a private handle stops its server on
//! drop, and a watchdog process removes shared servers (and everything of a killed test
//! process) within about a second of the test process exiting.

pub mod backend;
mod containers;
pub mod event_schema;
pub mod exposition;
mod load_balancer;
mod local;
pub mod log_capture;
pub mod module_graph;
mod otlp;
mod postgres;
mod probe;
mod proxy;
mod rabbitmq;
mod rabbitmq_cluster;
mod redis;
pub mod schemathesis;
mod wait;
mod worker;

pub use backend::{Backend, backend};
pub use load_balancer::LoadBalancer;
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use postgres::Postgres;
pub use proxy::{Direction, TcpProxy};
pub use rabbitmq::RabbitMq;
pub use rabbitmq_cluster::RabbitMqCluster;
pub use redis::Redis;
pub use wait::{POLL_INTERVAL, eventually};

/// Installs a `tracing` subscriber that writes through the test harness's capture, but only
/// when `TEST_LOG` is set, so ordinary test runs stay quiet. Safe to call from every test.
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
    // A second call (another test in the same binary) finds the subscriber already set;
    // that is the expected case, not an error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
