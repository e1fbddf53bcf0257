//! The confirm publisher: what it counts as confirmed, in order, and how it fails.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use events::{BookChanged, ConfirmPublisher, EXCHANGE, Outgoing, PublishError, QUEUE, Topology};
use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::{FieldTable, ShortString};

use crate::{CONFIRM_TIMEOUT, CONNECT_TIMEOUT, Vhost, book, event};

#[tokio::test]
async fn published_event_arrives_with_body_key_id_and_properties() -> Result<()> {
    let vhost = Vhost::new().await?;
    let event = BookChanged::created(book(3), 1, Utc::now());

    let report = vhost
        .publisher()
        .await?
        .publish_in_order(EXCHANGE, &[Outgoing::event(&event)], 1, CONFIRM_TIMEOUT)
        .await;

    ensure!(
        report.confirmed == 1 && report.error.is_none(),
        "{report:?}"
    );
    let delivery = vhost.get(QUEUE, Duration::from_secs(5)).await?;
    assert_eq!(delivery.routing_key.as_str(), "book.created");
    assert_eq!(BookChanged::parse(&delivery.data)?, event);
    let event_id = event
        .event_id
        .context("constructors set an event id")?
        .to_string();
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str),
        Some(event_id.as_str())
    );
    assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        delivery
            .properties
            .content_type()
            .as_ref()
            .map(ShortString::as_str),
        Some("application/json")
    );
    Ok(())
}

#[tokio::test]
async fn windowed_publish_confirms_5000_messages_that_arrive_in_order() -> Result<()> {
    let vhost = Vhost::new().await?;
    let messages: Vec<Outgoing> = (1..=5000).map(event).collect();

    let started = Instant::now();
    let report = vhost
        .publisher()
        .await?
        .publish_in_order(EXCHANGE, &messages, 64, CONFIRM_TIMEOUT)
        .await;
    let elapsed = started.elapsed();

    ensure!(
        report.confirmed == 5000 && report.error.is_none(),
        "{report:?}"
    );
    eprintln!(
        "5000 confirmed in {elapsed:?} ({:.0} msgs/s)",
        5000.0 / elapsed.as_secs_f64()
    );
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = vhost
        .channel
        .basic_consume(
            QUEUE.into(),
            "order-check".into(),
            options,
            FieldTable::default(),
        )
        .await?;
    for expected in 1..=5000 {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
        let delivery = next
            .context("timed out waiting for a delivery")?
            .context("consumer ended")??;
        let book_id = BookChanged::parse(&delivery.data)?.book_id;
        ensure!(
            book_id == expected,
            "message {expected} arrived as book {book_id}: out of order"
        );
    }
    Ok(())
}

#[tokio::test]
async fn unroutable_message_is_a_failure_and_stops_the_batch() -> Result<()> {
    let vhost = Vhost::new().await?;
    let mut unroutable = event(2);
    unroutable.routing_key = "nobody.listens".to_owned(); // no binding matches: returned
    let messages = [event(1), unroutable, event(3)];

    // Window 1: each confirm is awaited before the next publish, so "stops" is observable.
    let report = vhost
        .publisher()
        .await?
        .publish_in_order(EXCHANGE, &messages, 1, CONFIRM_TIMEOUT)
        .await;

    assert_eq!(
        report.confirmed, 1,
        "only the leading routable message counts"
    );
    match report.error {
        Some(PublishError::Returned {
            reply_code: 312, ..
        }) => {}
        other => bail!("expected a NO_ROUTE return, got {other:?}"),
    }
    assert_eq!(
        vhost.count(QUEUE).await?,
        1,
        "the message after the failure was not published"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_exchange_fails_fast_and_closes_the_channel() -> Result<()> {
    let vhost = Vhost::new().await?;
    let publisher = vhost.publisher().await?;

    let started = Instant::now();
    let report = publisher
        .publish_in_order(
            "no-such-exchange",
            &[event(1), event(2)],
            8,
            CONFIRM_TIMEOUT,
        )
        .await;

    assert_eq!(report.confirmed, 0);
    ensure!(
        matches!(report.error, Some(PublishError::Amqp(_))),
        "{:?}",
        report.error
    );
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}: waited for the timeout",
        started.elapsed()
    );
    ensure!(!publisher.is_open(), "the broker closed the channel (404)");
    Ok(())
}

#[tokio::test]
async fn broker_outage_mid_batch_fails_within_the_timeout() -> Result<()> {
    testkit::init_test_logging();
    let broker = testkit::RabbitMq::start().await?;
    let connection =
        events::connect(&broker.amqp_url(), "events-tests-outage", CONNECT_TIMEOUT).await?;
    Topology::default()
        .declare(&connection.create_channel().await?)
        .await?;
    let publisher = ConfirmPublisher::open(&connection).await?;
    let messages: Vec<Outgoing> = (1..=100_000).map(event).collect();
    let confirm_timeout = Duration::from_secs(3);

    let publishing = tokio::spawn(async move {
        let started = Instant::now();
        let report = publisher
            .publish_in_order(EXCHANGE, &messages, 64, confirm_timeout)
            .await;
        (report, started.elapsed(), publisher.is_open())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    broker.stop_app().await?;
    let (report, _, open) =
        tokio::time::timeout(confirm_timeout + Duration::from_secs(5), publishing)
            .await
            .context("publish_in_order hung after the broker stopped")??;
    let failed_after = stopped_at.elapsed();

    eprintln!(
        "outage: {} confirmed, failed {failed_after:?} after stop_app: {:?}",
        report.confirmed, report.error
    );
    ensure!(
        report.error.is_some(),
        "a batch cut by an outage must report an error"
    );
    ensure!(report.confirmed < 100_000, "{report:?}");
    ensure!(!open, "the channel is reported closed after the outage");
    Ok(())
}
