//! The Redis cache of the last good data, shared by two racing writers: fills from
//! storagesvc (the read path, after a miss) and book-changed events (the consumer).
//!
//! # Data layout
//! One Redis hash per deployment, `<prefix>books` (prefix [`DEFAULT_PREFIX`] unless
//! configured). Field = book id (decimal), value = one entry,
//! `"<rev>:<version>:<written_ms>:<kind>:<body>"`:
//! - `rev`: the hash's `_rev` counter, incremented by every write; unique per write, so it
//!   says whether an entry changed since someone read it (a per-entry write counter whose
//!   values come from one sequence, which also rules out A-B-A).
//! - `version`: the book's version; `written_ms`: Redis's clock at the write (ages are
//!   measured by that one clock, so replicas with skewed clocks agree).
//! - `kind` `b` with the book's JSON as body, or `t`, a tombstone (a deleted book).
//!
//! Two more fields start with `_` and cannot collide with ids: `_rev` (the counter) and
//! `_since` (what the cache has proven, below). (A `_list` field left by older versions is
//! ignored.)
//!
//! Next to the hash, the **id index** `<prefix>ids`: a sorted set of the ids of every live
//! book entry (tombstones are not in it), as 19-digit zero-padded members at score 0, so that
//! the set's lexicographic order is id order and a page is one `ZRANGEBYLEX` from `after`.
//! Every script that writes an entry updates the index in the same script (`store` in
//! `common.lua`): an event or a fill shows in pages the moment it is applied.
//!
//! And per page start, a **page mark** `<prefix>page:<after>` = `"<filled_ms>:<upto>"`, left by
//! a page fill for `CACHE_FRESH_TTL` (Redis expires it): from `after` to `upto` (the fill's last
//! id, or empty for the catalogue's end) the cache held every book storagesvc listed.
//!
//! # Pages (`GET /books?limit=N&after=ID`)
//! A page read ([`BookCache::get_page`]) is one read-only script: the mark, the first `limit`
//! members of the index after `after`, and those entries (`HMGET`). O(log n + limit),
//! whatever the size of the catalogue. The page it returns is
//! - **complete** when a mark covers it: the mark is there (so the fill is younger than
//!   `CACHE_FRESH_TTL`), every entry is a readable live book within max age, and either the
//!   mark reaches the end or the page is full and ends at or before `upto`. Books created since
//!   the fill are in the index (their events put them there); deleted ones left it. A complete
//!   page is a `hit`, aged since its fill;
//! - otherwise **incomplete**: the books the cache knows in that range, aged by the oldest of
//!   them, served only as the `stale` fallback when storagesvc cannot answer. A range nobody
//!   filled may miss books the cache never saw. Nothing known in the range is a miss.
//!
//! A page fill ([`BookCache::fill_page`]) is storagesvc's answer for that page, applied
//! atomically: the fill rule for every listed book; then index members in `(after, upto]` that
//! storagesvc did not list become tombstones if unchanged since the read (deleted while we
//! missed the event), stay if written since (newer news, e.g. a create that raced the page),
//! and are dropped if their entry is dead; then the mark. Its cost is the page plus the strays
//! in its range.
//!
//! # Who wins (DESIGN.md "Who wins in the cache"), atomically in Lua
//! - **Event**: written only if its version is newer than the entry's (absent counts as
//!   older). Duplicates and reordered events are harmless. A delete writes a tombstone with
//!   its version, so an older upsert cannot resurrect the book.
//! - **An event the cache cannot vouch for** (decision 0013, "A deleted book stays deleted"):
//!   the hash's `_since` field (`<run_id>:<ms>`) says from when, on which Redis server process,
//!   the hash has kept every entry it was given. An event that occurred before
//!   `max(_since, now - max_age) + 2 s` may be followed by a delete whose tombstone is gone
//!   (past max age, a restart, a restore from an older snapshot): an upsert is not written
//!   ([`WriteOutcome::Unproven`]) and the consumer fills the entry from storagesvc instead.
//!   A delete needs no proof (nothing follows a delete: ids are never reused) and is written
//!   at once, so a fill that read the book before the delete cannot bring it back.
//! - **Fill** (storagesvc, the source of truth): a read returns [`Seen`], the revision it
//!   observed; the fill replaces any entry still at or below that revision, *whatever its
//!   version*, so a forged event with a huge version cannot pin wrong data for ever. An entry
//!   written while the fill was in flight wins unless the fill's version is newer.
//!   A 404 turns a known entry into a tombstone (keeping its version); ids never cached are
//!   not cached as 404s, so a scan of random ids cannot fill Redis.
//! - **Page fill**: the fill rule for every listed book, in one script (see "Pages"). The seen
//!   revision of a page read is the whole hash's `_rev`.
//!
//! # Lifetimes
//! Freshness is the caller's: a read returns the entry with its age and
//! [`Cached::is_fresh`] compares it with `CACHE_FRESH_TTL` (a page is fresh only while
//! complete, i.e. while its mark lives, which the fill sets to `CACHE_FRESH_TTL`). Entries and
//! tombstones live at most `max_age` (default 24 h): older ones read as misses, are never
//! served stale, count as absent for writers, and are dropped by the next page fill of their
//! range. Every write also sets the hash's and the index's TTL to `max_age`, so an idle
//! deployment leaves nothing behind. Eviction under memory pressure may take the hash and the
//! index apart: an index without its entries reads as a miss (and the next fill of the range
//! drops the strays); entries without their index are not listed until a fill, the rebuild or
//! an event puts them back, and a page read meanwhile is at most incomplete, except within
//! `CACHE_FRESH_TTL` of a fill whose mark survived (a window of seconds).
//!
//! # Failure
//! Redis down or slow must not hurt a request: every call is bounded by `op_timeout`
//! (default 100 ms) and fails as [`CacheError::Unavailable`]. The connection is made
//! lazily, with one connection attempt per call and connect/response timeouts no longer
//! than `op_timeout` (the redis crate's defaults took ~9.4 s per call with Redis killed), so
//! [`BookCache::new`] succeeds while Redis is down, a stopped Redis fails a call in well
//! under a millisecond, and the first call after Redis is back succeeds (a connection found
//! dead is replaced and the exchange tried once more, within the same bound).
//!
//! # Use (the read path, without coalescing and metrics)
//! ```no_run
//! # use std::time::Duration;
//! # use booksvc::book::{Book, CachedBook};
//! # use booksvc::cache::{BookCache, Seen};
//! # async fn storagesvc_get(_id: i64) -> Result<Option<Book>, ()> { Ok(None) }
//! async fn read(cache: &BookCache, id: i64, ttl: Duration) -> Option<CachedBook> {
//!     // Redis down: carry on as a miss; the fill then applies only the version rule.
//!     let lookup = cache.get_book(id).await.ok();
//!     if let Some(fresh) = lookup.as_ref().and_then(|l| l.fresh(ttl)) {
//!         return Some(fresh.clone()); // hit
//!     }
//!     let seen = lookup.as_ref().map_or(Seen::NOTHING, |l| l.seen);
//!     match storagesvc_get(id).await {
//!         Ok(answer) => {
//!             let _ = cache.fill_book(id, seen, answer.as_ref()).await; // best effort
//!             answer.map(CachedBook::Live) // miss
//!         }
//!         Err(()) => lookup.and_then(|l| l.cached).map(|c| c.value), // stale
//!     }
//! }
//! ```
//!
//! # In front of it
//! [`local`]: the in-process hit layer (ready-to-send bodies of fresh entries), and
//! [`invalidation`]: the per-replica event subscription that keeps it coherent.
//!
//! Needs Redis >= 5 (scripts read `TIME` before writing, which needs effects replication).

