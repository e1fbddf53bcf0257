//! The private RabbitMQ cluster: three nodes form one cluster, and killing one (the leader of
//! a quorum queue) leaves the other two serving that queue with its messages.

use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

use crate::rabbitmq::{connect, publish_persistent};
use crate::{eventually, timed};

const QUEUE: &str = "replicated";

async fn open(url: &str) -> (Connection, Channel) {
    let connection = eventually(Duration::from_secs(30), || connect(url)).await;
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// Waits until `channel`'s node reports `expected` messages in the queue. A node answers 0
/// while the queue has no leader (an election, or itself just rejoined), so one answer
/// proves nothing.
async fn expect_messages(channel: &Channel, expected: u32, through: &str) {
    let count = eventually(Duration::from_secs(60), || async {
        match message_count(channel).await {
            Ok(count) if count == expected => Ok(count),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(count, expected, "{through}");
}

async fn message_count(channel: &Channel) -> lapin::Result<u32> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(QUEUE.into(), options, FieldTable::default())
        .await?;
    Ok(queue.message_count())
}

#[tokio::test]
async fn three_nodes_form_one_cluster_and_two_keep_serving_when_one_is_killed() {
    let cluster = timed(
        "rabbitmq cluster start (3 nodes)",
        testkit::RabbitMqCluster::start(3),
    )
    .await
    .unwrap();
    assert_eq!(cluster.size(), 3);
    let vhost = cluster.fresh_vhost().await.unwrap();
    let urls = cluster.amqp_url_list(&vhost);
    assert_eq!(urls.split(',').count(), 3, "{urls}");
    for (index, url) in urls.split(',').enumerate() {
        assert_eq!(url, cluster.node_url(index, &vhost));
    }

    // A quorum queue declared through node 0 is visible through every node: one cluster.
    let (_first, channel) = open(&cluster.node_url(0, &vhost)).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(QUEUE.into(), options, args)
        .await
        .unwrap();
    publish_persistent(&channel, QUEUE, b"kept").await;
    for index in 0..3 {
        let (_connection, channel) = open(&cluster.node_url(index, &vhost)).await;
        expect_messages(&channel, 1, &format!("through node {index}")).await;
    }

    let leader = eventually(Duration::from_secs(30), || async {
        cluster
            .queue_leader(&vhost, QUEUE)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no leader yet"))
    })
    .await;
    timed("kill -9 the queue's leader", cluster.kill(leader))
        .await
        .unwrap();
    assert!(!cluster.is_up(leader));

    // The two survivors elect a new leader and serve the message.
    let survivors: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    for &index in &survivors {
        let (_connection, channel) = open(&cluster.node_url(index, &vhost)).await;
        expect_messages(&channel, 1, &format!("through surviving node {index}")).await;
    }
    let new_leader = eventually(Duration::from_secs(30), || async {
        cluster
            .queue_leader(&vhost, QUEUE)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no leader yet"))
    })
    .await;
    assert!(
        survivors.contains(&new_leader),
        "leader {new_leader} was killed"
    );
    let (_connection, channel) = open(&cluster.node_url(survivors[0], &vhost)).await;
    publish_persistent(&channel, QUEUE, b"after the loss").await;
    let got = channel
        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message published before the kill");
    assert_eq!(got.delivery.data, b"kept");

    // Started again, the killed node rejoins from its own data.
    timed("restart the killed node", cluster.start_node(leader))
        .await
        .unwrap();
    let (_connection, channel) = open(&cluster.node_url(leader, &vhost)).await;
    // One message left: "kept" was taken, "after the loss" was published meanwhile.
    expect_messages(
        &channel,
        1,
        "the rejoined node sees the queue and what is left in it",
    )
    .await;
}
