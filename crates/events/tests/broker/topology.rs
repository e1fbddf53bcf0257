//! The declared topology: idempotent, with the designed arguments, and routing retries
//! and dead letters where DESIGN.md says.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use events::{BookChanged, DLQ, DLQ_EXCHANGE, EXCHANGE, QUEUE, RETRY_EXCHANGE, Topology};
use lapin::options::{
    BasicNackOptions, BasicRejectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ExchangeKind};

use crate::{CONFIRM_TIMEOUT, CONNECT_TIMEOUT, Vhost, event, header};

#[tokio::test]
async fn declare_is_idempotent_even_from_two_connections_at_once() -> Result<()> {
    let vhost = Vhost::new().await?;
    let topology = Topology::default();

    // A second declare on the same channel: both services restart, nothing changes.
    topology.declare(&vhost.channel).await?;
    // Two services starting at the same moment, each on its own connection.
    let (a, b) = tokio::join!(
        declare_on_new_connection(&vhost.url),
        declare_on_new_connection(&vhost.url)
    );
    a.context("first concurrent declare")?;
    b.context("second concurrent declare")?;

    for exchange in [EXCHANGE, DLQ_EXCHANGE, RETRY_EXCHANGE] {
        let options = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let declared = vhost
            .channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Direct,
                options,
                FieldTable::default(),
            )
            .await;
        declared.with_context(|| format!("exchange {exchange} must exist"))?;
    }
    let retry_queues = topology
        .retry_delays
        .iter()
        .map(|d| Topology::retry_queue_name(*d));
    for queue in [QUEUE.to_owned(), DLQ.to_owned()]
        .into_iter()
        .chain(retry_queues)
    {
        vhost
            .count(&queue)
            .await
            .with_context(|| format!("queue {queue} must exist"))?;
    }
    Ok(())
}

async fn declare_on_new_connection(url: &str) -> Result<()> {
    let connection = events::connect(url, "events-tests-concurrent", CONNECT_TIMEOUT).await?;
    let channel = connection.create_channel().await?;
    Topology::default().declare(&channel).await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}

