//! [`DeliveryHandler`]: one delivery from arrival to ack.
//!
//! ```text
//! parse ──poison──────────────────────────────────────────▶ DLQ, ack
//!   │ ok
//!   ▼
//! apply ──ok (applied / ignored as stale)─────────────────▶ ack
//!   │ permanent ──────────────────────────────────────────▶ DLQ, ack
//!   │ unavailable (Redis down, slow, refusing writes) ─────▶ PAUSE (below)
//!   │ transient ─▶ ping ok? ── yes: this event's problem ─▶ retry queue or DLQ, ack
//!   │                  └────── no: the cache is down ─────▶ PAUSE: hold the delivery,
//!   └────────────────────────────────────────────────────── ping until back, apply again
//! ```
//!
//! The sink's ping is a *write* probe: a Redis out of memory or read-only answers PING and
//! refuses every write, and must pause the consumer like a Redis that is down, or good
//! events would spend their attempts and end in the DLQ.
//!
//! Every republish (retry or DLQ) is confirmed by the broker before the original is acked,
//! so a crash in between duplicates a message but never loses one (duplicates are harmless:
//! the cache's version rule ignores them). Deliveries are settled one at a time, never with
//! `multiple`, and never requeued: on RabbitMQ 4 every requeue counts towards the quorum
//! queue's delivery limit. A failure to publish or ack means the channel is gone; the session
//! ends and the unacked delivery comes back after the reconnect.
//!
//! Except when the broker refuses *this* message (a nack, e.g. a DLQ under a `max-length`
//! policy with `reject-publish`; unroutable; or not expressible in AMQP): then a retry goes
//! to the DLQ instead, and a dead letter the DLQ refuses is rejected without requeue (logged,
//! counted in `booksvc_consumer_rejected_total`). Ending the session would bring the same
//! message straight back, for ever on RabbitMQ 4.3+, where a closed channel no longer counts
//! towards the delivery limit: no message may stop the consumer.

use std::time::Duration;

use chrono::Utc;
use events::headers::{self, TRACEPARENT, TRACESTATE};
use events::lapin::Channel;
use events::lapin::message::Delivery;
use events::lapin::options::{BasicAckOptions, BasicRejectOptions};
use events::lapin::types::{AMQPValue, LongString};
use events::{
    BookChanged, ConfirmPublisher, DLQ_EXCHANGE, EXCHANGE, Outgoing, PublishError, RETRY_EXCHANGE,
    Topology,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, field};

use super::DeadLetterReason;
use super::routing::{NextStep, Received, RetryTiers, one_line};
use super::session::SessionEnd;
use super::sink::{EventSink, SinkError};
use super::status::{ConsumerState, ConsumerStatus};
use crate::cache::WriteOutcome;
use crate::metrics::consumer as metrics;
use crate::trace_context::TraceHeaders;

/// What becomes of a delivery once processing has decided.
#[derive(Debug)]
enum Disposition {
    /// Done (applied, or ignored as stale): ack.
    Ack,
    /// Publish to the retry queue of `delay`, then ack.
    Retry {
        delay: Duration,
        attempts: u32,
        error: String,
    },
    /// Publish to the DLQ, then ack.
    DeadLetter {
        reason: DeadLetterReason,
        attempts: u32,
        error: String,
    },
}

/// Handles deliveries of one broker session.
pub(crate) struct DeliveryHandler<'a, S> {
    pub(crate) sink: &'a S,
    pub(crate) publisher: &'a ConfirmPublisher,
    /// The consuming channel, watched while paused.
    pub(crate) channel: &'a Channel,
    pub(crate) tiers: &'a RetryTiers,
    pub(crate) confirm_timeout: Duration,
    pub(crate) pause_poll: Duration,
    pub(crate) status: &'a ConsumerStatus,
    pub(crate) shutdown: &'a CancellationToken,
}

