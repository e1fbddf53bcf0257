//! [`BookCache`]: the Redis calls, each bounded in time, and the scripts that decide who wins.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use events::{BookChanged, EventType};
use redis::Script;

use super::connection::BoundedConnection;
use super::entry::{Entry, book_body, version_arg};
use super::lookup::{Cached, Lookup, Seen};
use super::page::{BookPage, PageMark};
use super::{CacheError, CacheSettings, PageFillOutcome, WriteOutcome};
use crate::book::{Book, CachedBook};

/// The cache over Redis. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct BookCache {
    inner: Arc<Inner>,
}

struct Inner {
    redis: BoundedConnection,
    /// The books hash, `<prefix>books`.
    key: String,
    /// The id index, `<prefix>ids`: a sorted set of the live books' ids (see `common.lua`).
    index_key: String,
    /// `<prefix>page:`; a page's mark is this followed by its `after`.
    mark_prefix: String,
    /// `<prefix>write-probe`, a short-lived key [`BookCache::probe_write`] sets.
    probe_key: String,
    max_age: Duration,
    write_entry: Script,
    fill_page: Script,
    read_page: Script,
}

impl std::fmt::Debug for BookCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookCache")
            .field("key", &self.inner.key)
            .field("op_timeout", &self.inner.redis.op_timeout())
            .field("max_age", &self.inner.max_age)
            .finish_non_exhaustive()
    }
}

/// Bounds of `max_age`: Redis refuses expiry times far in the future.
const MIN_MAX_AGE: Duration = Duration::from_millis(1);
const MAX_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// One entry write, as `write_entry.lua` takes it.
struct EntryWrite {
    writer: &'static str,
    /// `""` for a fill that found the book gone (the tombstone keeps the entry's version).
    version: String,
    kind: &'static str,
    body: String,
    /// Events: when the event occurred (ms since the epoch), checked against what the cache
    /// has proven; `""` to trust the version alone.
    occurred: String,
}

impl BookCache {
    /// Builds the cache without touching Redis: the connection is made by the first call, so
    /// booksvc starts (and serves from storagesvc) while Redis is down. Fails only on a
    /// configuration that can never work. Must be called inside a Tokio runtime.
    pub fn new(config: CacheSettings) -> Result<BookCache, CacheError> {
        if config.op_timeout.is_zero() || !(MIN_MAX_AGE..=MAX_MAX_AGE).contains(&config.max_age) {
            return Err(CacheError::Config(format!(
                "op_timeout must be above zero and max_age within {MIN_MAX_AGE:?}..={MAX_MAX_AGE:?}"
            )));
        }
        let inner = Inner {
            redis: BoundedConnection::new(config.url.expose(), config.op_timeout)?,
            key: format!("{}books", config.prefix),
            index_key: format!("{}ids", config.prefix),
            mark_prefix: format!("{}page:", config.prefix),
            probe_key: format!("{}write-probe", config.prefix),
            max_age: config.max_age,
            write_entry: script(include_str!("write_entry.lua")),
            fill_page: script(include_str!("fill_page.lua")),
            read_page: script(include_str!("read_page.lua")),
        };
        Ok(BookCache {
            inner: Arc::new(inner),
        })
    }

