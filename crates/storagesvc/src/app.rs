//! `Application`: storagesvc assembled from its settings, and its life until shutdown.
//!
//! [`Application::build`] does everything that can fail at start-up (database reachable,
//! migrated, seeded; port bound) so a bad start fails before serving anything.
//! [`Application::run_until_stopped`] runs the HTTP server and the outbox relay until the
//! caller's token is cancelled, then shuts down in order:
//! 1. readiness answers 503 at once (while requests are still served);
//! 2. after `SHUTDOWN_DRAIN_DELAY` (time for load balancers to notice), the server stops
//!    accepting, in-flight requests finish, the relay stops after its batch in hand;
//! 3. the pool closes. Steps 2–3 are bounded by `SHUTDOWN_TIMEOUT`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::relay::OutboxRelay;
use crate::serve::{self, ConnectionLimits, Stopping};
use crate::{database, metrics, seed};

/// How long a readiness probe waits for PostgreSQL.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// A built, not yet running, storagesvc.
pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    relay: OutboxRelay,
    limits: ConnectionLimits,
    drain_delay: Duration,
    shutdown_timeout: Duration,
}

impl Application {
    /// Connects, migrates, seeds and binds; see the module docs.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let metrics = metrics::install_recorder().context("installing the metrics recorder")?;
        let pool = database::connect_lazy(
            settings.database_url.expose(),
            settings.db_pool_size,
            settings.db_acquire_timeout,
            settings.db_statement_timeout,
        )?;
        database::wait_until_reachable(&pool, settings.db_startup_timeout).await?;
        database::migrate(&pool).await?;
        let seeded = seed::seed_if_empty(&pool)
            .await
            .context("seeding the books")?;
        if seeded > 0 {
            tracing::info!(books = seeded, "seeded an empty books table");
        }

        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding HTTP_PORT {}", settings.http_addr))?;
        let port = listener.local_addr()?.port();
        let relay = OutboxRelay::new(pool.clone(), settings.relay_settings());
        let state = AppState {
            pool,
            write_token: settings.write_token.clone().map(Arc::new),
            body_limit: settings.body_limit,
            relay: relay.status(),
            shutdown: CancellationToken::new(),
            metrics,
            ready_timeout: READY_TIMEOUT,
            postgres_check: Default::default(),
            db_timeout: database::step_timeout(settings.db_statement_timeout),
        };
        if state.write_token.is_none() {
            tracing::warn!("STORAGESVC_WRITE_TOKEN is not set: every write will be refused");
        }
        Ok(Application {
            listener,
            port,
            state,
            relay,
            limits: settings.connection_limits(),
            drain_delay: settings.shutdown_drain_delay,
            shutdown_timeout: settings.shutdown_timeout,
        })
    }

    /// The port the server listens on (useful when `HTTP_PORT` was 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's pool (tests inspect the database through it).
    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Serves until `shutdown` is cancelled, then shuts down in order (module docs).
    ///
    /// Returns an error only if the server itself fails; a shutdown that overruns
    /// `SHUTDOWN_TIMEOUT` is logged and abandoned, not an error.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop_serving = CancellationToken::new();
        let pool = self.state.pool.clone();
        let not_ready = self.state.shutdown.clone();
        let relay = tokio::spawn(self.relay.run(stop_serving.clone()));
        let mut server = spawn_server(self.listener, self.state, self.limits, stop_serving.clone());
        tracing::info!(port = self.port, "storagesvc is serving");

        tokio::select! {
            () = shutdown.cancelled() => {}
            result = &mut server => {
                stop_serving.cancel();
                return result.context("the HTTP server task failed")?;
            }
        }
        not_ready.cancel();
        tracing::info!(drain_delay = ?self.drain_delay, "shutdown started: readiness is 503");
        let stopped = tokio::time::timeout(self.shutdown_timeout, async {
            tokio::time::sleep(self.drain_delay).await;
            stop_serving.cancel();
            let (server, relay) = tokio::join!(server, relay);
            pool.close().await;
            (server, relay)
        })
        .await;
        report_shutdown(stopped)
    }
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

type Stopped = (
    Result<anyhow::Result<()>, tokio::task::JoinError>,
    Result<(), tokio::task::JoinError>,
);

fn report_shutdown(stopped: Result<Stopped, tokio::time::error::Elapsed>) -> anyhow::Result<()> {
    let Ok((server, relay)) = stopped else {
        tracing::warn!("SHUTDOWN_TIMEOUT elapsed: abandoning requests and work still in flight");
        return Ok(());
    };
    if let Err(err) = relay {
        tracing::error!(error = %err, "the outbox relay task failed");
    }
    server.context("the HTTP server task failed")??;
    tracing::info!("storagesvc stopped cleanly");
    Ok(())
}

/// The service as its binary runs it: settings from the environment, logging, build, serve
/// until SIGTERM/SIGINT. `main.rs` and the no-Docker stack both call this, so the start-up
/// sequence is written once.
pub async fn run_from_env() -> std::process::ExitCode {
    let settings = Settings::load_or_exit();
    let telemetry = match crate::telemetry::init(&settings.rust_log, settings.log_format) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("storagesvc: cannot initialise logging: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = build_and_run(settings).await;
    // The batched spans of the last requests go out before the process ends.
    if let Err(error) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
        eprintln!("storagesvc: flushing the spans failed: {error}");
    }
    code
}

async fn build_and_run(settings: Settings) -> std::process::ExitCode {
    use std::process::ExitCode;
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "storagesvc failed to start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match app.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "storagesvc stopped with an error"
            );
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
