//! [`BookCache`]: the Redis calls, each bounded in time, and the scripts that decide who wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use events::{BookChanged, EventType};
use redis::Script;

use super::book::{Book, CachedBook};
use super::connection::BoundedConnection;
use super::entry::{Entry, book_body, version_arg};
use super::lookup::{Cached, Lookup, Seen};
use super::{CacheConfig, CacheError, ListFillOutcome, WriteOutcome};

/// The cache over Redis. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct BookCache {
    inner: Arc<Inner>,
}

struct Inner {
    redis: BoundedConnection,
    /// The books hash, `<prefix>books`.
    key: String,
    /// `<prefix>write-probe`, a short-lived key [`BookCache::probe_write`] sets.
    probe_key: String,
    max_age: Duration,
    write_entry: Script,
    fill_list: Script,
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
}

impl BookCache {
    /// Builds the cache without touching Redis: the connection is made by the first call, so
    /// booksvc starts (and serves from storagesvc) while Redis is down. Fails only on a
    /// configuration that can never work. Must be called inside a Tokio runtime.
    pub fn new(config: CacheConfig) -> Result<BookCache, CacheError> {
        if config.op_timeout.is_zero() || !(MIN_MAX_AGE..=MAX_MAX_AGE).contains(&config.max_age) {
            return Err(CacheError::Config(format!(
                "op_timeout must be above zero and max_age within {MIN_MAX_AGE:?}..={MAX_MAX_AGE:?}"
            )));
        }
        let inner = Inner {
            redis: BoundedConnection::new(&config.url, config.op_timeout)?,
            key: format!("{}books", config.prefix),
            probe_key: format!("{}write-probe", config.prefix),
            max_age: config.max_age,
            write_entry: script(include_str!("write_entry.lua")),
            fill_list: script(include_str!("fill_list.lua")),
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

    /// The live books sorted by id, aged since the last list fill; a miss until the list has
    /// been filled once (entries warmed by events alone may not be the whole list).
    pub async fn get_list(&self) -> Result<Lookup<Vec<Book>>, CacheError> {
        let key = &self.inner.key;
        let (fields, time): (HashMap<String, String>, (u64, u64)) = self
            .redis()
            .call("get_list", |mut conn| async move {
                redis::pipe()
                    .hgetall(key)
                    .cmd("TIME")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let now = redis_ms(time);
        let seen = Seen(meta(&fields, "_rev").unwrap_or(0));
        let books = meta(&fields, "_list").and_then(|filled| {
            let books = self.live_books(&fields, now)?;
            self.aged(books, filled, now)
        });
        Ok(Lookup {
            cached: books,
            seen,
        })
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

    /// Stores storagesvc's whole list under the list-fill rule, atomically.
    pub async fn fill_list(
        &self,
        seen: Seen,
        books: &[Book],
    ) -> Result<ListFillOutcome, CacheError> {
        let mut args = Vec::with_capacity(books.len() * 3);
        for book in books {
            args.extend([
                book.id.to_string(),
                version_arg(book.version)?,
                book_body(book)?,
            ]);
        }
        let inner = &self.inner;
        let (applied, ignored_stale, removed): (u64, u64, u64) = self
            .redis()
            .call("fill_list", |mut conn| {
                let mut invocation = inner.fill_list.key(&inner.key);
                invocation
                    .arg(seen.0)
                    .arg(max_age_ms(inner.max_age))
                    .arg(&args);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        record_writes("fill", "applied", applied);
        record_writes("fill", "ignored", ignored_stale);
        record_writes("fill", "removed", removed);
        Ok(ListFillOutcome {
            applied,
            ignored_stale,
            removed,
        })
    }

    /// Applies a book-changed event if it is newer than the entry.
    pub async fn apply_event(&self, event: &BookChanged) -> Result<WriteOutcome, CacheError> {
        let version = version_arg(event.version)?;
        let write = match (event.kind, &event.book) {
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
                    .arg(id)
                    .arg(write.writer)
                    .arg(seen.0)
                    .arg(&write.version)
                    .arg(write.kind)
                    .arg(&write.body)
                    .arg(max_age_ms(inner.max_age));
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let outcome = match written {
            1 => WriteOutcome::Applied,
            -1 => WriteOutcome::Skipped,
            _ => WriteOutcome::IgnoredStale,
        };
        record_writes(write.writer, outcome_label(outcome), 1);
        Ok(outcome)
    }

    fn redis(&self) -> &BoundedConnection {
        &self.inner.redis
    }

    fn decode(&self, id: impl std::fmt::Display, raw: &str) -> Option<Entry> {
        let entry = Entry::decode(raw);
        if entry.is_none() {
            // Not written by us (or by an older layout): a miss; the next write replaces it.
            metrics::counter!("booksvc_cache_unreadable_total").increment(1);
            tracing::warn!(key = %self.inner.key, field = %id, "unreadable cache entry");
        }
        entry
    }

    /// `value` aged by Redis's clock, or `None` once it is past max age.
    fn aged<T>(&self, value: T, written_ms: u64, now_ms: u64) -> Option<Cached<T>> {
        let age = age(written_ms, now_ms);
        (age < self.inner.max_age).then_some(Cached { value, age })
    }

    /// The live books of a list read; `None` if an entry is unreadable, since a list missing
    /// a book must not be served as complete (the list fill then repairs it).
    fn live_books(&self, fields: &HashMap<String, String>, now_ms: u64) -> Option<Vec<Book>> {
        let mut books = Vec::new();
        for (field, raw) in fields.iter().filter(|(field, _)| !field.starts_with('_')) {
            let entry = self.decode(field, raw)?;
            let expired = age(entry.written_ms, now_ms) >= self.inner.max_age;
            if let (CachedBook::Live(book), false) = (entry.value, expired) {
                books.push(book);
            }
        }
        books.sort_by_key(|book| book.id);
        Some(books)
    }
}

impl EntryWrite {
    fn live(writer: &'static str, book: &Book) -> Result<EntryWrite, CacheError> {
        Ok(EntryWrite {
            writer,
            version: version_arg(book.version)?,
            kind: "b",
            body: book_body(book)?,
        })
    }

    fn tombstone(writer: &'static str, version: String) -> EntryWrite {
        EntryWrite {
            writer,
            version,
            kind: "t",
            body: String::new(),
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

fn meta(fields: &HashMap<String, String>, name: &str) -> Option<u64> {
    fields.get(name).and_then(|value| value.parse().ok())
}

fn outcome_label(outcome: WriteOutcome) -> &'static str {
    match outcome {
        WriteOutcome::Applied => "applied",
        WriteOutcome::IgnoredStale => "ignored",
        WriteOutcome::Skipped => "skipped",
    }
}

fn record_writes(writer: &'static str, outcome: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!("booksvc_cache_writes_total", "writer" => writer, "outcome" => outcome)
            .increment(count);
    }
}
