//! The AMQP topology, declared idempotently on start-up: by booksvc, and by storagesvc as far
//! as its broker user may (only the `books` exchange as the least-privilege `storagesvc`).
//!
//! ```text
//!  storagesvc ─▶ [books] topic ──book.*──▶ (booksvc.book-changed) quorum ──▶ booksvc
//!                                              │ DLX on delivery limit / reject
//!                                              ▼
//!   booksvc ──▶ [booksvc.book-changed.dlq] fanout ──▶ (booksvc.book-changed.dlq) quorum
//!   booksvc ──▶ [booksvc.book-changed.retry] direct ──<queue name>──▶
//!                 (booksvc.book-changed.retry.quorum.<delay>) quorum, TTL = delay
//!                     └── expired: dead-lettered via "" to booksvc.book-changed
//! ```
//!
//! Decisions (the cluster-related ones are argued in
//! docs/decisions/0009-quorum-queues-everywhere.md):
//! - **Every queue is a quorum queue**, replicated on three nodes of a cluster, so the loss of
//!   any one node loses no message and re-declaring on a surviving node succeeds (a classic
//!   queue lives on one node: with that node down its re-declaration fails). Quorum queues
//!   also keep every message across a restart, persistent or not (the management UI
//!   publishes non-persistent by default). Per-queue message TTL on a quorum queue needs
//!   RabbitMQ 3.10 or later.
//! - **At-least-once dead-lettering everywhere** (`x-dead-letter-strategy`, which RabbitMQ
//!   honours only with `x-overflow: reject-publish`; no queue has a length limit, so that
//!   overflow never refuses anything). The default, at-most-once, drops a dead letter that
//!   the target queue cannot take at that moment, e.g. during its leader election after a
//!   node loss. At-least-once keeps it in the source queue until the target confirms it, so
//!   a node loss at worst duplicates a dead letter (harmless: the cache's version rule).
//! - **Main queue.** Its `x-dead-letter-exchange` is the DLQ exchange because RabbitMQ 4
//!   *drops* what a quorum queue dead-letters without one, and its `x-delivery-limit`
//!   ([`DELIVERY_LIMIT`]) is explicit so 3.10 (no default) and 4.x (default 20) behave
//!   alike. The limit is only a backstop for messages that crash the consumer before it can
//!   ack; normal failures go through the retry queues, which the consumer publishes to
//!   itself. A consumer waiting for Redis must *hold* its deliveries rather than requeue
//!   them, or every requeue counts towards the limit.
//! - **DLQ exchange: fanout**, so every dead letter lands in the DLQ whatever routing key
//!   it carries (dead-lettering keeps the original `book.*` key).
//! - **DLQ.** Its own DLX (our rule: every queue has one) is the DLQ exchange, i.e. itself:
//!   the only way a message leaves it is an explicit reject, and a cycle containing a reject
//!   is allowed by RabbitMQ, so a rejected dead letter goes back to the DLQ instead of
//!   vanishing. Only an ack (e.g. by the re-drive after republishing) removes a message.
//!   As a quorum queue it has a delivery limit (20 by default on 4.x): an operator peeking
//!   at messages in the management UI ("Nack, requeue") that often would make RabbitMQ
//!   dead-letter them to itself *without* a reject in the cycle, which RabbitMQ drops. So
//!   its limit is explicit and out of reach ([`DLQ_DELIVERY_LIMIT`]); `-1` ("no limit") is
//!   4.x-only.
//! - **Retry exchange: direct**, one queue per delay, bound with its own name as the routing
//!   key ([`Topology::retry_routing_key`]). Each has `x-message-ttl = delay` and
//!   dead-letters to the default exchange (`""`) with routing key [`QUEUE`], so an expired
//!   message goes straight back to the main queue. All messages of a queue share one TTL,
//!   so they expire in order at the head. Queues are named by their delay
//!   ([`Topology::retry_queue_name`]) so changing the delays adds new queues instead of
//!   clashing with the arguments of existing ones; the `quorum` in their names does the same
//!   for the classic retry queues of earlier versions.
//! - Queue types are always given explicitly (`x-queue-type`), so a vhost's default queue
//!   type never decides.
//! - Integer arguments are AMQP `signedint` (i32), the type most clients use: RabbitMQ
//!   compares argument types on redeclare, so everybody must use the same one.
//!
//! Declaring is idempotent: the same names with the same arguments succeed any number of
//! times, from any number of connections at once. Different arguments for an existing
//! queue fail with `PRECONDITION_FAILED` (406), which we surface rather than hide, with one
//! error line naming the queue and the migration in docs/runbook.md (a DLQ or main queue
//! declared by a version before quorum DLQs).

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// The exchange storagesvc publishes book-changed events to (topic, durable).
pub const EXCHANGE: &str = "books";
/// booksvc's queue of book-changed events (durable, quorum).
pub const QUEUE: &str = "booksvc.book-changed";
/// booksvc's dead-letter queue.
pub const DLQ: &str = "booksvc.book-changed.dlq";
/// The direct exchange routing to the retry queues.
pub const RETRY_EXCHANGE: &str = "booksvc.book-changed.retry";
/// The fanout exchange in front of [`DLQ`] (exchanges and queues are separate namespaces).
pub const DLQ_EXCHANGE: &str = "booksvc.book-changed.dlq";
/// How [`QUEUE`] is bound to [`EXCHANGE`].
pub const BINDING_KEY: &str = "book.*";
/// Deliveries of one message from [`QUEUE`] before RabbitMQ dead-letters it to the DLQ.
pub const DELIVERY_LIMIT: i32 = 20;
/// The [`DLQ`]'s delivery limit: high enough that no operator peeking at dead letters
/// ("Nack, requeue") ever reaches it, since a dead letter past it would be dropped.
pub const DLQ_DELIVERY_LIMIT: i32 = 1_000_000;

