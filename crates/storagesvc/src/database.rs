//! The PostgreSQL pool: its limits, client-side bounds on every step, waiting for the server
//! at start-up, and migrations.
//!
//! Client-side bounds: sqlx has no per-query timeout and sets no TCP keepalive (nor
//! `TCP_USER_TIMEOUT`) on its sockets, and offers no hook to reach the socket. On a silent
//! partition (a host that died without a reset) a query would wait for ever, and so would the
//! ping sqlx sends when a connection goes back to the pool. So every step is bounded here
//! ([`step_timeout`], [`bounded`], [`with_connection`]), and a connection whose step timed
//! out is closed instead of returned.
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
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};

/// Builds the pool for `url` (`DATABASE_URL`) without connecting: at most `pool_size`
/// connections (`DB_POOL_SIZE`), each with `statement_timeout` (`DB_STATEMENT_TIMEOUT`), and a
/// request waits at most `acquire_timeout` (`DB_ACQUIRE_TIMEOUT`) for a connection (sqlx's
/// 30 s default made every request hang while PostgreSQL was down).
pub fn connect_lazy(
    url: &str,
    pool_size: u32,
    acquire_timeout: Duration,
    statement_timeout: Duration,
) -> anyhow::Result<PgPool> {
    let statement_timeout = format!("{}ms", statement_timeout.as_millis());
    let options = PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a PostgreSQL URL")?
        .application_name("storagesvc")
        // PostgreSQL (14+) checks every second that the client of a running statement is
        // still there, and stops the statement if not: a request that gave up and closed its
        // connection (see `with_connection`) leaves no work behind.
        .options([
            ("statement_timeout", statement_timeout.as_str()),
            ("client_connection_check_interval", "1000"),
        ]);
    Ok(PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options))
}

/// The client-side bound on one database step: a second above `DB_STATEMENT_TIMEOUT`, so a
/// server that is there answers first (with its own timeout error). Past it, the link is
/// taken as dead: sqlx sets no TCP keepalive and has no per-query timeout, and on a silent
/// partition an unanswered query would otherwise wait for ever.
pub fn step_timeout(statement_timeout: Duration) -> Duration {
    statement_timeout.saturating_add(Duration::from_secs(1))
}

/// Runs one database step for at most `limit`; expiry is an I/O error ("timed out").
pub async fn bounded<T>(
    limit: Duration,
    step: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(limit, step)
        .await
        .unwrap_or_else(|_| Err(timed_out(limit)))
}

/// Runs `work` on a pooled connection for at most `limit`, waiting for the connection
/// included.
///
/// A connection whose work timed out is closed, not returned to the pool: sqlx pings every
/// returned connection, and on a silent link that ping never ends, so the pool would lose
/// the slot for good. Closing it frees the slot; the pool opens a new connection when needed.
pub async fn with_connection<T, E: From<sqlx::Error>>(
    pool: &PgPool,
    limit: Duration,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E> {
    let (mut connection, left) = acquire_within(pool, limit).await?;
    let outcome = tokio::time::timeout(left, work(&mut connection)).await;
    settle(connection, outcome, limit)
}

/// Waits at most `limit` for a pooled connection; returns it with the time left of `limit`
/// for the work on it. Pair with [`settle`] (or use [`with_connection`]).
pub async fn acquire_within(
    pool: &PgPool,
    limit: Duration,
) -> Result<(PoolConnection<Postgres>, Duration), sqlx::Error> {
    let started = std::time::Instant::now();
    let connection = tokio::time::timeout(limit, pool.acquire())
        .await
        .map_err(|_| timed_out(limit))??;
    Ok((connection, limit.saturating_sub(started.elapsed())))
}

/// The result of work on `connection` bounded by `tokio::time::timeout`; if the bound
/// expired, the connection is closed instead of returned (see [`with_connection`]).
pub fn settle<T, E: From<sqlx::Error>>(
    connection: PoolConnection<Postgres>,
    outcome: Result<Result<T, E>, tokio::time::error::Elapsed>,
    limit: Duration,
) -> Result<T, E> {
    match outcome {
        Ok(result) => result,
        Err(_) => {
            drop(connection.detach());
            Err(timed_out(limit).into())
        }
    }
}

/// Lowers the current transaction's `statement_timeout` to `limit` (at least 1 ms), so the
/// server itself stops a statement the caller will no longer wait for.
pub async fn limit_statements(tx: &mut PgConnection, limit: Duration) -> Result<(), sqlx::Error> {
    let millis = limit.as_millis().max(1);
    // `set_config(.., true)` is `SET LOCAL` with a bind parameter (SET itself takes none).
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(format!("{millis}ms"))
        .execute(tx)
        .await?;
    Ok(())
}

/// Whether `error` is a step that got no answer within its bound.
pub fn is_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

fn timed_out(limit: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("PostgreSQL did not answer within {limit:?}"),
    ))
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
