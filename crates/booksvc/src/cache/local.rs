//! The in-process hit layer in front of Redis: ready-to-send response bodies, so a hit is a
//! map lookup and a `Bytes` clone (docs/decisions/0007-local-hit-layer.md).
//!
//! # What it holds
//! One slot per [`LocalKey`] (a book), bounded by `LOCAL_CACHE_MAX_ENTRIES`
//! (moka: TinyLFU admission, LRU eviction). A slot is either
//! - a **body**: the JSON booksvc serves, copied from a Redis entry, with that entry's age and
//!   version. It is a `hit` ([`LocalCache::get`]) only while the Redis entry it copies would
//!   still be fresh (`CACHE_FRESH_TTL`). Past that it is a **stale copy**
//!   ([`LocalCache::get_stale`]), which the read path serves only while the breaker is open,
//!   instead of reading the same stale entry from Redis for
//!   every request of an outage. Either way it is kept no longer than `LOCAL_CACHE_TTL` after
//!   it was read from Redis (the safety net: any incoherence this layer could add is bounded
//!   by it); or
//! - a **floor**: an event said book `id` is at version `v`; nothing older may be stored for
//!   it. The event may reach this replica before the consumer (perhaps another replica's) has
//!   written it to Redis, and a read in that gap must not copy the old entry back in.
//!
//! Tombstones are never held: a deleted book is asked of Redis, which remembers it. Pages of
//! the list are never held either: they bypass this layer (docs/decisions/0012).
//!
//! # Coherence
//! Each replica's [`super::invalidation`] subscription sees every book-changed event and calls
//! [`LocalCache::invalidate_book`]: the book's body goes (unless it already is that version or
//! newer). While that subscription is not known to be live (start-up,
//! broker down, channel lost) the layer is **bypassed and empty**: [`LocalCache::get`]
//! answers nothing and nothing is stored, because events may be going by unseen.
//!
//! A read that raced an invalidation must not store what it read before it: a read takes a
//! [`Ticket`] (the epoch) before asking Redis, and [`LocalCache::store_book`] refuses it if
//! any invalidation or bypass happened since. Store
//! and invalidation of one key are serialised by moka's per-key lock, and the event is
//! recorded and the epoch moved before the slot is touched, so either the store sees the new
//! epoch, or the invalidation comes after it and removes what it stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use moka::Expiry;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use events::EventType;

use crate::metrics::LocalHits;

/// Default `LOCAL_CACHE_MAX_ENTRIES`: a few MiB of book bodies.
pub const DEFAULT_MAX_ENTRIES: u32 = 10_000;
/// Default `LOCAL_CACHE_TTL`: how stale this layer could ever make an answer, at worst.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);
/// How long a floor keeps older versions out: well beyond a consumer's normal lag. Once it
/// lapses, `LOCAL_CACHE_TTL` still bounds what a late consumer could leave behind.
const FLOOR_TTL: Duration = Duration::from_secs(60);

/// What the layer can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalKey {
    /// `GET /books/{id}`.
    Book(i64),
}

/// A local copy: the body to send and the age of the Redis entry it copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHit {
    pub body: Bytes,
    pub age: Duration,
}

/// The epoch a read saw before asking Redis; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Sizes of the layer (from `LOCAL_CACHE_MAX_ENTRIES`, `LOCAL_CACHE_TTL`, `CACHE_FRESH_TTL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCacheSettings {
    /// Slots at most; 0 turns the layer off.
    pub max_entries: u64,
    /// Longest a body is served from here, however fresh its Redis entry.
    pub max_age: Duration,
    /// `CACHE_FRESH_TTL`: a body is a hit only while its Redis entry would be.
    pub fresh_ttl: Duration,
}

/// Whether the layer serves, for health reports and the state gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    /// Turned off by configuration (or `CACHE_FRESH_TTL=0s`, or no event stream).
    Disabled,
    /// On, but its invalidation subscription is not live: every read goes to Redis.
    Bypassed,
    /// Serving hits.
    Live,
}

impl LocalState {
    /// Every state, for the gauge (whose labels are [`crate::metrics::LOCAL_STATES`]).
    pub const ALL: [LocalState; 3] = [LocalState::Disabled, LocalState::Bypassed, LocalState::Live];

    /// The name in health bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalState::Disabled => "disabled",
            LocalState::Bypassed => "bypassed",
            LocalState::Live => "live",
        }
    }
}

