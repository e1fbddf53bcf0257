//! Prometheus metrics: the process-wide recorder, the HTTP middleware, and every series
//! booksvc records: each name, its `# HELP` line and its labels are written here once, and the
//! other modules record through the `record_*` functions (and [`LocalHits`]). So this module
//! names no other module of the crate: every module may depend on it. `GET /metrics` is served
//! by [`crate::http`].
//!
//! | series | labels | recorded by |
//! |---|---|---|
//! | `booksvc_http_requests_total`, `booksvc_http_request_duration_seconds` | `method` (one of [`requests::METHODS`] or `other`), `route` (template or `unmatched`), `status` | [`track_http`] |
//! | `booksvc_cache_results_total` | `resource` (`book`/`list`: a page), `result` (`hit`/`miss`/`stale`/`unavailable`) | [`record_read`] |
//! | `booksvc_stale_age_seconds` (histogram) | `resource` | [`record_read`] |
//! | `booksvc_storagesvc_request_duration_seconds` | `endpoint`, `outcome` (`ok`/`not_found`/`error`) | [`record_storagesvc_call`] |
//! | `booksvc_local_cache_hits_total` (also counted as `hit` above) | `resource` (`book`) | [`LocalHits`] |
//! | `booksvc_local_cache_invalidations_total` | `reason` (`event`: one book; `reset`: emptied on going live or bypassed; `unreadable`: an event it could not parse) | [`record_local_invalidation`] |
//! | `booksvc_local_cache_state` (1 for the current state) | `state` (`disabled`/`bypassed`/`live`) | [`record_local_state`] |
//! | `booksvc_coalesced_requests_total` | `resource` | [`record_coalesced`] |
//! | `booksvc_breaker_probes_total` | `outcome` | [`record_breaker_probe`] |
//! | `booksvc_breaker_state`, `booksvc_breaker_transitions_total`, `booksvc_breaker_calls_not_permitted_total` | `state`; `from`, `to` | [`record_breaker_state`], [`record_breaker_transition`], [`record_breaker_not_permitted`] |
//! | `booksvc_storagesvc_retries_total` | | [`record_storagesvc_retry`] |
//! | `booksvc_cache_errors_total`, `booksvc_cache_writes_total`, `booksvc_cache_unreadable_total` | `op`; `writer`, `outcome` | [`record_cache_error`], [`record_cache_writes`], [`record_cache_unreadable`] |
//! | `booksvc_consumer_*`, `booksvc_redrive_messages_total` | | [`consumer`] |
//!
//! Every family has a `# HELP` line (`describe`), every duration is a histogram (default
//! buckets), and every series whose labels are known in advance exists at 0 from start-up
//! (`register`): alerts and dashboards (deploy/prometheus, deploy/grafana) read 0, not
//! "no data".
//!
//! The `metrics` facade has one global recorder per process. [`install_recorder`] installs it
//! once and hands every later caller the same handle; a process that already installed a
//! Prometheus recorder of its own (tests running storagesvc and booksvc side by side) hands
//! it over with [`adopt_recorder`] first.
//!
//! The recorder keeps every histogram sample (~16 B) until an *upkeep* folds it into its
//! buckets. Nothing else runs it: without a scraper, memory grew ~11 MiB per 10 s of hits. So
//! [`install_recorder`] starts a thread that runs [`keep_up`] every [`UPKEEP_INTERVAL`] for the
//! life of the process (the recorder's life), whatever runtime the caller has.

pub mod consumer;
pub mod requests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics::Counter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use self::consumer::{EVENT_LAG, EVENT_LAG_BUCKETS};
pub use requests::HttpMetrics;