/// The retry delays used unless configured otherwise: 1 s, 10 s, 60 s, 300 s.
pub const DEFAULT_RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
];

/// The whole topology; only the retry delays are configurable.
#[derive(Debug, Clone)]
pub struct Topology {
    /// One retry queue per delay, in the order retries use them. Delays are rounded down
    /// to whole milliseconds (the unit of `x-message-ttl`) and capped at `i32::MAX` ms.
    pub retry_delays: Vec<Duration>,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            retry_delays: DEFAULT_RETRY_DELAYS.to_vec(),
        }
    }
}

impl Topology {
    /// The retry queue for `delay`, e.g. `booksvc.book-changed.retry.quorum.10s` or
    /// `….retry.quorum.200ms`. (`quorum` keeps them apart from the classic
    /// `booksvc.book-changed.retry.<delay>` queues of earlier versions, which drain by
    /// themselves; see docs/decisions/0009-quorum-queues-everywhere.md.)
    pub fn retry_queue_name(delay: Duration) -> String {
        let ms = ttl_millis(delay);
        if ms % 1000 == 0 {
            format!("{RETRY_EXCHANGE}.quorum.{}s", ms / 1000)
        } else {
            format!("{RETRY_EXCHANGE}.quorum.{ms}ms")
        }
    }

    /// The routing key that sends a message through [`RETRY_EXCHANGE`] to the retry queue
    /// for `delay`: the queue's own name.
    pub fn retry_routing_key(delay: Duration) -> String {
        Self::retry_queue_name(delay)
    }

    /// Declares every exchange, queue and binding. Idempotent; safe to run concurrently
    /// from several services. A failure closes `channel` (AMQP semantics).
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        declare_exchange(channel, EXCHANGE, ExchangeKind::Topic).await?;
        self.declare_consumer_side(channel).await
    }

    /// Declares everything but [`EXCHANGE`], which must exist: booksvc's exchanges, queues
    /// and bindings. For a broker user that may not configure `books` (booksvc's user in
    /// `deploy/rabbitmq/setup-users.sh`, so that it cannot delete it).
    pub async fn declare_consumer_side(&self, channel: &Channel) -> Result<(), lapin::Error> {
        declare_exchange(channel, DLQ_EXCHANGE, ExchangeKind::Fanout).await?;
        declare_exchange(channel, RETRY_EXCHANGE, ExchangeKind::Direct).await?;

        declare_queue(channel, DLQ, dlq_args()).await?;
        bind(channel, DLQ, DLQ_EXCHANGE, "").await?;

        declare_queue(channel, QUEUE, main_queue_args()).await?;
        bind(channel, QUEUE, EXCHANGE, BINDING_KEY).await?;

        for &delay in &self.retry_delays {
            let name = Self::retry_queue_name(delay);
            declare_queue(channel, &name, retry_queue_args(delay)).await?;
            bind(
                channel,
                &name,
                RETRY_EXCHANGE,
                &Self::retry_routing_key(delay),
            )
            .await?;
        }
        Ok(())
    }

    /// Declares only what a publisher needs: the exchange [`EXCHANGE`]. For a broker user
    /// that may do nothing more (storagesvc's user in `deploy/rabbitmq/setup-users.sh`).
    pub async fn declare_exchange(channel: &Channel) -> Result<(), lapin::Error> {
        declare_exchange(channel, EXCHANGE, ExchangeKind::Topic).await
    }

    /// Checks that [`EXCHANGE`] exists without declaring it (a passive declare, which needs
    /// no permission); fails with `NOT_FOUND` (closing `channel`) when it does not.
    pub async fn check_exchange(channel: &Channel) -> Result<(), lapin::Error> {
        let options = ExchangeDeclareOptions {
            passive: true,
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                ShortString::from(EXCHANGE),
                ExchangeKind::Topic,
                options,
                FieldTable::default(),
            )
            .await
    }
}

