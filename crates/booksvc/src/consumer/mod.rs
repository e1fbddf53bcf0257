//! The event consumer: warms the cache from book-changed events.
//!
//! # Flow
//! [`Consumer::run`] runs [`events::session`]'s loop until shutdown: it connects to a node of
//! `AMQP_URL` and reconnects, to another node first, when that one is lost. On each session
//! the consumer (`session`) declares the whole topology (in `events`), sets a bounded
//! prefetch and consumes
//! `booksvc.book-changed` with manual acks. Each delivery goes through the `handler`:
//! parsed, written with [`BookCache::apply_event`](crate::cache::BookCache::apply_event)
//! (the same version rule the read path's fills race against), and acked. A transient
//! failure goes to a retry queue whose TTL dead-letters it back after a growing delay, then,
//! after the last attempt, to the DLQ with `x-error`, `x-retry-count` and
//! `x-original-routing-key` (`routing`); poison goes to the DLQ at once. When an event
//! finds the cache itself down the consumer *pauses*: it holds that delivery in hand, takes
//! no others, and resumes when the cache answers again, so a Redis outage sends nothing to
//! the DLQ. With no event arriving it does not notice the outage and stays running.
//!
//! When the broker goes away the session ends (a stream error, or the watchdog finding the
//! connection, the channel or the consumer gone) and the loop reconnects after a pause from
//! [`events::ReconnectBackoff`] (capped at `CONSUMER_RECONNECT_MAX`), trying every node of
//! the list before each pause. On shutdown the consumer cancels its
//! subscription, handles and acks the deliveries already received, and closes the channels,
//! then the connection.
//!
//! [`ConsumerStatus`] says which of this is happening (running, paused, reconnecting,
//! stopped), for `/healthz/ready` and the `booksvc_consumer_state` gauge.
//!
//! # Modules
//! - `sink`: [`EventSink`], the write side; [`BookCache`](crate::cache::BookCache) in production.
//! - `session`: what one broker session opens, consumes, watches, drains and closes.
//! - `handler`: one delivery: parse, apply, pause, retry or dead-letter, ack.
//! - `routing`: retry tiers and the republished messages, as pure functions.
//! - `status`: what the consumer reports; its series are recorded through
//!   [`crate::metrics::consumer`].
//! - `dead_letter`: [`DeadLetterReason`].

mod dead_letter;
mod handler;
pub(crate) mod routing;
mod session;
mod sink;
mod status;

use std::time::Duration;

use events::session::{Both, BrokerClient, SessionSettings};
use events::{BrokerNodes, DEFAULT_RETRY_DELAYS, Topology};
use tokio_util::sync::CancellationToken;

pub use dead_letter::DeadLetterReason;
pub use sink::{CheckedCache, EventSink, SinkError};
pub use status::{ConsumerState, ConsumerStatus};

use routing::RetryTiers;
use session::ConsumerClient;

/// Default `CONSUMER_PREFETCH`: enough to keep the consumer busy across a broker round trip,
/// few enough that a pause holds little.
pub const DEFAULT_PREFETCH: u16 = 32;
/// Default `CONSUMER_RECONNECT_MAX`, the event sessions' own default (RabbitMQ takes 5–8 s to
/// come back after a restart); the local layer's invalidation subscription uses it too.
pub const DEFAULT_RECONNECT_MAX: Duration = events::session::DEFAULT_RECONNECT_MAX;

