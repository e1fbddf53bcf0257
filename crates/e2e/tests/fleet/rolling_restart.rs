//! A rolling restart of each service through its balancer: one replica at a time, SIGTERM,
//! wait for the exit, start it again, wait until the balancer sends it traffic.

use e2e::fleet::{REPLICAS, Which};

use crate::{PHASE, Scenario};

/// The phase name of each step (phases are `&'static str`).
fn step(which: Which, replica: usize) -> &'static str {
    match (which, replica) {
        (Which::Storagesvc, 0) => "storagesvc-0-restarting",
        (Which::Storagesvc, _) => "storagesvc-1-restarting",
        (Which::Booksvc, 0) => "booksvc-0-restarting",
        (Which::Booksvc, _) => "booksvc-1-restarting",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_of_both_services_fail_no_request_and_lose_nothing() {
    let mut scenario = Scenario::start().await;
    let mut out_of_rotation = Vec::new();
    for which in [Which::Storagesvc, Which::Booksvc] {
        for replica in 0..REPLICAS {
            scenario.phase.set(step(which, replica));
            let took = scenario
                .fleet
                .restart_gracefully(which, replica)
                .await
                .unwrap();
            out_of_rotation.push(took);
            scenario.phase.set("between");
            tokio::time::sleep(PHASE / 3).await;
        }
    }
    scenario.phase.set("after");
    tokio::time::sleep(PHASE).await;

    let mut outcome = scenario.finish().await;
    let mut figures = outcome.figures("rolling-restart");
    let slowest = out_of_rotation.iter().max().copied().unwrap_or_default();
    figures
        .add("restarts", out_of_rotation.len())
        .millis("slowest_restart", slowest);
    figures.print(crate::figures_dir());

    outcome.assert_nothing_lost();
    outcome.assert_no_failed_request();
}
