//! [`Fleet`]: two storagesvc and two booksvc replicas, each pair behind a real HAProxy, on a
//! three-node RabbitMQ cluster, one PostgreSQL and one Redis — the smallest deployment that
//! has every problem of a big one.
//!
//! ```text
//!                     ┌▶ booksvc 0 ─┐            ┌▶ storagesvc 0 ─┐
//! client ─▶ HAProxy ──┤             ├─▶ HAProxy ─┤                ├─▶ PostgreSQL
//!                     └▶ booksvc 1 ─┘            └▶ storagesvc 1 ─┘
//!                        │    │ (each through its own Redis proxy)   │
//!                        │    └──▶ Redis                             │
//!                        └──────▶ RabbitMQ n0, n1, n2 ◀─────────────┘
//! ```
//!
//! Every service gets the whole node list in `AMQP_URL` and otherwise its defaults, except
//! what a deployment behind a balancer must set: `SHUTDOWN_DRAIN_DELAY` (longer than the
//! balancer needs to notice a replica going unready) and the cache key prefix that keeps
//! this fleet's keys apart on the test binary's shared Redis. Each booksvc replica reaches
//! Redis through a [`TcpProxy`] of its own, so a scenario can make one replica's Redis slow
//! (that is how it catches a replica holding unacknowledged deliveries).

use std::time::{Duration, Instant};

use anyhow::Context;
use booksvc::cache::{BookCache, CacheSettings};
use events::lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use events::lapin::types::{AMQPValue, FieldTable, ShortString};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{LoadBalancer, RabbitMqCluster, TcpProxy};

use crate::service::Service;
use crate::system::{Binaries, TOKEN};

/// Replicas of each service.
pub const REPLICAS: usize = 2;
/// `SHUTDOWN_DRAIN_DELAY` of every replica: readiness is 503 this long before the listener
/// closes. HAProxy checks every 250 ms and takes a replica out after 2 failures, so 2 s is
/// ample; a deployment sets it from its balancer's check interval the same way.
pub const DRAIN_DELAY: Duration = Duration::from_secs(2);
/// How long HAProxy may take to see a replica come up or go down.
pub const LB_SETTLE: Duration = Duration::from_secs(15);
/// The audit queue: a quorum queue bound like booksvc's, so it survives a node loss too.
const AUDIT_QUEUE: &str = "e2e.fleet.audit";

/// The running fleet.
pub struct Fleet {
    pub cluster: &'static RabbitMqCluster,
    pub vhost: String,
    pub database_url: String,
    pub storagesvc: Vec<Service>,
    pub booksvc: Vec<Service>,
    /// booksvc replica `i` reaches Redis through `redis_proxies[i]`.
    pub redis_proxies: Vec<TcpProxy>,
    /// In front of the storagesvc replicas; booksvc calls storagesvc through it too.
    pub storagesvc_lb: LoadBalancer,
    /// In front of the booksvc replicas: where clients read.
    pub booksvc_lb: LoadBalancer,
    /// The replicas' cache (same Redis, same prefix).
    pub cache: BookCache,
    pub client: reqwest::Client,
}

