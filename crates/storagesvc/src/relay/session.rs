//! One broker connection: connect, declare the topology, open a confirm-mode publisher.

use std::time::Duration;

use events::{ConfirmPublisher, Topology};
use lapin::Connection;

use super::{RelayConfig, RelayError};

/// The name the relay's connection shows in the management UI.
const CONNECTION_NAME: &str = "storagesvc-outbox-relay";

/// Batches in flight at once, each on its own channel: while one lane waits for its confirms
/// and commits, the other claims and publishes, so the broker is never left idle by
/// PostgreSQL round trips. Per-book order holds across lanes for the same reason it holds
/// across replicas: a claim never takes a book whose earlier row another claim holds.
pub(super) const LANES: usize = 2;

/// A live connection and the publishers on it; dropped and rebuilt after any failure.
pub(super) struct BrokerSession {
    connection: Connection,
    publishers: Vec<ConfirmPublisher>,
}

impl BrokerSession {
    /// Connects, declares the topology (idempotent; recreates anything deleted while we
    /// were away) and opens the publisher, each step bounded by `confirm_timeout`.
    pub(super) async fn open(config: &RelayConfig) -> Result<Self, RelayError> {
        let limit = config.confirm_timeout;
        let connection = events::connect(&config.amqp_url, CONNECTION_NAME, limit).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            match config.topology.declare(&channel).await {
                // The declaring channel is done; a failure to close it cleanly costs nothing.
                Ok(()) => drop(channel.close(200, "topology declared".into()).await),
                // A least-privilege user (deploy/rabbitmq/setup-users.sh) may declare only
                // the exchange it publishes to; booksvc declares its own queues. The refusal
                // closed that channel, so the exchange gets a new one.
                Err(error) if events::is_access_refused(&error) => {
                    tracing::info!(%error, "may not declare booksvc's queues; declaring exchange books only");
                    let channel = connection.create_channel().await?;
                    Topology::declare_exchange(&channel).await?;
                    drop(channel.close(200, "exchange declared".into()).await);
                }
                Err(error) => return Err(error),
            }
            Ok::<_, lapin::Error>(())
        };
        bounded(limit, setup).await?.map_err(RelayError::Topology)?;
        let mut publishers = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let publisher = bounded(limit, ConfirmPublisher::open(&connection)).await?;
            publishers.push(publisher.map_err(RelayError::OpenPublisher)?);
        }
        Ok(Self {
            connection,
            publishers,
        })
    }

    /// One confirm-mode publisher per lane.
    pub(super) fn publishers(&self) -> &[ConfirmPublisher] {
        &self.publishers
    }

    /// Whether the connection and every publisher's channel still work.
    pub(super) fn is_open(&self) -> bool {
        self.connection.status().connected() && self.publishers.iter().all(|p| p.is_open())
    }

    /// Closes the channel and the connection cleanly when they are still up.
    pub(super) async fn close(self) {
        for publisher in &self.publishers {
            if let Err(error) = publisher.close().await {
                tracing::debug!(%error, "closing a relay channel failed");
            }
        }
        if self.connection.status().connected() {
            if let Err(error) = self.connection.close(200, "bye".into()).await {
                tracing::debug!(%error, "closing the relay's connection failed");
            }
        }
    }
}

async fn bounded<T>(limit: Duration, step: impl Future<Output = T>) -> Result<T, RelayError> {
    tokio::time::timeout(limit, step)
        .await
        .map_err(|_elapsed| RelayError::SetupTimeout(limit))
}
