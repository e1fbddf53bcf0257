//! [`ConsumerClient`]: what the consumer opens on each broker session (whose loop —
//! connect, reconnect, pauses, closing the connection — is [`events::session`]'s), and how
//! it consumes, watches and drains there.
//!
//! A session ends for one of two reasons ([`SessionEnd`]): shutdown, or the broker path
//! failing. lapin reports most failures on the consumer stream (an error, then the end), but
//! not all: a consumer the broker cancelled or forgot, or a connection that stopped answering
//! without closing, can leave the stream silent for ever. So a watchdog checks every
//! `watchdog_interval` that the connection and channel are up and that the broker still
//! counts a consumer on the queue (a passive declare, bounded in time), and ends the session
//! otherwise; the loop then reconnects, which also redeclares the topology. While a delivery
//! is in hand the watchdog goes on checking the connection and channel (`watched`): lapin
//! can leave an ack pending for ever on a connection that died.

use std::time::Duration;

use anyhow::Context;
use events::lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use events::lapin::types::{FieldTable, ShortString};
use events::lapin::{Channel, Consumer};
use events::session::{BrokerClient, Link, SetupError};
use events::{BrokerNode, ConfirmPublisher, QUEUE};
use futures::StreamExt;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

pub(crate) use events::SessionEnd;

use super::ConsumerSettings;
use super::handler::DeliveryHandler;
use super::sink::EventSink;
use super::status::{ConsumerState, ConsumerStatus};
use crate::metrics::consumer as metrics;

/// Bound on each broker round trip the session makes itself (watchdog check, cancel).
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer as a session client.
pub(crate) struct ConsumerClient<'a, S> {
    pub(crate) sink: &'a S,
    pub(crate) settings: &'a ConsumerSettings,
    pub(crate) status: &'a ConsumerStatus,
}

/// One session's channels: consuming the main queue, and a confirm channel for republishing.
pub(crate) struct Channels {
    channel: Channel,
    publisher: ConfirmPublisher,
    consumer: Consumer,
}

impl<S: EventSink> BrokerClient for ConsumerClient<'_, S> {
    type Channels = Channels;

    /// Declares the topology, sets the prefetch and starts consuming.
    async fn open(&self, link: &Link) -> Result<Channels, SetupError> {
        Ok(setup(link, self.settings).await?)
    }

    /// Consumes until shutdown (then drains what was already delivered) or a failure.
    async fn run(
        &self,
        channels: &mut Channels,
        link: &Link,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        self.status.set(ConsumerState::Running);
        tracing::info!(
            prefetch = self.settings.prefetch,
            node = %link.node(),
            "consuming book-changed events"
        );
        let settings = self.settings;
        let handler = DeliveryHandler {
            sink: self.sink,
            publisher: &channels.publisher,
            channel: &channels.channel,
            tiers: &settings.retry_tiers(),
            confirm_timeout: settings.confirm_timeout,
            pause_poll: settings.pause_poll,
            status: self.status,
            shutdown,
        };
        let mut watchdog = link.watchdog();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    drain(&channels.channel, &mut channels.consumer, &handler, settings.shutdown_grace).await;
                    return SessionEnd::Shutdown;
                }
                next = channels.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let handled = handler.handle(delivery);
                        if let Err(end) = watched(handled, link, &channels.channel, &mut watchdog).await {
                            return end;
                        }
                    }
                    Some(Err(error)) => return SessionEnd::Lost(format!("consumer failed: {error}")),
                    None => return SessionEnd::Lost("the consumer was cancelled".to_owned()),
                },
                _ = watchdog.tick() => {
                    if let Err(reason) = check_alive(link, &channels.channel).await {
                        return SessionEnd::Lost(reason);
                    }
                }
            }
        }
    }

    /// Closes the channels before the connection (lapin: a connection closed first leaves
    /// the channels' close handshakes waiting). Unacked deliveries go back to the queue.
    async fn close(&self, channels: Channels) {
        if channels.channel.status().connected() {
            if let Err(error) = channels.channel.close(200, ShortString::from("bye")).await {
                tracing::debug!(%error, "closing the consumer channel");
            }
        }
        if let Err(error) = channels.publisher.close().await {
            tracing::debug!(%error, "closing the publisher channel");
        }
    }

    fn connected(&self, node: &BrokerNode) {
        self.status.set_node(Some(node));
    }

    fn disconnected(&self, _reason: &str) {
        self.status.set_node(None);
        self.status.set(ConsumerState::Reconnecting);
        metrics::record_reconnect();
    }
}

