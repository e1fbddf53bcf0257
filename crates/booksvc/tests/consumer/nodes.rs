//! `AMQP_URL` listing several nodes: booksvc's consumer and its local layer's subscription
//! connect to a live node, report it in the ready body, and move to another node when theirs
//! stops. Two separate private brokers stand in for two nodes of a cluster: the connection
//! logic is the same (a real cluster is the test kit's and the fleet scenarios' business).

use booksvc::cache::LocalState;
use serde_json::Value;

use crate::helpers::{Broker, SOON, cached_at, created, eventually, start_cache_memory, updated};
use e2e::in_process::{Booksvc, unreachable_http_url};

/// A URL no broker answers.
fn dead_node() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("amqp://guest:s3cret@127.0.0.1:{port}/%2f"))
}

/// `host:port` of a testkit URL.
fn node_of(url: &str) -> String {
    url.split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(node, _)| node.to_owned())
        .unwrap_or_default()
}

/// The ready body's consumer, once it is running on one of `nodes` (None: it never was).
async fn consumer_running_on(booksvc: &Booksvc, nodes: &[String]) -> Option<(String, Value)> {
    let found = std::cell::RefCell::new(None);
    let running = eventually(SOON, || async {
        let Ok(response) = booksvc.get("/healthz/ready").await else {
            return false;
        };
        let body: Value = response.json().await.unwrap_or_default();
        let consumer = &body["dependencies"]["consumer"];
        let node = consumer["node"].as_str().unwrap_or_default().to_owned();
        let on_one = consumer["status"] == "running" && nodes.contains(&node);
        if on_one {
            *found.borrow_mut() = Some((node, body));
        }
        on_one
    })
    .await;
    running.then(|| found.into_inner()).flatten()
}

#[tokio::test]
async fn with_a_dead_node_first_the_consumer_runs_on_the_live_one_and_says_so() -> anyhow::Result<()>
{
    let broker = Broker::fresh().await?;
    let list = format!("{},{}", dead_node()?, broker.url);
    let booksvc = Booksvc::options(&unreachable_http_url()?)
        .consumer(&list)
        .spawn()
        .await?;
    // No storagesvc: the events must be applied, not settled with it (decision 0013).
    start_cache_memory(&booksvc.cache).await?;

    let (node, body) = consumer_running_on(&booksvc, &[node_of(&broker.url)])
        .await
        .expect("the consumer never ran on the live node");
    assert_eq!(node, node_of(&broker.url));
    let shown = body.to_string();
    assert!(
        !shown.contains("s3cret") && !shown.contains("guest"),
        "{shown}"
    );

    broker
        .publish(&[created(1, "through the live node")])
        .await?;
    assert!(cached_at(&booksvc.cache, 1, 1).await, "no event applied");
    booksvc.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_node_stops_booksvc_moves_to_the_other_and_keeps_consuming() -> anyhow::Result<()>
{
    testkit::init_test_logging();
    let (first, second) = tokio::try_join!(testkit::RabbitMq::start(), testkit::RabbitMq::start())?;
    let brokers = [first, second];
    let urls: Vec<String> = brokers.iter().map(testkit::RabbitMq::amqp_url).collect();
    let nodes: Vec<String> = urls.iter().map(|url| node_of(url)).collect();
    let booksvc = Booksvc::options(&unreachable_http_url()?)
        .consumer(&urls.join(","))
        .spawn()
        .await?;
    // No storagesvc: the events must be applied, not settled with it (decision 0013).
    start_cache_memory(&booksvc.cache).await?;

    let (node, _) = consumer_running_on(&booksvc, &nodes)
        .await
        .expect("the consumer never ran");
    let in_use = nodes.iter().position(|n| *n == node).unwrap_or_default();
    let other = 1 - in_use;
    let broker = Broker::connect(&urls[in_use]).await?;
    broker.publish(&[created(1, "before")]).await?;
    assert!(cached_at(&booksvc.cache, 1, 1).await, "no event applied");
    broker.close().await;

    brokers[in_use].stop_app().await?;
    let moved = consumer_running_on(&booksvc, &nodes[other..=other]).await;
    assert!(
        moved.is_some(),
        "the consumer did not move to {}",
        nodes[other]
    );
    // The invalidation subscription moved too: the local layer is live again.
    assert!(
        eventually(SOON, || async { booksvc.local.state() == LocalState::Live }).await,
        "the local layer stayed bypassed"
    );

    let broker = Broker::connect(&urls[other]).await?;
    broker.publish(&[updated(1, 2, "after")]).await?;
    assert!(
        cached_at(&booksvc.cache, 1, 2).await,
        "no event applied on the other node"
    );
    booksvc.stop().await?;
    broker.close().await;
    brokers[in_use].start_app().await
}
