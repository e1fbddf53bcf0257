//! Warming: events reach the cache, in any order, from storagesvc or typed by hand.

use std::time::Duration;

use anyhow::Context;
use booksvc::book::CachedBook;
use booksvc::consumer::ConsumerState;
use e2e::in_process::{Booksvc, Storagesvc};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    Broker, RunningConsumer, SOON, cached, cached_at, cached_title, consumer_settings, created,
    deleted, shared_cache, updated,
};

#[tokio::test]
async fn a_created_book_is_served_after_storagesvc_stops_though_nobody_read_it()
-> anyhow::Result<()> {
    // Arrange: storagesvc and booksvc (with its consumer) on one vhost.
    let broker = Broker::fresh().await?;
    let storage = Storagesvc::options().amqp_url(&broker.url).spawn().await?;
    let booksvc = Booksvc::options(&storage.address)
        .consumer(&broker.url)
        .spawn()
        .await?;

    // Act: a write in storagesvc; nobody reads the book; then storagesvc goes away.
    let id = storage.create("Warm from the start").await?;
    assert!(
        cached_at(&booksvc.cache, id, 1).await,
        "the created book never reached the cache"
    );
    storage.stop().await?;

    // Assert: booksvc serves it, from the cache the event warmed.
    let response = booksvc.get(&format!("/books/{id}")).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let x_cache = response.headers().get("x-cache").cloned();
    assert!(
        matches!(
            x_cache.as_ref().and_then(|v| v.to_str().ok()),
            Some("hit" | "stale")
        ),
        "{x_cache:?}"
    );
    let book: Value = response.json().await?;
    assert_eq!(book["title"], "Warm from the start");
    assert_eq!(book["version"], 1);
    let ready: Value = booksvc.get("/healthz/ready").await?.json().await?;
    assert_eq!(
        ready["dependencies"]["consumer"]["status"], "running",
        "{ready}"
    );
    booksvc.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn updates_and_deletes_in_storagesvc_propagate() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let storage = Storagesvc::options().amqp_url(&broker.url).spawn().await?;
    let cache = shared_cache().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());

    let id = storage.create("First title").await?;
    let version = storage.update(id, "Second title").await?["version"]
        .as_i64()
        .context("no version in the updated book")?;
    assert!(
        cached_at(&cache, id, version).await,
        "the update never reached the cache"
    );
    assert_eq!(
        cached_title(&cache, id).await.as_deref(),
        Some("Second title")
    );

    storage.delete(id).await?;
    assert!(
        cached_at(&cache, id, version + 1).await,
        "the delete never reached the cache"
    );
    assert_eq!(
        cached(&cache, id).await,
        Some(CachedBook::Tombstone {
            version: version + 1
        })
    );

    consumer.stop().await?;
    storage.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn out_of_order_versions_and_duplicates_leave_the_newest_state() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let cache = shared_cache().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    let v3 = updated(1, 3, "v3");
    let deletion = deleted(2, 4);

    // Book 1: v3 arrives before v2 and twice; book 2: the delete overtakes the updates.
    broker
        .publish(&[
            v3.clone(),
            updated(1, 2, "v2"),
            v3,
            deletion.clone(),
            updated(2, 3, "resurrected?"),
            created(2, "created"),
            deletion,
            updated(1, 1, "v1"),
            // A marker, last: once it is applied every event before it was handled.
            created(99, "marker"),
        ])
        .await?;

    assert!(cached_at(&cache, 99, 1).await, "the marker never arrived");
    assert_eq!(cached_title(&cache, 1).await.as_deref(), Some("v3"));
    assert_eq!(
        cached(&cache, 2).await,
        Some(CachedBook::Tombstone { version: 4 })
    );
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}

#[tokio::test]
async fn an_event_typed_into_the_management_ui_is_applied() -> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let cache = shared_cache().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    assert!(consumer.reaches(ConsumerState::Running, SOON).await);

    // No event_id, no occurred_at, no content type, not persistent, no confirm.
    let body = r#"{"type": "book.updated", "book_id": 7, "version": 5,
                   "book": {"id": 7, "title": "By hand", "author": "Ops", "desc": ""}}"#;
    broker.publish_by_hand("book.updated", body).await?;

    assert!(
        cached_at(&cache, 7, 5).await,
        "the hand-typed event was not applied"
    );
    let book = cached(&cache, 7)
        .await
        .and_then(|entry| entry.live().cloned());
    let book = book.expect("a live book");
    assert_eq!(book.title, "By hand");
    // Without occurred_at, updated_at is when the event was applied.
    let age = chrono::Utc::now() - book.updated_at;
    assert!(
        age.to_std().unwrap_or_default() < Duration::from_secs(60),
        "{age}"
    );
    consumer.stop().await?;
    broker.close().await;
    Ok(())
}
