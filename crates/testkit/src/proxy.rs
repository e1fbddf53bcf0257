//! [`TcpProxy`]: a TCP forwarder that can make a healthy upstream look slow, cut or gone.
//!
//! Put it between two services (give the client the proxy's address instead of the
//! upstream's) and a test can inject the network faults that no server offers on demand:
//! - [`TcpProxy::set_latency`]: every chunk is held back before it is passed on, per
//!   direction, so an answer arrives late while the upstream itself is healthy;
//! - [`TcpProxy::cut`]: every open connection is closed now (new ones still work);
//! - [`TcpProxy::refuse`]: the listener closes, so new connections are refused
//!   (`ECONNREFUSED`, like a stopped server) and open ones are cut;
//! - [`TcpProxy::restore`]: no latency, listening again on the same port.
//!
//! It runs on the caller's Tokio runtime and stops with it (or when the handle is dropped).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream (requests).
    Upstream,
    /// From the upstream back to the client (answers).
    Downstream,
}

/// A running proxy. Dropping it stops listening and cuts every connection.
#[derive(Debug)]
pub struct TcpProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop, `None` while refusing.
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    latency: watch::Sender<Latency>,
    /// Bumped by every cut; connections end when it changes.
    generation: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    upstream: Duration,
    downstream: Duration,
}

impl Latency {
    fn of(self, direction: Direction) -> Duration {
        match direction {
            Direction::Upstream => self.upstream,
            Direction::Downstream => self.downstream,
        }
    }
}

impl TcpProxy {
    /// Listens on `127.0.0.1:<free port>` and forwards each connection to `upstream`
    /// (`host:port`), which is connected to only when a client connects.
    pub async fn start(upstream: &str) -> anyhow::Result<TcpProxy> {
        let listener = bind("127.0.0.1:0".parse()?)?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            latency: watch::channel(Latency::default()).0,
            generation: watch::channel(0).0,
        });
        let acceptor = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(TcpProxy {
            address,
            shared,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:<port>`: the base URL to give an HTTP client.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Holds every chunk going `direction` back by `delay` before passing it on (applies to
    /// chunks read from now on, on open connections too). `Duration::ZERO` removes it.
    pub fn set_latency(&self, direction: Direction, delay: Duration) {
        self.shared.latency.send_modify(|latency| match direction {
            Direction::Upstream => latency.upstream = delay,
            Direction::Downstream => latency.downstream = delay,
        });
    }

    /// Closes every open connection now; new connections are still accepted.
    pub fn cut(&self) {
        self.shared
            .generation
            .send_modify(|generation| *generation += 1);
    }

    /// Stops listening (new connections are refused) and cuts the open ones.
    pub async fn refuse(&self) {
        let acceptor = self.acceptor().take();
        if let Some(acceptor) = acceptor {
            acceptor.abort();
            // The listener closes when the aborted task is dropped: wait for it, so a
            // connection attempted after this returns is refused, not reset.
            let _ = acceptor.await;
        }
        self.cut();
    }

    /// Back to a transparent proxy: no latency, listening on the same port again.
    pub fn restore(&self) -> anyhow::Result<()> {
        self.shared.latency.send_replace(Latency::default());
        let mut acceptor = self.acceptor();
        if acceptor.is_none() {
            let listener = bind(self.address)
                .with_context(|| format!("cannot listen on {} again", self.address))?;
            *acceptor = Some(tokio::spawn(accept_loop(
                listener,
                Arc::clone(&self.shared),
            )));
        }
        Ok(())
    }

    fn acceptor(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.acceptor.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(acceptor) = self.acceptor().take() {
            acceptor.abort();
        }
        self.cut();
    }
}

/// A listener with `SO_REUSEADDR`, so [`TcpProxy::restore`] can take its port back at once.
fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket.listen(1024)?)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Subscribed here, not in the task: a task not yet polled when a cut comes would
        // subscribe after it, miss it, and keep the connection open through `refuse()`.
        let cut = shared.generation.subscribe();
        tokio::spawn(serve(client, cut, Arc::clone(&shared)));
    }
}

/// One client connection: connect upstream, then pump both ways until either side closes
/// or the proxy cuts it. An unreachable upstream closes the client's connection, which is
/// what a client of a dead server behind a load balancer sees.
async fn serve(client: TcpStream, mut cut: watch::Receiver<u64>, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let pumps = async {
        tokio::join!(
            pump(client_read, upstream_write, &shared, Direction::Upstream),
            pump(upstream_read, client_write, &shared, Direction::Downstream),
        )
    };
    tokio::select! {
        _ = pumps => {}
        _ = cut.changed() => {}
    }
}

/// Copies `from` to `to` chunk by chunk, holding each chunk back by the current latency.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    direction: Direction,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let delay = shared.latency.borrow().of(direction);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    // Pass the half-close on, so request/answer protocols see the end of the stream.
    let _ = to.shutdown().await;
}
