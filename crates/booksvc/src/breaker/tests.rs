//! The breaker's unit tests: the state machine under paused time (generations, cancelled
//! permits, the ratio rule, half-open probes).

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
async fn refusal_now_is_what_a_call_would_get_and_takes_no_probe_slot() {
    let breaker = CircuitBreaker::new(settings());
    assert_eq!(breaker.refusal_now(), Ok(State::Closed), "closed");
    fail(&breaker, 3);
    let refused = breaker.refusal_now().expect_err("open");
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(5)));
    advance(Duration::from_secs(5)).await;
    // Half-open with free probe slots: no refusal, and asking took none of the two.
    assert_eq!(breaker.refusal_now(), Ok(State::HalfOpen));
    let _first = breaker.try_acquire().expect("probe 1");
    assert_eq!(breaker.refusal_now(), Ok(State::HalfOpen), "one slot left");
    let _second = breaker.try_acquire().expect("probe 2");
    // Every slot taken: a call would be refused, and so is this.
    assert_eq!(breaker.refusal_now(), Err(NotPermitted::TooManyProbes));
    assert_eq!(
        breaker.try_acquire().err(),
        Some(NotPermitted::TooManyProbes)
    );
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

#[test]
fn the_metric_labels_are_the_states() {
    assert_eq!(
        State::ALL.map(State::as_str),
        crate::metrics::BREAKER_STATES
    );
}
