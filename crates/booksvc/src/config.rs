//! Settings: every knob is an environment variable (and a `--flag` of the same name).
//!
//! `booksvc --help` lists each variable with its default and meaning. A bad value stops
//! start-up with one line naming the variable and exit code 2 ([`Settings::load_or_exit`]);
//! there is no silent fallback to a default. Durations are written like `500ms`, `5s`, `2m`.
//!
//! `AMQP_URL` and the `CONSUMER_*` variables configure the event consumer ([`crate::consumer`]).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use events::BrokerNodes;

use crate::breaker::BreakerSettings;
use crate::cache::{CacheConfig, InvalidationSettings, LocalCacheConfig};
use crate::consumer::ConsumerSettings;
use crate::retry::RetryPolicy;
use crate::serve::ConnectionLimits;

/// Exit code for a configuration error (the convention for usage errors).
pub const EXIT_BAD_CONFIG: i32 = 2;

/// RabbitMQ when `AMQP_URL` is unset.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@localhost:5672/%2f";

/// Redis when neither `REDIS_ADDR` nor `REDIS_URL` is set.
pub const DEFAULT_REDIS_URL: &str = "redis://localhost:6379";

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
    #[arg(long, env = "STORAGESVC_URL", default_value = "http://localhost:8082", value_parser = parse_http_url)]
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
    #[arg(long, env = "CACHE_MAX_AGE", default_value = "24h", value_parser = parse_positive_duration)]
    pub cache_max_age: Duration,

    /// Prefix of every Redis key booksvc writes (deployments sharing a Redis need their own).
    #[arg(long, env = "CACHE_PREFIX", default_value = "booksvc:", value_parser = parse_prefix)]
    pub cache_prefix: String,

    /// Bound on each Redis call: a slow or dead Redis costs a request at most this (twice on
    /// a miss: the read and the fill).
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "100ms", value_parser = parse_positive_duration)]
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
    #[arg(long, env = "BREAKER_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub breaker_timeout: Duration,

    /// Open the breaker after this many storagesvc failures in a row (0: rule off).
    #[arg(long, env = "BREAKER_CONSECUTIVE_FAILURES", default_value = "5", value_parser = parse_count::<0, 1_000_000>)]
    pub breaker_consecutive_failures: u32,

    /// Open the breaker when this share of calls fail (0.0–1.0; above 1.0: rule off)…
    #[arg(long, env = "BREAKER_FAILURE_RATIO", default_value = "0.5", value_parser = parse_ratio)]
    pub breaker_failure_ratio: f64,

    /// …once at least this many calls were made in the current interval.
    #[arg(long, env = "BREAKER_MIN_REQUESTS", default_value = "20", value_parser = parse_count::<1, 1_000_000>)]
    pub breaker_min_requests: u32,

    /// Probe calls let through while half-open; that many successes in a row close it.
    #[arg(long, env = "BREAKER_HALF_OPEN_PROBES", default_value = "1", value_parser = parse_count::<1, 1000>)]
    pub breaker_half_open_probes: u32,

    /// While closed, the breaker's counts reset this often (`0s`: never).
    #[arg(long, env = "BREAKER_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub breaker_interval: Duration,

    /// storagesvc attempts per request, the first included (1: no retry).
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value = "4", value_parser = parse_count::<1, 100>)]
    pub retry_max_attempts: u32,

    /// Pause before the second attempt; each later pause doubles, with ±50% jitter…
    #[arg(long, env = "RETRY_INITIAL_INTERVAL", default_value = "50ms", value_parser = parse_positive_duration)]
    pub retry_initial_interval: Duration,

    /// …up to this cap. No pause ever runs past REQUEST_BUDGET.
    #[arg(long, env = "RETRY_MAX_INTERVAL", default_value = "400ms", value_parser = parse_positive_duration)]
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
    #[arg(long, env = "CONSUMER_PREFETCH", default_value = "32", value_parser = parse_prefetch)]
    pub consumer_prefetch: u16,

    /// Delays before retrying an event that failed, one retry queue each, comma-separated;
    /// later retries reuse the last delay.
    #[arg(long, env = "CONSUMER_RETRY_DELAYS", default_value = "1s,10s,1m,5m", value_delimiter = ',', value_parser = parse_positive_duration)]
    pub consumer_retry_delays: Vec<Duration>,

    /// Attempts per event, the first included, before it goes to the dead-letter queue
    /// (unset: one more than the number of retry delays).
    #[arg(long, env = "CONSUMER_MAX_ATTEMPTS", value_parser = parse_count::<1, 1000>)]
    pub consumer_max_attempts: Option<u32>,

    /// Longest pause between attempts to reconnect to RabbitMQ.
    #[arg(long, env = "CONSUMER_RECONNECT_MAX", default_value = "5s", value_parser = parse_positive_duration)]
    pub consumer_reconnect_max: Duration,

    /// Fresh answers kept in memory in front of Redis (0: off), dropped by each replica's
    /// own subscription to the book-changed events and bypassed while it is down. Off when
    /// CONSUMER_ENABLED is false (no events to keep it coherent).
    #[arg(long, env = "LOCAL_CACHE_MAX_ENTRIES", default_value = "10000", value_parser = parse_count::<0, 10_000_000>)]
    pub local_cache_max_entries: u32,

    /// Longest an answer is served from memory before Redis is asked again, however fresh
    /// (bounds what a missed event could cost).
    #[arg(long, env = "LOCAL_CACHE_TTL", default_value = "1s", value_parser = parse_positive_duration)]
    pub local_cache_ttl: Duration,
}

