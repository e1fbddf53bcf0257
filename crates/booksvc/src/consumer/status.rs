//! [`ConsumerStatus`]: what the consumer is doing, readable at no cost by `/healthz/ready`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use events::BrokerNode;

use crate::metrics::consumer as metrics;

/// The consumer's state. Exported as the gauge `booksvc_consumer_state{state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerState {
    /// Not connected: connecting for the first time, or reconnecting after a broker outage.
    Reconnecting,
    /// Consuming and applying events.
    Running,
    /// Holding the delivery that found the cache down (Redis down), taking no others, until
    /// the cache answers. Redis down with no event arriving leaves the state `Running`.
    Paused,
    /// `run` has returned (shutdown).
    Stopped,
}

impl ConsumerState {
    /// Every state, for the gauge.
    pub const ALL: [ConsumerState; 4] = [
        ConsumerState::Reconnecting,
        ConsumerState::Running,
        ConsumerState::Paused,
        ConsumerState::Stopped,
    ];

    /// The name used in health bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerState::Reconnecting => "reconnecting",
            ConsumerState::Running => "running",
            ConsumerState::Paused => "paused",
            ConsumerState::Stopped => "stopped",
        }
    }

    fn from_u8(value: u8) -> ConsumerState {
        Self::ALL
            .into_iter()
            .find(|state| *state as u8 == value)
            .unwrap_or(ConsumerState::Stopped)
    }
}

/// A shared view of the consumer's state; clones see the same value.
#[derive(Debug, Clone)]
pub struct ConsumerStatus {
    state: Arc<AtomicU8>,
    /// `host:port` of the broker node the session runs on, if any.
    node: Arc<Mutex<Option<String>>>,
}

impl ConsumerStatus {
    pub(crate) fn new() -> ConsumerStatus {
        let status = ConsumerStatus {
            state: Arc::new(AtomicU8::new(ConsumerState::Reconnecting as u8)),
            node: Arc::default(),
        };
        metrics::record_state(ConsumerState::Reconnecting.as_str());
        status
    }

    /// The current state.
    pub fn state(&self) -> ConsumerState {
        ConsumerState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// `host:port` of the broker node in use (never a password), while connected.
    pub fn node(&self) -> Option<String> {
        self.node_slot().clone()
    }

    pub(crate) fn set_node(&self, node: Option<&BrokerNode>) {
        *self.node_slot() = node.map(|node| node.address().to_owned());
    }

    fn node_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A plain string: a panic elsewhere cannot leave it inconsistent.
        self.node.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set(&self, state: ConsumerState) {
        let previous = self.state.swap(state as u8, Ordering::Relaxed);
        if previous != state as u8 {
            tracing::info!(state = state.as_str(), "consumer state changed");
            metrics::record_state(state.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_state_and_every_state_round_trips() {
        let status = ConsumerStatus::new();
        let view = status.clone();
        assert_eq!(view.state(), ConsumerState::Reconnecting);
        for state in ConsumerState::ALL {
            status.set(state);
            assert_eq!(view.state(), state, "{}", state.as_str());
        }
    }

    #[test]
    fn the_metric_labels_are_the_states() {
        let names = ConsumerState::ALL.map(ConsumerState::as_str);
        assert_eq!(names, crate::metrics::consumer::CONSUMER_STATES);
    }
}
