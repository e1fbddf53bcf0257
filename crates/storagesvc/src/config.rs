//! Settings: every knob is an environment variable (and a `--flag` of the same name).
//!
//! `storagesvc --help` lists each variable with its default and meaning. A bad value stops
//! start-up with one line naming the variable and exit code 2 ([`Settings::load_or_exit`]);
//! there is no silent fallback to a default. Durations are written like `500ms`, `5s`, `2m`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use events::BrokerNodes;
use sqlx::postgres::PgConnectOptions;

use crate::relay::RelayConfig;
use crate::serve::ConnectionLimits;

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
        match Settings::try_parse() {
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
                eprintln!("storagesvc: {}", describe_error(&err));
                std::process::exit(EXIT_BAD_CONFIG)
            }
        }
    }

    /// The outbox relay's part of the settings.
    pub fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            amqp_url: self.amqp_url.clone(),
            batch_size: self.outbox_batch_size as usize,
            publish_window: self.outbox_publish_window as usize,
            poll_interval: self.outbox_poll_interval,
            confirm_timeout: self.outbox_confirm_timeout,
            reconnect_max: self.outbox_reconnect_max,
            retention: self.outbox_retention,
            topology: events::Topology::default(),
            db_timeout: crate::database::step_timeout(self.db_statement_timeout),
        }
    }
}

/// One line for a parse error: `invalid HTTP_PORT "abc": expected PORT, :PORT or HOST:PORT`.
///
/// clap's own rendering is a multi-line usage dump naming the `--flag`; operators set
/// environment variables, so the line names the variable instead.
pub fn describe_error(err: &clap::Error) -> String {
    let invalid = |kind| match err.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    match (
        invalid(ContextKind::InvalidArg),
        invalid(ContextKind::InvalidValue),
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
        _ => first_line(&err.to_string()),
    }
}

/// The argument clap rendered as `--http-port <HTTP_PORT>`: its environment variable, and
/// whether its value is secret (`hide_env_values`).
struct Argument {
    variable: String,
    is_secret: bool,
}

/// Maps clap's `--http-port <HTTP_PORT>` to that argument's environment variable.
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

/// A value that must not appear in logs or `Debug` output (tokens, URLs with passwords).
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

fn parse_secret(text: &str) -> Result<Secret, String> {
    // An empty value is almost always a template that expanded to nothing: say so rather
    // than run with, e.g., writes silently disabled.
    if text.trim().is_empty() {
        return Err("must not be empty (unset the variable instead)".to_owned());
    }
    Ok(Secret::new(text))
}

fn parse_database_url(text: &str) -> Result<Secret, String> {
    // sqlx's error text could echo the password; say only what is expected.
    let scheme_ok = text.starts_with("postgres://") || text.starts_with("postgresql://");
    match PgConnectOptions::from_str(text) {
        Ok(_) if scheme_ok => Ok(Secret::new(text)),
        _ => Err("expected postgres://USER:PASSWORD@HOST:PORT/DATABASE".to_owned()),
    }
}

/// One AMQP URL or several, comma-separated; the message never echoes an entry.
fn parse_amqp_url(text: &str) -> Result<BrokerNodes, String> {
    BrokerNodes::parse(text)
}

fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|err| format!("not a log filter: {err}"))
}

/// `8082` and `:8082` bind every interface (the Go original's forms); `host:port` binds that.
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

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
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

