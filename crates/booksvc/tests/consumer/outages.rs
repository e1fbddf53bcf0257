//! Outages: Redis down pauses the consumer without dead-lettering anything; a broker restart,
//! a connection cut while a delivery is in hand, a deleted queue or a shutdown lose nothing.

use std::time::Duration;

use booksvc::consumer::ConsumerState;
use events::lapin::options::QueueDeleteOptions;
use events::{DLQ, QUEUE, Topology};
use testkit::TcpProxy;

use crate::helpers::{
    Broker, RunningConsumer, SOON, StuckOnceSink, cache_on, cached_at, cached_title,
    consumer_settings, created, eventually, queue_exists, shared_cache, updated,
};

#[tokio::test]
async fn a_redis_outage_pauses_the_consumer_and_sends_nothing_to_the_dlq() -> anyhow::Result<()> {
    // Arrange: a private Redis, since this test stops it.
    let redis = testkit::Redis::start().await?;
    let cache = cache_on(&redis.url())?;
    let broker = Broker::fresh().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    broker.publish(&[created(1, "before")]).await?;
    assert!(cached_at(&cache, 1, 1).await);

    // Act: Redis goes away while events keep coming.
    redis.stop().await?;
    let during: Vec<_> = (2..=6).map(|id| created(id, "during")).collect();
    broker.publish(&during).await?;
    assert!(
        consumer.reaches(ConsumerState::Paused, SOON).await,
        "never paused"
    );
    // Longer than every retry delay together: a retried event would be in the DLQ by now.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Assert: nothing dead-lettered or retried; everything applied once Redis is back.
    assert_eq!(broker.depth(DLQ).await?, 0, "a good event went to the DLQ");
    for delay in consumer_settings(&broker.url).retry_delays {
        assert_eq!(broker.depth(&Topology::retry_queue_name(delay)).await?, 0);
    }
    assert_eq!(consumer.status.state(), ConsumerState::Paused);
    redis.start_again().await?;
    for id in 2..=6 {
        assert!(
            cached_at(&cache, id, 1).await,
            "book {id} was not applied after the outage"
        );
    }
    assert!(consumer.reaches(ConsumerState::Running, SOON).await);
    assert_eq!(broker.depth(DLQ).await?, 0);
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn a_broker_restart_is_survived() -> anyhow::Result<()> {
    testkit::init_test_logging();
    let rabbit = testkit::RabbitMq::start().await?; // private: this test restarts it
    let url = rabbit.amqp_url();
    let cache = shared_cache().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&url), cache.clone());
    let broker = Broker::connect(&url).await?;
    broker.publish(&[created(1, "before the restart")]).await?;
    assert!(cached_at(&cache, 1, 1).await);
    broker.close().await;

    rabbit.stop().await?;
    assert!(
        consumer.reaches(ConsumerState::Reconnecting, SOON).await,
        "the loss went unnoticed"
    );
    rabbit.start_again().await?;
    assert!(
        consumer.reaches(ConsumerState::Running, SOON).await,
        "never reconnected"
    );

    let broker = Broker::connect(&url).await?;
    broker
        .publish(&[updated(1, 2, "after the restart")])
        .await?;
    assert!(
        cached_at(&cache, 1, 2).await,
        "no event applied after the restart"
    );
    assert_eq!(
        cached_title(&cache, 1).await.as_deref(),
        Some("after the restart")
    );
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn a_connection_lost_while_a_delivery_is_in_hand_is_noticed_and_the_delivery_comes_back()
-> anyhow::Result<()> {
    // Arrange: the consumer reaches the broker through a proxy that can cut its connection,
    // and the handling of the first delivery never finishes.
    let broker = Broker::fresh().await?;
    let port = testkit::RabbitMq::shared().await?.port();
    let proxy = TcpProxy::start(&format!("127.0.0.1:{port}")).await?;
    let proxied = broker.url.replace(
        &format!(":{port}/"),
        &format!(":{}/", proxy.address().port()),
    );
    let sink = StuckOnceSink::new(shared_cache().await?);
    let consumer = RunningConsumer::spawn(consumer_settings(&proxied), sink.clone());
    broker.publish(&[created(1, "in hand")]).await?;
    assert!(sink.is_stuck().await, "the event never reached the sink");

    // Act: the connection dies while that delivery is in hand.
    proxy.cut();

    // Assert: the session ends although the handling never does, and the delivery, never
    // acked, comes back on the next session and is applied.
    assert!(
        cached_at(sink.cache(), 1, 1).await,
        "the consumer stayed in the delivery in hand and never reconnected"
    );
    assert!(consumer.reaches(ConsumerState::Running, SOON).await);
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn a_consumer_cancelled_by_the_broker_reconnects_and_redeclares() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let cache = shared_cache().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    assert!(consumer.reaches(ConsumerState::Running, SOON).await);

    // An operator deletes the queue: RabbitMQ cancels the consumer (basic.cancel).
    broker
        .delete_queue(QUEUE, QueueDeleteOptions::default())
        .await?;

    // The consumer notices, reconnects and declares the queue again. (The test's channel
    // checks on a connection of its own: a passive declare of a missing queue closes it.)
    let redeclared = eventually(SOON, || async {
        queue_exists(&broker.url, QUEUE).await.unwrap_or(false)
    });
    assert!(redeclared.await, "the queue was not declared again");
    assert!(consumer.reaches(ConsumerState::Running, SOON).await);
    let url = broker.url.clone();
    broker.close().await;
    let broker = Broker::connect(&url).await?;
    broker.publish(&[created(1, "after the delete")]).await?;
    assert!(cached_at(&cache, 1, 1).await, "consumption did not resume");
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_acks_what_it_handled_and_loses_nothing() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let cache = shared_cache().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    assert!(consumer.reaches(ConsumerState::Running, SOON).await);
    let events: Vec<_> = (1..=200).map(|id| created(id, "batch")).collect();

    // Stop in the middle of a burst.
    broker.publish(&events).await?;
    let status = consumer.status.clone();
    consumer.stop().await?;
    assert_eq!(status.state(), ConsumerState::Stopped);

    // A new consumer finds whatever the first one did not ack; nothing is lost.
    let next = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    for id in 1..=200 {
        assert!(cached_at(&cache, id, 1).await, "book {id} was lost");
    }
    assert_eq!(broker.depth(DLQ).await?, 0);
    next.stop().await?;
    broker.close().await;
    Ok(())
}
