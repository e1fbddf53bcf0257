//! Re-drive: DLQ messages go back to the main queue and are applied once the cause is fixed.

use booksvc::redrive::redrive_from_url;
use events::DLQ;
use events::headers::{self, X_RETRY_COUNT};

use crate::helpers::{
    Broker, FlakySink, RunningConsumer, cached_at, cached_title, consumer_settings, created,
    shared_cache, updated,
};

#[tokio::test]
async fn redrive_brings_dead_letters_back_and_they_are_applied() -> anyhow::Result<()> {
    // Arrange: two events fail on every attempt and end in the DLQ.
    let broker = Broker::fresh().await?;
    let sink = FlakySink::new(shared_cache().await?);
    sink.fail(1, u32::MAX);
    sink.fail(2, u32::MAX);
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), sink.clone());
    broker
        .publish(&[updated(1, 2, "fixed at last"), created(2, "me too")])
        .await?;
    assert!(broker.wait_for_depth(DLQ, 2).await, "the DLQ did not fill");

    // Act: the cause is fixed; an operator re-drives one message, then (with some poison
    // in the DLQ by now) all of them.
    sink.fail(1, 0);
    sink.fail(2, 0);
    let first = redrive_from_url(&broker.url, Some(1)).await?;
    assert_eq!(first.moved, 1, "--limit 1");
    assert!(broker.wait_for_depth(DLQ, 1).await);
    broker
        .publish_by_hand("book.created", "still poison")
        .await?;
    assert!(
        broker.wait_for_depth(DLQ, 2).await,
        "the poison did not reach the DLQ"
    );
    let rest = redrive_from_url(&broker.url, None).await?;
    assert_eq!(rest.moved, 2, "what was in the DLQ at the start, once");

    // Assert: the events are applied with a fresh attempt count; the poison is back, alone.
    let cache = sink.cache();
    assert!(
        cached_at(cache, 1, 2).await,
        "book 1 was not applied after the re-drive"
    );
    assert!(
        cached_at(cache, 2, 1).await,
        "book 2 was not applied after the re-drive"
    );
    assert_eq!(
        cached_title(cache, 1).await.as_deref(),
        Some("fixed at last")
    );
    assert_eq!(
        sink.attempts(1).len(),
        4,
        "3 attempts, then 1 after the re-drive"
    );
    assert!(
        broker.wait_for_depth(DLQ, 1).await,
        "the poison should be back in the DLQ"
    );
    let poison = broker.take(DLQ).await?.expect("the poison");
    assert_eq!(poison.data, b"still poison");
    let headers = poison.properties.headers().as_ref();
    assert_eq!(
        headers::count(headers, X_RETRY_COUNT),
        Some(1),
        "the count started over"
    );
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}
