//! The harness: `TestStack::spawn()` = real PostgreSQL + storagesvc + Redis + booksvc.
//!
//! storagesvc and booksvc run in this process, from the end-to-end harness
//! ([`e2e::in_process`]); PostgreSQL and Redis are real servers from `testkit` (shared by the
//! test binary unless a test asks for private ones it may stop). Between booksvc and
//! storagesvc sits a [`CountingProxy`], so a test can count the calls that reached storagesvc
//! and hold storagesvc's answers back to make races and hangs happen on purpose.
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

pub(crate) use crate::proxy::CountingProxy;

/// The generous bound for "answered within the budget": twice the default `REQUEST_BUDGET`
/// (1 s), never a tight timing assert.
pub(crate) const WITHIN_BUDGET: Duration = Duration::from_secs(2);

/// Which servers a stack gets, and how booksvc is configured.
pub(crate) struct StackOptions {
    private_postgres: bool,
    private_redis: bool,
    events: bool,
    redis_url: Option<String>,
    tweak: Box<dyn FnOnce(&mut booksvc::Settings) + Send>,
}

impl StackOptions {
    /// A private PostgreSQL the test may stop and start again.
    pub(crate) fn private_postgres(mut self) -> Self {
        self.private_postgres = true;
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

/// A running stack and what a test needs to drive it and look behind it.
pub(crate) struct TestStack {
    /// booksvc, `http://127.0.0.1:<port>`.
    pub(crate) address: String,
    /// storagesvc itself (bypassing the proxy), for writes.
    pub(crate) storagesvc: String,
    /// Counts (and can hold) what booksvc sends to storagesvc.
    pub(crate) proxy: CountingProxy,
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
    storagesvc_app: Storagesvc,
    /// Set when the test asked for a private server.
    pub(crate) postgres: Option<testkit::Postgres>,
    pub(crate) redis: Option<testkit::Redis>,
}

impl TestStack {
    /// The whole stack on the test binary's shared servers, with default settings.
    pub(crate) async fn spawn() -> anyhow::Result<TestStack> {
        TestStack::options().spawn().await
    }

    pub(crate) fn options() -> StackOptions {
        StackOptions {
            private_postgres: false,
            private_redis: false,
            events: false,
            redis_url: None,
            tweak: Box::new(|_| {}),
        }
    }

    async fn start(options: StackOptions) -> anyhow::Result<TestStack> {
        testkit::init_test_logging();
        let postgres = match options.private_postgres {
            true => Some(testkit::Postgres::start().await?),
            false => None,
        };
        let redis = match options.private_redis {
            true => Some(testkit::Redis::start().await?),
            false => None,
        };
        let database_url = match &postgres {
            Some(private) => private.fresh_database().await?,
            None => testkit::Postgres::shared().await?.fresh_database().await?,
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
        let mut storagesvc = Storagesvc::options()
            .database_url(&database_url)
            .settings(|settings| settings.shutdown_timeout = Duration::from_secs(2));
        if let Some(url) = &amqp_url {
            storagesvc = storagesvc.amqp_url(url);
        }
        let storagesvc = storagesvc.spawn().await?;
        let proxy = CountingProxy::start(&storagesvc.address).await?;
        // Most of these tests are about the read path: booksvc's consumer stays off (no AMQP
        // URL) unless the test asked for events; the consumer has its own tests.
        let mut booksvc = Booksvc::options(&proxy.address)
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
            storagesvc: storagesvc.address.clone(),
            proxy,
            cache,
            redis_url,
            service: booksvc.service.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            booksvc,
            storagesvc_app: storagesvc,
            postgres,
            redis,
        })
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

    /// Creates a book in storagesvc; returns its id.
    pub(crate) async fn create_book(&self, title: &str) -> anyhow::Result<i64> {
        self.storagesvc_app.create(title).await
    }

    /// Renames a book in storagesvc (its version grows by one).
    pub(crate) async fn rename_book(&self, id: i64, title: &str) -> anyhow::Result<Value> {
        self.storagesvc_app.update(id, title).await
    }

    /// Deletes a book in storagesvc.
    pub(crate) async fn delete_book(&self, id: i64) -> anyhow::Result<()> {
        self.storagesvc_app.delete(id).await
    }

    /// The private PostgreSQL (panics if the test did not ask for one: a test bug).
    pub(crate) fn private_postgres(&self) -> &testkit::Postgres {
        self.postgres
            .as_ref()
            .expect("the stack was spawned with private_postgres()")
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