/// Whether the broker refused `error`'s operation for lack of a permission
/// (`ACCESS_REFUSED`, 403): the user may not configure, write or read that resource.
pub fn is_access_refused(error: &lapin::Error) -> bool {
    use lapin::ErrorKind;
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(error.kind(), ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)))
}

/// Whether the broker refused `error`'s declaration because the exchange or queue exists with
/// other properties or arguments (`PRECONDITION_FAILED`, 406).
pub fn is_precondition_failed(error: &lapin::Error) -> bool {
    use lapin::ErrorKind;
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(error.kind(), ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// `delay` as an `x-message-ttl`: whole milliseconds, capped to what a signedint holds.
fn ttl_millis(delay: Duration) -> i32 {
    i32::try_from(delay.as_millis()).unwrap_or(i32::MAX)
}

/// Arguments of [`QUEUE`]; public within the crate so tests can compare them.
pub(crate) fn main_queue_args() -> FieldTable {
    let mut args = quorum_args(DLQ_EXCHANGE);
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(DELIVERY_LIMIT),
    );
    args
}

/// Arguments of [`DLQ`]: dead-letters (on explicit reject only) back to itself, with a
/// delivery limit no operator will ever reach ([`DLQ_DELIVERY_LIMIT`]).
pub(crate) fn dlq_args() -> FieldTable {
    let mut args = quorum_args(DLQ_EXCHANGE);
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(DLQ_DELIVERY_LIMIT),
    );
    args
}

/// Arguments of the retry queue for `delay`: expire after it, then go back to [`QUEUE`].
pub(crate) fn retry_queue_args(delay: Duration) -> FieldTable {
    let mut args = quorum_args("");
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongInt(ttl_millis(delay)),
    );
    args.insert("x-dead-letter-routing-key".into(), long_string(QUEUE));
    args
}

/// What every queue of ours has: quorum, a dead-letter exchange, and at-least-once
/// dead-lettering (which RabbitMQ only applies with `reject-publish` overflow; without a
/// length limit that overflow never triggers).
fn quorum_args(dead_letter_exchange: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args.insert(
        "x-dead-letter-exchange".into(),
        long_string(dead_letter_exchange),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    args.insert("x-overflow".into(), long_string("reject-publish"));
    args
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            ShortString::from(name),
            kind,
            options,
            FieldTable::default(),
        )
        .await
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(ShortString::from(name), options, args)
        .await
        .map(drop);
    if let Err(error) = &declared {
        if is_precondition_failed(error) {
            // The usual cause is an upgrade: the DLQ (classic) or the main queue (no
            // at-least-once dead-lettering) as an earlier version declared them. Say what to
            // do once per attempt; the caller's error says only "PRECONDITION_FAILED".
            tracing::error!(
                queue = name,
                "queue {name} exists with other arguments than this version declares \
                 (from a version before quorum DLQs?); its messages stay where they are, but \
                 nothing can use it until it is migrated as docs/runbook.md \
                 \"Upgrading to quorum queues\" says: {error}"
            );
        }
    }
    declared
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_queues_are_named_by_their_delay() {
        let cases = [
            (
                Duration::from_secs(1),
                "booksvc.book-changed.retry.quorum.1s",
            ),
            (
                Duration::from_secs(300),
                "booksvc.book-changed.retry.quorum.300s",
            ),
            (
                Duration::from_millis(200),
                "booksvc.book-changed.retry.quorum.200ms",
            ),
            (
                Duration::from_millis(1500),
                "booksvc.book-changed.retry.quorum.1500ms",
            ),
            (
                Duration::from_micros(200_900),
                "booksvc.book-changed.retry.quorum.200ms",
            ),
        ];
        for (delay, expected) in cases {
            assert_eq!(
                Topology::retry_queue_name(delay),
                expected,
                "delay {delay:?}"
            );
        }
    }

    #[test]
    fn retry_queue_ttl_matches_its_name_and_returns_to_the_main_queue() {
        let args = retry_queue_args(Duration::from_micros(200_900));
        let inner = args.inner();
        assert_eq!(inner.get("x-message-ttl"), Some(&AMQPValue::LongInt(200)));
        assert_eq!(inner.get("x-dead-letter-exchange"), Some(&long_string("")));
        assert_eq!(
            inner.get("x-dead-letter-routing-key"),
            Some(&long_string(QUEUE))
        );
    }

    #[test]
    fn huge_delays_are_capped_rather_than_wrapping() {
        assert_eq!(ttl_millis(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    #[test]
    fn every_queue_has_a_dead_letter_exchange() {
        for args in [
            main_queue_args(),
            dlq_args(),
            retry_queue_args(Duration::from_secs(1)),
        ] {
            assert!(args.contains_key("x-dead-letter-exchange"), "{args:?}");
        }
    }

    #[test]
    fn default_topology_has_the_documented_delays() {
        assert_eq!(
            Topology::default().retry_delays,
            DEFAULT_RETRY_DELAYS.to_vec()
        );
    }
}
