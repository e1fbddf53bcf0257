//! One broker session loop for every long-lived AMQP user (storagesvc's outbox relay,
//! booksvc's consumer and its local layer's invalidation subscription, the last two on one
//! connection through [`Both`]).
//!
//! ```text
//!          ┌──────────────── every node once, from the one after the last in use ─────┐
//!  run ──▶ connect (bounded) ─▶ client.open: declare, channels (bounded) ─▶ client.run ─┤
//!   ▲       │ failed: next node                                              │ lost      │
//!   │       ▼ all failed                                                     ▼           │
//!   └── pause (ReconnectBackoff) ◀──────── close: channels, connection (each bounded) ◀─┘
//! ```
//!
//! [`run`] owns what the three used to write each for themselves: connecting to a node of
//! [`BrokerNodes`] with a timeout, closing a half-opened connection, trying the other nodes
//! before pausing, the capped, jittered pauses ([`ReconnectBackoff`]) and their reset rule,
//! and a bounded close (every close RPC under [`SessionSettings::rpc_timeout`], so a broker
//! that blocked the connection during a disk or memory alarm, and stopped reading its
//! socket, cannot hold a shutdown). The client ([`BrokerClient`]) supplies only "open my
//! channels" (declaring the topology through [`Link`], so every declaration stays in this
//! crate) and "work until lost or shut down".
//!
//! After a session is lost, the next attempt starts at the *next* node of the list: the
//! node that was in use is the likeliest to be down. Each process starts at a random node
//! ([`BrokerNodes::random_start`]) so replicas spread over the cluster.

use std::error::Error as StdError;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, Consumer};
use tokio::time::{Instant, Interval, MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;

use crate::connection::connect_node;
use crate::nodes::{BrokerNode, BrokerNodes};
use crate::outage::Outage;
use crate::reconnect::ReconnectBackoff;
use crate::topology::{BINDING_KEY, EXCHANGE, Topology, is_access_refused};

mod both;
pub use both::Both;

/// An error from a client's set-up, whatever its type.
pub type SetupError = Box<dyn StdError + Send + Sync>;

/// The longest pause between two rounds of reconnect attempts, unless configured: RabbitMQ
/// takes 5–8 s to come back after a restart.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How a session loop connects, watches and paces itself.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The cluster's nodes (`AMQP_URL`).
    pub nodes: BrokerNodes,
    /// Name shown for the connection in the management UI.
    pub connection_name: String,
    /// Bound on connecting to one node, and again on the client's set-up there.
    pub connect_timeout: Duration,
    /// Bound on each round trip the session makes itself (checks, closing).
    pub rpc_timeout: Duration,
    /// The longest pause between two rounds of attempts.
    pub reconnect_max: Duration,
    /// How often clients check that the connection is still up ([`Link::watchdog`]).
    pub watchdog_interval: Duration,
}

