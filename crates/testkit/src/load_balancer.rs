//! [`LoadBalancer`]: a real HAProxy in front of the replicas of one service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::local::haproxy::LocalHaproxy;
use crate::worker;

/// A private HAProxy balancing HTTP over a fixed set of replicas (`host:port` each), taking
/// a replica out of rotation while its readiness route does not answer 200. Always a local
/// process from Debian's `haproxy` package, whatever the backend. Dropping it stops it.
#[derive(Debug, Clone)]
pub struct LoadBalancer {
    inner: Arc<LocalHaproxy>,
}

impl LoadBalancer {
    /// Starts HAProxy over `replicas`, checking `GET <check_path>` on each.
    ///
    /// # Errors
    /// When HAProxy is not installed (the error says what to install) or does not start.
    pub async fn start(replicas: &[String], check_path: &str) -> anyhow::Result<LoadBalancer> {
        let (replicas, check_path) = (replicas.to_vec(), check_path.to_owned());
        let inner =
            worker::run_blocking(move || LocalHaproxy::start(&replicas, &check_path)).await?;
        Ok(LoadBalancer {
            inner: Arc::new(inner),
        })
    }

    /// `http://127.0.0.1:<port>`: where clients send their requests.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port())
    }

    /// For each replica, in the order given to [`LoadBalancer::start`]: whether HAProxy
    /// sends it traffic now (its last checks passed).
    pub async fn replicas_up(&self) -> anyhow::Result<Vec<bool>> {
        let inner = Arc::clone(&self.inner);
        worker::run_blocking(move || inner.servers_up()).await
    }

    /// Waits until HAProxy sees replica `index` as up (or down, with `up = false`).
    pub async fn wait_replica(
        &self,
        index: usize,
        up: bool,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let states = self.replicas_up().await?;
            if states.get(index) == Some(&up) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "replica {index} not {} within {within:?}: {states:?}",
                    if up { "up" } else { "down" }
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
