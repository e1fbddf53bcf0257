//! The Redis cache against real Redis servers: who wins between fills and events, pages of the
//! list answered from the id index, lifetimes, and failing fast while Redis is down.
//!
//! Tests share one Redis per test binary and isolate themselves by key prefix; tests that
//! stop Redis start a private one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use booksvc::book::{Book, CachedBook};
use booksvc::cache::{
    BookCache, BookPage, CacheError, CacheSettings, Cached, PageFillOutcome, Seen, WriteOutcome,
};
use chrono::{DateTime, TimeZone, Utc};
use events::{BookChanged, BookData};

const HOUR: Duration = Duration::from_secs(3600);
/// Generous bound for "fails fast": the configured op timeout is 100 ms.
const FAST: Duration = Duration::from_secs(2);

// ---- helpers -------------------------------------------------------------------------------

async fn shared_cache(prefix: &str) -> anyhow::Result<BookCache> {
    testkit::init_test_logging();
    let redis = testkit::Redis::shared().await?;
    Ok(BookCache::new(config(&redis.url(), prefix))?)
}

fn config(url: &str, prefix: &str) -> CacheSettings {
    CacheSettings {
        prefix: format!("test:{prefix}:"),
        ..CacheSettings::new(url)
    }
}

fn at(seconds: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, seconds).unwrap()
}

fn book(id: i64, version: i64, title: &str) -> Book {
    Book {
        id,
        title: title.to_owned(),
        author: "Jane Doe".to_owned(),
        desc: format!("{title}, v{version}"),
        version,
        updated_at: at(0),
    }
}

fn data(id: i64, title: &str) -> BookData {
    BookData {
        id,
        title: title.to_owned(),
        author: "Jane Doe".to_owned(),
        desc: String::new(),
    }
}

fn created(id: i64, version: i64, title: &str) -> BookChanged {
    BookChanged::created(data(id, title), version, at(1))
}

fn updated(id: i64, version: i64, title: &str) -> BookChanged {
    BookChanged::updated(data(id, title), version, at(1))
}

fn deleted(id: i64, version: i64) -> BookChanged {
    BookChanged::deleted(id, version, at(1))
}

/// The cached entry for `id`, whatever its age.
async fn cached(cache: &BookCache, id: i64) -> anyhow::Result<Option<CachedBook>> {
    Ok(cache.get_book(id).await?.cached.map(|cached| cached.value))
}

async fn cached_title(cache: &BookCache, id: i64) -> anyhow::Result<Option<String>> {
    Ok(cached(cache, id)
        .await?
        .and_then(|entry| entry.live().map(|b| b.title.clone())))
}

/// The cached page after `after`, whatever its age or completeness.
async fn page(
    cache: &BookCache,
    after: i64,
    limit: u32,
) -> anyhow::Result<Option<Cached<BookPage>>> {
    Ok(cache.get_page(after, limit).await?.cached)
}

/// The titles of the first page (up to 100 books), which a fill must have covered.
async fn list_titles(cache: &BookCache) -> anyhow::Result<Vec<String>> {
    let page = page(cache, 0, 100).await?.expect("the page is cached");
    assert!(page.value.complete, "a filled page is complete: {page:?}");
    Ok(page.value.books.into_iter().map(|b| b.title).collect())
}

/// Fills the first page (up to 100 books) with `books`, fresh for an hour.
async fn fill_first_page(
    cache: &BookCache,
    seen: Seen,
    books: &[Book],
) -> anyhow::Result<PageFillOutcome> {
    Ok(cache.fill_page(0, 100, seen, books, HOUR).await?)
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, CacheError>, op: &str) {
    match result {
        Err(CacheError::Unavailable { .. }) => {}
        other => panic!("{op}: expected Unavailable, got {other:?}"),
    }
}

// ---- fills and freshness -------------------------------------------------------------------

#[tokio::test]
async fn a_fill_reads_back_fresh_and_turns_stale_after_the_ttl() -> anyhow::Result<()> {
    let cache = shared_cache("fresh").await?;
    let ttl = Duration::from_secs(1); // long enough that a loaded CI machine reads it fresh

    let miss = cache.get_book(1).await?;
    assert_eq!(miss.cached, None, "nothing cached yet");
    assert_eq!(
        cache
            .fill_book(1, miss.seen, Some(&book(1, 1, "One")))
            .await?,
        WriteOutcome::Applied
    );

    let hit = cache.get_book(1).await?;
    assert!(hit.is_fresh(ttl), "just written: {hit:?}");
    assert_eq!(hit.fresh(ttl), Some(&CachedBook::Live(book(1, 1, "One"))));
    assert!(!hit.is_fresh(Duration::ZERO), "a zero TTL is never fresh");

    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let stale = cache.get_book(1).await?;
    assert!(!stale.is_fresh(ttl), "older than the TTL: {stale:?}");
    let age = stale.cached.expect("still cached, as stale").age;
    assert!(age >= ttl && age < HOUR, "age {age:?}");
    Ok(())
}

