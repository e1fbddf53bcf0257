//! A deleted book stays deleted (decision 0013): an event that comes back from the DLQ after
//! the book's tombstone is gone cannot bring it back; booksvc asks storagesvc instead.

use std::time::Duration;

use booksvc::book::CachedBook;
use booksvc::redrive::redrive_from_url;
use e2e::in_process::{Booksvc, Storagesvc};
use events::{BookChanged, DLQ, DLQ_EXCHANGE, QUEUE};
use reqwest::StatusCode;

use crate::helpers::{Broker, SOON, cached, cached_at, data, eventually};

/// Short enough for a test to wait past it.
const MAX_AGE: Duration = Duration::from_secs(4);

#[tokio::test]
async fn a_late_redrive_cannot_bring_back_a_book_whose_tombstone_expired() -> anyhow::Result<()> {
    // Arrange: storagesvc and booksvc (its consumer checks with storagesvc) on one vhost.
    let broker = Broker::fresh().await?;
    let storage = Storagesvc::options().amqp_url(&broker.url).spawn().await?;
    let booksvc = Booksvc::options(&storage.address)
        .consumer(&broker.url)
        .settings(|settings| settings.cache_max_age = MAX_AGE)
        .spawn()
        .await?;

    // The cache's memory starts with the first event it judges; events within 2 s of that
    // start are settled by storagesvc. Let it start, and pass.
    let first = storage.create("First").await?;
    assert!(
        eventually(SOON, || async {
            cached(&booksvc.cache, first).await.is_some()
        })
        .await,
        "the first event never reached the cache"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A book is updated; that update's event failed and sits in the DLQ (put there by hand:
    // the same event as storagesvc sent, with its time). Then the book is deleted.
    let id = storage.create("Doomed").await?;
    storage.update(id, "Old news").await?;
    let dead_update = BookChanged::updated(data(id, "Old news"), 2, chrono::Utc::now());
    broker.publish_to(DLQ_EXCHANGE, &[dead_update]).await?;
    storage.delete(id).await?;
    assert!(
        cached_at(&booksvc.cache, id, 3).await,
        "the delete never reached the cache"
    );

    // Act: the tombstone outlives its max age; then an operator re-drives the DLQ.
    tokio::time::sleep(MAX_AGE + Duration::from_millis(500)).await;
    assert_eq!(
        cached(&booksvc.cache, id).await,
        None,
        "the tombstone is gone"
    );
    let moved = redrive_from_url(&broker.url, None).await?;
    assert_eq!(moved.moved, 1);
    assert!(
        eventually(Duration::from_secs(15), || async {
            broker.depth(QUEUE).await.is_ok_and(|depth| depth == 0)
                && broker.depth(DLQ).await.is_ok_and(|depth| depth == 0)
        })
        .await,
        "the re-driven event was not consumed"
    );
    // The consumer acks after writing; give a write that raced the depth check its moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Assert: the cache holds no live book and booksvc answers 404 (from storagesvc).
    let entry = cached(&booksvc.cache, id).await;
    assert!(
        !matches!(entry, Some(CachedBook::Live(_))),
        "a deleted book is back in the cache: {entry:?}"
    );
    let response = booksvc.get(&format!("/books/{id}")).await?;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "x-cache {:?}",
        response.headers().get("x-cache")
    );
    booksvc.stop().await?;
    storage.stop().await?;
    broker.close().await;
    Ok(())
}
