//! The metrics recorder's memory without a scraper: histogram samples must not pile up.
//!
//! A test binary of its own because it reads the process's RSS, which tests running beside
//! it would move. Time is paused, so the upkeep runs exactly when the test advances it.

use booksvc::metrics::{UPKEEP_INTERVAL, install_recorder, keep_up};
use tokio_util::sync::CancellationToken;

/// Requests recorded between two upkeep runs, and how many such intervals.
const PER_INTERVAL: usize = 100_000;
const INTERVALS: usize = 20;

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

#[tokio::test(start_paused = true)]
async fn histogram_samples_do_not_pile_up_without_a_scrape() {
    let handle = install_recorder().expect("recorder");
    let stop = CancellationToken::new();
    tokio::spawn(keep_up(handle, UPKEEP_INTERVAL, stop.clone()));
    // What every request records (the HTTP latency histogram), resolved once.
    let latency = metrics::histogram!(
        "booksvc_http_request_duration_seconds",
        "method" => "GET", "route" => "/books/{id}", "status" => "200"
    );
    let interval = || async {
        for _ in 0..PER_INTERVAL {
            latency.record(0.0004);
        }
        tokio::time::advance(UPKEEP_INTERVAL).await;
        tokio::task::yield_now().await;
    };
    // One interval first: the allocator and the buckets reach their steady state.
    interval().await;
    let before = rss_bytes();

    for _ in 0..INTERVALS {
        interval().await;
    }

    // Kept until a scrape, 2 M samples take > 30 MiB; folded each interval, what waits is
    // one interval's worth (~1.6 MB), reusing the memory the last one freed.
    let grown = rss_bytes().saturating_sub(before);
    let samples = PER_INTERVAL * INTERVALS;
    assert!(
        grown < 8 << 20,
        "RSS grew {:.1} MiB over {samples} samples without a scrape",
        grown as f64 / f64::from(1 << 20)
    );
    stop.cancel();
}
