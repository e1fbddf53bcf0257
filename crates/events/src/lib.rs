//! The book-changed wire contract shared by storagesvc (producer) and booksvc (consumer).
//!
//! # Layout
//! - [`envelope`]: the `BookChanged` event, its JSON shape and its strict-but-tolerant parser.
//! - [`topology`]: exchange/queue names fixed by DESIGN.md and one idempotent `declare`.
//! - [`connection`]: connecting with lapin 4 on tokio, named and bounded in time.
//! - [`publisher`]: a confirm-mode channel publishing batches in order with a window.
//! - [`headers`]: the application headers of retries and dead letters, and tolerant readers.
//! - [`nodes`]: `AMQP_URL` parsed once: the nodes of one cluster, never printing a password.
//! - [`session`]: the one connect → declare → open channels → watch → reconnect loop that the
//!   relay, the consumer and the invalidation subscription run on.
//! - [`reconnect`]: capped, jittered pauses between reconnects (the session's and the relay's
//!   database retries).
//! - [`outage`]: a failure that lasts (a broker, a database) logged as its start, a summary a
//!   minute and its end, not a line per attempt or request; the services use it too.
//!
//! # Data flow
//! storagesvc builds a [`BookChanged`] inside its write transaction and stores
//! [`BookChanged::to_json`] in its outbox; the relay turns rows into [`Outgoing`] messages
//! and sends them with [`ConfirmPublisher::publish_in_order`] to [`EXCHANGE`], marking the
//! confirmed prefix as sent. RabbitMQ routes them by [`BINDING_KEY`] to [`QUEUE`], where
//! booksvc reads them with [`BookChanged::parse`]. Both services run
//! [`Topology::declare`] at start-up.

pub mod connection;
pub mod envelope;
pub mod headers;
pub mod nodes;
pub mod outage;
pub mod publisher;
pub mod reconnect;
pub mod session;
pub mod topology;

/// The lapin version this crate is built against, so services name the same `Channel`,
/// `Connection` and `FieldTable` types without pinning lapin twice.
pub use lapin;

pub use connection::{ConnectError, connect, connect_any, connect_node};
pub use envelope::{BookChanged, BookData, EventType, MAX_BODY_BYTES, ParseError};
pub use nodes::{BrokerNode, BrokerNodes};
pub use outage::Outage;
pub use publisher::{ConfirmPublisher, Outgoing, PublishError, PublishReport};
pub use reconnect::ReconnectBackoff;
pub use session::{BrokerClient, Link, SessionEnd, SessionSettings};
pub use topology::{
    BINDING_KEY, DEFAULT_RETRY_DELAYS, DELIVERY_LIMIT, DLQ, DLQ_DELIVERY_LIMIT, DLQ_EXCHANGE,
    EXCHANGE, QUEUE, RETRY_EXCHANGE, Topology, is_access_refused, is_precondition_failed,
};