/// The layer. Cheap to clone: clones share the slots and the state.
#[derive(Clone)]
pub struct LocalCache {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    slots: Cache<LocalKey, Slot>,
    live: AtomicBool,
    epoch: AtomicU64,
    fresh_ttl: Duration,
    max_age: Duration,
    metrics: LocalHits,
}

#[derive(Debug, Clone)]
enum Slot {
    Body {
        body: Bytes,
        version: i64,
        stored_at: Instant,
        age_at_store: Duration,
        /// Until when it is a hit: the Redis entry's freshness (already past for a stale copy).
        fresh_until: Instant,
        /// `LOCAL_CACHE_TTL` after `stored_at`: gone from then on.
        expires_at: Instant,
    },
    Floor {
        version: i64,
        expires_at: Instant,
    },
}

impl Slot {
    fn version(&self) -> i64 {
        match self {
            Slot::Body { version, .. } | Slot::Floor { version, .. } => *version,
        }
    }

    fn expires_at(&self) -> Instant {
        match self {
            Slot::Body { expires_at, .. } | Slot::Floor { expires_at, .. } => *expires_at,
        }
    }
}

/// Each slot expires when its own `expires_at` says, on creation and on replacement alike.
struct SlotExpiry;

impl Expiry<LocalKey, Slot> for SlotExpiry {
    fn expire_after_create(&self, _: &LocalKey, slot: &Slot, now: Instant) -> Option<Duration> {
        Some(slot.expires_at().saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &LocalKey,
        slot: &Slot,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.expires_at().saturating_duration_since(now))
    }
}

impl LocalCache {
    /// A layer that holds nothing and is never consulted.
    pub fn disabled() -> LocalCache {
        crate::metrics::record_local_state(LocalState::Disabled.as_str());
        LocalCache { inner: None }
    }

    /// The layer, bypassed until [`LocalCache::go_live`]; disabled when `max_entries` is 0
    /// or nothing could ever be fresh (`fresh_ttl` or `max_age` zero).
    pub fn new(config: LocalCacheSettings) -> LocalCache {
        if config.max_entries == 0 || config.fresh_ttl.is_zero() || config.max_age.is_zero() {
            return LocalCache::disabled();
        }
        let slots = Cache::builder()
            .name("booksvc-local")
            .max_capacity(config.max_entries)
            .expire_after(SlotExpiry)
            .build();
        let inner = Inner {
            slots,
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            fresh_ttl: config.fresh_ttl,
            max_age: config.max_age,
            metrics: LocalHits::new(),
        };
        crate::metrics::record_local_state(LocalState::Bypassed.as_str());
        LocalCache {
            inner: Some(Arc::new(inner)),
        }
    }

    /// Whether the layer is on at all (then it needs its invalidation subscription).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Disabled, bypassed or live.
    pub fn state(&self) -> LocalState {
        match &self.inner {
            None => LocalState::Disabled,
            Some(inner) if inner.live.load(Ordering::Acquire) => LocalState::Live,
            Some(_) => LocalState::Bypassed,
        }
    }

    /// The body for `key` if the layer is live and holds a fresh one: a hit.
    pub fn get(&self, key: LocalKey) -> Option<LocalHit> {
        let (copy, fresh) = self.copy(key)?;
        let inner = self.inner.as_ref()?;
        fresh.then(|| {
            inner.metrics.record();
            copy
        })
    }

    /// The body for `key` if the layer is live and holds one that is no longer fresh (read
    /// from Redis less than `LOCAL_CACHE_TTL` ago): what a read may serve as `stale` while
    /// storagesvc cannot be asked. Not counted as a hit.
    pub fn get_stale(&self, key: LocalKey) -> Option<LocalHit> {
        self.copy(key)
            .and_then(|(copy, fresh)| (!fresh).then_some(copy))
    }

    /// The live body for `key`, and whether it is fresh.
    fn copy(&self, key: LocalKey) -> Option<(LocalHit, bool)> {
        let inner = self.inner.as_ref()?;
        if !inner.live.load(Ordering::Acquire) {
            return None;
        }
        let Slot::Body {
            body,
            stored_at,
            age_at_store,
            fresh_until,
            expires_at,
            ..
        } = inner.slots.get(&key)?
        else {
            return None;
        };
        let now = Instant::now();
        if now >= expires_at {
            return None;
        }
        let copy = LocalHit {
            body,
            age: age_at_store + now.duration_since(stored_at),
        };
        Some((copy, now < fresh_until))
    }