impl Settings {
    /// How each HTTP connection is bounded (`HTTP_HEADER_READ_TIMEOUT`, `HTTP_MAX_CONNECTIONS`).
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.http_header_read_timeout,
            max_connections: self.http_max_connections as usize,
        }
    }

    /// Reads the command line and environment; on `--help` prints and exits 0, on a bad
    /// value prints one line naming the variable and exits [`EXIT_BAD_CONFIG`].
    pub fn load_or_exit() -> Settings {
        let settings = Settings::try_parse().and_then(|settings| settings.checked());
        match settings {
            Ok(settings) => settings,
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) =>
            {
                err.exit()
            }
            Err(err) => {
                eprintln!("booksvc: {}", describe_error(&err));
                std::process::exit(EXIT_BAD_CONFIG)
            }
        }
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

    /// The Redis URL from `REDIS_URL`, `REDIS_ADDR` or the default.
    pub fn redis_url(&self) -> String {
        match (&self.redis_url, &self.redis_addr) {
            (Some(url), _) => url.expose().to_owned(),
            (None, Some(addr)) => format!("redis://{addr}"),
            (None, None) => DEFAULT_REDIS_URL.to_owned(),
        }
    }

    /// The cache's part of the settings.
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            url: self.redis_url(),
            prefix: self.cache_prefix.clone(),
            op_timeout: self.redis_timeout,
            max_age: self.cache_max_age,
        }
    }

    /// The circuit breaker's part of the settings.
    pub fn breaker_settings(&self) -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: self.breaker_consecutive_failures,
            failure_ratio: self.breaker_failure_ratio,
            min_requests: self.breaker_min_requests,
            open_timeout: self.breaker_timeout,
            max_half_open: self.breaker_half_open_probes,
            interval: self.breaker_interval,
        }
    }

    /// The event consumer's settings, or `None` when `CONSUMER_ENABLED` is false.
    pub fn consumer_settings(&self) -> Option<ConsumerSettings> {
        if !self.consumer_enabled {
            return None;
        }
        let defaults = ConsumerSettings::new(self.amqp_url.clone());
        Some(ConsumerSettings {
            prefetch: self.consumer_prefetch,
            max_attempts: self.consumer_max_attempts.unwrap_or_else(|| {
                crate::consumer::default_max_attempts(&self.consumer_retry_delays)
            }),
            retry_delays: self.consumer_retry_delays.clone(),
            reconnect_max: self.consumer_reconnect_max,
            ..defaults
        })
    }

    /// The in-process hit layer's sizes; `max_entries` 0 (off) without the event stream.
    pub fn local_cache_config(&self) -> LocalCacheConfig {
        let max_entries = match self.consumer_enabled {
            true => u64::from(self.local_cache_max_entries),
            false => 0,
        };
        LocalCacheConfig {
            max_entries,
            max_age: self.local_cache_ttl,
            fresh_ttl: self.cache_fresh_ttl,
        }
    }

    /// The local layer's event subscription (on the consumer's broker and reconnect cap).
    pub fn invalidation_settings(&self) -> InvalidationSettings {
        InvalidationSettings {
            reconnect_max: self.consumer_reconnect_max,
            ..InvalidationSettings::new(self.amqp_url.clone())
        }
    }

    /// The retry part of the settings (the multiplier and jitter are fixed: see `retry`).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial_interval: self.retry_initial_interval,
            max_interval: self.retry_max_interval,
            max_attempts: self.retry_max_attempts,
            ..RetryPolicy::default()
        }
    }
}

