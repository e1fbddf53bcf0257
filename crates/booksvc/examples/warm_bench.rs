//! Cache-warming latency: `cargo run --release -p booksvc --example warm_bench`.
//!
//! Against real servers (the testkit's private PostgreSQL, Redis and RabbitMQ), with the real
//! storagesvc (HTTP API, outbox, relay) and booksvc's consumer writing into the real cache:
//! 1. **write → warm**: at a steady `BENCH_RATE` writes/s (200) for `BENCH_SECONDS` (10),
//!    `PUT /books/{id}` on storagesvc; for each write, the time from sending the request to
//!    the consumer having applied that version in Redis. p50/p90/p99/max.
//! 2. **broker alone**: in the same run and the same vhost, a message every
//!    1/`BENCH_RATE` s published to a quorum queue of its own and consumed: RabbitMQ's own
//!    publish → consume latency, the floor the first figure is compared against.
//!
//! Goal: write → warm p99 ≤ 25 ms on the 2-core reference machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use booksvc::cache::{BookCache, CacheSettings, WriteOutcome};
use booksvc::consumer::{Consumer, ConsumerSettings, ConsumerState, EventSink, SinkError};
use e2e::in_process::Storagesvc;
use events::BookChanged;
use events::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use events::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use events::lapin::{BasicProperties, Channel};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// When each (book id, version) was applied to the cache, or first requested.
type Times = Arc<Mutex<HashMap<(i64, i64), Instant>>>;

const BOOKS: i64 = 50;
const TOKEN: &str = "bench-token";
const PROBE_QUEUE: &str = "bench.broker-latency";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rate = env_number("BENCH_RATE", 200)?;
    let seconds = env_number("BENCH_SECONDS", 10)?;
    let servers = Servers::start().await?;
    let applied: Times = Arc::default();

    let shutdown = CancellationToken::new();
    let sink = TimingSink {
        cache: BookCache::new(CacheSettings::new(servers.redis.url()))?,
        applied: applied.clone(),
    };
    let consumer = Consumer::new(
        ConsumerSettings::new(servers.amqp_url.parse().map_err(anyhow::Error::msg)?),
        sink,
    );
    let status = consumer.status();
    let consuming = tokio::spawn(consumer.run(shutdown.clone()));
    wait_until(|| status.state() == ConsumerState::Running).await?;

    let storage = Storage::start(&servers).await?;
    let ids = storage.create_books(BOOKS).await?;
    let probe = BrokerProbe::start(&servers.amqp_url).await?;

    println!("steady load: {rate} writes/s for {seconds} s on {BOOKS} books");
    let (requested, probe_latencies) = tokio::join!(
        storage.steady_updates(&ids, rate, seconds),
        probe.measure(rate, seconds)
    );
    let requested = requested?;
    tokio::time::sleep(Duration::from_secs(2)).await; // the tail of the load settles
    let warm = latencies(&requested, &applied);
    report(
        "write → warm (storagesvc PUT → applied in Redis)",
        &warm,
        requested.lock().map_or(0, |r| r.len()),
    );
    report(
        "broker alone (publish → consume, quorum queue)",
        &probe_latencies?,
        0,
    );

    shutdown.cancel();
    consuming.await?;
    storage.stop().await
}

/// BookCache, noting when each version was applied.
struct TimingSink {
    cache: BookCache,
    applied: Times,
}

impl EventSink for TimingSink {
    async fn apply(&self, event: &BookChanged) -> Result<WriteOutcome, SinkError> {
        let outcome = EventSink::apply(&self.cache, event).await?;
        if outcome == WriteOutcome::Applied {
            let now = Instant::now();
            if let Ok(mut applied) = self.applied.lock() {
                applied.insert((event.book_id, event.version), now);
            }
        }
        Ok(outcome)
    }

    async fn ping(&self) -> Result<(), SinkError> {
        EventSink::ping(&self.cache).await
    }
}

/// The testkit's servers, private to this run.
struct Servers {
    database_url: String,
    amqp_url: String,
    redis: testkit::Redis,
    _postgres: testkit::Postgres,
    _rabbitmq: testkit::RabbitMq,
}

impl Servers {
    async fn start() -> anyhow::Result<Servers> {
        let (postgres, redis, rabbitmq) = tokio::try_join!(
            testkit::Postgres::start(),
            testkit::Redis::start(),
            testkit::RabbitMq::start()
        )?;
        Ok(Servers {
            database_url: postgres.fresh_database().await?,
            amqp_url: rabbitmq.amqp_url(),
            redis,
            _postgres: postgres,
            _rabbitmq: rabbitmq,
        })
    }
}

/// storagesvc, the real application (from the end-to-end harness), and an HTTP client for
/// its write API.
struct Storage {
    app: Storagesvc,
    client: reqwest::Client,
}

