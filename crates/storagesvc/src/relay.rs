//! The outbox relay: publishes committed outbox rows to RabbitMQ with publisher confirms.
//!
//! [`OutboxRelay::relay_batch`] is one unit of work: claim a batch of unsent rows in a
//! transaction, publish them in id order with a window of confirms in flight, mark the
//! confirmed prefix sent, commit. Whatever was not confirmed stays unsent and goes out on a
//! later attempt, so an event may be duplicated but never lost.
//!
//! [`OutboxRelay::run`] only decides *when* to do that work (and runs two such units at once
//! on separate channels, so PostgreSQL round trips overlap with publishing):
//! - on every (re)connect to the broker it declares the topology and drains until idle
//!   (connecting, declaring, watching and reconnecting, to any node of `AMQP_URL`, is
//!   [`events::session`]'s loop; `session` says what the relay opens on it);
//! - then it sleeps until a commit's `NOTIFY` arrives (see `wake`), the slow
//!   `poll_interval` safety net fires (NOTIFY is not stored: a listener that was
//!   disconnected misses it), or shutdown;
//! - a lost broker connection or failed publish → the session closes (bounded), backs off and
//!   reconnects, to the next node first; a database error → back off and retry on the same
//!   connection. It never gives up: only the shutdown
//!   token ends it, after the batch in hand.
//!
//! A housekeeping task prunes sent rows past `retention` and exports the backlog gauges.
//!
//! Metrics: `storagesvc_outbox_published_total`, `storagesvc_outbox_publish_failures_total`
//! (failed batches), `storagesvc_outbox_batch_duration_seconds`,
//! `storagesvc_relay_broker_connected` (0/1), and from housekeeping
//! `storagesvc_outbox_backlog` and `storagesvc_outbox_oldest_age_seconds`.

mod session;
mod status;
mod wake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use events::{
    BrokerNodes, ConfirmPublisher, EXCHANGE, Outgoing, PublishError, QUEUE, SessionEnd, headers,
};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use self::session::RelayClient;
pub use self::status::RelayStatus;
use crate::database::{self, bounded};
use crate::metrics;
use crate::outbox::{self, PendingEvent};
use crate::trace_context;
use events::{Outage, ReconnectBackoff};

/// How often sent rows are pruned and the backlog gauges refreshed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(2);
/// Rows deleted per prune statement: short deletes, no long locks.
const PRUNE_BATCH: i64 = 5_000;

/// The relay's knobs (env vars `OUTBOX_*`, see the service's `--help`).
///
/// `Debug` leaves out the URL: it carries the broker password.
#[derive(Clone)]
pub struct RelaySettings {
    /// The broker's nodes (`AMQP_URL`); the relay owns its own connection to one of them.
    pub amqp_url: BrokerNodes,
    /// Most rows claimed and published per batch (one transaction).
    pub batch_size: usize,
    /// Most publishes awaiting a confirm at once.
    pub publish_window: usize,
    /// Safety-net poll for rows whose NOTIFY was missed.
    pub poll_interval: Duration,
    /// How long the broker may take to confirm a publish (also bounds connecting and each
    /// set-up and close step).
    pub confirm_timeout: Duration,
    /// Longest pause between reconnect attempts.
    pub reconnect_max: Duration,
    /// How long sent rows are kept before pruning; zero prunes them on the next pass.
    pub retention: Duration,
    /// The AMQP topology declared on every (re)connect.
    pub topology: events::Topology,
    /// Client-side bound on each database step (see [`database::step_timeout`]).
    pub db_timeout: Duration,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("amqp_url", &"[redacted]")
            .field("batch_size", &self.batch_size)
            .field("publish_window", &self.publish_window)
            .field("poll_interval", &self.poll_interval)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("reconnect_max", &self.reconnect_max)
            .field("retention", &self.retention)
            .field("topology", &self.topology)
            .field("db_timeout", &self.db_timeout)
            .finish()
    }
}

