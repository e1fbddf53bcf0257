//! [`eventually`]: waiting for a condition that becomes true in its own time (an event
//! consumed, a breaker reopened, a replica ready), the one polling loop every test uses.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] asks again: short against the seconds a test waits, long enough
/// that the asking does not load what it watches.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Asks `check` every [`POLL_INTERVAL`] until it returns true or `within` has passed; returns
/// whether it ever did. `check` is asked at least once.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
