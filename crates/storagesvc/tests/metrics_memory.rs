//! The metrics recorder's memory without a scraper: histogram samples must not pile up.
//!
//! A test binary of its own because it reads the process's RSS, which tests running beside
//! it would move. It relies on nothing but [`install_recorder`], as the service does: the
//! upkeep that folds samples into buckets is the recorder's own background thread, in real
//! time. Without that thread, every sample recorded here stays in memory (> 15 MiB).

use storagesvc::metrics::{UPKEEP_INTERVAL, install_recorder};

/// Samples recorded per step, steps per upkeep interval, and intervals measured: 1.2 M
/// samples at 200k per second, the rate of a busy replica.
const PER_STEP: usize = 20_000;
const STEPS_PER_INTERVAL: u32 = 10;
const INTERVALS: u32 = 6;

/// Resident set size of this process, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

#[tokio::test]
async fn histogram_samples_do_not_pile_up_without_a_scrape() {
    let _handle = install_recorder().expect("recorder");
    // What every request records (the HTTP latency histogram), resolved once.
    let latency = metrics::histogram!(
        "storagesvc_http_request_duration_seconds",
        "method" => "GET", "route" => "/books/{id}", "status" => "200"
    );
    let step = UPKEEP_INTERVAL / STEPS_PER_INTERVAL;
    let record_for = |intervals: u32| {
        let latency = latency.clone();
        async move {
            for _ in 0..intervals * STEPS_PER_INTERVAL {
                for _ in 0..PER_STEP {
                    latency.record(0.0004);
                }
                tokio::time::sleep(step).await;
            }
        }
    };
    // Two intervals first: the allocator and the buckets reach their steady state.
    record_for(2).await;
    let before = rss_bytes();

    record_for(INTERVALS).await;

    // Kept until a scrape, 1.2 M samples take > 15 MiB; folded every interval, what waits
    // is at most about one interval's worth (~3 MB), reusing the memory the last one freed.
    let grown = rss_bytes().saturating_sub(before);
    let samples = PER_STEP * (INTERVALS * STEPS_PER_INTERVAL) as usize;
    assert!(
        grown < 8 << 20,
        "RSS grew {:.1} MiB over {samples} samples in {:?} without a scrape",
        grown as f64 / f64::from(1 << 20),
        UPKEEP_INTERVAL * INTERVALS
    );
}
