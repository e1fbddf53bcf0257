//! The HTTP server loop: hyper's HTTP/1 with a timer, so a slow client cannot hold a
//! connection for ever.
//!
//! `axum::serve` runs hyper without a timer, which silently turns hyper's header-read
//! timeout off: a client that sends half a request line keeps its connection, task and
//! buffers until it goes away. Here each connection is served by `hyper::server::conn::http1`
//! with [`TokioTimer`], and:
//! - a request's headers must arrive within `HTTP_HEADER_READ_TIMEOUT`, counted from when the
//!   connection opened or the previous response was sent, so the same bound closes a
//!   keep-alive connection that sits idle;
//! - at most `HTTP_MAX_CONNECTIONS` connections are open at once: at the cap the loop stops
//!   accepting, and new connections wait in the kernel's backlog until a slot frees up
//!   (HTTP/1 serves one request at a time per connection, so this caps concurrency too).
//!
//! On `stop` the listener closes, every connection finishes the request in hand and closes
//! (an idle one at once), and [`serve`] returns when the last one has.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the loop pauses after a failed `accept` (e.g. out of file descriptors), so the
/// failure does not spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The limits each connection is served under (`HTTP_*` variables).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers, also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `stop` is cancelled and every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    while let Some((stream, slot)) = stop.run_until_cancelled(accept(&listener, &slots)).await {
        let connection = serve_connection(stream, router.clone(), limits, stop.clone());
        connections.spawn(async move {
            connection.await;
            drop(slot);
        });
    }
    // Closing the listener refuses new connections while the open ones finish.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Waits for a free slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            // The semaphore is never closed; if it were, waiting is all that is left.
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((stream, _peer)) => return (stream, slot),
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                drop(slot);
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// One connection, until the client closes it, a timeout does, or `stop` (gracefully).
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    // Small answers go out at once rather than waiting on Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(error) = result {
        // Timeouts, resets and malformed requests: the client's problem, not ours.
        tracing::debug!(%error, "connection ended with an error");
    }
}