/// Sizes in bytes, optionally with a unit: `B`, `KB`/`KiB`, `MB`/`MiB` (case-insensitive).
fn parse_byte_size(text: &str) -> Result<usize, String> {
    const EXPECTED: &str = "expected a size from 1 byte to 1GiB like 65536, 64KiB or 1MiB";
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        _ => return Err(EXPECTED.to_owned()),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|count| count.checked_mul(multiplier))
        .filter(|bytes| (1..=1 << 30).contains(bytes))
        .ok_or_else(|| EXPECTED.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_accept_the_three_forms() {
        let cases = [
            ("8082", Some("0.0.0.0:8082")),
            (":8082", Some("0.0.0.0:8082")),
            ("0", Some("0.0.0.0:0")),
            ("127.0.0.1:9000", Some("127.0.0.1:9000")),
            ("[::1]:9000", Some("[::1]:9000")),
            ("abc", None),
            ("", None),
            (":", None),
            ("65536", None),
            (":-1", None),
            ("127.0.0.1:", None),
        ];
        for (input, expected) in cases {
            let parsed = parse_listen_addr(input).ok().map(|addr| addr.to_string());
            assert_eq!(parsed.as_deref(), expected, "input {input:?}");
        }
    }

    #[test]
    fn durations_are_humantime_and_timeouts_must_be_positive() {
        let cases = [
            ("500ms", Some(Duration::from_millis(500))),
            ("5s", Some(Duration::from_secs(5))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h 30m", Some(Duration::from_secs(5400))),
            ("365days", Some(Duration::from_secs(365 * 86_400))),
            // Added to `Instant`s, a huge duration would overflow: capped at a year.
            ("366days", None),
            ("200years", None),
            ("0s", None),
            ("5", None),
            ("-1s", None),
            ("soon", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_positive_duration(input).ok(),
                expected,
                "input {input:?}"
            );
        }
        assert_eq!(
            parse_duration("0s"),
            Ok(Duration::ZERO),
            "retention may be zero"
        );
    }

    #[test]
    fn byte_sizes_accept_plain_and_binary_and_decimal_units() {
        let cases = [
            ("65536", Some(65_536)),
            ("64KiB", Some(65_536)),
            ("64kb", Some(64_000)),
            ("1MiB", Some(1_048_576)),
            ("2 MB", Some(2_000_000)),
            ("0", None),
            ("2GiB", None),
            ("64 parsecs", None),
            ("KiB", None),
            ("99999999999999999999999", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_byte_size(input).ok(), expected, "input {input:?}");
        }
    }

    #[test]
    fn counts_formats_filters_and_secrets_reject_bad_values() {
        assert_eq!(parse_count::<1, 10>("10"), Ok(10));
        assert!(parse_count::<1, 10>("0").is_err(), "below the minimum");
        assert!(parse_count::<1, 10>("eight").is_err(), "not a number");
        assert_eq!(parse_log_format("PRETTY"), Ok(LogFormat::Pretty));
        assert!(parse_log_format("xml").is_err(), "unknown format");
        assert!(parse_log_filter("info,sqlx=warn").is_ok(), "valid filter");
        assert!(parse_log_filter("sqlx=loud").is_err(), "unknown level");
        assert!(parse_secret(" ").is_err(), "blank secret");
        assert!(parse_database_url("postgres://u:p@db:5432/crud").is_ok());
        assert!(
            parse_database_url("mysql://u:p@db/crud").is_err(),
            "not PostgreSQL"
        );
        assert!(parse_amqp_url("amqp://guest:guest@mq:5672/%2f").is_ok());
        assert!(parse_amqp_url("http://mq").is_err(), "not AMQP");
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret([redacted])"
        );
    }

    #[test]
    fn defaults_match_the_design() {
        let settings = Settings::try_parse_from(["storagesvc"]).expect("defaults parse");
        assert_eq!(settings.http_addr.port(), 8082);
        assert_eq!(settings.db_acquire_timeout, Duration::from_millis(250));
        assert_eq!(settings.body_limit, 64 * 1024);
        assert_eq!(settings.outbox_batch_size, 256);
    }

    #[test]
    fn settings_and_the_relay_config_never_debug_print_a_password() {
        let settings = Settings::try_parse_from([
            "storagesvc",
            "--database-url",
            "postgres://pg:Pr0dPass@db:5432/crud",
            "--amqp-url",
            "amqp://storagesvc:Pr0dPass@mq:5672/%2f",
        ])
        .expect("valid settings");
        for text in [
            format!("{settings:?}"),
            format!("{:?}", settings.relay_config()),
        ] {
            assert!(!text.contains("Pr0dPass"), "leaked: {text}");
        }
    }

    #[test]
    fn a_bad_value_is_described_in_one_line_naming_the_variable() {
        let err = Settings::try_parse_from(["storagesvc", "--http-port", "abc"])
            .expect_err("abc is not a port");
        assert_eq!(
            describe_error(&err),
            r#"invalid HTTP_PORT "abc": expected PORT, :PORT or HOST:PORT"#
        );
    }
}
