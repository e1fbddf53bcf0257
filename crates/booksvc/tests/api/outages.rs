//! Dependencies failing: storagesvc answering 503 (the stand-in answers as storagesvc does
//! with PostgreSQL down), hung, slow, or failing once; Redis stopped or silent for real;
//! everything down. Every answer comes within the budget (asserted generously).

use std::time::{Duration, Instant};

use booksvc::breaker::State as BreakerState;
use reqwest::{Response, StatusCode};

use crate::helpers::{Answer, TestStack, WITHIN_BUDGET, assert_json_error, eventually, header};

/// `GET path`, asserting that the answer came within the budget.
async fn timed_get(stack: &TestStack, path: &str) -> anyhow::Result<Response> {
    let started = Instant::now();
    let response = stack.get(path).await?;
    let took = started.elapsed();
    assert!(took < WITHIN_BUDGET, "GET {path} took {took:?}");
    Ok(response)
}

/// Asserts a `stale` 200 with `Age`; returns its `Cache-Status`.
fn assert_stale(response: &Response, case: &str) -> String {
    assert_eq!(response.status(), StatusCode::OK, "{case}");
    assert_eq!(
        header(response, "x-cache").as_deref(),
        Some("stale"),
        "{case}"
    );
    assert!(
        header(response, "age").is_some(),
        "{case}: a stale answer says its age"
    );
    header(response, "cache-status").unwrap_or_default()
}

#[tokio::test]
async fn serves_stale_copies_while_storagesvc_answers_503_and_the_probe_closes_the_breaker_after()
-> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| {
            s.cache_fresh_ttl = Duration::ZERO; // every read asks storagesvc first
            s.breaker_consecutive_failures = 3;
            s.breaker_timeout = Duration::from_secs(3);
        })
        .spawn()
        .await?;
    // Arrange: two books, the list and a deleted book (a tombstone) in the cache.
    let gone = stack.create_book("Deleted before the outage").await?;
    for path in ["/books/1", "/books/2", "/books", &format!("/books/{gone}")] {
        assert_eq!(
            stack.get(path).await?.status(),
            StatusCode::OK,
            "warming {path}"
        );
    }
    stack.delete_book(gone).await?;
    assert_eq!(stack.get_book(gone).await?.status(), StatusCode::NOT_FOUND);

    // Act: storagesvc answers 503 to everything, readiness included (PostgreSQL is down).
    stack.standin().answer(Answer::Unavailable);

    // Every read of a cached key is a stale 200 within the budget (before the breaker opens,
    // within the soft timeout while the failing calls go on behind), and the breaker opens.
    let mut read = 0;
    let opened = eventually(Duration::from_secs(10), || {
        read += 1;
        let case = format!("read {read} during the outage");
        let stack = &stack;
        async move {
            let response = timed_get(stack, "/books/1").await.expect("an answer");
            assert_stale(&response, &case);
            stack.breaker() == BreakerState::Open
        }
    })
    .await;
    assert!(opened, "the breaker never opened");

    // While open, storagesvc gets no calls at all: the stale copies come straight from Redis.
    let calls_when_open = stack.standin().book_calls();
    for path in ["/books/1", "/books/2", "/books", "/"] {
        let response = timed_get(&stack, path).await?;
        let status = assert_stale(&response, path);
        assert!(status.contains("detail=circuit-open"), "{path}: {status}");
    }
    let tombstone = timed_get(&stack, &format!("/books/{gone}")).await?;
    assert_eq!(header(&tombstone, "x-cache").as_deref(), Some("stale"));
    assert_json_error(
        tombstone,
        StatusCode::NOT_FOUND,
        "a tombstone during the outage",
    )
    .await;
    assert_eq!(
        stack.standin().book_calls(),
        calls_when_open,
        "the breaker stopped the calls"
    );

    // storagesvc is back. Without a single read, the active probe closes the breaker…
    stack.standin().answer(Answer::Normal);
    let closed = eventually(Duration::from_secs(15), || async {
        stack.breaker() == BreakerState::Closed
    })
    .await;
    assert!(
        closed,
        "the probe never closed the breaker: {:?}",
        stack.breaker()
    );
    assert_eq!(
        stack.standin().book_calls(),
        calls_when_open,
        "no cache miss was needed"
    );
    assert!(
        stack.standin().calls("/healthz/ready") >= 1,
        "the probe asked storagesvc"
    );

    // …and the next read is fresh from storagesvc.
    let fresh = timed_get(&stack, "/books/1").await?;
    assert_eq!(header(&fresh, "x-cache").as_deref(), Some("miss"));
    stack.stop().await
}

