//! SIGTERM to each service under load: no accepted request fails, the consumer acks what it
//! finished and nothing unacked is lost, exit code 0 within a bound.

use std::time::{Duration, Instant};

use e2e::load::Kind;
use e2e::system::TOKEN;
use e2e::{Figures, Load, Phase, Sample, Samples, eventually};

use crate::{
    PHASE, RECOVERY, accepted_writes, assert_cache_catches_up, assert_every_event_published,
    latency_figures, options, publish,
};

/// Longest a service may take from SIGTERM to exit (drain delay 1 s + shutdown timeout 5 s).
const EXIT_BOUND: Duration = Duration::from_secs(15);
/// Readiness turns 503 at once and the listener stays open this long (`SHUTDOWN_DRAIN_DELAY`).
const DRAIN_DELAY: &str = "1s";

/// A request either got its answer (`ok`) or was never accepted (connection refused, which
/// a client or load balancer retries elsewhere). Anything else is an accepted request that
/// failed.
fn assert_accepted_succeeded(samples: &Samples, kind: Kind, ok: u16) {
    let failed: Vec<&Sample> = samples
        .all(kind)
        .into_iter()
        .filter(|sample| sample.status != Some(ok) && !sample.refused)
        .collect();
    assert!(
        failed.is_empty(),
        "accepted {kind:?} requests failed: {failed:#?}"
    );
}

#[tokio::test]
async fn sigterm_to_storagesvc_under_load_fails_no_accepted_request_and_loses_no_event() {
    let mut system = options()
        .storagesvc_env("SHUTDOWN_DRAIN_DELAY", DRAIN_DELAY)
        .start()
        .await
        .unwrap();
    system.start_audit().await.unwrap();
    let read_books = system.create_books(4).await.unwrap();
    let write_books = system.create_books(2).await.unwrap();
    system.read_all(&read_books).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.read(&system.booksvc.url(), &read_books, 2);
    load.write(&system.storagesvc.url(), TOKEN, &write_books);
    tokio::time::sleep(PHASE).await;

    phase.set("draining");
    let signalled = Instant::now();
    system.storagesvc.terminate().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ready_draining, _) = system.storagesvc_health("ready").await.unwrap();
    let (exit, _) = system.storagesvc.wait_exit(EXIT_BOUND).await.unwrap();
    let took = signalled.elapsed();
    phase.set("down");
    tokio::time::sleep(PHASE).await;
    system.storagesvc.restart().await.unwrap();
    phase.set("after");
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    assert_eq!(
        ready_draining, 503,
        "readiness is 503 as soon as shutdown starts"
    );
    assert_eq!(exit.code(), Some(0), "storagesvc exits 0 after SIGTERM");
    assert_accepted_succeeded(&samples, Kind::Write, 200);
    // booksvc serves from its cache meanwhile: every read answered.
    assert_accepted_succeeded(&samples, Kind::Read, 200);
    assert!(samples.all(Kind::Read).iter().all(|read| !read.refused));
    let (last, accepted) = accepted_writes(&samples);
    assert_cache_catches_up(&system, &last, &accepted).await;
    assert_every_event_published(&system, &accepted).await;

    let mut figures = Figures::new("sigterm-storagesvc");
    figures
        .millis("exit_after_sigterm", took)
        .add("exit_code", exit.code().unwrap_or(-1))
        .add(
            "writes_refused_while_down",
            samples
                .all(Kind::Write)
                .iter()
                .filter(|w| w.refused)
                .count(),
        );
    latency_figures(
        &mut figures,
        "write_draining",
        &samples.of(Kind::Write, "draining"),
    );
    latency_figures(&mut figures, "read_down", &samples.of(Kind::Read, "down"));
    publish(&mut figures, &samples);
}

#[tokio::test]
async fn sigterm_to_booksvc_under_load_fails_no_accepted_request_and_loses_no_event() {
    let mut system = options()
        .booksvc_env("SHUTDOWN_DRAIN_DELAY", DRAIN_DELAY)
        .start()
        .await
        .unwrap();
    let read_books = system.create_books(4).await.unwrap();
    let write_books = system.create_books(2).await.unwrap();
    system.read_all(&read_books).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.read(&system.booksvc.url(), &read_books, 2);
    load.write(&system.storagesvc.url(), TOKEN, &write_books);
    tokio::time::sleep(PHASE).await;

    phase.set("draining");
    let signalled = Instant::now();
    system.booksvc.terminate().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ready_draining, _) = system.booksvc_ready().await.unwrap();
    let (exit, _) = system.booksvc.wait_exit(EXIT_BOUND).await.unwrap();
    let took = signalled.elapsed();
    phase.set("down");
    tokio::time::sleep(PHASE).await;
    // Events published while booksvc was gone wait in its durable queue.
    let waiting = system.queue_depth(events::QUEUE).await.unwrap();
    system.booksvc.restart().await.unwrap();
    phase.set("after");
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    assert_eq!(
        ready_draining, 503,
        "readiness is 503 as soon as shutdown starts"
    );
    assert_eq!(exit.code(), Some(0), "booksvc exits 0 after SIGTERM");
    assert_accepted_succeeded(&samples, Kind::Read, 200);
    assert_accepted_succeeded(&samples, Kind::Write, 200);
    assert!(waiting > 0, "events queued while booksvc was down");
    let (last, accepted) = accepted_writes(&samples);
    assert_cache_catches_up(&system, &last, &accepted).await;
    let drained = eventually(RECOVERY, || async {
        system
            .queue_depth(events::QUEUE)
            .await
            .is_ok_and(|depth| depth == 0)
    })
    .await;
    assert!(drained, "the restarted consumer acks everything");
    assert_eq!(system.dlq_depth().await.unwrap(), 0);

    let mut figures = Figures::new("sigterm-booksvc");
    figures
        .millis("exit_after_sigterm", took)
        .add("exit_code", exit.code().unwrap_or(-1))
        .add("events_queued_while_down", waiting);
    latency_figures(
        &mut figures,
        "read_draining",
        &samples.of(Kind::Read, "draining"),
    );
    publish(&mut figures, &samples);
}
