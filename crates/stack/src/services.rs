//! storagesvc and booksvc as child processes of the stack: started from the stack's own
//! binary under the service's name ([`crate::service_mode`]), each in its own process group
//! (a Ctrl-C in the terminal reaches the stack only, which stops them in order), their logs
//! shown in the terminal one line per event with the service's name in front.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::process::Signal;
use serde_json::Value;
use stack::launcher::{send_signal, service_command, stop_child};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Child;

use crate::service_mode::PARENT_PID_VAR;

/// How long a service gets to shut down gracefully before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a service may take to answer `/healthz/live` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of output kept to explain a failed start.
const RECENT_LINES: usize = 20;

/// One service: how to start it, and the running process if any.
#[derive(Debug)]
pub(crate) struct Service {
    name: &'static str,
    port: u16,
    env: Vec<(&'static str, String)>,
    child: Option<Child>,
    /// How it last went down (`stopped`, `killed`, `exited`), while it is down.
    down: Option<String>,
    output: Arc<Output>,
}

/// What a service printed lately, for the one line that says why its start failed.
#[derive(Debug, Default)]
struct Output {
    recent: Mutex<VecDeque<String>>,
    last_error: Mutex<Option<String>>,
}

impl Service {
    pub(crate) fn new(name: &'static str, port: u16, env: Vec<(&'static str, String)>) -> Self {
        Self {
            name,
            port,
            env,
            child: None,
            down: Some("not-started".to_owned()),
            output: Arc::default(),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `running`, or how it went down.
    pub(crate) fn state(&self) -> String {
        match (&self.child, &self.down) {
            (Some(_), _) => "running".to_owned(),
            (None, Some(down)) => down.clone(),
            (None, None) => "down".to_owned(),
        }
    }

    /// Starts the service and waits until it answers `/healthz/live`.
    pub(crate) async fn start(&mut self, http: &reqwest::Client) -> anyhow::Result<String> {
        if let Some(pid) = self.pid() {
            bail!("{} is already running (pid {pid})", self.name);
        }
        let started = Instant::now();
        let mut child = self.spawn()?;
        let live = format!("{}/healthz/live", self.url());
        loop {
            if let Some(status) = child.try_wait().context("check the service")? {
                // Let the output readers catch the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                bail!(
                    "{} exited during start-up ({status}): {}",
                    self.name,
                    self.output.cause()
                );
            }
            let answered = http
                .get(&live)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if answered {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill().await;
                bail!(
                    "{} did not answer {live} within {START_TIMEOUT:?}: {}",
                    self.name,
                    self.output.cause()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pid = child.id().unwrap_or_default();
        self.child = Some(child);
        self.down = None;
        Ok(format!(
            "{} started: {} (pid {pid}, {:.1}s)",
            self.name,
            self.url(),
            started.elapsed().as_secs_f64()
        ))
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub(crate) async fn stop(&mut self) -> anyhow::Result<String> {
        let Some(mut child) = self.child.take() else {
            bail!("{} is not running ({})", self.name, self.state());
        };
        let graceful = stop_child(&mut child, STOP_GRACE).await.is_some();
        self.down = Some("stopped".to_owned());
        Ok(if graceful {
            format!("{} stopped", self.name)
        } else {
            format!(
                "{} did not stop within {STOP_GRACE:?}; killed it",
                self.name
            )
        })
    }

    /// SIGKILL, as a crash would.
    pub(crate) async fn kill(&mut self) -> anyhow::Result<String> {
        let Some(mut child) = self.child.take() else {
            bail!("{} is not running ({})", self.name, self.state());
        };
        send_signal(&child, Signal::KILL);
        let _ = child.wait().await;
        self.down = Some("killed".to_owned());
        Ok(format!("{} killed (SIGKILL)", self.name))
    }

    /// Resolves when the running process exits by itself; never while none runs.
    /// Cancel-safe: the select loop polls it alongside commands.
    pub(crate) async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        match self.child.as_mut() {
            Some(child) => child.wait().await,
            None => std::future::pending().await,
        }
    }

    /// Records that the process exited by itself; returns the line to show.
    pub(crate) fn note_exit(&mut self, status: std::io::Result<ExitStatus>) -> String {
        self.child = None;
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        // One word: the status table is split on whitespace by scripts.
        self.down = Some("exited".to_owned());
        format!(
            "{} exited by itself ({status}); `start {}` runs it again",
            self.name, self.name
        )
    }

    fn spawn(&mut self) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("find the stack's own binary")?;
        let mut command = service_command(&exe, &self.env)?;
        // One JSON line per event, rendered compactly here, unless the user chose a format.
        let json = std::env::var_os("LOG_FORMAT").is_none();
        if json {
            command.env("LOG_FORMAT", "json");
        }
        command
            .arg0(self.name)
            .env(PARENT_PID_VAR, std::process::id().to_string())
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}", self.name))?;
        self.output = Arc::default();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward(self.name, stdout, Arc::clone(&self.output), json));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward(self.name, stderr, Arc::clone(&self.output), json));
        }
        Ok(child)
    }
}

impl Output {
    fn remember(&self, line: &str, error: Option<String>) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_LINES {
            recent.pop_front();
        }
        recent.push_back(line.to_owned());
        if error.is_some() {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = error;
        }
    }

    /// The last error the service logged, else its last line of output.
    fn cause(&self) -> String {
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        error
            .or_else(|| recent.back().cloned())
            .unwrap_or_else(|| "no output".to_owned())
    }
}

/// Copies the service's output to our stderr, `name | line`, rendering JSON events.
async fn forward(
    name: &'static str,
    pipe: impl AsyncRead + Unpin,
    output: Arc<Output>,
    json: bool,
) {
    let mut reader = BufReader::new(pipe);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end();
        let (text, error) = match json.then(|| render(line)).flatten() {
            Some(rendered) => rendered,
            None => (line.to_owned(), None),
        };
        output.remember(&text, error);
        eprintln!("{name:>10} | {text}");
    }
}

/// One tracing JSON event as `HH:MM:SS LEVEL message key=value…`, and its `error` field
/// (or message) when it is an error.
fn render(line: &str) -> Option<(String, Option<String>)> {
    let event: Value = serde_json::from_str(line).ok()?;
    let level = event.get("level")?.as_str()?;
    let fields = event.get("fields")?.as_object()?;
    let time = event
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.get(11..19))
        .unwrap_or("");
    let message = fields.get("message").and_then(Value::as_str).unwrap_or("");
    let mut text = format!("{time} {level:<5} {message}");
    for (key, value) in fields.iter().filter(|(key, _)| *key != "message") {
        match value.as_str() {
            Some(value) => text.push_str(&format!(" {key}={value}")),
            None => text.push_str(&format!(" {key}={value}")),
        }
    }
    let error = (level == "ERROR").then(|| {
        fields
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or(message)
            .to_owned()
    });
    Some((text, error))
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn renders_a_json_event_on_one_line() {
        let line = r#"{"timestamp":"2026-12-06T20:30:01.123Z","level":"ERROR","fields":{"message":"booksvc failed to start","error":"bind 127.0.0.1:8081: Address in use","port":8081},"target":"booksvc"}"#;
        let (text, error) = render(line).unwrap();
        assert_eq!(
            text,
            "20:30:01 ERROR booksvc failed to start error=bind 127.0.0.1:8081: Address in use port=8081"
        );
        assert_eq!(
            error.as_deref(),
            Some("bind 127.0.0.1:8081: Address in use")
        );
        assert!(render("booksvc: invalid HTTP_PORT").is_none());
    }
}
