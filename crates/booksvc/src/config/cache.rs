//! Redis and the local hit layer: `REDIS_*`, `CACHE_*`, `LOCAL_CACHE_*`.

use crate::cache::{CacheSettings, LocalCacheSettings};
use crate::secret::Secret;

use super::{DEFAULT_REDIS_URL, Settings};

impl Settings {
    /// The Redis URL from `REDIS_URL`, `REDIS_ADDR` or the default; a secret, since a URL may
    /// carry a password.
    pub fn redis_url(&self) -> Secret {
        redis_url(self.redis_url.as_ref(), self.redis_addr.as_deref())
    }

    /// The cache's part of the settings.
    pub fn cache_settings(&self) -> CacheSettings {
        CacheSettings {
            url: self.redis_url(),
            prefix: self.cache_prefix.clone(),
            op_timeout: self.redis_timeout,
            max_age: self.cache_max_age,
        }
    }

    /// The in-process hit layer's sizes; `max_entries` 0 (off) without the event stream.
    pub fn local_cache_settings(&self) -> LocalCacheSettings {
        let max_entries = match self.consumer_enabled {
            true => u64::from(self.local_cache_max_entries),
            false => 0,
        };
        LocalCacheSettings {
            max_entries,
            max_age: self.local_cache_ttl,
            fresh_ttl: self.cache_fresh_ttl,
        }
    }
}

/// `REDIS_URL` if set, else `REDIS_ADDR` as a URL, else [`DEFAULT_REDIS_URL`] (`booksvc
/// rebuild-cache` reads the same pair).
pub(crate) fn redis_url(url: Option<&Secret>, addr: Option<&str>) -> Secret {
    match (url, addr) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => Secret::new(format!("redis://{addr}")),
        (None, None) => Secret::new(DEFAULT_REDIS_URL),
    }
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

pub(crate) fn parse_prefix(text: &str) -> Result<String, String> {
    let valid = text.len() <= 64 && text.bytes().all(|b| b.is_ascii_graphic());
    valid
        .then(|| text.to_owned())
        .ok_or_else(|| "expected up to 64 visible ASCII characters, no spaces".to_owned())
}
