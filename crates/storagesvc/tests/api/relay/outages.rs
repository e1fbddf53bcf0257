//! Broker and database outages, caused for real on private servers: writes keep committing,
//! and every event goes out once the dependency is back (duplicates allowed, losses not).

use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use storagesvc::relay::RelaySettings;

use super::support::{
    QueueReader, Received, assert_all_arrived, database_at, enqueue_each, interleaved_events,
    migrated_database, relay_settings, unsent_rows,
};
use super::{RunningRelay, wait_until};
use crate::helpers::{TestApp, book_body};

/// How long a relay gets to reconnect and drain after an outage (RabbitMQ takes 5-8 s to
/// accept connections after a full restart here).
const RECOVERY: Duration = Duration::from_secs(30);

/// Writes `versions` rounds of events for `books` books while the broker is away, checks
/// they all committed, and returns how many there were.
async fn write_during_outage(
    pool: &sqlx::PgPool,
    books: i64,
    versions: i64,
) -> anyhow::Result<usize> {
    let events = interleaved_events(books, versions);
    enqueue_each(pool, &events).await?;
    Ok(events.len())
}

async fn wait_for_empty_outbox(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    while unsent_rows(pool).await? > 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_the_broker_app_is_stopped_arrive_when_it_returns()
-> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let rabbit = testkit::RabbitMq::start().await?;
    let amqp_url = rabbit.amqp_url();
    // Declare the queue first so events published before and after the outage land in it.
    drop(QueueReader::connect(&amqp_url).await?);
    let relay = RunningRelay::spawn(&pool, relay_settings(&amqp_url));
    let status = relay.status.clone();
    wait_until(|| status.broker_connected(), "the relay to connect").await?;

    rabbit.stop_app().await?;
    wait_until(
        || !status.broker_connected(),
        "the relay to notice the outage",
    )
    .await?;
    let written = write_during_outage(&pool, 3, 20).await?;
    assert_eq!(
        unsent_rows(&pool).await?,
        written as i64,
        "nothing can go out meanwhile"
    );
    assert!(status.last_error().is_some(), "the outage is reported");
    rabbit.start_app().await?;

    wait_for_empty_outbox(&pool).await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let received = reader.take(written, RECOVERY).await?;
    relay.stop().await?;
    assert_all_arrived(&received, 3, 20);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_full_broker_restart_in_the_middle_of_writes() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    let rabbit = testkit::RabbitMq::start().await?;
    let amqp_url = rabbit.amqp_url();
    drop(QueueReader::connect(&amqp_url).await?);
    let relay = RunningRelay::spawn(&pool, relay_settings(&amqp_url));
    let status = relay.status.clone();
    wait_until(|| status.broker_connected(), "the relay to connect").await?;
    // Some events go out before the restart; they must survive it in the durable queue.
    enqueue_each(&pool, &interleaved_events(2, 10)).await?;
    wait_for_empty_outbox(&pool).await?;

    rabbit.stop().await?;
    let more: Vec<_> = interleaved_events(2, 40).split_off(20);
    enqueue_each(&pool, &more).await?;
    rabbit.start_again().await?;

    wait_for_empty_outbox(&pool).await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let received = reader.take(80, RECOVERY).await?;
    relay.stop().await?;
    assert_all_arrived(&received, 2, 40);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_rides_out_a_database_restart_and_publishes_what_follows() -> anyhow::Result<()> {
    let postgres = testkit::Postgres::start().await?;
    let pool = database_at(&postgres.fresh_database().await?).await?;
    let amqp_url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
    let mut reader = QueueReader::connect(&amqp_url).await?;
    let config = RelaySettings {
        poll_interval: Duration::from_secs(3600),
        ..relay_settings(&amqp_url)
    };
    let relay = RunningRelay::spawn(&pool, config);
    let status = relay.status.clone();
    wait_until(|| status.broker_connected(), "the relay to connect").await?;

    postgres.stop().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.start_again().await?;
    // With an hour-long poll, only a re-established LISTEN can wake the relay for these.
    enqueue_each(&pool, &interleaved_events(2, 5)).await?;

    let received = reader.take(10, RECOVERY).await?;
    relay.stop().await?;
    assert_all_arrived(&received, 2, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_writes_succeed_while_the_broker_is_down_and_their_events_follow() -> anyhow::Result<()>
{
    let rabbit = testkit::RabbitMq::start().await?;
    let amqp_url = rabbit.amqp_url();
    drop(QueueReader::connect(&amqp_url).await?);
    let app = TestApp::spawn_with(|settings| {
        settings.amqp_url = amqp_url.parse().expect("a test broker URL parses");
        settings.outbox_reconnect_max = Duration::from_secs(1);
    })
    .await?;

    rabbit.stop_app().await?;
    let mut ids = Vec::new();
    for n in 0..5 {
        let created = app
            .create_book_ok(&format!("Written during the outage {n}"))
            .await?;
        let id = created["id"].as_i64().context("a created book has an id")?;
        for version in 2..=3 {
            let body = book_body(&format!("Version {version}"), "An Author", "Changed");
            let response = app.update_book(id, &body, None).await?;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "update of book {id} during the outage"
            );
        }
        ids.push(id);
    }
    rabbit.start_app().await?;

    let mut reader = QueueReader::connect(&amqp_url).await?;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + RECOVERY;
    while !all_versions_arrived(&received, &ids, 3) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "events were lost: got {received:?}"
        );
        received.extend(reader.take_until_quiet(Duration::from_millis(500)).await?);
    }
    app.stop().await?;
    Ok(())
}

