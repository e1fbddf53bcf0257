//! [`Session`]: one broker connection's life — open, consume, watch, drain, close.
//!
//! A session ends for one of two reasons ([`SessionEnd`]): shutdown, or the broker path
//! failing. lapin reports most failures on the consumer stream (an error, then the end), but
//! not all: a consumer the broker cancelled or forgot, or a connection that stopped answering
//! without closing, can leave the stream silent for ever. So a watchdog checks every
//! `watchdog_interval` that the connection and channel are up and that the broker still
//! counts a consumer on the queue (a passive declare, bounded in time), and ends the session
//! otherwise; the caller then reconnects, which also redeclares the topology.

use std::time::Duration;

use anyhow::Context;
use events::lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use events::lapin::types::{FieldTable, ShortString};
use events::lapin::{Channel, Connection, Consumer};
use events::{ConfirmPublisher, QUEUE};
use futures::StreamExt;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;

use super::ConsumerSettings;
use super::handler::DeliveryHandler;
use super::sink::EventSink;
use super::status::ConsumerStatus;

/// Bound on each broker round trip the session makes itself (watchdog check, cancel, close).
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The shutdown token was cancelled.
    Shutdown,
    /// The broker path failed; reconnect. The text says why (one line, for the log).
    Lost(String),
}

/// An open connection consuming the main queue, with a confirm channel for republishing.
pub(crate) struct Session {
    connection: Connection,
    channel: Channel,
    publisher: ConfirmPublisher,
    consumer: Consumer,
}

/// What the session's loop needs from its consumer.
pub(crate) struct SessionContext<'a, S> {
    pub(crate) sink: &'a S,
    pub(crate) settings: &'a ConsumerSettings,
    pub(crate) status: &'a ConsumerStatus,
    pub(crate) shutdown: &'a CancellationToken,
}

impl Session {
    /// Connects, declares the topology, sets the prefetch and starts consuming.
    pub(crate) async fn open(settings: &ConsumerSettings) -> anyhow::Result<Session> {
        let connection = events::connect(
            &settings.amqp_url,
            &settings.connection_name,
            settings.connect_timeout,
        )
        .await?;
        let setup = timeout(settings.connect_timeout, setup(&connection, settings)).await;
        match setup {
            Ok(Ok((channel, publisher, consumer))) => Ok(Session {
                connection,
                channel,
                publisher,
                consumer,
            }),
            Ok(Err(error)) => {
                close_connection(&connection).await;
                Err(error)
            }
            Err(_elapsed) => {
                close_connection(&connection).await;
                anyhow::bail!(
                    "setting up the consumer took over {:?}",
                    settings.connect_timeout
                )
            }
        }
    }

    /// Consumes until shutdown (then drains what was already delivered) or a failure.
    pub(crate) async fn run<S: EventSink>(
        &mut self,
        context: &SessionContext<'_, S>,
    ) -> SessionEnd {
        let settings = context.settings;
        let handler = DeliveryHandler {
            sink: context.sink,
            publisher: &self.publisher,
            channel: &self.channel,
            tiers: &settings.retry_tiers(),
            confirm_timeout: settings.confirm_timeout,
            pause_poll: settings.pause_poll,
            status: context.status,
            shutdown: context.shutdown,
        };
        let mut watchdog = tokio::time::interval(settings.watchdog_interval);
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        watchdog.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                biased;
                () = context.shutdown.cancelled() => {
                    drain(&self.channel, &mut self.consumer, &handler, settings.shutdown_grace).await;
                    return SessionEnd::Shutdown;
                }
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        if let Err(end) = handler.handle(delivery).await {
                            return end;
                        }
                    }
                    Some(Err(error)) => return SessionEnd::Lost(format!("consumer failed: {error}")),
                    None => return SessionEnd::Lost("the consumer was cancelled".to_owned()),
                },
                _ = watchdog.tick() => {
                    if let Err(reason) = check_alive(&self.connection, &self.channel).await {
                        return SessionEnd::Lost(reason);
                    }
                }
            }
        }
    }

    /// Closes the channels, then the connection (lapin: a connection closed first leaves the
    /// channels' close handshakes waiting). Unacked deliveries go back to the queue.
    pub(crate) async fn close(self) {
        let closing = async {
            if self.channel.status().connected() {
                if let Err(error) = self.channel.close(200, ShortString::from("bye")).await {
                    tracing::debug!(%error, "closing the consumer channel");
                }
            }
            if let Err(error) = self.publisher.close().await {
                tracing::debug!(%error, "closing the publisher channel");
            }
        };
        if timeout(RPC_TIMEOUT, closing).await.is_err() {
            tracing::debug!("closing the channels timed out");
        }
        close_connection(&self.connection).await;
    }
}

async fn setup(
    connection: &Connection,
    settings: &ConsumerSettings,
) -> anyhow::Result<(Channel, ConfirmPublisher, Consumer)> {
    let channel = connection.create_channel().await?;
    settings
        .topology()
        .declare(&channel)
        .await
        .context("declaring the topology")?;
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
    Ok((channel, publisher, consumer))
}

/// The watchdog's check: connection and channel up, and our consumer still registered.
async fn check_alive(connection: &Connection, channel: &Channel) -> Result<(), String> {
    if !connection.status().connected() {
        return Err("the connection is closed".to_owned());
    }
    if !channel.status().connected() {
        return Err("the channel is closed".to_owned());
    }
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

async fn close_connection(connection: &Connection) {
    if !connection.status().connected() {
        return;
    }
    match timeout(RPC_TIMEOUT, connection.close(200, ShortString::from("bye"))).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the connection"),
        Err(_elapsed) => tracing::debug!("closing the connection timed out"),
    }
}
