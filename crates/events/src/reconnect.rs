//! Reconnect pauses for the long-lived AMQP users of both services (storagesvc's outbox
//! relay, booksvc's consumer): exponential, jittered, capped.
//!
//! `backoff` 0.4 is unmaintained (RUSTSEC-2025-0012) but was asked for; it is used here only
//! to compute delays, never to drive a retry loop (docs/decisions/0002-backoff-crate.md).
//! Its default `max_elapsed_time` (15 minutes) would end the sequence; a relay or consumer
//! must never give up on its broker or database (shutdown ends it), so it is set to `None`
//! explicitly. Delays are capped at the configured maximum: RabbitMQ takes 5–8 s to come back
//! after a restart here, so minutes would only add downtime.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// First pause after a failure: short, since PostgreSQL restarts in well under a second.
const INITIAL_DELAY: Duration = Duration::from_millis(100);

/// Growing, jittered pauses between reconnect attempts, capped at a maximum.
pub struct ReconnectBackoff {
    delays: ExponentialBackoff,
    max: Duration,
}

impl ReconnectBackoff {
    /// Delays from 100 ms doubling (±30 % jitter, so replicas do not retry in lockstep) up to `max`.
    pub fn new(max: Duration) -> Self {
        let delays = ExponentialBackoffBuilder::new()
            .with_initial_interval(INITIAL_DELAY.min(max))
            .with_multiplier(2.0)
            .with_randomization_factor(0.3)
            .with_max_interval(max)
            .with_max_elapsed_time(None)
            .build();
        Self { delays, max }
    }

    /// The next delay; never more than the maximum, even with jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next_backoff().unwrap_or(self.max).min(self.max)
    }

    /// Starts again from the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.delays.reset();
    }

    /// Sleeps for the next delay; returns `false` if `shutdown` came first.
    pub async fn pause(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        shutdown
            .run_until_cancelled(tokio::time::sleep(delay))
            .await
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let max = Duration::from_secs(2);
        let mut backoff = ReconnectBackoff::new(max);
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(
            delays[0] <= Duration::from_millis(130),
            "first delay {:?}",
            delays[0]
        );
        assert!(delays.iter().all(|d| *d <= max), "{delays:?}");
        assert!(
            delays[19] >= Duration::from_millis(1_400),
            "never reaches the cap: {delays:?}"
        );
    }

    #[test]
    fn delays_never_run_out() {
        // The crate's default would stop after 15 minutes of elapsed time; ours never stops.
        let mut backoff = ReconnectBackoff::new(Duration::from_millis(1));
        assert!((0..10_000).all(|_| backoff.next_delay() <= Duration::from_millis(1)));
    }

    #[test]
    fn reset_starts_again_from_the_shortest_delay() {
        let mut backoff = ReconnectBackoff::new(Duration::from_secs(10));
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(130));
    }
}