fn all_versions_arrived(received: &[Received], ids: &[i64], versions: i64) -> bool {
    ids.iter().all(|&id| {
        (1..=versions).all(|version| {
            received
                .iter()
                .any(|m| m.event.book_id == id && m.event.version == version)
        })
    })
}

/// The index in `urls` of the broker whose `host:port` is `node`.
fn index_of(urls: &[String], node: &str) -> usize {
    urls.iter()
        .position(|url| url.contains(&format!("@{node}/")))
        .unwrap_or_else(|| panic!("{node} is not one of {urls:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_node_stops_the_relay_moves_to_another_and_carries_on() -> anyhow::Result<()> {
    let pool = migrated_database().await?;
    // Two separate brokers stand in for two nodes of a cluster: the relay's side is the same.
    let (first, second) = tokio::try_join!(testkit::RabbitMq::start(), testkit::RabbitMq::start())?;
    let brokers = [first, second];
    let urls: Vec<String> = brokers.iter().map(testkit::RabbitMq::amqp_url).collect();
    for url in &urls {
        drop(QueueReader::connect(url).await?);
    }
    let relay = RunningRelay::spawn(&pool, relay_settings(&urls.join(",")));
    let status = relay.status.clone();
    wait_until(|| status.node().is_some(), "the relay to connect").await?;
    let in_use = index_of(&urls, &status.node().context("connected")?);
    let other = 1 - in_use;

    let events = interleaved_events(2, 10);
    enqueue_each(&pool, &events[..10]).await?;
    wait_for_empty_outbox(&pool).await?;
    brokers[in_use].stop_app().await?;
    wait_until(
        || {
            status
                .node()
                .is_some_and(|node| index_of(&urls, &node) == other)
        },
        "the relay to move to the other node",
    )
    .await?;
    enqueue_each(&pool, &events[10..]).await?;
    wait_for_empty_outbox(&pool).await?;
    relay.stop().await?;

    let mut after = QueueReader::connect(&urls[other]).await?;
    let mut received = after.take(10, RECOVERY).await?;
    brokers[in_use].start_app().await?;
    let mut before = QueueReader::connect(&urls[in_use]).await?;
    received.extend(before.take(10, RECOVERY).await?);
    assert_all_arrived(&received, 2, 10);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_while_the_broker_does_not_answer() -> anyhow::Result<()> {
    // Review finding L3: the relay's close RPCs had no timeout, so a broker that stopped
    // reading the connection (a disk or memory alarm blocks it) held the shutdown.
    let pool = migrated_database().await?;
    let broker = testkit::RabbitMq::shared().await?;
    let url = broker.fresh_vhost().await?;
    let upstream = format!("127.0.0.1:{}", broker.port());
    let proxy = testkit::TcpProxy::start(&upstream).await?;
    let config = RelaySettings {
        confirm_timeout: Duration::from_millis(500),
        ..relay_settings(&url.replace(&upstream, &proxy.address().to_string()))
    };
    let relay = RunningRelay::spawn(&pool, config);
    let status = relay.status.clone();
    wait_until(|| status.broker_connected(), "the relay to connect").await?;

    proxy.set_latency(testkit::Direction::Downstream, Duration::from_secs(3600));
    // Two channel closes and a connection close, each bounded by `confirm_timeout`:
    // `stop` allows 10 s.
    relay.stop().await
}
