//! A circuit breaker with gobreaker's semantics.
//!
//! ```text
//!            trip rule holds                      open_timeout elapsed
//!   ┌────────┐ ─────────────▶ ┌──────┐ ─────────────────────────▶ ┌──────────┐
//!   │ Closed │                │ Open │                            │ HalfOpen │
//!   └────────┘ ◀───────┐      └──────┘ ◀───────────────────────── └──────────┘
//!     │   ▲            │                     any probe fails            │
//!     └───┘            └────────────────────────────────────────────────┘
//!  counts reset               `max_half_open` consecutive probes succeed
//!  every `interval`
//! ```
//!
//! - **Closed**: calls pass. Counts are kept per *generation*; a new generation (counts reset)
//!   starts every `interval` (never when `interval` is zero). After each failure the trip rule
//!   is checked: `consecutive_failures >= N`, or `failures / requests >= ratio` once at least
//!   `min_requests` calls were made in this generation.
//! - **Open**: calls are refused at once (the caller goes straight to its fallback) until
//!   `open_timeout` has passed; [`NotPermitted::retry_after`] says how long is left.
//! - **HalfOpen**: at most `max_half_open` calls are let through as probes. When that many
//!   succeed in a row the breaker closes; the first failure opens it again.
//!
//! Every state change starts a new generation. A result reported for an older generation is
//! ignored, so a slow call started before the breaker opened cannot close it. A call whose
//! [`Permit`] is dropped without a verdict (the client went away) counts as neither success
//! nor failure, and frees its half-open probe slot.
//!
//! Time comes from `tokio::time::Instant`, so tests drive every transition with paused time.
//! No maintained crate has these semantics (see `docs/decisions/`): failsafe lets unlimited
//! calls through half-open, recloser uses a ring buffer, tower has no breaker.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// When the breaker trips, how long it stays open, and how it probes.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Trip after this many failures in a row (0 disables the rule).
    pub consecutive_failures: u32,
    /// Trip when the failure ratio reaches this (0.0–1.0; above 1.0 disables the rule)…
    pub failure_ratio: f64,
    /// …once at least this many calls were made in the current generation.
    pub min_requests: u32,
    /// How long the breaker stays open before letting probes through.
    pub open_timeout: Duration,
    /// Probes allowed in half-open; that many successes in a row close the breaker.
    pub max_half_open: u32,
    /// While closed, counts reset this often (zero: never).
    pub interval: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            open_timeout: Duration::from_secs(5),
            max_half_open: 1,
            interval: Duration::from_secs(60),
        }
    }
}

/// The three states. `as_str` gives the label used in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub const ALL: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened in the current generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u32,
    pub successes: u32,
    pub failures: u32,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
}

/// A call was refused without being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotPermitted {
    /// The breaker is open; it will let a probe through after `retry_after`.
    #[error("circuit open; next probe in {retry_after:?}")]
    Open { retry_after: Duration },
    /// Half-open and every probe slot is taken.
    #[error("circuit half-open and all probe slots are in use")]
    TooManyProbes,
}

impl NotPermitted {
    /// How long until a call may be permitted again (for `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NotPermitted::Open { retry_after } => Some(*retry_after),
            NotPermitted::TooManyProbes => None,
        }
    }
}

/// A cheaply clonable circuit breaker shared by every request to one dependency.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Mutex<Inner>>,
    settings: Arc<BreakerSettings>,
}

struct Inner {
    state: State,
    generation: u64,
    counts: Counts,
    /// Closed: when counts reset (None: never). Open: when probing may start. HalfOpen: None.
    expiry: Option<Instant>,
}

/// Permission to make one call. Report its verdict with [`Permit::success`] or
/// [`Permit::failure`]; dropping it unreported means the call was cancelled.
#[must_use = "report the call's outcome, or drop the permit if the call was cancelled"]
pub struct Permit {
    breaker: CircuitBreaker,
    generation: u64,
    reported: bool,
}