impl<S: EventSink> DeliveryHandler<'_, S> {
    /// Processes and settles one delivery. `Err` ends the session: the broker connection is
    /// unusable, or shutdown came while the delivery was held during a pause.
    pub(crate) async fn handle(&self, delivery: Delivery) -> Result<(), SessionEnd> {
        metrics::record_consumed();
        let received = Received {
            routing_key: delivery.routing_key.as_str(),
            properties: &delivery.properties,
            body: &delivery.data,
        };
        let span = delivery_span(&received, delivery.redelivered);
        async {
            let disposition = self.process(&received).await?;
            self.settle(&delivery, &received, disposition).await
        }
        .instrument(span)
        .await
    }

    async fn process(&self, received: &Received<'_>) -> Result<Disposition, SessionEnd> {
        let event = match BookChanged::parse(received.body) {
            Ok(event) => event,
            Err(error) => {
                return Ok(Disposition::DeadLetter {
                    reason: DeadLetterReason::Poison,
                    attempts: received.failed_attempts().saturating_add(1),
                    error: one_line(&error.to_string()),
                });
            }
        };
        record_event_fields(&event);
        loop {
            match self.sink.apply(&event).await {
                Ok(outcome) => {
                    record_outcome(&event, outcome);
                    return Ok(Disposition::Ack);
                }
                Err(SinkError::Permanent(error)) => {
                    return Ok(Disposition::DeadLetter {
                        reason: DeadLetterReason::Unprocessable,
                        attempts: received.failed_attempts().saturating_add(1),
                        error: one_line(&error),
                    });
                }
                // The sink answers pings: the failure is this event's, worth a later retry.
                Err(SinkError::Transient(error)) if self.sink.ping().await.is_ok() => {
                    return Ok(self.after_transient_failure(received, one_line(&error)));
                }
                // The sink is down: no attempt is spent, the event waits for it.
                Err(SinkError::Unavailable(error) | SinkError::Transient(error)) => {
                    self.pause_until_sink_is_back(&error).await?;
                }
            }
        }
    }

    fn after_transient_failure(&self, received: &Received<'_>, error: String) -> Disposition {
        match self.tiers.after_failure(received.failed_attempts()) {
            NextStep::Retry { delay, attempts } => Disposition::Retry {
                delay,
                attempts,
                error,
            },
            NextStep::DeadLetter { attempts } => Disposition::DeadLetter {
                reason: DeadLetterReason::Exhausted,
                attempts,
                error,
            },
        }
    }

    /// Holds the delivery in hand (taking no others) until the sink answers a ping again.
    async fn pause_until_sink_is_back(&self, error: &str) -> Result<(), SessionEnd> {
        self.status.set(ConsumerState::Paused);
        tracing::warn!(%error, "cache unavailable: pausing consumption until it is back");
        let paused = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(SessionEnd::Shutdown),
                () = tokio::time::sleep(self.pause_poll) => {}
            }
            if !self.channel.status().connected() {
                return Err(SessionEnd::Lost(
                    "the channel closed while paused".to_owned(),
                ));
            }
            if self.sink.ping().await.is_ok() {
                break;
            }
        }
        self.status.set(ConsumerState::Running);
        tracing::info!(paused_for = ?paused.elapsed(), "cache is back: resuming consumption");
        Ok(())
    }

    async fn settle(
        &self,
        delivery: &Delivery,
        received: &Received<'_>,
        disposition: Disposition,
    ) -> Result<(), SessionEnd> {
        match disposition {
            Disposition::Ack => ack(delivery).await,
            Disposition::Retry {
                delay,
                attempts,
                error,
            } => {
                let message = received.retry_message(delay, attempts, &error);
                match self.publish(RETRY_EXCHANGE, message).await? {
                    Ok(()) => {
                        let tier = Topology::retry_queue_name(delay);
                        tracing::info!(%error, attempts, retry_queue = %tier, "event failed: retrying later");
                        metrics::record_retried(tier);
                        ack(delivery).await
                    }
                    Err(refusal) => {
                        tracing::warn!(%error, %refusal, "the retry queue refused the event: dead-lettering it");
                        let error = format!("{error} (the retry queue refused it: {refusal})");
                        let reason = DeadLetterReason::RetryRefused;
                        self.dead_letter(delivery, received, reason, attempts, &error)
                            .await
                    }
                }
            }
            Disposition::DeadLetter {
                reason,
                attempts,
                error,
            } => {
                self.dead_letter(delivery, received, reason, attempts, &error)
                    .await
            }
        }
    }

    /// Publishes the DLQ copy, then acks. When the broker will never take that copy (the
    /// DLQ refuses it, or it cannot be expressed), the delivery is rejected instead: ending
    /// the session would bring it straight back and stop the consumer for good.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        received: &Received<'_>,
        reason: DeadLetterReason,
        attempts: u32,
        error: &str,
    ) -> Result<(), SessionEnd> {
        let message = received.dead_letter_message(reason, attempts, error);
        match self.publish(DLQ_EXCHANGE, message).await? {
            Ok(()) => {
                tracing::warn!(%error, attempts, reason = reason.as_str(), "message dead-lettered");
                metrics::record_dead_lettered(reason.as_str());
                ack(delivery).await
            }
            Err(refusal) => {
                tracing::error!(
                    %error,
                    %refusal,
                    attempts,
                    reason = reason.as_str(),
                    "the DLQ refused the message: rejecting it (the broker dead-letters it \
                     without x-error, or drops it)"
                );
                metrics::record_rejected(reason.as_str());
                reject(delivery).await
            }
        }
    }

    /// Publishes `message` and waits for the broker's confirm. The inner `Err` is a refusal
    /// of this message that trying again cannot change; the outer one is the broker path
    /// failing (the session ends, and the delivery comes back after the reconnect).
    async fn publish(
        &self,
        exchange: &str,
        mut message: Outgoing,
    ) -> Result<Result<(), PublishError>, SessionEnd> {
        set_trace_headers(&mut message);
        let report = self
            .publisher
            .publish_in_order(exchange, &[message], 1, self.confirm_timeout)
            .await;
        match report.error {
            None => Ok(Ok(())),
            Some(
                refusal @ (PublishError::Nacked
                | PublishError::Returned { .. }
                | PublishError::InvalidMessage(_)),
            ) => Ok(Err(refusal)),
            Some(error) => Err(SessionEnd::Lost(format!(
                "republishing to {exchange} failed: {error}"
            ))),
        }
    }
}

