//! The in-process hit layer, in the real booksvc against a real broker and Redis: an event
//! from anywhere drops the local copy; with the breaker open a stale copy is served without
//! Redis; with the broker down the layer is bypassed; off by configuration, reads are what
//! they were.
//!
//! "Another replica" is played by writing Redis directly (as its consumer or a fill would)
//! and by publishing to `books` directly (as storagesvc's relay does). The layer is kept
//! for an hour in these tests (`CACHE_FRESH_TTL` and `LOCAL_CACHE_TTL`), so what it serves
//! does not depend on how fast a loaded machine runs.

use booksvc::book::Book;
use booksvc::cache::{BookCache, LocalKey, LocalState, Seen};
use chrono::Utc;
use events::BookChanged;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Broker, SOON, created, data, eventually, start_cache_memory, updated};
use e2e::in_process::{Booksvc, unreachable_http_url};

const KEEP_AN_HOUR: [&str; 4] = ["--cache-fresh-ttl", "1h", "--local-cache-ttl", "1h"];

/// Another replica's consumer writing Redis, without any event reaching this one.
async fn write_redis_only(cache: &BookCache, event: &BookChanged) -> anyhow::Result<()> {
    cache.apply_event_on_version(event).await?;
    Ok(())
}

/// The title booksvc answers for `id`, after checking the answer is a 200 hit.
async fn title(booksvc: &Booksvc, id: i64) -> anyhow::Result<String> {
    let response = booksvc.get(&format!("/books/{id}")).await?;
    anyhow::ensure!(response.status() == StatusCode::OK, "{}", response.status());
    anyhow::ensure!(
        response.headers()["x-cache"] == "hit",
        "{:?}",
        response.headers()
    );
    let book: Value = response.json().await?;
    Ok(book["title"].as_str().unwrap_or_default().to_owned())
}

/// The ids `GET /books` lists, after checking the answer is a 200 hit.
async fn list_ids(booksvc: &Booksvc) -> anyhow::Result<Vec<i64>> {
    let response = booksvc.get("/books").await?;
    anyhow::ensure!(response.status() == StatusCode::OK, "{}", response.status());
    anyhow::ensure!(
        response.headers()["x-cache"] == "hit",
        "{:?}",
        response.headers()
    );
    let books: Vec<Value> = response.json().await?;
    Ok(books
        .iter()
        .filter_map(|book| book["id"].as_i64())
        .collect())
}

/// `Cache-Status` without its `ttl=` parameter, and that ttl.
fn split_ttl(response: &reqwest::Response) -> anyhow::Result<(String, i64)> {
    let status = response.headers()["cache-status"].to_str()?;
    let mut ttl = None;
    let rest: Vec<&str> = status
        .split("; ")
        .filter(|part| match part.strip_prefix("ttl=") {
            Some(seconds) => {
                ttl = seconds.parse().ok();
                false
            }
            None => true,
        })
        .collect();
    let ttl = ttl.ok_or_else(|| anyhow::anyhow!("no ttl in {status:?}"))?;
    Ok((rest.join("; "), ttl))
}

async fn local_state_is(booksvc: &Booksvc, state: LocalState) -> bool {
    eventually(SOON, || async { booksvc.local.state() == state }).await
}

