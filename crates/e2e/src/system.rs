//! [`System`]: PostgreSQL, Redis, RabbitMQ, storagesvc and booksvc, wired as in production
//! but with test-sized timeouts, and proxies where a scenario injects network faults.
//!
//! ```text
//! client ─▶ booksvc ─▶ storagesvc_proxy ─▶ storagesvc ─▶ PostgreSQL
//!             │  └──────────┐                  │
//!             ▼             ▼                  ▼
//!           Redis       amqp_proxy ◀───────────┘ ─▶ RabbitMQ (a vhost of its own)
//! ```
//!
//! Dependencies are the test binary's shared servers unless a scenario asks for a private one
//! it may stop; isolation on shared servers is a fresh database, a fresh vhost and a cache
//! key prefix of its own.

use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use booksvc::cache::{BookCache, CacheSettings};
use std::collections::HashSet;

use events::lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use events::lapin::types::{FieldTable, ShortString};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::TcpProxy;

use crate::service::Service;

/// storagesvc's write token in these tests.
pub const TOKEN: &str = "e2e-write-token";
/// booksvc's `REQUEST_BUDGET` here (the documented default).
pub const REQUEST_BUDGET: Duration = Duration::from_secs(1);
/// booksvc's `STORAGESVC_TIMEOUT` here: the bound on one storagesvc attempt.
pub const STORAGESVC_TIMEOUT: Duration = Duration::from_millis(300);
/// "Within the budget" as asserted: the budget plus slack for a loaded 2-core machine
/// (a generous bound, not a timing assertion).
pub const WITHIN_BUDGET: Duration = Duration::from_millis(2_000);

/// Paths of the service binaries (`CARGO_BIN_EXE_*` of the test).
#[derive(Debug, Clone)]
pub struct Binaries {
    pub booksvc: PathBuf,
    pub storagesvc: PathBuf,
}

/// A dependency: the binary's shared server, or a private one the scenario may stop.
pub enum Dep<T: 'static> {
    Shared(&'static T),
    Private(T),
}

impl<T> Deref for Dep<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Dep::Shared(shared) => shared,
            Dep::Private(private) => private,
        }
    }
}

