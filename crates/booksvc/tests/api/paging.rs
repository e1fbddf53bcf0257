//! Paged lists through booksvc: pages follow their `Link`s and are cache hits the second time,
//! bad values are refused before any call, an applied event shows in the next page, and with
//! storagesvc down pages of known books are served stale (all against the stand-in
//! storagesvc, which counts calls and answers 503 on demand); and a page is the same bytes as
//! the real storagesvc's, over its PostgreSQL.

use std::time::Duration;

use booksvc::breaker::State as BreakerState;
use chrono::Utc;
use events::{BookChanged, BookData};
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{Answer, TestStack, WITHIN_BUDGET, assert_json_error, header};

/// A page as a client sees it.
#[derive(Debug)]
struct Page {
    ids: Vec<i64>,
    titles: Vec<String>,
    x_cache: String,
    next: Option<String>,
}

async fn page(stack: &TestStack, path: &str) -> anyhow::Result<Page> {
    let response = stack.get(path).await?;
    read_page(response, path).await
}

async fn read_page(response: Response, path: &str) -> anyhow::Result<Page> {
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "{path}: {}",
        response.status()
    );
    let x_cache = header(&response, "x-cache").unwrap_or_default();
    let next = header(&response, "link").map(|link| next_path(&link));
    let books: Vec<Value> = response.json().await?;
    Ok(Page {
        ids: books.iter().filter_map(|b| b["id"].as_i64()).collect(),
        titles: books
            .iter()
            .filter_map(|b| b["title"].as_str().map(str::to_owned))
            .collect(),
        x_cache,
        next,
    })
}

/// `</books?limit=3&after=5>; rel="next"` → `/books?limit=3&after=5`.
fn next_path(link: &str) -> String {
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let start = link.find('<').expect("<") + 1;
    let end = link.find('>').expect(">");
    link[start..end].to_owned()
}

/// Follows the links from `first`; every page's `X-Cache` and ids.
async fn walk(stack: &TestStack, first: &str) -> anyhow::Result<Vec<Page>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next.take() {
        let page = page(stack, &path).await?;
        next = page.next.clone();
        pages.push(page);
        anyhow::ensure!(pages.len() <= 10, "the links never end");
    }
    Ok(pages)
}

fn ids(pages: &[Page]) -> Vec<i64> {
    pages.iter().flat_map(|page| page.ids.clone()).collect()
}

/// The event storagesvc would publish for a book named `title` at `version`.
fn upsert(id: i64, version: i64, title: &str) -> BookChanged {
    let data = BookData {
        id,
        title: title.to_owned(),
        author: "Test Author".to_owned(),
        desc: String::new(),
    };
    match version {
        1 => BookChanged::created(data, version, Utc::now()),
        _ => BookChanged::updated(data, version, Utc::now()),
    }
}

#[tokio::test]
async fn pages_follow_their_links_and_are_hits_the_second_time() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;
    for n in 3..=7 {
        stack.create_book(&format!("Book {n}")).await?;
    }

    let first = walk(&stack, "/books?limit=3").await?;
    assert_eq!(ids(&first), (1..=7).collect::<Vec<_>>(), "in id order");
    assert_eq!(
        first.iter().map(|p| p.ids.len()).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    assert!(first.iter().all(|p| p.x_cache == "miss"), "{first:?}");
    assert_eq!(
        stack.standin().calls("/books"),
        3,
        "one storagesvc call a page"
    );

    let again = walk(&stack, "/books?limit=3").await?;
    assert_eq!(ids(&again), ids(&first));
    assert!(again.iter().all(|p| p.x_cache == "hit"), "{again:?}");
    assert_eq!(
        stack.standin().calls("/books"),
        3,
        "hits did not ask storagesvc"
    );

    // `GET /` is the first default page.
    let root = page(&stack, "/").await?;
    assert_eq!((root.ids.len(), root.next), (7, None));
    stack.stop().await
}

/// The contract with the real storagesvc: its pages over PostgreSQL link the same way through
/// booksvc, and booksvc serves a page as the same bytes storagesvc sends.
#[tokio::test]
async fn a_page_is_the_same_bytes_as_the_real_storagesvcs_page() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    for n in 3..=7 {
        stack.create_book(&format!("Book {n}")).await?;
    }

    let pages = walk(&stack, "/books?limit=3").await?;
    assert_eq!(ids(&pages), (1..=7).collect::<Vec<_>>(), "in id order");

    let direct = stack
        .client
        .get(format!("{}/books?limit=3&after=3", stack.storagesvc))
        .send()
        .await?
        .text()
        .await?;
    let ours = stack.get("/books?limit=3&after=3").await?.text().await?;
    assert_eq!(ours, direct);
    stack.stop().await
}

