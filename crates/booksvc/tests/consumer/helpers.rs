//! The harness: a consumer on a fresh vhost writing into a real Redis, a broker client to
//! publish and inspect queues, a fault-injecting sink, and storagesvc for end-to-end tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use booksvc::book::CachedBook;
use booksvc::cache::{BookCache, CacheSettings, WriteOutcome};
use booksvc::consumer::{
    Consumer, ConsumerSettings, ConsumerState, ConsumerStatus, EventSink, SinkError,
};
use chrono::Utc;
use events::lapin::message::Delivery;
use events::lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use events::lapin::types::{FieldTable, ShortString};
use events::lapin::{BasicProperties, Channel, Connection};
use events::{BookChanged, BookData, ConfirmPublisher, EXCHANGE, Outgoing};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
pub(crate) const SOON: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumer settings for tests: short retry delays (200 ms, 500 ms), 3 attempts, and quick
/// reconnects, watchdog and pause polling so outage tests run in seconds.
pub(crate) fn consumer_settings(amqp_url: &str) -> ConsumerSettings {
    ConsumerSettings {
        connection_name: "booksvc-consumer-test".to_owned(),
        retry_delays: vec![Duration::from_millis(200), Duration::from_millis(500)],
        max_attempts: 3,
        reconnect_max: Duration::from_secs(1),
        watchdog_interval: Duration::from_secs(1),
        pause_poll: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(2),
        ..ConsumerSettings::new(amqp_url.parse().expect("a test broker URL parses"))
    }
}

/// A consumer running in the background until stopped (or dropped).
pub(crate) struct RunningConsumer {
    pub(crate) status: ConsumerStatus,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningConsumer {
    pub(crate) fn spawn<S: EventSink>(settings: ConsumerSettings, sink: S) -> RunningConsumer {
        let consumer = Consumer::new(settings, sink);
        let status = consumer.status();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        RunningConsumer {
            status,
            shutdown,
            task: Some(task),
        }
    }

    /// Waits until the consumer reports `state`.
    pub(crate) async fn reaches(&self, state: ConsumerState, within: Duration) -> bool {
        eventually(within, || async { self.status.state() == state }).await
    }

    /// Cancels the consumer and waits until `run` has returned.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(SOON, task)
                .await
                .context("the consumer did not stop in time")??;
        }
        Ok(())
    }
}

impl Drop for RunningConsumer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A test's own connection to the vhost: publishes like a producer and inspects queues.
pub(crate) struct Broker {
    pub(crate) url: String,
    connection: Connection,
    channel: Channel,
    publisher: ConfirmPublisher,
}

impl Broker {
    /// A fresh vhost on the shared broker, with the test topology declared.
    pub(crate) async fn fresh() -> anyhow::Result<Broker> {
        testkit::init_test_logging();
        let url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
        Broker::connect(&url).await
    }

    pub(crate) async fn connect(url: &str) -> anyhow::Result<Broker> {
        let connection = events::connect(url, "booksvc-consumer-tests", CONNECT_TIMEOUT).await?;
        let channel = connection.create_channel().await?;
        consumer_settings(url).topology().declare(&channel).await?;
        let publisher = ConfirmPublisher::open(&connection).await?;
        Ok(Broker {
            url: url.to_owned(),
            connection,
            channel,
            publisher,
        })
    }

    /// Publishes events to `books` as storagesvc's relay does (persistent, confirmed).
    pub(crate) async fn publish(&self, events: &[BookChanged]) -> anyhow::Result<()> {
        let messages: Vec<_> = events.iter().map(Outgoing::event).collect();
        self.publish_messages(&messages).await
    }

    /// Publishes events to another exchange (e.g. the DLQ's, as if they had failed).
    pub(crate) async fn publish_to(
        &self,
        exchange: &str,
        events: &[BookChanged],
    ) -> anyhow::Result<()> {
        let messages: Vec<_> = events.iter().map(Outgoing::event).collect();
        let report = self
            .publisher
            .publish_in_order(exchange, &messages, 16, CONNECT_TIMEOUT)
            .await;
        match report.error {
            None => Ok(()),
            Some(error) => Err(error.into()),
        }
    }

