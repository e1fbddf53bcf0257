//! The event consumer's Prometheus series (and `redrive-dlq`'s).
//!
//! | series | labels | meaning |
//! |---|---|---|
//! | `booksvc_consumer_consumed_total` | | deliveries taken from the queue |
//! | `booksvc_consumer_applied_total` | | events written into the cache |
//! | `booksvc_consumer_ignored_stale_total` | | events older than (or as old as) the cache |
//! | `booksvc_consumer_checked_total` | | events older than what the cache has proven, settled by asking storagesvc instead (decision 0013) |
//! | `booksvc_consumer_unproven_total` | | of those, events storagesvc could not settle: nothing written |
//! | `booksvc_consumer_retried_total` | `tier` (the delay, e.g. `10s`) | sent to a retry queue |
//! | `booksvc_consumer_dead_lettered_total` | `reason` | sent to the DLQ (one of [`DEAD_LETTER_REASONS`]) |
//! | `booksvc_consumer_rejected_total` | `reason` | the DLQ refused the dead letter: rejected without requeue |
//! | `booksvc_consumer_state` | `state` | 1 for the current one of [`CONSUMER_STATES`], 0 for the others |
//! | `booksvc_consumer_reconnects_total` | | broker sessions that ended other than by shutdown |
//! | `booksvc_consumer_event_lag_seconds` (histogram) | | now − `occurred_at` when handled |
//! | `booksvc_redrive_messages_total` | | DLQ messages moved back by `redrive-dlq` |

use std::time::Duration;

use events::Topology;

/// Name of the lag histogram (its buckets are set where the recorder is installed).
pub const EVENT_LAG: &str = "booksvc_consumer_event_lag_seconds";
/// Lag buckets (seconds): from the warm path's milliseconds to retries minutes late.
pub const EVENT_LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 3600.0,
];

/// Why a message went to the DLQ (`reason` label), as `consumer::DeadLetterReason` names it.
pub const DEAD_LETTER_REASONS: [&str; 4] =
    ["poison", "unprocessable", "exhausted", "retry_refused"];
/// The consumer's states (`state` label), as `consumer::ConsumerState` names them.
pub const CONSUMER_STATES: [&str; 4] = ["reconnecting", "running", "paused", "stopped"];

/// The `# HELP` lines of the consumer's families.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "booksvc_consumer_consumed_total",
        "Event deliveries taken from booksvc.book-changed."
    );
    describe_counter!(
        "booksvc_consumer_applied_total",
        "Events written into the cache."
    );
    describe_counter!(
        "booksvc_consumer_checked_total",
        "Events older than what the cache has proven, settled by asking storagesvc instead (decision 0013)."
    );
    describe_counter!(
        "booksvc_consumer_unproven_total",
        "Events older than what the cache has proven that storagesvc could not settle: nothing written."
    );
    describe_counter!(
        "booksvc_consumer_ignored_stale_total",
        "Events ignored because the cache already held that version or a newer one."
    );
    describe_counter!(
        "booksvc_consumer_retried_total",
        "Events sent to a retry queue after a transient failure, by retry queue (tier)."
    );
    describe_counter!(
        "booksvc_consumer_dead_lettered_total",
        "Events sent to the DLQ, by reason: poison, unprocessable, exhausted, retry_refused."
    );
    describe_counter!(
        "booksvc_consumer_rejected_total",
        "Dead letters the DLQ refused, rejected to the broker without requeue, by reason."
    );
    describe_counter!(
        "booksvc_consumer_reconnects_total",
        "Consumer broker sessions that ended other than by shutdown."
    );
    describe_gauge!(
        "booksvc_consumer_state",
        "State of the event consumer: 1 for the current one of reconnecting, running, paused, stopped."
    );
    describe_histogram!(
        EVENT_LAG,
        Unit::Seconds,
        "Time from an event's occurred_at to its handling by the consumer."
    );
    describe_counter!(
        "booksvc_redrive_messages_total",
        "DLQ messages moved back to booksvc.book-changed by redrive-dlq."
    );
}

/// Registers every consumer series whose labels are known before any event, at 0, so alerts
/// and dashboards read 0 rather than "no data" (gauges keep their value if already set).
pub(crate) fn register() {
    let _ = metrics::counter!("booksvc_consumer_consumed_total");
    let _ = metrics::counter!("booksvc_consumer_applied_total");
    let _ = metrics::counter!("booksvc_consumer_ignored_stale_total");
    let _ = metrics::counter!("booksvc_consumer_checked_total");
    let _ = metrics::counter!("booksvc_consumer_unproven_total");
    let _ = metrics::counter!("booksvc_consumer_reconnects_total");
    let _ = metrics::counter!("booksvc_redrive_messages_total");
    let _ = metrics::histogram!(EVENT_LAG);
    for reason in DEAD_LETTER_REASONS {
        let _ = metrics::counter!("booksvc_consumer_dead_lettered_total", "reason" => reason);
        let _ = metrics::counter!("booksvc_consumer_rejected_total", "reason" => reason);
    }
    for state in CONSUMER_STATES {
        let _ = metrics::gauge!("booksvc_consumer_state", "state" => state);
    }
}

/// Registers the retry counter of each configured tier at 0 (the tiers are configuration).
pub(crate) fn register_tiers(delays: &[Duration]) {
    for delay in delays {
        let _ = metrics::counter!("booksvc_consumer_retried_total", "tier" => Topology::retry_queue_name(*delay));
    }
}

pub(crate) fn record_consumed() {
    metrics::counter!("booksvc_consumer_consumed_total").increment(1);
}

pub(crate) fn record_applied() {
    metrics::counter!("booksvc_consumer_applied_total").increment(1);
}

pub(crate) fn record_checked() {
    metrics::counter!("booksvc_consumer_checked_total").increment(1);
}

pub(crate) fn record_unproven() {
    metrics::counter!("booksvc_consumer_unproven_total").increment(1);
}

pub(crate) fn record_ignored_stale() {
    metrics::counter!("booksvc_consumer_ignored_stale_total").increment(1);
}

pub(crate) fn record_retried(tier: String) {
    metrics::counter!("booksvc_consumer_retried_total", "tier" => tier).increment(1);
}

pub(crate) fn record_dead_lettered(reason: &'static str) {
    metrics::counter!("booksvc_consumer_dead_lettered_total", "reason" => reason).increment(1);
}

pub(crate) fn record_rejected(reason: &'static str) {
    metrics::counter!("booksvc_consumer_rejected_total", "reason" => reason).increment(1);
}

pub(crate) fn record_reconnect() {
    metrics::counter!("booksvc_consumer_reconnects_total").increment(1);
}

pub(crate) fn record_lag(lag: Duration) {
    metrics::histogram!(EVENT_LAG).record(lag.as_secs_f64());
}

pub(crate) fn record_redriven(count: u64) {
    metrics::counter!("booksvc_redrive_messages_total").increment(count);
}

/// Sets the state gauge: 1 for `current` (one of [`CONSUMER_STATES`]), 0 for every other state.
pub(crate) fn record_state(current: &str) {
    super::record_state("booksvc_consumer_state", &CONSUMER_STATES, current);
}
