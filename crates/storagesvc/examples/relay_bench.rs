//! Outbox relay benchmark: `cargo run --release -p storagesvc --example relay_bench`.
//!
//! Measures, against real servers (private testkit PostgreSQL and RabbitMQ, or
//! `BENCH_DATABASE_URL` / `BENCH_AMQP_URL`; an external database must be empty or disposable):
//! 1. relay throughput: `BENCH_EVENTS` (20,000) queued events drained by `OutboxRelay::run`
//!    (connect included: the clock starts before the relay does);
//! 2. a raw confirmed-publish loop of the same messages with the same window, same broker,
//!    same run — the ceiling the relay is compared against (goal: ratio >= 0.8);
//! 3. write → event-in-queue latency at a steady `BENCH_RATE` writes/s (500) for
//!    `BENCH_SECONDS` (10): commit time vs consumer receive time, p50/p99.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use events::{BookChanged, BookData, ConfirmPublisher, EXCHANGE, Outgoing, QUEUE, Topology};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use storagesvc::outbox;
use storagesvc::relay::{OutboxRelay, RelaySettings};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Commit instants by event id, filled by the writer and read by the consumer.
type CommitTimes = Arc<Mutex<HashMap<Uuid, Instant>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = env_number("BENCH_EVENTS", 20_000)?;
    let rate = env_number("BENCH_RATE", 500)?;
    let seconds = env_number("BENCH_SECONDS", 10)?;
    let servers = Servers::start().await?;
    let pool = servers.migrated_pool().await?;
    let config = bench_config(&servers.amqp_url);
    let (connection, publisher) = open_publisher(&config).await?;

    // Rounds alternate relay and raw runs on identical data, so a busy moment on this shared
    // machine skews one round, not the verdict: the median ratio is reported.
    let mut ratios = Vec::new();
    for round in 1..=env_number("BENCH_ROUNDS", 3)? {
        let ratio = measure_round(&pool, &config, &publisher, events).await?;
        println!("round {round}: ratio relay / raw = {ratio:.2}");
        ratios.push(ratio);
        purge(&connection).await?;
        sqlx::query("TRUNCATE outbox").execute(&pool).await?;
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio:   median relay / raw = {:.2} (goal >= 0.80)",
        ratios[ratios.len() / 2]
    );
    purge(&connection).await?;
    let latencies = measure_latency(&pool, &config, rate, seconds).await?;
    print_latency(&latencies, rate);
    Ok(())
}

/// Writes `events`, drains them with the relay, republishes them raw; returns the ratio.
async fn measure_round(
    pool: &PgPool,
    config: &RelaySettings,
    publisher: &ConfirmPublisher,
    events: usize,
) -> anyhow::Result<f64> {
    let written = write_events(pool, events).await?;
    let relayed = drain(pool, config).await?;
    let raw = raw_publish(pool, config, publisher).await?;
    println!(
        "writes {:.0}/s (8 writers) | relay {:.0}/s (batch {}, window {}) | raw {:.0}/s (window {})",
        per_sec(events, written),
        per_sec(events, relayed),
        config.batch_size,
        config.publish_window,
        per_sec(events, raw),
        config.publish_window,
    );
    Ok(raw.as_secs_f64() / relayed.as_secs_f64())
}

/// The servers to measure against: private ones unless URLs are given.
struct Servers {
    database_url: String,
    amqp_url: String,
    // Private servers live until the benchmark ends.
    _postgres: Option<testkit::Postgres>,
    _rabbit: Option<testkit::RabbitMq>,
}

impl Servers {
    async fn start() -> anyhow::Result<Servers> {
        let (database_url, postgres) = match std::env::var("BENCH_DATABASE_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let postgres = testkit::Postgres::start().await?;
                (postgres.fresh_database().await?, Some(postgres))
            }
        };
        let (amqp_url, rabbit) = match std::env::var("BENCH_AMQP_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let rabbit = testkit::RabbitMq::start().await?;
                (rabbit.amqp_url(), Some(rabbit))
            }
        };
        Ok(Servers {
            database_url,
            amqp_url,
            _postgres: postgres,
            _rabbit: rabbit,
        })
    }

    async fn migrated_pool(&self) -> anyhow::Result<PgPool> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(&self.database_url)
            .await?;
        storagesvc::database::migrate(&pool).await?;
        Ok(pool)
    }
}

/// The service's defaults (OUTBOX_BATCH_SIZE 256, OUTBOX_PUBLISH_WINDOW 64, ...).
fn bench_config(amqp_url: &str) -> RelaySettings {
    RelaySettings {
        amqp_url: amqp_url.parse().expect("a broker URL parses"),
        batch_size: env_number("BENCH_BATCH", 256).unwrap_or(256),
        publish_window: env_number("BENCH_WINDOW", 64).unwrap_or(64),
        poll_interval: Duration::from_secs(5),
        confirm_timeout: Duration::from_secs(5),
        reconnect_max: Duration::from_secs(10),
        retention: Duration::from_secs(60),
        topology: Topology::default(),
        db_timeout: Duration::from_secs(6),
    }
}

