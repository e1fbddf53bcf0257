//! The PostgreSQL pool: its limits, waiting for the server at start-up, and migrations.
//!
//! Start-up policy: the pool is created lazily, then [`wait_until_reachable`] retries with
//! exponential backoff (100 ms doubling to 2 s, jittered) for at most `DB_STARTUP_TIMEOUT`,
//! logging every failed attempt. That rides out "the database container starts a second after
//! us" without hiding a real outage: after the bound, start-up fails and the orchestrator's
//! restart policy takes over. Wrong credentials are not retried.
//!
//! This is the one place storagesvc's own code uses the `backoff` crate (unmaintained,
//! RUSTSEC-2025-0012, kept because it was asked for); `max_elapsed_time` is always set.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use backoff::ExponentialBackoff;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::Settings;

/// Builds the pool without connecting. Every connection gets `statement_timeout`, and a
/// request waits at most `DB_ACQUIRE_TIMEOUT` for a connection (sqlx's 30 s default made
/// every request hang while PostgreSQL was down).
pub fn connect_lazy(settings: &Settings) -> anyhow::Result<PgPool> {
    let statement_timeout = format!("{}ms", settings.db_statement_timeout.as_millis());
    let options = PgConnectOptions::from_str(settings.database_url.expose())
        .context("DATABASE_URL is not a PostgreSQL URL")?
        .application_name("storagesvc")
        .options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.db_pool_size)
        .acquire_timeout(settings.db_acquire_timeout)
        .connect_lazy_with(options))
}

/// Retries connecting with backoff until PostgreSQL answers or `max_wait` has passed.
pub async fn wait_until_reachable(pool: &PgPool, max_wait: Duration) -> anyhow::Result<()> {
    let policy = ExponentialBackoff {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(2),
        max_elapsed_time: Some(max_wait),
        ..ExponentialBackoff::default()
    };
    let attempt = || async {
        try_connect(pool, max_wait).await.map_err(|err| {
            if is_auth_failure(&err) {
                backoff::Error::permanent(err)
            } else {
                backoff::Error::transient(err)
            }
        })
    };
    let log_attempt = |err: sqlx::Error, wait: Duration| {
        tracing::warn!(error = %err, retry_in = ?wait, "PostgreSQL is not reachable yet");
    };
    backoff::future::retry_notify(policy, attempt, log_attempt)
        .await
        .with_context(|| {
            format!("PostgreSQL did not answer within DB_STARTUP_TIMEOUT ({max_wait:?})")
        })
}

/// One direct connection with the pool's options: unlike a pool acquire, which only says
/// "timed out", its error tells why (refused, unknown host, bad password).
async fn try_connect(pool: &PgPool, max_wait: Duration) -> Result<(), sqlx::Error> {
    let options = pool.connect_options();
    match tokio::time::timeout(max_wait, PgConnection::connect_with(&options)).await {
        Ok(connection) => connection?.close().await,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Class 28: invalid authorization; 3D000: no such database. Waiting does not fix either.
fn is_auth_failure(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("28") || code == "3D000"),
        _ => false,
    }
}

/// Applies the embedded migrations (`migrations/`); concurrent instances serialise on
/// sqlx's advisory lock.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!()
        .run(pool)
        .await
        .context("running database migrations")
}
