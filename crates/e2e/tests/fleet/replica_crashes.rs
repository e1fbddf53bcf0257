//! Crashing replicas: `SIGKILL` of a storagesvc replica in the middle of relaying a burst of
//! events, then of a booksvc replica while it holds unacknowledged deliveries.
//!
//! Requests in flight on a replica when it dies get no answer. The balancer retries those
//! on the other replica (`retry-on conn-failure empty-response`), so the client normally
//! sees nothing; what it does see is counted, and must never be a refusal by a service.

use std::time::{Duration, Instant};

use e2e::load::create_burst;
use e2e::system::TOKEN;
use testkit::Direction;

use crate::{PHASE, Scenario};

/// Books created by each burst, and how many requests at once.
const BURST: usize = 300;
const BURST_CLIENTS: usize = 8;
/// booksvc 0's Redis latency while it is to be caught holding deliveries: each event it
/// applies takes a few round trips, so its prefetched deliveries wait unacknowledged.
const SLOW_REDIS: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_relaying_storagesvc_and_a_consuming_booksvc_loses_nothing() {
    let mut scenario = Scenario::start().await;
    let storagesvc_url = scenario.fleet.storagesvc_lb.url();

    // storagesvc 0 dies while the outbox holds a burst the relays are working through.
    scenario.phase.set("burst");
    let burst = {
        let (url, phase) = (storagesvc_url.clone(), scenario.phase.clone());
        tokio::spawn(async move { create_burst(&url, TOKEN, BURST, BURST_CLIENTS, &phase).await })
    };
    let unsent_at_kill = wait_for(
        || async { scenario.fleet.outbox_unsent().await.unwrap_or(0) },
        10,
    )
    .await;
    scenario.phase.set("storagesvc-killed");
    scenario.fleet.storagesvc[0].kill().await.unwrap();
    scenario.extra.extend(burst.await.unwrap());
    tokio::time::sleep(PHASE).await;
    scenario.phase.set("storagesvc-restarting");
    scenario.fleet.storagesvc[0].restart().await.unwrap();
    scenario.fleet.wait_all_in_rotation().await.unwrap();
    scenario.phase.set("storagesvc-back");
    tokio::time::sleep(PHASE).await;

    // booksvc 0 dies while it holds deliveries it has not acknowledged.
    let redis = &scenario.fleet.redis_proxies[0];
    redis.set_latency(Direction::Downstream, SLOW_REDIS);
    scenario.phase.set("burst-2");
    let burst = {
        let (url, phase) = (storagesvc_url.clone(), scenario.phase.clone());
        tokio::spawn(async move { create_burst(&url, TOKEN, BURST, BURST_CLIENTS, &phase).await })
    };
    let in_flight_at_kill = wait_for(
        || async { scenario.fleet.booksvc_in_flight(0).await.unwrap_or(0.0) as i64 },
        10,
    )
    .await;
    scenario.phase.set("booksvc-killed");
    scenario.fleet.booksvc[0].kill().await.unwrap();
    redis.set_latency(Direction::Downstream, Duration::ZERO);
    scenario.extra.extend(burst.await.unwrap());
    tokio::time::sleep(PHASE).await;
    scenario.phase.set("booksvc-restarting");
    scenario.fleet.booksvc[0].restart().await.unwrap();
    scenario.fleet.wait_all_in_rotation().await.unwrap();
    scenario.phase.set("after");
    tokio::time::sleep(PHASE).await;

    let mut outcome = scenario.finish().await;
    let mut figures = outcome.figures("replica-crashes");
    let failed = outcome.failed().len();
    figures
        .add("outbox_unsent_at_kill", unsent_at_kill)
        .add("booksvc_in_flight_at_kill", in_flight_at_kill);
    figures.print(crate::figures_dir());

    outcome.assert_nothing_lost();
    assert!(
        unsent_at_kill > 0,
        "storagesvc 0 was killed with events still to relay"
    );
    assert!(
        in_flight_at_kill > 0,
        "booksvc 0 was killed holding deliveries"
    );
    // Only requests in flight on a dying replica may go unanswered, and the balancer
    // retries those: a handful at most, never a stream of errors.
    assert!(
        failed <= 2 * (BURST_CLIENTS + crate::READERS + crate::WRITE_BOOKS),
        "{failed} failed requests: {:?}",
        outcome.failed()
    );
}

/// Polls `probe` every 10 ms until it reads above 0 or `seconds` pass; returns the last
/// reading.
async fn wait_for<F, Fut>(mut probe: F, seconds: u64) -> i64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = i64>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let reading = probe().await;
        if reading > 0 || Instant::now() > deadline {
            return reading;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