const HTTP_REQUESTS: &str = "booksvc_http_requests_total";
const HTTP_DURATION: &str = "booksvc_http_request_duration_seconds";
const CACHE_RESULTS: &str = "booksvc_cache_results_total";
const LOCAL_HITS: &str = "booksvc_local_cache_hits_total";
const LOCAL_INVALIDATIONS: &str = "booksvc_local_cache_invalidations_total";
const LOCAL_STATE: &str = "booksvc_local_cache_state";
const STALE_AGE: &str = "booksvc_stale_age_seconds";
const STORAGESVC_DURATION: &str = "booksvc_storagesvc_request_duration_seconds";
const COALESCED: &str = "booksvc_coalesced_requests_total";
const BREAKER_STATE: &str = "booksvc_breaker_state";
const BREAKER_TRANSITIONS: &str = "booksvc_breaker_transitions_total";
const BREAKER_NOT_PERMITTED: &str = "booksvc_breaker_calls_not_permitted_total";
const BREAKER_PROBES: &str = "booksvc_breaker_probes_total";
const STORAGESVC_RETRIES: &str = "booksvc_storagesvc_retries_total";
const CACHE_ERRORS: &str = "booksvc_cache_errors_total";
const CACHE_WRITES: &str = "booksvc_cache_writes_total";
const CACHE_UNREADABLE: &str = "booksvc_cache_unreadable_total";
/// The resources a read is of (`resource` label).
const RESOURCES: [&str; 2] = ["book", "list"];
/// How a read was answered (`result` label of [`CACHE_RESULTS`]).
const READ_RESULTS: [&str; 4] = ["hit", "miss", "stale", "unavailable"];
/// The operations of [`crate::cache`] that count their failures (`op` label of
/// [`CACHE_ERRORS`]); an operation missing here still counts, from its first failure on.
const CACHE_OPS: [&str; 8] = [
    "get_book",
    "get_page",
    "seen",
    "fill_book",
    "fill_page",
    "apply_event",
    "ping",
    "probe_write",
];
/// How a storagesvc attempt ended (`outcome` label of [`STORAGESVC_DURATION`]).
const STORAGESVC_OUTCOMES: [&str; 3] = ["ok", "not_found", "error"];
/// The breaker's states (`state` label of `booksvc_breaker_state`), as `breaker::State`
/// names them.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];
/// The local hit layer's states (`state` label of `booksvc_local_cache_state`), as
/// `cache::LocalState` names them.
pub const LOCAL_STATES: [&str; 3] = ["disabled", "bypassed", "live"];
/// The breaker's transitions (`from`, `to`): the only ones gobreaker's state machine makes.
const BREAKER_MOVES: [(&str, &str); 4] = [
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
];

/// Latency buckets (seconds): from a cache hit to the whole request budget and beyond.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Age buckets (seconds) of stale data served: seconds into an outage up to the 24 h max age.
const AGE_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0,
];

/// How often pending histogram samples are folded into their buckets when nobody scrapes: at
/// 50k req/s, about 0.8 MB of samples wait at most.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the global one, or returns the one already installed
/// (or adopted).
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let mut installed = HANDLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    // Default buckets make every duration a histogram: without buckets the exporter renders a
    // summary, which cannot be aggregated across replicas.
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(STORAGESVC_DURATION.to_owned()),
            LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(STALE_AGE.to_owned()), AGE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(EVENT_LAG.to_owned()), EVENT_LAG_BUCKETS)?
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

/// Uses a Prometheus recorder this process already installed elsewhere (the facade allows
/// only one), unless booksvc installed or adopted one before.
pub fn adopt_recorder(handle: PrometheusHandle) {
    let mut installed = HANDLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if installed.is_none() {
        describe();
        register();
        *installed = Some(handle);
    }
}

