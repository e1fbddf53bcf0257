//! storagesvc, the real one, on a fresh database and the test's vhost: the producer of the
//! events in end-to-end tests.

use std::time::Duration;

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};
use storagesvc::config::Secret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "consumer-test-token";

pub(crate) struct Storage {
    pub(crate) address: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Storage {
    /// storagesvc on a fresh database, publishing to `amqp_url`.
    pub(crate) async fn spawn(amqp_url: &str) -> anyhow::Result<Storage> {
        let database_url = testkit::Postgres::shared().await?.fresh_database().await?;
        let app = storagesvc::Application::build(settings(&database_url, amqp_url)?).await?;
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Ok(Storage {
            address,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            shutdown,
            task: Some(task),
        })
    }

    /// `POST /books`; returns the book's id.
    pub(crate) async fn create(&self, title: &str) -> anyhow::Result<i64> {
        let response = self
            .client
            .post(format!("{}/books", self.address))
            .bearer_auth(TOKEN)
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

    /// `PUT /books/{id}`; returns the new version.
    pub(crate) async fn update(&self, id: i64, title: &str) -> anyhow::Result<i64> {
        let response = self
            .client
            .put(format!("{}/books/{id}", self.address))
            .bearer_auth(TOKEN)
            .json(&book(title))
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::OK,
            "update: {}",
            response.status()
        );
        let updated: Value = response.json().await?;
        updated["version"]
            .as_i64()
            .context("no version in the updated book")
    }

    /// `DELETE /books/{id}`.
    pub(crate) async fn delete(&self, id: i64) -> anyhow::Result<()> {
        let response = self
            .client
            .delete(format!("{}/books/{id}", self.address))
            .bearer_auth(TOKEN)
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
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.context("storagesvc panicked")??;
        }
        Ok(())
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn book(title: &str) -> Value {
    json!({ "title": title, "author": "An Author", "desc": "A description" })
}

/// storagesvc's settings for a test: loopback port 0, the given database and vhost (the
/// test process's environment is ignored for these).
fn settings(database_url: &str, amqp_url: &str) -> anyhow::Result<storagesvc::Settings> {
    use clap::Parser;
    let mut settings =
        storagesvc::Settings::try_parse_from(["storagesvc", "--http-port", "127.0.0.1:0"])?;
    settings.database_url = Secret::new(database_url);
    settings.amqp_url = amqp_url.parse().map_err(anyhow::Error::msg)?;
    settings.write_token = Some(Secret::new(TOKEN));
    settings.db_startup_timeout = Duration::from_secs(10);
    settings.shutdown_timeout = Duration::from_secs(5);
    Ok(settings)
}