impl SessionSettings {
    /// Settings for `nodes` with defaults: 10 s to connect, 5 s per round trip, pauses up
    /// to [`DEFAULT_RECONNECT_MAX`], a check every second.
    pub fn new(nodes: BrokerNodes, connection_name: impl Into<String>) -> SessionSettings {
        SessionSettings {
            nodes,
            connection_name: connection_name.into(),
            connect_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(5),
            reconnect_max: DEFAULT_RECONNECT_MAX,
            watchdog_interval: Duration::from_secs(1),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The shutdown token was cancelled.
    Shutdown,
    /// The broker path failed; reconnect. The text says why (one line, for the log).
    Lost(String),
}

/// What a long-lived broker user supplies to [`run`].
pub trait BrokerClient: Sync {
    /// The channels (and consumers, publishers) one session works with.
    type Channels: Send;

    /// Declares what this client needs (through `link`) and opens its channels. Bounded
    /// by [`SessionSettings::connect_timeout`]; on failure the connection is closed.
    fn open(&self, link: &Link) -> impl Future<Output = Result<Self::Channels, SetupError>> + Send;

    /// Works until shutdown or until the broker path fails.
    fn run(
        &self,
        channels: &mut Self::Channels,
        link: &Link,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = SessionEnd> + Send;

    /// Closes the channels cleanly, before the connection closes (bounded by
    /// [`SessionSettings::rpc_timeout`]). By default they simply go with the connection.
    fn close(&self, channels: Self::Channels) -> impl Future<Output = ()> + Send {
        async move { drop(channels) }
    }

    /// A session is open on `node`.
    fn connected(&self, node: &BrokerNode) {
        let _ = node;
    }

    /// An attempt failed or a session was lost (called before the slow close).
    fn disconnected(&self, reason: &str) {
        let _ = reason;
    }
}

/// Runs sessions for `client` until `shutdown` is cancelled: see the module docs. Never
/// fails: broker trouble is logged, passed to [`BrokerClient::disconnected`] and ridden out.
pub async fn run<C: BrokerClient>(
    settings: &SessionSettings,
    client: &C,
    shutdown: &CancellationToken,
) {
    let nodes = &settings.nodes;
    let mut pauses = ReconnectBackoff::new(settings.reconnect_max);
    // Failed attempts are logged as one outage (a start, a summary a minute, an end), not a
    // line each: a broker down for ten minutes is retried dozens of times.
    let outage = Outage::named(format!("RabbitMQ, {}", settings.connection_name).into());
    let mut next = nodes.random_start();
    while !shutdown.is_cancelled() {
        let mut opened = None;
        for index in next..next + nodes.len() {
            let attempt = open(settings, nodes.get(index), client);
            match shutdown.run_until_cancelled(attempt).await {
                None => return,
                Some(Ok(live)) => {
                    opened = Some((index, live));
                    break;
                }
                Some(Err(reason)) => {
                    outage.failed(&reason);
                    client.disconnected(&reason);
                }
            }
        }
        if let Some((index, (link, mut channels))) = opened {
            next = (index + 1) % nodes.len();
            outage.succeeded();
            tracing::info!(connection = %settings.connection_name, node = %link.node, "broker session open");
            client.connected(&link.node);
            let started = Instant::now();
            let end = client.run(&mut channels, &link, shutdown).await;
            if let SessionEnd::Lost(reason) = &end {
                tracing::warn!(connection = %settings.connection_name, node = %link.node, %reason, "broker session lost; reconnecting");
                client.disconnected(reason);
            }
            if timeout(settings.rpc_timeout, client.close(channels))
                .await
                .is_err()
            {
                tracing::debug!(connection = %settings.connection_name, "closing the channels timed out");
            }
            link.close().await;
            if end == SessionEnd::Shutdown {
                return;
            }
            // A session that stayed up a while proves the broker healthy: start afresh.
            if started.elapsed() >= settings.reconnect_max {
                pauses.reset();
            }
        }
        if !pauses.pause(shutdown).await {
            return;
        }
    }
}

/// Connects to `node` and lets the client set up there; closes what was opened on failure.
async fn open<C: BrokerClient>(
    settings: &SessionSettings,
    node: &BrokerNode,
    client: &C,
) -> Result<(Link, C::Channels), String> {
    let connection = connect_node(node, &settings.connection_name, settings.connect_timeout)
        .await
        .map_err(|error| format!("{node}: {error}"))?;
    let link = Link {
        connection,
        node: node.clone(),
        rpc_timeout: settings.rpc_timeout,
        watchdog_interval: settings.watchdog_interval,
    };
    let failure = match timeout(settings.connect_timeout, client.open(&link)).await {
        Ok(Ok(channels)) => return Ok((link, channels)),
        Ok(Err(error)) => format!("{node}: set-up failed: {}", chain(&*error)),
        Err(_elapsed) => format!("{node}: set-up took over {:?}", settings.connect_timeout),
    };
    link.close().await;
    Err(failure)
}

/// `error` and its sources on one line, `outer: inner: root`.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What [`Link::declare_publisher_side`] managed to declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// Every exchange, queue and binding of the topology.
    Everything,
    /// Only the `books` exchange: the broker user may do no more.
    ExchangeOnly,
}

/// A live connection to one node, lent to the client for one session.
pub struct Link {
    connection: Connection,
    node: BrokerNode,
    rpc_timeout: Duration,
    watchdog_interval: Duration,
}

impl Link {
    /// The connection, to open channels on.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The node this session runs on.
    pub fn node(&self) -> &BrokerNode {
        &self.node
    }

    /// Bound on one round trip.
    pub fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    /// A timer for the client's liveness checks: ticks every watchdog interval (the first
    /// tick after one interval), delaying rather than bursting missed ticks.
    pub fn watchdog(&self) -> Interval {
        self.watchdog_every(self.watchdog_interval)
    }

    /// [`Link::watchdog`] at a pace of the client's own: two clients sharing a session
    /// ([`Both`]) may want their checks at different rates.
    pub fn watchdog_every(&self, period: Duration) -> Interval {
        let mut watchdog = tokio::time::interval_at(Instant::now() + period, period);
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        watchdog
    }

    /// Whether the connection and every one of `channels` are still up; the error says
    /// which is not. lapin does not always end a consumer stream when they go, so clients
    /// call this on every [`Link::watchdog`] tick.
    pub fn check(&self, channels: &[&Channel]) -> Result<(), String> {
        if !self.connection.status().connected() {
            return Err(format!("the connection to {} is closed", self.node));
        }
        if channels.iter().any(|channel| !channel.status().connected()) {
            return Err(format!("a channel on {} is closed", self.node));
        }
        Ok(())
    }

    /// Declares the whole topology on a channel of its own (closed afterwards). A user that
    /// may not configure `books` (booksvc's least-privilege user) uses the `books` storagesvc
    /// declared, and fails with `NOT_FOUND` until it exists.
    pub async fn declare(&self, topology: &Topology) -> Result<(), lapin::Error> {
        self.ensure_exchange().await?;
        let channel = self.connection.create_channel().await?;
        topology.declare_consumer_side(&channel).await?;
        self.close_channel(channel, "topology declared").await;
        Ok(())
    }

    /// Declares `books`, or, when the user may not configure it, checks that it exists.
    /// Each try on a channel of its own: a refusal closes the channel it came on.
    async fn ensure_exchange(&self) -> Result<(), lapin::Error> {
        let channel = self.connection.create_channel().await?;
        match Topology::declare_exchange(&channel).await {
            Ok(()) => {
                self.close_channel(channel, "exchange declared").await;
                Ok(())
            }
            Err(error) if is_access_refused(&error) => {
                tracing::debug!(%error, "may not declare exchange books; checking that it exists");
                let channel = self.connection.create_channel().await?;
                Topology::check_exchange(&channel).await?;
                self.close_channel(channel, "exchange checked").await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Declares the whole topology, or, when the broker user may not configure booksvc's
    /// queues (a least-privilege publisher, `deploy/rabbitmq/setup-users.sh`), only the
    /// exchange it publishes to.
    pub async fn declare_publisher_side(
        &self,
        topology: &Topology,
    ) -> Result<Declared, lapin::Error> {
        match self.declare(topology).await {
            Ok(()) => Ok(Declared::Everything),
            // The refusal closed that channel, so the exchange gets a new one.
            Err(error) if is_access_refused(&error) => {
                tracing::info!(%error, "may not declare booksvc's queues; declaring exchange books only");
                let channel = self.connection.create_channel().await?;
                Topology::declare_exchange(&channel).await?;
                self.close_channel(channel, "exchange declared").await;
                Ok(Declared::ExchangeOnly)
            }
            Err(error) => Err(error),
        }
    }

    /// Declares the `books` exchange and a queue of this connection's own on `channel`,
    /// bound like the main queue, and consumes it without acks: every event reaches every
    /// replica that does this. The queue is server-named, exclusive and auto-delete (it
    /// dies with the connection, so a replica that goes away leaves nothing behind) and
    /// explicitly classic (a vhost whose default type is quorum must not apply here; a
    /// quorum queue cannot be exclusive). It is declared anew on every session, so on
    /// whichever node the session runs.
    pub async fn consume_replica_queue(&self, channel: &Channel) -> Result<Consumer, lapin::Error> {
        self.ensure_exchange().await?;
        let own = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("classic")),
        );
        let queue = channel
            .queue_declare(ShortString::from(""), own, args)
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                ShortString::from(EXCHANGE),
                ShortString::from(BINDING_KEY),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            exclusive: true,
            ..BasicConsumeOptions::default()
        };
        channel
            .basic_consume(
                queue.name().clone(),
                ShortString::from(""),
                no_ack,
                FieldTable::default(),
            )
            .await
    }

    /// Closes `channel` if it is still up, within the round-trip bound; a failure costs
    /// nothing (the connection's close takes the channel with it).
    pub async fn close_channel(&self, channel: Channel, why: &str) {
        if !channel.status().connected() {
            return;
        }
        match timeout(self.rpc_timeout, channel.close(200, why.into())).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "closing a channel failed"),
            Err(_elapsed) => tracing::debug!("closing a channel timed out"),
        }
    }

    /// Closes the connection if it is still up, within the round-trip bound.
    async fn close(self) {
        if !self.connection.status().connected() {
            return;
        }
        let closing = self.connection.close(200, ShortString::from("bye"));
        match timeout(self.rpc_timeout, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, node = %self.node, "closing the connection failed")
            }
            Err(_elapsed) => tracing::debug!(node = %self.node, "closing the connection timed out"),
        }
    }
}
