//! A reverse proxy that holds a real storagesvc's answers back, for the one test that needs
//! the real storagesvc slow: `rebuild_with_events`, where the rebuild's first page must reach
//! the cache only after real events for its books have (decision 0013). Those events come
//! from the real storagesvc's outbox, so the stand-in ([`crate::standin`], which holds its own
//! answers the same way) cannot take its place.
//!
//! It forwards every request as is. [`HoldingProxy::hold`] makes it keep storagesvc's answers
//! back (the request has reached storagesvc; its answer waits) until
//! [`HoldingProxy::release`]. [`HoldingProxy::answers`] counts storagesvc's answers as they
//! come back, held or not: a test knows storagesvc has read what it asked for. If storagesvc
//! cannot be reached at all the proxy answers 502, like any gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

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
    /// Answers storagesvc has given (counted before any hold).
    answers: Arc<AtomicU32>,
    /// `true` while answers are held back.
    held: Arc<watch::Sender<bool>>,
}

/// The proxy's handle; the server stops when the test's runtime ends.
pub(crate) struct HoldingProxy {
    /// `http://127.0.0.1:<port>`: give it as `STORAGESVC_URL`.
    pub(crate) address: String,
    shared: Shared,
}

impl HoldingProxy {
    pub(crate) async fn start(upstream: &str) -> anyhow::Result<HoldingProxy> {
        let shared = Shared {
            upstream: upstream.to_owned(),
            client: reqwest::Client::new(),
            answers: Arc::default(),
            held: Arc::new(watch::channel(false).0),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let router = Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(HoldingProxy { address, shared })
    }

    /// Answers storagesvc has given so far, including those held back.
    pub(crate) fn answers(&self) -> u32 {
        self.shared.answers.load(Ordering::SeqCst)
    }

    /// From now on, storagesvc's answers wait until [`HoldingProxy::release`].
    pub(crate) fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Lets every held answer (and all later ones) through.
    pub(crate) fn release(&self) {
        self.shared.held.send_replace(false);
    }
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let path_and_query = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
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
