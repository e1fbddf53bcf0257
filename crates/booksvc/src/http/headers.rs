//! The cache headers of a book answer: `X-Cache`, `Age` and `Cache-Status` (RFC 9211).
//!
//! | source | `X-Cache` | `Age` | `Cache-Status` |
//! |---|---|---|---|
//! | fresh entry | `hit` | yes | `booksvc; hit; ttl=<seconds of freshness left>` |
//! | storagesvc now | `miss` | no | `booksvc; fwd=miss` (nothing cached) or `fwd=stale` (a stale entry was refreshed), `; collapsed` when it shared another read's call |
//! | breaker open | `stale` | yes | `booksvc; hit; ttl=-<seconds past fresh>; detail=circuit-open` |
//! | storagesvc failed | `stale` | yes | `booksvc; fwd=stale; ttl=-<seconds past fresh>; detail=upstream-failed` |
//! | breaker half-open, a trial in flight | `stale` | yes | `booksvc; fwd=stale; ttl=-<seconds past fresh>; detail=trial-in-flight` |
//! | storagesvc slower than `STALE_SOFT_TIMEOUT` | `stale` | yes | `booksvc; fwd=stale; ttl=-<seconds past fresh>; detail=soft-timeout` |
//!
//! RFC 9211 reading: `hit` means the request was *not forwarded* and the answer came from
//! the cache, which is true of a stale answer given while the breaker is open; when
//! storagesvc was asked and failed, the request did go forward, because the entry was stale
//! (`fwd=stale`); so it did for a trial in flight or a soft timeout, whose call goes on in
//! the background and refills the cache. `ttl` is the remaining freshness in whole seconds, negative once stale.
//! `Age` (RFC 9111) is the entry's age in whole seconds, sent whenever the body came from
//! the cache.
//!
//! A hit is the hot path: [`HitHeaders`] holds its `Age` and `Cache-Status` values made once,
//! so answering one formats nothing.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::service::{FetchFailure, Source};

/// `X-Cache: hit | miss | stale`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// `Cache-Status` (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `Age` (RFC 9111).
pub const AGE: HeaderName = axum::http::header::AGE;

/// The cache name in `Cache-Status`.
const CACHE_NAME: &str = "booksvc";

/// Most whole seconds of freshness [`HitHeaders`] prepares values for; beyond, a hit's
/// headers are formatted.
const PREPARED_SECONDS: u64 = 3600;

/// A hit's `Age` and `Cache-Status` values, by whole seconds (`CACHE_FRESH_TTL` fixes how
/// many there can be). Cloning a `HeaderValue` is a reference count.
pub struct HitHeaders {
    fresh_ttl: Duration,
    ages: Box<[HeaderValue]>,
    statuses: Box<[HeaderValue]>,
}

impl HitHeaders {
    pub fn new(fresh_ttl: Duration) -> HitHeaders {
        let seconds = 0..=fresh_ttl.as_secs().min(PREPARED_SECONDS);
        let status = |ttl: u64| {
            HeaderValue::try_from(format!("{CACHE_NAME}; hit; ttl={ttl}"))
                .expect("digits and ASCII words")
        };
        HitHeaders {
            fresh_ttl,
            ages: seconds.clone().map(HeaderValue::from).collect(),
            statuses: seconds.map(status).collect(),
        }
    }

    /// Adds the headers of a hit of `age` to `headers`.
    fn insert(&self, headers: &mut HeaderMap, age: Duration) {
        let ttl = ttl_seconds(self.fresh_ttl, age);
        let prepared = usize::try_from(ttl)
            .ok()
            .and_then(|ttl| self.statuses.get(ttl));
        let age_value = usize::try_from(age.as_secs())
            .ok()
            .and_then(|s| self.ages.get(s));
        match (age_value, prepared) {
            (Some(age), Some(status)) => {
                headers.insert(X_CACHE, HeaderValue::from_static("hit"));
                headers.insert(AGE, age.clone());
                headers.insert(CACHE_STATUS, status.clone());
            }
            _ => headers.extend(cache_headers(&Source::Fresh { age }, self.fresh_ttl)),
        }
    }
}

/// Adds the headers describing where an answer came from to `headers`.
pub fn insert_cache_headers(headers: &mut HeaderMap, source: &Source, hit: &HitHeaders) {
    match source {
        Source::Fresh { age } => hit.insert(headers, *age),
        other => headers.extend(cache_headers(other, hit.fresh_ttl)),
    }
}