/// One line for a parse error: `invalid HTTP_PORT "abc": expected PORT, :PORT or HOST:PORT`.
///
/// clap's own rendering is a multi-line usage dump naming the `--flag`; operators set
/// environment variables, so the line names the variable instead.
pub fn describe_error(err: &clap::Error) -> String {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    match (
        context(ContextKind::InvalidArg),
        context(ContextKind::InvalidValue),
    ) {
        (Some(arg), Some(value)) => {
            let reason = std::error::Error::source(err)
                .map_or_else(|| "not accepted".to_owned(), ToString::to_string);
            let argument = argument_of(&arg);
            // A secret's value (a URL with its password, a token) is never echoed: the line
            // goes to container logs. The parsers' reasons never quote the value either.
            match argument.is_secret {
                true => format!("invalid {}: {reason}", argument.variable),
                false => format!("invalid {} {value:?}: {reason}", argument.variable),
            }
        }
        (Some(arg), None) if err.kind() == ErrorKind::ArgumentConflict => {
            match context(ContextKind::PriorArg) {
                Some(prior) => format!(
                    "{} and {} are both set: set only one",
                    variable_of(&prior),
                    variable_of(&arg)
                ),
                None => first_line(&err.to_string()),
            }
        }
        _ => first_line(&err.to_string()),
    }
}

/// The argument clap rendered as `--http-port <HTTP_PORT>`: its environment variable, and
/// whether its value is secret (`hide_env_values`).
struct Argument {
    variable: String,
    is_secret: bool,
}

/// Maps clap's `--http-port <HTTP_PORT>` to the environment variable of that argument.
fn variable_of(rendered_arg: &str) -> String {
    argument_of(rendered_arg).variable
}

fn argument_of(rendered_arg: &str) -> Argument {
    let long = rendered_arg
        .trim_start_matches('-')
        .split(' ')
        .next()
        .unwrap_or_default();
    let command = <Settings as clap::CommandFactory>::command();
    let found = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long));
    Argument {
        variable: found.and_then(|arg| arg.get_env()).map_or_else(
            || rendered_arg.to_owned(),
            |env| env.to_string_lossy().into_owned(),
        ),
        // An argument we cannot find is treated as secret: saying less is the safe side.
        is_secret: found.is_none_or(clap::Arg::is_hide_env_values_set),
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.trim_start_matches("error: ").to_owned()
}

/// A value that must not appear in logs or `Debug` output (a Redis URL with a password).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Multi-line, coloured, for a developer's terminal.
    Pretty,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        _ => Err("expected json or pretty".to_owned()),
    }
}

fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|err| format!("not a log filter: {err}"))
}

/// `8081` and `:8081` bind every interface (the Go original's forms); `host:port` binds that.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    const EXPECTED: &str = "expected PORT, :PORT or HOST:PORT";
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if !text.contains(':') || text.starts_with(':') {
        return Err(EXPECTED.to_owned());
    }
    // Resolving a host name blocks, which is fine once at start-up.
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| EXPECTED.to_owned())
}

/// `host:port`, checked by the Redis client's own URL parser (names are resolved later, so
/// a Redis that is not up yet does not stop start-up).
pub(crate) fn parse_redis_addr(text: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected HOST:PORT";
    let (host, port) = text.rsplit_once(':').ok_or(EXPECTED)?;
    let valid = !host.is_empty()
        && port.parse::<u16>().is_ok_and(|port| port > 0)
        && !text.contains('/')
        && redis::Client::open(format!("redis://{text}").as_str()).is_ok();
    valid
        .then(|| text.to_owned())
        .ok_or_else(|| EXPECTED.to_owned())
}

pub(crate) fn parse_redis_url(text: &str) -> Result<Secret, String> {
    // The client's error text could echo the password; say only what is expected.
    let scheme_ok = text.starts_with("redis://") || text.starts_with("redis+unix://");
    match redis::Client::open(text) {
        Ok(_) if scheme_ok => Ok(Secret::new(text)),
        _ => Err("expected redis://[:PASSWORD@]HOST:PORT[/DB]".to_owned()),
    }
}

pub(crate) fn parse_http_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|_| "expected http://HOST:PORT".to_owned())?;
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err("expected http://HOST:PORT".to_owned());
    }
    Ok(text.to_owned())
}

pub(crate) fn parse_prefix(text: &str) -> Result<String, String> {
    let valid = text.len() <= 64 && text.bytes().all(|b| b.is_ascii_graphic());
    valid
        .then(|| text.to_owned())
        .ok_or_else(|| "expected up to 64 visible ASCII characters, no spaces".to_owned())
}

