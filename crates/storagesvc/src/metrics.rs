//! Prometheus metrics: the process-wide recorder, the HTTP middleware, and every series
//! storagesvc records: each name and its `# HELP` line are written here once, and the other
//! modules record through [`track_http`] and the `record_*` functions. So this module names no
//! other module of the crate. `GET /metrics` is served by [`crate::http`].
//!
//! HTTP: `storagesvc_http_requests_total` and `storagesvc_http_request_duration_seconds`
//! (histogram), labelled by `method` (one of [`requests::METHODS`] or `other`), `route` (the route template such as `/books/{id}`, or
//! `unmatched`, so scanners cannot explode the label set) and `status`. The relay records its
//! counters and the outbox gauges through [`record_outbox_batch`], [`record_outbox_stats`]
//! and [`record_broker_connected`].
//!
//! Every family has a `# HELP` line (`describe`), every duration is a histogram (default
//! buckets; the relay's batch time too), and the relay's series exist at 0 from start-up
//! (`register`): alerts and dashboards (deploy/prometheus, deploy/grafana) read 0, not
//! "no data".
//!
//! The `metrics` facade has one global recorder per process; [`install_recorder`] installs it
//! once and hands every later caller (e.g. several test apps in one binary) the same handle.
//!
//! The recorder keeps every histogram sample until an *upkeep* folds it into its buckets, and
//! nothing else runs it: without a scraper, memory grows with every request. So
//! [`install_recorder`] starts a thread that runs [`keep_up`] every [`UPKEEP_INTERVAL`] for the
//! life of the process (the recorder's life), whatever runtime the caller has.

pub mod requests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

pub use requests::HttpMetrics;

const HTTP_REQUESTS: &str = "storagesvc_http_requests_total";
const HTTP_DURATION: &str = "storagesvc_http_request_duration_seconds";
const OUTBOX_PUBLISHED: &str = "storagesvc_outbox_published_total";
const OUTBOX_FAILURES: &str = "storagesvc_outbox_publish_failures_total";
const OUTBOX_BATCH_DURATION: &str = "storagesvc_outbox_batch_duration_seconds";
const OUTBOX_BACKLOG: &str = "storagesvc_outbox_backlog";
const OUTBOX_OLDEST_AGE: &str = "storagesvc_outbox_oldest_age_seconds";
const BROKER_CONNECTED: &str = "storagesvc_relay_broker_connected";
/// Latency buckets (seconds): from a cached read to the 5 s statement timeout.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often pending histogram samples are folded into their buckets when nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the global one, or returns the one already installed.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let mut installed = HANDLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    // Default buckets make every duration a histogram (the relay's batch time too): without
    // buckets the exporter renders a summary, which cannot be aggregated across replicas.
    let handle = PrometheusBuilder::new()
        .set_buckets(HTTP_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), HTTP_BUCKETS)?
        .install_recorder()?;
    describe();
    register();
    spawn_upkeep_thread(handle.clone())?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// Runs [`keep_up`] for the rest of the process on a thread of its own, so it outlives any
/// runtime (tests start and drop one per test; the recorder is the process's).
fn spawn_upkeep_thread(handle: PrometheusHandle) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            runtime.block_on(keep_up(handle, UPKEEP_INTERVAL, CancellationToken::new()));
        })?;
    Ok(())
}

/// Folds pending histogram samples into their buckets every `every`, until `stop`.
pub async fn keep_up(handle: PrometheusHandle, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => handle.run_upkeep(),
        }
    }
}

/// The `# HELP` line of every family storagesvc exports.
fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route and status."
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by route and status."
    );
    metrics::describe_counter!(OUTBOX_PUBLISHED, "Outbox events the broker confirmed.");
    metrics::describe_counter!(
        OUTBOX_FAILURES,
        "Relay batches that failed to publish (their events stay in the outbox)."
    );
    metrics::describe_histogram!(
        OUTBOX_BATCH_DURATION,
        metrics::Unit::Seconds,
        "Time the relay took to publish one batch and have it confirmed."
    );
    metrics::describe_gauge!(
        OUTBOX_BACKLOG,
        "Committed events not yet confirmed by the broker (refreshed every 2 s)."
    );
    metrics::describe_gauge!(
        OUTBOX_OLDEST_AGE,
        metrics::Unit::Seconds,
        "Age of the oldest unsent outbox event, 0 when none (refreshed every 2 s)."
    );
    metrics::describe_gauge!(
        BROKER_CONNECTED,
        "1 while the outbox relay holds a broker connection, else 0."
    );
}

/// Registers the relay's series at 0, so alerts and dashboards read 0 rather than "no data"
/// before the relay's first batch or housekeeping run (an existing series keeps its value).
fn register() {
    let _ = metrics::counter!(OUTBOX_PUBLISHED);
    let _ = metrics::counter!(OUTBOX_FAILURES);
    let _ = metrics::histogram!(OUTBOX_BATCH_DURATION);
    let _ = metrics::gauge!(OUTBOX_BACKLOG);
    let _ = metrics::gauge!(OUTBOX_OLDEST_AGE);
    let _ = metrics::gauge!(BROKER_CONNECTED);
}

/// The HTTP series of a router serving `routes` (templates).
pub fn http_metrics(routes: &'static [&'static str]) -> Arc<HttpMetrics> {
    Arc::new(HttpMetrics::new(HTTP_REQUESTS, HTTP_DURATION, routes))
}

/// Middleware: counts each request and records how long it took, through `series`.
pub async fn track_http(
    State(series): State<Arc<HttpMetrics>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = matched.as_ref().map(MatchedPath::as_str);
    series.record(&method, route, response.status(), started.elapsed());
    response
}

/// Exports one relay batch's outcome (a failed batch counts once, whatever its size).
pub fn record_outbox_batch(confirmed: usize, failed: bool, took: Duration) {
    metrics::counter!(OUTBOX_PUBLISHED).increment(confirmed as u64);
    if failed {
        metrics::counter!(OUTBOX_FAILURES).increment(1);
    }
    metrics::histogram!(OUTBOX_BATCH_DURATION).record(took.as_secs_f64());
}

/// Exports the outbox's backlog and the age of its oldest unsent event (0 when none).
pub fn record_outbox_stats(backlog: i64, oldest_age: Duration) {
    metrics::gauge!(OUTBOX_BACKLOG).set(backlog as f64);
    metrics::gauge!(OUTBOX_OLDEST_AGE).set(oldest_age.as_secs_f64());
}

/// Exports whether the relay holds a broker connection.
pub fn record_broker_connected(connected: bool) {
    metrics::gauge!(BROKER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}
