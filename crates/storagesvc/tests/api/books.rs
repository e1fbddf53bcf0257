//! The books API's happy paths, versions, preconditions and the write/event atomicity.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, book_body};

#[tokio::test]
async fn a_book_can_be_created_read_updated_and_deleted() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;

    // Create: 201, Location and the stored book at version 1.
    let response = app
        .create_book(&book_body("Dune", "Frank Herbert", "Spice."))
        .await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str()?.to_owned();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let created: Value = response.json().await?;
    let id = created["id"].as_i64().expect("id is a number");
    assert_eq!(location, format!("/books/{id}"));
    assert_eq!(created["title"], "Dune");
    assert_eq!(created["version"], 1);
    assert!(
        chrono::DateTime::parse_from_rfc3339(created["updated_at"].as_str().unwrap_or("")).is_ok()
    );

    // Read it back through the Location.
    let fetched: Value = app
        .request(reqwest::Method::GET, &location)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(fetched, created);

    // Update: 200, version 2, new fields visible to readers.
    let response = app
        .update_book(id, &book_body("Dune", "F. Herbert", "More spice."), None)
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await?;
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["author"], "F. Herbert");
    let listed: Vec<Value> = app.list_books().await?.json().await?;
    assert!(listed.contains(&updated), "the list shows the update");

    // Delete: 204, then gone from reads.
    assert_eq!(app.delete_book(id).await?.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_book(id).await?.status(), StatusCode::NOT_FOUND);
    let listed: Vec<Value> = app.list_books().await?.json().await?;
    assert!(
        listed.iter().all(|book| book["id"] != id),
        "the list no longer shows it"
    );

    // Each write left its event in the outbox, in order.
    let keys = app.outbox_routing_keys(id).await?;
    assert_eq!(keys, ["book.created", "book.updated", "book.deleted"]);
    app.stop().await
}

