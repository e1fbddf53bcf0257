//! Against a real RabbitMQ (from `testkit`): the topology declares idempotently and routes
//! as designed, and the confirm publisher counts exactly what the broker accepted — also
//! when the broker refuses, cannot route, or disappears mid-batch.
//!
//! Each test works in a fresh vhost of the shared test broker; the outage test starts its
//! own broker since it stops it.

mod cluster;
mod publisher;
mod session;
mod topology;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use chrono::Utc;
use events::{BookChanged, BookData, ConfirmPublisher, Outgoing, Topology};
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh vhost on the shared broker, connected, with the given topology declared.
struct Vhost {
    url: String,
    connection: Connection,
    channel: Channel,
}

impl Vhost {
    async fn with(topology: &Topology) -> Result<Vhost> {
        testkit::init_test_logging();
        let url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
        let connection = events::connect(&url, "events-tests", CONNECT_TIMEOUT).await?;
        let channel = connection.create_channel().await?;
        topology.declare(&channel).await?;
        Ok(Vhost {
            url,
            connection,
            channel,
        })
    }

    async fn new() -> Result<Vhost> {
        Self::with(&Topology::default()).await
    }

    async fn publisher(&self) -> Result<ConfirmPublisher> {
        Ok(ConfirmPublisher::open(&self.connection).await?)
    }

    /// The next message in `queue`, waiting up to `within` for one to arrive.
    async fn get(&self, queue: &str, within: Duration) -> Result<Delivery> {
        let deadline = Instant::now() + within;
        loop {
            let options = BasicGetOptions { no_ack: false };
            if let Some(message) = self.channel.basic_get(queue.into(), options).await? {
                return Ok(message.delivery);
            }
            ensure!(
                Instant::now() < deadline,
                "no message in {queue} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many messages `queue` holds (ready, not unacked).
    async fn count(&self, queue: &str) -> Result<u32> {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = self
            .channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await?;
        Ok(queue.message_count())
    }
}

fn book(id: i64) -> BookData {
    BookData {
        id,
        title: format!("Book {id}"),
        author: "Jane Doe".to_owned(),
        desc: "...".to_owned(),
    }
}

fn event(id: i64) -> Outgoing {
    Outgoing::event(&BookChanged::updated(book(id), 1, Utc::now()))
}

fn header<'a>(delivery: &'a Delivery, key: &str) -> Option<&'a AMQPValue> {
    delivery.properties.headers().as_ref()?.inner().get(key)
}