async fn setup(link: &Link, settings: &ConsumerSettings) -> anyhow::Result<Channels> {
    link.declare(&settings.topology())
        .await
        .context("declaring the topology")?;
    let connection = link.connection();
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let publisher = ConfirmPublisher::open(connection).await?;
    let consumer = channel
        .basic_consume(
            ShortString::from(QUEUE),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("starting to consume")?;
    Ok(Channels {
        channel,
        publisher,
        consumer,
    })
}

/// Runs one delivery's handling while the watchdog goes on checking that the connection and
/// channel are up (no round trip: the handler may be using the channel), and ends the session
/// if they are not. The work in hand must never be all that can end a session: lapin 4.12
/// can leave an ack's future pending for ever when the connection dies just before it is sent
/// (its I/O loop has stopped, so nothing writes or fails the frame; in a loop of acks around
/// a cut connection, 10 of 40 hung), and a consumer stuck there kept `running` on a dead
/// connection and never reconnected. Whatever was not acked comes back after the reconnect.
async fn watched(
    handled: impl Future<Output = Result<(), SessionEnd>>,
    link: &Link,
    channel: &Channel,
    watchdog: &mut tokio::time::Interval,
) -> Result<(), SessionEnd> {
    tokio::pin!(handled);
    loop {
        tokio::select! {
            result = &mut handled => return result,
            _ = watchdog.tick() => link
                .check(&[channel])
                .map_err(|reason| SessionEnd::Lost(format!("{reason}, with a delivery in hand")))?,
        }
    }
}

/// The watchdog's check: connection and channel up, and our consumer still registered.
async fn check_alive(link: &Link, channel: &Channel) -> Result<(), String> {
    link.check(&[channel])?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let check = channel.queue_declare(ShortString::from(QUEUE), passive, FieldTable::default());
    match timeout(RPC_TIMEOUT, check).await {
        Err(_elapsed) => Err(format!("no answer to a queue check within {RPC_TIMEOUT:?}")),
        Ok(Err(error)) => Err(format!("queue check failed: {error}")),
        Ok(Ok(queue)) if queue.consumer_count() == 0 => {
            Err("the broker no longer counts our consumer on the queue".to_owned())
        }
        Ok(Ok(_)) => Ok(()),
    }
}

/// Stops the flow of deliveries, then handles those already received, within `grace`;
/// what is left unacked goes back to the queue when the channel closes.
async fn drain<S: EventSink>(
    channel: &Channel,
    consumer: &mut Consumer,
    handler: &DeliveryHandler<'_, S>,
    grace: Duration,
) {
    let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
    if !matches!(timeout(RPC_TIMEOUT, cancel).await, Ok(Ok(()))) {
        return;
    }
    // After cancel-ok, lapin ends the stream behind the deliveries it already holds.
    let handled = timeout(grace, async {
        let mut count = 0_u32;
        while let Some(Ok(delivery)) = consumer.next().await {
            if handler.handle(delivery).await.is_err() {
                break;
            }
            count += 1;
        }
        count
    })
    .await;
    match handled {
        Ok(count) => tracing::info!(count, "consumer drained the deliveries in hand"),
        Err(_elapsed) => tracing::warn!(?grace, "drain timed out; the rest goes back to the queue"),
    }
}