mod connection;
mod entry;
pub mod invalidation;
pub mod local;
mod lookup;
mod page;
mod store;

use std::time::Duration;

use crate::secret::Secret;

pub use invalidation::{InvalidationSettings, Invalidator};
pub use local::{LocalCache, LocalCacheSettings, LocalHit, LocalKey, LocalState, Ticket};
pub use lookup::{Cached, Lookup, Seen};
pub use page::BookPage;
pub use store::BookCache;

/// Key prefix in production; tests pick their own to share one Redis.
pub const DEFAULT_PREFIX: &str = "booksvc:";
/// Bound on every Redis call: a small slice of the ~1 s request budget.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest an entry, tombstone or list mark is kept, fresh or stale.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// How to reach Redis and how long to keep things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// `redis://[:password@]host:port[/db]`, wrapped until the client opens it.
    pub url: Secret,
    /// Prepended to every key (see the module doc).
    pub prefix: String,
    /// Bound on each cache call, connecting included.
    pub op_timeout: Duration,
    /// Longest an entry is kept (see "Lifetimes").
    pub max_age: Duration,
}

impl CacheSettings {
    /// `url` with the documented defaults for everything else.
    pub fn new(url: impl Into<Secret>) -> CacheSettings {
        CacheSettings {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// Why a cache call did not do its job. The read path treats every variant the same way:
/// carry on with storagesvc.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The configuration cannot work (bad URL, zero timeout, no Tokio runtime).
    #[error("cache configuration: {0}")]
    Config(String),
    /// The data cannot be cached (a version below 1, an upsert event without its book).
    #[error("cannot cache: {0}")]
    InvalidInput(String),
    /// Redis failed or did not answer within `op_timeout`.
    #[error("redis unavailable during {op}: {reason}")]
    Unavailable {
        /// The cache call, e.g. `get_book`.
        op: &'static str,
        /// What went wrong, one line.
        reason: String,
        /// What kind of failure: whether Redis as a whole cannot take writes now.
        failure: RedisFailure,
    },
}

/// Error codes of a Redis that cannot take writes now, whatever is written: out of memory
/// under `noeviction`, a read-only replica (a failover left us on the old master), a failed
/// RDB save (`stop-writes-on-bgsave-error`), a script or a load in progress, no replicas or
/// master to write with, a cluster that is down, or credentials it no longer accepts.
const OUTAGE_CODES: [&str; 11] = [
    "OOM",
    "READONLY",
    "MISCONF",
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOAUTH",
    "NOPERM",
];

/// The kind of a [`CacheError::Unavailable`], from the redis client's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisFailure {
    /// No connection: refused, dropped, or an I/O error.
    Down,
    /// No answer within `op_timeout`.
    Timeout,
    /// Redis answered with an error reply; its code (`OOM`, `READONLY`, `ERR`, ...).
    Reply(String),
    /// Anything else (an answer of an unexpected shape).
    Other,
}

impl RedisFailure {
    /// Classifies a redis client error. A script's error reply can arrive as `ERR` with the
    /// real code inside the message (older Redis), so that is looked for too.
    pub(crate) fn of(error: &redis::RedisError) -> RedisFailure {
        if error.is_timeout() {
            return RedisFailure::Timeout;
        }
        if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
            return RedisFailure::Down;
        }
        match error.code() {
            Some(code) if code != "ERR" => RedisFailure::Reply(code.to_owned()),
            Some(code) => {
                let text = error.to_string();
                let inner = OUTAGE_CODES.iter().find(|outage| {
                    text.contains(&format!("-{outage} ")) || text.contains(&format!(": {outage} "))
                });
                RedisFailure::Reply(inner.map_or(code, |outage| *outage).to_owned())
            }
            None => RedisFailure::Other,
        }
    }

    /// Whether Redis as a whole cannot take writes now (down, too slow, or refusing every
    /// write), as opposed to a failure of this one call.
    pub fn is_outage(&self) -> bool {
        match self {
            RedisFailure::Down | RedisFailure::Timeout => true,
            RedisFailure::Reply(code) => OUTAGE_CODES.contains(&code.as_str()),
            RedisFailure::Other => false,
        }
    }
}

/// What a single write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The entry now holds this write.
    Applied,
    /// The entry holds something newer (or the same version); left as it was.
    IgnoredStale,
    /// Nothing to write: storagesvc said 404 for an id the cache does not hold.
    Skipped,
    /// An event older than what the cache has proven (see "A deleted book stays deleted"):
    /// not written; only storagesvc can say whether the book still exists.
    Unproven,
}

/// What a page fill did, book by book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageFillOutcome {
    /// Listed books written.
    pub applied: u64,
    /// Listed books left alone: an entry written during the fill was as new or newer.
    pub ignored_stale: u64,
    /// Cached books in the page's range storagesvc no longer lists, now tombstones.
    pub removed: u64,
}
