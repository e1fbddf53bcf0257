//! Starting the stack binary, talking to it, and checking what it leaves behind.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The stack binary cargo built for these tests.
pub(crate) const STACK: &str = env!("CARGO_BIN_EXE_stack");
/// Generous: RabbitMQ alone takes 5-10 s, and a loaded CI machine several times that.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(240);

/// Two ports free a moment ago, for booksvc and storagesvc.
///
/// Taken *below* the kernel's ephemeral range (`ip_local_port_range`): a port the OS hands out
/// for `:0` is also what it hands out as the source port of outgoing connections, and the stack
/// opens dozens of them (to PostgreSQL, Redis, RabbitMQ, and Erlang's own) between this pick
/// and booksvc binding it. Once in CI booksvc found its port taken that way.
pub(crate) fn free_ports() -> (u16, u16) {
    (free_port(), free_port())
}

/// A port below the ephemeral range that is free now and was never handed out before in this
/// process (the tests of this binary run in parallel).
fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().max(20_001);
    let span = u32::from(low) - 20_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Spread the picks (a different start per process, a stride across the span) so two
        // test binaries run one after the other do not walk the same ports.
        let offset = (std::process::id()
            .wrapping_mul(7919)
            .wrapping_add(n.wrapping_mul(389)))
            % span;
        let port = u16::try_from(20_000 + offset).expect("below the ephemeral range");
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.push(port);
        return port;
    }
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The environment every stack of these tests gets: local servers (never containers) and
/// cache entries that go stale after a second, so outages show quickly.
pub(crate) fn stack_env(command: &mut Command) -> &mut Command {
    command
        .env("TESTKIT_BACKEND", "local")
        .env("CACHE_FRESH_TTL", "1s")
        .env_remove("LOG_FORMAT")
}

/// A stack started as `stack --booksvc-port P --storagesvc-port Q`, output in files.
pub(crate) struct RunningStack {
    pub(crate) child: Child,
    pub(crate) booksvc_port: u16,
    pub(crate) storagesvc_port: u16,
    pub(crate) dir: tempfile::TempDir,
}

impl RunningStack {
    pub(crate) fn start() -> Self {
        Self::start_with(|command| {
            stack_env(command);
        })
    }

    /// The stack as a reader of the docs starts it: the documented defaults (entries fresh
    /// for 5 s, the dev write token), only the servers forced to local processes.
    pub(crate) fn start_as_documented() -> Self {
        Self::start_with(|command| {
            command
                .env("TESTKIT_BACKEND", "local")
                .env_remove("CACHE_FRESH_TTL")
                .env_remove("STORAGESVC_WRITE_TOKEN")
                .env_remove("LOG_FORMAT");
        })
    }

    fn start_with(environment: impl FnOnce(&mut Command)) -> Self {
        let (booksvc_port, storagesvc_port) = free_ports();
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(STACK);
        environment(&mut command);
        command
            .args(["--booksvc-port", &booksvc_port.to_string()])
            .args(["--storagesvc-port", &storagesvc_port.to_string()])
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout")).unwrap())
            .stderr(File::create(dir.path().join("stderr")).unwrap());
        let child = command.spawn().unwrap();
        let mut stack = Self {
            child,
            booksvc_port,
            storagesvc_port,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !stack.stdout().contains("stack: up in") {
            if let Some(status) = stack.child.try_wait().unwrap() {
                panic!(
                    "the stack exited ({status}) before it was up:\n{}",
                    stack.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the stack was not up within {START_TIMEOUT:?}:\n{}",
                stack.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        stack
    }

    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub(crate) fn booksvc(&self) -> String {
        format!("http://127.0.0.1:{}", self.booksvc_port)
    }

    pub(crate) fn storagesvc(&self) -> String {
        format!("http://127.0.0.1:{}", self.storagesvc_port)
    }

    /// `stack ctl --booksvc-port P WORDS…`: exit status and stdout+stderr.
    pub(crate) fn ctl(&self, words: &str) -> (ExitStatus, String) {
        ctl(self.booksvc_port, words)
    }

    /// SIGINT, as Ctrl-C in its terminal sends; waits for the exit.
    pub(crate) fn interrupt(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the stack did not exit after SIGINT"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RunningStack {
    fn drop(&mut self) {
        // A failed test must not leave a stack running: SIGKILL is enough, the test kit's
        // watchdogs and the services' parent-death signal clean up after it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn ctl(booksvc_port: u16, words: &str) -> (ExitStatus, String) {
    let output = Command::new(STACK)
        .args(["ctl", "--booksvc-port", &booksvc_port.to_string()])
        .args(words.split_whitespace())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// One row of the `status` table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) pid: Option<u32>,
    pub(crate) data: Option<PathBuf>,
}

/// The rows of a `status` table found in `text` (the last table, if there are several).
pub(crate) fn status_rows(text: &str) -> Vec<Row> {
    let names = ["postgres", "redis", "rabbitmq", "storagesvc", "booksvc"];
    let mut rows: Vec<Row> = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        // Table rows: NAME STATE PID|- PORT URL [DATA]; log lines (`booksvc | …`) and the
        // notes under the table (`storagesvc write token: …`) are not.
        let is_row = cells.len() >= 5
            && names.contains(&cells[0])
            && (cells[2] == "-" || cells[2].parse::<u32>().is_ok())
            && cells[3].parse::<u16>().is_ok();
        if !is_row {
            continue;
        }
        if cells[0] == "postgres" {
            rows.clear();
        }
        rows.push(Row {
            name: cells[0].to_owned(),
            state: cells[1].to_owned(),
            pid: cells[2].parse().ok(),
            data: cells
                .get(5)
                .filter(|cell| cell.starts_with('/'))
                .map(PathBuf::from),
        });
    }
    rows
}

pub(crate) fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter()
        .find(|row| row.name == name)
        .unwrap_or_else(|| panic!("no {name} in the status table: {rows:?}"))
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls until `check` holds, panicking with `what` after `timeout`.
pub(crate) fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Everything a stack ran is gone: each pid of `rows`, each data dir, the state dir.
pub(crate) fn assert_nothing_left(rows: &[Row], booksvc_port: u16) {
    for row in rows {
        if let Some(pid) = row.pid {
            eventually(
                &format!("{} (pid {pid}) has exited", row.name),
                Duration::from_secs(30),
                || !alive(pid),
            );
        }
        if let Some(data) = &row.data {
            eventually(
                &format!("{}'s data dir {} is deleted", row.name, data.display()),
                Duration::from_secs(30),
                || !data.exists(),
            );
        }
    }
    let state_dir = std::env::temp_dir().join(format!("bookstore-stack-{booksvc_port}"));
    assert!(!state_dir.exists(), "{} is left", state_dir.display());
}

/// An HTTP answer as `curl -i` shows it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// `curl -si ARGS…` as a user types it; status 0 when nothing answered.
pub(crate) fn curl(args: &[&str]) -> Answer {
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl must be installed (bash scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