/// What one [`OutboxRelay::relay_batch`] call achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayOutcome {
    /// This many events were confirmed by the broker and marked sent.
    Published(usize),
    /// Nothing this relay may publish right now.
    Idle,
}

/// Why a unit of relay work failed; the rows it held stay unsent.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// PostgreSQL failed (down, timeout, ...): retry later on the same broker connection.
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The broker did not confirm a publish: reconnect before trying again.
    #[error("publish failed after {confirmed} confirmed: {source}")]
    Publish {
        /// How many leading events were confirmed (and marked sent) before the failure.
        confirmed: usize,
        /// The first failure.
        source: PublishError,
    },
    /// The broker connection or a publisher channel was found closed.
    #[error("the broker connection was lost: {0}")]
    ConnectionLost(String),
}

/// Publishes outbox rows to RabbitMQ; see the module docs.
pub struct OutboxRelay {
    pool: PgPool,
    config: RelaySettings,
    status: RelayStatus,
    /// The relay's and housekeeping's database failures, logged as one outage.
    database: Outage,
}

impl OutboxRelay {
    /// A relay over `pool` (the service's pool; the NOTIFY listener opens its own connection).
    pub fn new(pool: PgPool, config: RelaySettings) -> OutboxRelay {
        OutboxRelay {
            pool,
            config,
            status: RelayStatus::default(),
            database: Outage::new("PostgreSQL, outbox relay"),
        }
    }

    /// A cheap shared view of the relay's health, for `/healthz/ready`.
    pub fn status(&self) -> RelayStatus {
        self.status.clone()
    }

    /// One unit of work: claim, publish in order, mark the confirmed prefix sent, commit.
    ///
    /// Every database step is bounded by `db_timeout`; one that expires is a
    /// [`RelayError::Database`] error like any other, and its connection is closed rather
    /// than returned to the pool (see [`database::with_connection`]).
    pub async fn relay_batch(
        &self,
        publisher: &ConfirmPublisher,
    ) -> Result<RelayOutcome, RelayError> {
        let mut connection = self.pool.acquire().await?;
        let outcome = self.relay_batch_on(&mut connection, publisher).await;
        if matches!(&outcome, Err(RelayError::Database(error)) if database::is_timeout(error)) {
            drop(connection.detach());
        }
        outcome
    }

    async fn relay_batch_on(
        &self,
        connection: &mut PgConnection,
        publisher: &ConfirmPublisher,
    ) -> Result<RelayOutcome, RelayError> {
        let started = Instant::now();
        let step = self.config.db_timeout;
        let mut tx = bounded(step, connection.begin()).await?;
        let pending = bounded(step, outbox::claim(&mut tx, self.config.batch_size)).await?;
        if pending.is_empty() {
            bounded(step, tx.rollback()).await?;
            return Ok(RelayOutcome::Idle);
        }
        // `mandatory` proves only that *some* queue took each event: booksvc's per-replica
        // invalidation queues are bound to `books` too. The durable queue must exist, or the
        // events stay here (the session ends and reconnects, as for an unroutable event).
        if let Err(source) = publisher
            .check_queue(QUEUE, self.config.confirm_timeout)
            .await
        {
            bounded(step, tx.rollback()).await?;
            metrics::record_outbox_batch(0, true, started.elapsed());
            return Err(RelayError::Publish {
                confirmed: 0,
                source,
            });
        }
        let messages: Vec<Outgoing> = pending.iter().map(to_outgoing).collect();
        let span = send_span(&pending);
        let report = publisher
            .publish_in_order(
                EXCHANGE,
                &messages,
                self.config.publish_window,
                self.config.confirm_timeout,
            )
            .instrument(span.clone())
            .await;
        if report.error.is_some() {
            trace_context::record_error(&span, "publish");
        }
        let sent: Vec<i64> = pending[..report.confirmed]
            .iter()
            .map(|row| row.id)
            .collect();
        bounded(step, outbox::mark_sent(&mut tx, &sent)).await?;
        bounded(step, tx.commit()).await?;
        metrics::record_outbox_batch(report.confirmed, report.error.is_some(), started.elapsed());
        match report.error {
            None => Ok(RelayOutcome::Published(report.confirmed)),
            Some(source) => Err(RelayError::Publish {
                confirmed: report.confirmed,
                source,
            }),
        }
    }

