//! Probes, metrics, a real PostgreSQL outage, and shutdown.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use storagesvc::config::Secret;

use crate::helpers::{TestApp, assert_json_error, book_body, eventually};

#[tokio::test]
async fn with_a_dead_node_first_in_amqp_url_readiness_names_the_live_node_in_use()
-> anyhow::Result<()> {
    let live = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let list = format!("amqp://guest:s3cret@127.0.0.1:{closed}/%2f,{live}");
    let app = TestApp::spawn_with(|settings| {
        settings.amqp_url = list.parse().expect("a valid list");
    })
    .await?;
    let live_node = live
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(node, _)| node.to_owned())
        .expect("a testkit URL names host:port");

    let seen = std::cell::RefCell::new(Value::Null);
    let named = eventually(Duration::from_secs(20), || async {
        let Ok(response) = app.request(Method::GET, "/healthz/ready").send().await else {
            return false;
        };
        let body = response.json::<Value>().await.unwrap_or_default();
        let named = body["dependencies"]["rabbitmq"]["node"] == live_node.as_str();
        *seen.borrow_mut() = body;
        named
    })
    .await;
    let last = seen.into_inner();
    assert!(named, "the node in use is not reported: {last}");
    assert_eq!(last["dependencies"]["rabbitmq"]["status"], "up");
    assert!(!last.to_string().contains("s3cret"), "{last}");
    assert!(!last.to_string().contains("guest"), "{last}");
    app.stop().await
}

#[tokio::test]
async fn readiness_names_each_dependency_and_is_ready_when_postgres_answers() -> anyhow::Result<()>
{
    let app = TestApp::spawn().await?;
    let ready = || async {
        let response = app
            .request(Method::GET, "/healthz/ready")
            .send()
            .await
            .ok()?;
        let status = response.status();
        Some((status, response.json::<Value>().await.ok()?))
    };

    // The relay connects in the background; wait until it reports the broker up.
    let broker_up = eventually(Duration::from_secs(15), || async {
        ready()
            .await
            .is_some_and(|(_, body)| body["dependencies"]["rabbitmq"]["status"] == "up")
    })
    .await;
    assert!(broker_up, "rabbitmq never reported up");
    let (status, body) = ready().await.expect("readiness answers JSON");

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    let dependencies = &body["dependencies"];
    assert_eq!(dependencies["postgres"]["status"], "up");
    assert_eq!(dependencies["outbox"]["status"], "up");
    assert!(
        dependencies["outbox"]["backlog"].is_i64(),
        "backlog is a number: {body}"
    );
    assert!(
        dependencies["outbox"].get("oldest_age_seconds").is_some(),
        "{body}"
    );
    let live = app.request(Method::GET, "/healthz/live").send().await?;
    assert_eq!(live.status(), StatusCode::OK);
    app.stop().await
}