async fn ack(delivery: &Delivery) -> Result<(), SessionEnd> {
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(SessionEnd::Lost(
            "the channel closed before the ack".to_owned(),
        )),
        Err(error) => Err(SessionEnd::Lost(format!("ack failed: {error}"))),
    }
}

/// Rejects without requeueing: the main queue's dead-letter exchange gets the message (as
/// RabbitMQ dead-letters it, with `x-death`), or the broker drops it.
async fn reject(delivery: &Delivery) -> Result<(), SessionEnd> {
    match delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(SessionEnd::Lost(
            "the channel closed before the reject".to_owned(),
        )),
        Err(error) => Err(SessionEnd::Lost(format!("reject failed: {error}"))),
    }
}

/// The span of one delivery, per the OpenTelemetry messaging conventions (`process books`:
/// the operation and the exchange the event was published to; kind consumer). It continues
/// the trace of the write that produced the event, from the `traceparent` / `tracestate`
/// headers the relay (or the attempt before, for a retry) set, or starts one; its ids go
/// into every log line of the delivery.
fn delivery_span(received: &Received<'_>, redelivered: bool) -> Span {
    let routing_key = received.original_routing_key();
    let message_id = received.properties.message_id().as_ref();
    let span = tracing::info_span!(
        "consume_event",
        otel.name = "process books",
        otel.kind = "consumer",
        otel.status_code = field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = EXCHANGE,
        messaging.rabbitmq.destination.routing_key = %routing_key,
        messaging.message.id = message_id.map(|id| id.as_str()),
        "error.type" = field::Empty,
        attempt = received.failed_attempts().saturating_add(1),
        redelivered,
        event_id = field::Empty,
        book_id = field::Empty,
        version = field::Empty,
    );
    let headers = received.properties.headers().as_ref();
    TraceHeaders::read(|name| headers::text(headers, name)).continue_in(&span);
    span
}

/// Points a republished copy's trace context at this attempt's span, so the next attempt
/// (or whoever reads the DLQ) continues the same trace below it. Without a context of our
/// own (no OpenTelemetry layer), the copied original headers stay.
fn set_trace_headers(message: &mut Outgoing) {
    let trace = TraceHeaders::current();
    let Some(traceparent) = trace.traceparent else {
        return;
    };
    let mut headers = message.headers.inner().clone();
    headers.insert(TRACEPARENT.into(), long_string(&traceparent));
    match trace.tracestate {
        Some(tracestate) => headers.insert(TRACESTATE.into(), long_string(&tracestate)),
        None => headers.remove(TRACESTATE),
    };
    message.headers = headers.into();
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn record_event_fields(event: &BookChanged) {
    let span = Span::current();
    if let Some(event_id) = event.event_id {
        span.record("event_id", field::display(event_id));
    }
    span.record("book_id", event.book_id);
    span.record("version", event.version);
}

fn record_outcome(event: &BookChanged, outcome: WriteOutcome) {
    match outcome {
        WriteOutcome::Applied => metrics::record_applied(),
        WriteOutcome::IgnoredStale | WriteOutcome::Skipped => metrics::record_ignored_stale(),
        WriteOutcome::Unproven => metrics::record_unproven(),
    }
    if let Some(occurred_at) = event.occurred_at {
        let lag = (Utc::now() - occurred_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        metrics::record_lag(lag);
    }
    tracing::info!(?outcome, "event handled");
}
