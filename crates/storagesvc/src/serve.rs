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
//! From `draining` (shutdown started, readiness 503) every answer says `Connection: close`,
//! so during the drain delay each client ends its keep-alive connections itself, after an
//! answer. Without it, the graceful close at `stop` meets requests a client has just sent on a
//! connection it thought idle: they fail as incomplete messages instead of being refused.
//!
//! On `stop` the connections still waiting in the listener's backlog are accepted, the
//! listener closes, every connection finishes the request in hand and closes (an idle one at
//! once), and [`serve`] returns when the last one has. A connection accepted
//! during the drain is left to end by itself after its one answer (or the header-read
//! timeout): closing it at `stop` would drop a request its client had just sent on it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use axum::response::Response;
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

/// When the server stops: `draining` from shutdown's start, `stop` after the drain delay.
#[derive(Debug, Clone)]
pub struct Stopping {
    /// Cancelled when shutdown starts: answers close their connections from then on.
    pub draining: CancellationToken,
    /// Cancelled when the listener closes and connections finish gracefully.
    pub stop: CancellationToken,
}

/// Serves `router` on `listener` until `stop` is cancelled and every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stopping: Stopping,
) {
    let Stopping { draining, stop } = stopping;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    while let Some((stream, slot)) = stop.run_until_cancelled(accept(&listener, &slots)).await {
        let stopping = Stopping {
            draining: draining.clone(),
            stop: stop.clone(),
        };
        let connection = serve_connection(stream, router.clone(), limits, stopping);
        connections.spawn(async move {
            connection.await;
            drop(slot);
        });
    }
    // Closing the listener refuses new connections while the open ones finish. It would also
    // reset the connections whose handshake the kernel completed but we had not accepted yet,
    // while their clients send: during the drain every request opens one (`Connection:
    // close`), so there often is one. Those are accepted and served first.
    for stream in pending_connections(listener) {
        let stopping = Stopping {
            draining: draining.clone(),
            stop: stop.clone(),
        };
        connections.spawn(serve_connection(stream, router.clone(), limits, stopping));
    }
    connections.close();
    connections.wait().await;
}

/// The connections waiting in `listener`'s backlog, accepted without waiting; the listener is
/// closed when this returns.
fn pending_connections(listener: TcpListener) -> Vec<TcpStream> {
    // The std listener is non-blocking: `accept` says `WouldBlock` once the backlog is empty.
    let Ok(listener) = listener.into_std() else {
        return Vec::new();
    };
    let mut pending = Vec::new();
    while let Ok((stream, _peer)) = listener.accept() {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            pending.push(stream);
        }
    }
    pending
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
    Stopping { draining, stop }: Stopping,
) {
    // Small answers go out at once rather than waiting on Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let accepted_while_draining = draining.is_cancelled();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let service = tower::ServiceBuilder::new()
        .map_response(move |response| close_while_draining(&draining, response))
        .service(router);
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let result = if accepted_while_draining {
        // Its first answer says `Connection: close`, so it ends after one request by itself.
        // A graceful close at `stop` would drop a request the client sent as it connected
        // but hyper had not read yet (hyper counts that connection as idle).
        connection.as_mut().await
    } else {
        tokio::select! {
            result = connection.as_mut() => result,
            () = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.as_mut().await
            }
        }
    };
    if let Err(error) = result {
        // Timeouts, resets and malformed requests: the client's problem, not ours.
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Adds `Connection: close` once `draining` is cancelled (module docs); hyper then closes the
/// connection after writing the answer.
fn close_while_draining(draining: &CancellationToken, mut response: Response) -> Response {
    if draining.is_cancelled() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
