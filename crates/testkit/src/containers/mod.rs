//! The servers as Docker containers, through testcontainers.
//!
//! Every container operation runs on one dedicated runtime owned by this module: each
//! `#[tokio::test]` has its own runtime, and a shared container (or the Docker client inside
//! it) must not depend on the runtime of whichever test happened to start it.
//!
//! Images: the official ones when the engine has or can pull them, otherwise stand-ins built
//! from Debian's packages (`images`).
//!
//! Host ports are chosen by us and mapped explicitly, so a stopped and restarted container
//! comes back on the same URL. Containers carry a per-process label; a watchdog process
//! removes them with the `docker` CLI when the test process exits (shared containers are
//! never dropped), and a private handle removes its container on drop.

pub(crate) mod images;
pub(crate) mod postgres;
pub(crate) mod rabbitmq;
pub(crate) mod redis;

use std::future::Future;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use anyhow::Context as _;
use testcontainers_modules::testcontainers::core::ExecCommand;
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

/// The image to run for `choice` (official or stand-in); asking the engine blocks, so it runs
/// off the async workers.
pub(crate) async fn image_for(choice: &'static images::Choice) -> anyhow::Result<images::Image> {
    tokio::task::spawn_blocking(move || images::image(choice))
        .await
        .context("image choice panicked")?
}

/// Runs `command` in `container` to its end; fails unless it exits 0, quoting its output.
///
/// Reads the output streams to their close and has `sh` print the exit status, rather than
/// using testcontainers' exit-code condition: podman's exec inspection reports exit code 0
/// while the command still runs, so that condition returns at once there. (Asking the
/// `ExecResult` for its code would also hold a non-`Sync` borrow across an await.)
pub(crate) async fn exec_ok<I: Image>(
    container: &ContainerAsync<I>,
    command: &[&str],
) -> anyhow::Result<()> {
    let description = command.join(" ");
    let wrapped = [EXIT_REPORTER, "sh"].iter().chain(command).copied();
    let run = async {
        let mut result = container
            .exec(ExecCommand::new(
                std::iter::once("sh").chain(["-c"]).chain(wrapped),
            ))
            .await?;
        let stdout = String::from_utf8_lossy(&result.stdout_to_vec().await?).into_owned();
        let stderr = String::from_utf8_lossy(&result.stderr_to_vec().await?).into_owned();
        drop(result);
        let (output, code) = stdout
            .trim_end()
            .rsplit_once(EXIT_MARKER)
            .map_or((stdout.as_str(), None), |(output, code)| {
                (output, Some(code))
            });
        if code == Some("0") {
            return Ok(());
        }
        Err(anyhow::anyhow!(
            "exit status {}: {} {}",
            code.unwrap_or("unknown"),
            stderr.trim(),
            output.trim()
        ))
    };
    tokio::time::timeout(READY_TIMEOUT, run)
        .await
        .with_context(|| format!("`{description}` timed out"))?
        .with_context(|| format!("`{description}` failed"))
}

/// Printed by [`EXIT_REPORTER`] before the exit status of the command it ran.
const EXIT_MARKER: &str = "testkit-exit=";
/// `sh -c` script: runs its arguments, then prints the exit status after [`EXIT_MARKER`].
const EXIT_REPORTER: &str = r#""$@"; echo "testkit-exit=$?""#;

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
