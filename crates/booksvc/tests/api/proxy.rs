//! A counting reverse proxy between booksvc and storagesvc.
//!
//! It forwards every request as is and counts them by path, so a test can say "storagesvc
//! received exactly one call for book 2". [`CountingProxy::hold`] makes it keep storagesvc's
//! answers back (the request has reached storagesvc; its answer waits) until
//! [`CountingProxy::release`]: a hung storagesvc, or a fill delayed on purpose to lose a race.
//! [`CountingProxy::answers`] counts storagesvc's answers as they come back, held or not: a
//! test knows storagesvc has read what it asked for. If storagesvc cannot be reached at all
//! the proxy answers 502, like any gateway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    counts: Arc<Mutex<HashMap<String, u32>>>,
    /// Answers storagesvc has given (counted before any hold).
    answers: Arc<AtomicU32>,
    /// `true` while answers are held back.
    held: Arc<watch::Sender<bool>>,
}

/// The proxy's handle; the server stops when the test's runtime ends.
pub(crate) struct CountingProxy {
    /// `http://127.0.0.1:<port>`: give it to booksvc as `STORAGESVC_URL`.
    pub(crate) address: String,
    shared: Shared,
}

impl CountingProxy {
    pub(crate) async fn start(upstream: &str) -> anyhow::Result<CountingProxy> {
        let shared = Shared {
            upstream: upstream.to_owned(),
            client: reqwest::Client::new(),
            counts: Arc::default(),
            answers: Arc::default(),
            held: Arc::new(watch::channel(false).0),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let router = Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(CountingProxy { address, shared })
    }

    /// Requests received for `path` (e.g. `/books/2`) so far.
    pub(crate) fn calls(&self, path: &str) -> u32 {
        let counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(path).copied().unwrap_or(0)
    }

    /// Requests received for book reads and the list (what the breaker guards).
    pub(crate) fn book_calls(&self) -> u32 {
        let counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .filter(|(path, _)| path.starts_with("/books"))
            .map(|(_, count)| count)
            .sum()
    }

    /// Answers storagesvc has given so far, including those held back.
    pub(crate) fn answers(&self) -> u32 {
        self.shared.answers.load(Ordering::SeqCst)
    }

    /// From now on, storagesvc's answers wait until [`CountingProxy::release`].
    pub(crate) fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Lets every held answer (and all later ones) through.
    pub(crate) fn release(&self) {
        self.shared.held.send_replace(false);
    }
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    *shared
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path.clone())
        .or_default() += 1;
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or(path, |pq| pq.as_str().to_owned());
    let upstream = shared
        .client
        .request(
            request.method().clone(),
            format!("{}{path_and_query}", shared.upstream),
        )
        .headers(request.headers().clone())
        .send()
        .await;
    let response = match upstream {
        Ok(answer) => relay(answer).await,
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    };
    shared.answers.fetch_add(1, Ordering::SeqCst);
    let mut held = shared.held.subscribe();
    // An error means the proxy itself is going away: answer at once.
    let _ = held.wait_for(|held| !held).await;
    response
}

async fn relay(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let headers = answer.headers().clone();
    let Ok(body) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in &headers {
        // The body is re-framed by this server: its own length, no chunking headers.
        if !matches!(
            name.as_str(),
            "transfer-encoding" | "connection" | "content-length"
        ) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
