//! The test kit against real servers (local backend here; containers where Docker runs).
//!
//! One test binary, so the shared servers start once for all of these tests. Timings are
//! printed with `--nocapture` for the record.

mod postgres;
mod proxy;
mod rabbitmq;
mod rabbitmq_cluster;
mod redis;
mod watchdog;

use std::time::{Duration, Instant};

/// Runs `step`, printing how long it took: start-up times are part of what we measure.
async fn timed<T>(what: &str, step: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let value = step.await;
    eprintln!("timing: {what}: {:?}", started.elapsed());
    value
}

/// Retries `attempt` until it succeeds or `timeout` passes; the last error fails the test.
async fn eventually<T, E: std::fmt::Debug, F: Future<Output = Result<T, E>>>(
    timeout: Duration,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) if Instant::now() > deadline => {
                panic!("still failing after {timeout:?}: {error:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
