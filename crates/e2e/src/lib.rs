//! The one end-to-end harness: every test that starts both services gets them from here.
//!
//! Two ways to run a service, for two kinds of test:
//!
//! - as a **child process** of its real binary, so a scenario can SIGKILL or SIGTERM it and
//!   read its exit code: [`System`] starts both over real PostgreSQL, Redis and RabbitMQ from
//!   the test kit, with a [`testkit::TcpProxy`] on booksvc → storagesvc and on both services'
//!   AMQP connections to inject latency or partitions (the scenarios of `tests/degradation/`);
//!   [`fleet`] runs several replicas of each behind load balancers on a broker cluster (the
//!   scenarios of `tests/fleet/`); `tests/trace/` runs [`System`] with both services exporting
//!   their spans to a [`testkit::OtlpReceiver`] and checks that one trace links them;
//! - **in process** ([`in_process`]), built exactly as their `main`s build them, so a test can
//!   reach behind a service (its cache, breaker, local layer): booksvc's integration tests
//!   (`crates/booksvc/tests/{api,consumer,operations}`) take this crate as a dev-dependency
//!   for that.
//!
//! Modules:
//!
//! - [`system`]: [`System`] — the dependencies, both services and the proxies, started together;
//! - [`service`]: [`Service`] — one child process: start, kill, terminate, restart;
//! - [`fleet`]: replicas, balancers and a broker cluster, for the fleet scenarios;
//! - [`in_process`]: [`in_process::Storagesvc`] and [`in_process::Booksvc`] in the test's
//!   own process;
//! - [`load`]: clients reading from booksvc and writing to storagesvc in the background,
//!   every answer recorded with the phase of the scenario it happened in;
//! - [`watch`]: watchers timing when each replica serves each write;
//! - [`report`]: the figures a scenario measured, printed as one `DEGRADATION …` or
//!   `FLEET …` line.

pub mod fleet;
pub mod in_process;
pub mod load;
pub mod report;
pub mod service;
pub mod system;
pub mod timeline;
pub mod watch;

pub use load::{Load, Phase, Sample, Samples};
pub use report::Figures;
pub use service::Service;
pub use system::{Binaries, Options, System};

pub use testkit::eventually;
