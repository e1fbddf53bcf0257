//! [`EventSink`]: where the consumer writes events. Production uses [`BookCache`]; tests wrap
//! it to inject faults into our own code (never to pretend Redis).

use std::future::Future;
use std::time::Duration;

use events::BookChanged;

use crate::cache::{BookCache, CacheError, WriteOutcome};
use crate::client::{ClientError, StorageClient};

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

/// On its own the cache has nothing to check an unproven event against, so it applies events
/// on their version alone ([`BookCache::apply_event_on_version`]): for tests and benchmarks of
/// the consumer's mechanics. booksvc itself consumes through [`CheckedCache`].
impl EventSink for BookCache {
    async fn apply(&self, event: &BookChanged) -> Result<WriteOutcome, SinkError> {
        self.apply_event_on_version(event).await.map_err(classify)
    }

    async fn ping(&self) -> Result<(), SinkError> {
        self.probe_write().await.map_err(classify)
    }
}

/// How long the consumer waits for storagesvc when it checks an unproven event.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The sink booksvc consumes through: the cache under the full rule, and storagesvc to settle
/// the events the cache cannot vouch for (decision 0013: a deleted book stays deleted).
///
/// An upsert older than what the cache has proven (older than its max age, or than the
/// cache's memory after a Redis restart or data loss) may be followed by a delete whose
/// tombstone the cache no longer has (a delete itself needs no proof: the cache writes it).
/// Such an event is never written; instead the entry is filled from storagesvc, the source
/// of truth, the way a read fills it: the revision taken before asking, so an event applied
/// meanwhile keeps its place. A 404 tombstones a known
/// entry and caches nothing for an unknown id. When storagesvc cannot answer, nothing is
/// written (the next read fills the entry) and the event counts as unproven.
#[derive(Clone, Debug)]
pub struct CheckedCache {
    cache: BookCache,
    storage: StorageClient,
}

impl CheckedCache {
    pub fn new(cache: BookCache, storage: StorageClient) -> CheckedCache {
        CheckedCache { cache, storage }
    }

    /// Fills `id` from storagesvc; `Unproven` when storagesvc cannot say.
    async fn fill_from_storage(&self, id: i64) -> Result<WriteOutcome, SinkError> {
        let seen = self.cache.seen().await.map_err(classify)?;
        let book = match self.storage.get_book(id, None, CHECK_TIMEOUT).await {
            Ok(book) => Some(book),
            Err(ClientError::NotFound) => None,
            Err(error) => {
                tracing::warn!(book_id = id, %error, "an unproven event could not be checked with storagesvc: not applied; the next read fills the entry");
                return Ok(WriteOutcome::Unproven);
            }
        };
        self.cache
            .fill_book(id, seen, book.as_ref())
            .await
            .map_err(classify)
    }
}

impl EventSink for CheckedCache {
    async fn apply(&self, event: &BookChanged) -> Result<WriteOutcome, SinkError> {
        match self.cache.apply_event(event).await.map_err(classify)? {
            WriteOutcome::Unproven => {
                tracing::info!(
                    book_id = event.book_id,
                    version = event.version,
                    "event older than what the cache has proven: filling from storagesvc instead"
                );
                crate::metrics::consumer::record_checked();
                self.fill_from_storage(event.book_id).await
            }
            outcome => Ok(outcome),
        }
    }

    async fn ping(&self) -> Result<(), SinkError> {
        self.cache.probe_write().await.map_err(classify)
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
