//! The active probe: closes the breaker when storagesvc is back, without waiting for a miss.
//!
//! A half-open breaker closes only after probe calls succeed, and normally the probes are
//! requests: a cache miss or a stale entry. While every read is a fresh `hit`, none of them
//! calls storagesvc, so the breaker would stay half-open (and the data would go on aging
//! towards stale) until some entry expires. This task watches the breaker and, once the open
//! period has ended, sends the probe itself: `GET /healthz/ready` on storagesvc (which checks
//! PostgreSQL), through the breaker like any call, so a success closes it and a failure opens
//! it for another `BREAKER_TIMEOUT`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::breaker::{CircuitBreaker, State};
use crate::client::StorageClient;

/// What one probe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// storagesvc is ready: reported as a success.
    Healthy,
    /// storagesvc failed: reported as a failure, so the breaker opens again.
    Unhealthy,
    /// The breaker let no probe through (closed for real traffic, open, or its probe slots
    /// taken by requests): nothing was sent.
    Skipped,
}

/// Watches one breaker and probes storagesvc when it turns half-open.
pub struct ActiveProbe {
    breaker: CircuitBreaker,
    client: StorageClient,
    /// How often the breaker's state is looked at (a mutex read; cheap).
    poll: Duration,
    /// Bound on one probe call.
    timeout: Duration,
}

impl ActiveProbe {
    /// Polls at a tenth of the open period (between 20 ms and 1 s): the breaker closes at most
    /// that long after storagesvc is back and the period has ended.
    pub fn new(breaker: CircuitBreaker, client: StorageClient, timeout: Duration) -> ActiveProbe {
        let poll = (breaker.settings().open_timeout / 10)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        ActiveProbe {
            breaker,
            client,
            poll,
            timeout,
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.poll) => {}
            }
            // Half-open may need several probes in a row (BREAKER_HALF_OPEN_PROBES).
            while self.breaker.state() == State::HalfOpen {
                if self.probe_once().await != ProbeOutcome::Healthy {
                    break;
                }
            }
        }
    }

    /// One probe through the breaker, if it lets one through.
    pub async fn probe_once(&self) -> ProbeOutcome {
        if self.breaker.state() != State::HalfOpen {
            return ProbeOutcome::Skipped;
        }
        let Ok(permit) = self.breaker.try_acquire() else {
            return ProbeOutcome::Skipped;
        };
        let (outcome, label) = match self.client.ready(self.timeout).await {
            Ok(()) => {
                permit.success();
                (ProbeOutcome::Healthy, "healthy")
            }
            Err(error) => {
                tracing::info!(%error, "breaker probe: storagesvc still unavailable");
                permit.failure();
                (ProbeOutcome::Unhealthy, "unhealthy")
            }
        };
        crate::metrics::record_breaker_probe(label);
        outcome
    }
}
