//! The harness: `TestStack::spawn()` = booksvc + Redis + what booksvc reads from.
//!
//! booksvc runs in this process, from the end-to-end harness ([`e2e::in_process`]); Redis is
//! a real server from `testkit` (shared by the test binary unless a test asks for a private
//! one it may stop). What booksvc reads from is one of two:
//!
//! - the stand-in ([`StackOptions::standin`], [`crate::standin`]): a small HTTP server in
//!   this process that serves storagesvc's read contract from books in memory, and answers
//!   as the test scripts it (normally, 404, 503, 500, never, late), counting calls and holding
//!   answers back on demand. The tests of booksvc's own behaviour against a failing or slow
//!   storagesvc use it: they fail only for booksvc's reasons;
//! - the real storagesvc (the default), in this process too, on real PostgreSQL, for what
//!   depends on the two agreeing: the same bytes, rebuilding from its list, its events.
//!
//! storagesvc gets an AMQP URL nothing listens on: its outbox relay keeps retrying in the
//! background, which the read path never notices (events are the consumer issue's business).
//! A test that needs events asks for them ([`StackOptions::events`]): then storagesvc's relay
//! publishes to a fresh vhost of the shared RabbitMQ and booksvc's real consumer applies them.

use std::time::Duration;

use booksvc::breaker::State as BreakerState;
use booksvc::cache::{BookCache, CacheSettings};
use booksvc::service::BookService;
use e2e::in_process::{Booksvc, Storagesvc};
use reqwest::{Response, StatusCode};
use serde_json::Value;

pub(crate) use crate::standin::{Answer, Standin};

/// The generous bound for "answered within the budget": twice the default `REQUEST_BUDGET`
/// (1 s), never a tight timing assert.
pub(crate) const WITHIN_BUDGET: Duration = Duration::from_secs(2);

/// Which servers a stack gets, and how booksvc is configured.
pub(crate) struct StackOptions {
    standin: bool,
    private_redis: bool,
    events: bool,
    redis_url: Option<String>,
    tweak: Box<dyn FnOnce(&mut booksvc::Settings) + Send>,
}

impl StackOptions {
    /// booksvc reads from the stand-in ([`Standin`]) instead of the real storagesvc.
    pub(crate) fn standin(mut self) -> Self {
        self.standin = true;
        self
    }

    /// A private Redis the test may stop and start again.
    pub(crate) fn private_redis(mut self) -> Self {
        self.private_redis = true;
        self
    }

    /// Events flow: storagesvc publishes to a fresh vhost and booksvc's consumer applies them.
    pub(crate) fn events(mut self) -> Self {
        self.events = true;
        self
    }

    /// booksvc talks to this Redis URL instead (e.g. a server that never answers).
    pub(crate) fn redis_url(mut self, url: String) -> Self {
        self.redis_url = Some(url);
        self
    }

    /// Changes booksvc's settings before it is built.
    pub(crate) fn booksvc(
        mut self,
        tweak: impl FnOnce(&mut booksvc::Settings) + Send + 'static,
    ) -> Self {
        self.tweak = Box::new(tweak);
        self
    }

    pub(crate) async fn spawn(self) -> anyhow::Result<TestStack> {
        TestStack::start(self).await
    }
}

/// What booksvc reads from.
enum Upstream {
    Storagesvc(Storagesvc),
    Standin(Standin),
}

impl Upstream {
    /// The real storagesvc on a fresh database of the shared PostgreSQL.
    async fn storagesvc(amqp_url: Option<&String>) -> anyhow::Result<Upstream> {
        let database_url = testkit::Postgres::shared().await?.fresh_database().await?;
        let mut storagesvc = Storagesvc::options()
            .database_url(&database_url)
            .settings(|settings| settings.shutdown_timeout = Duration::from_secs(2));
        if let Some(url) = amqp_url {
            storagesvc = storagesvc.amqp_url(url);
        }
        Ok(Upstream::Storagesvc(storagesvc.spawn().await?))
    }

    /// `http://127.0.0.1:<port>`: what booksvc reads from.
    fn address(&self) -> &str {
        match self {
            Upstream::Storagesvc(app) => &app.address,
            Upstream::Standin(standin) => &standin.address,
        }
    }
}

/// A running stack and what a test needs to drive it and look behind it.
pub(crate) struct TestStack {
    /// booksvc, `http://127.0.0.1:<port>`.
    pub(crate) address: String,
    /// What booksvc reads from: the real storagesvc (for writes and direct reads too) or the
    /// stand-in.
    pub(crate) storagesvc: String,
    /// The cache booksvc uses (same Redis and prefix), to inspect it or play the consumer.
    pub(crate) cache: BookCache,
    /// The Redis booksvc uses.
    pub(crate) redis_url: String,
    /// booksvc's read path, to look at its breaker.
    pub(crate) service: BookService,
    /// A plain HTTP client (10 s timeout so a hang fails the test instead of stalling it).
    pub(crate) client: reqwest::Client,
    // The services come before the servers: dropping a stack stops them (a test that fails
    // before `stop` must not leave them running) before it stops any private server.
    booksvc: Booksvc,
    upstream: Upstream,
    /// Set when the test asked for a private Redis.
    pub(crate) redis: Option<testkit::Redis>,
}

