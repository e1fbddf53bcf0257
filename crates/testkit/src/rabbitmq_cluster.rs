//! [`RabbitMqCluster`]: a private multi-node RabbitMQ cluster, for tests that lose a node.
//!
//! Always local processes from the installed Debian binaries, whatever the backend (there is
//! no container cluster; see `local::rabbitmq_cluster`). Nodes are addressed by index,
//! `0..size`.

use std::sync::Arc;

use crate::local::rabbitmq_cluster::LocalRabbitMqCluster;
use crate::worker;

/// A running RabbitMQ cluster of its own; dropping it stops every node and deletes its data.
#[derive(Debug)]
pub struct RabbitMqCluster {
    inner: Arc<LocalRabbitMqCluster>,
}

impl RabbitMqCluster {
    /// Starts `size` nodes (in parallel) and clusters them. Takes ~10-20 s here.
    ///
    /// # Errors
    /// When RabbitMQ is not installed (the error says what to install), or a node does not
    /// start or join.
    pub async fn start(size: usize) -> anyhow::Result<RabbitMqCluster> {
        let inner = worker::run_blocking(move || LocalRabbitMqCluster::start(size)).await?;
        Ok(RabbitMqCluster {
            inner: Arc::new(inner),
        })
    }

    /// How many nodes the cluster has (running or not).
    pub fn size(&self) -> usize {
        self.inner.size()
    }

    /// The AMQP port of node `index`.
    ///
    /// # Panics
    /// When `index` is not below [`RabbitMqCluster::size`].
    pub fn port(&self, index: usize) -> u16 {
        self.inner.port(index).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The Erlang node name of node `index`, e.g. `testkit-…-n1@localhost`.
    ///
    /// # Panics
    /// When `index` is not below [`RabbitMqCluster::size`].
    pub fn node_name(&self, index: usize) -> &str {
        self.inner
            .node_name(index)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Node `index`'s URL for `vhost` (already URL-safe, e.g. from
    /// [`RabbitMqCluster::fresh_vhost`], or `%2f`).
    pub fn node_url(&self, index: usize, vhost: &str) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", self.port(index))
    }

    /// Every node's URL for `vhost`, comma-separated, in node order: the form `AMQP_URL`
    /// takes for a cluster.
    pub fn amqp_url_list(&self, vhost: &str) -> String {
        (0..self.size())
            .map(|index| self.node_url(index, vhost))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The default vhost's URL list (see [`RabbitMqCluster::amqp_url_list`]).
    pub fn amqp_url(&self) -> String {
        self.amqp_url_list("%2f")
    }

    /// Creates a unique vhost with full permissions for `guest` and returns its name
    /// (`[a-z0-9-]` only, so it needs no escaping in a URL); pass it to
    /// [`RabbitMqCluster::node_url`] or [`RabbitMqCluster::amqp_url_list`].
    pub async fn fresh_vhost(&self) -> anyhow::Result<String> {
        let vhost = format!("testkit-{}", uuid::Uuid::new_v4().simple());
        let name = vhost.clone();
        self.on_cluster(move |cluster| cluster.add_vhost(&name))
            .await?;
        Ok(vhost)
    }

    /// Whether node `index` is running (as far as this handle knows: it was not killed or
    /// stopped through it).
    pub fn is_up(&self, index: usize) -> bool {
        self.inner.is_up(index).unwrap_or(false)
    }

    /// `kill -9` of node `index` (its whole process group): no shutdown, nothing handed over.
    pub async fn kill(&self, index: usize) -> anyhow::Result<()> {
        self.on_cluster(move |cluster| cluster.kill(index)).await
    }

    /// A graceful stop of node `index` (SIGTERM).
    pub async fn stop(&self, index: usize) -> anyhow::Result<()> {
        self.on_cluster(move |cluster| cluster.stop(index)).await
    }

    /// Starts node `index` again after [`RabbitMqCluster::kill`] or
    /// [`RabbitMqCluster::stop`] and waits until it accepts AMQP connections; it rejoins the
    /// cluster from its own data.
    pub async fn start_node(&self, index: usize) -> anyhow::Result<()> {
        self.on_cluster(move |cluster| cluster.start_node(index))
            .await
    }

    /// `rabbitmqctl stop_app` on node `index`: its connections drop, the VM keeps running.
    pub async fn stop_app(&self, index: usize) -> anyhow::Result<()> {
        self.on_cluster(move |cluster| cluster.stop_app(index))
            .await
    }

    /// `rabbitmqctl start_app` on node `index`; waits until AMQP accepts connections.
    pub async fn start_app(&self, index: usize) -> anyhow::Result<()> {
        self.on_cluster(move |cluster| cluster.start_app(index))
            .await
    }

    /// The index of the node leading quorum queue `queue` in `vhost` (`/` for the default),
    /// as a running node reports it: `None` during an election. Fails when the queue does not
    /// exist.
    pub async fn queue_leader(&self, vhost: &str, queue: &str) -> anyhow::Result<Option<usize>> {
        let (vhost, queue) = (vhost.to_owned(), queue.to_owned());
        self.on_cluster(move |cluster| cluster.queue_leader(&vhost, &queue))
            .await
    }

    async fn on_cluster<T: Send + 'static>(
        &self,
        work: impl FnOnce(&LocalRabbitMqCluster) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let cluster = Arc::clone(&self.inner);
        worker::run_blocking(move || work(&cluster)).await
    }
}
