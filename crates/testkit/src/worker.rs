//! Runs blocking server management off the async runtime, on a plain thread.
//!
//! Each `#[tokio::test]` has its own runtime, and shared servers must outlive the runtime of
//! the test that started them. Local servers are therefore managed with `std::process` and
//! blocking waits only; this module lets async callers await that work without tying it to
//! their runtime (and without `block_in_place`, which the default current-thread test
//! runtime forbids).

use anyhow::Context as _;

/// Runs `work` on a new plain thread and awaits its result.
pub(crate) async fn run_blocking<T, F>(work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("testkit-worker".to_owned())
        .spawn(move || {
            // The receiver is gone only if the awaiting test was cancelled; nobody wants the result.
            let _ = tx.send(work());
        })
        .context("spawn a testkit worker thread")?;
    rx.await.context("testkit worker thread panicked")?
}
