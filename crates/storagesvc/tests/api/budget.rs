//! The caller's budget (`X-Request-Timeout`, in ms) bounds a request's database work.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sqlx::{Connection, PgConnection};

use crate::helpers::{TestApp, book_body, eventually};

/// A read and a write that PostgreSQL cannot serve (the table is locked) end when the
/// caller's budget does, not at `DB_STATEMENT_TIMEOUT`, and leave nothing running behind.
#[tokio::test]
async fn work_stops_when_the_callers_budget_runs_out() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(|settings| {
        settings.db_statement_timeout = Duration::from_secs(20);
    })
    .await?;
    let database_url = app.settings.database_url.expose().to_owned();
    let mut direct = PgConnection::connect(&database_url).await?;
    let mut lock = direct.begin().await?;
    sqlx::query("LOCK TABLE books IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await?;

    let read = app
        .request(Method::GET, "/books/1")
        .header("x-request-timeout", "300");
    let write = app
        .authorized(Method::PUT, "/books/1")
        .header("x-request-timeout", "300")
        .json(&book_body("Renamed", "Someone", "in a hurry"));
    for (name, request) in [("read", read), ("write", write)] {
        let started = Instant::now();
        let response = request.send().await?;
        let took = started.elapsed();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{name}");
        // Generous: the budget is 300 ms, the statement timeout 20 s.
        assert!(took < Duration::from_secs(5), "{name} took {took:?}");
    }
    // PostgreSQL stopped both statements: nothing of storagesvc waits on the lock any more.
    let stopped = eventually(Duration::from_secs(15), || async {
        waiting_on_locks(&database_url)
            .await
            .is_ok_and(|count| count == 0)
    })
    .await;
    lock.rollback().await?;
    assert!(
        stopped,
        "statements went on after the caller's budget ran out"
    );
    app.stop().await
}

async fn waiting_on_locks(database_url: &str) -> anyhow::Result<i64> {
    let mut db = PgConnection::connect(database_url).await?;
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = 'storagesvc' AND wait_event_type = 'Lock' \
           AND datname = current_database()",
    )
    .fetch_one(&mut db)
    .await?)
}
