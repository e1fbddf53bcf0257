//! `Application`: booksvc assembled from its settings, and its life until shutdown.
//!
//! [`Application::build`] does everything that can fail at start-up (bad URLs, port bound)
//! and nothing that waits for a dependency: booksvc starts, and answers what it can, while
//! storagesvc or Redis is down. [`Application::run_until_stopped`] runs the HTTP server, the
//! breaker's active probe, the event consumer (unless `CONSUMER_ENABLED=false`) and the local
//! hit layer's invalidation subscription (unless the layer is off) until the caller's token
//! is cancelled, then shuts down in order:
//! 1. readiness answers 503 at once (while requests are still served), and the consumer stops
//!    taking deliveries, acks those it finished and closes its broker connection; the local
//!    layer is bypassed and its subscription closed;
//! 2. after `SHUTDOWN_DRAIN_DELAY` (time for load balancers to notice), the server stops
//!    accepting and in-flight requests finish (each is bounded by `REQUEST_BUDGET`), the
//!    probe stops. Step 2 is bounded by `SHUTDOWN_TIMEOUT`.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::breaker::CircuitBreaker;
use crate::cache::{BookCache, Invalidator, LocalCache};
use crate::client::StorageClient;
use crate::config::Settings;
use crate::consumer::{CheckedCache, Consumer, ConsumerStatus};
use crate::http::{self, AppState};
use crate::metrics;
use crate::probe::ActiveProbe;
use crate::serve::{self, ConnectionLimits, Stopping};
use crate::service::{BookService, ReadPath};

/// A built, not yet running, booksvc.
pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    probe: ActiveProbe,
    consumer: Option<Consumer<CheckedCache>>,
    invalidator: Option<Invalidator>,
    limits: ConnectionLimits,
    drain_delay: Duration,
    shutdown_timeout: Duration,
}

impl Application {
    /// Builds the read path and binds the port; see the module docs.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let metrics = metrics::install_recorder().context("installing the metrics recorder")?;
        let local = LocalCache::new(settings.local_cache_settings());
        let invalidator = local
            .is_enabled()
            .then(|| Invalidator::new(settings.invalidation_settings(), local.clone()));
        let service = BookService::with_local(read_path(&settings)?, local);
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding HTTP_PORT {}", settings.http_addr))?;
        let port = listener.local_addr()?.port();
        let path = service.path();
        let ready_timeout = http::ready_timeout(settings.storagesvc_timeout);
        let probe = ActiveProbe::new(path.breaker.clone(), path.client.clone(), ready_timeout);
        // The consumer writes through the read path's cache: one connection, one version rule.
        let consumer = settings.consumer_settings().map(|consumer| {
            let sink = CheckedCache::new(path.cache.clone(), path.client.clone());
            Consumer::new(consumer, sink)
        });
        let state = AppState {
            service,
            metrics,
            shutdown: CancellationToken::new(),
            ready_timeout,
            consumer: consumer.as_ref().map(Consumer::status),
        };
        Ok(Application {
            listener,
            port,
            state,
            probe,
            consumer,
            invalidator,
            limits: settings.connection_limits(),
            drain_delay: settings.shutdown_drain_delay,
            shutdown_timeout: settings.shutdown_timeout,
        })
    }

    /// The port the server listens on (useful when `HTTP_PORT` was 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The read path (tests look at the breaker and the cache through it).
    pub fn service(&self) -> &BookService {
        &self.state.service
    }

    /// The event consumer's state, unless it is disabled.
    pub fn consumer_status(&self) -> Option<ConsumerStatus> {
        self.state.consumer.clone()
    }

    /// Serves until `shutdown` is cancelled, then shuts down in order (module docs).
    ///
    /// Returns an error only if the server itself fails; a shutdown that overruns
    /// `SHUTDOWN_TIMEOUT` is logged and abandoned, not an error.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop_serving = CancellationToken::new();
        let not_ready = self.state.shutdown.clone();
        let probe = tokio::spawn(self.probe.run(stop_serving.clone()));
        // The consumer has its own token: it stops at once when shutdown starts, not after
        // the drain delay, so it takes no new work while the process is on its way out.
        let stop_consuming = CancellationToken::new();
        let subscriptions = spawn_subscriptions(self.consumer, self.invalidator, &stop_consuming);
        let mut server = spawn_server(self.listener, self.state, self.limits, stop_serving.clone());
        tracing::info!(port = self.port, "booksvc is serving");

        tokio::select! {
            () = shutdown.cancelled() => {}
            result = &mut server => {
                stop_serving.cancel();
                stop_consuming.cancel();
                return result.context("the HTTP server task failed")?;
            }
        }
        not_ready.cancel();
        stop_consuming.cancel();
        tracing::info!(drain_delay = ?self.drain_delay, "shutdown started: readiness is 503");
        let stopped = tokio::time::timeout(self.shutdown_timeout, async {
            tokio::time::sleep(self.drain_delay).await;
            stop_serving.cancel();
            let (server, _probe, ()) = tokio::join!(server, probe, finished(subscriptions));
            server
        })
        .await;
        let Ok(server) = stopped else {
            tracing::warn!("SHUTDOWN_TIMEOUT elapsed: abandoning requests still in flight");
            return Ok(());
        };
        server.context("the HTTP server task failed")??;
        tracing::info!("booksvc stopped cleanly");
        Ok(())
    }
}

