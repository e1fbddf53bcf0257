//! Background clients: readers of booksvc and writers to storagesvc, every answer recorded.
//!
//! Each [`Sample`] carries the [`Phase`] the scenario was in when the request *started*
//! ("before", "outage", "after", …), so a test can assert per phase and the figures can be
//! given per phase.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The phase of a scenario, shared with the clients.
#[derive(Clone)]
pub struct Phase(Arc<Mutex<&'static str>>);

impl Phase {
    pub fn new(name: &'static str) -> Phase {
        Phase(Arc::new(Mutex::new(name)))
    }

    pub fn set(&self, name: &'static str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = name;
    }

    pub fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /books/{id}` on booksvc.
    Read,
    /// `PUT /books/{id}` on storagesvc.
    Write,
    /// `POST /books` on storagesvc (the book is the created one's id).
    Create,
}

/// One request and what came back.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The phase when the request started.
    pub phase: &'static str,
    /// The phase when its answer (or error) came.
    pub end_phase: &'static str,
    pub kind: Kind,
    pub book: i64,
    pub latency: Duration,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// `X-Cache` of a read.
    pub x_cache: Option<String>,
    /// `Cache-Status` of a read (its `detail=` says why an answer is stale).
    pub cache_status: Option<String>,
    /// The `version` of the book in the answer.
    pub version: Option<i64>,
    /// The answer was JSON with a non-empty `error`.
    pub json_error: bool,
    /// That `error`, for the failure message.
    pub error_message: Option<String>,
    /// No answer: why. `refused` is set when the connection was never made (the request was
    /// not accepted, which a client retries elsewhere), as opposed to an accepted request
    /// that then failed.
    pub error: Option<String>,
    pub refused: bool,
    /// When the answer (or error) came.
    pub finished: Instant,
}

impl Sample {
    /// When the request was sent.
    pub fn started(&self) -> Instant {
        self.finished - self.latency
    }

    /// An answered request that was not a server error.
    pub fn is_answer_below_500(&self) -> bool {
        self.status.is_some_and(|status| status < 500)
    }
}

/// All samples of a run.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// The samples of `kind` that started and ended during `phase`.
    pub fn of(&self, kind: Kind, phase: &str) -> Vec<&Sample> {
        self.0
            .iter()
            .filter(|sample| sample.kind == kind && sample.phase == phase)
            .filter(|sample| sample.end_phase == phase)
            .collect()
    }

    pub fn all(&self, kind: Kind) -> Vec<&Sample> {
        self.0.iter().filter(|sample| sample.kind == kind).collect()
    }
}

/// Median and maximum latency of `samples` (zero for none).
pub fn p50_max(samples: &[&Sample]) -> (Duration, Duration) {
    let mut latencies: Vec<Duration> = samples.iter().map(|sample| sample.latency).collect();
    latencies.sort();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    (p50, latencies.last().copied().unwrap_or_default())
}

/// Background clients until [`Load::finish`].
pub struct Load {
    phase: Phase,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
    client: reqwest::Client,
}

/// Pause between two requests of one client: steady traffic without hogging 2 cores.
const PACE: Duration = Duration::from_millis(25);

impl Load {
    pub fn new(phase: &Phase) -> Load {
        Load {
            phase: phase.clone(),
            stop: CancellationToken::new(),
            tasks: Vec::new(),
            // A hang fails loudly rather than stalling the scenario.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(8))
                .pool_max_idle_per_host(0)
                .build()
                .expect("a plain reqwest client builds"),
        }
    }

    /// `readers` clients reading `books` from booksvc at `booksvc_url` in turn.
    pub fn read(&mut self, booksvc_url: &str, books: &[i64], readers: usize) {
        for reader in 0..readers {
            let (client, phase, stop) = self.parts();
            let url = booksvc_url.to_owned();
            let books = books.to_vec();
            self.tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut turn = reader;
                while !stop.is_cancelled() {
                    let book = books[turn % books.len()];
                    turn += 1;
                    let request = client.get(format!("{url}/books/{book}"));
                    samples.push(record(request, Kind::Read, book, &phase).await);
                    tokio::time::sleep(PACE).await;
                }
                samples
            }));
        }
    }

    /// One writer per book in `books`, renaming it on storagesvc at `storagesvc_url` again
    /// and again (one write at a time per book, so accepted versions grow one by one).
    pub fn write(&mut self, storagesvc_url: &str, token: &str, books: &[i64]) {
        for &book in books {
            let (client, phase, stop) = self.parts();
            let url = format!("{storagesvc_url}/books/{book}");
            let token = token.to_owned();
            self.tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut n = 0_u64;
                while !stop.is_cancelled() {
                    n += 1;
                    let request = client.put(&url).bearer_auth(&token).json(&json!({
                        "title": format!("book {book} write {n}"),
                        "author": "Load",
                        "desc": "",
                    }));
                    samples.push(record(request, Kind::Write, book, &phase).await);
                    tokio::time::sleep(PACE).await;
                }
                samples
            }));
        }
    }

    fn parts(&self) -> (reqwest::Client, Phase, CancellationToken) {
        (self.client.clone(), self.phase.clone(), self.stop.clone())
    }

    /// Stops every client (each finishes the request it is in) and returns all samples.
    pub async fn finish(self) -> Samples {
        self.stop.cancel();
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("a load client panicked"));
        }
        Samples(all)
    }
}

/// Creates `count` books through `storagesvc_url`, `concurrency` requests at a time, as fast
/// as they are answered: a burst that fills the outbox and the queue. Returns every answer.
pub async fn create_burst(
    storagesvc_url: &str,
    token: &str,
    count: usize,
    concurrency: usize,
    phase: &Phase,
) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .build()
        .expect("a plain reqwest client builds");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, phase) = (client.clone(), Arc::clone(&next), phase.clone());
        let (url, token) = (format!("{storagesvc_url}/books"), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                let request = client.post(&url).bearer_auth(&token).json(&json!({
                    "title": "burst",
                    "author": "Load",
                    "desc": "",
                }));
                samples.push(record(request, Kind::Create, 0, &phase).await);
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a burst client panicked"));
    }
    all
}

/// Sends `request` and records what came back.
async fn record(request: reqwest::RequestBuilder, kind: Kind, book: i64, phase: &Phase) -> Sample {
    let phase_now = phase;
    let phase = phase.get();
    let started = Instant::now();
    let mut sample = Sample {
        phase,
        end_phase: phase,
        kind,
        book,
        latency: Duration::ZERO,
        status: None,
        x_cache: None,
        cache_status: None,
        version: None,
        json_error: false,
        error_message: None,
        error: None,
        refused: false,
        finished: started,
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            sample.status = Some(status.as_u16());
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            };
            sample.x_cache = header("x-cache");
            sample.cache_status = header("cache-status");
            match response.json::<Value>().await {
                Ok(body) if status.is_success() => {
                    sample.version = body["version"].as_i64();
                    if kind == Kind::Create {
                        sample.book = body["id"].as_i64().unwrap_or_default();
                    }
                }
                Ok(body) => {
                    sample.error_message = body["error"].as_str().map(str::to_owned);
                    sample.json_error =
                        sample.error_message.as_ref().is_some_and(|e| !e.is_empty());
                }
                Err(error) => sample.error = Some(format!("body: {error}")),
            }
        }
        Err(error) => {
            sample.refused = error.is_connect();
            sample.error = Some(format!("{error:?}"));
        }
    }
    sample.latency = started.elapsed();
    sample.finished = Instant::now();
    sample.end_phase = phase_now.get();
    sample
}