impl TestStack {
    /// The whole stack on the test binary's shared servers, with default settings.
    pub(crate) async fn spawn() -> anyhow::Result<TestStack> {
        TestStack::options().spawn().await
    }

    /// booksvc in front of the stand-in, with default settings.
    pub(crate) async fn spawn_standin() -> anyhow::Result<TestStack> {
        TestStack::options().standin().spawn().await
    }

    pub(crate) fn options() -> StackOptions {
        StackOptions {
            standin: false,
            private_redis: false,
            events: false,
            redis_url: None,
            tweak: Box::new(|_| {}),
        }
    }

    async fn start(options: StackOptions) -> anyhow::Result<TestStack> {
        testkit::init_test_logging();
        anyhow::ensure!(
            !(options.standin && options.events),
            "events come from the real storagesvc's outbox, not from the stand-in"
        );
        let redis = match options.private_redis {
            true => Some(testkit::Redis::start().await?),
            false => None,
        };
        let redis_url = match (&options.redis_url, &redis) {
            (Some(url), _) => url.clone(),
            (None, Some(private)) => private.url(),
            (None, None) => testkit::Redis::shared().await?.url(),
        };
        let amqp_url = match options.events {
            true => Some(testkit::RabbitMq::shared().await?.fresh_vhost().await?),
            false => None,
        };
        let upstream = match options.standin {
            true => Upstream::Standin(Standin::start().await?),
            false => Upstream::storagesvc(amqp_url.as_ref()).await?,
        };
        // Most of these tests are about the read path: booksvc's consumer stays off (no AMQP
        // URL) unless the test asked for events; the consumer has its own tests.
        let mut booksvc = Booksvc::options(upstream.address())
            .redis_url(&redis_url)
            .settings(options.tweak);
        if let Some(url) = &amqp_url {
            booksvc = booksvc.consumer(url);
        }
        let booksvc = booksvc.spawn().await?;
        let cache = BookCache::new(CacheSettings {
            url: redis_url.clone().into(),
            ..booksvc.settings.cache_settings()
        })?;
        Ok(TestStack {
            address: booksvc.address.clone(),
            storagesvc: upstream.address().to_owned(),
            cache,
            redis_url,
            service: booksvc.service.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            booksvc,
            upstream,
            redis,
        })
    }

    /// The stand-in booksvc reads from (panics if the stack has the real storagesvc: a test
    /// bug).
    pub(crate) fn standin(&self) -> &Standin {
        match &self.upstream {
            Upstream::Standin(standin) => standin,
            Upstream::Storagesvc(_) => panic!("the stack was spawned without standin()"),
        }
    }

    /// `GET <path>` on booksvc.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Response> {
        let url = format!("{}{path}", self.address);
        Ok(self.client.get(url).send().await?)
    }

    /// `GET /books/{id}` on booksvc.
    pub(crate) async fn get_book(&self, id: i64) -> anyhow::Result<Response> {
        self.get(&format!("/books/{id}")).await
    }

    /// booksvc's key prefix in Redis (its `CACHE_PREFIX`).
    pub(crate) fn cache_prefix(&self) -> &str {
        &self.booksvc.settings.cache_prefix
    }

    /// booksvc's breaker state now.
    pub(crate) fn breaker(&self) -> BreakerState {
        self.service.path().breaker.state()
    }

    /// booksvc's readiness: status code and body.
    pub(crate) async fn ready(&self) -> anyhow::Result<(StatusCode, Value)> {
        let response = self.get("/healthz/ready").await?;
        Ok((response.status(), response.json().await?))
    }

    /// Creates a book in storagesvc (or the stand-in); returns its id.
    pub(crate) async fn create_book(&self, title: &str) -> anyhow::Result<i64> {
        match &self.upstream {
            Upstream::Storagesvc(app) => app.create(title).await,
            Upstream::Standin(standin) => Ok(standin.create(title)),
        }
    }

    /// Renames a book in storagesvc or the stand-in (its version grows by one).
    pub(crate) async fn rename_book(&self, id: i64, title: &str) -> anyhow::Result<Value> {
        match &self.upstream {
            Upstream::Storagesvc(app) => app.update(id, title).await,
            Upstream::Standin(standin) => standin.rename(id, title),
        }
    }

    /// Deletes a book in storagesvc or the stand-in.
    pub(crate) async fn delete_book(&self, id: i64) -> anyhow::Result<()> {
        match &self.upstream {
            Upstream::Storagesvc(app) => app.delete(id).await,
            Upstream::Standin(standin) => standin.delete(id),
        }
    }

    /// The private Redis (panics if the test did not ask for one: a test bug).
    pub(crate) fn private_redis(&self) -> &testkit::Redis {
        self.redis
            .as_ref()
            .expect("the stack was spawned with private_redis()")
    }

    /// Starts booksvc's shutdown (readiness turns 503) without waiting for it.
    pub(crate) fn begin_shutdown(&self) {
        self.booksvc.begin_shutdown();
    }

    /// Shuts booksvc down and waits until it has stopped.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.booksvc.stop().await
    }
}

/// A response's header as text.
pub(crate) fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Asserts that `response` has `status` and is JSON with a non-empty `error`; returns the body.
pub(crate) async fn assert_json_error(response: Response, status: StatusCode, case: &str) -> Value {
    assert_eq!(response.status(), status, "{case}: status");
    let content_type = header(&response, "content-type").unwrap_or_default();
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
