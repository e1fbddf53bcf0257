//! `booksvc rebuild-cache` against the real storagesvc, PostgreSQL and Redis: it fills an empty
//! cache page by page, resumes with `--after`, and, run while books are written and their
//! events applied, never leaves an older version than the events did.
//!
//! The consumer is played by applying each write's event to the cache right after the write
//! (`BookCache::apply_event`, the consumer's own call), so the test controls the interleaving.

use std::collections::BTreeMap;
use std::time::Duration;

use booksvc::book::CachedBook;
use booksvc::cache::BookCache;
use booksvc::client::StorageClient;
use booksvc::rebuild::{Plan, RebuildReport, rebuild};
use chrono::Utc;
use events::{BookChanged, BookData};
use serde_json::Value;
use tokio::process::Command;

use crate::helpers::TestStack;

const BINARY: &str = env!("CARGO_BIN_EXE_booksvc");

fn plan(after: i64, page_size: u32) -> Plan {
    Plan {
        after,
        page_size,
        rate: 0,
        timeout: Duration::from_secs(10),
    }
}

fn client(stack: &TestStack) -> anyhow::Result<StorageClient> {
    StorageClient::new(&stack.storagesvc, Duration::from_secs(10)).map_err(anyhow::Error::msg)
}

/// Every book storagesvc has: id → (version, title).
pub(crate) async fn storagesvc_books(
    stack: &TestStack,
) -> anyhow::Result<BTreeMap<i64, (i64, String)>> {
    let mut books = BTreeMap::new();
    let mut after = 0;
    loop {
        let url = format!("{}/books?limit=1000&after={after}", stack.storagesvc);
        let page: Vec<Value> = stack.client.get(url).send().await?.json().await?;
        for book in &page {
            let id = book["id"].as_i64().unwrap_or_default();
            let title = book["title"].as_str().unwrap_or_default().to_owned();
            books.insert(id, (book["version"].as_i64().unwrap_or_default(), title));
            after = id;
        }
        if page.len() < 1000 {
            return Ok(books);
        }
    }
}

/// What the cache holds for `id`: `Some((version, title))` for a book, `None` otherwise.
pub(crate) async fn cached(cache: &BookCache, id: i64) -> anyhow::Result<Option<(i64, String)>> {
    Ok(match cache.get_book(id).await?.cached.map(|c| c.value) {
        Some(CachedBook::Live(book)) => Some((book.version, book.title)),
        _ => None,
    })
}

fn upsert(id: i64, version: i64, title: &str) -> BookChanged {
    let data = BookData {
        id,
        title: title.to_owned(),
        author: "Test Author".to_owned(),
        desc: String::new(),
    };
    match version {
        1 => BookChanged::created(data, version, Utc::now()),
        _ => BookChanged::updated(data, version, Utc::now()),
    }
}

#[tokio::test]
async fn a_rebuild_fills_an_empty_cache_page_by_page_and_resumes_after_an_id() -> anyhow::Result<()>
{
    let stack = TestStack::spawn().await?;
    for n in 3..=23 {
        stack.create_book(&format!("Book {n}")).await?;
    }
    let books = storagesvc_books(&stack).await?;
    assert_eq!(books.len(), 23);

    let mut seen_progress = Vec::new();
    let report = rebuild(
        &client(&stack)?,
        &stack.cache,
        plan(0, 5),
        |r: &RebuildReport| seen_progress.push(r.books),
    )
    .await
    .map_err(|failure| failure.error)?;
    assert_eq!((report.books, report.pages, report.last_id), (23, 5, 23));
    assert_eq!(report.writes.applied, 23);
    assert_eq!(
        seen_progress,
        [5, 10, 15, 20, 23],
        "progress after every page"
    );
    for (id, book) in &books {
        assert_eq!(
            cached(&stack.cache, *id).await?.as_ref(),
            Some(book),
            "book {id}"
        );
    }
    // Listed in the index, so pages are known (stale-servable), though not fresh.
    let page = stack.cache.get_page(0, 1000).await?.cached.expect("known");
    assert_eq!(page.value.books.len(), 23);
    assert!(
        !page.value.complete,
        "the rebuild makes pages known, not fresh"
    );

    // Resume after id 20: only the rest.
    let rest = rebuild(&client(&stack)?, &stack.cache, plan(20, 5), |_| {})
        .await
        .map_err(|failure| failure.error)?;
    assert_eq!((rest.books, rest.pages, rest.last_id), (3, 1, 23));
    assert_eq!(
        rest.writes.applied, 3,
        "storagesvc's answer replaces what it saw"
    );
    stack.stop().await
}

