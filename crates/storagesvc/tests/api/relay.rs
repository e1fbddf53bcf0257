//! The outbox relay against real PostgreSQL and RabbitMQ: what arrives, in which order, and
//! that nothing is lost when the broker, the relay or the process goes away.

mod outages;
pub(crate) mod support;

use std::time::Duration;

use events::headers;
use storagesvc::relay::{OutboxRelay, RelayOutcome, RelaySettings, RelayStatus};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::support::{
    QueueReader, assert_all_arrived, assert_per_book_order, book_event, enqueue_each,
    interleaved_events, migrated_database, open_publisher, relay_settings, relay_until_idle,
    unsent_rows,
};

/// Generous bound for events to arrive; a healthy run takes milliseconds.
const ARRIVAL: Duration = Duration::from_secs(20);

/// A relay running in the background, stopped by its token.
struct RunningRelay {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    status: RelayStatus,
}

impl RunningRelay {
    fn spawn(pool: &sqlx::PgPool, config: RelaySettings) -> Self {
        let shutdown = CancellationToken::new();
        let relay = OutboxRelay::new(pool.clone(), config);
        let status = relay.status();
        let task = tokio::spawn(relay.run(shutdown.clone()));
        Self {
            shutdown,
            task,
            status,
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await??;
        Ok(())
    }
}

async fn fresh_vhost() -> anyhow::Result<String> {
    testkit::RabbitMq::shared().await?.fresh_vhost().await
}

#[tokio::test]
async fn events_reach_the_queue_with_body_routing_key_message_id_and_persistence()
-> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let (_connection, publisher) = open_publisher(&amqp_url).await?;
    let relay = OutboxRelay::new(pool.clone(), relay_settings(&amqp_url));
    let written = vec![book_event(1, 1), book_event(1, 2)];
    enqueue_each(&pool, &written).await?;

    assert_eq!(
        relay.relay_batch(&publisher).await?,
        RelayOutcome::Published(2)
    );
    assert_eq!(relay.relay_batch(&publisher).await?, RelayOutcome::Idle);

    let received = reader.take(2, ARRIVAL).await?;
    for (sent, got) in written.iter().zip(&received) {
        assert_eq!(&got.event, sent);
        assert_eq!(got.routing_key, sent.routing_key());
        assert_eq!(got.message_id, sent.event_id.map(|id| id.to_string()));
        assert_eq!(got.delivery_mode, Some(2), "events must be persistent");
    }
    assert_eq!(unsent_rows(&pool).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_rows_trace_context_is_published_as_the_traceparent_and_tracestate_headers()
-> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let (_connection, publisher) = open_publisher(&amqp_url).await?;
    let relay = OutboxRelay::new(pool.clone(), relay_settings(&amqp_url));
    let (traced, untraced) = (book_event(1, 1), book_event(2, 1));
    enqueue_each(&pool, &[traced.clone(), untraced]).await?;
    // What a write inside a traced request stores (the binary's tests cover that part).
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    sqlx::query(
        "UPDATE outbox SET traceparent = $1, tracestate = 'vendor=abc' WHERE event_id = $2",
    )
    .bind(traceparent)
    .bind(traced.event_id)
    .execute(&pool)
    .await?;

    relay_until_idle(&relay, &publisher).await?;

    let received = reader.take(2, ARRIVAL).await?;
    let header = |index: usize, name: &str| headers::text(received[index].headers.as_ref(), name);
    assert_eq!(received[0].event, traced);
    assert_eq!(
        header(0, headers::TRACEPARENT).as_deref(),
        Some(traceparent)
    );
    assert_eq!(
        header(0, headers::TRACESTATE).as_deref(),
        Some("vendor=abc")
    );
    assert_eq!(
        header(1, headers::TRACEPARENT),
        None,
        "no context, no header"
    );
    assert_eq!(header(1, headers::TRACESTATE), None);
    Ok(())
}

#[tokio::test]
async fn each_books_versions_arrive_in_order_across_batches() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let (_connection, publisher) = open_publisher(&amqp_url).await?;
    // Small batches and window so the 500 events cross many batch boundaries.
    let config = RelaySettings {
        batch_size: 37,
        publish_window: 8,
        ..relay_settings(&amqp_url)
    };
    let relay = OutboxRelay::new(pool.clone(), config);
    enqueue_each(&pool, &interleaved_events(5, 100)).await?;

    assert_eq!(relay_until_idle(&relay, &publisher).await?, 500);

    let received = reader.take(500, ARRIVAL).await?;
    assert_per_book_order(&received);
    assert_all_arrived(&received, 5, 100);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_relays_publish_every_event_once_in_per_book_order() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let config = RelaySettings {
        batch_size: 16,
        publish_window: 4,
        ..relay_settings(&amqp_url)
    };
    let relays: Vec<RunningRelay> = (0..3)
        .map(|_| RunningRelay::spawn(&pool, config.clone()))
        .collect();

    // Writes go on while the three relays compete for the rows.
    enqueue_each(&pool, &interleaved_events(4, 150)).await?;

