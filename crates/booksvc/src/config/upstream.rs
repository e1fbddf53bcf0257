//! storagesvc, and how booksvc calls it: `STORAGESVC_*`, `BREAKER_*`, `RETRY_*`.

use crate::breaker::BreakerSettings;
use crate::retry::RetrySettings;

use super::Settings;

impl Settings {
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

    /// The retry part of the settings (the multiplier and jitter are fixed: see `retry`).
    pub fn retry_settings(&self) -> RetrySettings {
        RetrySettings {
            initial_interval: self.retry_initial_interval,
            max_interval: self.retry_max_interval,
            max_attempts: self.retry_max_attempts,
            ..RetrySettings::default()
        }
    }
}

pub(crate) fn parse_http_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|_| "expected http://HOST:PORT".to_owned())?;
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err("expected http://HOST:PORT".to_owned());
    }
    Ok(text.to_owned())
}

/// A share of calls: 0.0 to 1.0, or above 1.0 to switch the ratio rule off.
pub(crate) fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if ratio.is_finite() && ratio > 0.0 => Ok(ratio),
        _ => Err("expected a number above 0, like 0.5 (above 1 switches the rule off)".to_owned()),
    }
}
