//! [`Booksvc`]: the real booksvc in this process, with handles on what it holds.

use std::time::Duration;

use anyhow::Context;
use booksvc::cache::{BookCache, LocalCache};
use booksvc::service::BookService;
use clap::Parser;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Tweak = Box<dyn FnOnce(&mut booksvc::Settings) + Send>;

/// How a [`Booksvc`] is started; [`Booksvc::options`] gives the defaults.
pub struct BooksvcOptions {
    storagesvc_url: String,
    redis_url: Option<String>,
    amqp_url: Option<String>,
    args: Vec<String>,
    tweak: Tweak,
}

impl BooksvcOptions {
    /// This Redis instead of the shared one (a private server, or one that never answers).
    pub fn redis_url(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    /// Runs the consumer on this broker (a vhost, or a comma-separated list of a cluster's
    /// nodes), with test-sized retry delays: 200 ms, then 500 ms (change them through
    /// [`settings`](Self::settings)). Without a broker the consumer is off: it would otherwise
    /// connect to the machine's RabbitMQ on the default `AMQP_URL`.
    pub fn consumer(mut self, url: &str) -> Self {
        self.amqp_url = Some(url.to_owned());
        self
    }

    /// More command-line settings (`--name value`), parsed as booksvc parses its own.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// Changes settings after parsing, before booksvc is built.
    pub fn settings(mut self, tweak: impl FnOnce(&mut booksvc::Settings) + Send + 'static) -> Self {
        self.tweak = Box::new(tweak);
        self
    }

    pub async fn spawn(self) -> anyhow::Result<Booksvc> {
        Booksvc::start(self).await
    }
}

/// A running booksvc.
pub struct Booksvc {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The settings it was built with (its cache prefix among them).
    pub settings: booksvc::Settings,
    /// Its read path (the breaker, the cache it fills).
    pub service: BookService,
    /// The Redis cache it reads and its consumer writes.
    pub cache: BookCache,
    /// Its in-process hit layer.
    pub local: LocalCache,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Booksvc {
    /// booksvc reading from `storagesvc_url`, on the shared Redis under a key prefix of its
    /// own, consumer off, default settings otherwise.
    pub fn options(storagesvc_url: &str) -> BooksvcOptions {
        BooksvcOptions {
            storagesvc_url: storagesvc_url.to_owned(),
            redis_url: None,
            amqp_url: None,
            args: Vec::new(),
            tweak: Box::new(|_| {}),
        }
    }

    async fn start(options: BooksvcOptions) -> anyhow::Result<Booksvc> {
        super::share_metrics_recorder()?;
        let redis_url = match &options.redis_url {
            Some(url) => url.clone(),
            None => testkit::Redis::shared().await?.url(),
        };
        let mut settings = settings(&options, &redis_url)?;
        (options.tweak)(&mut settings);
        let app = booksvc::Application::build(settings.clone()).await?;
        let address = format!("http://127.0.0.1:{}", app.port());
        let service = app.service().clone();
        let cache = service.path().cache.clone();
        let local = service.local().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Ok(Booksvc {
            address,
            settings,
            service,
            cache,
            local,
            shutdown,
            task: Some(task),
        })
    }

    /// `GET <path>`, on a connection of its own (10 s timeout).
    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(client.get(format!("{}{path}", self.address)).send().await?)
    }

    /// Starts the shutdown (readiness turns 503) without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts booksvc down and waits until it has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
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

/// booksvc's settings for a test: loopback port 0, the given storagesvc, Redis and broker, a
/// random key prefix, then the caller's arguments. The process environment is ignored for
/// these (clap reads a variable only for an argument not given).
fn settings(options: &BooksvcOptions, redis_url: &str) -> anyhow::Result<booksvc::Settings> {
    let prefix = format!("test:{:016x}:", rand::random::<u64>());
    let mut args = vec![
        "booksvc",
        "--http-port",
        "127.0.0.1:0",
        "--storagesvc-url",
        &options.storagesvc_url,
        "--redis-url",
        redis_url,
        "--cache-prefix",
        &prefix,
        "--rust-log",
        "info",
        "--shutdown-timeout",
        "5s",
    ];
    match &options.amqp_url {
        Some(url) => args.extend(["--amqp-url", url, "--consumer-retry-delays", "200ms,500ms"]),
        None => args.extend(["--consumer-enabled", "false"]),
    }
    args.extend(options.args.iter().map(String::as_str));
    Ok(booksvc::Settings::try_parse_from(args)?)
}
