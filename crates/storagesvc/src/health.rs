//! Liveness and readiness probes.
//!
//! - `/healthz/live` is 200 while the process runs; it never looks at dependencies, so a
//!   database outage does not get the process restarted.
//! - `/healthz/ready` is 200 when PostgreSQL answers within a short timeout and shutdown has
//!   not begun, 503 otherwise. RabbitMQ and the outbox are reported but do not decide
//!   readiness: with the broker down writes still succeed (events wait in the outbox), so
//!   taking the service out of the load balancer would only turn a delay into an outage.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::http::AppState;
use crate::outbox;

/// An outbox whose oldest unsent event is older than this is reported as `lagging`.
pub const OUTBOX_LAG_THRESHOLD: Duration = Duration::from_secs(30);

/// `GET /healthz/live`.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /healthz/ready`: status plus each dependency's state.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (postgres, outbox) = tokio::join!(check_postgres(&state), check_outbox(&state));
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

async fn check_postgres(state: &AppState) -> Value {
    let started = Instant::now();
    let ping = sqlx::query("SELECT 1").execute(&state.pool);
    match tokio::time::timeout(state.ready_timeout, ping).await {
        Ok(Ok(_)) => json!({ "status": "up", "latency_ms": started.elapsed().as_millis() }),
        Ok(Err(err)) => json!({ "status": "down", "error": err.to_string() }),
        Err(_) => json!({ "status": "down", "error": "no answer within the readiness timeout" }),
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

async fn check_outbox(state: &AppState) -> Value {
    let stats = tokio::time::timeout(state.ready_timeout, outbox::stats(&state.pool)).await;
    let Ok(Ok(stats)) = stats else {
        return json!({ "status": "unknown", "error": "could not read the outbox" });
    };
    let lagging = stats
        .oldest_age
        .is_some_and(|age| age > OUTBOX_LAG_THRESHOLD);
    json!({
        "status": if lagging { "lagging" } else { "up" },
        "backlog": stats.backlog,
        "oldest_age_seconds": stats.oldest_age.map(|age| age.as_secs_f64()),
    })
}
