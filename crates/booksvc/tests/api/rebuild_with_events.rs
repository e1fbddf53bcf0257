//! The real `booksvc rebuild-cache` command while books change, everything real: storagesvc
//! and its outbox relay on PostgreSQL, RabbitMQ, booksvc's own consumer, and the Redis the
//! rebuild fills after a data loss. However the rebuild's pages and the events interleave, the
//! cache ends with exactly storagesvc's books at their versions, and no deleted book back.
//!
//! The rebuild reaches storagesvc through a proxy of its own, which holds back storagesvc's
//! answer to the first page (storagesvc has read those books, the cache has not got them yet:
//! a slow network) while books of that page are deleted and renamed and the consumer applies
//! their events. That is the interleaving that brought deleted books back (decision 0013,
//! "deletes need no proof"); after it, a writer keeps creating, renaming and deleting across
//! the catalogue while the rebuild pages on, rate-limited, through the unproven window and
//! past it.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use booksvc::book::CachedBook;
use reqwest::StatusCode;
use tokio::process::Command;

use crate::helpers::{TestStack, eventually};
use crate::proxy::HoldingProxy;
use crate::rebuild::{cached, storagesvc_books};

const BINARY: &str = env!("CARGO_BIN_EXE_booksvc");

/// Generous for anything that should happen "soon" on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(30);

/// Books in the catalogue before the loss.
const CATALOGUE: usize = 100;

/// Small pages, rate-limited: the rebuild takes many pages and a few seconds, long enough for
/// the writer to change books ahead of it, inside it and behind it.
const PAGE_SIZE: usize = 5;
const RATE: &str = "100";

/// The writer makes at least `MIN_ROUNDS` rounds and keeps going while the rebuild runs, up to
/// `MAX_ROUNDS`: its creates must not outrun the rebuild, which pages to the catalogue's end.
const MIN_ROUNDS: usize = 30;
const MAX_ROUNDS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_command_while_events_flow_keeps_every_version_and_no_deleted_book()
-> anyhow::Result<()> {
    // Arrange: a catalogue warmed by events, then Redis loses the cache's data.
    let stack = TestStack::options().events().spawn().await?;
    for n in 1..=CATALOGUE {
        stack.create_book(&format!("Book {n}")).await?;
    }
    assert!(
        caught_up(&stack).await?,
        "the consumer never applied the catalogue's events"
    );
    lose_the_cache(&stack).await?;
    let catalogue: Vec<i64> = storagesvc_books(&stack).await?.into_keys().collect();

    // The rebuild starts; storagesvc's answer to its first page is held back.
    let proxy = HoldingProxy::start(&stack.storagesvc).await?;
    proxy.hold();
    let rebuild = rebuild_command(&stack, &proxy.address).spawn()?;
    assert!(
        eventually(SOON, || async { proxy.answers() >= 1 }).await,
        "the rebuild never asked for its first page"
    );

    // Books of that page change, and the consumer applies the events (the first since the
    // loss: the cache has proven nothing yet).
    let page: Vec<i64> = catalogue.iter().take(PAGE_SIZE).copied().collect();
    let mut deleted = BTreeSet::from([page[2], page[4]]);
    stack.delete_book(page[2]).await?;
    stack
        .rename_book(page[3], "Renamed while its page was held")
        .await?;
    stack.delete_book(page[4]).await?;
    assert!(
        caught_up(&stack).await?,
        "the consumer never applied the held page's events"
    );
    proxy.release();

    // Act: the writer goes on while the rebuild pages through.
    let finished = AtomicBool::new(false);
    let rebuilding = async {
        let output = rebuild.wait_with_output().await;
        finished.store(true, Ordering::SeqCst);
        output
    };
    let live: Vec<i64> = catalogue
        .iter()
        .copied()
        .filter(|id| !deleted.contains(id))
        .collect();
    let (output, written) = tokio::join!(rebuilding, write_while(&stack, live, &finished));
    let output = output?;
    deleted.extend(written?);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.lines().count() >= CATALOGUE / PAGE_SIZE,
        "many pages, a progress line each:\n{stderr}"
    );
    eprintln!("{stdout}");

    // Assert: once the consumer has applied every event (a book created last is cached), the
    // cache holds storagesvc's books and none of the deleted ones.
    assert!(caught_up(&stack).await?, "the consumer never drained");
    eventually(SOON, || async {
        differences(&stack, &deleted).await.is_empty()
    })
    .await;
    let wrong = differences(&stack, &deleted).await;
    assert!(
        wrong.is_empty(),
        "the cache is not storagesvc's catalogue: {wrong:#?}"
    );
    for id in &deleted {
        let response = stack.get_book(*id).await?;
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "deleted book {id}"
        );
    }
    stack.stop().await
}

