//! [`Invalidator`]: this replica's own subscription to book-changed events, which keeps the
//! [`LocalCache`] coherent.
//!
//! The event consumer shares one quorum queue with every other replica (competing
//! consumers), so each event reaches one replica only. The local layer of *every* replica
//! must hear of it, so each replica has a queue of its own
//! ([`Link::consume_replica_queue`]): server-named, exclusive and auto-delete, bound like the
//! main queue, consumed without acks (a message lost with the connection does not matter:
//! losing the connection empties the layer).
//!
//! The layer serves only while this subscription is known to be live: it goes live once the
//! queue is bound and the consumer registered, and is bypassed (and emptied) the moment the
//! session ends for any reason: broker down, channel or connection closed, consumer
//! cancelled (the queue deleted), or a watchdog finding the connection gone. The loop
//! ([`events::session`], the same as the consumer's) then reconnects, to another node of
//! `AMQP_URL` first, where the queue is declared anew.

use std::time::Duration;

use events::lapin::{Channel, Consumer};
use events::session::{BrokerClient, Link, SessionSettings, SetupError};
use events::{BookChanged, BrokerNodes, SessionEnd};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::local::LocalCache;

/// How the subscription connects and watches itself.
///
/// `Debug` leaves out the URL: it carries the broker password.
#[derive(Clone)]
pub struct InvalidationSettings {
    /// `AMQP_URL`: the broker's nodes.
    pub amqp_url: BrokerNodes,
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
    pub fn new(amqp_url: BrokerNodes) -> InvalidationSettings {
        InvalidationSettings {
            amqp_url,
            connection_name: "booksvc-invalidation".to_owned(),
            connect_timeout: Duration::from_secs(10),
            reconnect_max: events::session::DEFAULT_RECONNECT_MAX,
            watchdog_interval: Duration::from_secs(1),
        }
    }

    fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            connect_timeout: self.connect_timeout,
            reconnect_max: self.reconnect_max,
            watchdog_interval: self.watchdog_interval,
            ..SessionSettings::new(self.amqp_url.clone(), self.connection_name.clone())
        }
    }
}

/// The subscription; [`Invalidator::run`] until shutdown.
pub struct Invalidator {
    settings: InvalidationSettings,
    local: LocalCache,
}

/// One session's subscription.
pub struct Subscription {
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
        events::session::run(&self.settings.session_settings(), &self, &shutdown).await;
        self.stopped();
    }

    /// Leaves the layer bypassed for good, after a session run by someone else (the
    /// consumer's, which this subscription shares).
    pub fn stopped(&self) {
        self.local.bypass("shutting down");
    }

    /// One event: drop that book; an event that cannot be read could be about
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

impl BrokerClient for Invalidator {
    type Channels = Subscription;

    /// Declares this replica's own queue, binds it and starts consuming.
    async fn open(&self, link: &Link) -> Result<Subscription, SetupError> {
        let channel = link.connection().create_channel().await?;
        let consumer = link.consume_replica_queue(&channel).await?;
        Ok(Subscription { channel, consumer })
    }

    async fn run(
        &self,
        subscription: &mut Subscription,
        link: &Link,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        // Bound and consuming: from now on every event reaches this replica.
        self.local.go_live();
        // Its own pace, not the session's: sharing the consumer's connection, it still
        // notices a loss within a second.
        let mut watchdog = link.watchdog_every(self.settings.watchdog_interval);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.local.bypass("shutting down");
                    return SessionEnd::Shutdown;
                }
                next = subscription.consumer.next() => match next {
                    Some(Ok(delivery)) => self.invalidate(&delivery.data),
                    Some(Err(error)) => return SessionEnd::Lost(format!("consumer failed: {error}")),
                    None => return SessionEnd::Lost("the consumer was cancelled".to_owned()),
                },
                _ = watchdog.tick() => {
                    if let Err(reason) = link.check(&[&subscription.channel]) {
                        return SessionEnd::Lost(reason);
                    }
                }
            }
        }
    }

    /// Bypasses at once, before the (slow) close: events may already be going by unseen.
    fn disconnected(&self, reason: &str) {
        self.local.bypass(reason);
    }
}
