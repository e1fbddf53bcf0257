//! The transactional outbox: the one way storagesvc emits a book-changed event.
//!
//! A write calls [`enqueue`] inside its own transaction, so the book row and its event commit
//! (or roll back) together. The row also `pg_notify`s [`NOTIFY_CHANNEL`]; PostgreSQL delivers a
//! notification only when the transaction commits, so the relay ([`crate::relay`]) wakes at once
//! for committed events and never for rolled-back ones.
//!
//! Table `outbox` (migrations/0002_outbox.sql): `id`, `book_id`, `event_id`, `routing_key`,
//! `payload` (the exact JSON bytes to publish), `created_at`, `sent_at` (NULL until the broker
//! confirmed it), and the write's W3C trace context `traceparent` / `tracestate`
//! (migrations/0003_outbox_trace_context.sql). Sent rows are pruned by the relay after its
//! retention period.
//!
//! Besides [`enqueue`] and [`stats`], this module holds the relay's queries ([`claim`],
//! [`mark_sent`], [`prune`]) so that all SQL on the table lives in one place.

use std::time::Duration;

use chrono::{DateTime, Utc};
use events::BookChanged;
use sqlx::{Postgres, Transaction};
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::trace_context::{self, TraceHeaders};

/// The LISTEN/NOTIFY channel the relay listens on.
pub const NOTIFY_CHANNEL: &str = "storagesvc_outbox";

/// Records `event` in the outbox inside the caller's transaction and wakes the relay on commit.
///
/// An event without an `event_id` gets one here: the id is the AMQP `message_id` consumers
/// de-duplicate on, so every published event must carry one.
///
/// The row keeps the trace context of the event's `create books` span, a child of the current
/// span (the write's request), which the relay publishes with the event: every write carries
/// its context without its handler having to remember it.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    event: &BookChanged,
) -> Result<(), sqlx::Error> {
    let (event_id, payload) = match event.event_id {
        Some(id) => (id, event.to_json()),
        None => {
            let id = Uuid::now_v7();
            let with_id = BookChanged {
                event_id: Some(id),
                ..event.clone()
            };
            (id, with_id.to_json())
        }
    };
    let span = create_span(event.routing_key(), event_id);
    let trace = TraceHeaders::of(&span);
    // One round trip: the insert and the notification. Referencing `inserted` makes the notify
    // depend on the insert having happened.
    sqlx::query(
        "WITH inserted AS ( \
             INSERT INTO outbox (book_id, event_id, routing_key, payload, traceparent, tracestate) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id) \
         SELECT pg_notify($7, '') FROM inserted",
    )
    .bind(event.book_id)
    .bind(event_id)
    .bind(event.routing_key())
    .bind(payload)
    .bind(trace.traceparent)
    .bind(trace.tracestate)
    .bind(NOTIFY_CHANNEL)
    .execute(&mut **tx)
    .instrument(span)
    .await?;
    Ok(())
}

/// The span of creating an event, per the OpenTelemetry messaging conventions (`create books`,
/// kind producer): a child of the write's span, and the parent the consumer's span continues
/// from, since its context is what the row keeps and the relay publishes.
fn create_span(routing_key: &str, event_id: Uuid) -> Span {
    let span = tracing::info_span!(
        "create_event",
        otel.name = "create books",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "create",
        messaging.operation.name = "create",
        messaging.destination.name = events::EXCHANGE,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = %event_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    trace_context::record_ids(&span);
    span
}

/// How far the relay is behind: what `/healthz/ready` and the metrics report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Committed events not yet confirmed by the broker.
    pub backlog: i64,
    /// Age of the oldest unsent event; `None` when the backlog is empty.
    pub oldest_age: Option<Duration>,
}

/// Reads the backlog size and the age of its oldest event (one cheap query on the unsent index).
pub async fn stats(db: impl sqlx::PgExecutor<'_>) -> Result<OutboxStats, sqlx::Error> {
    let (backlog, oldest_secs): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM clock_timestamp() - min(created_at))::float8 \
         FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(db)
    .await?;
    // `created_at` is its transaction's start, which can be a hair after our clock reading.
    let oldest_age =
        oldest_secs.map(|secs| Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default());
    Ok(OutboxStats {
        backlog,
        oldest_age,
    })
}

