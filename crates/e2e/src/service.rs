//! [`Service`]: one service binary running as a child process on a fixed port.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stack::Signal;
use stack::launcher::{send_signal, service_command};
use tokio::process::Child;

/// How long a (re)started service gets to answer `/healthz/live`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A service process. It keeps its port across restarts, so whoever talks to it (booksvc
/// to storagesvc, through a proxy) needs no reconfiguration.
pub struct Service {
    name: &'static str,
    binary: PathBuf,
    env: Vec<(&'static str, String)>,
    port: u16,
    child: Option<Child>,
    client: reqwest::Client,
}

impl Service {
    /// Starts `binary` with `env` (plus `HTTP_PORT`) and waits until it is live.
    pub async fn start(
        name: &'static str,
        binary: PathBuf,
        env: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Service> {
        let mut service = Service {
            name,
            binary,
            env,
            port: free_port()?,
            child: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        service.restart().await?;
        Ok(service)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the process (again, after a kill or an exit) and waits until it is live.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let mut env = self.env.clone();
        env.push(("HTTP_PORT", self.address()));
        let mut command = service_command(&self.binary, &env)?;
        // Child output bypasses the test harness's capture: keep it off unless asked for.
        let output = || match std::env::var_os("TEST_LOG") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        };
        command.stdout(output()).stderr(output());
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_live().await
    }

    async fn wait_live(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let live = format!("{}/healthz/live", self.url());
        loop {
            let live = self.client.get(&live).send().await;
            // Checked after the request: a live answer from a process that has just failed
            // to bind the port would be somebody else's.
            if let Some(status) = self.child_mut()?.try_wait()? {
                self.child = None;
                bail!("{} exited during start-up: {status}", self.name);
            }
            if live.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not live within {START_TIMEOUT:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: a crash, no chance to clean up. Waits until the process is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.take_child()?;
        send_signal(&child, Signal::KILL);
        child.wait().await?;
        Ok(())
    }

    /// Sends SIGTERM without waiting: the graceful shutdown begins.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("not running")?;
        send_signal(child, Signal::TERM);
        Ok(())
    }

    /// Waits for the process to exit, at most `bound`; returns its status and how long the
    /// wait took. A process still running after `bound` is killed and the call fails.
    pub async fn wait_exit(&mut self, bound: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        let mut child = self.take_child()?;
        match tokio::time::timeout(bound, child.wait()).await {
            Ok(status) => Ok((status?, started.elapsed())),
            Err(_) => {
                let _ = child.kill().await;
                bail!("{} still running {bound:?} after SIGTERM", self.name)
            }
        }
    }

    fn child_mut(&mut self) -> anyhow::Result<&mut Child> {
        self.child.as_mut().context("not running")
    }

    fn take_child(&mut self) -> anyhow::Result<Child> {
        self.child
            .take()
            .with_context(|| format!("{} is not running", self.name))
    }
}

/// A port nothing listens on right now (the OS picks it; the service binds it a moment
/// later), never one handed out before in this process: the OS may offer a port again as
/// soon as it is released, and two scenarios starting services at once must not share one
/// (the second service would fail to bind while the first answered its health checks).
pub fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}