/// What a scenario needs; [`Options::start`] builds it.
pub struct Options {
    binaries: Binaries,
    private_postgres: bool,
    private_redis: bool,
    private_rabbitmq: bool,
    booksvc_env: Vec<(&'static str, String)>,
    storagesvc_env: Vec<(&'static str, String)>,
    read_path_defaults: bool,
}

/// booksvc's read-path variables the harness sets for fast, sequential scenarios, and
/// [`Options::read_path_defaults`] leaves at their defaults.
const READ_PATH_OVERRIDES: &[&str] = &[
    "CACHE_FRESH_TTL",
    "REQUEST_BUDGET",
    "STORAGESVC_TIMEOUT",
    "BREAKER_TIMEOUT",
    "BREAKER_CONSECUTIVE_FAILURES",
];

impl Options {
    pub fn new(binaries: Binaries) -> Options {
        Options {
            binaries,
            private_postgres: false,
            private_redis: false,
            private_rabbitmq: false,
            booksvc_env: Vec::new(),
            storagesvc_env: Vec::new(),
            read_path_defaults: false,
        }
    }

    /// booksvc's read path with its documented defaults (fresh TTL, local layer, budget,
    /// breaker) instead of the harness's `CACHE_FRESH_TTL=0s` and short breaker: what a
    /// deployment runs. `REDIS_TIMEOUT` stays raised (see [`System`]'s start-up).
    pub fn read_path_defaults(mut self) -> Options {
        self.read_path_defaults = true;
        self
    }

    pub fn private_postgres(mut self) -> Options {
        self.private_postgres = true;
        self
    }

    pub fn private_redis(mut self) -> Options {
        self.private_redis = true;
        self
    }

    pub fn private_rabbitmq(mut self) -> Options {
        self.private_rabbitmq = true;
        self
    }

    /// Sets (or overrides) one of booksvc's variables.
    pub fn booksvc_env(mut self, key: &'static str, value: &str) -> Options {
        self.booksvc_env.push((key, value.to_owned()));
        self
    }

    /// Sets (or overrides) one of storagesvc's variables.
    pub fn storagesvc_env(mut self, key: &'static str, value: &str) -> Options {
        self.storagesvc_env.push((key, value.to_owned()));
        self
    }

    pub async fn start(self) -> anyhow::Result<System> {
        System::start(self).await
    }
}

/// The running system.
pub struct System {
    pub postgres: Dep<testkit::Postgres>,
    pub redis: Dep<testkit::Redis>,
    pub rabbitmq: Dep<testkit::RabbitMq>,
    /// The scenario's vhost, straight to the broker (not through `amqp_proxy`).
    pub amqp_url: String,
    /// Both services reach RabbitMQ through this: `refuse()` partitions them from it.
    pub amqp_proxy: TcpProxy,
    /// booksvc reaches storagesvc through this: latency makes storagesvc slow.
    pub storagesvc_proxy: TcpProxy,
    pub storagesvc: Service,
    pub booksvc: Service,
    /// booksvc's cache (same Redis, same prefix), to see what the consumer applied.
    pub cache: BookCache,
    /// A plain client; a hang fails the test after 10 s.
    pub client: reqwest::Client,
}

impl System {
    async fn start(options: Options) -> anyhow::Result<System> {
        let (postgres, redis, rabbitmq) = tokio::try_join!(
            dependency(
                options.private_postgres,
                testkit::Postgres::start,
                testkit::Postgres::shared
            ),
            dependency(
                options.private_redis,
                testkit::Redis::start,
                testkit::Redis::shared
            ),
            dependency(
                options.private_rabbitmq,
                testkit::RabbitMq::start,
                testkit::RabbitMq::shared
            ),
        )?;
        let database_url = postgres.fresh_database().await?;
        let amqp_url = rabbitmq.fresh_vhost().await?;
        let amqp_proxy = TcpProxy::start(&format!("127.0.0.1:{}", rabbitmq.port())).await?;
        let proxied_amqp = amqp_url.replace(
            &format!(":{}/", rabbitmq.port()),
            &format!(":{}/", amqp_proxy.address().port()),
        );

        let mut storagesvc_env = vec![
            ("DATABASE_URL", database_url),
            ("AMQP_URL", proxied_amqp.clone()),
            ("STORAGESVC_WRITE_TOKEN", TOKEN.to_owned()),
            ("OUTBOX_POLL_INTERVAL", "500ms".to_owned()),
            ("OUTBOX_RECONNECT_MAX", "1s".to_owned()),
            ("OUTBOX_CONFIRM_TIMEOUT", "2s".to_owned()),
            ("DB_STARTUP_TIMEOUT", "20s".to_owned()),
            ("SHUTDOWN_TIMEOUT", "5s".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        storagesvc_env.extend(options.storagesvc_env);
        let storagesvc =
            Service::start("storagesvc", options.binaries.storagesvc, storagesvc_env).await?;
        let storagesvc_proxy = TcpProxy::start(&storagesvc.address()).await?;

        let prefix = cache_prefix();
        let mut booksvc_env = vec![
            ("STORAGESVC_URL", storagesvc_proxy.http_url()),
            ("REDIS_URL", redis.url()),
            ("AMQP_URL", proxied_amqp),
            ("CACHE_PREFIX", prefix.clone()),
            // Every read asks storagesvc first, so an outage shows at once as `stale`.
            ("CACHE_FRESH_TTL", "0s".to_owned()),
            (
                "REQUEST_BUDGET",
                format!("{}ms", REQUEST_BUDGET.as_millis()),
            ),
            (
                "STORAGESVC_TIMEOUT",
                format!("{}ms", STORAGESVC_TIMEOUT.as_millis()),
            ),
            // The default 100 ms treats a Redis answer delayed by a starved 2-core CI machine
            // as "nothing cached", which with storagesvc down is a 503: a flake about the
            // machine, not the service (seen 3 times in 27 runs at load 10-13). Still well
            // under half the budget, as the service requires.
            ("REDIS_TIMEOUT", "300ms".to_owned()),
            ("BREAKER_TIMEOUT", "1s".to_owned()),
            ("BREAKER_CONSECUTIVE_FAILURES", "3".to_owned()),
            ("CONSUMER_RETRY_DELAYS", "200ms,1s".to_owned()),
            ("CONSUMER_RECONNECT_MAX", "1s".to_owned()),
            ("SHUTDOWN_TIMEOUT", "5s".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        if options.read_path_defaults {
            booksvc_env.retain(|(key, _)| !READ_PATH_OVERRIDES.contains(key));
        }
        booksvc_env.extend(options.booksvc_env);
        let booksvc = Service::start("booksvc", options.binaries.booksvc, booksvc_env).await?;

        let cache = BookCache::new(CacheSettings {
            prefix,
            op_timeout: Duration::from_secs(1),
            ..CacheSettings::new(redis.url())
        })?;
        Ok(System {
            postgres,
            redis,
            rabbitmq,
            amqp_url,
            amqp_proxy,
            storagesvc_proxy,
            storagesvc,
            booksvc,
            cache,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// The private PostgreSQL (a test bug if the scenario did not ask for one).
    pub fn private_postgres(&self) -> &testkit::Postgres {
        private(&self.postgres, "postgres")
    }

    pub fn private_redis(&self) -> &testkit::Redis {
        private(&self.redis, "redis")
    }

    pub fn private_rabbitmq(&self) -> &testkit::RabbitMq {
        private(&self.rabbitmq, "rabbitmq")
    }

    /// Creates `count` books on storagesvc; returns their ids.
    pub async fn create_books(&self, count: usize) -> anyhow::Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let response = self
                .client
                .post(format!("{}/books", self.storagesvc.url()))
                .bearer_auth(TOKEN)
                .json(&json!({ "title": format!("e2e book {n}"), "author": "E2E", "desc": "" }))
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == StatusCode::CREATED,
                "create: {}",
                response.status()
            );
            let book: Value = response.json().await?;
            ids.push(book["id"].as_i64().context("created book has an id")?);
        }
        Ok(ids)
    }

    /// Reads each book through booksvc once (so its cache holds them); each must answer 200.
    pub async fn read_all(&self, books: &[i64]) -> anyhow::Result<()> {
        for book in books {
            let response = self.get_booksvc(&format!("/books/{book}")).await?;
            anyhow::ensure!(
                response.status() == StatusCode::OK,
                "read of book {book}: {}",
                response.status()
            );
        }
        Ok(())
    }

    pub async fn get_booksvc(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.booksvc.url());
        Ok(self.client.get(url).send().await?)
    }

    pub async fn get_storagesvc(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.storagesvc.url());
        Ok(self.client.get(url).send().await?)
    }

    /// booksvc's `/healthz/ready`: status and body.
    pub async fn booksvc_ready(&self) -> anyhow::Result<(u16, Value)> {
        status_and_json(self.get_booksvc("/healthz/ready").await?).await
    }

    /// storagesvc's `/healthz/<which>` (`live` or `ready`): status and body.
    pub async fn storagesvc_health(&self, which: &str) -> anyhow::Result<(u16, Value)> {
        status_and_json(self.get_storagesvc(&format!("/healthz/{which}")).await?).await
    }

    /// The breaker's state as booksvc's readiness reports it (`closed`, `open`, `half_open`).
    pub async fn breaker(&self) -> String {
        match self.booksvc_ready().await {
            Ok((_, body)) => body["dependencies"]["breaker"]["status"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
            Err(_) => "?".to_owned(),
        }
    }

    /// booksvc's metrics show the breaker open (`booksvc_breaker_state{state="open"} 1`).
    pub async fn breaker_metric_open(&self) -> bool {
        let Ok(response) = self.get_booksvc("/metrics").await else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .any(|line| line.starts_with("booksvc_breaker_state{state=\"open\"} 1"))
    }

    /// The version booksvc's cache holds for `book` (a tombstone's too), if any.
    pub async fn cached_version(&self, book: i64) -> Option<i64> {
        let lookup = self.cache.get_book(book).await.ok()?;
        lookup.cached.map(|cached| cached.value.version())
    }

    /// Messages waiting in the dead-letter queue (straight to the broker).
    pub async fn dlq_depth(&self) -> anyhow::Result<u32> {
        self.queue_depth(events::DLQ).await
    }

    /// Messages ready in `queue` of the scenario's vhost, counted by fetching them without
    /// acking and closing the connection, which puts them back. (The message count of a
    /// passive `queue.declare` read 0 in the SIGTERM scenario while basic.get found hundreds
    /// of messages in the same queue; counting what can be fetched cannot be wrong that way.)
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<u32> {
        let connection =
            events::connect(&self.amqp_url, "e2e-depth-probe", Duration::from_secs(5)).await?;
        let channel = connection.create_channel().await?;
        let mut count = 0;
        while channel
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false })
            .await?
            .is_some()
        {
            count += 1;
        }
        let _ = connection.close(200, ShortString::from("bye")).await;
        Ok(count)
    }
}

/// A durable queue of the scenario's own, bound like booksvc's: a second, independent
/// subscriber that sees every event storagesvc published (booksvc's cache keeps only the
/// newest version of a book, so it cannot prove that each event arrived).
const AUDIT_QUEUE: &str = "e2e.audit";

impl System {
    /// Declares and binds the audit queue; events published from now on are kept there.
    pub async fn start_audit(&self) -> anyhow::Result<()> {
        let connection =
            events::connect(&self.amqp_url, "e2e-audit", Duration::from_secs(5)).await?;
        let channel = connection.create_channel().await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(
                ShortString::from(AUDIT_QUEUE),
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                ShortString::from(AUDIT_QUEUE),
                ShortString::from(events::EXCHANGE),
                ShortString::from(events::BINDING_KEY),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let _ = connection.close(200, ShortString::from("bye")).await;
        Ok(())
    }

    /// Takes every event waiting in the audit queue: `(book_id, version)` of each.
    pub async fn audited_events(&self) -> anyhow::Result<HashSet<(i64, i64)>> {
        let connection =
            events::connect(&self.amqp_url, "e2e-audit", Duration::from_secs(5)).await?;
        let channel = connection.create_channel().await?;
        let mut seen = HashSet::new();
        while let Some(message) = channel
            .basic_get(
                ShortString::from(AUDIT_QUEUE),
                BasicGetOptions { no_ack: true },
            )
            .await?
        {
            testkit::event_schema::validate(&message.delivery.data)?;
            let event = events::BookChanged::parse(&message.delivery.data)
                .map_err(|error| anyhow::anyhow!("storagesvc published a bad event: {error}"))?;
            seen.insert((event.book_id, event.version));
        }
        let _ = connection.close(200, ShortString::from("bye")).await;
        Ok(seen)
    }
}

async fn dependency<T: 'static, S, P>(
    private: bool,
    start: impl FnOnce() -> P,
    shared: impl FnOnce() -> S,
) -> anyhow::Result<Dep<T>>
where
    P: Future<Output = anyhow::Result<T>>,
    S: Future<Output = anyhow::Result<&'static T>>,
{
    Ok(match private {
        true => Dep::Private(start().await?),
        false => Dep::Shared(shared().await?),
    })
}

fn private<'a, T>(dep: &'a Dep<T>, name: &str) -> &'a T {
    match dep {
        Dep::Private(private) => private,
        Dep::Shared(_) => panic!("the scenario did not ask for a private {name}"),
    }
}

/// A cache key prefix no other scenario (or earlier run on the shared Redis) uses.
pub(crate) fn cache_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("e2e:{}:{nanos}:", std::process::id())
}

async fn status_and_json(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}
