//! Liveness and readiness probes.
//!
//! - `/healthz/live` is 200 while the process runs; it never looks at dependencies.
//! - `/healthz/ready` is 200 unless shutdown has begun (then 503 at once). booksvc answers
//!   from its cache when everything behind it is down, and taking every replica out of the
//!   load balancer because a dependency is down would only spread the outage; so readiness
//!   does not depend on the dependencies. The body says how well booksvc can answer:
//!
//! ```json
//! {"status": "ready", "mode": "DEGRADED",
//!  "dependencies": {"storagesvc": {"status": "down", "error": "..."},
//!                   "breaker": {"status": "open"}, "redis": {"status": "up"},
//!                   "consumer": {"status": "running"},
//!                   "local_cache": {"status": "live"}}}
//! ```
//!
//! `mode` ([`Mode`]):
//! - `FRESH`: storagesvc answers its readiness check (so PostgreSQL is up), the breaker is
//!   closed and Redis answers: every answer is fresh from the cache or from storagesvc.
//! - `UNAVAILABLE`: storagesvc cannot be used (its check fails, or the breaker is open) and
//!   Redis is down: nothing can be answered except 503s.
//! - `DEGRADED`: anything in between: answers come from one of the two, so some may be
//!   stale (storagesvc unusable) or uncached and slower (Redis down), or the breaker is
//!   still probing.
//!
//! The consumer's state (`running`, `paused`, `reconnecting`, `stopped`, or `disabled`) is
//! reported but does not change the mode: it affects how warm the cache is, not whether or
//! how booksvc answers. Nor does the local hit layer's (`live`, `bypassed` while its event
//! subscription is down, or `disabled`): bypassed, reads simply go to Redis.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::breaker::State as BreakerState;
use crate::http::AppState;

/// How well booksvc can answer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fresh,
    Degraded,
    Unavailable,
}

impl Mode {
    /// The mode for these dependency states (see the module docs).
    pub fn of(storagesvc_up: bool, breaker: BreakerState, redis_up: bool) -> Mode {
        let storagesvc_usable = storagesvc_up && breaker != BreakerState::Open;
        match (storagesvc_usable, redis_up) {
            (true, true) if breaker == BreakerState::Closed => Mode::Fresh,
            (false, false) => Mode::Unavailable,
            _ => Mode::Degraded,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fresh => "FRESH",
            Mode::Degraded => "DEGRADED",
            Mode::Unavailable => "UNAVAILABLE",
        }
    }
}

/// `GET /healthz/live`.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /healthz/ready`: 200 unless shutting down, with the mode and each dependency.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (storagesvc, redis) = tokio::join!(check_storagesvc(&state), check_redis(&state));
    let breaker = state.service.path().breaker.state();
    let mode = Mode::of(
        storagesvc["status"] == "up",
        breaker,
        redis["status"] == "up",
    );
    let shutting_down = state.shutdown.is_cancelled();

    let mut body = json!({
        "status": if shutting_down { "not ready" } else { "ready" },
        "mode": mode.as_str(),
        "dependencies": {
            "storagesvc": storagesvc,
            "breaker": { "status": breaker.as_str() },
            "redis": redis,
            "consumer": consumer_status(&state),
            "local_cache": { "status": state.service.local().state().as_str() },
        },
    });
    if shutting_down {
        body["reason"] = json!("shutting down");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    (StatusCode::OK, Json(body))
}

/// storagesvc's own readiness, asked directly: a health check must not count as traffic
/// for the breaker. Readiness is unauthenticated and called often, and each check costs
/// storagesvc a PostgreSQL connection: one check runs at a time and its answer serves every
/// probe for [`CHECK_REUSE`], so a burst of probes is one call to storagesvc.
async fn check_storagesvc(state: &AppState) -> Value {
    let client = &state.service.path().client;
    match client.ready_shared(state.ready_timeout, CHECK_REUSE).await {
        Ok(()) => json!({ "status": "up" }),
        Err(error) => json!({ "status": "down", "error": error.to_string() }),
    }
}

/// How long one readiness check of storagesvc answers for every probe.
pub const CHECK_REUSE: Duration = Duration::from_secs(1);

async fn check_redis(state: &AppState) -> Value {
    // `ping` is bounded by REDIS_TIMEOUT.
    match state.service.path().cache.ping().await {
        Ok(()) => json!({ "status": "up" }),
        Err(error) => json!({ "status": "down", "error": error.to_string() }),
    }
}

fn consumer_status(state: &AppState) -> Value {
    let status = state
        .consumer
        .as_ref()
        .map_or("disabled", |consumer| consumer.state().as_str());
    json!({ "status": status })
}

/// How long a readiness probe waits for storagesvc: short, since load balancers call it often.
pub fn ready_timeout(storagesvc_timeout: Duration) -> Duration {
    storagesvc_timeout.min(Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_says_how_well_booksvc_can_answer() {
        use BreakerState::{Closed, HalfOpen, Open};
        // (storagesvc up, breaker, redis up) → mode
        let cases = [
            ((true, Closed, true), Mode::Fresh),
            ((true, HalfOpen, true), Mode::Degraded),
            ((true, Open, true), Mode::Degraded),
            ((false, Closed, true), Mode::Degraded),
            ((true, Closed, false), Mode::Degraded),
            ((false, Open, false), Mode::Unavailable),
            ((true, Open, false), Mode::Unavailable),
            ((false, Closed, false), Mode::Unavailable),
        ];
        for ((storagesvc, breaker, redis), expected) in cases {
            assert_eq!(
                Mode::of(storagesvc, breaker, redis),
                expected,
                "storagesvc up {storagesvc}, breaker {breaker}, redis up {redis}"
            );
        }
    }
}