    pub(crate) async fn publish_messages(&self, messages: &[Outgoing]) -> anyhow::Result<()> {
        let report = self
            .publisher
            .publish_in_order(EXCHANGE, messages, 16, CONNECT_TIMEOUT)
            .await;
        match report.error {
            None => Ok(()),
            Some(error) => Err(error.into()),
        }
    }

    /// Publishes `body` to `books` the way the management UI's form does: no properties at
    /// all (no content type, no message id, not persistent), no confirm.
    pub(crate) async fn publish_by_hand(
        &self,
        routing_key: &str,
        body: &str,
    ) -> anyhow::Result<()> {
        self.channel
            .basic_publish(
                ShortString::from(EXCHANGE),
                ShortString::from(routing_key),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        Ok(())
    }

    /// Messages ready in `queue`.
    pub(crate) async fn depth(&self, queue: &str) -> anyhow::Result<u32> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = self
            .channel
            .queue_declare(ShortString::from(queue), passive, FieldTable::default())
            .await?;
        Ok(queue.message_count())
    }

    /// Deletes `queue` (as an operator might, from the management UI).
    pub(crate) async fn delete_queue(
        &self,
        queue: &str,
        options: QueueDeleteOptions,
    ) -> anyhow::Result<()> {
        self.channel
            .queue_delete(ShortString::from(queue), options)
            .await?;
        Ok(())
    }

    /// Takes (and acks) the next message of `queue`, if any.
    pub(crate) async fn take(&self, queue: &str) -> anyhow::Result<Option<Delivery>> {
        let message = self
            .channel
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
            .await?;
        Ok(message.map(|message| message.delivery))
    }

    /// Waits until `queue` holds `count` messages.
    pub(crate) async fn wait_for_depth(&self, queue: &str, count: u32) -> bool {
        eventually(SOON, || async {
            self.depth(queue).await.is_ok_and(|depth| depth == count)
        })
        .await
    }

    pub(crate) async fn close(self) {
        let _ = self.publisher.close().await;
        let _ = self.channel.close(200, ShortString::from("bye")).await;
        let _ = self.connection.close(200, ShortString::from("bye")).await;
    }
}

/// Whether `queue` exists, asked on a connection of its own (a passive declare of a missing
/// queue closes the channel it was sent on).
pub(crate) async fn queue_exists(url: &str, queue: &str) -> anyhow::Result<bool> {
    let connection = events::connect(url, "booksvc-consumer-tests-probe", CONNECT_TIMEOUT).await?;
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let exists = channel
        .queue_declare(ShortString::from(queue), passive, FieldTable::default())
        .await
        .is_ok();
    let _ = connection.close(200, ShortString::from("bye")).await;
    Ok(exists)
}

/// A cache on the shared Redis under a prefix of its own.
pub(crate) async fn shared_cache() -> anyhow::Result<BookCache> {
    let redis = testkit::Redis::shared().await?;
    cache_on(&redis.url())
}

pub(crate) fn cache_on(redis_url: &str) -> anyhow::Result<BookCache> {
    let prefix = format!("test:{}:", uuid_like());
    Ok(BookCache::new(CacheSettings {
        prefix,
        ..CacheSettings::new(redis_url)
    })?)
}

fn uuid_like() -> String {
    format!("{:x}", rand::random::<u64>())
}

/// Starts the cache's memory (decision 0013) and waits past its first 2 s, within which
/// booksvc settles upserts by asking storagesvc: for tests whose booksvc has no storagesvc
/// and must apply the events they publish.
pub(crate) async fn start_cache_memory(cache: &BookCache) -> anyhow::Result<()> {
    cache
        .apply_event(&BookChanged::deleted(i64::MAX, 1, Utc::now()))
        .await?;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    Ok(())
}

/// What the cache holds for `id` (None: nothing, or Redis down).
pub(crate) async fn cached(cache: &BookCache, id: i64) -> Option<CachedBook> {
    let lookup = cache.get_book(id).await.ok()?;
    lookup.cached.map(|cached| cached.value)
}

/// Waits until the cache holds `id` at `version` (a book or a tombstone).
pub(crate) async fn cached_at(cache: &BookCache, id: i64, version: i64) -> bool {
    eventually(SOON, || async {
        cached(cache, id)
            .await
            .is_some_and(|entry| entry.version() == version)
    })
    .await
}

