//! Liveness and readiness probes.
//!
//! - `/healthz/live` is 200 while the process runs; it never looks at dependencies, so a
//!   database outage does not get the process restarted.
//! - `/healthz/ready` is 200 when PostgreSQL answers within a short timeout and shutdown has
//!   not begun, 503 otherwise. RabbitMQ and the outbox are reported but do not decide
//!   readiness: with the broker down writes still succeed (events wait in the outbox), so
//!   taking the service out of the load balancer would only turn a delay into an outage.
//!
//! Readiness is unauthenticated and called often, so it must stay cheap however often it is
//! called and must never take the pool from writes: the outbox figures are the relay
//! housekeeping's last reading (every 2 s), not a `count(*)` per probe, and the PostgreSQL
//! check runs one at a time, its answer shared by every probe for [`CHECK_REUSE`]. A probe
//! thus holds at most one pool connection, whatever the number of callers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use crate::database;

/// An outbox whose oldest unsent event is older than this is reported as `lagging`.
pub const OUTBOX_LAG_THRESHOLD: Duration = Duration::from_secs(30);
/// How long one PostgreSQL check answers for every readiness probe.
pub const CHECK_REUSE: Duration = Duration::from_millis(250);
/// Outbox figures older than this (housekeeping cannot read the outbox) are not reported.
const STATS_MAX_AGE: Duration = Duration::from_secs(10);

/// The last PostgreSQL check and when it ran, shared by all probes (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct PostgresCheck {
    last: Arc<tokio::sync::Mutex<Option<(Instant, Value)>>>,
}

/// `GET /healthz/live`.
#[utoipa::path(
    get,
    path = "/healthz/live",
    tag = "operations",
    responses((status = 200, description = "The process runs: `{\"status\":\"live\"}`", body = Object))
)]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /healthz/ready`: status plus each dependency's state.
#[utoipa::path(
    get,
    path = "/healthz/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: PostgreSQL answers. The body names each dependency's state (`postgres`, `rabbitmq`, `outbox`)", body = Object),
        (status = 503, description = "Not ready (PostgreSQL down, or shutting down); the same body says why", body = Object),
    )
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let postgres = check_postgres(&state).await;
    let outbox = check_outbox(&state);
    let rabbitmq = check_rabbitmq(&state);
    let shutting_down = state.shutdown.is_cancelled();
    let is_ready = postgres["status"] == "up" && !shutting_down;

    let mut body = json!({
        "status": if is_ready { "ready" } else { "not ready" },
        "dependencies": { "postgres": postgres, "rabbitmq": rabbitmq, "outbox": outbox },
    });
    if shutting_down {
        body["reason"] = json!("shutting down");
    }
    let status = if is_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The PostgreSQL check: one at a time, reused for [`CHECK_REUSE`].
async fn check_postgres(state: &AppState) -> Value {
    let check = &state.postgres_check;
    let Ok(mut last) = tokio::time::timeout(state.ready_timeout, check.last.lock()).await else {
        return json!({ "status": "down", "error": "no answer within the readiness timeout" });
    };
    if let Some((at, status)) = last.as_ref() {
        if at.elapsed() < CHECK_REUSE {
            return status.clone();
        }
    }
    let status = ping_postgres(state).await;
    *last = Some((Instant::now(), status.clone()));
    status
}

async fn ping_postgres(state: &AppState) -> Value {
    let started = Instant::now();
    // Bounded like any request's work: a connection that does not answer is closed, not
    // returned to the pool (see `database::with_connection`).
    let ping = database::with_connection(&state.pool, state.ready_timeout, async |db| {
        sqlx::query("SELECT 1").execute(db).await
    });
    match ping.await {
        Ok(_) => json!({ "status": "up", "latency_ms": started.elapsed().as_millis() }),
        Err(err) if database::is_timeout(&err) => {
            json!({ "status": "down", "error": "no answer within the readiness timeout" })
        }
        Err(err) => json!({ "status": "down", "error": err.to_string() }),
    }
}

fn check_rabbitmq(state: &AppState) -> Value {
    if let Some(node) = state.relay.node() {
        return json!({ "status": "up", "node": node });
    }
    match state.relay.last_error() {
        Some(error) => json!({ "status": "down", "error": error }),
        None => json!({ "status": "down" }),
    }
}

fn check_outbox(state: &AppState) -> Value {
    let stats = state.relay.outbox_stats();
    let Some((stats, age)) = stats.filter(|(_, age)| *age <= STATS_MAX_AGE) else {
        return json!({ "status": "unknown", "error": "could not read the outbox" });
    };
    let lagging = stats
        .oldest_age
        .is_some_and(|age| age > OUTBOX_LAG_THRESHOLD);
    json!({
        "status": if lagging { "lagging" } else { "up" },
        "backlog": stats.backlog,
        "oldest_age_seconds": stats.oldest_age.map(|age| age.as_secs_f64()),
        "measured_seconds_ago": age.as_secs_f64(),
    })
}
