//! Probes, readiness modes, metrics, and readiness during shutdown.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{TestStack, header};

#[tokio::test]
async fn live_is_200_and_ready_reports_fresh_with_every_dependency() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;

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
    let stack = TestStack::spawn_standin().await?;
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

/// What alerts and the dashboard (deploy/prometheus, deploy/grafana) read must be there, at 0,
/// before anything happened: an alert on a missing series reads "no data", not "0".
#[tokio::test]
async fn every_family_has_help_and_alerted_series_exist_from_start_up() -> anyhow::Result<()> {
    use testkit::exposition::{families_of_type, families_without_help, has_series};
    let stack = TestStack::spawn_standin().await?;

    let text = stack.get("/metrics").await?.text().await?;

    assert_eq!(families_without_help(&text), Vec::<String>::new(), "{text}");
    assert_eq!(
        families_of_type(&text, "summary"),
        Vec::<String>::new(),
        "durations are histograms"
    );
    let mut expected: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "booksvc_breaker_transitions_total",
            vec![("from", "closed"), ("to", "open")],
        ),
        ("booksvc_breaker_calls_not_permitted_total", vec![]),
        ("booksvc_storagesvc_retries_total", vec![]),
        ("booksvc_consumer_event_lag_seconds_bucket", vec![]),
        ("booksvc_consumer_reconnects_total", vec![]),
    ];
    for state in ["closed", "open", "half_open"] {
        expected.push(("booksvc_breaker_state", vec![("state", state)]));
    }
    for state in ["reconnecting", "running", "paused", "stopped"] {
        expected.push(("booksvc_consumer_state", vec![("state", state)]));
    }
    for reason in ["poison", "unprocessable", "exhausted", "retry_refused"] {
        expected.push((
            "booksvc_consumer_dead_lettered_total",
            vec![("reason", reason)],
        ));
    }
    for resource in ["book", "list"] {
        for result in ["hit", "miss", "stale", "unavailable"] {
            expected.push((
                "booksvc_cache_results_total",
                vec![("resource", resource), ("result", result)],
            ));
        }
    }
    for (name, labels) in &expected {
        assert!(
            has_series(&text, name, labels),
            "/metrics lacks {name}{labels:?}:\n{text}"
        );
    }
    stack.stop().await
}

#[tokio::test]
async fn readiness_turns_503_at_once_when_shutdown_starts() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.shutdown_drain_delay = Duration::from_secs(2))
        .spawn()
        .await?;
    assert_eq!(stack.ready().await?.0, StatusCode::OK);
    let before = stack.get_book(1).await?;
    assert_eq!(
        header(&before, "connection"),
        None,
        "keep-alive while serving"
    );

    stack.begin_shutdown();

    let (status, body) = stack.ready().await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not ready", "{body}");
    // Still serving reads while load balancers notice, each answer closing its connection:
    // no client is left with an idle connection for the graceful close to cut under a request.
    let draining = stack.get_book(1).await?;
    assert_eq!(draining.status(), StatusCode::OK);
    assert_eq!(header(&draining, "connection").as_deref(), Some("close"));
    stack.stop().await
}

/// Readiness is unauthenticated and load balancers call it often: a burst of calls must not
/// become a burst of calls to storagesvc (each of which takes a PostgreSQL connection there).
#[tokio::test]
async fn a_burst_of_readiness_calls_asks_storagesvc_only_a_few_times() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;
    let before = stack.standin().calls("/healthz/ready");

    let burst = (0..50).map(|_| stack.ready());
    for answer in futures::future::join_all(burst).await {
        let (status, body) = answer?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["dependencies"]["storagesvc"]["status"], "up", "{body}");
    }

    let asked = stack.standin().calls("/healthz/ready") - before;
    assert!(
        asked <= 3,
        "50 readiness calls asked storagesvc {asked} times"
    );
    stack.stop().await
}
