//! What a cache read answers: the cached value with its age, and the revision the reader saw.

use std::time::Duration;

/// The cache revision a reader observed, handed back to the fill that follows the read.
///
/// A fill replaces any entry whose revision is at most `seen` (unchanged since the read),
/// whatever its version; entries written later win unless the fill's version is newer.
/// [`Seen::NOTHING`] is for a fill that did not read first: only the version rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seen(pub(super) u64);

impl Seen {
    /// "I saw nothing": the fill replaces only absent entries or older versions.
    pub const NOTHING: Seen = Seen(0);
}

/// A cached value and how long ago it was written (by Redis's clock, so all replicas agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached<T> {
    /// The value.
    pub value: T,
    /// Time since it was written (for a complete page: since its page fill; for the books
    /// known in a range: since the oldest of them was written).
    pub age: Duration,
}

impl<T> Cached<T> {
    /// Younger than `ttl` (`CACHE_FRESH_TTL`): serve without asking storagesvc. A zero `ttl`
    /// is never fresh, so storagesvc is always asked first.
    pub fn is_fresh(&self, ttl: Duration) -> bool {
        self.age < ttl
    }
}

/// The answer of a cache read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup<T> {
    /// The cached value, or `None` on a miss (never written, past max age, or unreadable).
    pub cached: Option<Cached<T>>,
    /// Pass this to the fill that stores storagesvc's answer.
    pub seen: Seen,
}

impl<T> Lookup<T> {
    /// A value is cached and younger than `ttl`.
    pub fn is_fresh(&self, ttl: Duration) -> bool {
        self.cached
            .as_ref()
            .is_some_and(|cached| cached.is_fresh(ttl))
    }

    /// The value if it is fresh; otherwise `None` (ask storagesvc, keep `self` for fallback).
    pub fn fresh(&self, ttl: Duration) -> Option<&T> {
        self.cached
            .as_ref()
            .filter(|cached| cached.is_fresh(ttl))
            .map(|cached| &cached.value)
    }
}
