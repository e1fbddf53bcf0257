//! Start-up against dependencies that are late or missing.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use storagesvc::config::Secret;

use crate::helpers::{TestApp, book_body, eventually, test_settings};

/// A local port nothing listens on.
fn closed_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn start_up_waits_for_a_postgres_that_comes_up_late() -> anyhow::Result<()> {
    let postgres = testkit::Postgres::start().await?;
    let database_url = postgres.fresh_database().await?;
    let amqp_url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
    postgres.stop().await?;

    let starting = tokio::spawn(TestApp::start(test_settings(&database_url, &amqp_url)?));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !starting.is_finished(),
        "start-up must wait, not fail or serve without a database"
    );
    postgres.start_again().await?;
    let app = tokio::time::timeout(Duration::from_secs(10), starting).await???;

    assert_eq!(app.list_books().await?.status(), StatusCode::OK);
    app.stop().await
}

#[tokio::test]
async fn start_up_gives_up_after_db_startup_timeout() -> anyhow::Result<()> {
    let amqp_url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
    let nowhere = format!("postgres://pg:pass@127.0.0.1:{}/crud", closed_port()?);
    let mut settings = test_settings(&nowhere, &amqp_url)?;
    settings.db_startup_timeout = Duration::from_secs(1);

    let started = Instant::now();
    let result = storagesvc::Application::build(settings).await;

    let err = result.err().expect("no database, no start");
    assert!(
        format!("{err:#}").contains("DB_STARTUP_TIMEOUT"),
        "names the knob: {err:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded: {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn with_the_broker_unreachable_writes_succeed_and_events_wait_in_the_outbox()
-> anyhow::Result<()> {
    let nowhere = format!("amqp://guest:guest@127.0.0.1:{}/%2f", closed_port()?);
    let app = TestApp::spawn_with(|settings| settings.amqp_url = Secret::new(&nowhere)).await?;

    let created = app
        .create_book(&book_body("Written offline", "A", ""))
        .await?;

    assert_eq!(created.status(), StatusCode::CREATED);
    let ready = || async {
        let response = app.request(Method::GET, "/healthz/ready").send().await?;
        anyhow::Ok((response.status(), response.json::<Value>().await?))
    };
    let (status, body) = ready().await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "a broker outage does not make us unready"
    );
    assert_eq!(body["dependencies"]["rabbitmq"]["status"], "down", "{body}");
    // The outbox figures are housekeeping's, taken every 2 s: the write shows up by the next.
    let counted = eventually(Duration::from_secs(10), || async {
        ready()
            .await
            .is_ok_and(|(_, body)| body["dependencies"]["outbox"]["backlog"] == 3)
    })
    .await;
    assert!(
        counted,
        "two seeds and the write never showed as waiting in the outbox"
    );
    app.stop().await
}
