//! booksvc itself, the real `Application` with its consumer, for the end-to-end case.

use std::time::Duration;

use anyhow::Context;
use booksvc::cache::{BookCache, LocalCache};
use clap::Parser;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) struct Booksvc {
    pub(crate) address: String,
    pub(crate) cache: BookCache,
    /// Its in-process hit layer.
    pub(crate) local: LocalCache,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Booksvc {
    /// booksvc on port 0 with its consumer on `amqp_url`, reading from `storagesvc_url`, with
    /// a key prefix of its own on the shared Redis.
    pub(crate) async fn spawn(amqp_url: &str, storagesvc_url: &str) -> anyhow::Result<Booksvc> {
        Booksvc::spawn_with(amqp_url, storagesvc_url, &[]).await
    }

    /// [`Booksvc::spawn`] with more command-line settings.
    pub(crate) async fn spawn_with(
        amqp_url: &str,
        storagesvc_url: &str,
        extra: &[&str],
    ) -> anyhow::Result<Booksvc> {
        // One metrics recorder per process: booksvc shares storagesvc's (see booksvc::metrics).
        booksvc::metrics::adopt_recorder(storagesvc::metrics::install_recorder()?);
        let redis = testkit::Redis::shared().await?;
        let prefix = format!("test:{:016x}:", rand::random::<u64>());
        let base = [
            "booksvc",
            "--http-port",
            "127.0.0.1:0",
            "--storagesvc-url",
            storagesvc_url,
            "--redis-url",
            &redis.url(),
            "--cache-prefix",
            &prefix,
            "--amqp-url",
            amqp_url,
            "--consumer-retry-delays",
            "200ms,500ms",
            "--shutdown-timeout",
            "5s",
        ];
        let settings = booksvc::Settings::try_parse_from(base.iter().chain(extra).copied())?;
        let app = booksvc::Application::build(settings).await?;
        let address = format!("http://127.0.0.1:{}", app.port());
        let cache = app.service().path().cache.clone();
        let local = app.service().local().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Ok(Booksvc {
            address,
            cache,
            local,
            shutdown,
            task: Some(task),
        })
    }

    /// `GET <path>`.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(client.get(format!("{}{path}", self.address)).send().await?)
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.context("booksvc panicked")??;
        }
        Ok(())
    }
}

impl Drop for Booksvc {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
