//! A Redis that answers PING but refuses writes (review finding M2, issue #13) is an outage,
//! not a bad event: out of memory under `noeviction`, or demoted to a read-only replica
//! (what a failover leaves behind). The consumer pauses as when Redis is down; no good event
//! reaches a retry queue or the DLQ, and all are applied once Redis takes writes again.

use std::time::Duration;

use booksvc::consumer::ConsumerState;
use events::{DLQ, Topology};

use crate::helpers::{
    Broker, RunningConsumer, SOON, cache_on, cached_at, consumer_settings, created,
};

/// Runs one command on `url` with a connection of the test's own.
async fn redis_command(url: &str, args: &[&str]) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query_async::<redis::Value>(&mut conn).await?;
    Ok(())
}

/// Nothing went to the DLQ or a retry queue.
async fn nothing_dead_lettered_or_retried(broker: &Broker) -> anyhow::Result<()> {
    assert_eq!(broker.depth(DLQ).await?, 0, "a good event went to the DLQ");
    for delay in consumer_settings(&broker.url).retry_delays {
        let queue = Topology::retry_queue_name(delay);
        assert_eq!(
            broker.depth(&queue).await?,
            0,
            "a good event went to {queue}"
        );
    }
    Ok(())
}

/// Publishes events for `ids` while Redis refuses writes, checks that the consumer pauses and
/// spends no attempt, then lets Redis take writes again (`restore`) and checks they land.
async fn refusal_is_an_outage(
    what: &str,
    refuse: &[&[&str]],
    restore: &[&[&str]],
    ids: std::ops::RangeInclusive<i64>,
) -> anyhow::Result<()> {
    let redis = testkit::Redis::start().await?;
    let url = redis.url();
    let cache = cache_on(&url)?;
    let broker = Broker::fresh().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    broker.publish(&[created(1, "before")]).await?;
    assert!(cached_at(&cache, 1, 1).await, "{what}: warm-up event");

    for command in refuse {
        redis_command(&url, command).await?;
    }
    let during: Vec<_> = ids.clone().map(|id| created(id, "during")).collect();
    broker.publish(&during).await?;
    assert!(
        consumer.reaches(ConsumerState::Paused, SOON).await,
        "{what}: the consumer never paused"
    );
    // Longer than every retry delay together (200 ms + 500 ms in these settings): a good
    // event judged "bad" would be in the DLQ by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nothing_dead_lettered_or_retried(&broker).await?;

    for command in restore {
        redis_command(&url, command).await?;
    }
    for id in ids {
        assert!(
            cached_at(&cache, id, 1).await,
            "{what}: book {id} was not applied once Redis took writes again"
        );
    }
    assert!(
        consumer.reaches(ConsumerState::Running, SOON).await,
        "{what}: the consumer did not resume"
    );
    nothing_dead_lettered_or_retried(&broker).await?;
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn a_redis_out_of_memory_pauses_the_consumer() -> anyhow::Result<()> {
    testkit::init_test_logging();
    refusal_is_an_outage(
        "OOM",
        &[
            &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
            &["CONFIG", "SET", "maxmemory", "1"],
        ],
        &[&["CONFIG", "SET", "maxmemory", "0"]],
        2..=4,
    )
    .await
}

#[tokio::test]
async fn a_read_only_redis_pauses_the_consumer() -> anyhow::Result<()> {
    testkit::init_test_logging();
    // A replica of a master that is not there: it answers PING and reads, refuses writes.
    refusal_is_an_outage(
        "READONLY",
        &[&["REPLICAOF", "127.0.0.1", "1"]],
        &[&["REPLICAOF", "NO", "ONE"]],
        2..=4,
    )
    .await
}
