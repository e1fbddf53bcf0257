//! What a steady failure logs: the first failure, a summary at most once a minute while
//! failures go on, and the first success after them.
//!
//! Logged one by one, every request answered 503 and every retry of a background task during
//! a ten-minute PostgreSQL outage made about 1,200 log events that all said the same thing.
//! An operator needs when it started and why, that it is still going and what it costs, and
//! when it ended: three kinds of line, whatever the traffic.
//!
//! ```text
//! WARN  outage started    outage="PostgreSQL, requests" error="pool timed out…"
//! WARN  outage continues  outage=… failures=2391 lasting_s=60 last_error=…
//! INFO  outage ended      outage=… failures=7113 lasted_s=174
//! ```
//!
//! No timer runs: a summary is written by the first failure after [`SUMMARY_EVERY`], so a
//! failure that stops happening (nobody asks) writes nothing more until the success that ends
//! it. The healthy path costs one relaxed atomic load.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a lasting outage writes a summary line, at most.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// One kind of failure that can last (a dependency, as one part of the service meets it).
#[derive(Debug)]
pub struct Outage {
    /// Names the dependency and who meets it, for the `outage` field of each line.
    what: Cow<'static, str>,
    /// Mirrors `state.started.is_some()`, so [`Outage::succeeded`] takes no lock when healthy.
    on: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the first failure of the current outage happened; `None` when healthy.
    started: Option<Instant>,
    /// Failures since `started`.
    failures: u64,
    /// When the last line (start or summary) was written.
    last_line: Option<Instant>,
    /// The latest failure's message, for the summary.
    last_error: String,
}

/// A line to write, as data (the unit tests read it; [`Line::write`] logs it).
#[derive(Debug, PartialEq)]
enum Line {
    Started {
        error: String,
    },
    Continues {
        failures: u64,
        lasting: Duration,
        last_error: String,
    },
    Ended {
        failures: u64,
        lasted: Duration,
    },
}

impl Outage {
    /// An outage of `what` ("PostgreSQL, requests"), summarised every [`SUMMARY_EVERY`].
    pub const fn new(what: &'static str) -> Outage {
        Outage::named(Cow::Borrowed(what))
    }

    /// An outage whose name is made at run time ("RabbitMQ, booksvc-consumer").
    pub const fn named(what: Cow<'static, str>) -> Outage {
        Outage {
            what,
            on: AtomicBool::new(false),
            state: Mutex::new(State {
                started: None,
                failures: 0,
                last_line: None,
                last_error: String::new(),
            }),
        }
    }

    /// Counts a failure; logs it if it starts an outage or a summary is due.
    pub fn failed(&self, error: &dyn Display) {
        if let Some(line) = self.failed_at(Instant::now(), error) {
            line.write(&self.what);
        }
    }

    /// Ends the outage, if one is on, with a line saying how long and how many failures.
    pub fn succeeded(&self) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        if let Some(line) = self.succeeded_at(Instant::now()) {
            line.write(&self.what);
        }
    }

    /// Whether failures are being counted (no success since the first of them).
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn failed_at(&self, now: Instant, error: &dyn Display) -> Option<Line> {
        let mut state = self.lock();
        state.failures += 1;
        state.last_error = error.to_string();
        let Some(started) = state.started else {
            state.started = Some(now);
            state.last_line = Some(now);
            self.on.store(true, Ordering::Relaxed);
            return Some(Line::Started {
                error: state.last_error.clone(),
            });
        };
        let due = state
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= SUMMARY_EVERY);
        if !due {
            return None;
        }
        state.last_line = Some(now);
        Some(Line::Continues {
            failures: state.failures,
            lasting: now.saturating_duration_since(started),
            last_error: state.last_error.clone(),
        })
    }

    fn succeeded_at(&self, now: Instant) -> Option<Line> {
        let mut state = self.lock();
        let started = state.started.take()?;
        self.on.store(false, Ordering::Relaxed);
        let failures = std::mem::take(&mut state.failures);
        state.last_line = None;
        state.last_error.clear();
        Some(Line::Ended {
            failures,
            lasted: now.saturating_duration_since(started),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counts inconsistent in a way that
        // matters for logging; keep counting.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Line {
    fn write(&self, outage: &str) {
        match self {
            Line::Started { error } => {
                tracing::warn!(outage, %error, "outage started: failures are counted, and summarised at most once a minute until a success");
            }
            Line::Continues {
                failures,
                lasting,
                last_error,
            } => {
                tracing::warn!(
                    outage,
                    failures,
                    lasting_s = lasting.as_secs(),
                    last_error = %last_error,
                    "outage continues"
                );
            }
            Line::Ended { failures, lasted } => {
                tracing::info!(
                    outage,
                    failures,
                    lasted_s = lasted.as_secs(),
                    "outage ended"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn outage() -> Outage {
        Outage::new("test dependency")
    }

    #[test]
    fn the_first_failure_starts_and_later_ones_are_counted_silently_for_a_minute() {
        let outage = outage();
        let t0 = Instant::now();
        assert_eq!(
            outage.failed_at(t0, &"refused"),
            Some(Line::Started {
                error: "refused".into()
            })
        );
        assert!(outage.is_on());
        for second in 1..60 {
            let now = t0 + Duration::from_secs(second);
            assert_eq!(outage.failed_at(now, &"refused again"), None, "{second}");
        }
        assert_eq!(
            outage.failed_at(t0 + MINUTE, &"timed out"),
            Some(Line::Continues {
                failures: 61,
                lasting: MINUTE,
                last_error: "timed out".into()
            })
        );
        assert_eq!(outage.failed_at(t0 + MINUTE + MINUTE / 2, &"x"), None);
        assert!(matches!(
            outage.failed_at(t0 + 2 * MINUTE, &"x"),
            Some(Line::Continues { failures: 63, .. })
        ));
    }

    #[test]
    fn a_success_ends_it_once_with_the_count_and_the_next_failure_starts_anew() {
        let outage = outage();
        let t0 = Instant::now();
        assert_eq!(outage.succeeded_at(t0), None, "nothing to end");
        outage.failed_at(t0, &"refused");
        outage.failed_at(t0 + Duration::from_secs(1), &"refused");
        assert_eq!(
            outage.succeeded_at(t0 + Duration::from_secs(90)),
            Some(Line::Ended {
                failures: 2,
                lasted: Duration::from_secs(90)
            })
        );
        assert!(!outage.is_on());
        assert_eq!(outage.succeeded_at(t0 + Duration::from_secs(91)), None);
        assert_eq!(
            outage.failed_at(t0 + Duration::from_secs(92), &"again"),
            Some(Line::Started {
                error: "again".into()
            })
        );
    }

    #[test]
    fn failures_from_many_threads_are_all_counted_and_start_it_once() {
        let outage = outage();
        let started = std::sync::atomic::AtomicUsize::new(0);
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if let Some(Line::Started { .. }) = outage.failed_at(t0, &"down") {
                            started.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(started.load(Ordering::Relaxed), 1);
        assert_eq!(
            outage.succeeded_at(t0),
            Some(Line::Ended {
                failures: 8000,
                lasted: Duration::ZERO
            })
        );
    }
}