/// The longest accepted duration. Durations are added to `Instant`s, where a huge one
/// overflows (a panic); nothing here needs more than a year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|_| "expected a duration like 500ms, 5s or 2m".to_owned())?;
    match duration <= MAX_DURATION {
        true => Ok(duration),
        false => Err("must be at most a year (365days)".to_owned()),
    }
}

pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be greater than zero".to_owned()),
        duration => Ok(duration),
    }
}

fn parse_count<const MIN: u32, const MAX: u32>(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(count) if (MIN..=MAX).contains(&count) => Ok(count),
        _ => Err(format!("expected a whole number from {MIN} to {MAX}")),
    }
}

/// One `amqp://` URL lapin can use, or several, comma-separated; the message never echoes an
/// entry (it may hold a password).
fn parse_amqp_url(text: &str) -> Result<BrokerNodes, String> {
    BrokerNodes::parse(text)
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn parse_prefetch(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err("expected a whole number from 1 to 65535".to_owned()),
    }
}

/// A share of calls: 0.0 to 1.0, or above 1.0 to switch the ratio rule off.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if ratio.is_finite() && ratio > 0.0 => Ok(ratio),
        _ => Err("expected a number above 0, like 0.5 (above 1 switches the rule off)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        let argv = std::iter::once("booksvc").chain(args.iter().copied());
        Settings::try_parse_from(argv).and_then(Settings::checked)
    }

    #[test]
    fn listen_addresses_accept_the_three_forms() {
        let cases = [
            ("8081", Some("0.0.0.0:8081")),
            (":8081", Some("0.0.0.0:8081")),
            ("0", Some("0.0.0.0:0")),
            ("127.0.0.1:9000", Some("127.0.0.1:9000")),
            ("abc", None),
            (":", None),
            ("65536", None),
        ];
        for (input, expected) in cases {
            let parsed = parse_listen_addr(input).ok().map(|addr| addr.to_string());
            assert_eq!(parsed.as_deref(), expected, "input {input:?}");
        }
    }

    #[test]
    fn redis_comes_from_the_address_the_url_or_the_default() {
        let cases: [(&[&str], &str); 3] = [
            (&[], "redis://localhost:6379"),
            (&["--redis-addr", "cache:6380"], "redis://cache:6380"),
            (
                &["--redis-url", "redis://:pw@cache:6380/2"],
                "redis://:pw@cache:6380/2",
            ),
        ];
        for (args, expected) in cases {
            let settings = parse(args).expect("parses");
            assert_eq!(settings.redis_url(), expected, "args {args:?}");
        }
        for bad in [
            "cache",
            "cache:port",
            "cache:0",
            ":6379",
            "redis://cache:6379",
        ] {
            assert!(
                parse_redis_addr(bad).is_err(),
                "REDIS_ADDR {bad:?} must be refused"
            );
        }
        assert!(parse_redis_url("http://cache").is_err(), "not a Redis URL");
        let both = parse(&["--redis-addr", "a:1", "--redis-url", "redis://b:2"]);
        assert!(
            both.is_err(),
            "REDIS_ADDR and REDIS_URL together are ambiguous"
        );
    }

    #[test]
    fn the_local_layer_is_sized_by_its_variables_and_off_without_events() {
        let defaults = parse(&[]).expect("parses").local_cache_config();
        assert_eq!(defaults.max_entries, 10_000);
        assert_eq!(defaults.max_age, Duration::from_secs(1));
        assert_eq!(defaults.fresh_ttl, Duration::from_secs(5));
        let off = parse(&["--local-cache-max-entries", "0"]).expect("parses");
        assert_eq!(off.local_cache_config().max_entries, 0);
        let no_events = parse(&["--consumer-enabled", "false"]).expect("parses");
        assert_eq!(no_events.local_cache_config().max_entries, 0);
        assert!(parse(&["--local-cache-ttl", "0s"]).is_err(), "a zero cap");
        assert!(parse(&["--local-cache-max-entries", "-1"]).is_err());
    }

    #[test]
    fn durations_counts_and_ratios_refuse_bad_values() {
        assert_eq!(
            parse_duration("0s"),
            Ok(Duration::ZERO),
            "a zero TTL is allowed"
        );
        assert_eq!(
            parse_positive_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert!(
            parse_positive_duration("0s").is_err(),
            "a zero budget is not"
        );
        assert!(parse_duration("5").is_err(), "a unit is required");
        // Durations are added to `Instant`s: a huge one would overflow (a panic), so they
        // are capped at a year.
        assert!(parse_duration("366days").is_err(), "over a year");
        assert!(parse_positive_duration("200years").is_err(), "over a year");
        assert_eq!(
            parse_duration("365days"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert!(parse_count::<1, 100>("0").is_err(), "below the minimum");
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        for bad in ["0", "-1", "NaN", "half"] {
            assert!(parse_ratio(bad).is_err(), "ratio {bad:?}");
        }
        assert!(parse_http_url("localhost:8082").is_err(), "no scheme");
        assert!(parse_prefix("has space").is_err(), "spaces in a key prefix");
    }

    #[test]
    fn defaults_match_the_design() {
        let settings = parse(&[]).expect("defaults parse");
        assert_eq!(settings.http_addr.port(), 8081);
        assert_eq!(settings.storagesvc_url, "http://localhost:8082");
        assert_eq!(settings.request_budget, Duration::from_secs(1));
        assert_eq!(settings.breaker_timeout, Duration::from_secs(5));
        assert_eq!(settings.redis_timeout, Duration::from_millis(100));
        assert_eq!(settings.stale_soft_timeout, Duration::from_millis(50));
        assert_eq!(
            settings.breaker_settings().open_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(settings.retry_policy().max_attempts, 4);
    }

    #[test]
    fn consumer_settings_come_from_their_variables_with_documented_defaults() {
        let settings = parse(&[]).expect("defaults parse");
        let consumer = settings.consumer_settings().expect("enabled by default");
        assert_eq!(consumer.amqp_url.addresses(), "localhost:5672");
        assert_eq!(consumer.prefetch, 32);
        assert_eq!(consumer.retry_delays, events::DEFAULT_RETRY_DELAYS.to_vec());
        assert_eq!(consumer.max_attempts, 5, "one attempt plus one per delay");
        assert_eq!(consumer.reconnect_max, Duration::from_secs(5));

        let args = [
            "--consumer-retry-delays",
            "200ms,1s",
            "--consumer-max-attempts",
            "7",
        ];
        let consumer = parse(&args)
            .expect("parses")
            .consumer_settings()
            .expect("enabled");
        assert_eq!(
            consumer.retry_delays,
            [Duration::from_millis(200), Duration::from_secs(1)]
        );
        assert_eq!(consumer.max_attempts, 7);

        let disabled = parse(&["--consumer-enabled", "false"]).expect("parses");
        assert!(disabled.consumer_settings().is_none());
        for bad in [
            &["--consumer-retry-delays", "1s,soon"][..],
            &["--consumer-prefetch", "0"],
            &["--consumer-enabled", "maybe"],
            &["--amqp-url", "http://broker"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn settings_handed_to_the_broker_clients_never_debug_print_the_password() {
        let settings = Settings::try_parse_from([
            "booksvc",
            "--amqp-url",
            "amqp://booksvc:Pr0dPass@mq:5672/%2f",
            "--redis-url",
            "redis://:Pr0dPass@cache:6379",
        ])
        .expect("valid settings");
        let consumer = settings.consumer_settings().expect("enabled by default");
        let printed = [
            format!("{settings:?}"),
            format!("{consumer:?}"),
            format!("{:?}", settings.invalidation_settings()),
        ];
        for text in printed {
            assert!(!text.contains("Pr0dPass"), "leaked: {text}");
        }
    }

    #[test]
    fn the_stale_soft_timeout_is_a_duration_and_may_be_zero() {
        let never_wait = parse(&["--stale-soft-timeout", "0s"]).expect("zero parses");
        assert_eq!(never_wait.stale_soft_timeout, Duration::ZERO);
        let err = parse(&["--stale-soft-timeout", "fast"]).expect_err("not a duration");
        assert!(
            describe_error(&err).starts_with("invalid STALE_SOFT_TIMEOUT \"fast\""),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_is_described_in_one_line_naming_the_variable() {
        let err = parse(&["--request-budget", "soon"]).expect_err("not a duration");
        assert_eq!(
            describe_error(&err),
            r#"invalid REQUEST_BUDGET "soon": expected a duration like 500ms, 5s or 2m"#
        );
        let err = parse(&[
            "--retry-initial-interval",
            "1s",
            "--retry-max-interval",
            "10ms",
        ])
        .expect_err("cap below the start");
        assert!(
            describe_error(&err).starts_with("invalid RETRY_MAX_INTERVAL"),
            "{err}"
        );
    }
}
