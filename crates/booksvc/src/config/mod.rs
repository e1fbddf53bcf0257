//! Settings: every knob is an environment variable (and a `--flag` of the same name).
//!
//! `booksvc --help` lists each variable with its default and meaning. A bad value stops
//! start-up with one line naming the variable and exit code 2 ([`Settings::load_or_exit`]);
//! there is no silent fallback to a default. Durations are written like `500ms`, `5s`, `2m`.
//!
//! # Layout
//! [`Settings`] is the one clap struct (it is `--help`); each part of the service turns its
//! variables into the settings type of the component they configure:
//! - `http`: the server's connection limits ([`crate::serve::ConnectionLimits`]).
//! - `upstream`: storagesvc's URL, the circuit breaker ([`BreakerSettings`]) and retry
//!   ([`RetrySettings`]).
//! - `cache`: Redis and the local hit layer ([`crate::cache::CacheSettings`],
//!   [`crate::cache::LocalCacheSettings`]).
//! - `broker`: the event consumer and the local layer's subscription ([`crate::consumer::ConsumerSettings`],
//!   [`crate::cache::InvalidationSettings`]).
//! - `parse`: the value parsers; `describe`: a bad value as one line naming its variable.
//!
//! # Conventions
//! - A component's configuration type is named `*Settings`, and `Settings::*_settings()`
//!   builds it.
//! - Each default is written once, as a Rust value next to the component it configures
//!   (`BreakerSettings::default()`, `cache::DEFAULT_MAX_AGE`, …); clap shows and parses that
//!   value (`default_value_t`, or `default_text` for durations).
//! - A secret (`REDIS_URL`, `AMQP_URL`) stays wrapped ([`Secret`], [`events::BrokerNodes`])
//!   into the component's settings, whose `Debug` hides it, and is exposed only where the
//!   client is opened.
//!
//! `AMQP_URL` and the `CONSUMER_*` variables configure the event consumer ([`crate::consumer`]).

mod broker;
mod cache;
pub(crate) mod default_text;
mod describe;
mod http;
mod parse;
#[cfg(test)]
mod tests;
mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;

use events::BrokerNodes;

use crate::breaker::BreakerSettings;
use crate::cache::{DEFAULT_MAX_AGE, DEFAULT_OP_TIMEOUT, DEFAULT_PREFIX, local};
use crate::consumer;
use crate::retry::RetrySettings;

pub use crate::secret::Secret;
use broker::{parse_bool, parse_prefetch};
pub(crate) use cache::{parse_prefix, parse_redis_addr, parse_redis_url, redis_url};
pub use describe::describe_error;
pub use parse::LogFormat;
pub(crate) use parse::{
    parse_amqp_url, parse_count, parse_duration, parse_listen_addr, parse_log_filter,
    parse_log_format, parse_positive_duration,
};
pub(crate) use upstream::{parse_http_url, parse_ratio};

/// Exit code for a configuration error (the convention for usage errors).
pub const EXIT_BAD_CONFIG: i32 = 2;

/// RabbitMQ when `AMQP_URL` is unset.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@localhost:5672/%2f";

/// Redis when neither `REDIS_ADDR` nor `REDIS_URL` is set.
pub const DEFAULT_REDIS_URL: &str = "redis://localhost:6379";

/// storagesvc when `STORAGESVC_URL` is unset.
pub const DEFAULT_STORAGESVC_URL: &str = "http://localhost:8082";

/// Everything booksvc can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "booksvc",
    version,
    about = "Answers book reads from storagesvc through a circuit breaker and retry, falling back to a Redis cache of the last good data."
)]
pub struct Settings {
    /// Where to listen: PORT (binds 0.0.0.0), :PORT, or HOST:PORT.
    #[arg(long = "http-port", env = "HTTP_PORT", default_value = "8081", value_parser = parse_listen_addr)]
    pub http_addr: SocketAddr,

    /// Longest a client may take to send a request's headers, counted from when its
    /// connection opened or its previous response went out (so it also closes idle
    /// keep-alive connections).
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_header_read_timeout: Duration,

    /// Most client connections open at once; at the cap, new ones wait in the listen backlog.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value = "1024", value_parser = parse_count::<1, 1_000_000>)]
    pub http_max_connections: u32,

    /// Redis as HOST:PORT (the original's form). Unset, with REDIS_URL unset too:
    /// redis://localhost:6379.
    #[arg(long, env = "REDIS_ADDR", value_parser = parse_redis_addr, conflicts_with = "redis_url")]
    pub redis_addr: Option<String>,

