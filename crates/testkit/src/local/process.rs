//! Process plumbing shared by the local servers: scratch dirs, the watchdog, process groups,
//! free ports and bounded waits.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tempfile::TempDir;

/// Sub-directory of a scratch dir holding one file per live process group (content: its id).
const GROUPS_DIR: &str = ".testkit-groups";

/// Waits for its parent (the test process) to die, then stops the registered process groups
/// (SIGTERM first, so PostgreSQL releases its shared memory; SIGKILL 2 s later) and removes
/// the scratch dir. It compares its parent pid rather than probing the test pid with
/// `kill -0`, because a dead but unreaped test process still answers `kill -0`.
/// `kill -SIG -PGID` has no `--`: dash's builtin rejects it (and then kills nothing).
/// `read` is a shell builtin: the loop forks only `sleep`.
const WATCHDOG_SCRIPT: &str = r#"
owner=$1; dir=$2
while read -r _ _ _ parent _ < /proc/$$/stat && [ "$parent" = "$owner" ]; do sleep 1; done
signal_all() {
    for f in "$dir/.testkit-groups/"*; do
        [ -f "$f" ] && kill "-$1" "-$(cat "$f")" 2>/dev/null
    done
}
signal_all TERM
sleep 2
signal_all KILL
rm -rf "$dir"
"#;

/// A temporary directory for one server, removed with everything running from it when the
/// handle drops or, failing that, by its watchdog when the test process dies.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    dir: Option<TempDir>,
    watchdog: Child,
}

impl ScratchDir {
    /// Creates `$TMPDIR/testkit-<kind>-XXXX` and starts its watchdog.
    pub(crate) fn new(kind: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("testkit-{kind}-"))
            .tempdir()
            .context("create a scratch dir")?;
        fs::create_dir(dir.path().join(GROUPS_DIR)).context("create the process group registry")?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("testkit-watchdog")
            .arg(std::process::id().to_string())
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C to the test's terminal must not kill the watchdog
            // before it has cleaned up.
            .process_group(0)
            .spawn()
            .context("start the watchdog (`sh` must be installed)")?;
        Ok(Self {
            dir: Some(dir),
            watchdog,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        // `dir` is only taken in `drop`.
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), TempDir::path)
    }

    /// Opens (appending) the log file `name` in the scratch dir, for a child's output.
    pub(crate) fn log_file(&self, name: &str) -> anyhow::Result<File> {
        let path = self.path().join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))
    }

    fn group_file(&self, pgid: Pid) -> PathBuf {
        self.path()
            .join(GROUPS_DIR)
            .join(pgid.as_raw_nonzero().to_string())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Servers registered here should be stopped already; kill any survivor before the
        // directory under it goes away.
        if let Ok(entries) = fs::read_dir(self.path().join(GROUPS_DIR)) {
            for entry in entries.flatten() {
                let pgid = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .and_then(Pid::from_raw);
                if let Some(pgid) = pgid {
                    let _ = kill_process_group(pgid, Signal::KILL);
                }
            }
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        if let Some(dir) = self.dir.take() {
            // PostgreSQL files belong to the postgres user; as root we remove them anyway.
            let _ = dir.close();
        }
    }
}

/// A server process running in its own process group, registered with its scratch dir.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    name: String,
    child: Child,
    pgid: Pid,
    group_file: PathBuf,
    log: PathBuf,
}

impl ServerProcess {
    /// Spawns `command` as a group leader, its output appended to `<name>.log`.
    pub(crate) fn spawn(
        scratch: &ScratchDir,
        name: impl Into<String>,
        mut command: Command,
    ) -> anyhow::Result<Self> {
        let name = name.into();
        let log_name = format!("{name}.log");
        let log = scratch.log_file(&log_name)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicate the log file handle")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {name}: {command:?}"))?;
        let pgid = Pid::from_child(&child);
        let group_file = scratch.group_file(pgid);
        let mut server = Self {
            name,
            child,
            pgid,
            group_file,
            log: scratch.path().join(log_name),
        };
        if let Err(error) = fs::write(&server.group_file, pgid.as_raw_nonzero().to_string()) {
            server.kill();
            return Err(error).context("register the process group with the watchdog");
        }
        Ok(server)
    }

    /// Fails with the log's tail if the process has exited.
    pub(crate) fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); log:\n{}",
                self.name,
                log_tail(&self.log)
            ),
            Err(error) => Err(error).with_context(|| format!("check whether {} runs", self.name)),
        }
    }

    /// The id of the process we started (the group leader).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid while the process runs; `None` once it has exited.
    pub(crate) fn running_pid(&mut self) -> Option<u32> {
        matches!(self.child.try_wait(), Ok(None)).then(|| self.pid())
    }

    /// The last lines of the process's output, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Sends `signal` to the process we started (it shuts its own children down: postmaster,
    /// redis, the RabbitMQ script that forwards to the Erlang VM), waits up to `grace` for it
    /// to exit, then kills the whole group so no straggler keeps a port or file open.
    /// `None` sends nothing: the caller has asked the server to shut down already.
    pub(crate) fn stop(mut self, signal: Option<Signal>, grace: Duration) -> anyhow::Result<()> {
        if let Some(signal) = signal {
            // An error means it has exited already; the wait below collects it.
            let _ = kill_process(self.pgid, signal);
        }
        let exited = wait_with_timeout(&mut self.child, grace);
        self.kill();
        match exited {
            Some(_) => Ok(()),
            None => bail!("{} did not stop within {grace:?}; killed it", self.name),
        }
    }

    /// SIGKILL to the whole group at once, like a machine losing power: no shutdown of any
    /// kind, nothing flushed.
    pub(crate) fn crash(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = kill_process_group(self.pgid, Signal::KILL);
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.group_file);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // After `stop` the group file is gone and this is a no-op on an exited child.
        if self.group_file.exists() {
            self.kill();
        }
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Runs a short command to completion, killing it after `timeout`; fails on a non-zero exit
/// with its output in the error.
pub(crate) fn run_command(mut command: Command, timeout: Duration) -> anyhow::Result<Output> {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {description}"))?;
    // Read the pipes on threads so a chatty command cannot block on a full pipe.
    let stdout = child.stdout.take().map(read_on_thread);
    let stderr = child.stderr.take().map(read_on_thread);
    let status = wait_with_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = Output {
        status: status.unwrap_or_default(),
        stdout: stdout.and_then(|t| t.join().ok()).unwrap_or_default(),
        stderr: stderr.and_then(|t| t.join().ok()).unwrap_or_default(),
    };
    let Some(status) = status else {
        bail!("{description} did not finish within {timeout:?}");
    };
    if !status.success() {
        bail!(
            "{description} failed ({status}):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

fn read_on_thread<R: std::io::Read + Send + 'static>(
    mut pipe: R,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = pipe.read_to_end(&mut buffer);
        buffer
    })
}

/// Calls `probe` every 50 ms until it yields a value, fails, or `timeout` passes.
pub(crate) fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port that was free a moment ago. Never hands out the same port twice in one process,
/// so parallel starts cannot race each other for it; a clash with another process is still
/// possible and is handled by retrying the start.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..20 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .context("find a free port")?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    bail!("no free port found")
}

/// The last ~40 lines of a log file (empty if it cannot be read).
pub(crate) fn log_tail(path: &Path) -> String {
    const TAIL_BYTES: u64 = 4096;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_ok() {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