impl Fleet {
    /// Starts the fleet on `cluster` (a fresh vhost), the test binary's shared PostgreSQL
    /// (a fresh database) and shared Redis (a fresh key prefix).
    pub async fn start(
        binaries: &Binaries,
        cluster: &'static RabbitMqCluster,
    ) -> anyhow::Result<Fleet> {
        let (postgres, redis) =
            tokio::try_join!(testkit::Postgres::shared(), testkit::Redis::shared())?;
        let database_url = postgres.fresh_database().await?;
        let vhost = cluster.fresh_vhost().await?;
        let amqp_url = cluster.amqp_url_list(&vhost);

        let mut storagesvc = Vec::new();
        for _ in 0..REPLICAS {
            let env = vec![
                ("DATABASE_URL", database_url.clone()),
                ("AMQP_URL", amqp_url.clone()),
                ("STORAGESVC_WRITE_TOKEN", TOKEN.to_owned()),
                ("SHUTDOWN_DRAIN_DELAY", duration(DRAIN_DELAY)),
                ("RUST_LOG", "info".to_owned()),
            ];
            storagesvc.push(Service::start("storagesvc", binaries.storagesvc.clone(), env).await?);
        }
        let storagesvc_lb = LoadBalancer::start(&addresses(&storagesvc), "/healthz/ready").await?;

        let prefix = crate::system::cache_prefix();
        let mut booksvc = Vec::new();
        let mut redis_proxies = Vec::new();
        for _ in 0..REPLICAS {
            let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port())).await?;
            let env = vec![
                ("STORAGESVC_URL", storagesvc_lb.url()),
                ("REDIS_URL", format!("redis://{}", proxy.address())),
                ("AMQP_URL", amqp_url.clone()),
                ("CACHE_PREFIX", prefix.clone()),
                ("SHUTDOWN_DRAIN_DELAY", duration(DRAIN_DELAY)),
                ("RUST_LOG", "info".to_owned()),
            ];
            booksvc.push(Service::start("booksvc", binaries.booksvc.clone(), env).await?);
            redis_proxies.push(proxy);
        }
        let booksvc_lb = LoadBalancer::start(&addresses(&booksvc), "/healthz/ready").await?;

        let cache = BookCache::new(CacheSettings {
            prefix,
            op_timeout: Duration::from_secs(1),
            ..CacheSettings::new(redis.url())
        })?;
        let fleet = Fleet {
            cluster,
            vhost,
            database_url,
            storagesvc,
            booksvc,
            redis_proxies,
            storagesvc_lb,
            booksvc_lb,
            cache,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        fleet.wait_all_in_rotation().await?;
        Ok(fleet)
    }

    /// Waits until both balancers send traffic to every replica.
    pub async fn wait_all_in_rotation(&self) -> anyhow::Result<()> {
        for index in 0..REPLICAS {
            self.storagesvc_lb
                .wait_replica(index, true, LB_SETTLE)
                .await?;
            self.booksvc_lb.wait_replica(index, true, LB_SETTLE).await?;
        }
        Ok(())
    }

    /// Creates `count` books through the storagesvc balancer; returns their ids.
    pub async fn create_books(&self, count: usize) -> anyhow::Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            ids.push(self.create_book(&format!("fleet book {n}")).await?);
        }
        Ok(ids)
    }

    async fn create_book(&self, title: &str) -> anyhow::Result<i64> {
        let response = self
            .client
            .post(format!("{}/books", self.storagesvc_lb.url()))
            .bearer_auth(TOKEN)
            .json(&json!({ "title": title, "author": "Fleet", "desc": "" }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::CREATED,
            "create: {}",
            response.status()
        );
        let book: Value = response.json().await?;
        book["id"].as_i64().context("created book has an id")
    }

    /// The node (its index in the cluster) storagesvc replica `index` publishes through, as
    /// its readiness body names it (`host:port`).
    pub async fn storagesvc_node(&self, index: usize) -> anyhow::Result<usize> {
        let url = format!("{}/healthz/ready", self.storagesvc[index].url());
        let body: Value = self.client.get(url).send().await?.json().await?;
        let node = body["dependencies"]["rabbitmq"]["node"]
            .as_str()
            .with_context(|| format!("no rabbitmq node in {body}"))?;
        (0..self.cluster.size())
            .find(|&n| node.ends_with(&format!(":{}", self.cluster.port(n))))
            .with_context(|| format!("node {node} is not one of the cluster's"))
    }

    /// Unsent outbox rows right now (straight from PostgreSQL).
    pub async fn outbox_unsent(&self) -> anyhow::Result<i64> {
        let mut connection: sqlx::PgConnection =
            sqlx::Connection::connect(&self.database_url).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&mut connection)
            .await?;
        Ok(count)
    }

    /// Deliveries booksvc replica `index` has taken from the queue and not yet finished
    /// (acked after applying, ignoring, retrying or dead-lettering), from its `/metrics`.
    pub async fn booksvc_in_flight(&self, index: usize) -> anyhow::Result<f64> {
        let url = format!("{}/metrics", self.booksvc[index].url());
        let text = self.client.get(url).send().await?.text().await?;
        let sum = |family: &str| -> f64 {
            text.lines()
                .filter(|line| line.starts_with(family))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let finished = [
            "booksvc_consumer_applied_total",
            "booksvc_consumer_ignored_stale_total",
            "booksvc_consumer_retried_total",
            "booksvc_consumer_dead_lettered_total",
            "booksvc_consumer_rejected_total",
        ];
        Ok(sum("booksvc_consumer_consumed_total") - finished.iter().map(|f| sum(f)).sum::<f64>())
    }

    /// A connection to the first node of the cluster that answers.
    async fn broker(&self) -> anyhow::Result<events::lapin::Connection> {
        let nodes = events::BrokerNodes::parse(&self.cluster.amqp_url_list(&self.vhost))
            .map_err(anyhow::Error::msg)?;
        let (connection, _) =
            events::connect_any(&nodes, "e2e-fleet-audit", Duration::from_secs(5)).await?;
        Ok(connection)
    }

    /// Declares and binds the audit quorum queue; events published from now on are kept.
    pub async fn start_audit(&self) -> anyhow::Result<()> {
        let connection = self.broker().await?;
        let channel = connection.create_channel().await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString("quorum".into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(ShortString::from(AUDIT_QUEUE), durable, arguments)
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

    /// Takes every event waiting in the audit queue, in queue order: `(book_id, version)`.
    pub async fn audited_events(&self) -> anyhow::Result<Vec<(i64, i64)>> {
        let connection = self.broker().await?;
        let channel = connection.create_channel().await?;
        let mut seen = Vec::new();
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
            seen.push((event.book_id, event.version));
        }
        let _ = connection.close(200, ShortString::from("bye")).await;
        Ok(seen)
    }

    /// SIGTERM to `service` replica `index`, wait for its exit, start it again and wait until
    /// its balancer sends it traffic: one step of a rolling restart. Returns how long the
    /// replica was out of rotation.
    pub async fn restart_gracefully(
        &mut self,
        which: Which,
        index: usize,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (service, balancer) = match which {
            Which::Storagesvc => (&mut self.storagesvc[index], &self.storagesvc_lb),
            Which::Booksvc => (&mut self.booksvc[index], &self.booksvc_lb),
        };
        service.terminate()?;
        let (status, _) = service.wait_exit(Duration::from_secs(30)).await?;
        anyhow::ensure!(status.success(), "{which:?} {index} exited with {status}");
        service.restart().await?;
        balancer.wait_replica(index, true, LB_SETTLE).await?;
        Ok(started.elapsed())
    }
}

/// One of the two services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Storagesvc,
    Booksvc,
}

fn addresses(services: &[Service]) -> Vec<String> {
    services.iter().map(Service::address).collect()
}

fn duration(value: Duration) -> String {
    format!("{}ms", value.as_millis())
}
