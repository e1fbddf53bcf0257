//! Liveness and readiness probes.
//!
//! - `/healthz/live` is 200 while the process runs; it never looks at dependencies.
//! - `/healthz/ready` is 200 unless shutdown has begun (then 503 at once). booksvc answers
//!   from its cache when everything behind it is down, and taking every replica out of the
//!   load balancer because a dependency is down would only spread the outage; so readiness
//!   does not depend on the dependencies. The body ([`Readiness`]) says how well booksvc can
//!   answer:
//!
//! ```json
//! {"status": "ready", "mode": "DEGRADED",
//!  "dependencies": {"storagesvc": {"status": "down", "error": "..."},
//!                   "breaker": {"status": "open"}, "redis": {"status": "up"},
//!                   "consumer": {"status": "running", "node": "mq1:5672"},
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
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use super::AppState;
use crate::breaker::State as BreakerState;
use crate::cache::LocalState;
use crate::consumer::ConsumerState;

/// How well booksvc can answer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
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

/// The readiness body. Fields in name order: the keys come sorted, as the API docs show them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Each dependency's state.
    pub dependencies: Dependencies,
    /// How well booksvc can answer: `FRESH`, `DEGRADED` or `UNAVAILABLE` (only 503s).
    pub mode: Mode,
    /// Why booksvc is not ready: `shutting down`. Absent while ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
    /// `ready`, or `not ready` once shutdown has begun.
    pub status: ReadyStatus,
}

/// `ready` or `not ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum ReadyStatus {
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "not ready")]
    NotReady,
}

/// The dependencies' states, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dependencies {
    /// The circuit breaker in front of storagesvc.
    pub breaker: BreakerCheck,
    /// The event consumer that keeps the cache warm.
    pub consumer: ConsumerCheck,
    /// The in-process hit layer in front of Redis.
    pub local_cache: LocalCacheCheck,
    /// Redis, the cache of the last good data.
    pub redis: Check,
    /// storagesvc's own readiness.
    pub storagesvc: Check,
}

/// A dependency booksvc asks: `up`, or `down` with why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// Why it is down. Absent while up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub status: Reachability,
}

/// `up` or `down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    Up,
    Down,
}

impl Check {
    fn up() -> Check {
        Check {
            error: None,
            status: Reachability::Up,
        }
    }

    fn down(error: impl ToString) -> Check {
        Check {
            error: Some(error.to_string()),
            status: Reachability::Down,
        }
    }

    fn is_up(&self) -> bool {
        self.status == Reachability::Up
    }
}

/// The breaker's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerCheck {
    #[schema(schema_with = breaker_states)]
    pub status: &'static str,
}

/// The consumer's state, and the broker node it uses while connected (`host:port`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumerCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[schema(schema_with = consumer_states)]
    pub status: &'static str,
}

/// The local hit layer's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocalCacheCheck {
    #[schema(schema_with = local_cache_states)]
    pub status: &'static str,
}

/// A string that is one of `values`.
fn one_of(values: impl IntoIterator<Item = &'static str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

fn breaker_states() -> Object {
    one_of(BreakerState::ALL.map(BreakerState::as_str))
}

fn consumer_states() -> Object {
    let states = ConsumerState::ALL.map(ConsumerState::as_str);
    one_of(states.into_iter().chain([DISABLED]))
}

fn local_cache_states() -> Object {
    one_of(LocalState::ALL.map(LocalState::as_str))
}

/// The consumer's status when `CONSUMER_ENABLED` is false.
const DISABLED: &str = "disabled";

/// `GET /healthz/live`.
#[utoipa::path(
    get,
    path = "/healthz/live",
    tag = "operations",
    responses((status = 200, description = "The process runs: `{\"status\":\"live\"}`; no dependency is looked at", body = Object,
               example = json!({"status": "live"})))
)]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /healthz/ready`: 200 unless shutting down, with the mode and each dependency.
#[utoipa::path(
    get,
    path = "/healthz/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready, in every mode: booksvc answers from its cache when everything behind it is down, so taking it \
                                      out of a load balancer would only spread an outage. `mode` says how well it can answer", body = Readiness,
         example = json!({"dependencies": {"breaker": {"status": "closed"}, "consumer": {"status": "running"}, "local_cache": {"status": "live"},
                          "redis": {"status": "up"}, "storagesvc": {"status": "up"}}, "mode": "FRESH", "status": "ready"})),
        (status = 503, description = "Shutting down: `\"status\": \"not ready\"`, `\"reason\": \"shutting down\"`, and the same fields otherwise", body = Readiness),
    )
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (storagesvc, redis) = tokio::join!(check_storagesvc(&state), check_redis(&state));
    let breaker = state.service.path().breaker.state();
    let mode = Mode::of(storagesvc.is_up(), breaker, redis.is_up());
    let shutting_down = state.shutdown.is_cancelled();
    let dependencies = Dependencies {
        breaker: BreakerCheck {
            status: breaker.as_str(),
        },
        consumer: consumer_status(&state),
        local_cache: LocalCacheCheck {
            status: state.service.local().state().as_str(),
        },
        redis,
        storagesvc,
    };
    let (status, ready, reason) = match shutting_down {
        true => (
            StatusCode::SERVICE_UNAVAILABLE,
            ReadyStatus::NotReady,
            Some("shutting down"),
        ),
        false => (StatusCode::OK, ReadyStatus::Ready, None),
    };
    let body = Readiness {
        dependencies,
        mode,
        reason,
        status: ready,
    };
    (status, Json(body))
}

/// storagesvc's own readiness, asked directly: a health check must not count as traffic
/// for the breaker. Readiness is unauthenticated and called often, and each check costs
/// storagesvc a PostgreSQL connection: one check runs at a time and its answer serves every
/// probe for [`CHECK_REUSE`], so a burst of probes is one call to storagesvc.
async fn check_storagesvc(state: &AppState) -> Check {
    let client = &state.service.path().client;
    match client.ready_shared(state.ready_timeout, CHECK_REUSE).await {
        Ok(()) => Check::up(),
        Err(error) => Check::down(error),
    }
}

/// How long one readiness check of storagesvc answers for every probe.
pub const CHECK_REUSE: Duration = Duration::from_secs(1);

async fn check_redis(state: &AppState) -> Check {
    // `ping` is bounded by REDIS_TIMEOUT.
    match state.service.path().cache.ping().await {
        Ok(()) => Check::up(),
        Err(error) => Check::down(error),
    }
}

/// The consumer's state and, while connected, the broker node it uses (`host:port`).
fn consumer_status(state: &AppState) -> ConsumerCheck {
    match state.consumer.as_ref() {
        None => ConsumerCheck {
            node: None,
            status: DISABLED,
        },
        Some(consumer) => ConsumerCheck {
            node: consumer.node(),
            status: consumer.state().as_str(),
        },
    }
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
