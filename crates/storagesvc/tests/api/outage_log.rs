//! What a PostgreSQL outage writes to the log, at the default level: a start and an end per
//! part of the service that met it, not a line per failed request or retry.
//!
//! The log is captured as the JSON lines the service writes: the test's runtime runs on one
//! thread, so a thread-local subscriber sees the app's tasks too.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use storagesvc::config::Secret;
use testkit::log_capture::{LogCapture, field, outage_lines};

use crate::helpers::{TestApp, book_body};
use testkit::eventually;

/// Concurrent clients during the outage, and requests each.
const CLIENTS: usize = 16;
const REQUESTS_EACH: usize = 25;

/// Every request of every client, concurrently: reads, a missing book, writes. Returns how
/// many were answered with each status.
async fn hammer(app: &TestApp) -> anyhow::Result<BTreeMap<u16, usize>> {
    let clients = (0..CLIENTS).map(|client| async move {
        let mut statuses = vec![];
        for request in 0..REQUESTS_EACH {
            let response = match (client + request) % 3 {
                0 => app.list_books().await?,
                1 => app.get_book(1).await?,
                _ => app.create_book(&book_body("During", "A", "")).await?,
            };
            statuses.push(response.status().as_u16());
        }
        anyhow::Ok(statuses)
    });
    let mut counts = BTreeMap::new();
    for statuses in join_all(clients).await {
        for status in statuses? {
            *counts.entry(status).or_default() += 1;
        }
    }
    Ok(counts)
}

#[tokio::test]
async fn a_killed_postgres_is_logged_as_an_outage_not_a_line_per_failed_request()
-> anyhow::Result<()> {
    // The service's own filter at the default level, as `main` installs it.
    let (captured, _log) = LogCapture::install(storagesvc::telemetry::env_filter("info")?);

    let postgres = testkit::Postgres::start().await?; // private: this test kills it
    let database_url = postgres.fresh_database().await?;
    let app =
        TestApp::spawn_with(|settings| settings.database_url = Secret::new(&database_url)).await?;
    assert_eq!(app.list_books().await?.status(), StatusCode::OK);

    // Killed as a crash would; a container backend offers a stop only.
    match testkit::backend::backend() {
        testkit::backend::Backend::Local => postgres.kill().await?,
        testkit::backend::Backend::Containers => postgres.stop().await?,
    }
    // SIGKILL reaches the server's processes a moment later: a few requests may still be
    // answered by a backend that has not died yet. The outage is on once one is refused.
    let refused = eventually(Duration::from_secs(10), || async {
        app.list_books()
            .await
            .is_ok_and(|response| response.status() == StatusCode::SERVICE_UNAVAILABLE)
    });
    assert!(refused.await, "a killed PostgreSQL still answered");
    let before = captured.lines().len();
    let statuses = hammer(&app).await?;
    let during = captured.lines()[before..].to_vec();
    let unavailable = statuses.get(&503).copied().unwrap_or_default();
    assert_eq!(
        unavailable,
        CLIENTS * REQUESTS_EACH,
        "every request during the outage is a 503: {statuses:?}"
    );

    postgres.start_again().await?;
    let recovered = eventually(Duration::from_secs(30), || async {
        app.list_books()
            .await
            .is_ok_and(|response| response.status() == StatusCode::OK)
    });
    assert!(recovered.await, "reads never recovered");
    let lines = captured.lines();

    // Hundreds of failed requests, a handful of lines.
    eprintln!(
        "{unavailable} answers 503, {} log lines meanwhile",
        during.len()
    );
    assert!(
        during.len() <= 10,
        "{unavailable} failed requests wrote {} lines: {during:#?}",
        during.len()
    );
    let started = outage_lines(&lines, "PostgreSQL, requests", "outage started");
    assert_eq!(started.len(), 1, "{lines:#?}");
    assert_eq!(started[0]["level"], "WARN");
    assert!(!field(started[0], "error").is_empty(), "the cause is named");
    let ended = outage_lines(&lines, "PostgreSQL, requests", "outage ended");
    assert_eq!(ended.len(), 1, "{lines:#?}");
    assert_eq!(ended[0]["level"], "INFO");
    // Every 503 was counted: the eventual read's own failures, if any, come on top.
    let failures = ended[0]["fields"]["failures"].as_u64().unwrap_or_default();
    assert!(
        failures >= u64::try_from(unavailable)?,
        "{failures} counted, {unavailable} answered 503"
    );
    // Nothing of ours warns about it outside the outage's lines; a library may warn once
    // about a slow reconnect (sqlx's slow acquire), never per request.
    let mut library_warnings = vec![];
    for line in &lines {
        let level = line["level"].as_str().unwrap_or_default();
        if level != "WARN" && level != "ERROR" {
            continue;
        }
        let target = line["target"].as_str().unwrap_or_default();
        if target.starts_with("storagesvc") || target.starts_with("events") {
            assert!(
                field(line, "message").starts_with("outage"),
                "a {level} line outside the outage's: {line}"
            );
        } else {
            library_warnings.push(line);
        }
    }
    assert!(library_warnings.len() <= 3, "{library_warnings:#?}");
    app.stop().await
}