    let received = reader.take(600, ARRIVAL).await?;
    let extra = reader.take_until_quiet(Duration::from_secs(1)).await?;
    for relay in relays {
        relay.stop().await?;
    }
    assert!(
        extra.is_empty(),
        "{} duplicates without any failure",
        extra.len()
    );
    assert_per_book_order(&received);
    assert_all_arrived(&received, 4, 150);
    assert_eq!(unsent_rows(&pool).await?, 0);
    Ok(())
}

#[tokio::test]
async fn rows_written_while_no_relay_runs_go_out_when_one_starts() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    // As after a crash: committed events, nobody to publish them, no NOTIFY to come.
    enqueue_each(&pool, &interleaved_events(3, 10)).await?;
    let config = RelaySettings {
        poll_interval: Duration::from_secs(3600),
        ..relay_settings(&amqp_url)
    };

    let relay = RunningRelay::spawn(&pool, config);

    let received = reader.take(30, ARRIVAL).await?;
    relay.stop().await?;
    assert_all_arrived(&received, 3, 10);
    assert_per_book_order(&received);
    Ok(())
}

#[tokio::test]
async fn a_commit_wakes_an_idle_relay_without_waiting_for_the_poll() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let config = RelaySettings {
        poll_interval: Duration::from_secs(3600),
        ..relay_settings(&amqp_url)
    };
    let relay = RunningRelay::spawn(&pool, config);
    // Let it connect, drain the empty outbox and go to sleep on the hour-long poll.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let event = book_event(1, 1);
    enqueue_each(&pool, std::slice::from_ref(&event)).await?;

    let received = reader.take(1, Duration::from_secs(10)).await;
    relay.stop().await?;
    assert_eq!(
        received?[0].event.book_id, 1,
        "only NOTIFY can have woken the relay"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_loses_nothing() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    enqueue_each(&pool, &interleaved_events(10, 300)).await?;
    let config = RelaySettings {
        batch_size: 500,
        publish_window: 4,
        ..relay_settings(&amqp_url)
    };

    // Kill the first relay as soon as it has published something, mid-drain.
    let first = RunningRelay::spawn(&pool, config.clone());
    let mut received = reader.take(1, ARRIVAL).await?;
    first.task.abort();
    let _ = first.task.await;
    let left = unsent_rows(&pool).await?;
    assert!(
        left > 0,
        "the relay finished before it could be killed; make the test harder"
    );

    let second = RunningRelay::spawn(&pool, config);
    received.extend(reader.take_until_quiet(Duration::from_secs(3)).await?);
    second.stop().await?;

    assert_eq!(unsent_rows(&pool).await?, 0);
    assert_all_arrived(&received, 10, 300);
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_the_relay_promptly_and_reports_it_disconnected() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let relay = OutboxRelay::new(pool.clone(), relay_settings(&amqp_url));
    let status = relay.status();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_until(|| status.broker_connected(), "the relay to connect").await?;

    shutdown.cancel();

    tokio::time::timeout(Duration::from_secs(5), task).await??;
    assert!(!status.broker_connected());
    Ok(())
}

/// Polls `condition` every 50 ms for up to 20 s.
async fn wait_until(condition: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `mandatory` is satisfied by any bound queue: with booksvc's durable queue gone and only a
/// replica's invalidation queue bound to `books`, the events must stay in the outbox, and go
/// out once the durable queue is back.
#[tokio::test]
async fn events_stay_in_the_outbox_while_only_an_invalidation_queue_is_bound() -> anyhow::Result<()>
{
    use events::lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    use events::lapin::types::{FieldTable, ShortString};
    use events::{BINDING_KEY, EXCHANGE, QUEUE};

    let pool = migrated_database().await?;
    let amqp_url = fresh_vhost().await?;
    let (connection, publisher) = open_publisher(&amqp_url).await?;
    // An operator deleted the durable queue; a booksvc replica's queue is still bound.
    let channel = connection.create_channel().await?;
    channel
        .queue_delete(ShortString::from(QUEUE), QueueDeleteOptions::default())
        .await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let replica = channel
        .queue_declare(ShortString::from(""), exclusive, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            replica.name().clone(),
            ShortString::from(EXCHANGE),
            ShortString::from(BINDING_KEY),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let relay = OutboxRelay::new(pool.clone(), relay_settings(&amqp_url));
    let event = book_event(1, 1);
    enqueue_each(&pool, std::slice::from_ref(&event)).await?;

    let outcome = relay.relay_batch(&publisher).await;
    assert!(
        outcome.is_err(),
        "the relay called an event published that only an invalidation queue got: {outcome:?}"
    );
    assert_eq!(
        unsent_rows(&pool).await?,
        1,
        "the event must stay in the outbox"
    );

    // The durable queue is back (booksvc, or a relay allowed to, redeclares it): it goes out.
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let (_again, publisher) = open_publisher(&amqp_url).await?;
    assert_eq!(
        relay.relay_batch(&publisher).await?,
        RelayOutcome::Published(1)
    );
    let received = reader.take(1, ARRIVAL).await?;
    assert_eq!(received[0].event, event);
    assert_eq!(unsent_rows(&pool).await?, 0);
    Ok(())
}
