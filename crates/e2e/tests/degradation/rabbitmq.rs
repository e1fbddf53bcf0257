//! RabbitMQ stopped (`stop_app`) and fully restarted while storagesvc takes a steady stream
//! of writes: no write is refused, every write's event reaches booksvc's cache.

use e2e::load::Kind;
use e2e::system::TOKEN;
use e2e::{Figures, Load, Phase};

use crate::{
    PHASE, accepted_writes, assert_every_event_published, assert_writes_accepted, cache_catches_up,
    latency_figures, options, publish,
};

#[tokio::test]
async fn rabbitmq_stop_app_and_restart_refuse_no_write_and_lose_no_event() {
    let system = options().private_rabbitmq().start().await.unwrap();
    system.start_audit().await.unwrap();
    let books = system.create_books(4).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.write(&system.storagesvc.url(), TOKEN, &books);
    tokio::time::sleep(PHASE).await;

    phase.set("stop_app");
    let broker = system.private_rabbitmq();
    broker.stop_app().await.unwrap();
    tokio::time::sleep(PHASE).await;
    broker.start_app().await.unwrap();
    phase.set("between");
    tokio::time::sleep(PHASE).await;

    phase.set("restart");
    broker.stop().await.unwrap();
    tokio::time::sleep(PHASE).await;
    broker.start_again().await.unwrap();
    phase.set("after");
    tokio::time::sleep(PHASE).await;
    let samples = load.finish().await;

    let writes = samples.all(Kind::Write);
    let refused: Vec<_> = writes.iter().filter(|w| w.status != Some(200)).collect();
    assert!(refused.is_empty(), "writes refused: {refused:?}");
    for phase in ["before", "stop_app", "between", "restart", "after"] {
        // The outbox takes every write whatever the broker does; none may be missing either.
        assert_writes_accepted(&samples, phase);
    }
    let (last, accepted) = accepted_writes(&samples);
    assert_eq!(
        last.len(),
        books.len(),
        "every book has accepted versions to catch up on"
    );
    let caught_up = cache_catches_up(&system, &last).await;
    let caught_up = caught_up.unwrap_or_else(|behind| {
        panic!("booksvc's cache never got these (book, accepted, cached): {behind:?}")
    });
    assert_every_event_published(&system, &accepted).await;
    assert_eq!(
        system.dlq_depth().await.unwrap(),
        0,
        "no event dead-lettered"
    );

    let mut figures = Figures::new("rabbitmq-stop-app-and-restart");
    figures
        .add("writes", writes.len())
        .add("writes_refused", refused.len());
    for phase in ["before", "stop_app", "restart", "after"] {
        latency_figures(
            &mut figures,
            &format!("write_{phase}"),
            &samples.of(Kind::Write, phase),
        );
    }
    figures.millis("cache_caught_up_after_end", caught_up);
    publish(&mut figures, &samples);
}