    /// The epoch to hand to [`LocalCache::store_book`], taken
    /// *before* reading Redis; `None` when nothing may be stored (disabled or bypassed).
    pub fn ticket(&self) -> Option<Ticket> {
        let inner = self.inner.as_ref()?;
        let epoch = inner.epoch.load(Ordering::Acquire);
        inner.live.load(Ordering::Acquire).then_some(Ticket(epoch))
    }

    /// Stores the body of book `id` (a Redis entry of `age`, at `version`: a hit while it is
    /// fresh, a stale copy after) unless an invalidation or bypass happened since `ticket`, or
    /// an event said the book is newer. Says whether it was stored.
    pub fn store_book(
        &self,
        id: i64,
        ticket: Ticket,
        version: i64,
        body: Bytes,
        age: Duration,
    ) -> bool {
        self.put(LocalKey::Book(id), ticket, version, body, age)
    }

    /// The store, checked under the key's lock.
    fn put(&self, key: LocalKey, ticket: Ticket, version: i64, body: Bytes, age: Duration) -> bool {
        let Some(inner) = self.inner.as_ref() else {
            return false;
        };
        let now = Instant::now();
        let fresh_left = inner.fresh_ttl.saturating_sub(age);
        let slot = Slot::Body {
            body,
            version,
            stored_at: now,
            age_at_store: age,
            fresh_until: now + fresh_left,
            expires_at: now + inner.max_age,
        };
        let result = inner.slots.entry(key).and_compute_with(|existing| {
            if !inner.is_current(ticket) {
                return Op::Nop;
            }
            match existing {
                // Never back to an older version: a floor from an event, or a newer body a
                // concurrent read stored first.
                Some(existing) if version < existing.value().version() => Op::Nop,
                _ => Op::Put(slot),
            }
        });
        matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        )
    }

    /// A book-changed event for `id` at `version` (of any kind): the book's body goes unless
    /// it already is that version or newer, and a floor keeps older copies out.
    pub fn invalidate_book(&self, id: i64, _kind: EventType, version: i64) {
        let Some(inner) = self.inner.as_ref() else {
            return;
        };
        inner.epoch.fetch_add(1, Ordering::AcqRel);
        let floor = Slot::Floor {
            version,
            expires_at: Instant::now() + FLOOR_TTL,
        };
        inner
            .slots
            .entry(LocalKey::Book(id))
            .and_compute_with(|existing| match existing {
                Some(existing) if existing.value().version() >= version => Op::Nop,
                _ => Op::Put(floor),
            });
        crate::metrics::record_local_invalidation("event");
    }

    /// Forgets everything (an event that cannot be read: which book it was is unknown).
    pub fn invalidate_all(&self, reason: &'static str) {
        if let Some(inner) = self.inner.as_ref() {
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            inner.slots.invalidate_all();
            crate::metrics::record_local_invalidation(reason);
        }
    }

    /// The invalidation subscription is bound and consuming: serve from here again, starting
    /// empty (events may have gone by unseen while bypassed).
    pub fn go_live(&self) {
        let Some(inner) = self.inner.as_ref() else {
            return;
        };
        self.invalidate_all("reset");
        if !inner.live.swap(true, Ordering::AcqRel) {
            tracing::info!("local hit layer live");
            crate::metrics::record_local_state(LocalState::Live.as_str());
        }
    }

    /// The subscription is not (or no longer) known to be live: stop serving and storing,
    /// and empty the layer.
    pub fn bypass(&self, reason: &str) {
        let Some(inner) = self.inner.as_ref() else {
            return;
        };
        let was_live = inner.live.swap(false, Ordering::AcqRel);
        self.invalidate_all("reset");
        if was_live {
            tracing::warn!(reason, "local hit layer bypassed: reads go to Redis");
            crate::metrics::record_local_state(LocalState::Bypassed.as_str());
        }
    }

    /// Slots held (bodies and floors), after pending maintenance; for tests and metrics.
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |inner| {
            inner.slots.run_pending_tasks();
            inner.slots.entry_count()
        })
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn is_current(&self, ticket: Ticket) -> bool {
        self.live.load(Ordering::Acquire) && self.epoch.load(Ordering::Acquire) == ticket.0
    }
}

#[cfg(test)]
mod tests;
