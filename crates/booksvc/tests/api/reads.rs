//! The happy path and bad input: misses then hits, cache headers, 404s, 400s, 405s, with the
//! stand-in storagesvc counting what reached it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestStack, assert_json_error, header};

#[tokio::test]
async fn a_first_read_is_a_miss_from_storagesvc_and_the_next_a_fresh_hit() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;

    let first = stack.get_book(1).await?;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "x-cache").as_deref(), Some("miss"));
    assert_eq!(
        header(&first, "cache-status").as_deref(),
        Some("booksvc; fwd=miss")
    );
    assert_eq!(header(&first, "age"), None, "a miss is not from the cache");
    let book: Value = first.json().await?;
    assert_eq!(book["title"], "One book");
    assert_eq!(book["version"], 1);

    let second = stack.get_book(1).await?;
    assert_eq!(header(&second, "x-cache").as_deref(), Some("hit"));
    assert!(header(&second, "age").is_some(), "a hit says its age");
    let status = header(&second, "cache-status").unwrap_or_default();
    assert!(status.starts_with("booksvc; hit; ttl="), "{status}");
    assert_eq!(
        second.json::<Value>().await?,
        book,
        "same body, storagesvc's shape"
    );

    assert_eq!(
        stack.standin().calls("/books/1"),
        1,
        "the hit did not ask storagesvc"
    );
    stack.stop().await
}

#[tokio::test]
async fn the_list_is_served_on_books_and_on_root() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;

    for (path, x_cache) in [("/books", "miss"), ("/", "hit"), ("/books", "hit")] {
        let response = stack.get(path).await?;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&response, "x-cache").as_deref(),
            Some(x_cache),
            "{path}"
        );
        let books: Vec<Value> = response.json().await?;
        let titles: Vec<_> = books.iter().map(|b| b["title"].as_str()).collect();
        assert_eq!(titles, [Some("One book"), Some("Second book")], "{path}");
    }
    assert_eq!(stack.standin().calls("/books"), 1);
    stack.stop().await
}

#[tokio::test]
async fn an_unknown_book_is_a_404_that_never_trips_the_breaker() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.breaker_consecutive_failures = 2)
        .spawn()
        .await?;

    for attempt in 0..6 {
        let response = stack.get_book(424_242).await?;
        let case = format!("read {attempt} of a missing book");
        assert_eq!(
            header(&response, "x-cache").as_deref(),
            Some("miss"),
            "{case}"
        );
        assert_json_error(response, StatusCode::NOT_FOUND, &case).await;
    }

    assert_eq!(
        stack.breaker().as_str(),
        "closed",
        "404 is an answer, not a failure"
    );
    assert_eq!(
        stack.standin().calls("/books/424242"),
        6,
        "404s are not retried"
    );
    assert_eq!(stack.get_book(2).await?.status(), StatusCode::OK);
    stack.stop().await
}

#[tokio::test]
async fn a_deleted_book_becomes_a_cached_404() -> anyhow::Result<()> {
    let ttl = Duration::from_millis(300);
    let stack = TestStack::options()
        .standin()
        .booksvc(move |s| s.cache_fresh_ttl = ttl)
        .spawn()
        .await?;
    let id = stack.create_book("Short-lived").await?;
    assert_eq!(stack.get_book(id).await?.status(), StatusCode::OK);
    stack.delete_book(id).await?;

    // Once the entry is no longer fresh, storagesvc is asked and says 404…
    tokio::time::sleep(ttl).await;
    let asked = stack.get_book(id).await?;
    assert_eq!(header(&asked, "x-cache").as_deref(), Some("miss"));
    assert_json_error(asked, StatusCode::NOT_FOUND, "storagesvc's 404").await;
    // …which the cache now holds as a tombstone: a 404 without asking again.
    let cached = stack.get_book(id).await?;
    assert_eq!(
        header(&cached, "x-cache").as_deref(),
        Some("hit"),
        "a cached tombstone"
    );
    assert_json_error(cached, StatusCode::NOT_FOUND, "tombstone").await;
    assert_eq!(stack.standin().calls(&format!("/books/{id}")), 2);
    stack.stop().await
}

#[tokio::test]
async fn bad_ids_are_400_json_and_never_reach_storagesvc() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;

    for id in [
        "abc",
        "0",
        "-1",
        "+1",
        "1.5",
        "1e3",
        "99999999999999999999",
        "%20",
        "%F0%9F%93%9A",
    ] {
        let response = stack.get(&format!("/books/{id}")).await?;
        assert_json_error(response, StatusCode::BAD_REQUEST, &format!("id {id:?}")).await;
    }
    assert_eq!(stack.standin().book_calls(), 0);
    stack.stop().await
}

#[tokio::test]
async fn unknown_routes_are_404_json_and_writes_are_405_json() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;

    let unknown = stack.get("/nope").await?;
    assert_json_error(unknown, StatusCode::NOT_FOUND, "unknown route").await;
    let nested = stack.get("/books/1/extra").await?;
    assert_json_error(nested, StatusCode::NOT_FOUND, "unknown nested route").await;
    let cases = [
        (reqwest::Method::POST, "/books"),
        (reqwest::Method::PUT, "/books/1"),
        (reqwest::Method::DELETE, "/books/1"),
        (reqwest::Method::POST, "/"),
    ];
    for (method, path) in cases {
        let response = stack
            .client
            .request(method.clone(), format!("{}{path}", stack.address))
            .send()
            .await?;
        let case = format!("{method} {path}");
        assert_json_error(response, StatusCode::METHOD_NOT_ALLOWED, &case).await;
    }
    stack.stop().await
}
