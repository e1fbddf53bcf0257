//! `GET /metrics`: the Prometheus text exposition of the recorder [`crate::metrics`] installed.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

/// `GET /metrics`: the Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"))
)]
pub(super) async fn render(State(state): State<AppState>) -> impl IntoResponse {
    // Upkeep drains histogram samples into their buckets; doing it per scrape too keeps the
    // numbers current between the background runs.
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
