//! Probes, readiness modes, metrics, and readiness during shutdown.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::TestStack;

#[tokio::test]
async fn live_is_200_and_ready_reports_fresh_with_every_dependency() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;

    assert_eq!(stack.get("/healthz/live").await?.status(), StatusCode::OK);
    let (status, body) = stack.ready().await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["mode"], "FRESH", "{body}");
    let dependencies = &body["dependencies"];
    assert_eq!(dependencies["storagesvc"]["status"], "up", "{body}");
    assert_eq!(dependencies["breaker"]["status"], "closed", "{body}");
    assert_eq!(dependencies["redis"]["status"], "up", "{body}");
    // The stack runs with CONSUMER_ENABLED=false (the consumer has its own tests).
    assert_eq!(dependencies["consumer"]["status"], "disabled", "{body}");
    stack.stop().await
}

/// The series exist and routes are templates; their values are checked exactly in
/// `tests/metrics_values.rs` (a binary of its own: the recorder is global to the process).
#[tokio::test]
async fn metrics_count_requests_and_cache_results() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    stack.get_book(1).await?;
    stack.get_book(1).await?;

    let response = stack.get("/metrics").await?;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await?;
    for series in [
        "booksvc_http_requests_total",
        "booksvc_http_request_duration_seconds",
        "booksvc_cache_results_total",
        "booksvc_storagesvc_request_duration_seconds",
        "booksvc_breaker_state",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}");
    }
    assert!(
        text.contains(r#"route="/books/{id}""#),
        "routes are templates"
    );
    stack.stop().await
}

#[tokio::test]
async fn readiness_turns_503_at_once_when_shutdown_starts() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .booksvc(|s| s.shutdown_drain_delay = Duration::from_secs(2))
        .spawn()
        .await?;
    assert_eq!(stack.ready().await?.0, StatusCode::OK);

    stack.begin_shutdown();

    let (status, body) = stack.ready().await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not ready", "{body}");
    // Still serving reads while load balancers notice.
    assert_eq!(stack.get_book(1).await?.status(), StatusCode::OK);
    stack.stop().await
}

/// Readiness is unauthenticated and load balancers call it often: a burst of calls must not
/// become a burst of calls to storagesvc (each of which takes a PostgreSQL connection there).
#[tokio::test]
async fn a_burst_of_readiness_calls_asks_storagesvc_only_a_few_times() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    let before = stack.proxy.calls("/healthz/ready");

    let burst = (0..50).map(|_| stack.ready());
    for answer in futures::future::join_all(burst).await {
        let (status, body) = answer?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["dependencies"]["storagesvc"]["status"], "up", "{body}");
    }

    let asked = stack.proxy.calls("/healthz/ready") - before;
    assert!(
        asked <= 3,
        "50 readiness calls asked storagesvc {asked} times"
    );
    stack.stop().await
}
