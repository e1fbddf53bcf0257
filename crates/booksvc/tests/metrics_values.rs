//! booksvc's `/metrics` counts what happened: each read by how it was answered (a stale read
//! counted as stale), each request by route and status.
//!
//! A test binary of its own: the metrics recorder is global to the process, so tests running
//! beside it would move the counts it checks exactly.

use std::time::Duration;

use e2e::in_process::{Booksvc, Storagesvc};
use reqwest::StatusCode;

/// The value of the series `name` whose labels include every one of `labels`, 0 if absent.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(booksvc: &Booksvc) -> anyhow::Result<String> {
    let response = booksvc.get("/metrics").await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "/metrics: {}",
        response.status()
    );
    Ok(response.text().await?)
}

/// Reads book `id` and returns its `X-Cache`.
async fn read(booksvc: &Booksvc, id: i64) -> anyhow::Result<String> {
    let response = booksvc.get(&format!("/books/{id}")).await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(response
        .headers()
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn a_miss_a_hit_and_a_stale_read_are_each_counted_as_such() -> anyhow::Result<()> {
    testkit::init_test_logging();
    let storage = Storagesvc::options().spawn().await?;
    let id = storage.create("Counted").await?;
    let fresh_ttl = Duration::from_millis(500);
    let booksvc = Booksvc::options(&storage.address)
        .settings(move |settings| settings.cache_fresh_ttl = fresh_ttl)
        .spawn()
        .await?;
    let before = scrape(&booksvc).await?;

    // A miss (filled from storagesvc), a hit, then storagesvc goes away and, once the entry
    // is no longer fresh, a stale read.
    assert_eq!(read(&booksvc, id).await?, "miss");
    assert_eq!(read(&booksvc, id).await?, "hit");
    storage.stop().await?;
    tokio::time::sleep(fresh_ttl * 3).await;
    assert_eq!(read(&booksvc, id).await?, "stale");

    let after = scrape(&booksvc).await?;
    let results = "booksvc_cache_results_total";
    for result in ["miss", "hit", "stale"] {
        let labels = [r#"resource="book""#, &format!(r#"result="{result}""#)];
        let counted = value(&after, results, &labels) - value(&before, results, &labels);
        assert_eq!(counted, 1.0, "{result} reads counted:\n{after}");
    }
    let unavailable = [r#"resource="book""#, r#"result="unavailable""#];
    assert_eq!(value(&after, results, &unavailable), 0.0, "{after}");
    let requests = [r#"route="/books/{id}""#, r#"status="200""#];
    let counted = value(&after, "booksvc_http_requests_total", &requests)
        - value(&before, "booksvc_http_requests_total", &requests);
    assert_eq!(counted, 3.0, "requests to /books/{{id}} counted:\n{after}");
    booksvc.stop().await
}