/// The event consumer and the local layer's subscription, whichever are on: on one broker
/// connection when both are (lapin's buffers cost 8 MiB a connection; see `events::session`'s
/// `Both`).
fn spawn_subscriptions(
    consumer: Option<Consumer<CheckedCache>>,
    invalidator: Option<Invalidator>,
    stop: &CancellationToken,
) -> Option<JoinHandle<()>> {
    let stop = stop.clone();
    match (consumer, invalidator) {
        (Some(consumer), Some(invalidator)) => Some(tokio::spawn(async move {
            consumer.run_with(&invalidator, stop).await;
            invalidator.stopped();
        })),
        (Some(consumer), None) => Some(tokio::spawn(consumer.run(stop))),
        (None, Some(invalidator)) => Some(tokio::spawn(invalidator.run(stop))),
        (None, None) => None,
    }
}

/// Waits for a spawned task, if there is one.
async fn finished(task: Option<JoinHandle<()>>) {
    if let Some(task) = task {
        if let Err(error) = task.await {
            tracing::error!(%error, "an event subscription task failed");
        }
    }
}

/// The read path's parts, from the settings. Nothing here connects: the cache connects on
/// first use, the client per request.
fn read_path(settings: &Settings) -> anyhow::Result<ReadPath> {
    let client = StorageClient::new(&settings.storagesvc_url, settings.storagesvc_timeout)
        .map_err(anyhow::Error::msg)
        .context("STORAGESVC_URL")?;
    let cache = BookCache::new(settings.cache_settings()).context("the Redis cache")?;
    Ok(ReadPath {
        cache,
        client,
        breaker: CircuitBreaker::new(settings.breaker_settings()),
        retry: settings.retry_settings(),
        fresh_ttl: settings.cache_fresh_ttl,
        budget: settings.request_budget,
        redis_timeout: settings.redis_timeout,
        stale_soft_timeout: settings.stale_soft_timeout,
    })
}

fn spawn_server(
    listener: TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let stopping = Stopping {
        draining: state.shutdown.clone(),
        stop,
    };
    let router = http::router(state);
    tokio::spawn(async move {
        serve::serve(listener, router, limits, stopping).await;
        Ok(())
    })
}

/// The service as its binary runs it: settings from the environment, logging, build, serve
/// until SIGTERM/SIGINT. `main.rs` and the no-Docker stack both call this, so the start-up
/// sequence is written once.
pub async fn run_from_env() -> std::process::ExitCode {
    let settings = Settings::load_or_exit();
    let telemetry = match crate::telemetry::init(&settings.rust_log, settings.log_format) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("booksvc: cannot initialise logging: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = build_and_run(settings).await;
    // The batched spans of the last requests go out before the process ends.
    if let Err(error) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
        eprintln!("booksvc: flushing the spans failed: {error}");
    }
    code
}

async fn build_and_run(settings: Settings) -> std::process::ExitCode {
    use std::process::ExitCode;
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "booksvc failed to start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match app.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "booksvc stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::select! {
        () = signal_or_never("SIGINT", tokio::signal::ctrl_c()) => {}
        () = sigterm() => {}
    }
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}

#[cfg(unix)]
async fn sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            signal_or_never("SIGTERM", async { sigterm.recv().await.ok_or(()) }).await
        }
        Err(err) => signal_or_never("SIGTERM", async { Err::<(), _>(err) }).await,
    }
}

#[cfg(not(unix))]
async fn sigterm() {
    std::future::pending::<()>().await;
}

/// Completes when `listen` reports the signal; if listening fails, logs it and never
/// completes, so the other signal can still stop the service.
async fn signal_or_never<E: std::fmt::Debug>(
    name: &str,
    listen: impl std::future::Future<Output = Result<(), E>>,
) {
    if let Err(err) = listen.await {
        tracing::warn!(signal = name, error = ?err, "cannot listen for this signal");
        std::future::pending::<()>().await;
    }
}
