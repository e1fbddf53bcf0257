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
        export_state(State::Closed);
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
        metrics::counter!("booksvc_breaker_calls_not_permitted_total").increment(1);
        Err(NotPermitted::Open { retry_after })
    }

    /// Asks to make one call. Refused while open, and in half-open once every probe slot is taken.
    pub fn try_acquire(&self) -> Result<Permit, NotPermitted> {
        let mut inner = self.lock_current();
        match inner.state {
            State::Open => {
                let now = Instant::now();
                let retry_after = inner.expiry.map_or(Duration::ZERO, |at| at - now);
                metrics::counter!("booksvc_breaker_calls_not_permitted_total").increment(1);
                return Err(NotPermitted::Open { retry_after });
            }
            State::HalfOpen if inner.counts.requests >= self.settings.max_half_open => {
                metrics::counter!("booksvc_breaker_calls_not_permitted_total").increment(1);
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
        metrics::counter!("booksvc_breaker_transitions_total", "from" => from.as_str(), "to" => to.as_str())
            .increment(1);
        export_state(to);
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

/// `booksvc_breaker_state{state=...}`: 1 for the current state, 0 for the others.
fn export_state(current: State) {
    for state in State::ALL {
        let value = if state == current { 1.0 } else { 0.0 };
        metrics::gauge!("booksvc_breaker_state", "state" => state.as_str()).set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 10,
            open_timeout: Duration::from_secs(5),
            max_half_open: 2,
            interval: Duration::from_secs(60),
        }
    }

    fn fail(breaker: &CircuitBreaker, n: u32) {
        for _ in 0..n {
            breaker.try_acquire().expect("permitted").failure();
        }
    }

    fn succeed(breaker: &CircuitBreaker, n: u32) {
        for _ in 0..n {
            breaker.try_acquire().expect("permitted").success();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_refuses_calls() {
        let breaker = CircuitBreaker::new(settings());
        // Two failures are below the threshold of three.
        fail(&breaker, 2);
        assert_eq!(breaker.state(), State::Closed);
        // The third trips it.
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
        // Open: refused at once, with the whole timeout still ahead.
        let refused = breaker.try_acquire().err().expect("refused while open");
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(5)));
        // Two seconds later, three remain.
        advance(Duration::from_secs(2)).await;
        let refused = breaker.try_acquire().err().expect("still open");
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn refusal_while_open_only_when_open_and_takes_no_probe_slot() {
        let breaker = CircuitBreaker::new(settings());
        assert_eq!(breaker.refusal_while_open(), Ok(State::Closed), "closed");
        fail(&breaker, 3);
        let refused = breaker.refusal_while_open().expect_err("open");
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(5)));
        advance(Duration::from_secs(5)).await;
        // Half-open: not a refusal, and asking took none of the two probe slots.
        assert_eq!(breaker.refusal_while_open(), Ok(State::HalfOpen));
        let _first = breaker.try_acquire().expect("probe 1");
        let _second = breaker.try_acquire().expect("probe 2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_consecutive_failure_count() {
        let breaker = CircuitBreaker::new(settings());
        fail(&breaker, 2);
        succeed(&breaker, 1);
        fail(&breaker, 2);
        // 2 + 2 failures, never 3 in a row, and 5 requests is below min_requests for the ratio.
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_ratio_once_enough_calls_were_made() {
        let breaker = CircuitBreaker::new(BreakerSettings {
            consecutive_failures: 0, // ratio rule only
            ..settings()
        });
        // Alternate: 50% failures, but only 8 calls so far (min is 10).
        for _ in 0..4 {
            succeed(&breaker, 1);
            fail(&breaker, 1);
        }
        assert_eq!(breaker.state(), State::Closed);
        succeed(&breaker, 1);
        // The tenth call fails: 5 of 10 = 0.5 reaches the ratio.
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_reset_every_interval_while_closed() {
        let breaker = CircuitBreaker::new(settings());
        fail(&breaker, 2);
        assert_eq!(breaker.counts().consecutive_failures, 2);
        // A new interval starts a new generation with zeroed counts.
        advance(Duration::from_secs(60)).await;
        assert_eq!(breaker.counts(), Counts::default());
        // So two more failures do not trip it.
        fail(&breaker, 2);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_timeout_closes_after_enough_successful_probes() {
        let breaker = CircuitBreaker::new(settings());
        fail(&breaker, 3);
        // The open period ends: the breaker reads as half-open.
        advance(Duration::from_secs(5)).await;
        assert_eq!(breaker.state(), State::HalfOpen);
        // Two probe slots: a third concurrent call is refused.
        let first = breaker.try_acquire().expect("probe 1");
        let second = breaker.try_acquire().expect("probe 2");
        assert_eq!(
            breaker.try_acquire().err(),
            Some(NotPermitted::TooManyProbes)
        );
        // One success is not enough to close…
        first.success();
        assert_eq!(breaker.state(), State::HalfOpen);
        // …two in a row are.
        second.success();
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.counts(), Counts::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_the_breaker_again_for_a_full_timeout() {
        let breaker = CircuitBreaker::new(settings());
        fail(&breaker, 3);
        advance(Duration::from_secs(5)).await;
        breaker.try_acquire().expect("probe").failure();
        assert_eq!(breaker.state(), State::Open);
        let refused = breaker.try_acquire().err().expect("open again");
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn results_from_an_older_generation_are_ignored() {
        let breaker = CircuitBreaker::new(settings());
        // Two slow calls start while closed…
        let slow_ok = breaker.try_acquire().expect("permitted");
        let slow_err = breaker.try_acquire().expect("permitted");
        // …the breaker opens meanwhile and then goes half-open…
        fail(&breaker, 3);
        advance(Duration::from_secs(5)).await;
        let probe = breaker.try_acquire().expect("probe");
        // …the late success must not count as a probe…
        slow_ok.success();
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(breaker.counts().successes, 0);
        // …and the late failure must not reopen the breaker.
        slow_err.failure();
        assert_eq!(breaker.state(), State::HalfOpen);
        // The real probe's verdict counts.
        probe.success();
        assert_eq!(breaker.counts().consecutive_successes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_is_neither_success_nor_failure_and_frees_its_probe_slot() {
        let breaker = CircuitBreaker::new(BreakerSettings {
            max_half_open: 1,
            ..settings()
        });
        // Closed: cancelled calls do not count towards the trip rule.
        fail(&breaker, 2);
        drop(breaker.try_acquire().expect("permitted"));
        assert_eq!(breaker.counts().consecutive_failures, 2);
        assert_eq!(breaker.counts().requests, 2);
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
        // Half-open with one slot: a cancelled probe gives the slot back.
        advance(Duration::from_secs(5)).await;
        drop(breaker.try_acquire().expect("probe"));
        assert_eq!(breaker.state(), State::HalfOpen);
        breaker.try_acquire().expect("slot is free again").success();
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_interval_never_resets_counts() {
        let breaker = CircuitBreaker::new(BreakerSettings {
            interval: Duration::ZERO,
            ..settings()
        });
        fail(&breaker, 2);
        advance(Duration::from_secs(3600)).await;
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
    }
}
