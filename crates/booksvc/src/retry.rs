//! Retry with exponential backoff and jitter, bounded by the request's deadline.
//!
//! Why bounded: unbounded retries make an outage worse twice over. The client hangs (the Go
//! original retried for up to ~16 s while the user waited), and every waiting request keeps
//! hammering a dependency that is trying to recover. Here every attempt *and* every pause
//! between attempts fit inside one deadline, the request's budget; when the next pause would
//! cross it we stop and let the caller fall back to the cache.
//!
//! Which failures are worth another attempt is decided once, by the error type
//! ([`Retryable::verdict`]): connect errors, timeouts, 502/503/504 and 429 are; a 4xx or an
//! open circuit breaker is not (the breaker already knows the dependency is down).
//!
//! This is the only module that touches the `backoff` crate (unmaintained, kept at the user's
//! request: see docs/decisions/0002-backoff-crate.md), so replacing it is a one-file change.

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use tokio::time::Instant;

/// The shape of the pauses between attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// Pause before the second attempt (before jitter).
    pub initial_interval: Duration,
    /// Each pause is this many times the previous one…
    pub multiplier: f64,
    /// …up to this cap.
    pub max_interval: Duration,
    /// Jitter: a pause is drawn from `interval × (1 ± randomization)`, so that clients that
    /// failed together do not retry together.
    pub randomization: f64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            initial_interval: Duration::from_millis(50),
            multiplier: 2.0,
            max_interval: Duration::from_millis(400),
            randomization: 0.5,
            max_attempts: 4,
        }
    }
}

/// Whether another attempt can succeed where this one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Worth another attempt; `after` is the server's `Retry-After`, if it sent one.
    Retry { after: Option<Duration> },
    /// Another attempt would fail the same way (a 4xx, an open breaker, a bad answer).
    GiveUp,
}

/// Errors that know whether retrying them makes sense.
pub trait Retryable {
    fn verdict(&self) -> Verdict;
}

/// Why [`retry_within`] stopped without a success.
#[derive(Debug, PartialEq)]
pub enum RetryError<E> {
    /// The last attempt's error: not retryable, or attempts (or time for another) ran out.
    Failed { error: E, attempts: u32 },
    /// The deadline passed while an attempt was still running.
    DeadlineExceeded { attempts: u32 },
}

/// Runs `attempt` until it succeeds, fails for good, or the deadline leaves no room for
/// another try. `attempt` receives the time left, to use as its own timeout.
///
/// The loop is ours and the pauses are `backoff`'s: `backoff::future::retry` builds the next
/// attempt's future *before* sleeping, so a timeout computed in it would be stale by the
/// length of the pause.
pub async fn retry_within<T, E, F, Fut>(
    policy: &RetrySettings,
    deadline: Instant,
    mut attempt: F,
) -> Result<T, RetryError<E>>
where
    E: Retryable,
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pauses = DeadlineBackoff {
        inner: exponential(policy, deadline),
        deadline,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, attempt(left)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
            Err(_elapsed) => return Err(RetryError::DeadlineExceeded { attempts }),
        };
        let Some(pause) = next_pause(&error, attempts, policy, &mut pauses) else {
            return Err(RetryError::Failed { error, attempts });
        };
        crate::metrics::record_storagesvc_retry();
        tracing::debug!(attempt = attempts, ?pause, "retrying storagesvc call");
        tokio::time::sleep(pause).await;
    }
}

/// How long to pause before the next attempt, or `None` to give up now.
fn next_pause<E: Retryable>(
    error: &E,
    attempts: u32,
    policy: &RetrySettings,
    pauses: &mut DeadlineBackoff<backoff::ExponentialBackoff>,
) -> Option<Duration> {
    if attempts >= policy.max_attempts {
        return None;
    }
    match error.verdict() {
        Verdict::GiveUp => None,
        // A Retry-After that does not fit in the budget means: not for this request.
        Verdict::Retry { after: Some(after) } => {
            fits_before(after, pauses.deadline).then_some(after)
        }
        Verdict::Retry { after: None } => pauses.next_backoff(),
    }
}

fn exponential(policy: &RetrySettings, deadline: Instant) -> backoff::ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_interval(policy.initial_interval)
        .with_multiplier(policy.multiplier)
        .with_max_interval(policy.max_interval)
        .with_randomization_factor(policy.randomization)
        // Always bounded: backoff's default keeps retrying for 15 minutes.
        .with_max_elapsed_time(Some(deadline.saturating_duration_since(Instant::now())))
        .build()
}

/// Ends the retries when the next pause would run past the deadline: sleeping only to give
/// up afterwards would waste the client's time.
struct DeadlineBackoff<B> {
    inner: B,
    deadline: Instant,
}

