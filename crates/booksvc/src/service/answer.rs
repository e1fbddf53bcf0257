//! What a read answers: [`Served`] (the value and its [`Source`]) or a [`FetchFailure`], and
//! how each answer is counted (`booksvc_cache_results_total`) and encoded.

use std::time::Duration;

use axum::body::Bytes;

use crate::cache::Cached;
use crate::metrics::{self, ReadResult};

/// A page as sent: the JSON array, and what the `Link` header needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBody {
    /// The JSON array of books.
    pub json: Bytes,
    /// Books on the page.
    pub len: usize,
    /// The last book's id, if any.
    pub last_id: Option<i64>,
}

/// An answer and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    pub value: T,
    pub source: Source,
}

/// Where an answer came from; the `X-Cache` header says it in one word.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `hit`: a fresh cache entry; storagesvc was not asked.
    Fresh { age: Duration },
    /// `miss`: storagesvc answered now.
    Upstream {
        /// A stale entry was cached (and is now refreshed), rather than nothing.
        refreshed: bool,
        /// This read shared another read's storagesvc call.
        collapsed: bool,
    },
    /// `stale`: storagesvc could not answer; this is the last good data.
    Stale { age: Duration, why: FetchFailure },
}

/// Why storagesvc gave no answer in time: within the budget, or, for a read with an entry to
/// fall back on, without waiting for a trial or past the soft timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// The breaker refused the call: storagesvc was not asked. `retry_after`: until the
    /// breaker lets a probe through, when it is open.
    CircuitOpen { retry_after: Option<Duration> },
    /// The breaker is half-open and a trial call is in flight: a read with an entry does not
    /// wait for it (the trial goes on in the background and refills the cache if it works).
    TrialInFlight,
    /// storagesvc did not answer within `STALE_SOFT_TIMEOUT` (`waited`); the call goes on in
    /// the background and refills the cache. Only a read with an entry stops waiting early.
    SoftTimeout { waited: Duration },
    /// storagesvc was asked and failed, or the budget ran out first.
    Upstream { reason: String },
}

/// A cached answer: `hit` when `why` is `None`, else `stale` because of `why`.
pub(super) fn served<T>(
    resource: &'static str,
    cached: Cached<T>,
    why: Option<FetchFailure>,
) -> Served<T> {
    let source = match why {
        None => {
            metrics::record_read(resource, ReadResult::Hit);
            Source::Fresh { age: cached.age }
        }
        Some(why) => {
            tracing::debug!(resource, age = ?cached.age, reason = ?why, "serving stale data");
            metrics::record_read(resource, ReadResult::Stale(cached.age));
            Source::Stale {
                age: cached.age,
                why,
            }
        }
    };
    Served {
        value: cached.value,
        source,
    }
}

pub(super) fn fetched<T>(
    resource: &'static str,
    value: T,
    refreshed: bool,
    collapsed: bool,
) -> Served<T> {
    metrics::record_read(resource, ReadResult::Miss);
    Served {
        value,
        source: Source::Upstream {
            refreshed,
            collapsed,
        },
    }
}

pub(super) fn unavailable(resource: &'static str, why: FetchFailure) -> FetchFailure {
    metrics::record_read(resource, ReadResult::Unavailable);
    why
}

/// The JSON booksvc sends, exactly as `axum::Json` would have written it.
pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<Bytes, FetchFailure> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| FetchFailure::Upstream {
            reason: format!("the answer does not encode as JSON: {error}"),
        })
}
