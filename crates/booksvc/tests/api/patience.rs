//! How long a read waits for storagesvc when it has an entry to fall back on: at most
//! `STALE_SOFT_TIMEOUT` while storagesvc is merely slow, not at all while the breaker's trial
//! call is in flight. The call goes on in the background and refills the cache; a read with
//! nothing cached still waits, within `REQUEST_BUDGET`. storagesvc is made slow on purpose: the
//! stand-in holds its answers back.

use std::time::{Duration, Instant};

use booksvc::breaker::State as BreakerState;
use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{TestStack, eventually, header};

/// Generous bound for "did not wait for storagesvc": about half of what the held call costs a
/// reader that does wait (the budget, 1 s; a trial, 900 ms), ten times the soft timeout.
const NO_WAIT: Duration = Duration::from_millis(500);

/// `GET /books/{id}`: status, `X-Cache`, `Cache-Status`, the `version` served and how long
/// the answer took.
async fn read(stack: &TestStack, id: i64) -> anyhow::Result<Read> {
    let started = Instant::now();
    let response = stack.get_book(id).await?;
    let took = started.elapsed();
    let status = response.status();
    let x_cache = header(&response, "x-cache").unwrap_or_default();
    let cache_status = header(&response, "cache-status").unwrap_or_default();
    let body: serde_json::Value = response.json().await?;
    Ok(Read {
        status,
        x_cache,
        cache_status,
        version: body["version"].as_i64(),
        took,
    })
}

#[derive(Debug)]
struct Read {
    status: StatusCode,
    x_cache: String,
    cache_status: String,
    version: Option<i64>,
    took: Duration,
}