#[tokio::test]
async fn answers_from_storagesvc_while_redis_is_down() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .private_redis()
        .spawn()
        .await?;
    assert_eq!(stack.get_book(1).await?.status(), StatusCode::OK);

    stack.private_redis().stop().await?;

    for path in ["/books/1", "/books/2", "/books", "/books/1"] {
        let response = timed_get(&stack, path).await?;
        assert_eq!(response.status(), StatusCode::OK, "{path} with Redis down");
        assert_eq!(
            header(&response, "x-cache").as_deref(),
            Some("miss"),
            "{path}"
        );
    }
    let (status, body) = stack.ready().await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dependencies"]["redis"]["status"], "down", "{body}");
    assert_eq!(body["mode"], "DEGRADED", "{body}");

    // Redis is back: reads fill it again and then hit.
    stack.private_redis().start_again().await?;
    let hits_again = eventually(Duration::from_secs(5), || async {
        let response = stack.get_book(2).await;
        response.is_ok_and(|r| header(&r, "x-cache").as_deref() == Some("hit"))
    })
    .await;
    assert!(
        hits_again,
        "the cache never served a hit after Redis came back"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_reads_only_its_timeout() -> anyhow::Result<()> {
    // Accepts connections (the kernel completes the handshake) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("redis://{}", silent.local_addr()?);
    let stack = TestStack::options()
        .standin()
        .redis_url(url)
        .spawn()
        .await?;

    for path in ["/books/1", "/books/1", "/books"] {
        let response = timed_get(&stack, path).await?;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{path} with a silent Redis"
        );
        assert_eq!(
            header(&response, "x-cache").as_deref(),
            Some("miss"),
            "{path}"
        );
    }
    let (_, body) = stack.ready().await?;
    assert_eq!(body["dependencies"]["redis"]["status"], "down", "{body}");
    drop(silent);
    stack.stop().await
}

#[tokio::test]
async fn a_hung_storagesvc_costs_a_client_at_most_the_budget() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.cache_fresh_ttl = Duration::ZERO)
        .spawn()
        .await?;
    assert_eq!(stack.get_book(1).await?.status(), StatusCode::OK);

    stack.standin().answer(Answer::Hang); // storagesvc's answers never arrive

    let cached = timed_get(&stack, "/books/1").await?;
    let status = assert_stale(&cached, "cached book, storagesvc hung");
    assert!(status.contains("detail="), "{status}");
    let uncached = timed_get(&stack, "/books/2").await?;
    assert!(
        header(&uncached, "retry-after").is_some(),
        "a 503 says when to retry"
    );
    assert_json_error(uncached, StatusCode::SERVICE_UNAVAILABLE, "uncached, hung").await;
    stack.stop().await
}

