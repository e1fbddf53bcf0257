//! The servers as Docker containers, through testcontainers.
//!
//! Every container operation runs on one dedicated runtime owned by this module: each
//! `#[tokio::test]` has its own runtime, and a shared container (or the Docker client inside
//! it) must not depend on the runtime of whichever test happened to start it.
//!
//! Host ports are chosen by us and mapped explicitly, so a stopped and restarted container
//! comes back on the same URL. Containers carry a per-process label; a watchdog process
//! removes them with the `docker` CLI when the test process exits (shared containers are
//! never dropped), and a private handle removes its container on drop.

pub(crate) mod postgres;
pub(crate) mod rabbitmq;
pub(crate) mod redis;

use std::future::Future;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use anyhow::Context as _;
use testcontainers_modules::testcontainers::{ContainerAsync, Image};
use tokio::runtime::Runtime;

/// The label every container of this process carries, for the watchdog.
pub(crate) const SESSION_LABEL: &str = "testkit.session";
/// Image pulls on a cold machine are slow; start-up itself takes seconds.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes this process's containers once the process has died.
const WATCHDOG_SCRIPT: &str = r#"
owner=$1; session=$2
while read -r _ _ _ parent _ < /proc/$$/stat && [ "$parent" = "$owner" ]; do sleep 1; done
command -v docker >/dev/null || exit 0
docker ps -aq --filter "label=testkit.session=$session" | xargs -r docker rm -f -v >/dev/null
"#;

/// This process's session id (the label value), starting the container watchdog on first use.
pub(crate) fn session() -> &'static str {
    static SESSION: OnceLock<String> = OnceLock::new();
    SESSION.get_or_init(|| {
        let session = uuid::Uuid::new_v4().simple().to_string();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("testkit-container-watchdog")
            .arg(std::process::id().to_string())
            .arg(&session)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        if let Err(error) = watchdog {
            // Containers still work; only clean-up after a crash is lost. Say so once.
            eprintln!(
                "testkit: no container watchdog ({error}); shared containers may outlive this run"
            );
        }
        session
    })
}

fn runtime() -> anyhow::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("testkit-containers")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("start the containers runtime: {e}"))
}

/// Runs `future` to completion on the containers runtime; for plain (non-async) threads.
pub(crate) fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    runtime()?.block_on(future)
}

/// Runs `future` on the containers runtime and awaits it from any runtime.
pub(crate) async fn run<T: Send + 'static>(
    future: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    runtime()?
        .spawn(future)
        .await
        .context("container task panicked")?
}

/// Removes a container from a `Drop` impl: testcontainers' own drop needs a runtime of the
/// caller's, which a test's runtime may not offer at that point.
pub(crate) fn remove_on_drop<I: Image + 'static>(container: ContainerAsync<I>) {
    let Ok(runtime) = runtime() else { return };
    let (done_tx, done_rx) = mpsc::channel();
    runtime.spawn(async move {
        let _ = container.rm().await;
        let _ = done_tx.send(());
    });
    // Bounded: a stuck engine must not hang the test; the watchdog removes it later.
    let _ = done_rx.recv_timeout(Duration::from_secs(30));
}

/// Polls a blocking probe from async code until it holds or `READY_TIMEOUT` passes.
pub(crate) async fn wait_until(
    what: &str,
    probe: impl Fn() -> bool + Send + Clone + 'static,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let attempt = probe.clone();
        if tokio::task::spawn_blocking(attempt).await.unwrap_or(false) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what} not ready within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
