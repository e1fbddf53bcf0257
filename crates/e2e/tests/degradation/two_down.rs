//! Two dependencies down at once: PostgreSQL + RabbitMQ, and Redis + storagesvc.

use e2e::load::Kind;
use e2e::system::{TOKEN, WITHIN_BUDGET};
use e2e::{Figures, Load, Phase, eventually};

use crate::{
    PHASE, RECOVERY, accepted_writes, assert_cache_catches_up, assert_every_event_published,
    assert_reads_answered, latency_figures, options, publish,
};

/// PostgreSQL stopped and RabbitMQ unreachable (both services partitioned from it by the
/// proxy): reads stale, writes 503; afterwards every accepted write's event arrives.
#[tokio::test]
async fn postgres_and_rabbitmq_down_reads_stale_writes_503_no_event_lost() {
    let system = options().private_postgres().start().await.unwrap();
    system.start_audit().await.unwrap();
    let read_books = system.create_books(4).await.unwrap();
    let write_books = system.create_books(2).await.unwrap();
    system.read_all(&read_books).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.read(&system.booksvc.url(), &read_books, 2);
    load.write(&system.storagesvc.url(), TOKEN, &write_books);
    tokio::time::sleep(PHASE).await;

    phase.set("stopping");
    system.amqp_proxy.refuse().await;
    system.private_postgres().stop().await.unwrap();
    phase.set("outage");
    tokio::time::sleep(PHASE).await;
    let (storagesvc_ready, _) = system.storagesvc_health("ready").await.unwrap();
    let (booksvc_ready, _) = system.booksvc_ready().await.unwrap();

    phase.set("restarting");
    system.private_postgres().start_again().await.unwrap();
    system.amqp_proxy.restore().unwrap();
    phase.set("after");
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    assert_eq!(storagesvc_ready, 503);
    assert_eq!(booksvc_ready, 200);
    for read in assert_reads_answered(&samples, "outage") {
        assert_eq!(read.x_cache.as_deref(), Some("stale"), "{read:?}");
    }
    let outage_writes = samples.of(Kind::Write, "outage");
    assert!(!outage_writes.is_empty());
    for write in &outage_writes {
        assert_eq!(write.status, Some(503), "{write:?}");
        assert!(
            write.json_error && write.latency <= WITHIN_BUDGET,
            "{write:?}"
        );
    }
    let (last, accepted) = accepted_writes(&samples);
    let caught_up = assert_cache_catches_up(&system, &last, &accepted).await;
    assert_every_event_published(&system, &accepted).await;
    assert_eq!(system.dlq_depth().await.unwrap(), 0);

    let mut figures = Figures::new("postgres-and-rabbitmq-down");
    latency_figures(
        &mut figures,
        "read_outage",
        &samples.of(Kind::Read, "outage"),
    );
    latency_figures(&mut figures, "write_outage", &outage_writes);
    figures.millis("cache_caught_up_after_end", caught_up);
    publish(&mut figures, &samples);
}

/// Redis stopped and storagesvc killed: nothing can answer a book, so booksvc says so with a
/// quick 503 JSON error and `Retry-After` — never a 500 or a hang — and recovers after.
#[tokio::test]
async fn redis_and_storagesvc_down_answers_503_with_retry_after_then_recovers() {
    let mut system = options().private_redis().start().await.unwrap();
    let books = system.create_books(2).await.unwrap();
    system.read_all(&books).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.read(&system.booksvc.url(), &books, 2);
    tokio::time::sleep(PHASE).await;

    phase.set("stopping");
    system.private_redis().stop().await.unwrap();
    system.storagesvc.kill().await.unwrap();
    phase.set("outage");
    tokio::time::sleep(PHASE).await;
    let probe = system
        .get_booksvc(&format!("/books/{}", books[0]))
        .await
        .unwrap();
    let retry_after = probe.headers().get("retry-after").cloned();
    let (ready, ready_body) = system.booksvc_ready().await.unwrap();

    phase.set("restarting");
    system.private_redis().start_again().await.unwrap();
    system.storagesvc.restart().await.unwrap();
    phase.set("after");
    let recovered = eventually(RECOVERY, || async {
        let response = system.get_booksvc(&format!("/books/{}", books[0])).await;
        response.is_ok_and(|r| r.status() == 200 && r.headers()["x-cache"] == "miss")
    })
    .await;
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    assert!(retry_after.is_some(), "a 503 says when to retry");
    assert_eq!(ready, 200, "{ready_body}");
    assert_eq!(ready_body["mode"], "UNAVAILABLE", "{ready_body}");
    let outage_reads = samples.of(Kind::Read, "outage");
    assert!(!outage_reads.is_empty());
    for read in &outage_reads {
        assert_eq!(read.status, Some(503), "{read:?}");
        assert!(read.json_error && read.latency <= WITHIN_BUDGET, "{read:?}");
    }
    assert!(recovered, "reads answered again once both are back");
    assert!(
        samples
            .all(Kind::Read)
            .iter()
            .all(|read| read.is_answer_below_500() || read.status == Some(503)),
        "only 503 while nothing can answer, never another 5xx"
    );

    let mut figures = Figures::new("redis-and-storagesvc-down");
    latency_figures(&mut figures, "read_outage", &outage_reads);
    latency_figures(&mut figures, "read_after", &samples.of(Kind::Read, "after"));
    publish(&mut figures, &samples);
}