    /// Redis as a full URL, redis://[:PASSWORD@]HOST:PORT[/DB]; set this or REDIS_ADDR.
    // This doc is also `--help` (and docs/configuration.md, checked against it), so the
    // brackets stay as they are and rustdoc is told they are not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url, hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// Base URL of storagesvc.
    #[arg(long, env = "STORAGESVC_URL", default_value = DEFAULT_STORAGESVC_URL, value_parser = parse_http_url)]
    pub storagesvc_url: String,

    /// Log filter, tracing-subscriber EnvFilter syntax (e.g. `info,booksvc=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub rust_log: String,

    /// Log output: `json` (one object per line) or `pretty` (for humans).
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = parse_log_format)]
    pub log_format: LogFormat,

    /// How long a cache entry is served without asking storagesvc (`hit`); `0s` = always ask
    /// storagesvc first and use the cache only when it fails (the original's behaviour).
    #[arg(long, env = "CACHE_FRESH_TTL", default_value = "5s", value_parser = parse_duration)]
    pub cache_fresh_ttl: Duration,

    /// Longest any cache entry is kept and served as `stale` during an outage.
    #[arg(long, env = "CACHE_MAX_AGE", default_value = default_text::duration(DEFAULT_MAX_AGE), value_parser = parse_positive_duration)]
    pub cache_max_age: Duration,

    /// Prefix of every Redis key booksvc writes (deployments sharing a Redis need their own).
    #[arg(long, env = "CACHE_PREFIX", default_value = DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub cache_prefix: String,

    /// Bound on each Redis call: a slow or dead Redis costs a request at most this (twice on
    /// a miss: the read and the fill).
    #[arg(long, env = "REDIS_TIMEOUT", default_value = default_text::duration(DEFAULT_OP_TIMEOUT), value_parser = parse_positive_duration)]
    pub redis_timeout: Duration,

    /// The most a client waits for an answer, retries and all.
    #[arg(long, env = "REQUEST_BUDGET", default_value = "1s", value_parser = parse_positive_duration)]
    pub request_budget: Duration,

    /// The most a read with a stale entry waits for storagesvc before it is served the entry
    /// (`stale`, detail `soft-timeout`); the call goes on and refills the cache. Reads with
    /// nothing cached wait up to REQUEST_BUDGET. `0s`: serve the entry at once, refresh behind.
    #[arg(long, env = "STALE_SOFT_TIMEOUT", default_value = "50ms", value_parser = parse_duration)]
    pub stale_soft_timeout: Duration,

    /// Bound on one storagesvc attempt (a shorter one when less of the budget is left).
    #[arg(long, env = "STORAGESVC_TIMEOUT", default_value = "300ms", value_parser = parse_positive_duration)]
    pub storagesvc_timeout: Duration,

    /// How long the breaker stays open (calls go straight to the cache) before probing.
    #[arg(long, env = "BREAKER_TIMEOUT", default_value = default_text::duration(BreakerSettings::default().open_timeout), value_parser = parse_positive_duration)]
    pub breaker_timeout: Duration,

    /// Open the breaker after this many storagesvc failures in a row (0: rule off).
    #[arg(long, env = "BREAKER_CONSECUTIVE_FAILURES", default_value_t = BreakerSettings::default().consecutive_failures, value_parser = parse_count::<0, 1_000_000>)]
    pub breaker_consecutive_failures: u32,

    /// Open the breaker when this share of calls fail (0.0–1.0; above 1.0: rule off)…
    #[arg(long, env = "BREAKER_FAILURE_RATIO", default_value_t = BreakerSettings::default().failure_ratio, value_parser = parse_ratio)]
    pub breaker_failure_ratio: f64,

    /// …once at least this many calls were made in the current interval.
    #[arg(long, env = "BREAKER_MIN_REQUESTS", default_value_t = BreakerSettings::default().min_requests, value_parser = parse_count::<1, 1_000_000>)]
    pub breaker_min_requests: u32,

    /// Probe calls let through while half-open; that many successes in a row close it.
    #[arg(long, env = "BREAKER_HALF_OPEN_PROBES", default_value_t = BreakerSettings::default().max_half_open, value_parser = parse_count::<1, 1000>)]
    pub breaker_half_open_probes: u32,

    /// While closed, the breaker's counts reset this often (`0s`: never).
    #[arg(long, env = "BREAKER_INTERVAL", default_value = default_text::duration(BreakerSettings::default().interval), value_parser = parse_duration)]
    pub breaker_interval: Duration,

    /// storagesvc attempts per request, the first included (1: no retry).
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value_t = RetrySettings::default().max_attempts, value_parser = parse_count::<1, 100>)]
    pub retry_max_attempts: u32,

    /// Pause before the second attempt; each later pause doubles, with ±50% jitter…
    #[arg(long, env = "RETRY_INITIAL_INTERVAL", default_value = default_text::duration(RetrySettings::default().initial_interval), value_parser = parse_positive_duration)]
    pub retry_initial_interval: Duration,

    /// …up to this cap. No pause ever runs past REQUEST_BUDGET.
    #[arg(long, env = "RETRY_MAX_INTERVAL", default_value = default_text::duration(RetrySettings::default().max_interval), value_parser = parse_positive_duration)]
    pub retry_max_interval: Duration,

    /// After SIGTERM/SIGINT, how long in-flight requests get to finish.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub shutdown_timeout: Duration,

    /// After SIGTERM/SIGINT, how long to keep serving with readiness at 503 so load
    /// balancers stop sending traffic before the listener closes (`0s`: close at once).
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_drain_delay: Duration,

    /// RabbitMQ, for the event consumer: amqp://USER:PASSWORD@HOST:PORT/VHOST (`%2f` is `/`),
    /// or the nodes of one cluster as a comma-separated list of such URLs (each process starts
    /// at a random node and moves to another when its node is lost).
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, value_parser = parse_amqp_url, hide_env_values = true)]
    pub amqp_url: BrokerNodes,

    /// Run the event consumer that warms the cache from book-changed events (`false`: the
    /// cache is filled by reads only).
    #[arg(long, env = "CONSUMER_ENABLED", default_value = "true", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub consumer_enabled: bool,

    /// Unacked events RabbitMQ may send the consumer ahead of its acks.
    #[arg(long, env = "CONSUMER_PREFETCH", default_value_t = consumer::DEFAULT_PREFETCH, value_parser = parse_prefetch)]
    pub consumer_prefetch: u16,

    /// Delays before retrying an event that failed, one retry queue each, comma-separated;
    /// later retries reuse the last delay.
    #[arg(long, env = "CONSUMER_RETRY_DELAYS", default_value = default_text::durations(&events::DEFAULT_RETRY_DELAYS), value_delimiter = ',', value_parser = parse_positive_duration)]
    pub consumer_retry_delays: Vec<Duration>,

    /// Attempts per event, the first included, before it goes to the dead-letter queue
    /// (unset: one more than the number of retry delays).
    #[arg(long, env = "CONSUMER_MAX_ATTEMPTS", value_parser = parse_count::<1, 1000>)]
    pub consumer_max_attempts: Option<u32>,

    /// Longest pause between attempts to reconnect to RabbitMQ.
    #[arg(long, env = "CONSUMER_RECONNECT_MAX", default_value = default_text::duration(consumer::DEFAULT_RECONNECT_MAX), value_parser = parse_positive_duration)]
    pub consumer_reconnect_max: Duration,

    /// Fresh answers kept in memory in front of Redis (0: off), dropped by each replica's
    /// own subscription to the book-changed events and bypassed while it is down. Off when
    /// CONSUMER_ENABLED is false (no events to keep it coherent).
    #[arg(long, env = "LOCAL_CACHE_MAX_ENTRIES", default_value_t = local::DEFAULT_MAX_ENTRIES, value_parser = parse_count::<0, 10_000_000>)]
    pub local_cache_max_entries: u32,

    /// Longest an answer is served from memory before Redis is asked again, however fresh
    /// (bounds what a missed event could cost).
    #[arg(long, env = "LOCAL_CACHE_TTL", default_value = default_text::duration(local::DEFAULT_MAX_AGE), value_parser = parse_positive_duration)]
    pub local_cache_ttl: Duration,
}