/// What alerts and the dashboard (deploy/prometheus, deploy/grafana) read must be there, at 0,
/// before the relay's first batch: an alert on a missing series reads "no data", not "0".
#[tokio::test]
async fn every_family_has_help_and_alerted_series_exist_from_start_up() -> anyhow::Result<()> {
    use testkit::exposition::{families_of_type, families_without_help, has_series};
    let app = TestApp::spawn().await?;

    let text = app
        .request(Method::GET, "/metrics")
        .send()
        .await?
        .text()
        .await?;

    assert_eq!(families_without_help(&text), Vec::<String>::new(), "{text}");
    assert_eq!(
        families_of_type(&text, "summary"),
        Vec::<String>::new(),
        "durations are histograms"
    );
    for name in [
        "storagesvc_outbox_backlog",
        "storagesvc_outbox_oldest_age_seconds",
        "storagesvc_relay_broker_connected",
        "storagesvc_outbox_published_total",
        "storagesvc_outbox_publish_failures_total",
        "storagesvc_outbox_batch_duration_seconds_bucket",
    ] {
        assert!(
            has_series(&text, name, &[]),
            "/metrics lacks {name}:\n{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.get_book(1).await?;
    app.get_book(424_242).await?;
    app.request(Method::GET, "/no/such/route").send().await?;

    let response = app.request(Method::GET, "/metrics").send().await?;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()?
            .starts_with("text/plain")
    );
    let text = response.text().await?;
    let has_series = |route: &str, status: &str| {
        text.lines().any(|line| {
            line.starts_with("storagesvc_http_requests_total{")
                && line.contains(&format!("route=\"{route}\""))
                && line.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(has_series("/books/{id}", "200"), "{text}");
    assert!(has_series("/books/{id}", "404"), "{text}");
    assert!(
        has_series("unmatched", "404"),
        "unknown paths share one label: {text}"
    );
    assert!(
        text.contains("storagesvc_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    app.stop().await
}

#[tokio::test]
async fn the_request_id_is_taken_from_the_request_or_generated_and_echoed() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;

    let given = app
        .request(Method::GET, "/books/1")
        .header("x-request-id", "abc-123")
        .send()
        .await?;
    let generated = app.request(Method::GET, "/books/1").send().await?;

    assert_eq!(given.headers()["x-request-id"], "abc-123");
    assert!(!generated.headers()["x-request-id"].is_empty());
    app.stop().await
}

#[tokio::test]
async fn with_postgres_stopped_requests_fail_fast_with_503_and_recover_after() -> anyhow::Result<()>
{
    let postgres = testkit::Postgres::start().await?;
    let database_url = postgres.fresh_database().await?;
    let app =
        TestApp::spawn_with(|settings| settings.database_url = Secret::new(&database_url)).await?;
    assert_eq!(app.list_books().await?.status(), StatusCode::OK);

    postgres.stop().await?;

    let started = Instant::now();
    let read = app.list_books().await?;
    let write = app
        .create_book(&book_body("During the outage", "A", ""))
        .await?;
    let took = started.elapsed();
    for (case, response) in [("read", read), ("write", write)] {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{case}");
        assert!(response.headers().contains_key("retry-after"), "{case}");
        assert_json_error(response, case).await;
    }
    assert!(
        took < Duration::from_secs(2),
        "two failing requests took {took:?}"
    );
    let ready = app.request(Method::GET, "/healthz/ready").send().await?;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json::<Value>().await?["dependencies"]["postgres"]["status"],
        "down"
    );
    let live = app.request(Method::GET, "/healthz/live").send().await?;
    assert_eq!(
        live.status(),
        StatusCode::OK,
        "liveness ignores dependencies"
    );

    postgres.start_again().await?;

    let recovered = eventually(Duration::from_secs(10), || async {
        app.list_books()
            .await
            .is_ok_and(|response| response.status() == StatusCode::OK)
    })
    .await;
    assert!(recovered, "reads never recovered");
    let created = app
        .create_book(&book_body("After the outage", "A", ""))
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    // Readiness shares one short, bounded PostgreSQL check between probes (review M5); the
    // first one after the restart may still meet a connection from before it.
    let ready = eventually(Duration::from_secs(10), || async {
        app.request(Method::GET, "/healthz/ready")
            .send()
            .await
            .is_ok_and(|response| response.status() == StatusCode::OK)
    })
    .await;
    assert!(ready, "readiness never recovered");
    app.stop().await
}

#[tokio::test]
async fn readiness_turns_503_at_once_on_shutdown_while_requests_are_still_served()
-> anyhow::Result<()> {
    let app = TestApp::spawn_with(|settings| {
        settings.shutdown_drain_delay = Duration::from_secs(2);
    })
    .await?;
    assert_eq!(
        app.request(Method::GET, "/healthz/ready")
            .send()
            .await?
            .status(),
        StatusCode::OK
    );

    app.begin_shutdown();

    let ready = app.request(Method::GET, "/healthz/ready").send().await?;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await?;
    assert_eq!(
        (body["status"].as_str(), body["reason"].as_str()),
        (Some("not ready"), Some("shutting down"))
    );
    let draining = app.list_books().await?;
    assert_eq!(
        draining.status(),
        StatusCode::OK,
        "still serving while draining"
    );
    // Each answer closes its connection: no client is left with an idle connection for the
    // graceful close to cut under a request.
    assert_eq!(
        draining
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close")
    );
    let started = Instant::now();
    app.stop().await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped within SHUTDOWN_TIMEOUT"
    );
    Ok(())
}

/// Readiness is unauthenticated and load balancers call it often: however many calls come
/// at once, they must not take the pool's connections from writes.
#[tokio::test]
async fn many_concurrent_readiness_calls_do_not_starve_writes() -> anyhow::Result<()> {
    // Small, like a busy pool: the relay's two lanes, housekeeping and the writes share it.
    let app = TestApp::spawn_with(|settings| settings.db_pool_size = 3).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let request = app.request(Method::GET, "/healthz/ready");
        let stop = stop.clone();
        probes.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(request) = request.try_clone() else {
                    return;
                };
                let _ = request.send().await;
            }
        });
    }
    // Let the probes pile up before the writes start.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut statuses = Vec::new();
    for i in 0..20 {
        let response = app
            .create_book(&book_body(&format!("Book {i}"), "Author", "under probes"))
            .await?;
        statuses.push(response.status());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while probes.join_next().await.is_some() {}

    let failed: Vec<_> = statuses
        .iter()
        .filter(|status| **status != StatusCode::CREATED)
        .collect();
    assert!(
        failed.is_empty(),
        "writes failed under readiness load: {statuses:?}"
    );
    app.stop().await
}