/// An unsent outbox row, claimed by a relay for publishing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingEvent {
    /// Outbox row id; publishing follows id order.
    pub id: i64,
    /// The book the event is about (per-book order is kept on this).
    pub book_id: i64,
    /// The event's id, published as the AMQP `message_id`.
    pub event_id: Uuid,
    /// `book.created`, `book.updated` or `book.deleted`.
    pub routing_key: String,
    /// The exact JSON body to publish.
    pub payload: Vec<u8>,
    /// When the write's transaction started.
    pub created_at: DateTime<Utc>,
    /// The write's W3C `traceparent`, if it had one.
    pub traceparent: Option<String>,
    /// The write's W3C `tracestate`, if it had one.
    pub tracestate: Option<String>,
}

/// Claims up to `limit` of the oldest unsent rows for this transaction, in id order.
///
/// `FOR UPDATE SKIP LOCKED` lets several relays claim disjoint rows without waiting on each
/// other. A claimed row is dropped from the result when its book has an earlier unsent row
/// this claim does not hold (another relay has it in flight): publishing the later event
/// first would break per-book order. Dropped rows stay locked until the transaction ends and
/// are claimed again later.
///
/// Rows are never selected by a high-water-mark id: ids are assigned at insert but commit out
/// of order, so a mark would skip rows that commit late.
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    limit: usize,
) -> Result<Vec<PendingEvent>, sqlx::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Walk the unsent index in id order, whatever the statistics say. Right after a burst of
    // writes (or a broker outage) the planner still believes the backlog is tiny and picks a
    // bitmap scan that sorts *every* unsent row, payloads included, for each batch: 55 ms per
    // 256-row claim on a 20k backlog, worse as the backlog grows — exactly when the relay has
    // to catch up. `is_local = true`: the settings end with this transaction.
    sqlx::query(
        "SELECT set_config('enable_bitmapscan', 'off', true), \
                set_config('enable_seqscan', 'off', true)",
    )
    .execute(&mut **tx)
    .await?;
    // `first_foreign` is, per claimed book, the first unsent row of that book not in this
    // claim; rows after it must wait. `ORDER BY book_id, id LIMIT 1` walks the partial index
    // (book_id, id) from the book's oldest unsent row and stops at once (a plain `min(id)` let
    // the planner walk the (id) index across every book instead: 10x slower claims).
    sqlx::query_as(
        "WITH claimed AS ( \
             SELECT id, book_id, event_id, routing_key, payload, created_at, traceparent, \
                    tracestate FROM outbox \
             WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED), \
         books AS ( \
             SELECT b.book_id, foreign_row.id AS first_foreign \
             FROM (SELECT DISTINCT book_id FROM claimed) b \
             LEFT JOIN LATERAL ( \
                 SELECT o.id FROM outbox o \
                 WHERE o.book_id = b.book_id AND o.sent_at IS NULL \
                   AND o.id NOT IN (SELECT id FROM claimed) \
                 ORDER BY o.book_id, o.id LIMIT 1) foreign_row ON true) \
         SELECT c.id, c.book_id, c.event_id, c.routing_key, c.payload, c.created_at, \
                c.traceparent, c.tracestate \
         FROM claimed c JOIN books USING (book_id) \
         WHERE books.first_foreign IS NULL OR c.id < books.first_foreign \
         ORDER BY c.id",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Marks the rows with these ids as sent (the broker confirmed them), in one statement.
pub async fn mark_sent(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deletes up to `limit` rows sent more than `retention` ago; returns how many went.
///
/// Unsent rows are never deleted. Small batches keep each delete short; `SKIP LOCKED` lets
/// several relays prune at once without queueing behind each other.
pub async fn prune(
    db: impl sqlx::PgExecutor<'_>,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let retention_secs = retention.as_secs_f64();
    let deleted = sqlx::query(
        "DELETE FROM outbox WHERE id IN ( \
             SELECT id FROM outbox \
             WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1) \
             ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(retention_secs)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}