#[tokio::test]
async fn the_command_prints_progress_and_a_summary_and_says_how_to_resume() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    for n in 3..=12 {
        stack.create_book(&format!("Book {n}")).await?;
    }
    let redis = testkit::Redis::shared().await?;
    let prefix = format!("test:{:016x}:", rand::random::<u64>());
    let run = |extra: &[&str]| {
        let mut command = Command::new(BINARY);
        command
            .arg("rebuild-cache")
            .args(["--page-size", "4", "--rate", "1000"])
            .args(extra)
            .env_clear()
            .env("STORAGESVC_URL", &stack.storagesvc)
            .env("REDIS_URL", redis.url())
            .env("CACHE_PREFIX", &prefix);
        command.output()
    };
    // (tokio's Command: this test's runtime also serves storagesvc, and must not block.)

    let done = run(&["--after", "2"]).await?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr),
    );
    assert!(done.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stderr.lines().count(), 3, "a line per page:\n{stderr}");
    assert!(
        stdout.starts_with("rebuilt the cache: 10 books in 3 pages, up to id 12"),
        "{stdout}"
    );

    // storagesvc gone: a failure that says where to resume.
    let gone = Command::new(BINARY)
        .args(["rebuild-cache", "--after", "5", "--timeout", "500ms"])
        .env_clear()
        .env("STORAGESVC_URL", "http://127.0.0.1:9")
        .env("REDIS_URL", redis.url())
        .env("CACHE_PREFIX", &prefix)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(gone.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("resume with --after 5"), "{stderr}");

    let bad = run(&["--page-size", "0"]).await?;
    assert_eq!(bad.status.code(), Some(2));
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_events_are_applied_never_leaves_an_older_version() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    for n in 3..=60 {
        stack.create_book(&format!("Book {n}")).await?;
    }

    // The writer: renames, deletes and creates through storagesvc, each event applied to the
    // cache right after its write, as the consumer would, while the rebuild runs.
    let writer = async {
        let mut deleted = Vec::new();
        for round in 0..40_i64 {
            let id = 1 + (round * 7) % 60;
            if deleted.contains(&id) {
                continue;
            }
            if round % 5 == 4 {
                stack.delete_book(id).await?;
                // Each book is written once here, so it was at version 1: its delete is 2.
                let version = 2;
                stack
                    .cache
                    .apply_event_on_version(&BookChanged::deleted(id, version, Utc::now()))
                    .await?;
                deleted.push(id);
            } else {
                let title = format!("Renamed in round {round}");
                let book = stack.rename_book(id, &title).await?;
                let version = book["version"].as_i64().unwrap_or_default();
                stack
                    .cache
                    .apply_event_on_version(&upsert(id, version, &title))
                    .await?;
            }
            if round % 4 == 0 {
                let title = format!("Created in round {round}");
                let id = stack.create_book(&title).await?;
                stack
                    .cache
                    .apply_event_on_version(&upsert(id, 1, &title))
                    .await?;
            }
            tokio::task::yield_now().await;
        }
        anyhow::Ok(deleted)
    };
    let client = client(&stack)?;
    let rebuilding = rebuild(&client, &stack.cache, plan(0, 3), |_| {});
    let (deleted, report) = tokio::join!(writer, rebuilding);
    let deleted = deleted?;
    let report = report.map_err(|failure| failure.error)?;
    eprintln!("rebuild while writing: {report}");

    // Whatever the interleaving: the cache holds exactly storagesvc's books at their versions,
    // and the deleted ones as tombstones.
    let books = storagesvc_books(&stack).await?;
    for (id, book) in &books {
        assert_eq!(
            cached(&stack.cache, *id).await?.as_ref(),
            Some(book),
            "book {id}"
        );
    }
    for id in deleted {
        assert!(!books.contains_key(&id));
        let entry = stack.cache.get_book(id).await?.cached.map(|c| c.value);
        assert!(
            matches!(entry, Some(CachedBook::Tombstone { .. })),
            "book {id}: {entry:?}"
        );
    }
    stack.stop().await
}
