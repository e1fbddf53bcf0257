//! The JSON log lines a service writes, captured in a test.
//!
//! [`LogCapture::install`] sets a thread-local subscriber with the service's own filter. In a
//! `#[tokio::test]` (one thread) it sees every task the test spawns, the services' included.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde_json::Value;
use tracing::Dispatch;
use tracing::subscriber::{DefaultGuard, NoSubscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Every line written so far, shared with the subscriber.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Captures this thread's events through `filter` (a service's `telemetry::env_filter`),
    /// as JSON lines, until the guard is dropped.
    pub fn install(filter: EnvFilter) -> (LogCapture, DefaultGuard) {
        keep_callsites_live();
        let capture = LogCapture::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(capture.clone())
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    /// The lines so far, parsed.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// Makes a scoped subscriber (`with_default`, `set_default`, `with_subscriber`) see every
/// span and event it enables, whatever the test binary's other tests do. Call it before
/// installing one.
///
/// tracing-core (0.1.36) caches each callsite's interest once for the whole process. While
/// exactly one dispatcher is registered, it asks the default dispatcher of the thread that
/// reaches the callsite first (tokio-rs/tracing#3611). A sibling test without a subscriber that
/// reaches, say, the consumer's delivery span first caches "never", and the span is then
/// disabled under the test's own subscriber too. A second dispatcher that lives as long as the
/// test binary keeps tracing on the path that asks every registered dispatcher, and
/// registering it rebuilds the interests already cached.
pub fn keep_callsites_live() {
    static SECOND: OnceLock<Dispatch> = OnceLock::new();
    SECOND.get_or_init(|| Dispatch::new(NoSubscriber::default()));
}

/// A string field of a captured line (`message`, or any field the event recorded).
pub fn field<'a>(line: &'a Value, name: &str) -> &'a str {
    line["fields"][name].as_str().unwrap_or_default()
}

/// The lines about `outage` whose message starts with `message` (see the services' `outage`
/// modules).
pub fn outage_lines<'a>(lines: &'a [Value], outage: &str, message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| {
            field(line, "outage") == outage && field(line, "message").starts_with(message)
        })
        .collect()
}

impl Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
