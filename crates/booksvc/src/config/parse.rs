//! Value parsers both services use, each refusing a bad value with a reason that never quotes
//! it (the value may be a secret).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use events::BrokerNodes;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Multi-line, coloured, for a developer's terminal.
    Pretty,
}

pub(crate) fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        _ => Err("expected json or pretty".to_owned()),
    }
}

pub(crate) fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|err| format!("not a log filter: {err}"))
}

/// `PORT` and `:PORT` bind every interface (the Go original's forms); `HOST:PORT` binds that.
pub(crate) fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
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

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
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

pub(crate) fn parse_count<const MIN: u32, const MAX: u32>(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(count) if (MIN..=MAX).contains(&count) => Ok(count),
        _ => Err(format!("expected a whole number from {MIN} to {MAX}")),
    }
}

/// One `amqp://` URL lapin can use, or several, comma-separated; the message never echoes an
/// entry (it may hold a password).
pub(crate) fn parse_amqp_url(text: &str) -> Result<BrokerNodes, String> {
    BrokerNodes::parse(text)
}
