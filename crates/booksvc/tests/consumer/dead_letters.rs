//! Failures: poison to the DLQ at once, transient failures retried after growing delays,
//! exhausted retries to the DLQ, each dead letter saying why, how often and from where.

use std::time::Duration;

use events::headers::{self, X_ERROR, X_ORIGINAL_ROUTING_KEY, X_RETRY_COUNT};
use events::{DLQ, QUEUE, Topology};

use crate::helpers::{
    Broker, FlakySink, RunningConsumer, cached_at, cached_title, consumer_settings, created,
    shared_cache, updated,
};

#[tokio::test]
async fn poison_goes_to_the_dlq_with_its_reason_while_later_events_still_flow() -> anyhow::Result<()>
{
    let broker = Broker::fresh().await?;
    let cache = shared_cache().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    // (routing key, body, what x-error must mention)
    let poison = [
        ("book.created", "this is not JSON", "not JSON"),
        (
            "book.updated",
            r#"{"type": "book.updated", "book_id": 1}"#,
            "missing field `version`",
        ),
        (
            "book.created",
            r#"{"type": "book.exploded", "book_id": 1, "version": 1}"#,
            "unknown event type",
        ),
    ];

    for (routing_key, body, _) in poison {
        broker.publish_by_hand(routing_key, body).await?;
    }
    broker.publish(&[created(1, "after the poison")]).await?;

    assert!(
        cached_at(&cache, 1, 1).await,
        "a good event after poison was not applied"
    );
    assert!(
        broker.wait_for_depth(DLQ, 3).await,
        "poison did not all reach the DLQ"
    );
    for (routing_key, body, reason) in poison {
        let dead = broker.take(DLQ).await?.expect("a dead letter");
        let headers = dead.properties.headers().as_ref();
        let error = headers::text(headers, X_ERROR).unwrap_or_default();
        assert_eq!(dead.data, body.as_bytes(), "the body is kept as it was");
        assert!(
            error.starts_with("poison: ") && error.contains(reason),
            "{body}: {error}"
        );
        assert_eq!(headers::count(headers, X_RETRY_COUNT), Some(1), "{body}");
        assert_eq!(
            headers::text(headers, X_ORIGINAL_ROUTING_KEY).as_deref(),
            Some(routing_key),
            "{body}"
        );
        assert_eq!(
            *dead.properties.delivery_mode(),
            Some(2),
            "{body}: persistent"
        );
    }
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn a_transient_failure_is_retried_after_a_delay_and_then_succeeds() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let sink = FlakySink::new(shared_cache().await?);
    sink.fail(1, 2);
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), sink.clone());

    broker.publish(&[updated(1, 2, "third time lucky")]).await?;

    // Attempt 1 fails → 200 ms queue; attempt 2 fails → 500 ms queue; attempt 3 applies.
    let cache = sink.cache().clone();
    assert!(cached_at(&cache, 1, 2).await, "the event was never applied");
    let attempts = sink.attempts(1);
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let first_pause = attempts[1] - attempts[0];
    let second_pause = attempts[2] - attempts[1];
    assert!(first_pause >= Duration::from_millis(200), "{first_pause:?}");
    assert!(
        second_pause >= Duration::from_millis(500),
        "{second_pause:?}"
    );
    assert_eq!(broker.depth(DLQ).await?, 0);
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn exhausted_retries_land_in_the_dlq_with_why_how_often_and_from_where() -> anyhow::Result<()>
{
    let broker = Broker::fresh().await?;
    let sink = FlakySink::new(shared_cache().await?);
    sink.fail(1, u32::MAX);
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), sink.clone());
    let event = updated(1, 2, "never");

    broker
        .publish(&[event.clone(), created(2, "unaffected")])
        .await?;

    assert!(
        broker.wait_for_depth(DLQ, 1).await,
        "nothing reached the DLQ"
    );
    let dead = broker.take(DLQ).await?.expect("a dead letter");
    let headers = dead.properties.headers().as_ref();
    assert_eq!(
        headers::count(headers, X_RETRY_COUNT),
        Some(3),
        "max attempts"
    );
    assert_eq!(
        headers::text(headers, X_ERROR).as_deref(),
        Some("exhausted: injected failure")
    );
    assert_eq!(
        headers::text(headers, X_ORIGINAL_ROUTING_KEY).as_deref(),
        Some("book.updated")
    );
    assert_eq!(dead.data, event.to_json());
    assert_eq!(*dead.properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(sink.attempts(1).len(), 3);
    // Nothing is left behind in the retry queues or the main queue.
    for delay in consumer_settings(&broker.url).retry_delays {
        assert_eq!(broker.depth(&Topology::retry_queue_name(delay)).await?, 0);
    }
    assert_eq!(broker.depth(QUEUE).await?, 0);
    assert_eq!(
        cached_title(sink.cache(), 2).await.as_deref(),
        Some("unaffected")
    );
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}