/// How the consumer connects, retries and paces itself.
///
/// `Debug` leaves out the URL: it carries the broker password.
#[derive(Clone)]
pub struct ConsumerSettings {
    /// `AMQP_URL`: the broker's nodes.
    pub amqp_url: BrokerNodes,
    /// Name shown for the connection in the management UI.
    pub connection_name: String,
    /// `CONSUMER_PREFETCH`: unacked deliveries the broker may send ahead (at least 1).
    pub prefetch: u16,
    /// `CONSUMER_RETRY_DELAYS`: one retry queue per delay, used in order, the last repeating.
    pub retry_delays: Vec<Duration>,
    /// `CONSUMER_MAX_ATTEMPTS`: attempts in all, the first included, before the DLQ.
    pub max_attempts: u32,
    /// `CONSUMER_RECONNECT_MAX`: the longest pause between reconnect attempts.
    pub reconnect_max: Duration,
    /// Bound on connecting and setting up (declare, qos, consume).
    pub connect_timeout: Duration,
    /// Bound on the broker confirming a republished message.
    pub confirm_timeout: Duration,
    /// How often the watchdog checks that the consumer is still alive.
    pub watchdog_interval: Duration,
    /// How often a paused consumer asks whether the cache is back.
    pub pause_poll: Duration,
    /// On shutdown, how long to spend handling deliveries already received.
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for ConsumerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSettings")
            .field("amqp_url", &"[redacted]")
            .field("connection_name", &self.connection_name)
            .field("prefetch", &self.prefetch)
            .field("retry_delays", &self.retry_delays)
            .field("max_attempts", &self.max_attempts)
            .field("reconnect_max", &self.reconnect_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("watchdog_interval", &self.watchdog_interval)
            .field("pause_poll", &self.pause_poll)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

impl ConsumerSettings {
    /// Settings for `amqp_url` with the documented defaults.
    pub fn new(amqp_url: BrokerNodes) -> ConsumerSettings {
        ConsumerSettings {
            amqp_url,
            connection_name: "booksvc".to_owned(),
            prefetch: DEFAULT_PREFETCH,
            retry_delays: DEFAULT_RETRY_DELAYS.to_vec(),
            max_attempts: default_max_attempts(&DEFAULT_RETRY_DELAYS),
            reconnect_max: DEFAULT_RECONNECT_MAX,
            connect_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(5),
            watchdog_interval: Duration::from_secs(5),
            pause_poll: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// The topology this consumer declares (its retry queues follow `retry_delays`).
    pub fn topology(&self) -> Topology {
        Topology {
            retry_delays: self.retry_delays.clone(),
        }
    }

    /// The broker session's part: connecting, set-up and pauses.
    fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            connect_timeout: self.connect_timeout,
            reconnect_max: self.reconnect_max,
            watchdog_interval: self.watchdog_interval,
            ..SessionSettings::new(self.amqp_url.clone(), self.connection_name.clone())
        }
    }

    fn retry_tiers(&self) -> RetryTiers {
        RetryTiers {
            delays: self.retry_delays.clone(),
            max_attempts: self.max_attempts,
        }
    }
}

/// One attempt, then one per retry delay.
pub fn default_max_attempts(retry_delays: &[Duration]) -> u32 {
    u32::try_from(retry_delays.len())
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

/// The event consumer; see the module docs.
pub struct Consumer<S> {
    settings: ConsumerSettings,
    sink: S,
    status: ConsumerStatus,
}

impl<S: EventSink> Consumer<S> {
    /// A consumer writing into `sink`. Nothing connects until [`Consumer::run`].
    pub fn new(settings: ConsumerSettings, sink: S) -> Consumer<S> {
        crate::metrics::consumer::register_tiers(&settings.retry_delays);
        Consumer {
            settings,
            sink,
            status: ConsumerStatus::new(),
        }
    }

    /// A cheap handle on the consumer's state.
    pub fn status(&self) -> ConsumerStatus {
        self.status.clone()
    }

    /// Consumes until `shutdown` is cancelled, reconnecting whenever the broker goes away.
    /// Never fails: broker trouble is logged, reported in the status, and ridden out.
    pub async fn run(self, shutdown: CancellationToken) {
        events::session::run(&self.settings.session_settings(), &self.client(), &shutdown).await;
        self.stopped();
    }

    /// [`Consumer::run`] with `other` on the same broker connection, as booksvc runs its
    /// local layer's subscription: one connection instead of two, at the price of shared
    /// reconnects ([`Both`]).
    pub async fn run_with<C: BrokerClient>(self, other: C, shutdown: CancellationToken) {
        let both = Both(self.client(), other);
        events::session::run(&self.settings.session_settings(), &both, &shutdown).await;
        self.stopped();
    }

    fn client(&self) -> ConsumerClient<'_, S> {
        ConsumerClient {
            sink: &self.sink,
            settings: &self.settings,
            status: &self.status,
        }
    }

    fn stopped(&self) {
        self.status.set_node(None);
        self.status.set(ConsumerState::Stopped);
        tracing::info!("consumer stopped");
    }
}