/// Whether the consumer has applied every event of the writes made so far. It applies them in
/// the order storagesvc made them, so a book created now being cached says so. Such a create
/// may find the cache in its first 2 s, when booksvc settles it with storagesvc, and that can
/// time out on a loaded machine and cache nothing: then a later one says it.
async fn caught_up(stack: &TestStack) -> anyhow::Result<bool> {
    for attempt in 0..6 {
        let sign = stack.create_book(&format!("Sign {attempt}")).await?;
        if eventually(Duration::from_secs(10), || async {
            cached(&stack.cache, sign)
                .await
                .is_ok_and(|book| book.is_some())
        })
        .await
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A Redis data loss, for this cache: every key under booksvc's prefix goes (entries,
/// tombstones, the index, the cache's memory of what it has proven).
async fn lose_the_cache(stack: &TestStack) -> anyhow::Result<()> {
    let client = redis::Client::open(stack.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", stack.cache_prefix()))
        .query_async(&mut redis)
        .await?;
    anyhow::ensure!(!keys.is_empty(), "the cache held nothing to lose");
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut redis)
        .await?;
    Ok(())
}

/// `booksvc rebuild-cache` on booksvc's Redis and prefix, reading storagesvc at `storagesvc`.
fn rebuild_command(stack: &TestStack, storagesvc: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("rebuild-cache")
        .args(["--page-size", &PAGE_SIZE.to_string(), "--rate", RATE])
        // Longer than the held first page can take on a loaded machine.
        .args(["--timeout", "60s"])
        .env_clear()
        .env("STORAGESVC_URL", storagesvc)
        .env("REDIS_URL", &stack.redis_url)
        .env("CACHE_PREFIX", stack.cache_prefix())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Renames, deletes and creates books through storagesvc's HTTP API, spread across the
/// catalogue, until `finished` and at least [`MIN_ROUNDS`] rounds (at most [`MAX_ROUNDS`]);
/// returns the deleted ids.
async fn write_while(
    stack: &TestStack,
    mut live: Vec<i64>,
    finished: &AtomicBool,
) -> anyhow::Result<Vec<i64>> {
    let mut deleted = Vec::new();
    let mut round = 0;
    while round < MAX_ROUNDS && (round < MIN_ROUNDS || !finished.load(Ordering::SeqCst)) {
        // A stride through the ids: writes land ahead of the rebuild, behind it and on the
        // page it is reading.
        let at = (round * 37) % live.len();
        if round % 4 == 3 {
            let id = live.remove(at);
            stack.delete_book(id).await?;
            deleted.push(id);
        } else {
            stack
                .rename_book(live[at], &format!("Renamed in round {round}"))
                .await?;
        }
        if round % 3 == 0 {
            live.push(
                stack
                    .create_book(&format!("Created in round {round}"))
                    .await?,
            );
        }
        round += 1;
    }
    Ok(deleted)
}

/// How the cache differs from storagesvc: a book missing or at another version or title, or a
/// deleted book that is live again.
async fn differences(stack: &TestStack, deleted: &BTreeSet<i64>) -> Vec<String> {
    let books = match storagesvc_books(stack).await {
        Ok(books) => books,
        Err(error) => return vec![format!("storagesvc: {error}")],
    };
    let mut wrong = Vec::new();
    for (id, book) in &books {
        match cached(&stack.cache, *id).await {
            Ok(Some(entry)) if entry == *book => {}
            other => wrong.push(format!("book {id}: storagesvc {book:?}, cache {other:?}")),
        }
    }
    for id in deleted {
        if books.contains_key(id) {
            wrong.push(format!("book {id} was deleted, storagesvc has it"));
        }
        match stack.cache.get_book(*id).await.map(|l| l.cached) {
            Ok(None) => {}
            Ok(Some(entry)) if matches!(entry.value, CachedBook::Tombstone { .. }) => {}
            other => wrong.push(format!("deleted book {id} is back: {other:?}")),
        }
    }
    wrong
}
