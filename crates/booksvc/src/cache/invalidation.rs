//! [`Invalidator`]: this replica's own subscription to book-changed events, which keeps the
//! [`LocalCache`] coherent.
//!
//! The event consumer shares one quorum queue with every other replica (competing
//! consumers), so each event reaches one replica only. The local layer of *every* replica
//! must hear of it, so each replica declares its own queue: server-named, exclusive and
//! auto-delete (it dies with the connection, so replicas that go away leave nothing behind),
//! bound to [`EXCHANGE`] with the main queue's [`BINDING_KEY`], consumed without acks (a
//! message lost with the connection does not matter: losing the connection empties the
//! layer).
//!
//! The layer serves only while this subscription is known to be live: it goes live once the
//! queue is bound and the consumer registered, and is bypassed (and emptied) the moment the
//! session ends for any reason: broker down, channel or connection closed, consumer
//! cancelled (the queue deleted), or a watchdog finding the connection gone. The loop then
//! reconnects with the consumer's [`ReconnectBackoff`].

use std::time::Duration;

use anyhow::Context;
use events::lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use events::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use events::lapin::{Channel, Connection, Consumer, ExchangeKind};
use events::{BINDING_KEY, BookChanged, EXCHANGE, ReconnectBackoff};
use futures::StreamExt;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;

use super::local::LocalCache;

/// Bound on closing the connection at the end of a session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the subscription connects and watches itself.
///
/// `Debug` leaves out the URL: it carries the broker password.
#[derive(Clone)]
pub struct InvalidationSettings {
    /// `AMQP_URL`.
    pub amqp_url: String,
    /// Name shown for the connection in the management UI.
    pub connection_name: String,
    /// Bound on connecting and setting up (declare, bind, consume).
    pub connect_timeout: Duration,
    /// `CONSUMER_RECONNECT_MAX`: the longest pause between reconnect attempts.
    pub reconnect_max: Duration,
    /// How often the watchdog checks that the connection and channel are still up.
    pub watchdog_interval: Duration,
}

impl std::fmt::Debug for InvalidationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvalidationSettings")
            .field("amqp_url", &"[redacted]")
            .field("connection_name", &self.connection_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_max", &self.reconnect_max)
            .field("watchdog_interval", &self.watchdog_interval)
            .finish()
    }
}

impl InvalidationSettings {
    /// Settings for `amqp_url` with the consumer's defaults.
    pub fn new(amqp_url: impl Into<String>) -> InvalidationSettings {
        InvalidationSettings {
            amqp_url: amqp_url.into(),
            connection_name: "booksvc-invalidation".to_owned(),
            connect_timeout: Duration::from_secs(10),
            reconnect_max: crate::consumer::DEFAULT_RECONNECT_MAX,
            watchdog_interval: Duration::from_secs(1),
        }
    }
}

/// The subscription; [`Invalidator::run`] until shutdown.
pub struct Invalidator {
    settings: InvalidationSettings,
    local: LocalCache,
}

/// One open subscription.
struct Subscription {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

impl Invalidator {
    pub fn new(settings: InvalidationSettings, local: LocalCache) -> Invalidator {
        Invalidator { settings, local }
    }

    /// Subscribes, keeps the layer live while subscribed, and reconnects whenever the broker
    /// goes away. Never fails; leaves the layer bypassed when it returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut pauses = ReconnectBackoff::new(self.settings.reconnect_max);
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let reason = self.one_session(&shutdown).await;
            self.local.bypass(&reason);
            if shutdown.is_cancelled() {
                break;
            }
            tracing::warn!(%reason, "invalidation subscription ended; reconnecting");
            // A session that stayed up a while proves the broker healthy: start afresh.
            if started.elapsed() >= self.settings.reconnect_max {
                pauses.reset();
            }
            if !pauses.pause(&shutdown).await {
                break;
            }
        }
        self.local.bypass("shutting down");
    }

    /// One connection's life; returns why it ended.
    async fn one_session(&self, shutdown: &CancellationToken) -> String {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return "shutting down".to_owned(),
            opened = timeout(self.settings.connect_timeout, subscribe(&self.settings)) => opened,
        };
        let mut subscription = match opened {
            Ok(Ok(subscription)) => subscription,
            Ok(Err(error)) => return format!("{error:#}"),
            Err(_elapsed) => return "subscribing timed out".to_owned(),
        };
        // Bound and consuming: from now on every event reaches this replica.
        self.local.go_live();
        let reason = self.consume(&mut subscription, shutdown).await;
        // Bypass before the (slow) close: events may already be going by unseen.
        self.local.bypass(&reason);
        close(&subscription.connection).await;
        reason
    }

    async fn consume(
        &self,
        subscription: &mut Subscription,
        shutdown: &CancellationToken,
    ) -> String {
        let mut watchdog = tokio::time::interval(self.settings.watchdog_interval);
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return "shutting down".to_owned(),
                next = subscription.consumer.next() => match next {
                    Some(Ok(delivery)) => self.invalidate(&delivery.data),
                    Some(Err(error)) => return format!("consumer failed: {error}"),
                    None => return "the consumer was cancelled".to_owned(),
                },
                _ = watchdog.tick() => {
                    if !subscription.connection.status().connected() {
                        return "the connection is closed".to_owned();
                    }
                    if !subscription.channel.status().connected() {
                        return "the channel is closed".to_owned();
                    }
                }
            }
        }
    }

    /// One event: drop that book (and the list); an event that cannot be read could be about
    /// any book, so everything goes.
    fn invalidate(&self, body: &[u8]) {
        match BookChanged::parse(body) {
            Ok(event) => self
                .local
                .invalidate_book(event.book_id, event.kind, event.version),
            Err(error) => {
                tracing::debug!(%error, "unreadable event: emptying the local hit layer");
                self.local.invalidate_all("unreadable");
            }
        }
    }
}

/// Connects, declares the exchange (as every user does, idempotently) and this replica's own
/// queue, binds it and starts consuming.
async fn subscribe(settings: &InvalidationSettings) -> anyhow::Result<Subscription> {
    let connection = events::connect(
        &settings.amqp_url,
        &settings.connection_name,
        settings.connect_timeout,
    )
    .await?;
    match open_consumer(&connection).await {
        Ok((channel, consumer)) => Ok(Subscription {
            connection,
            channel,
            consumer,
        }),
        Err(error) => {
            close(&connection).await;
            Err(error)
        }
    }
}

async fn open_consumer(connection: &Connection) -> anyhow::Result<(Channel, Consumer)> {
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            ShortString::from(EXCHANGE),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .context("declaring the books exchange")?;
    let own = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    // Explicitly classic: a vhost whose default queue type is quorum must not apply here.
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("classic")),
    );
    let queue = channel
        .queue_declare(ShortString::from(""), own, args)
        .await
        .context("declaring the invalidation queue")?;
    channel
        .queue_bind(
            queue.name().clone(),
            ShortString::from(EXCHANGE),
            ShortString::from(BINDING_KEY),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("binding the invalidation queue")?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            ShortString::from(""),
            no_ack,
            FieldTable::default(),
        )
        .await
        .context("consuming the invalidation queue")?;
    Ok((channel, consumer))
}

async fn close(connection: &Connection) {
    if !connection.status().connected() {
        return;
    }
    let closing = connection.close(200, ShortString::from("bye"));
    match timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the invalidation connection"),
        Err(_elapsed) => tracing::debug!("closing the invalidation connection timed out"),
    }
}
