//! Settings: every knob is an environment variable (and a `--flag` of the same name).
//!
//! `storagesvc --help` lists each variable with its default and meaning. A bad value stops
//! start-up with one line naming the variable and exit code 2 ([`Settings::load_or_exit`]);
//! there is no silent fallback to a default. Durations are written like `500ms`, `5s`, `2m`.
//!
//! # Layout
//! [`Settings`] is the one clap struct (it is `--help`); each part of the service turns its
//! variables into what the component they configure takes:
//! - `http`: connection limits ([`crate::serve::ConnectionLimits`]), the body limit and the
//!   write token.
//! - `database`: the PostgreSQL URL and pool.
//! - `relay`: the outbox relay ([`crate::relay::RelaySettings`]).
//! - `parse`: the value parsers; `describe`: a bad value as one line naming its variable.
//!
//! # Conventions
//! - A component's configuration type is named `*Settings`, and `Settings::*_settings()`
//!   builds it.
//! - Every default is written once, in the `#[arg]` of its variable: no component here has
//!   a Rust default of its own.
//! - A secret (`DATABASE_URL`, `AMQP_URL`, `STORAGESVC_WRITE_TOKEN`) stays wrapped
//!   ([`Secret`], [`events::BrokerNodes`]) until the client or check that uses it.

mod database;
mod describe;
mod http;
mod parse;
mod relay;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use events::BrokerNodes;

pub use crate::secret::Secret;
use database::parse_database_url;
pub use describe::describe_error;
use http::{parse_byte_size, parse_secret};
pub use parse::LogFormat;
use parse::{
    parse_amqp_url, parse_count, parse_duration, parse_listen_addr, parse_log_filter,
    parse_log_format, parse_positive_duration,
};

/// Exit code for a configuration error (the convention for usage errors).
pub const EXIT_BAD_CONFIG: i32 = 2;

/// Everything storagesvc can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "storagesvc",
    version,
    about = "Owns the books in PostgreSQL; publishes book-changed events to RabbitMQ through a transactional outbox."
)]
pub struct Settings {
    /// Where to listen: PORT (binds 0.0.0.0), :PORT, or HOST:PORT.
    #[arg(long = "http-port", env = "HTTP_PORT", value_name = "ADDR", default_value = "8082", value_parser = parse_listen_addr)]
    pub http_addr: SocketAddr,

    /// Longest a client may take to send a request's headers, counted from when its
    /// connection opened or its previous response went out (so it also closes idle
    /// keep-alive connections).
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_header_read_timeout: Duration,

    /// Most client connections open at once; at the cap, new ones wait in the listen backlog.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value = "1024", value_parser = parse_count::<1, 1_000_000>)]
    pub http_max_connections: u32,

    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://pg:pass@localhost:5432/crud", value_parser = parse_database_url, hide_env_values = true)]
    pub database_url: Secret,

    /// RabbitMQ the outbox relay publishes to: amqp://USER:PASSWORD@HOST:PORT/VHOST, or the
    /// nodes of one cluster as a comma-separated list of such URLs (each process starts at a
    /// random node and moves to another when its node is lost).
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@localhost:5672/%2f", value_parser = parse_amqp_url, hide_env_values = true)]
    pub amqp_url: BrokerNodes,

    /// Bearer token required by POST/PUT/DELETE. Unset: every write is refused with 403.
    #[arg(long, env = "STORAGESVC_WRITE_TOKEN", value_parser = parse_secret, hide_env_values = true)]
    pub write_token: Option<Secret>,

    /// Log filter, tracing-subscriber EnvFilter syntax (e.g. `info,sqlx=warn`).
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub rust_log: String,

    /// Log output: `json` (one object per line) or `pretty` (for humans).
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = parse_log_format)]
    pub log_format: LogFormat,

    /// Most PostgreSQL connections the pool opens.
    #[arg(long, env = "DB_POOL_SIZE", default_value = "8", value_parser = parse_count::<1, 1000>)]
    pub db_pool_size: u32,

    /// Longest a request waits for a pooled connection before answering 503 (kept small: the
    /// pool's 30 s default made every request hang while PostgreSQL was down).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "250ms", value_parser = parse_positive_duration)]
    pub db_acquire_timeout: Duration,

    /// PostgreSQL `statement_timeout` for every connection: no query runs longer than this.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub db_statement_timeout: Duration,

    /// How long start-up keeps retrying (with backoff) while PostgreSQL is unreachable.
    #[arg(long, env = "DB_STARTUP_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub db_startup_timeout: Duration,

    /// Largest accepted request body, e.g. `65536`, `64KiB`, `1MiB`; larger bodies get 413.
    #[arg(long, env = "BODY_LIMIT", default_value = "64KiB", value_parser = parse_byte_size)]
    pub body_limit: usize,

    /// After SIGTERM/SIGINT, how long in-flight requests and the relay get to finish.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub shutdown_timeout: Duration,

    /// After SIGTERM/SIGINT, how long to keep serving with readiness at 503 so load
    /// balancers stop sending traffic before the listener closes (`0s`: close at once).
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_drain_delay: Duration,

    /// Most outbox rows the relay claims per batch.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value = "256", value_parser = parse_count::<1, 100_000>)]
    pub outbox_batch_size: u32,

    /// Most publishes awaiting a broker confirm at once.
    #[arg(long, env = "OUTBOX_PUBLISH_WINDOW", default_value = "64", value_parser = parse_count::<1, 10_000>)]
    pub outbox_publish_window: u32,

    /// Safety-net poll of the outbox when no NOTIFY arrives (NOTIFY is not stored).
    #[arg(long, env = "OUTBOX_POLL_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub outbox_poll_interval: Duration,

    /// Longest the relay waits for the broker to confirm a batch.
    #[arg(long, env = "OUTBOX_CONFIRM_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub outbox_confirm_timeout: Duration,

    /// Cap of the relay's reconnect backoff while RabbitMQ is down.
    #[arg(long, env = "OUTBOX_RECONNECT_MAX", default_value = "10s", value_parser = parse_positive_duration)]
    pub outbox_reconnect_max: Duration,

    /// How long sent outbox rows are kept before they are deleted (`0s`: at once).
    #[arg(long, env = "OUTBOX_RETENTION", default_value = "1m", value_parser = parse_duration)]
    pub outbox_retention: Duration,
}

impl Settings {
    /// Reads the command line and environment; on `--help` prints and exits 0, on a bad
    /// value prints one line naming the variable and exits [`EXIT_BAD_CONFIG`].
    pub fn load_or_exit() -> Settings {
        describe::or_exit(Settings::try_parse())
    }
}
