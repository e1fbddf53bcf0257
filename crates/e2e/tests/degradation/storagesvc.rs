//! storagesvc killed (SIGKILL) and storagesvc slow (latency on booksvc → storagesvc): reads
//! stay within the budget from the cache, the breaker opens, and everything recovers.

use std::time::{Duration, Instant};

use e2e::load::Kind;
use e2e::system::STORAGESVC_TIMEOUT;
use e2e::{Figures, Load, Phase, Samples, System, eventually};
use testkit::Direction;

use crate::{
    PHASE, RECOVERY, assert_any_reads_answered, assert_reads_answered, latency_figures, options,
    publish,
};

/// A system with warm cache entries for a few books, and readers on them.
async fn reading_system() -> (System, Vec<i64>, Phase, Load) {
    let system = options().start().await.unwrap();
    let books = system.create_books(4).await.unwrap();
    system.read_all(&books).await.unwrap();
    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.read(&system.booksvc.url(), &books, 2);
    tokio::time::sleep(PHASE).await;
    (system, books, phase, load)
}

/// Waits until booksvc reports its breaker open (readiness and metrics); returns how long
/// it took, or `None`.
async fn breaker_opens(system: &System) -> Option<Duration> {
    let started = Instant::now();
    // Open lasts BREAKER_TIMEOUT (1 s) before a probe: poll often enough to see it.
    let open = eventually(RECOVERY, || async {
        system.breaker().await == "open" && system.breaker_metric_open().await
    })
    .await;
    open.then(|| started.elapsed())
}

/// Waits until a read is fresh from storagesvc again and the breaker is closed.
async fn recovers(system: &System, book: i64) -> Option<Duration> {
    let started = Instant::now();
    let recovered = eventually(RECOVERY, || async {
        let response = system.get_booksvc(&format!("/books/{book}")).await;
        response.is_ok_and(|r| r.status() == 200 && r.headers()["x-cache"] == "miss")
            && system.breaker().await == "closed"
    })
    .await;
    recovered.then(|| started.elapsed())
}

/// Every read in every phase answered 200 within the budget; outage reads were `stale`.
fn assert_reads(samples: &Samples, outage: &str) {
    for phase in ["before", outage, "after"] {
        assert_reads_answered(samples, phase);
    }
    for read in samples.of(Kind::Read, outage) {
        assert_eq!(read.x_cache.as_deref(), Some("stale"), "{outage}: {read:?}");
    }
}

#[tokio::test]
async fn storagesvc_killed_reads_stay_stale_within_budget_breaker_opens_and_recovers() {
    let (mut system, books, phase, load) = reading_system().await;

    phase.set("outage");
    system.storagesvc.kill().await.unwrap();
    let opened = breaker_opens(&system).await;
    let (ready, ready_body) = system.booksvc_ready().await.unwrap();
    tokio::time::sleep(PHASE).await;

    phase.set("restarting");
    let restarted = Instant::now();
    system.storagesvc.restart().await.unwrap();
    let restart_took = restarted.elapsed();
    phase.set("after");
    let recovered = recovers(&system, books[0]).await;
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    let opened = opened.expect("the breaker opens while storagesvc is dead");
    assert_eq!(ready, 200, "booksvc stays ready: {ready_body}");
    assert_eq!(ready_body["mode"], "DEGRADED", "{ready_body}");
    assert_eq!(ready_body["dependencies"]["storagesvc"]["status"], "down");
    let recovered = recovered.expect("fresh reads and a closed breaker after the restart");
    assert_reads(&samples, "outage");
    assert_any_reads_answered(&samples, "restarting");

    let mut figures = Figures::new("storagesvc-killed");
    latency_figures(
        &mut figures,
        "read_before",
        &samples.of(Kind::Read, "before"),
    );
    latency_figures(
        &mut figures,
        "read_outage",
        &samples.of(Kind::Read, "outage"),
    );
    latency_figures(&mut figures, "read_after", &samples.of(Kind::Read, "after"));
    figures
        .millis("breaker_open_after", opened)
        .millis("restart", restart_took)
        .millis("recovery_after_restart", recovered);
    publish(&mut figures, &samples);
}

#[tokio::test]
async fn storagesvc_slow_reads_stay_stale_within_budget_breaker_opens_and_recovers() {
    let (system, books, phase, load) = reading_system().await;

    // Every answer arrives after the per-attempt timeout: storagesvc is healthy but useless.
    let latency = STORAGESVC_TIMEOUT * 2;
    phase.set("outage");
    system
        .storagesvc_proxy
        .set_latency(Direction::Downstream, latency);
    let opened = breaker_opens(&system).await;
    tokio::time::sleep(PHASE).await;

    phase.set("after");
    system
        .storagesvc_proxy
        .set_latency(Direction::Downstream, Duration::ZERO);
    let recovered = recovers(&system, books[0]).await;
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    let opened = opened.expect("the breaker opens while storagesvc is too slow");
    let recovered = recovered.expect("fresh reads and a closed breaker once latency goes");
    assert_reads(&samples, "outage");

    let mut figures = Figures::new("storagesvc-slow");
    figures.millis("injected_latency", latency);
    latency_figures(
        &mut figures,
        "read_before",
        &samples.of(Kind::Read, "before"),
    );
    latency_figures(
        &mut figures,
        "read_outage",
        &samples.of(Kind::Read, "outage"),
    );
    latency_figures(&mut figures, "read_after", &samples.of(Kind::Read, "after"));
    figures
        .millis("breaker_open_after", opened)
        .millis("recovery", recovered);
    publish(&mut figures, &samples);
}