async fn open_publisher(
    config: &RelaySettings,
) -> anyhow::Result<(lapin::Connection, ConfirmPublisher)> {
    let connection = events::connect_node(
        config.amqp_url.first(),
        "relay-bench",
        Duration::from_secs(10),
    )
    .await?;
    let channel = connection.create_channel().await?;
    config.topology.declare(&channel).await?;
    let publisher = ConfirmPublisher::open(&connection).await?;
    Ok((connection, publisher))
}

/// An update of one of 1,000 books; versions grow per book.
fn event(n: usize) -> BookChanged {
    let id = (n % 1_000) as i64 + 1;
    let version = (n / 1_000) as i64 + 1;
    let book = BookData {
        id,
        title: format!("Book {id}"),
        author: "Bench Author".to_owned(),
        desc: "A description of typical length for a book in the store.".to_owned(),
    };
    BookChanged::updated(book, version, Utc::now())
}

/// Writes `count` events, one transaction each, from 8 concurrent writers.
async fn write_events(pool: &PgPool, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for n in (writer..count).step_by(8) {
                    write_one(&pool, &event(n)).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    Ok(started.elapsed())
}

async fn write_one(pool: &PgPool, event: &BookChanged) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Runs the real relay loop (`OutboxRelay::run`) until the outbox is empty.
async fn drain(pool: &PgPool, config: &RelaySettings) -> anyhow::Result<Duration> {
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let relay = tokio::spawn(OutboxRelay::new(pool.clone(), config.clone()).run(shutdown.clone()));
    while outbox::stats(pool).await?.backlog > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    relay.await?;
    Ok(took)
}

/// Publishes the same rows again, straight from memory, with the same window.
async fn raw_publish(
    pool: &PgPool,
    config: &RelaySettings,
    publisher: &ConfirmPublisher,
) -> anyhow::Result<Duration> {
    let rows: Vec<(Uuid, String, Vec<u8>)> =
        sqlx::query_as("SELECT event_id, routing_key, payload FROM outbox ORDER BY id")
            .fetch_all(pool)
            .await?;
    let messages: Vec<Outgoing> = rows
        .into_iter()
        .map(|(id, routing_key, body)| Outgoing {
            routing_key,
            message_id: id.to_string(),
            body,
            headers: FieldTable::default(),
            timestamp: None,
        })
        .collect();
    let started = Instant::now();
    let report = publisher
        .publish_in_order(
            EXCHANGE,
            &messages,
            config.publish_window,
            config.confirm_timeout,
        )
        .await;
    if let Some(error) = report.error {
        anyhow::bail!("raw publish failed after {}: {error}", report.confirmed);
    }
    Ok(started.elapsed())
}

async fn purge(connection: &lapin::Connection) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    Ok(())
}

/// Runs the real relay loop and a consumer while writing at `rate`/s for `seconds`.
async fn measure_latency(
    pool: &PgPool,
    config: &RelaySettings,
    rate: usize,
    seconds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let commits: CommitTimes = Arc::default();
    let total = rate * seconds;
    let consumer = tokio::spawn(receive_latencies(
        config.amqp_url.first().clone(),
        commits.clone(),
        total,
    ));
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(OutboxRelay::new(pool.clone(), config.clone()).run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    write_steadily(pool, &commits, rate, total).await?;
    let latencies = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .context("events missing after 60 s")???;
    shutdown.cancel();
    relay.await?;
    Ok(latencies)
}

/// One write every 1/rate seconds; records each commit's instant by event id.
async fn write_steadily(
    pool: &PgPool,
    commits: &CommitTimes,
    rate: usize,
    total: usize,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut in_flight = tokio::task::JoinSet::new();
    for n in 0..total {
        tick.tick().await;
        let (pool, commits) = (pool.clone(), commits.clone());
        // Writes run concurrently so a slow commit does not hold back the schedule.
        in_flight.spawn(async move {
            let event = event(1_000_000 + n);
            write_one(&pool, &event).await?;
            let id = event.event_id.context("events have ids")?;
            commits
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert(id, Instant::now());
            anyhow::Ok(())
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(())
}

/// Consumes `total` events and returns receive time minus commit time for each.
async fn receive_latencies(
    node: events::BrokerNode,
    commits: CommitTimes,
    total: usize,
) -> anyhow::Result<Vec<Duration>> {
    let connection =
        events::connect_node(&node, "relay-bench-consumer", Duration::from_secs(10)).await?;
    let channel = connection.create_channel().await?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(QUEUE.into(), "bench".into(), options, FieldTable::default())
        .await?;
    let mut received: Vec<(Uuid, Instant)> = Vec::with_capacity(total);
    while received.len() < total {
        let delivery = consumer.next().await.context("consumer ended")??;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .context("no message id")?;
        received.push((id.as_str().parse()?, Instant::now()));
    }
    // The writer records a commit just after it returns, so a few may land after receipt.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let commits = commits.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok(received
        .iter()
        .filter_map(|(id, at)| {
            commits
                .get(id)
                .map(|committed| at.saturating_duration_since(*committed))
        })
        .collect())
}

fn print_latency(latencies: &[Duration], rate: usize) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        println!("latency: no events measured");
        return;
    }
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    println!(
        "latency: write commit -> consumer receive at {rate} writes/s over {} events: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        sorted.len(),
        at(0.50),
        at(0.99),
        sorted[sorted.len() - 1]
    );
}

fn per_sec(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value} is not a number")),
        Err(_) => Ok(default),
    }
}
