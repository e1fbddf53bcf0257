//! [`Both`]: two clients on one connection.
//!
//! A process with two long-lived broker users (booksvc's event consumer and its local
//! layer's invalidation subscription) would otherwise hold two connections, and each lapin
//! connection keeps two ring buffers of 32 frames (4 MiB each at RabbitMQ's 128 KiB
//! `frame_max`), zero-filled when the connection is tuned and so resident from then on. One
//! connection with a channel per client is also what RabbitMQ recommends.
//!
//! The two share the connection's fate: they open on it together, and when either loses its
//! session the other is stopped (through a token of its own, as at shutdown) and both
//! reconnect together. A client whose own channel fails therefore costs the other a
//! reconnect: a rare event, and one each client already rides out.

use tokio_util::sync::CancellationToken;

use super::{BrokerClient, Link, SessionEnd, SetupError};
use crate::BrokerNode;

/// Runs `A` and `B` on one session; see the module docs.
pub struct Both<A, B>(pub A, pub B);

impl<A: BrokerClient, B: BrokerClient> BrokerClient for Both<A, B> {
    type Channels = (A::Channels, B::Channels);

    /// Opens `A`'s channels, then `B`'s. If `B` fails, `A`'s are simply dropped: the session
    /// closes the connection after any failed set-up, and they go with it.
    async fn open(&self, link: &Link) -> Result<Self::Channels, SetupError> {
        let first = self.0.open(link).await?;
        let second = self.1.open(link).await?;
        Ok((first, second))
    }

    /// Runs both until shutdown, or until one is lost: the other is then stopped as if
    /// shutting down (so it finishes what it holds) and the session is lost for both.
    async fn run(
        &self,
        (first, second): &mut Self::Channels,
        link: &Link,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let stop = shutdown.child_token();
        let stop_on_loss = |end: SessionEnd| {
            if matches!(end, SessionEnd::Lost(_)) {
                stop.cancel();
            }
            end
        };
        let (first_end, second_end) = tokio::join!(
            async { stop_on_loss(self.0.run(first, link, &stop).await) },
            async { stop_on_loss(self.1.run(second, link, &stop).await) },
        );
        match (first_end, second_end) {
            (lost @ SessionEnd::Lost(_), _) | (_, lost @ SessionEnd::Lost(_)) => lost,
            _ => SessionEnd::Shutdown,
        }
    }

    async fn close(&self, (first, second): Self::Channels) {
        tokio::join!(self.0.close(first), self.1.close(second));
    }

    fn connected(&self, node: &BrokerNode) {
        self.0.connected(node);
        self.1.connected(node);
    }

    fn disconnected(&self, reason: &str) {
        self.0.disconnected(reason);
        self.1.disconnected(reason);
    }
}

/// A borrowed client is a client: [`Both`] can hold one that lives on after the session.
impl<C: BrokerClient> BrokerClient for &C {
    type Channels = C::Channels;

    async fn open(&self, link: &Link) -> Result<Self::Channels, SetupError> {
        (**self).open(link).await
    }

    async fn run(
        &self,
        channels: &mut Self::Channels,
        link: &Link,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        (**self).run(channels, link, shutdown).await
    }

    async fn close(&self, channels: Self::Channels) {
        (**self).close(channels).await;
    }

    fn connected(&self, node: &BrokerNode) {
        (**self).connected(node);
    }

    fn disconnected(&self, reason: &str) {
        (**self).disconnected(reason);
    }
}
