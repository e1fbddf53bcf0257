//! A private Redis server on a free port, without persistence while it runs.
//!
//! `stop` asks Redis for `SHUTDOWN SAVE`, so `start_again` comes back with the same keys,
//! like a restarted production Redis with persistence would; while running nothing is
//! written to disk.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustix::process::Signal;

use super::{ScratchDir, ServerProcess, free_port, poll_until};
use crate::probe::{redis_answers, redis_command};

const INSTALL_HINT: &str =
    "apt-get install redis-server (or: apt-get install postgresql redis-server rabbitmq-server)";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;

#[derive(Debug)]
pub(crate) struct LocalRedis {
    // Declared before `scratch`: the server stops before its directory goes away.
    server: Mutex<Option<ServerProcess>>,
    scratch: ScratchDir,
    port: u16,
}

impl LocalRedis {
    pub(crate) fn start() -> anyhow::Result<Self> {
        let scratch = ScratchDir::new("redis")?;
        let mut this = Self {
            server: Mutex::new(None),
            scratch,
            port: free_port()?,
        };
        let mut attempt = 1;
        loop {
            match this.launch() {
                Ok(()) => return Ok(this),
                // Most likely the port was taken between picking and binding; a missing
                // binary fails the same way every time and is reported after the last try.
                Err(_) if attempt < START_ATTEMPTS => {
                    attempt += 1;
                    this.port = free_port()?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `SHUTDOWN SAVE` (keys survive the restart); SIGTERM if Redis does not answer.
    pub(crate) fn stop(&self) -> anyhow::Result<()> {
        let Some(server) = self.lock().take() else {
            return Ok(());
        };
        let signal = match redis_command(self.port, "SHUTDOWN SAVE") {
            Ok(_) => None,
            Err(_) => Some(Signal::TERM),
        };
        server.stop(signal, STOP_TIMEOUT)
    }

    pub(crate) fn start_again(&self) -> anyhow::Result<()> {
        if let Some(server) = self.lock().as_mut() {
            if server.ensure_running().is_ok() {
                return Ok(());
            }
        }
        self.launch()
            .with_context(|| format!("restart Redis on port {}", self.port))
    }

    fn launch(&self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.scratch.path());
        let mut server = ServerProcess::spawn(&self.scratch, "redis", command)
            .with_context(|| format!("redis-server must be in PATH; {INSTALL_HINT}"))?;
        let ready = poll_until("Redis", READY_TIMEOUT, || {
            server.ensure_running()?;
            Ok(redis_answers(self.port).then_some(()))
        });
        if let Err(error) = ready {
            let tail = server.log_tail();
            drop(server);
            bail!("{error:#}\nRedis log:\n{tail}");
        }
        *self.lock() = Some(server);
        Ok(())
    }

    /// The server's pid while it runs (`None` when stopped or dead).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock().as_mut().and_then(ServerProcess::running_pid)
    }

    /// SIGKILL to the server's process group: a crash, not a shutdown.
    /// [`Self::start_again`] brings it back on the same port and data.
    pub(crate) fn kill(&self) {
        // Dropping a running server process kills its whole group and reaps it.
        drop(self.lock().take());
    }

    /// Where the server keeps its data.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.scratch.path().to_path_buf()
    }

    fn lock(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
