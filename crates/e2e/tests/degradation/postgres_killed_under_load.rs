//! PostgreSQL killed under concurrent readers, booksvc with its default read path (local
//! layer on, `CACHE_FRESH_TTL` 5 s, `BREAKER_TIMEOUT` 5 s, `STALE_SOFT_TIMEOUT` 50 ms),
//! across several half-open cycles. Each cycle sends one trial call to a storagesvc that
//! cannot reach its database; readers that hold an entry must not wait for it.
//!
//! What "did not wait" is, structurally: a read that waited for a failed trial says so
//! (`Cache-Status: …; detail=upstream-failed`). Once the breaker has opened, the read path
//! never waits on a call during this outage (open: `circuit-open` at once; half-open:
//! `trial-in-flight` at once), so no such answer may appear. Latencies are figures only.

use std::time::{Duration, Instant};

use e2e::load::{Kind, Sample};
use e2e::{Figures, Load, Phase, System, eventually};

use crate::{PHASE, RECOVERY, latency_figures, options, publish};

/// Concurrent readers, over `BOOKS` books: several readers per key at any moment.
const READERS: usize = 32;
const BOOKS: usize = 4;
/// Half-open cycles the outage must span.
const CYCLES: usize = 2;
/// Upper bound on the outage: entries stay fresh up to 5 s after the kill, the breaker then
/// trips and needs 5 s per cycle; generous for a loaded machine.
const OUTAGE_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn postgres_killed_under_concurrent_readers_nobody_with_an_entry_waits_for_a_trial() {
    let system = options()
        .private_postgres()
        .read_path_defaults()
        .start()
        .await
        .unwrap();
    let books = system.create_books(BOOKS).await.unwrap();
    system.read_all(&books).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.read(&system.booksvc.url(), &books, READERS);
    tokio::time::sleep(PHASE).await;

    phase.set("killing");
    system.private_postgres().kill().await.unwrap();
    phase.set("outage");
    let outage_started = Instant::now();
    let cycles = half_open_cycles(&system, CYCLES, OUTAGE_LIMIT).await;
    // The last cycle's reads finish inside the outage (it reopens long before 5 s pass).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outage = outage_started.elapsed();

    phase.set("restarting");
    system.private_postgres().start_again().await.unwrap();
    phase.set("after");
    let recovered = eventually(RECOVERY, || async { system.breaker().await == "closed" }).await;
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    assert!(
        cycles >= CYCLES,
        "the outage spanned {cycles} half-open cycles in {outage:?}, not {CYCLES}"
    );
    assert!(
        recovered,
        "the breaker closed within {RECOVERY:?} of PostgreSQL's return"
    );
    // Every reader had an entry: no answer of any phase is anything but a 200.
    let reads = samples.all(Kind::Read);
    let failed: Vec<_> = reads.iter().filter(|r| r.status != Some(200)).collect();
    assert!(
        failed.is_empty(),
        "{} non-2xx reads: {failed:?}",
        failed.len()
    );

    let outage_reads = samples.of(Kind::Read, "outage");
    for read in &outage_reads {
        let x_cache = read.x_cache.as_deref();
        assert!(
            matches!(x_cache, Some("hit" | "stale")),
            "outage read {read:?}"
        );
    }
    let first_open = outage_reads
        .iter()
        .filter(|read| has_detail(read, "circuit-open"))
        .map(|read| read.finished)
        .min()
        .expect("the breaker opened during the outage");
    let waited_for_a_call: Vec<_> = outage_reads
        .iter()
        .filter(|read| read.started() > first_open && has_detail(read, "upstream-failed"))
        .collect();
    assert!(
        waited_for_a_call.is_empty(),
        "{} reads with an entry waited for a failed call after the breaker opened: {:?}",
        waited_for_a_call.len(),
        waited_for_a_call.first()
    );
    let trials = trial_windows(&outage_reads);
    assert!(
        trials >= CYCLES,
        "readers were served during {trials} trials (detail=trial-in-flight), not {CYCLES}"
    );

    let count = |detail| {
        outage_reads
            .iter()
            .filter(|r| has_detail(r, detail))
            .count()
    };
    let slow = outage_reads
        .iter()
        .filter(|read| read.latency > Duration::from_millis(250))
        .count();
    let mut figures = Figures::new("postgres-killed-concurrent");
    latency_figures(
        &mut figures,
        "read_before",
        &samples.of(Kind::Read, "before"),
    );
    latency_figures(&mut figures, "read_outage", &outage_reads);
    figures
        .millis("read_outage_p99", p99(&outage_reads))
        .add("outage_reads_over_250ms", slow)
        .add("circuit_open", count("circuit-open"))
        .add("trial_in_flight", count("trial-in-flight"))
        .add("soft_timeout", count("soft-timeout"))
        .add("upstream_failed", count("upstream-failed"))
        .add("half_open_cycles", cycles)
        .millis("outage", outage);
    latency_figures(&mut figures, "read_after", &samples.of(Kind::Read, "after"));
    publish(&mut figures, &samples);
}

/// Watches booksvc's breaker until it has turned half-open `wanted` times (each time a
/// trial goes out and fails), or `limit` has passed; returns how many times it did.
async fn half_open_cycles(system: &System, wanted: usize, limit: Duration) -> usize {
    let started = Instant::now();
    let mut cycles = 0;
    let mut was_half_open = false;
    while cycles < wanted && started.elapsed() < limit {
        let half_open = system.breaker().await == "half_open";
        if half_open && !was_half_open {
            cycles += 1;
        }
        was_half_open = half_open;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cycles
}

fn has_detail(read: &Sample, detail: &str) -> bool {
    read.cache_status
        .as_deref()
        .is_some_and(|status| status.contains(&format!("detail={detail}")))
}

/// Separate trials readers were served during: `trial-in-flight` answers more than a second
/// apart belong to different half-open cycles (they are 5 s apart).
fn trial_windows(reads: &[&Sample]) -> usize {
    let mut at: Vec<Instant> = reads
        .iter()
        .filter(|read| has_detail(read, "trial-in-flight"))
        .map(|read| read.finished)
        .collect();
    at.sort();
    let gaps = at
        .windows(2)
        .filter(|pair| pair[1] - pair[0] > Duration::from_secs(1))
        .count();
    match at.is_empty() {
        true => 0,
        false => gaps + 1,
    }
}

/// The 99th percentile latency (zero for none).
fn p99(reads: &[&Sample]) -> Duration {
    let mut latencies: Vec<Duration> = reads.iter().map(|read| read.latency).collect();
    latencies.sort();
    let at = (latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1));
    latencies.get(at).copied().unwrap_or_default()
}