/// The `# HELP` line of every family booksvc exports.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request."
    );
    describe_counter!(
        CACHE_RESULTS,
        "Book reads by how they were answered: hit, miss, stale, or unavailable (503)."
    );
    describe_histogram!(STALE_AGE, Unit::Seconds, "Age of the stale data served.");
    describe_counter!(
        LOCAL_HITS,
        "Reads answered by the in-process hit layer without asking Redis."
    );
    describe_counter!(
        LOCAL_INVALIDATIONS,
        "Entries of the in-process hit layer dropped: one book by an event, or all of them."
    );
    metrics::describe_gauge!(
        LOCAL_STATE,
        "State of the in-process hit layer: 1 for the current one of disabled, bypassed, live."
    );
    describe_histogram!(
        STORAGESVC_DURATION,
        Unit::Seconds,
        "Time of each storagesvc attempt, by endpoint and outcome."
    );
    describe_counter!(
        COALESCED,
        "Reads that shared another read's storagesvc call instead of making their own."
    );
    describe_gauge!(
        BREAKER_STATE,
        "State of the breaker in front of storagesvc: 1 for the current one of closed, open, half_open."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "Breaker state changes, by from and to."
    );
    describe_counter!(
        BREAKER_NOT_PERMITTED,
        "storagesvc calls the breaker refused (open, or half-open with its probes taken)."
    );
    describe_counter!(
        BREAKER_PROBES,
        "Active probes of storagesvc's readiness by the half-open breaker, by outcome."
    );
    describe_counter!(
        STORAGESVC_RETRIES,
        "Retries of storagesvc calls within a request's budget."
    );
    describe_counter!(
        CACHE_ERRORS,
        "Redis calls that failed or timed out, by operation."
    );
    describe_counter!(
        CACHE_WRITES,
        "Cache entries written, by writer (fill, event, ...) and outcome."
    );
    describe_counter!(
        CACHE_UNREADABLE,
        "Cache entries that could not be decoded and were treated as missing."
    );
    consumer::describe();
}

/// Registers, at 0, every series whose labels are known at start-up and that an alert or the
/// dashboard reads, so they read 0 rather than "no data" until something happens. Registering
/// leaves a series that already exists as it is.
fn register() {
    for resource in RESOURCES {
        for result in READ_RESULTS {
            let _ = metrics::counter!(CACHE_RESULTS, "resource" => resource, "result" => result);
        }
        let _ = metrics::histogram!(STALE_AGE, "resource" => resource);
        let _ = metrics::counter!(COALESCED, "resource" => resource);
        for outcome in STORAGESVC_OUTCOMES {
            let _ = metrics::histogram!(STORAGESVC_DURATION, "endpoint" => resource, "outcome" => outcome);
        }
    }
    let _ = metrics::counter!(LOCAL_HITS, "resource" => "book");
    for reason in ["event", "reset", "unreadable"] {
        let _ = metrics::counter!(LOCAL_INVALIDATIONS, "reason" => reason);
    }
    for state in LOCAL_STATES {
        let _ = metrics::gauge!(LOCAL_STATE, "state" => state);
    }
    for state in BREAKER_STATES {
        let _ = metrics::gauge!(BREAKER_STATE, "state" => state);
    }
    for (from, to) in BREAKER_MOVES {
        let _ = metrics::counter!(BREAKER_TRANSITIONS, "from" => from, "to" => to);
    }
    for outcome in ["healthy", "unhealthy"] {
        let _ = metrics::counter!(BREAKER_PROBES, "outcome" => outcome);
    }
    let _ = metrics::counter!(BREAKER_NOT_PERMITTED);
    let _ = metrics::counter!(STORAGESVC_RETRIES);
    let _ = metrics::counter!(CACHE_UNREADABLE);
    for op in CACHE_OPS {
        let _ = metrics::counter!(CACHE_ERRORS, "op" => op);
    }
    consumer::register();
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

/// How a read was answered, for `booksvc_cache_results_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadResult {
    Hit,
    Miss,
    /// Served stale data of this age.
    Stale(Duration),
    /// Nothing to serve: 503.
    Unavailable,
}

/// Records one read of `resource` (`book` or `list`).
pub fn record_read(resource: &'static str, result: ReadResult) {
    let label = match result {
        ReadResult::Hit => "hit",
        ReadResult::Miss => "miss",
        ReadResult::Stale(age) => {
            metrics::histogram!(STALE_AGE, "resource" => resource).record(age.as_secs_f64());
            "stale"
        }
        ReadResult::Unavailable => "unavailable",
    };
    metrics::counter!(CACHE_RESULTS, "resource" => resource, "result" => label).increment(1);
}

