//! Who wins in the cache, through the real read path: a fill that raced a newer write (an
//! event applied while the stand-in storagesvc's held answer was on its way) does not
//! overwrite it; a fill after a forged high-version entry does replace it.

use std::time::Duration;

use booksvc::book::CachedBook;
use chrono::Utc;
use events::{BookChanged, BookData};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestStack, eventually, header};

fn event_data(id: i64, title: &str) -> BookData {
    BookData {
        id,
        title: title.to_owned(),
        author: "Test Author".to_owned(),
        desc: String::new(),
    }
}

/// The cached book's (version, title); panics on a miss or a tombstone.
async fn cached(stack: &TestStack, id: i64) -> anyhow::Result<(i64, String)> {
    let lookup = stack.cache.get_book(id).await?;
    match lookup.cached.map(|cached| cached.value) {
        Some(CachedBook::Live(book)) => Ok((book.version, book.title)),
        other => anyhow::bail!("book {id} is not cached as live: {other:?}"),
    }
}

#[tokio::test]
async fn a_fill_that_raced_a_newer_write_does_not_overwrite_it() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| {
            s.cache_fresh_ttl = Duration::ZERO;
            // The read waits for its held call (no soft timeout within the budget), so the
            // race shows in its answer too.
            s.stale_soft_timeout = Duration::from_secs(10);
        })
        .spawn()
        .await?;
    let id = stack.create_book("Original").await?;
    assert_eq!(stack.get_book(id).await?.status(), StatusCode::OK);

    // A read asks storagesvc, which answers version 1; the answer is held on its way back…
    stack.standin().hold();
    let read = tokio::spawn({
        let client = stack.client.clone();
        let url = format!("{}/books/{id}", stack.address);
        async move { client.get(url).send().await }
    });
    let path = format!("/books/{id}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            stack.standin().calls(&path) >= 2
        })
        .await
    );
    // …meanwhile the book is updated and its event lands in the cache (as the consumer would).
    let updated = stack.rename_book(id, "Renamed").await?;
    let version = updated["version"].as_i64().unwrap_or_default();
    let event = BookChanged::updated(event_data(id, "Renamed"), version, Utc::now());
    stack.cache.apply_event_on_version(&event).await?;
    stack.standin().release();

    let response = read.await??;
    assert_eq!(header(&response, "x-cache").as_deref(), Some("miss"));
    let served: Value = response.json().await?;
    assert_eq!(
        served["version"], 1,
        "the read answers what storagesvc said when asked"
    );
    assert_eq!(
        cached(&stack, id).await?,
        (2, "Renamed".to_owned()),
        "the newer write stays"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_fill_replaces_a_forged_high_version_entry() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.cache_fresh_ttl = Duration::ZERO)
        .spawn()
        .await?;
    assert_eq!(stack.get_book(1).await?.status(), StatusCode::OK);
    let forged = BookChanged::updated(event_data(1, "Forged"), 1_000_000, Utc::now());
    stack.cache.apply_event_on_version(&forged).await?;
    assert_eq!(cached(&stack, 1).await?, (1_000_000, "Forged".to_owned()));

    let response = stack.get_book(1).await?;
    assert_eq!(header(&response, "x-cache").as_deref(), Some("miss"));
    let served: Value = response.json().await?;
    assert_eq!(
        served["title"], "One book",
        "storagesvc is the source of truth"
    );

    assert_eq!(
        cached(&stack, 1).await?,
        (1, "One book".to_owned()),
        "the forgery is gone"
    );
    stack.stop().await
}
