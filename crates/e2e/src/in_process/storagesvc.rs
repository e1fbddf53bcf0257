//! [`Storagesvc`]: the real storagesvc in this process, and the writes a test makes through it.

use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use reqwest::StatusCode;
use serde_json::{Value, json};
use storagesvc::config::Secret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The write token unless a test sets another.
const WRITE_TOKEN: &str = "in-process-write-token";

type Tweak = Box<dyn FnOnce(&mut storagesvc::Settings) + Send>;

/// How a [`Storagesvc`] is started; [`Storagesvc::options`] gives the defaults.
pub struct StoragesvcOptions {
    database_url: Option<String>,
    amqp_url: Option<String>,
    write_token: String,
    tweak: Tweak,
}

impl StoragesvcOptions {
    /// This database instead of a fresh one on the shared PostgreSQL.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }

    /// Publishes to this broker (a vhost, or a comma-separated list of a cluster's nodes).
    pub fn amqp_url(mut self, url: &str) -> Self {
        self.amqp_url = Some(url.to_owned());
        self
    }

    /// Requires this bearer token for writes.
    pub fn write_token(mut self, token: &str) -> Self {
        self.write_token = token.to_owned();
        self
    }

    /// Changes any other setting before storagesvc is built.
    pub fn settings(
        mut self,
        tweak: impl FnOnce(&mut storagesvc::Settings) + Send + 'static,
    ) -> Self {
        self.tweak = Box::new(tweak);
        self
    }

    pub async fn spawn(self) -> anyhow::Result<Storagesvc> {
        Storagesvc::start(self).await
    }
}

/// A running storagesvc.
pub struct Storagesvc {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    write_token: String,
    /// 10 s timeout, so a hang fails the test instead of stalling it.
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Storagesvc {
    /// Fresh database on the shared PostgreSQL, no broker, default settings.
    pub fn options() -> StoragesvcOptions {
        StoragesvcOptions {
            database_url: None,
            amqp_url: None,
            write_token: WRITE_TOKEN.to_owned(),
            tweak: Box::new(|_| {}),
        }
    }

    async fn start(options: StoragesvcOptions) -> anyhow::Result<Storagesvc> {
        let database_url = match options.database_url {
            Some(url) => url,
            None => testkit::Postgres::shared().await?.fresh_database().await?,
        };
        let amqp_url = match options.amqp_url {
            Some(url) => url,
            None => super::unreachable_amqp_url()?,
        };
        let mut settings = settings(&database_url, &amqp_url, &options.write_token)?;
        (options.tweak)(&mut settings);
        let app = storagesvc::Application::build(settings).await?;
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Ok(Storagesvc {
            address,
            write_token: options.write_token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            shutdown,
            task: Some(task),
        })
    }

    /// The bearer token writes need.
    pub fn write_token(&self) -> &str {
        &self.write_token
    }

    /// `POST /books`; returns the new book's id.
    pub async fn create(&self, title: &str) -> anyhow::Result<i64> {
        let response = self
            .client
            .post(format!("{}/books", self.address))
            .bearer_auth(&self.write_token)
            .json(&book(title))
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::CREATED,
            "create: {}",
            response.status()
        );
        let created: Value = response.json().await?;
        created["id"].as_i64().context("no id in the created book")
    }

    /// `PUT /books/{id}` (the version grows by one); returns the updated book.
    pub async fn update(&self, id: i64, title: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .put(format!("{}/books/{id}", self.address))
            .bearer_auth(&self.write_token)
            .json(&book(title))
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::OK,
            "update: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// `DELETE /books/{id}`.
    pub async fn delete(&self, id: i64) -> anyhow::Result<()> {
        let response = self
            .client
            .delete(format!("{}/books/{id}", self.address))
            .bearer_auth(&self.write_token)
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::NO_CONTENT,
            "delete: {}",
            response.status()
        );
        Ok(())
    }

    /// Shuts storagesvc down and waits until it has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.context("storagesvc panicked")??;
        }
        Ok(())
    }
}

impl Drop for Storagesvc {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The body of every book a test writes: only the title varies.
fn book(title: &str) -> Value {
    json!({ "title": title, "author": "Test Author", "desc": "" })
}

/// storagesvc's settings for a test: loopback port 0, the given database, broker and token,
/// test-sized timeouts. The process environment is ignored for these.
fn settings(
    database_url: &str,
    amqp_url: &str,
    write_token: &str,
) -> anyhow::Result<storagesvc::Settings> {
    let mut settings = storagesvc::Settings::try_parse_from([
        "storagesvc",
        "--http-port",
        "127.0.0.1:0",
        "--rust-log",
        "info",
    ])?;
    settings.database_url = Secret::new(database_url);
    settings.amqp_url = amqp_url.parse().map_err(anyhow::Error::msg)?;
    settings.write_token = Some(Secret::new(write_token));
    settings.db_startup_timeout = Duration::from_secs(10);
    settings.shutdown_timeout = Duration::from_secs(5);
    Ok(settings)
}