impl Permit {
    /// The call succeeded (a 404 from storagesvc is a success: the dependency answered).
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.on_result(self.generation, true);
    }

    /// The call failed in a way that says the dependency is unhealthy.
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.on_result(self.generation, false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.on_cancelled(self.generation);
        }
    }
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> CircuitBreaker {
        let expiry = closed_expiry(Instant::now(), &settings);
        let breaker = CircuitBreaker {
            inner: Arc::new(Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                counts: Counts::default(),
                expiry,
            })),
            settings: Arc::new(settings),
        };
        crate::metrics::record_breaker_state(State::Closed.as_str());
        breaker
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// The state now (an elapsed open timeout already reads as half-open).
    pub fn state(&self) -> State {
        self.lock_current().state
    }

    pub fn counts(&self) -> Counts {
        self.lock_current().counts
    }

    /// The refusal a call would get now if the breaker is open (counted as a call not
    /// permitted), without taking a permit; else the state (closed, or half-open: probes are
    /// left to the caller that takes a permit). Lets a read that has a fallback skip the
    /// whole call machinery while storagesvc is known to be down, and decide from the same
    /// look whether to wait for a call at all.
    pub fn refusal_while_open(&self) -> Result<State, NotPermitted> {
        let inner = self.lock_current();
        if inner.state != State::Open {
            return Ok(inner.state);
        }
        let retry_after = inner.expiry.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        });
        crate::metrics::record_breaker_not_permitted();
        Err(NotPermitted::Open { retry_after })
    }

    /// The refusal [`CircuitBreaker::try_acquire`] would give now (open, or half-open with every
    /// probe slot taken: a trial is in flight), counted as a call not permitted, without taking
    /// a permit; else the state. Lets a read with a copy in memory serve it at once whenever
    /// no call of its own could go out.
    pub fn refusal_now(&self) -> Result<State, NotPermitted> {
        let inner = self.lock_current();
        let refused = match inner.state {
            State::Open => NotPermitted::Open {
                retry_after: inner.expiry.map_or(Duration::ZERO, |at| {
                    at.saturating_duration_since(Instant::now())
                }),
            },
            State::HalfOpen if inner.counts.requests >= self.settings.max_half_open => {
                NotPermitted::TooManyProbes
            }
            state => return Ok(state),
        };
        crate::metrics::record_breaker_not_permitted();
        Err(refused)
    }

    /// Asks to make one call. Refused while open, and in half-open once every probe slot is taken.
    pub fn try_acquire(&self) -> Result<Permit, NotPermitted> {
        let mut inner = self.lock_current();
        match inner.state {
            State::Open => {
                let now = Instant::now();
                let retry_after = inner.expiry.map_or(Duration::ZERO, |at| at - now);
                crate::metrics::record_breaker_not_permitted();
                return Err(NotPermitted::Open { retry_after });
            }
            State::HalfOpen if inner.counts.requests >= self.settings.max_half_open => {
                crate::metrics::record_breaker_not_permitted();
                return Err(NotPermitted::TooManyProbes);
            }
            State::Closed | State::HalfOpen => {}
        }
        inner.counts.requests += 1;
        Ok(Permit {
            breaker: self.clone(),
            generation: inner.generation,
            reported: false,
        })
    }

    fn on_result(&self, generation: u64, success: bool) {
        let mut inner = self.lock_current();
        // A verdict from an older generation describes a world that is gone: ignore it.
        if inner.generation != generation {
            return;
        }
        let now = Instant::now();
        if success {
            inner.record_success();
            // Enough probes in a row got through: the dependency is back.
            if inner.state == State::HalfOpen
                && inner.counts.consecutive_successes >= self.settings.max_half_open
            {
                inner.transition(State::Closed, now, &self.settings);
            }
        } else {
            inner.record_failure();
            let trip = match inner.state {
                State::Closed => should_trip(&inner.counts, &self.settings),
                // One failed probe is enough: the dependency is still down.
                State::HalfOpen => true,
                State::Open => false,
            };
            if trip {
                inner.transition(State::Open, now, &self.settings);
            }
        }
    }

    /// A cancelled call tells nothing about the dependency; give back its request slot so
    /// a half-open breaker can send another probe.
    fn on_cancelled(&self, generation: u64) {
        let mut inner = self.lock_current();
        if inner.generation == generation {
            inner.counts.requests = inner.counts.requests.saturating_sub(1);
        }
    }

    /// Locks the state after applying the transitions that time alone causes.
    fn lock_current(&self) -> MutexGuard<'_, Inner> {
        // The lock is never held across an await or a panic-prone call; a poisoned lock
        // still holds consistent counts, so recover it rather than propagate a panic.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match (inner.state, inner.expiry) {
            // The closed interval ended: a fresh generation with zeroed counts.
            (State::Closed, Some(at)) if at <= now => inner.new_generation(now, &self.settings),
            // The open period ended: let probes through.
            (State::Open, Some(at)) if at <= now => {
                inner.transition(State::HalfOpen, now, &self.settings)
            }
            _ => {}
        }
        inner
    }
}

impl Inner {
    fn record_success(&mut self) {
        self.counts.successes += 1;
        self.counts.consecutive_successes += 1;
        self.counts.consecutive_failures = 0;
    }

    fn record_failure(&mut self) {
        self.counts.failures += 1;
        self.counts.consecutive_failures += 1;
        self.counts.consecutive_successes = 0;
    }

    fn transition(&mut self, to: State, now: Instant, settings: &BreakerSettings) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.new_generation(now, settings);
        tracing::warn!(from = %from, to = %to, "circuit breaker changed state");
        crate::metrics::record_breaker_transition(from.as_str(), to.as_str());
        crate::metrics::record_breaker_state(to.as_str());
    }

    fn new_generation(&mut self, now: Instant, settings: &BreakerSettings) {
        self.generation += 1;
        self.counts = Counts::default();
        self.expiry = match self.state {
            State::Closed => closed_expiry(now, settings),
            State::Open => Some(now + settings.open_timeout),
            State::HalfOpen => None,
        };
    }
}

fn closed_expiry(now: Instant, settings: &BreakerSettings) -> Option<Instant> {
    (!settings.interval.is_zero()).then(|| now + settings.interval)
}

fn should_trip(counts: &Counts, settings: &BreakerSettings) -> bool {
    let consecutive = settings.consecutive_failures > 0
        && counts.consecutive_failures >= settings.consecutive_failures;
    let ratio = counts.requests > 0
        && counts.requests >= settings.min_requests
        && f64::from(counts.failures) / f64::from(counts.requests) >= settings.failure_ratio;
    consecutive || ratio
}

#[cfg(test)]
mod tests;