impl Storage {
    async fn start(servers: &Servers) -> anyhow::Result<Storage> {
        let app = Storagesvc::options()
            .database_url(&servers.database_url)
            .amqp_url(&servers.amqp_url)
            .write_token(TOKEN)
            .spawn()
            .await?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Storage { app, client })
    }

    async fn create_books(&self, count: i64) -> anyhow::Result<Vec<i64>> {
        let mut ids = Vec::new();
        for n in 0..count {
            let response = self
                .client
                .post(format!("{}/books", self.app.address))
                .bearer_auth(TOKEN)
                .json(&body(n))
                .send()
                .await?;
            ensure!(
                response.status().is_success(),
                "create: {}",
                response.status()
            );
            let book: Value = response.json().await?;
            ids.push(book["id"].as_i64().context("no id")?);
        }
        Ok(ids)
    }

    /// `PUT`s at `rate`/s for `seconds`, round robin over `ids`; returns when each
    /// (id, version) was requested.
    async fn steady_updates(&self, ids: &[i64], rate: u64, seconds: u64) -> anyhow::Result<Times> {
        let requested: Times = Arc::default();
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate)?);
        let mut writes = Vec::new();
        for n in 0..rate * seconds {
            ticks.tick().await;
            let id = ids[usize::try_from(n)? % ids.len()];
            let request = self
                .client
                .put(format!("{}/books/{id}", self.app.address))
                .bearer_auth(TOKEN)
                .json(&body(i64::try_from(n)?));
            let requested = requested.clone();
            writes.push(tokio::spawn(async move {
                let sent = Instant::now();
                let book: Value = request.send().await?.error_for_status()?.json().await?;
                let version = book["version"].as_i64().context("no version")?;
                if let Ok(mut requested) = requested.lock() {
                    requested.insert((id, version), sent);
                }
                anyhow::Ok(())
            }));
        }
        for write in writes {
            write.await??;
        }
        Ok(requested)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.app.stop().await
    }
}

fn body(n: i64) -> Value {
    json!({ "title": format!("Book {n}"), "author": "Bench", "desc": "warm bench" })
}

/// RabbitMQ alone: publish → consume on a quorum queue of its own.
struct BrokerProbe {
    channel: Channel,
    _connection: events::lapin::Connection,
}

impl BrokerProbe {
    async fn start(amqp_url: &str) -> anyhow::Result<BrokerProbe> {
        let connection =
            events::connect(amqp_url, "warm-bench-probe", Duration::from_secs(10)).await?;
        let channel = connection.create_channel().await?;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(ShortString::from(PROBE_QUEUE), options, args)
            .await?;
        Ok(BrokerProbe {
            channel,
            _connection: connection,
        })
    }

    /// Publishes persistent messages at `rate`/s for `seconds`; each carries its send time
    /// as an offset from a shared start, and the consumer computes its latency.
    async fn measure(&self, rate: u64, seconds: u64) -> anyhow::Result<Vec<Duration>> {
        let start = Instant::now();
        let count = usize::try_from(rate * seconds)?;
        let mut deliveries = self
            .channel
            .basic_consume(
                ShortString::from(PROBE_QUEUE),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let receiving = tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            while latencies.len() < count {
                let Some(Ok(delivery)) = deliveries.next().await else {
                    break;
                };
                let sent_ns: u64 = std::str::from_utf8(&delivery.data)?.parse()?;
                let received = start.elapsed();
                latencies.push(received.saturating_sub(Duration::from_nanos(sent_ns)));
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            anyhow::Ok(latencies)
        });
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate)?);
        for _ in 0..count {
            ticks.tick().await;
            let sent_ns = u64::try_from(start.elapsed().as_nanos())?;
            let _confirm = self
                .channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(PROBE_QUEUE),
                    BasicPublishOptions::default(),
                    sent_ns.to_string().as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
        }
        tokio::time::timeout(Duration::from_secs(30), receiving).await??
    }
}

/// Latency of every requested (id, version) that was applied.
fn latencies(requested: &Times, applied: &Times) -> Vec<Duration> {
    let (Ok(requested), Ok(applied)) = (requested.lock(), applied.lock()) else {
        return Vec::new();
    };
    requested
        .iter()
        .filter_map(|(key, sent)| {
            applied
                .get(key)
                .map(|at| at.saturating_duration_since(*sent))
        })
        .collect()
}

fn report(what: &str, samples: &[Duration], expected: usize) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let pick = |q: f64| {
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    };
    let missing = expected.saturating_sub(sorted.len());
    println!(
        "{what}: n={} p50={:.1?} p90={:.1?} p99={:.1?} max={:.1?}{}",
        sorted.len(),
        pick(0.5),
        pick(0.9),
        pick(0.99),
        sorted.last().copied().unwrap_or_default(),
        if missing > 0 {
            format!(" ({missing} never applied)")
        } else {
            String::new()
        }
    );
}

async fn wait_until(mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    for _ in 0..600 {
        if ready() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the consumer did not start within 30 s")
}

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(text) => text.parse().with_context(|| format!("{name}={text:?}")),
        Err(_) => Ok(default),
    }
}
