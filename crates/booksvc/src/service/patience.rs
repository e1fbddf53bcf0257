//! How long a read waits for its flight ([`Patience`]): FusionCache's fail-safe with soft
//! timeouts (see "Patience" in [`super`]).

use std::time::Duration;

use tokio::time::Instant;

use super::FetchFailure;
use crate::breaker::State;

/// How long a read waits for its flight, and what it says when it stops waiting.
pub(super) struct Patience {
    pub(super) until: Until,
    pub(super) gave_up: FetchFailure,
}

/// When a read stops waiting for its flight.
pub(super) enum Until {
    At(Instant),
    /// The soft timeout after the flight's start (or the deadline, if sooner).
    SoftTimeoutAfter(Duration),
}

impl Patience {
    /// A read with nothing to fall back on waits until the deadline.
    pub(super) fn budget(deadline: Instant) -> Patience {
        Patience {
            until: Until::At(deadline),
            gave_up: FetchFailure::Upstream {
                reason: "no answer within the request budget".to_owned(),
            },
        }
    }
}

/// How long a read with an entry waits, the breaker being in `state` (closed or half-open):
/// FusionCache's fail-safe with soft timeouts. Not at all while half-open: the call is a
/// trial, or waits behind one, and storagesvc was down a moment ago; under concurrency every
/// reader of the key would otherwise queue behind it. Else until `soft_timeout` after the
/// flight's start. Either way the flight goes on and refills the cache.
pub(super) fn patience(state: State, soft_timeout: Duration, deadline: Instant) -> Patience {
    let now = Instant::now();
    if state == State::HalfOpen {
        return Patience {
            until: Until::At(now),
            gave_up: FetchFailure::TrialInFlight,
        };
    }
    match now + soft_timeout < deadline {
        true => Patience {
            until: Until::SoftTimeoutAfter(soft_timeout),
            gave_up: FetchFailure::SoftTimeout {
                waited: soft_timeout,
            },
        },
        false => Patience::budget(deadline),
    }
}
