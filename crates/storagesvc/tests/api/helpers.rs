//! The harness: the real storagesvc on port 0, against a fresh database and a fresh vhost.
//!
//! `TestApp::spawn()` builds the real `Application` exactly as `main` does (migrations, seed,
//! relay) and returns a typed client. `TestApp::spawn_with(|settings| ..)` tweaks the
//! settings first, e.g. to point at a private PostgreSQL or disable the write token.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use storagesvc::Settings;
use storagesvc::config::Secret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The write token every test app accepts unless a test changes it.
pub(crate) const TOKEN: &str = "test-write-token";

/// A running storagesvc and what a test needs to talk to it and look behind it.
pub(crate) struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub(crate) address: String,
    /// A plain HTTP client (10 s timeout so a hang fails the test instead of stalling it).
    pub(crate) client: reqwest::Client,
    /// A pool of the test's own on the app's database, to check what was (not) written.
    pub(crate) db: PgPool,
    /// The settings the app was built with.
    pub(crate) settings: Settings,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// The app on a fresh database and vhost with [`TOKEN`] as its write token.
    pub(crate) async fn spawn() -> anyhow::Result<TestApp> {
        TestApp::spawn_with(|_| {}).await
    }

    /// Like [`TestApp::spawn`], with the settings changed by `tweak` before the build.
    pub(crate) async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> anyhow::Result<TestApp> {
        testkit::init_test_logging();
        let database_url = testkit::Postgres::shared().await?.fresh_database().await?;
        let amqp_url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
        let mut settings = test_settings(&database_url, &amqp_url)?;
        tweak(&mut settings);
        TestApp::start(settings).await
    }

    /// Builds and runs the app with exactly these settings.
    pub(crate) async fn start(settings: Settings) -> anyhow::Result<TestApp> {
        let app = storagesvc::Application::build(settings.clone()).await?;
        let port = app.port();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let db = PgPool::connect(settings.database_url.expose()).await?;
        Ok(TestApp {
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            db,
            settings,
            shutdown,
            running: Some(running),
        })
    }

    /// Starts shutdown (readiness turns 503) without waiting for it to finish.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts the app down and waits until it has stopped.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.running.take() {
            Some(running) => running.await.context("the app task panicked")?,
            None => Ok(()),
        }
    }

    /// A request to `path` (e.g. `/books/1`).
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
    }

    /// A request carrying the write token.
    pub(crate) fn authorized(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(TOKEN)
    }

    /// `GET /books`.
    pub(crate) async fn list_books(&self) -> anyhow::Result<Response> {
        Ok(self.request(Method::GET, "/books").send().await?)
    }

    /// `GET /books/{id}`.
    pub(crate) async fn get_book(&self, id: i64) -> anyhow::Result<Response> {
        Ok(self
            .request(Method::GET, &format!("/books/{id}"))
            .send()
            .await?)
    }

    /// `POST /books` with the token.
    pub(crate) async fn create_book(&self, body: &Value) -> anyhow::Result<Response> {
        Ok(self
            .authorized(Method::POST, "/books")
            .json(body)
            .send()
            .await?)
    }

    /// `POST /books` that must succeed; returns the created book.
    pub(crate) async fn create_book_ok(&self, title: &str) -> anyhow::Result<Value> {
        let response = self
            .create_book(&book_body(title, "An Author", "A description"))
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::CREATED,
            "create: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// `PUT /books/{id}` with the token and an optional `If-Match`.
    pub(crate) async fn update_book(
        &self,
        id: i64,
        body: &Value,
        if_match: Option<&str>,
    ) -> anyhow::Result<Response> {
        let mut request = self
            .authorized(Method::PUT, &format!("/books/{id}"))
            .json(body);
        if let Some(if_match) = if_match {
            request = request.header("If-Match", if_match);
        }
        Ok(request.send().await?)
    }

    /// `DELETE /books/{id}` with the token.
    pub(crate) async fn delete_book(&self, id: i64) -> anyhow::Result<Response> {
        Ok(self
            .authorized(Method::DELETE, &format!("/books/{id}"))
            .send()
            .await?)
    }

    /// Rows in the books table.
    pub(crate) async fn book_rows(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM books")
            .fetch_one(&self.db)
            .await?)
    }

    /// Rows in the outbox, sent or not.
    pub(crate) async fn outbox_rows(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.db)
            .await?)
    }

    /// The routing keys of the outbox rows of one book, oldest first.
    pub(crate) async fn outbox_routing_keys(&self, book_id: i64) -> anyhow::Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT routing_key FROM outbox WHERE book_id = $1 ORDER BY id")
                .bind(book_id)
                .fetch_all(&self.db)
                .await?,
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that fails before `stop` must not leave the server running.
        self.shutdown.cancel();
    }
}

/// The settings of a test app: port 0 on loopback, the given database and vhost, [`TOKEN`],
/// and defaults for everything else (the test process's environment is ignored for these).
pub(crate) fn test_settings(database_url: &str, amqp_url: &str) -> anyhow::Result<Settings> {
    let mut settings = Settings::try_parse_from([
        "storagesvc",
        "--http-port",
        "127.0.0.1:0",
        "--rust-log",
        "info",
    ])?;
    settings.database_url = Secret::new(database_url);
    settings.amqp_url = amqp_url.parse().map_err(anyhow::Error::msg)?;
    settings.write_token = Some(Secret::new(TOKEN));
    settings.db_startup_timeout = Duration::from_secs(10);
    settings.shutdown_timeout = Duration::from_secs(5);
    Ok(settings)
}

/// A book request body.
pub(crate) fn book_body(title: &str, author: &str, desc: &str) -> Value {
    json!({ "title": title, "author": author, "desc": desc })
}

/// Asserts that `response` is JSON with a non-empty `error` message; returns the body.
pub(crate) async fn assert_json_error(response: Response, case: &str) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{case}: content-type {content_type:?}"
    );
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|err| panic!("{case}: body: {err}"));
    let message = body["error"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{case}: no error message in {body}");
    body
}

pub(crate) use testkit::eventually;