/// Sets a state gauge: 1 for `current`, 0 for the other `states`.
fn record_state(name: &'static str, states: &[&'static str], current: &str) {
    for state in states {
        let value = if *state == current { 1.0 } else { 0.0 };
        metrics::gauge!(name, "state" => *state).set(value);
    }
}

/// Sets `booksvc_local_cache_state`: 1 for `state` (one of [`LOCAL_STATES`]), 0 for the others.
pub fn record_local_state(state: &str) {
    record_state(LOCAL_STATE, &LOCAL_STATES, state);
}

/// Counts one invalidation of the in-process hit layer.
pub fn record_local_invalidation(reason: &'static str) {
    metrics::counter!(LOCAL_INVALIDATIONS, "reason" => reason).increment(1);
}

/// The local hit layer's counters, resolved once: the hit path builds no label set. A local
/// hit counts in `booksvc_local_cache_hits_total` and as a `hit` read.
pub struct LocalHits {
    hits: Counter,
    read_hits: Counter,
}

impl LocalHits {
    /// The handles, bound to the recorder in force now.
    pub fn new() -> LocalHits {
        LocalHits {
            hits: metrics::counter!(LOCAL_HITS, "resource" => "book"),
            read_hits: metrics::counter!(CACHE_RESULTS, "resource" => "book", "result" => "hit"),
        }
    }

    /// Counts one local hit.
    pub fn record(&self) {
        self.hits.increment(1);
        self.read_hits.increment(1);
    }
}

impl Default for LocalHits {
    fn default() -> LocalHits {
        LocalHits::new()
    }
}

/// How a storagesvc attempt ended (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// storagesvc answered.
    Ok,
    /// storagesvc answered 404.
    NotFound,
    /// Anything else: a failure.
    Error,
}

/// Records one storagesvc attempt.
pub fn record_storagesvc_call(endpoint: &'static str, outcome: CallOutcome, elapsed: Duration) {
    let outcome = match outcome {
        CallOutcome::Ok => "ok",
        CallOutcome::NotFound => "not_found",
        CallOutcome::Error => "error",
    };
    metrics::histogram!(STORAGESVC_DURATION, "endpoint" => endpoint, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// Counts one retry of a storagesvc call.
pub fn record_storagesvc_retry() {
    metrics::counter!(STORAGESVC_RETRIES).increment(1);
}

/// Counts one read of `resource` that shared another read's storagesvc call.
pub fn record_coalesced(resource: &'static str) {
    metrics::counter!(COALESCED, "resource" => resource).increment(1);
}

/// Counts one call the breaker refused.
pub fn record_breaker_not_permitted() {
    metrics::counter!(BREAKER_NOT_PERMITTED).increment(1);
}

/// Counts one breaker transition (state names as in [`BREAKER_STATES`]).
pub fn record_breaker_transition(from: &'static str, to: &'static str) {
    metrics::counter!(BREAKER_TRANSITIONS, "from" => from, "to" => to).increment(1);
}

/// Sets `booksvc_breaker_state`: 1 for `state` (one of [`BREAKER_STATES`]), 0 for the others.
pub fn record_breaker_state(state: &str) {
    record_state(BREAKER_STATE, &BREAKER_STATES, state);
}

/// Counts one active probe of storagesvc (`healthy` or `unhealthy`).
pub fn record_breaker_probe(outcome: &'static str) {
    metrics::counter!(BREAKER_PROBES, "outcome" => outcome).increment(1);
}

/// Counts one failed or timed-out Redis call of operation `op`.
pub fn record_cache_error(op: &'static str) {
    metrics::counter!(CACHE_ERRORS, "op" => op).increment(1);
}

/// Counts one cache entry that could not be decoded.
pub fn record_cache_unreadable() {
    metrics::counter!(CACHE_UNREADABLE).increment(1);
}

/// Counts `count` cache writes by `writer` (fill, event, ...) that ended as `outcome`.
pub fn record_cache_writes(writer: &'static str, outcome: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!(CACHE_WRITES, "writer" => writer, "outcome" => outcome).increment(count);
    }
}