#[tokio::test]
async fn bad_page_values_are_400_with_a_json_error_and_never_reach_storagesvc() -> anyhow::Result<()>
{
    let stack = TestStack::spawn_standin().await?;
    let queries = [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "limit=",
        "limit=1.5",
        "limit=4294967297",
        "after=-1",
        "after=abc",
        "after=9223372036854775808",
        "after=1&after=2",
    ];
    for route in ["/books", "/"] {
        for query in queries {
            let path = format!("{route}?{query}");
            let response = stack.get(&path).await?;
            let body = assert_json_error(response, StatusCode::BAD_REQUEST, &path).await;
            let name = query.split(['=', '&']).next().unwrap_or_default();
            let message = body["error"].as_str().unwrap_or_default();
            assert!(message.contains(name), "{path}: {message}");
        }
    }
    assert_eq!(
        stack.standin().book_calls(),
        0,
        "refused before the read path"
    );
    stack.stop().await
}

#[tokio::test]
async fn an_applied_event_shows_in_the_next_page() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| s.cache_fresh_ttl = Duration::from_secs(3600))
        .spawn()
        .await?;
    let warmed = page(&stack, "/books?limit=10").await?;
    assert_eq!(
        (warmed.ids.clone(), warmed.x_cache.as_str()),
        (vec![1, 2], "miss")
    );

    // The consumer (played here) applies a create, an update and a delete: each shows in the
    // very next read, which is still a hit.
    let created = stack.create_book("Created").await?;
    stack
        .cache
        .apply_event_on_version(&upsert(created, 1, "Created"))
        .await?;
    let after_create = page(&stack, "/books?limit=10").await?;
    assert_eq!(after_create.ids, [1, 2, created]);
    assert_eq!(after_create.x_cache, "hit");

    let renamed = stack.rename_book(1, "Renamed").await?;
    assert_eq!(renamed["version"], 2);
    stack
        .cache
        .apply_event_on_version(&upsert(1, 2, "Renamed"))
        .await?;
    let after_update = page(&stack, "/books?limit=10").await?;
    assert_eq!(after_update.titles[0], "Renamed");

    stack.delete_book(2).await?;
    stack
        .cache
        .apply_event_on_version(&BookChanged::deleted(2, 2, Utc::now()))
        .await?;
    let after_delete = page(&stack, "/books?limit=10").await?;
    assert_eq!(after_delete.ids, [1, created]);
    assert_eq!(after_delete.x_cache, "hit");
    assert_eq!(stack.standin().calls("/books"), 1, "events, not storagesvc");
    stack.stop().await
}

#[tokio::test]
async fn with_storagesvc_down_pages_of_known_books_are_served_stale() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| {
            s.cache_fresh_ttl = Duration::ZERO; // every read asks storagesvc first
            s.breaker_consecutive_failures = 2;
        })
        .spawn()
        .await?;
    for n in 3..=5 {
        stack.create_book(&format!("Book {n}")).await?;
    }
    let warm = walk(&stack, "/books?limit=2").await?;
    assert_eq!(ids(&warm), [1, 2, 3, 4, 5]);

    stack.standin().answer(Answer::Unavailable);

    // Known pages: stale 200s with their age, the same books, the same links, from the
    // first walk (the flights' failures are still being counted) until the breaker opens.
    // Readers do not wait for the flights' retries, so walks end before it opens: walk on.
    let mut walks = 0;
    let mut opened = false;
    while walks < 3 || !opened {
        assert!(
            walks < 200,
            "the breaker never opened: {:?}",
            stack.breaker()
        );
        let started = std::time::Instant::now();
        let pages = walk(&stack, "/books?limit=2").await?;
        assert!(
            started.elapsed() < WITHIN_BUDGET * 3,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(ids(&pages), ids(&warm));
        assert!(pages.iter().all(|p| p.x_cache == "stale"), "{pages:?}");
        walks += 1;
        opened = opened || stack.breaker() == BreakerState::Open;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.breaker(), BreakerState::Open);
    let response = stack.get("/books?limit=2&after=2").await?;
    assert!(
        header(&response, "age").is_some(),
        "a stale page says its age"
    );

    // A range the cache knows nothing of: 503 with Retry-After, like an unknown book.
    let unknown = stack.get("/books?after=1000").await?;
    assert!(header(&unknown, "retry-after").is_some());
    assert_json_error(unknown, StatusCode::SERVICE_UNAVAILABLE, "unknown range").await;
    stack.stop().await
}
