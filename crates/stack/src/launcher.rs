//! Runs storagesvc and booksvc as child processes: the real binaries, so a caller can signal
//! them (SIGTERM, SIGKILL) and read their exit codes. Shared by `cargo run -p stack` and the
//! end-to-end tests (`crates/e2e`).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};

/// The directory of the running executable: `cargo build` puts the service binaries beside it.
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("this executable has no parent directory")
}

/// The command that runs the service binary at `path` with `env` on top of the inherited
/// environment: stdin closed, killed if the handle is dropped, logs `pretty` unless
/// `LOG_FORMAT` says otherwise. The caller decides where stdout/stderr go and spawns it.
pub fn service_command(path: &Path, env: &[(&str, String)]) -> anyhow::Result<Command> {
    if !path.exists() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        bail!(
            "{} not found: build it with `cargo build -p {name}` (or run this with `cargo run -p stack`)",
            path.display()
        );
    }
    let mut command = Command::new(path);
    command
        .env(
            "LOG_FORMAT",
            std::env::var("LOG_FORMAT").unwrap_or_else(|_| "pretty".to_owned()),
        )
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // We hand booksvc a REDIS_URL; a REDIS_ADDR inherited from the user's shell would make
    // it refuse to start (setting both is a configuration error).
    if env.iter().any(|(key, _)| *key == "REDIS_URL") {
        command.env_remove("REDIS_ADDR");
    }
    Ok(command)
}

/// Sends `signal` to the child; a child that has already exited is not an error.
pub fn send_signal(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|id| Pid::from_raw(id as i32)) {
        let _ = kill_process(pid, signal);
    }
}

/// SIGTERM, then waits up to `grace` for the graceful shutdown; SIGKILL after that.
/// Returns the exit status when the child exited by itself within `grace`.
pub async fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    send_signal(child, Signal::TERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    }
}