#[tokio::test]
async fn a_fresh_database_holds_the_two_original_books_with_their_events() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;

    let books: Vec<Value> = app.list_books().await?.json().await?;

    let summary: Vec<(&str, &str, i64)> = books
        .iter()
        .map(|b| {
            (
                b["title"].as_str().unwrap_or(""),
                b["author"].as_str().unwrap_or(""),
                b["version"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("One book", "John Doe", 1), ("Second book", "Jane Doe", 1)]
    );
    assert!(
        books
            .iter()
            .all(|b| !b["desc"].as_str().unwrap_or("").is_empty()),
        "seeds have a desc"
    );
    assert_eq!(
        app.outbox_rows().await?,
        2,
        "each seeded book has its created event"
    );
    app.stop().await
}

#[tokio::test]
async fn restarting_on_a_seeded_database_does_not_seed_again() -> anyhow::Result<()> {
    let first = TestApp::spawn().await?;
    let settings = first.settings.clone();
    first.stop().await?;

    let second = TestApp::start(settings).await?;

    assert_eq!(second.book_rows().await?, 2);
    assert_eq!(
        second.outbox_rows().await?,
        2,
        "no second round of seed events"
    );
    second.stop().await
}

#[tokio::test]
async fn an_emptied_table_is_seeded_again_only_on_the_next_start() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    for id in [1, 2] {
        assert_eq!(app.delete_book(id).await?.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(
        app.book_rows().await?,
        0,
        "deleting is not undone while running"
    );
    let settings = app.settings.clone();
    app.stop().await?;

    let restarted = TestApp::start(settings).await?;

    assert_eq!(
        restarted.book_rows().await?,
        2,
        "the contract: seeded whenever empty at start-up"
    );
    restarted.stop().await
}

#[tokio::test]
async fn every_update_bumps_the_version_by_exactly_one() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let id = app.create_book_ok("Versioned").await?["id"]
        .as_i64()
        .unwrap_or_default();

    for expected in 2..=5 {
        let body = book_body(&format!("Versioned {expected}"), "A", "");
        let updated: Value = app.update_book(id, &body, None).await?.json().await?;
        assert_eq!(updated["version"], expected);
    }
    let fetched = app.get_book(id).await?;
    assert_eq!(fetched.headers()["etag"], "\"5\"");
    app.stop().await
}

#[tokio::test]
async fn if_match_with_the_current_version_updates_and_a_stale_one_is_refused() -> anyhow::Result<()>
{
    let app = TestApp::spawn().await?;
    let id = app.create_book_ok("Guarded").await?["id"]
        .as_i64()
        .unwrap_or_default();

    let fresh = app
        .update_book(id, &book_body("First writer", "A", ""), Some("\"1\""))
        .await?;
    assert_eq!(fresh.status(), StatusCode::OK);
    let stale = app
        .update_book(id, &book_body("Second writer", "A", ""), Some("\"1\""))
        .await?;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let body: Value = stale.json().await?;
    assert_eq!(
        body["current_version"], 2,
        "the 412 tells the current version"
    );

    let stored: Value = app.get_book(id).await?.json().await?;
    assert_eq!(
        (stored["title"].as_str(), stored["version"].as_i64()),
        (Some("First writer"), Some(2))
    );
    let any = app
        .update_book(id, &book_body("Any version", "A", ""), Some("*"))
        .await?;
    assert_eq!(
        any.status(),
        StatusCode::OK,
        "If-Match: * accepts any version"
    );
    assert_eq!(
        app.outbox_routing_keys(id).await?.len(),
        3,
        "no event for the refused write"
    );
    app.stop().await
}

#[tokio::test]
async fn unicode_and_sql_metacharacters_are_stored_and_read_back_verbatim() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let title = "Robert'); DROP TABLE books;-- \\ % _ $1";
    let author = "Zoë Łódź 🦀 東京 \u{202e}rtl";
    let desc = "  leading spaces, \"quotes\", <tags>, tab\t, newline\n, emoji 👩‍💻  ";

    let created = app.create_book(&book_body(title, author, desc)).await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await?["id"]
        .as_i64()
        .unwrap_or_default();
    let fetched: Value = app.get_book(id).await?.json().await?;

    assert_eq!(fetched["title"], title);
    assert_eq!(fetched["author"], author);
    assert_eq!(fetched["desc"], desc);
    assert_eq!(
        app.book_rows().await?,
        3,
        "the table is still there, with the seeds"
    );
    app.stop().await
}

#[tokio::test]
async fn a_write_and_its_outbox_row_commit_or_roll_back_together() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let before: Value = app.get_book(1).await?.json().await?;
    let (books_before, outbox_before) = (app.book_rows().await?, app.outbox_rows().await?);
    // Break the outbox for real: every insert into it now fails inside the write's transaction.
    for statement in [
        "CREATE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'outbox is broken for this test'; END $$",
        "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox \
         FOR EACH ROW EXECUTE FUNCTION refuse_outbox()",
    ] {
        sqlx::query(statement).execute(&app.db).await?;
    }

    let create = app.create_book(&book_body("Never stored", "A", "")).await?;
    let update = app
        .update_book(1, &book_body("Never changed", "A", ""), None)
        .await?;
    let delete = app.delete_book(1).await?;

    for (case, response) in [("create", create), ("update", update), ("delete", delete)] {
        assert!(
            response.status().is_server_error(),
            "{case}: {}",
            response.status()
        );
        crate::helpers::assert_json_error(response, case).await;
    }
    assert_eq!(
        app.book_rows().await?,
        books_before,
        "no book row was added or removed"
    );
    assert_eq!(
        app.outbox_rows().await?,
        outbox_before,
        "no outbox row was added"
    );
    let after: Value = app.get_book(1).await?.json().await?;
    assert_eq!(
        after, before,
        "the failed update and delete left the book untouched"
    );
    app.stop().await
}