#[tokio::test]
async fn entries_past_max_age_read_as_misses() -> anyhow::Result<()> {
    let redis = testkit::Redis::shared().await?;
    let cache = BookCache::new(CacheSettings {
        max_age: Duration::from_millis(200),
        ..config(&redis.url(), "max-age")
    })?;

    cache
        .fill_book(1, Seen::NOTHING, Some(&book(1, 1, "One")))
        .await?;
    fill_first_page(&cache, Seen::NOTHING, &[book(1, 1, "One")]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(
        cache.get_book(1).await?.cached,
        None,
        "too old even to serve stale"
    );
    assert_eq!(page(&cache, 0, 100).await?, None, "the page too");
    Ok(())
}

// ---- events --------------------------------------------------------------------------------

#[tokio::test]
async fn a_newer_event_applies_while_older_equal_and_duplicate_ones_are_ignored()
-> anyhow::Result<()> {
    let cache = shared_cache("event-order").await?;

    let cases = [
        (
            updated(1, 2, "v2"),
            WriteOutcome::Applied,
            "v2",
            "first event for an absent entry",
        ),
        (updated(1, 3, "v3"), WriteOutcome::Applied, "v3", "newer"),
        (
            updated(1, 3, "v3"),
            WriteOutcome::IgnoredStale,
            "v3",
            "duplicate delivery",
        ),
        (
            updated(1, 3, "other v3"),
            WriteOutcome::IgnoredStale,
            "v3",
            "equal version",
        ),
        (
            updated(1, 1, "v1"),
            WriteOutcome::IgnoredStale,
            "v3",
            "older, arriving late",
        ),
        (
            updated(1, 10, "v10"),
            WriteOutcome::Applied,
            "v10",
            "a gap in versions",
        ),
    ];
    for (event, outcome, title, case) in cases {
        assert_eq!(
            cache.apply_event_on_version(&event).await?,
            outcome,
            "{case}"
        );
        assert_eq!(
            cached_title(&cache, 1).await?.as_deref(),
            Some(title),
            "{case}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_event_entry_serves_the_event_version_and_occurred_at() -> anyhow::Result<()> {
    let cache = shared_cache("event-shape").await?;

    cache.apply_event_on_version(&created(1, 4, "Four")).await?;
    let mut without_time = updated(2, 1, "Now");
    without_time.occurred_at = None;
    let before = Utc::now();
    cache.apply_event_on_version(&without_time).await?;

    let Some(CachedBook::Live(with_time)) = cached(&cache, 1).await? else {
        panic!("book 1 is cached")
    };
    assert_eq!((with_time.version, with_time.updated_at), (4, at(1)));
    let Some(CachedBook::Live(applied)) = cached(&cache, 2).await? else {
        panic!("book 2 is cached")
    };
    let skew = chrono::Duration::seconds(5);
    assert!(applied.updated_at >= before - skew && applied.updated_at <= Utc::now() + skew);
    assert!(
        cache.get_book(1).await?.is_fresh(HOUR),
        "an event entry is fresh like a fill"
    );
    Ok(())
}

#[tokio::test]
async fn a_tombstone_blocks_older_upserts_and_reads_as_not_found() -> anyhow::Result<()> {
    let cache = shared_cache("tombstone").await?;
    cache.apply_event_on_version(&created(1, 1, "One")).await?;

    assert_eq!(
        cache.apply_event_on_version(&deleted(1, 3)).await?,
        WriteOutcome::Applied
    );
    assert_eq!(
        cache.apply_event_on_version(&updated(1, 2, "late")).await?,
        WriteOutcome::IgnoredStale
    );
    assert_eq!(
        cache.apply_event_on_version(&updated(1, 3, "same")).await?,
        WriteOutcome::IgnoredStale
    );

    let lookup = cache.get_book(1).await?;
    assert!(lookup.is_fresh(HOUR));
    assert_eq!(
        lookup.fresh(HOUR),
        Some(&CachedBook::Tombstone { version: 3 })
    );
    assert_eq!(
        cache.apply_event_on_version(&deleted(2, 1)).await?,
        WriteOutcome::Applied,
        "unseen id"
    );
    assert_eq!(
        cached(&cache, 2).await?,
        Some(CachedBook::Tombstone { version: 1 })
    );
    Ok(())
}

#[tokio::test]
async fn an_upsert_event_without_its_book_is_refused() -> anyhow::Result<()> {
    let cache = shared_cache("invalid-event").await?;
    let mut event = updated(1, 2, "x");
    event.book = None;

    let result = cache.apply_event_on_version(&event).await;

    assert!(
        matches!(result, Err(CacheError::InvalidInput(_))),
        "{result:?}"
    );
    assert_eq!(cached(&cache, 1).await?, None);
    Ok(())
}

// ---- fills racing events -------------------------------------------------------------------

#[tokio::test]
async fn a_fill_that_raced_a_newer_event_does_not_overwrite_it() -> anyhow::Result<()> {
    let cache = shared_cache("race-newer").await?;
    cache.apply_event_on_version(&updated(1, 1, "v1")).await?;
    let seen = cache.get_book(1).await?.seen; // the read before asking storagesvc

    cache.apply_event_on_version(&updated(1, 3, "v3")).await?; // lands while the fill is in flight
    let outcome = cache
        .fill_book(1, seen, Some(&book(1, 2, "v2 from storagesvc")))
        .await?;

    assert_eq!(outcome, WriteOutcome::IgnoredStale);
    assert_eq!(cached_title(&cache, 1).await?.as_deref(), Some("v3"));
    Ok(())
}

#[tokio::test]
async fn a_fill_newer_than_the_event_that_raced_it_wins() -> anyhow::Result<()> {
    let cache = shared_cache("race-older").await?;
    let seen = cache.get_book(1).await?.seen;

    cache.apply_event_on_version(&created(1, 1, "v1")).await?;
    let outcome = cache.fill_book(1, seen, Some(&book(1, 2, "v2"))).await?;

    assert_eq!(outcome, WriteOutcome::Applied);
    assert_eq!(cached_title(&cache, 1).await?.as_deref(), Some("v2"));
    Ok(())
}

#[tokio::test]
async fn a_fill_replaces_a_forged_high_version_it_saw() -> anyhow::Result<()> {
    let cache = shared_cache("forged").await?;
    cache
        .apply_event_on_version(&updated(1, 1_000_000, "forged"))
        .await?;

    let lookup = cache.get_book(1).await?;
    let outcome = cache
        .fill_book(1, lookup.seen, Some(&book(1, 2, "truth")))
        .await?;

    assert_eq!(outcome, WriteOutcome::Applied);
    assert_eq!(cached_title(&cache, 1).await?.as_deref(), Some("truth"));
    // Back to ordinary order: the next real event (v3) applies.
    assert_eq!(
        cache.apply_event_on_version(&updated(1, 3, "v3")).await?,
        WriteOutcome::Applied
    );
    Ok(())
}

#[tokio::test]
async fn a_fill_without_a_read_never_replaces_a_newer_entry() -> anyhow::Result<()> {
    let cache = shared_cache("seen-nothing").await?;
    cache.apply_event_on_version(&updated(1, 5, "v5")).await?;

    let outcome = cache
        .fill_book(1, Seen::NOTHING, Some(&book(1, 4, "v4")))
        .await?;

    assert_eq!(outcome, WriteOutcome::IgnoredStale);
    assert_eq!(cached_title(&cache, 1).await?.as_deref(), Some("v5"));
    Ok(())
}

#[tokio::test]
async fn a_404_fill_tombstones_a_known_book_but_does_not_cache_unknown_ids() -> anyhow::Result<()> {
    let cache = shared_cache("fill-404").await?;
    cache.apply_event_on_version(&created(1, 2, "One")).await?;

    let seen = cache.get_book(1).await?.seen;
    assert_eq!(cache.fill_book(1, seen, None).await?, WriteOutcome::Applied);
    assert_eq!(
        cached(&cache, 1).await?,
        Some(CachedBook::Tombstone { version: 2 })
    );
    assert_eq!(
        cache.apply_event_on_version(&updated(1, 2, "late")).await?,
        WriteOutcome::IgnoredStale
    );

    let seen = cache.get_book(99).await?.seen;
    assert_eq!(
        cache.fill_book(99, seen, None).await?,
        WriteOutcome::Skipped
    );
    assert_eq!(
        cached(&cache, 99).await?,
        None,
        "random ids cannot fill Redis"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_writers_end_with_the_newest_version() -> anyhow::Result<()> {
    let cache = shared_cache("concurrent").await?;
    // storagesvc's current version of book 1: events bump it, fills read it after reading
    // the cache, as the read path does.
    let storage = Arc::new(AtomicI64::new(0));
    let writers = (0..50).map(|writer| {
        let (cache, storage) = (cache.clone(), Arc::clone(&storage));
        tokio::spawn(async move {
            for _ in 0..4 {
                if writer % 2 == 0 {
                    emit_event(&cache, &storage).await?;
                } else {
                    fill_from_storage(&cache, &storage).await?;
                }
            }
            anyhow::Ok(())
        })
    });

    for result in futures::future::join_all(writers).await {
        result??;
    }

    let newest = storage.load(Ordering::SeqCst);
    assert_eq!(newest, 100, "25 event writers x 4 events");
    assert_eq!(
        cached(&cache, 1).await?.map(|entry| entry.version()),
        Some(newest)
    );
    Ok(())
}

async fn emit_event(cache: &BookCache, storage: &AtomicI64) -> anyhow::Result<()> {
    let version = storage.fetch_add(1, Ordering::SeqCst) + 1;
    jitter().await; // events reach the consumer late and out of order
    cache
        .apply_event_on_version(&updated(1, version, &format!("v{version}")))
        .await?;
    Ok(())
}

async fn fill_from_storage(cache: &BookCache, storage: &AtomicI64) -> anyhow::Result<()> {
    let seen = cache.get_book(1).await?.seen;
    let version = storage.load(Ordering::SeqCst);
    jitter().await; // the storagesvc round trip
    let answer = (version > 0).then(|| book(1, version, &format!("v{version}")));
    cache.fill_book(1, seen, answer.as_ref()).await?;
    Ok(())
}

async fn jitter() {
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..15))).await;
}

// ---- pages of the list ---------------------------------------------------------------------

#[tokio::test]
async fn a_page_is_incomplete_until_filled_then_fresh_sorted_until_its_mark_lapses()
-> anyhow::Result<()> {
    let cache = shared_cache("page-fill").await?;
    cache.apply_event_on_version(&created(5, 1, "Five")).await?;

    let first = cache.get_page(0, 10).await?;
    let known = first.cached.clone().expect("book 5 is known");
    assert!(
        !known.value.complete,
        "books warmed by events alone may not be the whole page"
    );
    assert_eq!(known.value.books, [book_of(&created(5, 1, "Five"))]);

    let fresh_for = Duration::from_millis(300);
    let answer = [book(1, 2, "One"), book(3, 1, "Three")];
    let outcome = cache
        .fill_page(0, 10, first.seen, &answer, fresh_for)
        .await?;

    // Book 5 was written before the read, and storagesvc's short page (the catalogue's end)
    // does not list it: deleted.
    let expected = PageFillOutcome {
        applied: 2,
        ignored_stale: 0,
        removed: 1,
    };
    assert_eq!(outcome, expected);
    let filled = page(&cache, 0, 10).await?.expect("filled");
    assert!(filled.value.complete && filled.is_fresh(HOUR), "{filled:?}");
    assert_eq!(filled.value.books, answer, "sorted by id");
    assert_eq!(
        cached(&cache, 5).await?,
        Some(CachedBook::Tombstone { version: 1 })
    );
    // Any limit from the same `after` is covered: the fill reached the end.
    let smaller = page(&cache, 0, 1).await?.expect("cached");
    assert!(smaller.value.complete);
    assert_eq!(smaller.value.books, answer[..1]);
    // Another `after` has no mark: known books, not a complete page.
    let other = page(&cache, 1, 10).await?.expect("book 3 is known");
    assert!(!other.value.complete);

    tokio::time::sleep(fresh_for + Duration::from_millis(100)).await;
    let lapsed = page(&cache, 0, 10)
        .await?
        .expect("still known, for a stale answer");
    assert!(!lapsed.value.complete, "no longer fresh: {lapsed:?}");
    assert_eq!(lapsed.value.books, answer);
    Ok(())
}

/// The book an upsert event writes.
fn book_of(event: &BookChanged) -> Book {
    let data = event.book.as_ref().expect("an upsert");
    Book::from_event(data, event.version, event.occurred_at.expect("occurred_at"))
}

#[tokio::test]
async fn a_page_reflects_created_updated_and_deleted_events_at_once() -> anyhow::Result<()> {
    let cache = shared_cache("page-events").await?;
    let seen = cache.get_page(0, 100).await?.seen;
    fill_first_page(&cache, seen, &[book(1, 1, "One"), book(2, 1, "Two")]).await?;

    cache
        .apply_event_on_version(&created(3, 1, "Three"))
        .await?;
    assert_eq!(
        list_titles(&cache).await?,
        ["One", "Two", "Three"],
        "created"
    );
    cache
        .apply_event_on_version(&updated(2, 2, "Two, revised"))
        .await?;
    assert_eq!(
        list_titles(&cache).await?,
        ["One", "Two, revised", "Three"],
        "updated"
    );
    cache.apply_event_on_version(&deleted(1, 2)).await?;
    assert_eq!(
        list_titles(&cache).await?,
        ["Two, revised", "Three"],
        "deleted"
    );
    Ok(())
}

#[tokio::test]
async fn a_full_page_covers_only_up_to_its_last_id() -> anyhow::Result<()> {
    let cache = shared_cache("page-bounds").await?;
    let seen = cache.get_page(0, 2).await?.seen;
    cache
        .fill_page(0, 2, seen, &[book(1, 1, "One"), book(2, 1, "Two")], HOUR)
        .await?;
    // Book 9 is known (an event), but nobody asked storagesvc about 3..8.
    cache.apply_event_on_version(&created(9, 1, "Nine")).await?;
    let ids = |page: Cached<BookPage>| -> (Vec<i64>, bool) {
        let ids = page.value.books.iter().map(|b| b.id).collect();
        (ids, page.value.complete)
    };
    assert_eq!(
        ids(page(&cache, 0, 2).await?.expect("cached")),
        (vec![1, 2], true)
    );
    assert_eq!(
        ids(page(&cache, 0, 3).await?.expect("cached")),
        (vec![1, 2, 9], false),
        "9 is past what the fill covered"
    );
    cache.apply_event_on_version(&deleted(2, 2)).await?;
    assert_eq!(
        ids(page(&cache, 0, 2).await?.expect("cached")),
        (vec![1, 9], false),
        "the page now reaches past the fill"
    );
    Ok(())
}

#[tokio::test]
async fn a_page_fill_keeps_what_events_wrote_while_it_was_in_flight() -> anyhow::Result<()> {
    let cache = shared_cache("page-race").await?;
    let seen = cache.get_page(0, 100).await?.seen;
    fill_first_page(&cache, seen, &[book(1, 1, "One"), book(2, 1, "Two")]).await?;
    let seen = cache.get_page(0, 100).await?.seen; // the read before asking storagesvc

    // While storagesvc answers: book 1 updated to v3, book 4 created.
    cache
        .apply_event_on_version(&updated(1, 3, "One v3"))
        .await?;
    cache.apply_event_on_version(&created(4, 1, "Four")).await?;
    let answer = [book(1, 2, "One v2"), book(2, 2, "Two v2")];
    let outcome = fill_first_page(&cache, seen, &answer).await?;

    let expected = PageFillOutcome {
        applied: 1,
        ignored_stale: 1,
        removed: 0,
    };
    assert_eq!(outcome, expected);
    assert_eq!(list_titles(&cache).await?, ["One v3", "Two v2", "Four"]);
    Ok(())
}

#[tokio::test]
async fn a_page_fill_replaces_forged_versions_and_unreadable_entries() -> anyhow::Result<()> {
    let redis = testkit::Redis::shared().await?;
    let cache = shared_cache("page-repair").await?;
    cache
        .apply_event_on_version(&updated(1, 1_000_000, "forged"))
        .await?;
    let mut raw = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    for id in ["2", "3"] {
        let () = redis::cmd("HSET")
            .arg("test:page-repair:books")
            .arg(id)
            .arg("junk")
            .query_async(&mut raw)
            .await?;
        let _: i64 = redis::cmd("ZADD")
            .arg("test:page-repair:ids")
            .arg(0)
            .arg(format!("{id:0>19}"))
            .query_async(&mut raw)
            .await?;
    }

    assert_eq!(
        cached(&cache, 2).await?,
        None,
        "an unreadable entry reads as a miss"
    );
    let known = page(&cache, 0, 100).await?.expect("book 1 is known");
    assert!(!known.value.complete, "unreadable entries: not whole");
    let seen = cache.get_page(0, 100).await?.seen;
    fill_first_page(&cache, seen, &[book(1, 2, "One"), book(2, 1, "Two")]).await?;

    assert_eq!(list_titles(&cache).await?, ["One", "Two"], "book 3 pruned");
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("test:page-repair:books")
        .query_async(&mut raw)
        .await?;
    assert!(
        !fields.contains(&"3".to_owned()),
        "unreadable, unlisted field removed: {fields:?}"
    );
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("test:page-repair:ids")
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await?;
    assert_eq!(members, [format!("{:0>19}", 1), format!("{:0>19}", 2)]);
    Ok(())
}

#[tokio::test]
async fn a_page_fill_refuses_what_storagesvc_cannot_have_answered() -> anyhow::Result<()> {
    let cache = shared_cache("page-refused").await?;
    let cases: [(i64, u32, Vec<Book>); 3] = [
        (5, 10, vec![book(3, 1, "below after")]),
        (0, 10, vec![book(2, 1, "Two"), book(1, 1, "One")]),
        (0, 1, vec![book(1, 1, "One"), book(2, 1, "Two")]),
    ];
    for (after, limit, books) in cases {
        let result = cache
            .fill_page(after, limit, Seen::NOTHING, &books, HOUR)
            .await;
        assert!(
            matches!(result, Err(CacheError::InvalidInput(_))),
            "{result:?}"
        );
    }
    assert_eq!(page(&cache, 0, 100).await?, None, "nothing written");
    Ok(())
}

#[tokio::test]
async fn an_undecodable_entry_under_a_valid_header_is_replaced_by_the_next_fill()
-> anyhow::Result<()> {
    let redis = testkit::Redis::shared().await?;
    let cache = shared_cache("undecodable").await?;
    let mut raw = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    // What an older booksvc might have written: a header the scripts accept (recent, rev 5,
    // version 3) over a body this one cannot decode.
    let now_ms = u64::try_from(Utc::now().timestamp_millis())?;
    let () = redis::cmd("HSET")
        .arg("test:undecodable:books")
        .arg("7")
        .arg(format!("5:3:{now_ms}:b:{{\"name\":\"an old layout\"}}"))
        .query_async(&mut raw)
        .await?;

    let lookup = cache.get_book(7).await?;
    assert!(
        lookup.cached.is_none(),
        "an undecodable entry reads as a miss"
    );
    let outcome = cache
        .fill_book(7, lookup.seen, Some(&book(7, 1, "From storagesvc")))
        .await?;

    assert_eq!(outcome, WriteOutcome::Applied, "the fill must replace it");
    assert_eq!(
        cached_title(&cache, 7).await?.as_deref(),
        Some("From storagesvc")
    );
    Ok(())
}

// ---- a deleted book stays deleted (decision 0013) -------------------------------------------

/// Longer than the rule's allowance for clock skew (2 s, `common.lua`).
const PAST_SKEW: Duration = Duration::from_millis(2300);

/// Sets the cache's memory going: the first checked event marks when it starts; events that
/// occur `PAST_SKEW` later are within it.
async fn start_memory(cache: &BookCache) -> anyhow::Result<()> {
    // A new cache has proven nothing yet: its first event starts its memory (a delete, which
    // needs no proof, is written; an upsert would be unproven).
    cache
        .apply_event(&BookChanged::deleted(999_999, 1, Utc::now()))
        .await?;
    tokio::time::sleep(PAST_SKEW).await;
    Ok(())
}

/// The version of `id`'s live entry, if the cache serves one.
async fn live_version(cache: &BookCache, id: i64) -> anyhow::Result<Option<i64>> {
    Ok(match cached(cache, id).await? {
        Some(CachedBook::Live(book)) => Some(book.version),
        _ => None,
    })
}

#[tokio::test]
async fn a_late_event_after_a_redis_restart_that_lost_the_tombstone_is_refused()
-> anyhow::Result<()> {
    testkit::init_test_logging();
    let redis = testkit::Redis::start().await?;
    let cache = BookCache::new(config(&redis.url(), "restart"))?;
    start_memory(&cache).await?;

    // v1 is cached and saved to disk (the private Redis saves on stop, not while running).
    let v1 = BookChanged::created(data(7, "v1"), 1, Utc::now());
    assert_eq!(cache.apply_event(&v1).await?, WriteOutcome::Applied);
    redis.stop().await?;
    redis.start_again().await?;
    until_ok(&cache).await;

    // After the restart: v2 occurs (its event is late: held in a retry tier), then the delete
    // is applied; then Redis crashes and comes back from its snapshot, without the tombstone.
    start_memory(&cache).await?;
    let late_v2 = BookChanged::updated(data(7, "v2, deleted since"), 2, Utc::now());
    let v3 = BookChanged::deleted(7, 3, Utc::now());
    assert_eq!(cache.apply_event(&v3).await?, WriteOutcome::Applied);
    redis.kill().await?;
    redis.start_again().await?;
    until_ok(&cache).await;
    assert_eq!(
        live_version(&cache, 7).await?,
        Some(1),
        "the snapshot's v1 is back"
    );

    // The late v2 is newer than anything the cache holds, but older than its memory.
    let outcome = cache.apply_event(&late_v2).await?;
    assert_ne!(
        live_version(&cache, 7).await?,
        Some(2),
        "a deleted book came back as a live entry (outcome {outcome:?})"
    );
    assert_eq!(outcome, WriteOutcome::Unproven);

    // Another crash, and an event for a book the snapshot never had: the same.
    let v4 = BookChanged::created(data(8, "v1"), 1, Utc::now());
    redis.kill().await?;
    redis.start_again().await?;
    until_ok(&cache).await;
    let outcome = cache.apply_event(&v4).await?;
    assert_eq!(live_version(&cache, 8).await?, None, "outcome {outcome:?}");
    assert_eq!(outcome, WriteOutcome::Unproven);
    Ok(())
}

#[tokio::test]
async fn an_event_older_than_max_age_is_refused_though_the_cache_holds_nothing()
-> anyhow::Result<()> {
    let cache = BookCache::new(CacheSettings {
        max_age: Duration::from_secs(3),
        ..config(&testkit::Redis::shared().await?.url(), "max-age-horizon")
    })?;
    start_memory(&cache).await?;
    let late = BookChanged::updated(data(9, "late"), 2, Utc::now());
    assert_eq!(
        cache
            .apply_event(&BookChanged::deleted(9, 3, Utc::now()))
            .await?,
        WriteOutcome::Applied
    );
    // Other writes keep the hash (and with it the cache's memory) alive meanwhile: only max
    // age stands between the late event and the tombstone.
    for version in 1..=4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut other = BookChanged::updated(data(12, "keeps the hash alive"), version, Utc::now());
        other.occurred_at = None;
        assert_eq!(cache.apply_event(&other).await?, WriteOutcome::Applied);
    }
    assert_eq!(
        cached(&cache, 9).await?,
        None,
        "the tombstone is past max age"
    );

    let outcome = cache.apply_event(&late).await?;
    assert_eq!(live_version(&cache, 9).await?, None, "outcome {outcome:?}");
    assert_eq!(outcome, WriteOutcome::Unproven);
    // A recent event is judged on its version as before; one without occurred_at too.
    let fresh = BookChanged::updated(data(10, "fresh"), 1, Utc::now());
    assert_eq!(cache.apply_event(&fresh).await?, WriteOutcome::Applied);
    let mut undated = BookChanged::updated(data(11, "by hand"), 1, Utc::now());
    undated.occurred_at = None;
    assert_eq!(cache.apply_event(&undated).await?, WriteOutcome::Applied);
    Ok(())
}

#[tokio::test]
async fn a_delete_needs_no_proof_so_a_fill_that_read_the_book_before_it_loses() -> anyhow::Result<()>
{
    // A cache that has proven nothing (new, or after a data loss): upserts are unproven.
    let cache = shared_cache("delete-needs-no-proof").await?;
    assert_eq!(
        cache.apply_event(&updated(6, 2, "late")).await?,
        WriteOutcome::Unproven
    );

    // A fill (a rebuild's page, a read) reads book 7 at v1; the book is deleted and the
    // delete's event applied; then the fill writes what it read.
    let seen = cache.seen().await?;
    let read = book(7, 1, "read before the delete");
    let delete = BookChanged::deleted(7, 2, Utc::now());
    assert_eq!(cache.apply_event(&delete).await?, WriteOutcome::Applied);
    let outcome = cache.fill_book(7, seen, Some(&read)).await?;
    assert_eq!(outcome, WriteOutcome::IgnoredStale);
    let page = cache
        .fill_page(0, 10, seen, std::slice::from_ref(&read), Duration::ZERO)
        .await?;
    assert_eq!((page.applied, page.ignored_stale), (0, 1));
    assert_eq!(
        cached(&cache, 7).await?,
        Some(CachedBook::Tombstone { version: 2 }),
        "the deleted book is back"
    );

    // A delete weeks old (a re-drive) is written too: nothing can follow a delete.
    assert_eq!(
        cache.apply_event(&deleted(8, 3)).await?,
        WriteOutcome::Applied
    );
    Ok(())
}

// ---- Redis down ----------------------------------------------------------------------------

#[tokio::test]
async fn every_call_fails_fast_while_redis_is_stopped_and_works_again_after() -> anyhow::Result<()>
{
    testkit::init_test_logging();
    let redis = testkit::Redis::start().await?;
    let cache = BookCache::new(config(&redis.url(), "outage"))?;
    cache
        .fill_book(1, Seen::NOTHING, Some(&book(1, 1, "One")))
        .await?;

    redis.stop().await?;
    let mut slowest = Duration::ZERO;
    for round in 0..20 {
        let started = Instant::now();
        match round % 6 {
            0 => assert_unavailable(cache.get_book(1).await, "get_book"),
            1 => assert_unavailable(cache.get_page(0, 10).await, "get_page"),
            2 => assert_unavailable(
                cache
                    .fill_book(1, Seen::NOTHING, Some(&book(1, 2, "x")))
                    .await,
                "fill_book",
            ),
            3 => assert_unavailable(
                cache.fill_page(0, 10, Seen::NOTHING, &[], HOUR).await,
                "fill_page",
            ),
            4 => assert_unavailable(
                cache.apply_event_on_version(&updated(1, 2, "x")).await,
                "apply_event",
            ),
            _ => assert_unavailable(cache.ping().await, "ping"),
        }
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < FAST, "slowest failing call took {slowest:?}");

    redis.start_again().await?;
    let (first_ok, failures) = until_ok(&cache).await;
    eprintln!(
        "redis stopped: slowest failing call {slowest:?}; back: first success after {first_ok:?}, {failures} failed calls"
    );
    assert_eq!(
        cached_title(&cache, 1).await?.as_deref(),
        Some("One"),
        "data survived"
    );
    Ok(())
}

#[tokio::test]
async fn the_cache_builds_while_redis_is_down_and_works_once_it_is_up() -> anyhow::Result<()> {
    testkit::init_test_logging();
    let redis = testkit::Redis::start().await?;
    redis.stop().await?;

    let cache = BookCache::new(config(&redis.url(), "down-at-start"))?;
    let started = Instant::now();
    assert_unavailable(cache.get_book(1).await, "get_book at start-up");
    let failed_in = started.elapsed();
    assert!(failed_in < FAST, "took {failed_in:?}");

    redis.start_again().await?;
    let (first_ok, failures) = until_ok(&cache).await;
    eprintln!(
        "down at start-up: first call failed in {failed_in:?}; up: first success after {first_ok:?}, {failures} failed calls"
    );
    assert_eq!(
        cache.apply_event_on_version(&created(1, 1, "One")).await?,
        WriteOutcome::Applied
    );
    Ok(())
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_each_call_at_most_the_op_timeout() -> anyhow::Result<()> {
    // A server that accepts connections and never answers: a hung or overloaded Redis.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("redis://{}", listener.local_addr()?);
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let op_timeout = Duration::from_millis(100);
    let cache = BookCache::new(CacheSettings {
        op_timeout,
        ..config(&url, "silent")
    })?;

    for op in ["get_book", "apply_event"] {
        let started = Instant::now();
        match op {
            "get_book" => assert_unavailable(cache.get_book(1).await, op),
            _ => assert_unavailable(
                cache.apply_event_on_version(&created(1, 1, "One")).await,
                op,
            ),
        }
        let took = started.elapsed();
        eprintln!("silent redis: {op} failed after {took:?}");
        assert!(took >= op_timeout && took < FAST, "{op} took {took:?}");
    }
    silent.abort();
    Ok(())
}

#[tokio::test]
async fn a_bad_url_is_a_configuration_error() {
    let result = BookCache::new(CacheSettings::new("not a url"));
    assert!(matches!(result, Err(CacheError::Config(_))), "{result:?}");
}

/// Pings until Redis answers; how long it took and how many calls failed meanwhile.
async fn until_ok(cache: &BookCache) -> (Duration, u32) {
    let started = Instant::now();
    let mut failures = 0;
    while cache.ping().await.is_err() {
        failures += 1;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Redis did not come back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (started.elapsed(), failures)
}
