//! Pauses between broker sessions: exponential with jitter, capped at `CONSUMER_RECONNECT_MAX`.
//!
//! The consumer's only use of the `backoff` crate (unmaintained, kept at the user's request:
//! docs/decisions/0002-backoff-crate.md). The cap is seconds, not minutes: RabbitMQ takes
//! 5–8 s to accept connections after a restart, and a consumer that waits minutes after that
//! leaves the cache cold for nothing. Jitter keeps replicas from reconnecting in lockstep.
//!
//! The loop must never give up, yet `max_elapsed_time` is always set (the crate's default
//! is 15 minutes): when it runs out we log an error an operator can alert on and start the
//! sequence again, still capped.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;

/// The first pause: short, since a broker restart often drops connections that a second
/// attempt finds open again (another node, or `start_app` done).
const INITIAL: Duration = Duration::from_millis(200);
/// How long the broker may stay unreachable before each error log.
const ALERT_AFTER: Duration = Duration::from_secs(5 * 60);

/// The pauses between reconnect attempts.
#[derive(Debug)]
pub(crate) struct ReconnectPauses {
    inner: ExponentialBackoff,
    max: Duration,
}

impl ReconnectPauses {
    pub(crate) fn new(max: Duration) -> ReconnectPauses {
        let max = max.max(INITIAL);
        let mut inner = ExponentialBackoff {
            initial_interval: INITIAL,
            current_interval: INITIAL,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: max,
            max_elapsed_time: Some(ALERT_AFTER),
            ..ExponentialBackoff::default()
        };
        inner.reset();
        ReconnectPauses { inner, max }
    }

    /// The pause before the next attempt.
    pub(crate) fn next_pause(&mut self) -> Duration {
        if let Some(pause) = self.inner.next_backoff() {
            // Jitter spreads pauses ±50% around the interval; the cap is a cap all the same.
            return pause.min(self.max);
        }
        tracing::error!(
            unreachable_for = ?ALERT_AFTER,
            "the broker has been unreachable for a long time; still trying"
        );
        self.inner.reset();
        self.max
    }

    /// Starts over from the shortest pause (after a session that was healthy).
    pub(crate) fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_stay_under_the_cap_with_jitter() {
        let max = Duration::from_secs(5);
        let mut pauses = ReconnectPauses::new(max);
        let first = pauses.next_pause();
        assert!(first <= INITIAL * 2, "{first:?}");
        let later: Vec<_> = (0..20).map(|_| pauses.next_pause()).collect();
        assert!(later.iter().all(|p| *p <= max), "{later:?}");
        assert!(later.iter().any(|p| *p >= max / 2), "{later:?}");
        pauses.reset();
        assert!(pauses.next_pause() <= INITIAL * 2);
    }
}
