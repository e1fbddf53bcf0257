//! Losing a broker node: `kill -9` of the node leading `booksvc.book-changed`, then (once it
//! is back) of the node a storagesvc replica publishes through.

use anyhow::Context;

use crate::{PHASE, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_queue_leader_then_a_publishers_node_loses_nothing_and_fails_no_request() {
    let scenario = Scenario::start().await;
    let cluster = scenario.fleet.cluster;
    let vhost = scenario.fleet.vhost.clone();

    let leader = cluster
        .queue_leader(&vhost, events::QUEUE)
        .await
        .unwrap()
        .context("the queue has a leader")
        .unwrap();
    scenario.phase.set("leader-killed");
    cluster.kill(leader).await.unwrap();
    tokio::time::sleep(PHASE * 2).await;
    let new_leader = cluster.queue_leader(&vhost, events::QUEUE).await.unwrap();
    scenario.phase.set("leader-restarting");
    cluster.start_node(leader).await.unwrap();
    scenario.phase.set("leader-back");
    tokio::time::sleep(PHASE).await;

    let publisher_node = scenario.fleet.storagesvc_node(0).await.unwrap();
    scenario.phase.set("publisher-node-killed");
    cluster.kill(publisher_node).await.unwrap();
    tokio::time::sleep(PHASE * 2).await;
    let moved_to = scenario.fleet.storagesvc_node(0).await.ok();
    scenario.phase.set("publisher-node-restarting");
    cluster.start_node(publisher_node).await.unwrap();
    scenario.phase.set("after");
    tokio::time::sleep(PHASE).await;

    let mut outcome = scenario.finish().await;
    let mut figures = outcome.figures("broker-node-kills");
    figures
        .add("killed_leader", leader)
        .add("new_leader", format!("{new_leader:?}"))
        .add("killed_publisher_node", publisher_node)
        .add("publisher_moved_to", format!("{moved_to:?}"));
    figures.print(crate::figures_dir());

    outcome.assert_nothing_lost();
    outcome.assert_no_failed_request();
    assert_ne!(new_leader, Some(leader), "a new leader was elected");
    assert!(
        moved_to.is_some_and(|node| node != publisher_node),
        "storagesvc 0 reconnected to another node: {moved_to:?}"
    );
}