pub(crate) use testkit::eventually;

pub(crate) fn data(id: i64, title: &str) -> BookData {
    BookData {
        id,
        title: title.to_owned(),
        author: "Jane Doe".to_owned(),
        desc: format!("about {title}"),
    }
}

pub(crate) fn created(id: i64, title: &str) -> BookChanged {
    BookChanged::created(data(id, title), 1, Utc::now())
}

pub(crate) fn updated(id: i64, version: i64, title: &str) -> BookChanged {
    BookChanged::updated(data(id, title), version, Utc::now())
}

pub(crate) fn deleted(id: i64, version: i64) -> BookChanged {
    BookChanged::deleted(id, version, Utc::now())
}

/// The live book's title in the cache, if any.
pub(crate) async fn cached_title(cache: &BookCache, id: i64) -> Option<String> {
    cached(cache, id)
        .await
        .and_then(|entry| entry.live().map(|book| book.title.clone()))
}

/// A sink that fails chosen books transiently, in front of a real cache: injects a fault in
/// our own code (an event the cache cannot take right now while Redis is fine), which is
/// what sends a message down the retry path. It also records each attempt's time.
#[derive(Clone)]
pub(crate) struct FlakySink {
    cache: BookCache,
    state: Arc<Mutex<FlakyState>>,
}

#[derive(Default)]
struct FlakyState {
    failures_left: HashMap<i64, u32>,
    attempts: HashMap<i64, Vec<Instant>>,
}

impl FlakySink {
    pub(crate) fn new(cache: BookCache) -> FlakySink {
        FlakySink {
            cache,
            state: Arc::default(),
        }
    }

    /// The cache behind the faults.
    pub(crate) fn cache(&self) -> &BookCache {
        &self.cache
    }

    /// The next `times` attempts to apply an event of `book_id` fail (`u32::MAX`: all).
    pub(crate) fn fail(&self, book_id: i64, times: u32) {
        self.lock().failures_left.insert(book_id, times);
    }

    /// When each attempt for `book_id` was made.
    pub(crate) fn attempts(&self, book_id: i64) -> Vec<Instant> {
        self.lock()
            .attempts
            .get(&book_id)
            .cloned()
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlakyState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records the attempt; says whether it must fail.
    fn attempt(&self, book_id: i64) -> bool {
        let mut state = self.lock();
        state
            .attempts
            .entry(book_id)
            .or_default()
            .push(Instant::now());
        match state.failures_left.get_mut(&book_id) {
            Some(left) if *left > 0 => {
                if *left != u32::MAX {
                    *left -= 1;
                }
                true
            }
            _ => false,
        }
    }
}

impl EventSink for FlakySink {
    async fn apply(&self, event: &BookChanged) -> Result<WriteOutcome, SinkError> {
        if self.attempt(event.book_id) {
            return Err(SinkError::Transient("injected failure".to_owned()));
        }
        EventSink::apply(&self.cache, event).await
    }

    async fn ping(&self) -> Result<(), SinkError> {
        EventSink::ping(&self.cache).await
    }
}

/// A sink whose first apply never finishes, in front of a real cache: the handling of a
/// delivery stuck in our own code, as it is when lapin never completes an ack's future.
/// Every later apply goes straight to the cache.
#[derive(Clone)]
pub(crate) struct StuckOnceSink {
    cache: BookCache,
    stuck: Arc<AtomicBool>,
}

impl StuckOnceSink {
    pub(crate) fn new(cache: BookCache) -> StuckOnceSink {
        StuckOnceSink {
            cache,
            stuck: Arc::default(),
        }
    }

    /// The cache behind it.
    pub(crate) fn cache(&self) -> &BookCache {
        &self.cache
    }

    /// Waits until the first apply has begun (and hangs).
    pub(crate) async fn is_stuck(&self) -> bool {
        eventually(SOON, || async { self.stuck.load(Ordering::SeqCst) }).await
    }
}

impl EventSink for StuckOnceSink {
    async fn apply(&self, event: &BookChanged) -> Result<WriteOutcome, SinkError> {
        if !self.stuck.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        EventSink::apply(&self.cache, event).await
    }

    async fn ping(&self) -> Result<(), SinkError> {
        EventSink::ping(&self.cache).await
    }
}