#[tokio::test]
async fn a_slow_storagesvc_costs_a_reader_with_an_entry_only_the_soft_timeout() -> anyhow::Result<()>
{
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.cache_fresh_ttl = Duration::ZERO) // every read asks storagesvc first
        .spawn()
        .await?;
    // Arrange: book 1 cached at its first version, then renamed behind booksvc's back.
    let warm = read(&stack, 1).await?;
    assert_eq!(
        (warm.status, warm.x_cache.as_str()),
        (StatusCode::OK, "miss")
    );
    let renamed = stack.rename_book(1, "Renamed while cached").await?;

    // Act: storagesvc turns slow (its answers are held back).
    stack.standin().hold();
    let stale = read(&stack, 1).await?;
    let uncached = tokio::spawn({
        let url = format!("{}/books/2", stack.address);
        let client = stack.client.clone();
        async move {
            let started = Instant::now();
            let response = client.get(url).send().await?;
            anyhow::Ok((
                response.status(),
                header(&response, "x-cache"),
                started.elapsed(),
            ))
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stack.standin().release();

    // The reader with an entry got it at once, said why, and did not wait for the call.
    assert_eq!(stale.status, StatusCode::OK, "{stale:?}");
    assert_eq!(stale.x_cache, "stale", "{stale:?}");
    assert!(stale.cache_status.contains("fwd=stale"), "{stale:?}");
    assert!(
        stale.cache_status.contains("detail=soft-timeout"),
        "{stale:?}"
    );
    assert_eq!(stale.version, warm.version, "the entry it had: {stale:?}");
    assert!(
        stale.took < NO_WAIT,
        "waited for a slow storagesvc: {stale:?}"
    );
    // The reader with nothing cached waited for storagesvc, within the budget.
    let (status, x_cache, took) = uncached.await??;
    assert_eq!((status, x_cache.as_deref()), (StatusCode::OK, Some("miss")));
    assert!(
        took >= Duration::from_millis(200),
        "answered before the release: {took:?}"
    );
    // The call went on without its reader and refilled the cache with the new version.
    let refilled = eventually(Duration::from_secs(5), || async {
        let lookup = stack.cache.get_book(1).await;
        lookup.is_ok_and(|l| {
            l.cached
                .is_some_and(|c| Some(c.value.version()) == renamed["version"].as_i64())
        })
    })
    .await;
    assert!(
        refilled,
        "the cache never got version {}",
        renamed["version"]
    );
    assert_eq!(
        stack.standin().calls("/books/1"),
        2,
        "the warm read and one call"
    );
    assert_eq!(stack.breaker(), BreakerState::Closed, "slow is not down");
    stack.stop().await
}

#[tokio::test]
async fn readers_with_an_entry_never_wait_for_the_half_open_trial() -> anyhow::Result<()> {
    const READERS: usize = 16;
    const OPEN_FOR: Duration = Duration::from_secs(2);
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| {
            s.cache_fresh_ttl = Duration::ZERO;
            s.breaker_consecutive_failures = 1;
            s.breaker_timeout = OPEN_FOR;
            // One held attempt lasts most of the budget, so a reader that waits for the trial
            // takes about that long; and the soft timeout is out of the way (past the
            // budget), so only the half-open rule can keep readers from waiting.
            s.storagesvc_timeout = Duration::from_millis(900);
            s.stale_soft_timeout = Duration::from_secs(10);
        })
        .spawn()
        .await?;
    let warm = read(&stack, 1).await?;
    assert_eq!(
        (warm.status, warm.x_cache.as_str()),
        (StatusCode::OK, "miss")
    );

    // Arrange: storagesvc hangs; a read's attempt times out and opens the breaker. The
    // attempt's timeout ends just inside the budget; on a loaded machine an attempt that
    // starts late is cut by the budget instead, which is not storagesvc's failure and does
    // not count: read until one attempt times out.
    stack.standin().hold();
    let mut opened = false;
    for _ in 0..10 {
        let tripping = read(&stack, 1).await?;
        assert_eq!(tripping.x_cache, "stale", "{tripping:?}");
        let open = eventually(Duration::from_secs(1), || async {
            stack.breaker() == BreakerState::Open
        });
        if open.await {
            opened = true;
            break;
        }
    }
    assert!(opened, "no timed-out attempt opened the breaker");
    let tripped = Instant::now();
    let calls_before = trial_candidates(&stack);

    // Act: readers in a loop from just before the breaker turns half-open until well into
    // the trial (which hangs: its answer is held). A reader sends it (the active probe polls
    // only every 200 ms, readers every few ms), and every reader arrives while it is out.
    tokio::time::sleep_until((tripped + OPEN_FOR - Duration::from_millis(300)).into()).await;
    let until = tripped + OPEN_FOR + Duration::from_millis(500);
    let readers = (0..READERS).map(|_| async {
        let mut reads = Vec::new();
        while Instant::now() < until {
            reads.push(read(&stack, 1).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reads
    });
    let reads: Vec<_> = join_all(readers).await.into_iter().flatten().collect();
    let trial_sent = eventually(Duration::from_secs(5), || async {
        trial_candidates(&stack) > calls_before
    })
    .await;
    let trials = trial_candidates(&stack) - calls_before;
    stack.standin().release(); // the trial's answer arrives

    let mut during_trial = 0;
    for read in reads {
        let read = read?;
        assert_eq!(
            (read.status, read.x_cache.as_str()),
            (StatusCode::OK, "stale"),
            "{read:?}"
        );
        assert!(read.took < NO_WAIT, "waited for the trial: {read:?}");
        during_trial += usize::from(read.cache_status.contains("detail=trial-in-flight"));
    }
    assert!(during_trial > 0, "no read came while the trial was out");
    assert!(trial_sent, "no trial call reached storagesvc");
    assert_eq!(trials, 1, "one trial for {READERS} readers");
    // The trial (or, had it timed out, the next one) closes the breaker: storagesvc is back.
    let closed = eventually(Duration::from_secs(5), || async {
        stack.breaker() == BreakerState::Closed
    })
    .await;
    assert!(closed, "the breaker never closed");
    stack.stop().await
}

/// Calls that can be the breaker's trial: a read of book 1, or the active probe's readiness
/// check (whichever takes the half-open slot first).
fn trial_candidates(stack: &TestStack) -> u32 {
    stack.standin().calls("/books/1") + stack.standin().calls("/healthz/ready")
}

/// The soft timeout counts from the flight's start. When storagesvc has just gone slow or
/// down, the key's flights follow one another until the breaker opens; a reader that joins a
/// flight already older than the soft timeout gets the entry at once instead of waiting the
/// whole soft timeout again.
#[tokio::test]
async fn a_reader_joining_a_late_flight_does_not_wait_the_soft_timeout_again() -> anyhow::Result<()>
{
    let soft = Duration::from_secs(2);
    let stack = TestStack::options()
        .standin()
        .booksvc(move |s| {
            s.cache_fresh_ttl = Duration::ZERO; // every read asks storagesvc first
            s.stale_soft_timeout = soft;
            // One held attempt outlives both reads.
            s.storagesvc_timeout = Duration::from_secs(6);
            s.request_budget = Duration::from_secs(8);
        })
        .spawn()
        .await?;
    let warm = read(&stack, 1).await?;
    assert_eq!(
        (warm.status, warm.x_cache.as_str()),
        (StatusCode::OK, "miss")
    );

    stack.standin().hold();
    let first = read(&stack, 1).await?;
    let second = read(&stack, 1).await?;
    stack.standin().release();

    for read in [&first, &second] {
        assert_eq!(
            (read.status, read.x_cache.as_str()),
            (StatusCode::OK, "stale")
        );
        assert!(read.cache_status.contains("soft-timeout"), "{read:?}");
    }
    // The first reader started the flight and waited the soft timeout; the second joined the
    // same flight, by then older than the soft timeout.
    assert!(first.took >= soft, "{first:?}");
    assert!(
        second.took < NO_WAIT,
        "the reader joining the late flight waited: {second:?}"
    );
    stack.stop().await
}
