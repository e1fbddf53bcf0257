//! Wakes the relay when a write commits: LISTEN on [`NOTIFY_CHANNEL`], forward to a `Notify`.
//!
//! The listener runs as its own task so that the relay's wait never cancels a half-read
//! PostgreSQL message. It has its own one-connection pool (built from the service pool's
//! options), so it never takes a connection from request handlers. NOTIFY is not stored: after
//! any (re)connect it wakes the relay anyway, since notifications may have been missed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::NOTIFY_CHANNEL;
use events::{Outage, ReconnectBackoff};

/// How long connecting the listener may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Forwards every commit notification to `wake` until `shutdown`, reconnecting with backoff.
pub(super) async fn listen_for_commits(
    pool: PgPool,
    wake: Arc<Notify>,
    reconnect_max: Duration,
    shutdown: CancellationToken,
) {
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut backoff = ReconnectBackoff::new(reconnect_max);
    // Reconnect attempts are logged as one outage, not once each.
    let outage = Outage::new("PostgreSQL, outbox listener");
    loop {
        match shutdown.run_until_cancelled(listen(&listener_pool)).await {
            None => return,
            Some(Ok(mut listener)) => {
                outage.succeeded();
                backoff.reset();
                wake.notify_one();
                if let Err(error) = forward(&mut listener, &wake, &shutdown).await {
                    outage.failed(&format_args!("listener lost PostgreSQL: {error}"));
                }
            }
            Some(Err(error)) => outage.failed(&format_args!("cannot connect: {error}")),
        }
        if !backoff.pause(&shutdown).await {
            return;
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

/// Wakes the relay for each notification; returns on shutdown (`Ok`) or a failed reconnect.
async fn forward(
    listener: &mut PgListener,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    while let Some(received) = shutdown.run_until_cancelled(listener.try_recv()).await {
        // `Ok(None)`: the connection dropped and was re-established (re-listening), and
        // notifications sent meanwhile are gone; waking the relay makes it drain anyway.
        received?;
        wake.notify_one();
    }
    Ok(())
}
