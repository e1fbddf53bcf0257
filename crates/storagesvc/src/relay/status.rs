//! [`RelayStatus`]: the relay's health, shared cheaply with `/healthz/ready`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::RelayError;
use crate::outbox::OutboxStats;

/// A cheap, cloneable view of the relay's state; the relay updates it as it goes.
#[derive(Debug, Clone, Default)]
pub struct RelayStatus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Housekeeping's last outbox reading and when it was taken.
    outbox: Mutex<Option<(OutboxStats, Instant)>>,
}

impl RelayStatus {
    /// Whether the relay holds a working broker connection right now.
    pub fn broker_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// The most recent failure, cleared by the next successful connect or batch.
    pub fn last_error(&self) -> Option<String> {
        self.last_error_slot().clone()
    }

    /// Housekeeping's last reading of the outbox and how old it is; `None` before the first.
    /// Readiness reports this instead of counting the backlog itself on every probe.
    pub fn outbox_stats(&self) -> Option<(OutboxStats, Duration)> {
        let slot = self
            .inner
            .outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().map(|(stats, at)| (*stats, at.elapsed()))
    }

    pub(super) fn set_outbox_stats(&self, stats: OutboxStats) {
        let mut slot = self
            .inner
            .outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some((stats, Instant::now()));
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Relaxed);
        metrics::gauge!("storagesvc_relay_broker_connected").set(if connected { 1.0 } else { 0.0 });
        if connected {
            self.clear_error();
        }
    }

    /// Logs `error` once and keeps it for readiness reports.
    pub(super) fn record_error(&self, error: &RelayError) {
        tracing::warn!(error = %error, "outbox relay: {error}; will retry");
        *self.last_error_slot() = Some(error.to_string());
    }

    pub(super) fn clear_error(&self) {
        let mut slot = self.last_error_slot();
        if slot.is_some() {
            *slot = None;
        }
    }

    fn last_error_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // The slot holds a plain string: a panic elsewhere cannot leave it inconsistent.
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