    /// The entry for `id` (book or tombstone) with its age, and what the read saw.
    pub async fn get_book(&self, id: i64) -> Result<Lookup<CachedBook>, CacheError> {
        let key = &self.inner.key;
        let (raw, time): (Option<String>, (u64, u64)) = self
            .redis()
            .call("get_book", |mut conn| async move {
                redis::pipe()
                    .hget(key, id)
                    .cmd("TIME")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let now = redis_ms(time);
        let Some(raw) = raw else {
            return Ok(Lookup {
                cached: None,
                seen: Seen::NOTHING,
            });
        };
        let Some(entry) = self.decode(id, &raw) else {
            // A miss, but one the fill must be able to replace: the scripts accept any
            // well-formed header whatever the body, and a fill wins over an entry only if
            // the read saw its revision.
            return Ok(Lookup {
                cached: None,
                seen: Entry::header_rev(&raw).map_or(Seen::NOTHING, Seen),
            });
        };
        let seen = Seen(entry.rev);
        Ok(Lookup {
            cached: self.aged(entry.value, entry.written_ms, now),
            seen,
        })
    }

    /// The page of up to `limit` books after `after` (ordered by id), from the id index: one
    /// script, O(log n + limit). `complete` says whether a page fill covers the whole range
    /// (see "Pages" in the module docs); the age is the fill's if so, else the oldest book's.
    pub async fn get_page(&self, after: i64, limit: u32) -> Result<Lookup<BookPage>, CacheError> {
        let inner = &self.inner;
        let mark_key = self.mark_key(after);
        let reply: Vec<String> = self
            .redis()
            .call("get_page", |mut conn| {
                let mut invocation = inner.read_page.key(&inner.key);
                invocation
                    .key(&inner.index_key)
                    .key(&mark_key)
                    .arg(after)
                    .arg(limit);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let unreadable = || CacheError::Unavailable {
            op: "get_page",
            reason: "unexpected reply from the page script".to_owned(),
            failure: super::RedisFailure::Other,
        };
        let [now, rev, mark, rest @ ..] = reply.as_slice() else {
            return Err(unreadable());
        };
        let (now, seen) = (
            now.parse().map_err(|_| unreadable())?,
            Seen(rev.parse().unwrap_or(0)),
        );
        let (ids, raws) = rest.split_at(rest.len() / 2);
        let page = self.page_from(ids, raws, PageMark::decode(mark), limit, now);
        Ok(Lookup { cached: page, seen })
    }

    /// The revision a reader would see now: for a writer that does not read first (the
    /// rebuild), to pass to its fill.
    pub async fn seen(&self) -> Result<Seen, CacheError> {
        let key = &self.inner.key;
        let rev: Option<u64> = self
            .redis()
            .call("seen", |mut conn| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg("_rev")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(Seen(rev.unwrap_or(0)))
    }

    /// Stores storagesvc's answer for `id` (`None`: it said 404) under the fill rule.
    pub async fn fill_book(
        &self,
        id: i64,
        seen: Seen,
        book: Option<&Book>,
    ) -> Result<WriteOutcome, CacheError> {
        let write = match book {
            Some(book) if book.id != id => {
                return Err(CacheError::InvalidInput(format!(
                    "fill for book {id} carries book {}",
                    book.id
                )));
            }
            Some(book) => EntryWrite::live("fill", book)?,
            None => EntryWrite::tombstone("fill", String::new()),
        };
        self.write_entry("fill_book", id, seen, write).await
    }

    /// Stores one page of storagesvc's list (`GET /books?limit=&after=`, answered with
    /// `books`) under the page-fill rule, atomically; the page is then fresh for `fresh_for`
    /// (zero: it is stored but not marked fresh). `books` must be storagesvc's answer as it
    /// came: ids above `after`, increasing, at most `limit`.
    pub async fn fill_page(
        &self,
        after: i64,
        limit: u32,
        seen: Seen,
        books: &[Book],
        fresh_for: Duration,
    ) -> Result<PageFillOutcome, CacheError> {
        check_page(after, limit, books)?;
        let full = books.len() >= limit as usize;
        let upto = match books.last() {
            Some(last) if full => last.id.to_string(),
            _ => String::new(),
        };
        let mut args = Vec::with_capacity(books.len() * 3);
        for book in books {
            args.extend([
                book.id.to_string(),
                version_arg(book.version)?,
                book_body(book)?,
            ]);
        }
        let inner = &self.inner;
        let mark_key = self.mark_key(after);
        let fresh_ms = u64::try_from(fresh_for.as_millis()).unwrap_or(u64::MAX);
        let (applied, ignored_stale, removed): (u64, u64, u64) = self
            .redis()
            .call("fill_page", |mut conn| {
                let mut invocation = inner.fill_page.key(&inner.key);
                invocation
                    .key(&inner.index_key)
                    .key(&mark_key)
                    .arg(seen.0)
                    .arg(max_age_ms(inner.max_age))
                    .arg(after)
                    .arg(&upto)
                    .arg(fresh_ms)
                    .arg(&args);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        crate::metrics::record_cache_writes("fill", "applied", applied);
        crate::metrics::record_cache_writes("fill", "ignored", ignored_stale);
        crate::metrics::record_cache_writes("fill", "removed", removed);
        Ok(PageFillOutcome {
            applied,
            ignored_stale,
            removed,
        })
    }

    /// Applies a book-changed event if it is newer than the entry and within what the cache
    /// has proven (module docs, "A deleted book stays deleted"): an upsert that occurred
    /// before the cache's horizon comes back [`WriteOutcome::Unproven`], unwritten; a delete
    /// needs no proof. An event without `occurred_at` is dated when it is applied and judged
    /// on its version alone.
    pub async fn apply_event(&self, event: &BookChanged) -> Result<WriteOutcome, CacheError> {
        let occurred = event
            .occurred_at
            .map_or_else(String::new, |at| at.timestamp_millis().to_string());
        self.write_event(event, occurred).await
    }

    /// Applies a book-changed event on its version alone, however old it is: for a writer with
    /// no source of truth to check an unproven event against (tests, benchmarks).
    pub async fn apply_event_on_version(
        &self,
        event: &BookChanged,
    ) -> Result<WriteOutcome, CacheError> {
        self.write_event(event, String::new()).await
    }

    async fn write_event(
        &self,
        event: &BookChanged,
        occurred: String,
    ) -> Result<WriteOutcome, CacheError> {
        let version = version_arg(event.version)?;
        let mut write = match (event.kind, &event.book) {
            (EventType::Deleted, _) => EntryWrite::tombstone("event", version),
            (EventType::Created | EventType::Updated, Some(data)) => {
                let updated_at = event.occurred_at.unwrap_or_else(Utc::now);
                let mut book = Book::from_event(data, event.version, updated_at);
                // The envelope's id is the one the event is routed and ordered by.
                book.id = event.book_id;
                EntryWrite::live("event", &book)?
            }
            (kind @ (EventType::Created | EventType::Updated), None) => {
                return Err(CacheError::InvalidInput(format!(
                    "{kind} event for book {} carries no book",
                    event.book_id
                )));
            }
        };
        write.occurred = occurred;
        self.write_entry("apply_event", event.book_id, Seen::NOTHING, write)
            .await
    }

    /// Checks that Redis answers within `op_timeout` (for readiness reports).
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.redis()
            .call("ping", |mut conn| async move {
                redis::cmd("PING").query_async::<()>(&mut conn).await
            })
            .await
    }

    /// Checks that Redis takes a write within `op_timeout` (sets a key of its own that expires
    /// within a second). PING is not enough for writers: a Redis out of memory, read-only or
    /// failing its saves answers PING and refuses every write.
    pub async fn probe_write(&self) -> Result<(), CacheError> {
        let key = &self.inner.probe_key;
        self.redis()
            .call("probe_write", |mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("PX")
                    .arg(1000)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    async fn write_entry(
        &self,
        op: &'static str,
        id: i64,
        seen: Seen,
        write: EntryWrite,
    ) -> Result<WriteOutcome, CacheError> {
        let inner = &self.inner;
        let written: i64 = self
            .redis()
            .call(op, |mut conn| {
                let mut invocation = inner.write_entry.key(&inner.key);
                invocation
                    .key(&inner.index_key)
                    .arg(id)
                    .arg(write.writer)
                    .arg(seen.0)
                    .arg(&write.version)
                    .arg(write.kind)
                    .arg(&write.body)
                    .arg(max_age_ms(inner.max_age))
                    .arg(&write.occurred);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let outcome = match written {
            1 => WriteOutcome::Applied,
            -1 => WriteOutcome::Skipped,
            -2 => WriteOutcome::Unproven,
            _ => WriteOutcome::IgnoredStale,
        };
        crate::metrics::record_cache_writes(write.writer, outcome_label(outcome), 1);
        Ok(outcome)
    }

    fn redis(&self) -> &BoundedConnection {
        &self.inner.redis
    }

    fn decode(&self, id: impl std::fmt::Display, raw: &str) -> Option<Entry> {
        let entry = Entry::decode(raw);
        if entry.is_none() {
            // Not written by us (or by an older layout): a miss; the next write replaces it.
            crate::metrics::record_cache_unreadable();
            tracing::warn!(key = %self.inner.key, field = %id, "unreadable cache entry");
        }
        entry
    }

    /// `value` aged by Redis's clock, or `None` once it is past max age.
    fn aged<T>(&self, value: T, written_ms: u64, now_ms: u64) -> Option<Cached<T>> {
        let age = age(written_ms, now_ms);
        (age < self.inner.max_age).then_some(Cached { value, age })
    }

    fn mark_key(&self, after: i64) -> String {
        format!("{}{after}", self.inner.mark_prefix)
    }

    /// The cached page from a page read's ids and raw entries. Whole only if every entry is a
    /// readable live book within max age; complete only if whole and covered by the mark.
    /// Books known but not complete are kept for a stale answer; nothing known is a miss.
    fn page_from(
        &self,
        ids: &[String],
        raws: &[String],
        mark: Option<PageMark>,
        limit: u32,
        now_ms: u64,
    ) -> Option<Cached<BookPage>> {
        let mut books = Vec::with_capacity(ids.len());
        let mut whole = true;
        let mut oldest = now_ms;
        for (id, raw) in ids.iter().zip(raws) {
            let entry = (!raw.is_empty()).then(|| self.decode(id, raw)).flatten();
            match entry {
                Some(entry) if age(entry.written_ms, now_ms) < self.inner.max_age => {
                    if let CachedBook::Live(book) = entry.value {
                        oldest = oldest.min(entry.written_ms);
                        books.push(book);
                    } else {
                        whole = false;
                    }
                }
                _ => whole = false,
            }
        }
        let full = ids.len() >= limit as usize;
        let covered = mark.filter(|mark| mark.covers(ids, full));
        match covered {
            Some(mark) if whole => {
                let page = BookPage {
                    books,
                    complete: true,
                };
                self.aged(page, mark.filled_ms, now_ms)
            }
            _ if books.is_empty() => None,
            _ => {
                let page = BookPage {
                    books,
                    complete: false,
                };
                self.aged(page, oldest, now_ms)
            }
        }
    }
}

/// A page fill must be storagesvc's answer: ids above `after`, increasing, at most `limit`;
/// anything else would mark a range as known that is not.
fn check_page(after: i64, limit: u32, books: &[Book]) -> Result<(), CacheError> {
    let increasing = books.windows(2).all(|pair| pair[0].id < pair[1].id);
    let above = books.first().is_none_or(|first| first.id > after);
    if !(increasing && above && books.len() <= limit as usize && limit > 0) {
        return Err(CacheError::InvalidInput(format!(
            "a page after {after} of at most {limit} books must list increasing ids above {after}"
        )));
    }
    Ok(())
}

impl EntryWrite {
    fn live(writer: &'static str, book: &Book) -> Result<EntryWrite, CacheError> {
        Ok(EntryWrite {
            writer,
            version: version_arg(book.version)?,
            kind: "b",
            body: book_body(book)?,
            occurred: String::new(),
        })
    }

    fn tombstone(writer: &'static str, version: String) -> EntryWrite {
        EntryWrite {
            writer,
            version,
            kind: "t",
            body: String::new(),
            occurred: String::new(),
        }
    }
}

/// A write script with the shared helpers prepended; EVALSHA, loading it on NOSCRIPT.
fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("common.lua")))
}

/// `TIME`'s `[seconds, microseconds]` in ms.
fn redis_ms((seconds, micros): (u64, u64)) -> u64 {
    seconds.saturating_mul(1000).saturating_add(micros / 1000)
}

fn age(written_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(written_ms))
}

/// `max_age` is at most [`MAX_MAX_AGE`] (checked in `new`), far within `u64` ms.
fn max_age_ms(max_age: Duration) -> u64 {
    u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX)
}

fn outcome_label(outcome: WriteOutcome) -> &'static str {
    match outcome {
        WriteOutcome::Applied => "applied",
        WriteOutcome::IgnoredStale => "ignored",
        WriteOutcome::Skipped => "skipped",
        WriteOutcome::Unproven => "unproven",
    }
}