async fn ready_says(booksvc: &Booksvc) -> anyhow::Result<String> {
    let body: Value = booksvc.get("/healthz/ready").await?.json().await?;
    Ok(body["dependencies"]["local_cache"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// booksvc with `args` on `amqp_url`, storagesvc unreachable (the events must be applied, not
/// settled with it: decision 0013) and Redis started, once its local layer is live.
async fn live_booksvc(amqp_url: &str, args: &[&str]) -> anyhow::Result<Booksvc> {
    let booksvc = Booksvc::options(&unreachable_http_url()?)
        .consumer(amqp_url)
        .args(args)
        .spawn()
        .await?;
    start_cache_memory(&booksvc.cache).await?;
    anyhow::ensure!(
        local_state_is(&booksvc, LocalState::Live).await,
        "the local layer never went live"
    );
    Ok(booksvc)
}

#[tokio::test]
async fn an_event_from_another_replica_drops_the_local_copy() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let booksvc = live_booksvc(&broker.url, &KEEP_AN_HOUR).await?;
    assert_eq!(ready_says(&booksvc).await?, "live");
    write_redis_only(&booksvc.cache, &created(1, "first")).await?;

    // The first read copies the Redis hit; the second is served from memory, byte for byte
    // and header for header the same, but for the freshness left, which may tick down a
    // second between the two reads.
    let from_redis = booksvc.get("/books/1").await?;
    let from_memory = booksvc.get("/books/1").await?;
    for name in ["x-cache", "content-type"] {
        assert_eq!(
            from_memory.headers().get(name),
            from_redis.headers().get(name),
            "{name}"
        );
    }
    let (memory_status, memory_ttl) = split_ttl(&from_memory)?;
    let (redis_status, redis_ttl) = split_ttl(&from_redis)?;
    assert_eq!(memory_status, redis_status, "cache-status");
    assert!(
        (redis_ttl - 1..=redis_ttl).contains(&memory_ttl),
        "ttl {redis_ttl} from Redis, then {memory_ttl} from memory"
    );
    assert_eq!(from_memory.headers()["x-cache"], "hit");
    assert!(from_memory.headers().contains_key("age"));
    assert_eq!(from_memory.bytes().await?, from_redis.bytes().await?);

    // Redis moves on without an event reaching this replica: memory still answers (this is
    // what the events are for)…
    write_redis_only(&booksvc.cache, &updated(1, 2, "second")).await?;
    assert_eq!(title(&booksvc, 1).await?, "first");

    // …and the event, published by anyone, drops the copy: the next reads are the new data.
    broker.publish(&[updated(1, 3, "third")]).await?;
    let caught_up = eventually(SOON, || async {
        title(&booksvc, 1).await.is_ok_and(|title| title == "third")
    });
    assert!(caught_up.await, "the local copy outlived the event");

    // Pages bypass the layer and are read from Redis each time: another replica filled the
    // first page…
    let books = [Book::from_event(&data(1, "third"), 3, Utc::now())];
    let fresh = std::time::Duration::from_secs(3600);
    booksvc
        .cache
        .fill_page(0, 100, Seen::NOTHING, &books, fresh)
        .await?;
    assert_eq!(list_ids(&booksvc).await?, [1]);
    // …and a new book's event (applied to Redis by booksvc's own consumer, or any other)
    // shows in it as soon as it is applied.
    broker.publish(&[created(2, "new")]).await?;
    let listed = eventually(SOON, || async {
        list_ids(&booksvc).await.is_ok_and(|ids| ids == [1, 2])
    });
    assert!(listed.await, "the page did not reflect the event");
    booksvc.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn with_the_broker_down_reads_bypass_the_local_layer() -> anyhow::Result<()> {
    testkit::init_test_logging();
    let rabbit = testkit::RabbitMq::start().await?; // private: this test stops it
    let booksvc = live_booksvc(&rabbit.amqp_url(), &KEEP_AN_HOUR).await?;
    write_redis_only(&booksvc.cache, &created(1, "before")).await?;
    assert_eq!(title(&booksvc, 1).await?, "before");
    assert_eq!(title(&booksvc, 1).await?, "before"); // from memory now

    // The broker goes: events could go by unseen, so memory must not answer any more.
    rabbit.stop().await?;
    assert!(
        local_state_is(&booksvc, LocalState::Bypassed).await,
        "the loss went unnoticed"
    );
    assert_eq!(ready_says(&booksvc).await?, "bypassed");
    assert!(booksvc.local.is_empty(), "bypassed but not emptied");
    // A write whose event cannot reach anyone lands in Redis (say, by a fill): it is served
    // at once.
    write_redis_only(&booksvc.cache, &updated(1, 2, "during")).await?;
    assert_eq!(title(&booksvc, 1).await?, "during");
    assert_eq!(title(&booksvc, 1).await?, "during");
    assert!(booksvc.local.is_empty(), "stored while bypassed");

    // The broker is back: the layer goes live again only once subscribed, and serves again.
    rabbit.start_again().await?;
    assert!(
        local_state_is(&booksvc, LocalState::Live).await,
        "never went live again"
    );
    assert_eq!(title(&booksvc, 1).await?, "during");
    assert!(!booksvc.local.is_empty(), "live again but storing nothing");
    booksvc.stop().await?;
    Ok(())
}

/// The `Cache-Status` of an answer.
fn cache_status(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("cache-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn with_the_breaker_open_a_stale_copy_is_served_from_memory_until_an_event_drops_it()
-> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    // Entries go stale after a second; the breaker, once open, stays open for the test.
    let args = [
        "--cache-fresh-ttl",
        "1s",
        "--local-cache-ttl",
        "1h",
        "--breaker-timeout",
        "1h",
    ];
    let booksvc = live_booksvc(&broker.url, &args).await?;
    write_redis_only(&booksvc.cache, &created(1, "first")).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    // storagesvc is unreachable: reads answer the stale entry, and keep a stale copy of it,
    // until the breaker opens.
    let opened = eventually(SOON, || async {
        let response = booksvc.get("/books/1").await;
        response.is_ok_and(|response| cache_status(&response).contains("detail=circuit-open"))
    });
    assert!(opened.await, "the breaker never opened");
    assert!(
        booksvc.local.get_stale(LocalKey::Book(1)).is_some(),
        "no stale copy kept"
    );

    // Redis moves on without an event reaching this replica: with the breaker open, the
    // copy is the answer, without a Redis read (which would find "second", fresh).
    write_redis_only(&booksvc.cache, &updated(1, 2, "second")).await?;
    for _ in 0..3 {
        let response = booksvc.get("/books/1").await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-cache"], "stale");
        let status = cache_status(&response);
        assert!(status.contains("detail=circuit-open"), "{status}");
        assert!(status.contains("ttl=-"), "not stale: {status}");
        let book: Value = response.json().await?;
        assert_eq!(book["title"], "first");
    }

    // The event drops the copy, as it drops a hit: the next reads are the new data.
    broker.publish(&[updated(1, 3, "third")]).await?;
    let caught_up = eventually(SOON, || async {
        let Ok(response) = booksvc.get("/books/1").await else {
            return false;
        };
        let book: Value = response.json().await.unwrap_or_default();
        book["title"] == "third"
    });
    assert!(caught_up.await, "the stale copy outlived the event");
    booksvc.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn turned_off_by_configuration_every_read_asks_redis() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let mut args = KEEP_AN_HOUR.to_vec();
    args.extend(["--local-cache-max-entries", "0"]);
    let booksvc = Booksvc::options(&unreachable_http_url()?)
        .consumer(&broker.url)
        .args(&args)
        .spawn()
        .await?;
    // No storagesvc: the events must be applied, not settled with it (decision 0013).
    start_cache_memory(&booksvc.cache).await?;
    assert_eq!(booksvc.local.state(), LocalState::Disabled);
    assert_eq!(ready_says(&booksvc).await?, "disabled");
    write_redis_only(&booksvc.cache, &created(1, "first")).await?;
    assert_eq!(title(&booksvc, 1).await?, "first");
    write_redis_only(&booksvc.cache, &updated(1, 2, "second")).await?;
    assert_eq!(title(&booksvc, 1).await?, "second", "served from memory");
    booksvc.stop().await?;
    broker.close().await;
    Ok(())
}