    /// Deletes rows sent more than `retention` ago, in small batches; returns how many.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let (retention, step) = (self.config.retention, self.config.db_timeout);
            let deleted = database::with_connection(&self.pool, step, async |db| {
                outbox::prune(db, retention, PRUNE_BATCH).await
            })
            .await?;
            total += deleted;
            if deleted < PRUNE_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// Runs until `shutdown` is cancelled; stops after the batch in hand. Never returns early
    /// on broker or database errors: it logs them, backs off and keeps going.
    pub async fn run(self, shutdown: CancellationToken) {
        let relay = Arc::new(self);
        let wake = Arc::new(Notify::new());
        let helpers = shutdown.child_token();
        // Stops the helpers even if this future is dropped mid-way (its task aborted).
        let _stop_helpers = helpers.clone().drop_guard();
        let listener = tokio::spawn(wake::listen_for_commits(
            relay.pool.clone(),
            wake.clone(),
            relay.config.reconnect_max,
            helpers.clone(),
        ));
        let housekeeping = tokio::spawn(housekeep(relay.clone(), helpers.clone()));
        relay.connect_and_relay(&wake, &shutdown).await;
        helpers.cancel();
        // Both helpers stop at their next await point; a join error is a panic in them.
        for (name, task) in [("listener", listener), ("housekeeping", housekeeping)] {
            if let Err(error) = task.await {
                tracing::error!(task = name, %error, "outbox relay helper task failed");
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// The outer loop: [`events::session::run`] with the relay as its client.
    async fn connect_and_relay(&self, wake: &Notify, shutdown: &CancellationToken) {
        self.status.set_connected(None);
        let client = RelayClient { relay: self, wake };
        events::session::run(&client.settings(), &client, shutdown).await;
        self.status.set_connected(None);
    }

    /// Drains, then waits for work, until shutdown or the broker connection is lost.
    async fn relay_until_lost(
        &self,
        session: &session::Publishers<'_>,
        wake: &Notify,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let mut watchdog = session.link.watchdog();
        loop {
            // An empty drain publishes nothing, so it would not notice a dead connection.
            if let Err(reason) = session.check() {
                return SessionEnd::Lost(RelayError::ConnectionLost(reason).to_string());
            }
            if let Err(error) = self.drain(session.publishers, shutdown).await {
                return SessionEnd::Lost(error.to_string());
            }
            if shutdown.is_cancelled() {
                return SessionEnd::Shutdown;
            }
            match wait_for_work(
                session,
                &mut watchdog,
                wake,
                self.config.poll_interval,
                shutdown,
            )
            .await
            {
                Wake::Work => {}
                Wake::BrokerLost(reason) => {
                    return SessionEnd::Lost(RelayError::ConnectionLost(reason).to_string());
                }
                Wake::Shutdown => return SessionEnd::Shutdown,
            }
        }
    }

    /// Runs one lane per publisher until all are idle (see [`session::LANES`]). A lane that
    /// fails does not cut the others short: each finishes the batch in hand first.
    async fn drain(
        &self,
        publishers: &[ConfirmPublisher],
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let lanes = publishers.iter().map(|p| self.drain_lane(p, shutdown));
        futures::future::join_all(lanes).await.into_iter().collect()
    }

    /// Calls [`Self::relay_batch`] until idle or shutdown. Database errors are retried here
    /// with backoff (the broker connection is fine); a publish error ends the session.
    async fn drain_lane(
        &self,
        publisher: &ConfirmPublisher,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut db_backoff = ReconnectBackoff::new(self.config.reconnect_max);
        while !shutdown.is_cancelled() {
            match self.relay_batch(publisher).await {
                Ok(RelayOutcome::Published(_)) => {
                    self.database.succeeded();
                    db_backoff.reset();
                    self.status.clear_error();
                }
                Ok(RelayOutcome::Idle) => {
                    self.database.succeeded();
                    return Ok(());
                }
                Err(error @ RelayError::Database(_)) => {
                    // Retried with backoff; logged as an outage, not once per retry.
                    self.database.failed(&error);
                    self.status.record_error(&error);
                    if !db_backoff.pause(shutdown).await {
                        return Ok(());
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// The span of sending one batch, per the OpenTelemetry messaging conventions (`send books`,
/// kind producer). A batch holds events of many writes, so the span is a trace of its own
/// that links to each event's `create books` span, the context the message carries.
fn send_span(batch: &[PendingEvent]) -> Span {
    let span = tracing::info_span!(
        "send_events",
        otel.name = "send books",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = EXCHANGE,
        // As an i64: the OpenTelemetry layer exports a u64 as a string.
        messaging.batch.message_count = i64::try_from(batch.len()).unwrap_or(i64::MAX),
    );
    for row in batch {
        let created =
            trace_context::span_context_of(row.traceparent.as_deref(), row.tracestate.as_deref());
        if let Some(context) = created {
            span.add_link(context);
        }
    }
    span
}

/// The AMQP message for an outbox row: the stored bytes, unchanged, with the write's trace
/// context as the headers `traceparent` and `tracestate`.
fn to_outgoing(row: &PendingEvent) -> Outgoing {
    let mut headers = FieldTable::default();
    let trace = [
        (headers::TRACEPARENT, &row.traceparent),
        (headers::TRACESTATE, &row.tracestate),
    ];
    for (name, value) in trace {
        if let Some(value) = value {
            let value = AMQPValue::LongString(LongString::from(value.as_str()));
            headers.insert(ShortString::from(name), value);
        }
    }
    Outgoing {
        routing_key: row.routing_key.clone(),
        message_id: row.event_id.to_string(),
        body: row.payload.clone(),
        headers,
        timestamp: u64::try_from(row.created_at.timestamp()).ok(),
    }
}

/// Why an idle relay woke up.
enum Wake {
    /// A commit notified, or the safety-net poll fired: drain.
    Work,
    /// The idle broker connection died: reconnect.
    BrokerLost(String),
    /// The shutdown token was cancelled.
    Shutdown,
}

/// Sleeps until a commit notifies, the poll fires or shutdown, checking on every watchdog tick
/// that the idle broker connection is still alive (otherwise nothing would notice until the
/// next batch).
async fn wait_for_work(
    session: &session::Publishers<'_>,
    watchdog: &mut tokio::time::Interval,
    wake: &Notify,
    poll_interval: Duration,
    shutdown: &CancellationToken,
) -> Wake {
    let poll = tokio::time::sleep(poll_interval);
    tokio::pin!(poll);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Wake::Shutdown,
            () = wake.notified() => return Wake::Work,
            () = &mut poll => return Wake::Work,
            _ = watchdog.tick() => {
                if let Err(reason) = session.check() {
                    return Wake::BrokerLost(reason);
                }
            }
        }
    }
}

/// Prunes sent rows and refreshes the backlog gauges every few seconds until `shutdown`.
async fn housekeep(relay: Arc<OutboxRelay>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while shutdown.run_until_cancelled(tick.tick()).await.is_some() {
        if let Err(error) = relay.prune().await {
            relay
                .database
                .failed(&format_args!("pruning the outbox: {error}"));
        }
        let stats = database::with_connection(&relay.pool, relay.config.db_timeout, async |db| {
            outbox::stats(db).await
        });
        match stats.await {
            Ok(stats) => {
                relay.database.succeeded();
                relay.status.set_outbox_stats(stats);
                let age = stats.oldest_age.unwrap_or_default();
                metrics::record_outbox_stats(stats.backlog, age);
            }
            Err(error) => relay
                .database
                .failed(&format_args!("reading outbox stats: {error}")),
        }
    }
}
