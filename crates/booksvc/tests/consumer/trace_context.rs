//! Trace context through the consumer: applying an event continues the trace of the write
//! that produced it (the `traceparent` / `tracestate` headers), through the retry tiers and
//! into the dead letter, and the log line of the application carries the trace id.
//!
//! The consumer runs under a subscriber of its own with the OpenTelemetry layer (no
//! exporter) and a JSON log layer, as booksvc's `telemetry::init` sets up.

use std::sync::{Arc, Mutex};

use booksvc::cache::WriteOutcome;
use booksvc::consumer::{Consumer, EventSink, SinkError};
use booksvc::trace_context::TraceHeaders;
use events::headers::{self, TRACEPARENT, TRACESTATE};
use events::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use events::{BookChanged, DLQ, Outgoing};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;

use crate::helpers::{Broker, FlakySink, cached_at, consumer_settings, shared_cache, updated};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const PARENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// A sink that remembers the trace context in force at each attempt, in front of a
/// [`FlakySink`].
#[derive(Clone)]
struct TraceRecordingSink {
    inner: FlakySink,
    seen: Arc<Mutex<Vec<TraceHeaders>>>,
}

impl TraceRecordingSink {
    fn seen(&self) -> Vec<TraceHeaders> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl EventSink for TraceRecordingSink {
    async fn apply(&self, event: &BookChanged) -> Result<WriteOutcome, SinkError> {
        self.seen
            .lock()
            .expect("not poisoned")
            .push(TraceHeaders::current());
        self.inner.apply(event).await
    }

    async fn ping(&self) -> Result<(), SinkError> {
        self.inner.ping().await
    }
}

/// JSON log lines, as the service writes them, into memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    fn parsed(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("not poisoned").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the consumer on `sink` under the traced subscriber until the token is cancelled.
fn spawn_traced(
    broker: &Broker,
    sink: TraceRecordingSink,
    lines: &Lines,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    testkit::log_capture::keep_callsites_live();
    let provider = SdkTracerProvider::builder().build();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::registry()
        .with(booksvc::log_format::json_lines(move || writer.clone()))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let shutdown = CancellationToken::new();
    let consumer = Consumer::new(consumer_settings(&broker.url), sink);
    let task = tokio::spawn(consumer.run(shutdown.clone()).with_subscriber(subscriber));
    (shutdown, task)
}

/// `event` as the relay publishes it for a write made in the trace of [`PARENT`].
fn traced_message(event: &BookChanged) -> Outgoing {
    let mut message = Outgoing::event(event);
    let mut headers = FieldTable::default();
    for (name, value) in [(TRACEPARENT, PARENT), (TRACESTATE, "vendor=abc")] {
        headers.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    message.headers = headers;
    message
}

/// `(trace id, span id)` of a `traceparent`.
fn ids(traceparent: Option<&str>) -> (String, String) {
    let traceparent = traceparent.expect("a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

async fn recording_sink() -> anyhow::Result<TraceRecordingSink> {
    Ok(TraceRecordingSink {
        inner: FlakySink::new(shared_cache().await?),
        seen: Arc::default(),
    })
}

#[tokio::test]
async fn applying_an_event_continues_the_writes_trace_and_logs_it_at_info() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let sink = recording_sink().await?;
    let lines = Lines::default();
    let (shutdown, task) = spawn_traced(&broker, sink.clone(), &lines);
    let event = updated(31, 2, "traced");

    broker.publish_messages(&[traced_message(&event)]).await?;

    let cache = sink.inner.cache().clone();
    assert!(cached_at(&cache, 31, 2).await, "the event was not applied");
    let seen = sink.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (trace_id, span_id) = ids(seen[0].traceparent.as_deref());
    assert_eq!(trace_id, PARENT_TRACE_ID, "the write's trace goes on");
    assert_ne!(
        span_id, PARENT_SPAN_ID,
        "under a span of the consumer's own"
    );
    assert_eq!(seen[0].tracestate.as_deref(), Some("vendor=abc"));
    let logged = lines.parsed().into_iter().find(|line| {
        line["fields"]["message"] == "event handled" && line["trace_id"] == PARENT_TRACE_ID
    });
    let line = logged.unwrap_or_else(|| panic!("no line of the trace: {:?}", lines.parsed()));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["span_id"], span_id.as_str(), "{line}");
    assert_eq!(line["span"]["book_id"], 31, "{line}");

    shutdown.cancel();
    task.await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn retries_and_the_dead_letter_stay_in_the_writes_trace() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let sink = recording_sink().await?;
    sink.inner.fail(32, u32::MAX);
    let lines = Lines::default();
    let (shutdown, task) = spawn_traced(&broker, sink.clone(), &lines);

    broker
        .publish_messages(&[traced_message(&updated(32, 2, "never"))])
        .await?;

    assert!(
        broker.wait_for_depth(DLQ, 1).await,
        "nothing reached the DLQ"
    );
    let attempts = sink.seen();
    assert_eq!(attempts.len(), 3, "max attempts: {attempts:?}");
    let mut parents = Vec::new();
    for attempt in &attempts {
        let (trace_id, span_id) = ids(attempt.traceparent.as_deref());
        assert_eq!(trace_id, PARENT_TRACE_ID, "{attempts:?}");
        assert_eq!(attempt.tracestate.as_deref(), Some("vendor=abc"));
        parents.push(span_id);
    }
    let dead = broker.take(DLQ).await?.expect("a dead letter");
    let headers = dead.properties.headers().as_ref();
    let dead_parent = headers::text(headers, TRACEPARENT);
    let (trace_id, span_id) = ids(dead_parent.as_deref());
    assert_eq!(
        trace_id, PARENT_TRACE_ID,
        "the dead letter is in the write's trace"
    );
    assert_eq!(
        Some(&span_id),
        parents.last(),
        "below the last attempt, where a re-drive goes on"
    );
    assert_eq!(
        headers::text(headers, TRACESTATE).as_deref(),
        Some("vendor=abc")
    );

    shutdown.cancel();
    task.await?;
    broker.close().await;
    Ok(())
}
