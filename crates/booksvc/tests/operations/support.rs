//! Small helpers both tests use: the repository root, polling, and reading booksvc.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use e2e::in_process::Booksvc;

/// Generous bound for "soon" on a loaded 2-core machine; never a timing assertion.
pub(crate) const SOON: Duration = Duration::from_secs(30);

/// The repository root (`ui-tests/`, `docs/`, `deploy/` live there).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) use testkit::eventually;

/// Waits until booksvc's readiness says its consumer is running: it has declared the
/// topology, so a message published to `books` now reaches its queue.
pub(crate) async fn consumer_running(booksvc: &Booksvc) -> bool {
    eventually(SOON, || async {
        let Ok(response) = booksvc.get("/healthz/ready").await else {
            return false;
        };
        let body: Value = response.json().await.unwrap_or_default();
        body["dependencies"]["consumer"]["status"] == "running"
    })
    .await
}

/// booksvc's answer for one book: `X-Cache` and the title.
pub(crate) async fn read_book(booksvc: &Booksvc, id: i64) -> Option<(String, String)> {
    let response = booksvc.get(&format!("/books/{id}")).await.ok()?;
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.ok()?;
    Some((cache, body["title"].as_str()?.to_owned()))
}

/// Waits until booksvc serves `title` for `id` from a fresh cache entry (`X-Cache: hit`).
pub(crate) async fn serves_from_cache(booksvc: &Booksvc, id: i64, title: &str) -> bool {
    eventually(SOON, || async {
        read_book(booksvc, id)
            .await
            .is_some_and(|(cache, served)| cache == "hit" && served == title)
    })
    .await
}
