//! What the outbox and relay tests share: a migrated database, events to write, a relay
//! configuration for tests, a publisher to drive `relay_batch` by hand, and a reader that
//! takes events off the `booksvc.book-changed` queue.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use events::{BookChanged, BookData, ConfirmPublisher, QUEUE, Topology};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use sqlx::PgPool;
use storagesvc::outbox;
use storagesvc::relay::{OutboxRelay, RelayOutcome, RelaySettings};

/// A fresh database on the shared test server, with storagesvc's migrations applied.
pub(crate) async fn migrated_database() -> anyhow::Result<PgPool> {
    testkit::init_test_logging();
    let url = testkit::Postgres::shared().await?.fresh_database().await?;
    database_at(&url).await
}

/// A migrated pool on `url`, with a short acquire timeout like the service's.
pub(crate) async fn database_at(url: &str) -> anyhow::Result<PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(url)
        .await?;
    storagesvc::database::migrate(&pool).await?;
    Ok(pool)
}

/// A relay configuration for tests: quick reconnects, a short safety-net poll.
pub(crate) fn relay_settings(amqp_url: &str) -> RelaySettings {
    RelaySettings {
        amqp_url: amqp_url.parse().expect("a test broker URL parses"),
        batch_size: 256,
        publish_window: 64,
        poll_interval: Duration::from_millis(500),
        confirm_timeout: Duration::from_secs(5),
        reconnect_max: Duration::from_secs(1),
        retention: Duration::from_secs(60),
        topology: Topology::default(),
        db_timeout: Duration::from_secs(6),
    }
}

/// The `version`th event of book `book_id`: created for version 1, updated afterwards.
pub(crate) fn book_event(book_id: i64, version: i64) -> BookChanged {
    let book = BookData {
        id: book_id,
        title: format!("Book {book_id}"),
        author: "Jane Doe".to_owned(),
        desc: format!("version {version}"),
    };
    if version == 1 {
        BookChanged::created(book, version, Utc::now())
    } else {
        BookChanged::updated(book, version, Utc::now())
    }
}

/// Versions 1..=`versions` of books 1..=`books`, interleaved: b1v1, b2v1, .., b1v2, ...
pub(crate) fn interleaved_events(books: i64, versions: i64) -> Vec<BookChanged> {
    (1..=versions)
        .flat_map(|version| (1..=books).map(move |book| book_event(book, version)))
        .collect()
}

/// Commits each event in its own transaction, as the write handlers do.
pub(crate) async fn enqueue_each(pool: &PgPool, events: &[BookChanged]) -> anyhow::Result<()> {
    for event in events {
        let mut tx = pool.begin().await?;
        outbox::enqueue(&mut tx, event).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// A broker connection with the topology declared and a confirm-mode publisher, for tests
/// that drive `relay_batch` themselves.
pub(crate) async fn open_publisher(
    amqp_url: &str,
) -> anyhow::Result<(Connection, ConfirmPublisher)> {
    let connection = events::connect(amqp_url, "relay-test", Duration::from_secs(10)).await?;
    let channel = connection.create_channel().await?;
    Topology::default().declare(&channel).await?;
    let publisher = ConfirmPublisher::open(&connection).await?;
    Ok((connection, publisher))
}

/// Calls `relay_batch` until `Idle`; returns how many events were published.
pub(crate) async fn relay_until_idle(
    relay: &OutboxRelay,
    publisher: &ConfirmPublisher,
) -> anyhow::Result<usize> {
    let mut published = 0;
    loop {
        match relay.relay_batch(publisher).await? {
            RelayOutcome::Published(n) => published += n,
            RelayOutcome::Idle => return Ok(published),
        }
    }
}

/// Rows not yet confirmed by the broker.
pub(crate) async fn unsent_rows(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(outbox::stats(pool).await?.backlog)
}

/// One message taken off the queue.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) event: BookChanged,
    pub(crate) routing_key: String,
    pub(crate) message_id: Option<String>,
    pub(crate) delivery_mode: Option<u8>,
    /// The application headers (the write's trace context, when it had one).
    pub(crate) headers: Option<FieldTable>,
}

/// Reads book-changed events from the durable queue booksvc consumes.
pub(crate) struct QueueReader {
    _connection: Connection,
    consumer: Consumer,
}

impl QueueReader {
    /// Connects, declares the topology (so the queue exists before anything is published)
    /// and starts consuming with automatic acks.
    pub(crate) async fn connect(amqp_url: &str) -> anyhow::Result<Self> {
        let connection =
            events::connect(amqp_url, "relay-test-reader", Duration::from_secs(10)).await?;
        let channel = connection.create_channel().await?;
        Topology::default().declare(&channel).await?;
        channel.basic_qos(1_000, BasicQosOptions::default()).await?;
        let options = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let consumer = channel
            .basic_consume(
                QUEUE.into(),
                "relay-test".into(),
                options,
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            _connection: connection,
            consumer,
        })
    }

    /// Takes exactly `count` messages, failing if they do not all arrive within `within`.
    pub(crate) async fn take(
        &mut self,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        let mut received = Vec::with_capacity(count);
        let deadline = tokio::time::Instant::now() + within;
        while received.len() < count {
            let next = tokio::time::timeout_at(deadline, self.consumer.next()).await;
            let Ok(Some(delivery)) = next else {
                bail!(
                    "only {} of {count} events arrived within {within:?}",
                    received.len()
                );
            };
            let delivery = delivery.context("consuming")?;
            testkit::event_schema::validate(&delivery.data)?;
            let event = BookChanged::parse(&delivery.data).context("parsing a published body")?;
            received.push(Received {
                event,
                routing_key: delivery.routing_key.to_string(),
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string()),
                delivery_mode: *delivery.properties.delivery_mode(),
                headers: delivery.properties.headers().clone(),
            });
        }
        Ok(received)
    }

    /// Takes whatever arrives until the queue stays quiet for `quiet`.
    pub(crate) async fn take_until_quiet(
        &mut self,
        quiet: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        let mut received = Vec::new();
        loop {
            match self.take(1, quiet).await {
                Ok(mut one) => received.append(&mut one),
                Err(_) => return Ok(received),
            }
        }
    }
}

/// Asserts every book's versions arrive strictly increasing. Only for runs without
/// failures: a republish after a lost confirm may repeat earlier versions.
pub(crate) fn assert_per_book_order(received: &[Received]) {
    let mut last = std::collections::HashMap::new();
    for message in received {
        let book = message.event.book_id;
        let version = message.event.version;
        if let Some(&previous) = last.get(&book) {
            assert!(
                version > previous,
                "book {book}: version {version} arrived after version {previous}"
            );
        }
        last.insert(book, version);
    }
}

/// Asserts every (book, version) in 1..=books × 1..=versions arrived at least once.
pub(crate) fn assert_all_arrived(received: &[Received], books: i64, versions: i64) {
    let seen: std::collections::HashSet<(i64, i64)> = received
        .iter()
        .map(|m| (m.event.book_id, m.event.version))
        .collect();
    for book in 1..=books {
        for version in 1..=versions {
            assert!(
                seen.contains(&(book, version)),
                "book {book} version {version} was lost"
            );
        }
    }
}