impl<B: Backoff> Backoff for DeadlineBackoff<B> {
    fn reset(&mut self) {
        self.inner.reset();
    }

    fn next_backoff(&mut self) -> Option<Duration> {
        let pause = self.inner.next_backoff()?;
        fits_before(pause, self.deadline).then_some(pause)
    }
}

/// Whether a pause of `pause` from now ends before `deadline`. Checked: `Instant + Duration`
/// panics on overflow, and `pause` may come from a server's `Retry-After`.
fn fits_before(pause: Duration, deadline: Instant) -> bool {
    Instant::now()
        .checked_add(pause)
        .is_some_and(|end| end < deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    enum TestError {
        Unavailable,
        RateLimited(Duration),
        BadRequest,
    }

    impl Retryable for TestError {
        fn verdict(&self) -> Verdict {
            match self {
                TestError::Unavailable => Verdict::Retry { after: None },
                TestError::RateLimited(after) => Verdict::Retry {
                    after: Some(*after),
                },
                TestError::BadRequest => Verdict::GiveUp,
            }
        }
    }

    fn budget(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures() {
        let calls = AtomicU32::new(0);
        let result = retry_within(&RetrySettings::default(), budget(1000), |_| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(TestError::Unavailable),
                _ => Ok("book"),
            }
        })
        .await;
        assert_eq!(result, Ok("book"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_an_error_that_cannot_succeed() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> =
            retry_within(&RetrySettings::default(), budget(1000), |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(TestError::BadRequest)
            })
            .await;
        assert_eq!(
            result,
            Err(RetryError::Failed {
                error: TestError::BadRequest,
                attempts: 1
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_max_attempts_within_the_budget() {
        let start = Instant::now();
        let result: Result<(), _> =
            retry_within(&RetrySettings::default(), budget(10_000), |_| async {
                Err(TestError::Unavailable)
            })
            .await;
        assert_eq!(
            result,
            Err(RetryError::Failed {
                error: TestError::Unavailable,
                attempts: 4
            })
        );
        // Three pauses of at most 75, 150 and 300 ms (jitter ±50%).
        assert!(
            start.elapsed() <= Duration::from_millis(525),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_waits_past_the_deadline_even_when_every_attempt_fails() {
        let policy = RetrySettings {
            max_attempts: 100,
            ..RetrySettings::default()
        };
        let start = Instant::now();
        let result: Result<(), _> = retry_within(&policy, budget(1000), |_| async {
            Err(TestError::Unavailable)
        })
        .await;
        assert!(
            matches!(result, Err(RetryError::Failed { .. })),
            "{result:?}"
        );
        assert!(
            start.elapsed() < Duration::from_millis(1000),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_is_cut_at_the_deadline() {
        let start = Instant::now();
        let result: Result<(), RetryError<TestError>> =
            retry_within(&RetrySettings::default(), budget(800), |left| async move {
                tokio::time::sleep(left * 10).await;
                Ok(())
            })
            .await;
        assert_eq!(result, Err(RetryError::DeadlineExceeded { attempts: 1 }));
        assert_eq!(start.elapsed(), Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_when_it_fits_the_budget() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = retry_within(&RetrySettings::default(), budget(1000), |_| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(TestError::RateLimited(Duration::from_millis(300))),
                _ => Ok(()),
            }
        })
        .await;
        assert_eq!(result, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_once_when_retry_after_exceeds_the_budget() {
        let start = Instant::now();
        let result: Result<(), _> =
            retry_within(&RetrySettings::default(), budget(1000), |_| async {
                Err(TestError::RateLimited(Duration::from_secs(30)))
            })
            .await;
        assert!(
            matches!(result, Err(RetryError::Failed { attempts: 1, .. })),
            "{result:?}"
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_too_large_for_the_clock_gives_up_without_panicking() {
        // `Instant + Duration::MAX` overflows: std's `Add` would panic inside the read.
        let result: Result<(), _> =
            retry_within(&RetrySettings::default(), budget(1000), |_| async {
                Err(TestError::RateLimited(Duration::MAX))
            })
            .await;
        assert!(
            matches!(result, Err(RetryError::Failed { attempts: 1, .. })),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_is_told_how_much_time_is_left() {
        let seen = Mutex::new(Vec::new());
        let _: Result<(), _> = retry_within(&RetrySettings::default(), budget(1000), |left| {
            seen.lock().unwrap().push(left);
            async { Err(TestError::Unavailable) }
        })
        .await;
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen[0], Duration::from_millis(1000));
        assert!(seen.windows(2).all(|w| w[1] < w[0]), "{seen:?}");
    }
}
