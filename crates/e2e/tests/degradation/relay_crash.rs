//! storagesvc crashes (SIGKILL) with events still in its outbox: they go out after restart.

use e2e::load::Kind;
use e2e::system::TOKEN;
use e2e::{Figures, Load, Phase};

use crate::{
    PHASE, accepted_writes, assert_cache_catches_up, assert_every_event_published, options, publish,
};

#[tokio::test]
async fn storagesvc_killed_with_unsent_outbox_rows_sends_them_after_restart() {
    let mut system = options().start().await.unwrap();
    system.start_audit().await.unwrap();
    let books = system.create_books(2).await.unwrap();

    let phase = Phase::new("before");
    let mut load = Load::new(&phase);
    load.write(&system.storagesvc.url(), TOKEN, &books);
    tokio::time::sleep(PHASE).await;

    // RabbitMQ unreachable (partitioned by the proxy): writes land, events pile up unsent.
    phase.set("partitioned");
    system.amqp_proxy.refuse().await;
    tokio::time::sleep(PHASE).await;
    let (_, ready) = system.storagesvc_health("ready").await.unwrap();
    let backlog = ready["dependencies"]["outbox"]["backlog"]
        .as_i64()
        .unwrap_or(0);

    phase.set("crashed");
    system.storagesvc.kill().await.unwrap();
    system.amqp_proxy.restore().unwrap();
    system.storagesvc.restart().await.unwrap();
    let samples = load.finish().await;

    assert!(
        backlog > 0,
        "the outbox had unsent events at the crash: {ready}"
    );
    // Every answered write was accepted; the only failures are requests the crash cut off
    // and connections refused while the process was gone.
    let writes = samples.all(Kind::Write);
    let refused: Vec<_> = writes
        .iter()
        .filter(|write| write.status.is_some_and(|status| status != 200))
        .collect();
    assert!(refused.is_empty(), "writes refused: {refused:?}");
    let cut_off = writes
        .iter()
        .filter(|write| write.status.is_none() && !write.refused)
        .count();
    let (last, accepted) = accepted_writes(&samples);
    let caught_up = assert_cache_catches_up(&system, &last, &accepted).await;
    assert_every_event_published(&system, &accepted).await;
    assert_eq!(system.dlq_depth().await.unwrap(), 0);

    let mut figures = Figures::new("storagesvc-crash-mid-relay");
    figures
        .add("outbox_backlog_at_crash", backlog)
        .add("writes_accepted", accepted.len())
        .add("writes_cut_off_by_the_kill", cut_off)
        .millis("cache_caught_up_after_restart", caught_up);
    publish(&mut figures, &samples);
}