impl Settings {
    /// Reads the command line and environment; on `--help` prints and exits 0, on a bad
    /// value prints one line naming the variable and exits [`EXIT_BAD_CONFIG`].
    pub fn load_or_exit() -> Settings {
        describe::or_exit(Settings::try_parse().and_then(Settings::checked))
    }

    /// Rules that span two variables, checked after each value parsed on its own.
    pub fn checked(self) -> Result<Settings, clap::Error> {
        if self.retry_max_interval < self.retry_initial_interval {
            return Err(clap::Error::raw(
                ErrorKind::ValueValidation,
                "invalid RETRY_MAX_INTERVAL: must not be below RETRY_INITIAL_INTERVAL",
            ));
        }
        // A miss spends up to two Redis calls (lookup and fill) besides storagesvc's share.
        if self.redis_timeout * 2 >= self.request_budget {
            return Err(clap::Error::raw(
                ErrorKind::ValueValidation,
                "invalid REDIS_TIMEOUT: must be less than half of REQUEST_BUDGET",
            ));
        }
        if self.consumer_max_attempts.is_some_and(|max| max > 1)
            && self.consumer_retry_delays.is_empty()
        {
            return Err(clap::Error::raw(
                ErrorKind::ValueValidation,
                "invalid CONSUMER_RETRY_DELAYS: retries need at least one delay",
            ));
        }
        Ok(self)
    }
}
