//! On a real three-node cluster (testkit's private one): every queue of the topology keeps
//! every message when the node leading it is killed (`kill -9`), and when the node the
//! client was connected to is; a client that reconnects to a surviving node can declare the
//! topology again; and a retry queue still sends expired messages back to the main queue
//! when its leader node is killed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use events::{BookChanged, ConfirmPublisher, DLQ, DLQ_EXCHANGE, EXCHANGE, QUEUE, RETRY_EXCHANGE};
use events::{Outgoing, Topology};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use testkit::RabbitMqCluster;

use crate::{CONFIRM_TIMEOUT, CONNECT_TIMEOUT, event};

/// Messages published into each queue before the kills.
const PER_QUEUE: i64 = 50;
/// Long enough for the whole test: these messages must stay in their retry queue.
const HOLDING_DELAY: Duration = Duration::from_secs(3600);
/// Short enough to watch it expire.
const SHORT_DELAY: Duration = Duration::from_secs(2);
/// Leader elections and reconnections on a loaded machine; generous on purpose.
const SETTLE: Duration = Duration::from_secs(60);

fn topology() -> Topology {
    Topology {
        retry_delays: vec![SHORT_DELAY, HOLDING_DELAY],
    }
}

/// The three queues under test, with the exchange and routing key that reach each, and the
/// book ids published into it (disjoint ranges, so a message in the wrong queue shows).
fn targets() -> [(String, &'static str, String, std::ops::Range<i64>); 3] {
    let holding = Topology::retry_queue_name(HOLDING_DELAY);
    [
        (
            QUEUE.to_owned(),
            EXCHANGE,
            "book.updated".to_owned(),
            1_000..1_000 + PER_QUEUE,
        ),
        (
            holding.clone(),
            RETRY_EXCHANGE,
            Topology::retry_routing_key(HOLDING_DELAY),
            2_000..2_000 + PER_QUEUE,
        ),
        (
            DLQ.to_owned(),
            DLQ_EXCHANGE,
            "book.updated".to_owned(),
            3_000..3_000 + PER_QUEUE,
        ),
    ]
}

/// A connection to one node with the topology declared on it.
struct Client {
    node: usize,
    connection: Connection,
    channel: Channel,
}

impl Client {
    /// Connects to node `node` (retrying while it elects leaders or boots) and declares the
    /// topology there, which must succeed with any one node of the cluster down.
    async fn connect(cluster: &RabbitMqCluster, vhost: &str, node: usize) -> Result<Client> {
        let url = cluster.node_url(node, vhost);
        let deadline = Instant::now() + SETTLE;
        loop {
            let attempt = async {
                let connection = events::connect(&url, "events-cluster-tests", CONNECT_TIMEOUT)
                    .await
                    .context("connect")?;
                let channel = connection.create_channel().await?;
                topology()
                    .declare(&channel)
                    .await
                    .context("declare the topology")?;
                anyhow::Ok(Client {
                    node,
                    connection,
                    channel,
                })
            };
            match attempt.await {
                Ok(client) => return Ok(client),
                Err(error) if Instant::now() > deadline => {
                    return Err(
                        error.context(format!("node {node}: still failing after {SETTLE:?}"))
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        ids: std::ops::Range<i64>,
    ) -> Result<()> {
        let messages: Vec<Outgoing> = ids
            .clone()
            .map(|id| {
                let mut message = event(id);
                message.routing_key = routing_key.to_owned();
                message
            })
            .collect();
        let publisher = ConfirmPublisher::open(&self.connection).await?;
        let report = publisher
            .publish_in_order(exchange, &messages, 16, CONFIRM_TIMEOUT)
            .await;
        ensure!(
            report.confirmed == messages.len(),
            "{exchange}/{routing_key}: {report:?}"
        );
        Ok(())
    }

    /// Ready messages in `queue` (nobody consumes in these tests).
    async fn count(&self, queue: &str) -> Result<u32> {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = self
            .channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await?;
        Ok(queue.message_count())
    }

    /// Waits until `queue` holds exactly `expected` messages.
    async fn expect_count(&self, queue: &str, expected: u32) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let count = self.count(queue).await?;
            if count == expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{queue} holds {count} messages through node {}, not {expected}",
                    self.node
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Takes every message out of `queue`, adding their book ids to `ids` as they arrive
    /// (duplicates collapse), so an error part-way loses none of those already taken.
    async fn drain_into(&self, queue: &str, ids: &mut BTreeSet<i64>) -> Result<()> {
        let options = BasicGetOptions { no_ack: true };
        while let Some(message) = self.channel.basic_get(queue.into(), options).await? {
            ids.insert(BookChanged::parse(&message.delivery.data)?.book_id);
        }
        Ok(())
    }

    async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// The node leading `queue`, once there is one.
async fn leader(cluster: &RabbitMqCluster, vhost: &str, queue: &str) -> Result<usize> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(node) = cluster.queue_leader(vhost, queue).await? {
            return Ok(node);
        }
        ensure!(
            Instant::now() < deadline,
            "{queue}: no leader within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Takes every message out of `queue` through a survivor of node `down`, connecting again
/// when the broker fails a get: RabbitMQ 4.0 answers a `basic.get` on a quorum queue whose
/// leader has just died, or is still being elected, by closing the connection
/// (`INTERNAL_ERROR ... nodedown`). Returns the client in use and the ids taken.
async fn drain_through_survivor(
    cluster: &RabbitMqCluster,
    vhost: &str,
    down: usize,
    mut client: Client,
    queue: &str,
    ids: &mut BTreeSet<i64>,
) -> Result<Client> {
    let deadline = Instant::now() + SETTLE;
    loop {
        match client.drain_into(queue, ids).await {
            Ok(()) => return Ok(client),
            Err(error) if Instant::now() > deadline => {
                return Err(
                    error.context(format!("draining {queue}: still failing after {SETTLE:?}"))
                );
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                client = Client::connect(cluster, vhost, survivor(cluster, down)).await?;
            }
        }
    }
}

fn survivor(cluster: &RabbitMqCluster, down: usize) -> usize {
    (0..cluster.size())
        .find(|node| *node != down && cluster.is_up(*node))
        .expect("a three-node cluster has a survivor")
}

#[tokio::test]
async fn no_queue_loses_a_message_when_any_one_node_is_killed() -> Result<()> {
    testkit::init_test_logging();
    let cluster = RabbitMqCluster::start(3).await?;
    let vhost = cluster.fresh_vhost().await?;
    let client = Client::connect(&cluster, &vhost, 0).await?;
    for (_, exchange, key, ids) in targets() {
        client.publish(exchange, &key, ids).await?;
    }
    client.close().await;
    let expected = u32::try_from(PER_QUEUE)?;

    // Kill the leader of each queue in turn (the node comes back before the next kill, so at
    // most one node is ever down), then count every queue through a survivor.
    for (queue, ..) in targets() {
        let down = leader(&cluster, &vhost, &queue).await?;
        cluster.kill(down).await?;
        let client = Client::connect(&cluster, &vhost, survivor(&cluster, down)).await?;
        for (counted, ..) in targets() {
            client
                .expect_count(&counted, expected)
                .await
                .with_context(|| format!("after killing node {down}, {queue}'s leader"))?;
        }
        client.close().await;
        cluster.start_node(down).await?;
    }

    // Kill the node the client is connected to: the connection dies with it; a new one to a
    // survivor declares the topology and finds everything.
    let client = Client::connect(&cluster, &vhost, 1).await?;
    cluster.kill(1).await?;
    let deadline = Instant::now() + SETTLE;
    while client.connection.status().connected() {
        ensure!(
            Instant::now() < deadline,
            "the connection to the killed node stayed up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = Client::connect(&cluster, &vhost, survivor(&cluster, 1)).await?;
    for (queue, _, _, ids) in targets() {
        client.expect_count(&queue, expected).await?;
        let mut found = BTreeSet::new();
        client = drain_through_survivor(&cluster, &vhost, 1, client, &queue, &mut found).await?;
        ensure!(
            found == ids.clone().collect(),
            "{queue}: {} of {PER_QUEUE} ids back, or ids from another queue",
            found.len()
        );
    }

    client.close().await;
    cluster.start_node(1).await?;

    // A retry queue's messages return to the main queue when they expire even though the
    // retry queue's leader is killed meanwhile (dead-lettering is at-least-once: duplicates
    // are allowed, losses are not).
    let short = Topology::retry_queue_name(SHORT_DELAY);
    let down = leader(&cluster, &vhost, &short).await?;
    let mut client = Client::connect(&cluster, &vhost, survivor(&cluster, down)).await?;
    let ids = 4_000..4_000 + PER_QUEUE;
    client
        .publish(
            RETRY_EXCHANGE,
            &Topology::retry_routing_key(SHORT_DELAY),
            ids.clone(),
        )
        .await?;
    cluster.kill(down).await?;
    let deadline = Instant::now() + SETTLE;
    let mut returned = BTreeSet::new();
    while returned.len() < ids.clone().count() {
        ensure!(
            Instant::now() < deadline,
            "only {} of {PER_QUEUE} expired messages came back to {QUEUE}",
            returned.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        client =
            drain_through_survivor(&cluster, &vhost, down, client, QUEUE, &mut returned).await?;
    }
    client.expect_count(&short, 0).await?;
    ensure!(
        returned == ids.collect(),
        "ids from elsewhere in {QUEUE}: {returned:?}"
    );
    client.close().await;
    Ok(())
}
