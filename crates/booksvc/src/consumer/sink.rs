//! [`EventSink`]: where the consumer writes events. Production uses [`BookCache`]; tests wrap
//! it to inject faults into our own code (never to pretend Redis).

use std::future::Future;

use events::BookChanged;

use crate::cache::{BookCache, CacheError, WriteOutcome};

/// Why a sink could not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The sink can take no write now, whatever the event: Redis down, too slow, out of
    /// memory, read-only, ... The consumer pauses until [`EventSink::ping`] succeeds.
    #[error("{0}")]
    Unavailable(String),
    /// May succeed later. Whether it is the sink being down (the consumer pauses) or a
    /// problem with this event (the consumer retries it after a delay) is decided by
    /// [`EventSink::ping`] right after.
    #[error("{0}")]
    Transient(String),
    /// Can never succeed for this event: it goes to the DLQ at once.
    #[error("{0}")]
    Permanent(String),
}

/// The write side of the cache, as the consumer sees it.
pub trait EventSink: Send + Sync + 'static {
    /// Applies `event` under the cache's version rule.
    fn apply(
        &self,
        event: &BookChanged,
    ) -> impl Future<Output = Result<WriteOutcome, SinkError>> + Send;

    /// Whether the sink can be written at all: fails while Redis is down or refuses writes.
    fn ping(&self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl EventSink for BookCache {
    async fn apply(&self, event: &BookChanged) -> Result<WriteOutcome, SinkError> {
        self.apply_event(event).await.map_err(classify)
    }

    async fn ping(&self) -> Result<(), SinkError> {
        self.probe_write().await.map_err(classify)
    }
}

/// Redis down, slow or refusing every write is an outage (pause); another Redis failure may
/// be this event's and may pass (retry later); bad input or configuration never will.
fn classify(error: CacheError) -> SinkError {
    match error {
        CacheError::Unavailable { ref failure, .. } if failure.is_outage() => {
            SinkError::Unavailable(error.to_string())
        }
        CacheError::Unavailable { .. } => SinkError::Transient(error.to_string()),
        CacheError::InvalidInput(_) | CacheError::Config(_) => {
            SinkError::Permanent(error.to_string())
        }
    }
}
