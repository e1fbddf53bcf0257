//! [`RelayStatus`]: the relay's health, shared cheaply with `/healthz/ready`.

use std::fmt::Display;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use events::BrokerNode;

use crate::outbox::OutboxStats;

/// A cheap, cloneable view of the relay's state; the relay updates it as it goes.
#[derive(Debug, Clone, Default)]
pub struct RelayStatus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `host:port` of the node the relay's session runs on, if any.
    node: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    /// Housekeeping's last outbox reading and when it was taken.
    outbox: Mutex<Option<(OutboxStats, Instant)>>,
}

impl RelayStatus {
    /// Whether the relay holds a working broker connection right now.
    pub fn broker_connected(&self) -> bool {
        self.node().is_some()
    }

    /// `host:port` of the broker node in use (never a password), while connected.
    pub fn node(&self) -> Option<String> {
        lock(&self.inner.node).clone()
    }

    /// The most recent failure, cleared by the next successful connect or batch.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Housekeeping's last reading of the outbox and how old it is; `None` before the first.
    /// Readiness reports this instead of counting the backlog itself on every probe.
    pub fn outbox_stats(&self) -> Option<(OutboxStats, Duration)> {
        lock(&self.inner.outbox)
            .as_ref()
            .map(|(stats, at)| (*stats, at.elapsed()))
    }

    pub(super) fn set_outbox_stats(&self, stats: OutboxStats) {
        *lock(&self.inner.outbox) = Some((stats, Instant::now()));
    }

    pub(super) fn set_connected(&self, node: Option<&BrokerNode>) {
        let connected = node.is_some();
        *lock(&self.inner.node) = node.map(|node| node.address().to_owned());
        crate::metrics::record_broker_connected(connected);
        if connected {
            self.clear_error();
        }
    }

    /// Keeps `error` for readiness reports (the caller has logged it).
    pub(super) fn record_error(&self, error: impl Display) {
        *lock(&self.inner.last_error) = Some(error.to_string());
    }

    pub(super) fn clear_error(&self) {
        let mut slot = lock(&self.inner.last_error);
        if slot.is_some() {
            *slot = None;
        }
    }
}

fn lock<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The slots hold plain values: a panic elsewhere cannot leave them inconsistent.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}
