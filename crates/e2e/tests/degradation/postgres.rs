//! PostgreSQL stopped while clients read and write.

use std::time::Instant;

use e2e::load::Kind;
use e2e::system::{TOKEN, WITHIN_BUDGET};
use e2e::{Figures, Load, Phase, eventually};

use crate::{PHASE, RECOVERY, assert_reads_answered, latency_figures, options, publish};

#[tokio::test]
async fn postgres_stopped_reads_stale_writes_503_nothing_accepted_is_lost() {
    let system = options().private_postgres().start().await.unwrap();
    let read_books = system.create_books(4).await.unwrap();
    let write_books = system.create_books(2).await.unwrap();
    system.read_all(&read_books).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.read(&system.booksvc.url(), &read_books, 2);
    load.write(&system.storagesvc.url(), TOKEN, &write_books);
    tokio::time::sleep(PHASE).await;

    phase.set("stopping");
    system.private_postgres().stop().await.unwrap();
    phase.set("outage");
    tokio::time::sleep(PHASE).await;
    let (ready, ready_body) = system.storagesvc_health("ready").await.unwrap();
    let (live, _) = system.storagesvc_health("live").await.unwrap();
    let (booksvc_ready, booksvc_body) = system.booksvc_ready().await.unwrap();

    phase.set("restarting");
    system.private_postgres().start_again().await.unwrap();
    let back = Instant::now();
    phase.set("after");
    // Recovered when a read is fresh from storagesvc again (`miss`: the fresh TTL is 0).
    let recovered = eventually(RECOVERY, || async {
        let response = system
            .get_booksvc(&format!("/books/{}", read_books[0]))
            .await;
        response.is_ok_and(|r| r.status() == 200 && r.headers()["x-cache"] == "miss")
    })
    .await;
    let recovery = back.elapsed();
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    assert_eq!(
        ready, 503,
        "storagesvc ready while PostgreSQL is down: {ready_body}"
    );
    assert_eq!(ready_body["dependencies"]["postgres"]["status"], "down");
    assert_eq!(live, 200, "storagesvc live never checks dependencies");
    assert_eq!(booksvc_ready, 200, "booksvc stays ready: {booksvc_body}");
    assert!(
        recovered,
        "reads fresh again within {RECOVERY:?} of PostgreSQL's return"
    );

    let outage_reads = assert_reads_answered(&samples, "outage");
    for read in &outage_reads {
        assert_eq!(
            read.x_cache.as_deref(),
            Some("stale"),
            "outage read {read:?}"
        );
    }
    let outage_writes = samples.of(Kind::Write, "outage");
    assert!(!outage_writes.is_empty());
    for write in &outage_writes {
        assert_eq!(write.status, Some(503), "outage write {write:?}");
        assert!(write.json_error, "a 503 write says why in JSON: {write:?}");
        assert!(write.latency <= WITHIN_BUDGET, "503 comes fast: {write:?}");
    }
    // Before and after, every write is accepted.
    for phase in ["before", "after"] {
        for write in samples.of(Kind::Write, phase) {
            assert_eq!(write.status, Some(200), "{phase} write {write:?}");
        }
    }

    // Every accepted write is readable after the restart, fresh from storagesvc.
    for &book in &write_books {
        let accepted = samples
            .all(Kind::Write)
            .iter()
            .filter(|write| write.book == book && write.status == Some(200))
            .filter_map(|write| write.version)
            .max()
            .expect("writes accepted");
        let response = system.get_booksvc(&format!("/books/{book}")).await.unwrap();
        assert_eq!(response.headers()["x-cache"], "miss");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["version"], accepted,
            "book {book} has its last accepted write"
        );
    }

    let mut figures = Figures::new("postgres-stopped");
    latency_figures(
        &mut figures,
        "read_before",
        &samples.of(Kind::Read, "before"),
    );
    latency_figures(&mut figures, "read_outage", &outage_reads);
    latency_figures(&mut figures, "write_outage", &outage_writes);
    latency_figures(&mut figures, "read_after", &samples.of(Kind::Read, "after"));
    figures.millis("recovery", recovery);
    publish(&mut figures, &samples);
}