/// The headers describing where an answer came from; `fresh_ttl` is `CACHE_FRESH_TTL`.
pub fn cache_headers(source: &Source, fresh_ttl: Duration) -> HeaderMap {
    let (x_cache, age, status) = match source {
        Source::Fresh { age } => {
            let ttl = ttl_seconds(fresh_ttl, *age);
            ("hit", Some(*age), format!("{CACHE_NAME}; hit; ttl={ttl}"))
        }
        Source::Upstream {
            refreshed,
            collapsed,
        } => {
            let fwd = if *refreshed { "stale" } else { "miss" };
            let collapsed = if *collapsed { "; collapsed" } else { "" };
            ("miss", None, format!("{CACHE_NAME}; fwd={fwd}{collapsed}"))
        }
        Source::Stale { age, why } => {
            let ttl = ttl_seconds(fresh_ttl, *age);
            let (how, detail) = match why {
                FetchFailure::CircuitOpen { .. } => ("hit", "circuit-open"),
                FetchFailure::TrialInFlight => ("fwd=stale", "trial-in-flight"),
                FetchFailure::SoftTimeout { .. } => ("fwd=stale", "soft-timeout"),
                FetchFailure::Upstream { .. } => ("fwd=stale", "upstream-failed"),
            };
            let status = format!("{CACHE_NAME}; {how}; ttl={ttl}; detail={detail}");
            ("stale", Some(*age), status)
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(X_CACHE, HeaderValue::from_static(x_cache));
    if let Some(age) = age {
        headers.insert(AGE, HeaderValue::from(age.as_secs()));
    }
    // Built from digits and fixed ASCII words only, so always a valid header value.
    if let Ok(status) = HeaderValue::try_from(status) {
        headers.insert(CACHE_STATUS, status);
    }
    headers
}

/// Freshness left in whole seconds, rounded down: negative as soon as the entry is stale.
fn ttl_seconds(fresh_ttl: Duration, age: Duration) -> i128 {
    let left_ms = fresh_ttl.as_millis() as i128 - age.as_millis() as i128;
    left_ms.div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    }

    #[test]
    fn each_source_gets_its_x_cache_age_and_cache_status() {
        let ttl = Duration::from_secs(5);
        let open = FetchFailure::CircuitOpen { retry_after: None };
        let failed = FetchFailure::Upstream {
            reason: "timed out".to_owned(),
        };
        let secs = Duration::from_secs;
        let cases = [
            (
                Source::Fresh {
                    age: Duration::from_millis(1500),
                },
                ("hit", Some("1"), "booksvc; hit; ttl=3"),
            ),
            (
                Source::Upstream {
                    refreshed: false,
                    collapsed: false,
                },
                ("miss", None, "booksvc; fwd=miss"),
            ),
            (
                Source::Upstream {
                    refreshed: true,
                    collapsed: true,
                },
                ("miss", None, "booksvc; fwd=stale; collapsed"),
            ),
            (
                Source::Stale {
                    age: secs(65),
                    why: open,
                },
                (
                    "stale",
                    Some("65"),
                    "booksvc; hit; ttl=-60; detail=circuit-open",
                ),
            ),
            (
                Source::Stale {
                    age: Duration::from_millis(5300),
                    why: failed,
                },
                (
                    "stale",
                    Some("5"),
                    "booksvc; fwd=stale; ttl=-1; detail=upstream-failed",
                ),
            ),
            (
                Source::Stale {
                    age: secs(7),
                    why: FetchFailure::TrialInFlight,
                },
                (
                    "stale",
                    Some("7"),
                    "booksvc; fwd=stale; ttl=-2; detail=trial-in-flight",
                ),
            ),
            (
                Source::Stale {
                    age: secs(6),
                    why: FetchFailure::SoftTimeout {
                        waited: Duration::from_millis(50),
                    },
                },
                (
                    "stale",
                    Some("6"),
                    "booksvc; fwd=stale; ttl=-1; detail=soft-timeout",
                ),
            ),
        ];
        let hit = HitHeaders::new(ttl);
        for (source, (x_cache, age, status)) in cases {
            let headers = cache_headers(&source, ttl);
            let mut inserted = HeaderMap::new();
            insert_cache_headers(&mut inserted, &source, &hit);
            assert_eq!(
                inserted, headers,
                "prepared and formatted differ: {source:?}"
            );
            assert_eq!(
                header(&headers, &X_CACHE).as_deref(),
                Some(x_cache),
                "{source:?}"
            );
            assert_eq!(header(&headers, &AGE).as_deref(), age, "{source:?}");
            assert_eq!(
                header(&headers, &CACHE_STATUS).as_deref(),
                Some(status),
                "{source:?}"
            );
        }
    }
}
