//! What the relay opens on each broker session ([`events::session`] runs the loop): the
//! topology (or only the `books` exchange when its user may do no more) and one
//! confirm-mode publisher per lane.

use events::session::{BrokerClient, Link, SessionSettings, SetupError};
use events::{BrokerNode, ConfirmPublisher, SessionEnd};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::OutboxRelay;

/// The name the relay's connection shows in the management UI.
const CONNECTION_NAME: &str = "storagesvc-outbox-relay";

/// Batches in flight at once, each on its own channel: while one lane waits for its confirms
/// and commits, the other claims and publishes, so the broker is never left idle by
/// PostgreSQL round trips. Per-book order holds across lanes for the same reason it holds
/// across replicas: a claim never takes a book whose earlier row another claim holds.
pub(super) const LANES: usize = 2;

/// The relay as a session client.
pub(super) struct RelayClient<'a> {
    pub(super) relay: &'a OutboxRelay,
    pub(super) wake: &'a Notify,
}

/// One session's publishers, with the link they run on.
pub(super) struct Publishers<'a> {
    pub(super) link: &'a Link,
    pub(super) publishers: &'a [ConfirmPublisher],
}

impl Publishers<'_> {
    /// Whether the connection and every publisher's channel still work.
    pub(super) fn check(&self) -> Result<(), String> {
        self.link.check(&[])?;
        if self.publishers.iter().all(ConfirmPublisher::is_open) {
            Ok(())
        } else {
            Err(format!(
                "a publisher channel on {} is closed",
                self.link.node()
            ))
        }
    }
}

impl RelayClient<'_> {
    /// The session's settings: `confirm_timeout` bounds connecting, set-up and closing.
    pub(super) fn settings(&self) -> SessionSettings {
        let config = &self.relay.config;
        SessionSettings {
            connect_timeout: config.confirm_timeout,
            rpc_timeout: config.confirm_timeout,
            reconnect_max: config.reconnect_max,
            ..SessionSettings::new(config.amqp_url.clone(), CONNECTION_NAME)
        }
    }
}

impl BrokerClient for RelayClient<'_> {
    type Channels = Vec<ConfirmPublisher>;

    /// Declares the topology (idempotent; recreates anything deleted while we were away),
    /// then opens the publishers.
    async fn open(&self, link: &Link) -> Result<Vec<ConfirmPublisher>, SetupError> {
        link.declare_publisher_side(&self.relay.config.topology)
            .await?;
        let mut publishers = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            publishers.push(ConfirmPublisher::open(link.connection()).await?);
        }
        Ok(publishers)
    }

    async fn run(
        &self,
        publishers: &mut Vec<ConfirmPublisher>,
        link: &Link,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let session = Publishers { link, publishers };
        self.relay
            .relay_until_lost(&session, self.wake, shutdown)
            .await
    }

    /// Closes each publisher's channel (the session bounds this, then closes the connection).
    async fn close(&self, publishers: Vec<ConfirmPublisher>) {
        for publisher in &publishers {
            if let Err(error) = publisher.close().await {
                tracing::debug!(%error, "closing a relay channel failed");
            }
        }
    }

    fn connected(&self, node: &BrokerNode) {
        self.relay.status.set_connected(Some(node));
    }

    fn disconnected(&self, reason: &str) {
        self.relay.status.set_connected(None);
        self.relay.status.record_error(reason);
    }
}
