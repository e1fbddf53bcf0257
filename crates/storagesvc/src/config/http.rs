//! The HTTP server's part of the settings: `HTTP_*`, `BODY_LIMIT`, `STORAGESVC_WRITE_TOKEN`.

use crate::secret::Secret;
use crate::serve::ConnectionLimits;

use super::Settings;

impl Settings {
    /// How each HTTP connection is bounded (`HTTP_HEADER_READ_TIMEOUT`, `HTTP_MAX_CONNECTIONS`).
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.http_header_read_timeout,
            max_connections: self.http_max_connections as usize,
        }
    }
}

pub(super) fn parse_secret(text: &str) -> Result<Secret, String> {
    // An empty value is almost always a template that expanded to nothing: say so rather
    // than run with, e.g., writes silently disabled.
    if text.trim().is_empty() {
        return Err("must not be empty (unset the variable instead)".to_owned());
    }
    Ok(Secret::new(text))
}

/// Sizes in bytes, optionally with a unit: `B`, `KB`/`KiB`, `MB`/`MiB` (case-insensitive).
pub(super) fn parse_byte_size(text: &str) -> Result<usize, String> {
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