/// RabbitMQ refuses a redeclare whose arguments differ from the queue's (406), so a
/// redeclare without one of our arguments failing proves the queue carries that argument.
#[tokio::test]
async fn queues_carry_the_designed_arguments() -> Result<()> {
    let vhost = Vhost::new().await?;
    let quorum = |dlx: &str| {
        vec![
            ("x-queue-type", AMQPValue::LongString("quorum".into())),
            ("x-dead-letter-exchange", AMQPValue::LongString(dlx.into())),
            (
                "x-dead-letter-strategy",
                AMQPValue::LongString("at-least-once".into()),
            ),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]
    };
    let with = |mut args: Vec<(&'static str, AMQPValue)>, more: Vec<(&'static str, AMQPValue)>| {
        args.extend(more);
        args
    };
    let cases = [
        (
            QUEUE,
            with(
                quorum(DLQ_EXCHANGE),
                vec![(
                    "x-delivery-limit",
                    AMQPValue::LongInt(events::DELIVERY_LIMIT),
                )],
            ),
        ),
        (
            DLQ,
            with(
                quorum(DLQ_EXCHANGE),
                vec![(
                    "x-delivery-limit",
                    AMQPValue::LongInt(events::DLQ_DELIVERY_LIMIT),
                )],
            ),
        ),
        (
            "booksvc.book-changed.retry.quorum.10s",
            with(
                quorum(""),
                vec![
                    ("x-message-ttl", AMQPValue::LongInt(10_000)),
                    (
                        "x-dead-letter-routing-key",
                        AMQPValue::LongString(QUEUE.into()),
                    ),
                ],
            ),
        ),
    ];
    for (queue, args) in cases {
        let all: FieldTable = args
            .iter()
            .map(|(k, v)| (ShortString::from(*k), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into();
        redeclare(&vhost.connection, queue, all)
            .await
            .with_context(|| format!("{queue}: redeclare with its own arguments"))?;
        for (missing, _) in args.iter().filter(|(k, _)| *k != "x-queue-type") {
            let fewer: FieldTable = args
                .iter()
                .filter(|(k, _)| k != missing)
                .map(|(k, v)| (ShortString::from(*k), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into();
            let result = redeclare(&vhost.connection, queue, fewer).await;
            ensure!(
                result.is_err(),
                "{queue}: redeclare without {missing} must fail, so the queue has it"
            );
        }
    }
    Ok(())
}

async fn redeclare(connection: &Connection, queue: &str, args: FieldTable) -> Result<()> {
    // A failed declare closes its channel: use a fresh one each time.
    let channel = connection.create_channel().await?;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(queue.into(), options, args).await?;
    Ok(())
}

#[tokio::test]
async fn message_expired_from_a_retry_queue_returns_to_the_main_queue() -> Result<()> {
    let delay = Duration::from_millis(200);
    let vhost = Vhost::with(&Topology {
        retry_delays: vec![delay],
    })
    .await?;
    let mut message = event(5);
    message.routing_key = Topology::retry_routing_key(delay);

    let sent = Instant::now();
    let report = vhost
        .publisher()
        .await?
        .publish_in_order(RETRY_EXCHANGE, &[message], 1, CONFIRM_TIMEOUT)
        .await;
    ensure!(report.confirmed == 1, "{report:?}");

    let delivery = vhost.get(QUEUE, Duration::from_secs(5)).await?;
    let waited = sent.elapsed();
    ensure!(
        waited >= Duration::from_millis(150),
        "came back after {waited:?}, before its delay"
    );
    assert_eq!(BookChanged::parse(&delivery.data)?.book_id, 5);
    ensure!(
        header(&delivery, "x-death").is_some(),
        "dead-lettered messages carry x-death"
    );
    Ok(())
}

#[tokio::test]
async fn rejected_message_lands_in_the_dlq_and_stays_there_when_rejected_again() -> Result<()> {
    let vhost = Vhost::new().await?;
    let report = vhost
        .publisher()
        .await?
        .publish_in_order(EXCHANGE, &[event(6)], 1, CONFIRM_TIMEOUT)
        .await;
    ensure!(report.confirmed == 1, "{report:?}");

    let delivery = vhost.get(QUEUE, Duration::from_secs(5)).await?;
    delivery
        .acker
        .nack(BasicNackOptions {
            requeue: false,
            ..BasicNackOptions::default()
        })
        .await?;

    let dead = vhost.get(DLQ, Duration::from_secs(5)).await?;
    assert_eq!(BookChanged::parse(&dead.data)?.book_id, 6);
    assert_eq!(
        dead.routing_key.as_str(),
        "book.updated",
        "dead-lettering keeps the routing key"
    );
    // An operator rejecting a dead letter must not lose it: the DLQ's DLX is itself.
    dead.acker
        .reject(BasicRejectOptions { requeue: false })
        .await?;
    let again = vhost.get(DLQ, Duration::from_secs(5)).await?;
    assert_eq!(BookChanged::parse(&again.data)?.book_id, 6);
    Ok(())
}

#[tokio::test]
async fn message_redelivered_past_the_delivery_limit_goes_to_the_dlq() -> Result<()> {
    let vhost = Vhost::new().await?;
    let report = vhost
        .publisher()
        .await?
        .publish_in_order(EXCHANGE, &[event(7)], 1, CONFIRM_TIMEOUT)
        .await;
    ensure!(report.confirmed == 1, "{report:?}");

    // A consumer that keeps failing before it can ack: every requeue is a delivery.
    let limit = u32::try_from(events::DELIVERY_LIMIT)?;
    for _ in 0..=limit {
        let delivery = vhost.get(QUEUE, Duration::from_secs(5)).await?;
        delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await?;
    }

    let dead = vhost.get(DLQ, Duration::from_secs(5)).await?;
    assert_eq!(BookChanged::parse(&dead.data)?.book_id, 7);
    assert_eq!(vhost.count(QUEUE).await?, 0);
    Ok(())
}

/// What a version before quorum DLQs declared: classic retry queues named
/// `….retry.<delay>` and a classic DLQ, and a main queue without at-least-once
/// dead-lettering. Declaring today's topology over it fails on the DLQ or the main queue
/// with PRECONDITION_FAILED (which the services log with a pointer to the runbook), and
/// every message stays where it was.
#[tokio::test]
async fn an_earlier_versions_queues_refuse_the_new_topology_and_keep_their_messages() -> Result<()>
{
    testkit::init_test_logging();
    let url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
    let connection = events::connect(&url, "events-tests-upgrade", CONNECT_TIMEOUT).await?;
    let channel = connection.create_channel().await?;
    let table = |args: &[(&str, AMQPValue)]| -> FieldTable {
        args.iter()
            .map(|(k, v)| (ShortString::from(*k), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into()
    };
    let string = |s: &str| AMQPValue::LongString(s.into());
    let old_retry = "booksvc.book-changed.retry.1s";
    let old_queues = [
        (
            QUEUE,
            table(&[
                ("x-queue-type", string("quorum")),
                ("x-dead-letter-exchange", string(DLQ_EXCHANGE)),
                ("x-delivery-limit", AMQPValue::LongInt(20)),
            ]),
        ),
        (
            DLQ,
            table(&[
                ("x-queue-type", string("classic")),
                ("x-dead-letter-exchange", string(DLQ_EXCHANGE)),
            ]),
        ),
        (
            old_retry,
            table(&[
                ("x-queue-type", string("classic")),
                ("x-message-ttl", AMQPValue::LongInt(1000)),
                ("x-dead-letter-exchange", string("")),
                ("x-dead-letter-routing-key", string(QUEUE)),
            ]),
        ),
    ];
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for (queue, args) in old_queues {
        channel.queue_declare(queue.into(), durable, args).await?;
    }
    // One dead letter, published persistent as booksvc did.
    let publisher = events::ConfirmPublisher::open(&connection).await?;
    let mut dead = event(8);
    dead.routing_key = DLQ.to_owned();
    let report = publisher
        .publish_in_order("", &[dead], 1, CONFIRM_TIMEOUT)
        .await;
    ensure!(report.confirmed == 1, "{report:?}");

    let declared = Topology::default().declare(&channel).await;
    let Err(error) = declared else {
        anyhow::bail!("declaring over an earlier version's queues must fail");
    };
    ensure!(
        events::is_precondition_failed(&error),
        "a PRECONDITION_FAILED, not {error:?}"
    );

    let check = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let dlq = check
        .queue_declare(DLQ.into(), passive, FieldTable::default())
        .await?;
    assert_eq!(dlq.message_count(), 1, "the dead letter is still there");
    Ok(())
}