#[tokio::test]
async fn with_everything_down_and_nothing_cached_reads_get_503_with_retry_after()
-> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .private_redis()
        .booksvc(|s| {
            s.breaker_consecutive_failures = 3;
            s.breaker_timeout = Duration::from_secs(5);
        })
        .spawn()
        .await?;
    stack.standin().answer(Answer::Unavailable);
    stack.private_redis().stop().await?;

    // Before the breaker opens: storagesvc was asked and failed; come back in a second.
    let first = timed_get(&stack, "/books/1").await?;
    assert_eq!(header(&first, "retry-after").as_deref(), Some("1"));
    assert_json_error(first, StatusCode::SERVICE_UNAVAILABLE, "first read").await;

    let opened = eventually(Duration::from_secs(10), || async {
        let _ = timed_get(&stack, "/books/2").await;
        stack.breaker() == BreakerState::Open
    })
    .await;
    assert!(opened, "the breaker never opened");

    // Open: Retry-After is the breaker's remaining open time (at most 5 s).
    let refused = timed_get(&stack, "/books").await?;
    let retry_after: u64 = header(&refused, "retry-after")
        .unwrap_or_default()
        .parse()?;
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    let body = assert_json_error(refused, StatusCode::SERVICE_UNAVAILABLE, "open").await;
    assert_eq!(body["retry_after_seconds"], retry_after);

    let (status, body) = stack.ready().await?;
    assert_eq!(status, StatusCode::OK, "ready even now: {body}");
    assert_eq!(body["mode"], "UNAVAILABLE", "{body}");
    assert_eq!(body["dependencies"]["breaker"]["status"], "open", "{body}");
    stack.stop().await
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_within_the_budget_and_the_reader_gets_the_book()
-> anyhow::Result<()> {
    // storagesvc's 503 says `Retry-After: 1`: a budget of 3 s has room to wait for it.
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.request_budget = Duration::from_secs(3))
        .spawn()
        .await?;
    stack.standin().answer_next(1, Answer::Unavailable);

    let response = stack.get_book(2).await?;

    assert_eq!(response.status(), StatusCode::OK, "the second attempt");
    assert_eq!(header(&response, "x-cache").as_deref(), Some("miss"));
    assert_eq!(stack.standin().calls("/books/2"), 2, "one 503, one retry");
    assert_eq!(stack.breaker(), BreakerState::Closed, "one failure");
    stack.stop().await
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_is_not_waited_for() -> anyhow::Result<()> {
    // The default budget (1 s) has no room for storagesvc's `Retry-After: 1`.
    let stack = TestStack::spawn_standin().await?;
    stack.standin().answer(Answer::Unavailable);

    let response = timed_get(&stack, "/books/2").await?;

    assert_json_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "503, no time to retry",
    )
    .await;
    assert_eq!(stack.standin().calls("/books/2"), 1, "not retried");
    stack.stop().await
}

#[tokio::test]
async fn a_500_is_not_retried_but_counts_against_the_breaker() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.breaker_consecutive_failures = 2)
        .spawn()
        .await?;
    stack.standin().answer(Answer::InternalError);

    for id in [1, 2] {
        let response = timed_get(&stack, &format!("/books/{id}")).await?;
        assert_json_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "storagesvc's 500",
        )
        .await;
        assert_eq!(
            stack.standin().calls(&format!("/books/{id}")),
            1,
            "a 500 would fail the same way again"
        );
    }
    assert_eq!(stack.breaker(), BreakerState::Open, "a 500 is an outage");
    stack.stop().await
}

#[tokio::test]
async fn attempts_slower_than_their_timeout_are_retried_with_backoff_within_the_budget()
-> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.storagesvc_timeout = Duration::from_millis(150))
        .spawn()
        .await?;
    // Every answer comes after the attempt has given up.
    stack
        .standin()
        .answer(Answer::Delay(Duration::from_millis(600)));

    let response = timed_get(&stack, "/books/2").await?;

    assert!(
        header(&response, "retry-after").is_some(),
        "a 503 says when"
    );
    assert_json_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "every attempt timed out",
    )
    .await;
    let attempts = stack.standin().calls("/books/2");
    assert!(
        (2..=4).contains(&attempts),
        "a timeout is retried, at most RETRY_MAX_ATTEMPTS (4) times: {attempts}"
    );
    stack.stop().await
}

/// A 404 is an answer, whoever gives it: a storagesvc that has none of the routes (a wrong
/// `STORAGESVC_URL` path) is not an outage, so the breaker stays closed and nothing is retried.
#[tokio::test]
async fn a_storagesvc_answering_404_to_everything_never_opens_the_breaker() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.breaker_consecutive_failures = 2)
        .spawn()
        .await?;
    stack.standin().answer(Answer::NotFound);

    for read in 0..4 {
        let response = timed_get(&stack, "/books/1").await?;
        let case = format!("read {read} of a seeded book");
        assert_json_error(response, StatusCode::NOT_FOUND, &case).await;
    }

    assert_eq!(stack.breaker(), BreakerState::Closed, "404s are answers");
    assert_eq!(stack.standin().calls("/books/1"), 4, "each read asked once");
    stack.stop().await
}
