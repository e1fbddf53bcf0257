//! Redis stopped while events flow and clients read: no 5xx, no good event dead-lettered,
//! every event applied once Redis is back.

use e2e::load::Kind;
use e2e::system::TOKEN;
use e2e::{Figures, Load, Phase};

use crate::{
    PHASE, accepted_writes, assert_reads_answered, assert_writes_accepted, cache_catches_up,
    latency_figures, options, publish,
};

#[tokio::test]
async fn redis_stopped_no_5xx_no_dead_letters_events_applied_after() {
    let system = options().private_redis().start().await.unwrap();
    let books = system.create_books(4).await.unwrap();
    system.read_all(&books).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.read(&system.booksvc.url(), &books, 2);
    load.write(&system.storagesvc.url(), TOKEN, &books[..2]);
    tokio::time::sleep(PHASE).await;

    phase.set("outage");
    system.private_redis().stop().await.unwrap();
    tokio::time::sleep(PHASE).await;
    let (ready, ready_body) = system.booksvc_ready().await.unwrap();
    system.private_redis().start_again().await.unwrap();
    phase.set("after");
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    assert_eq!(
        ready, 200,
        "booksvc stays ready without Redis: {ready_body}"
    );
    assert_eq!(ready_body["dependencies"]["redis"]["status"], "down");
    for phase in ["before", "outage", "after"] {
        // storagesvc is up: every read is answered fresh, Redis or not, and every write taken.
        assert_reads_answered(&samples, phase);
        assert_writes_accepted(&samples, phase);
    }
    let writes = samples.all(Kind::Write);
    let (last, _) = accepted_writes(&samples);
    assert_eq!(
        last.len(),
        2,
        "both written books have accepted versions to catch up on"
    );
    let caught_up = cache_catches_up(&system, &last)
        .await
        .unwrap_or_else(|behind| {
            panic!("events not applied after Redis came back (book, accepted, cached): {behind:?}")
        });
    assert_eq!(
        system.dlq_depth().await.unwrap(),
        0,
        "no good event dead-lettered"
    );

    let mut figures = Figures::new("redis-stopped");
    for phase in ["before", "outage", "after"] {
        latency_figures(
            &mut figures,
            &format!("read_{phase}"),
            &samples.of(Kind::Read, phase),
        );
    }
    figures
        .add(
            "consumer_during_outage",
            &ready_body["dependencies"]["consumer"]["status"],
        )
        .add("writes", writes.len())
        .millis("cache_caught_up_after_end", caught_up);
    publish(&mut figures, &samples);
}
