//! A test process that dies by SIGKILL must leave no server behind.
//!
//! The test re-runs this very test binary as a child that starts one private server of each
//! kind, records every process below the child, SIGKILLs the child, and waits for all those
//! processes to disappear and the ports to close.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child so its half of the test runs.
const CHILD_VAR: &str = "TESTKIT_WATCHDOG_CHILD";

/// The child's half: start servers, report ports, then wait to be killed.
#[tokio::test]
#[ignore = "run by killed_test_process_leaves_no_servers_behind as a child process"]
async fn watchdog_child_starts_servers_and_waits() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    let postgres = testkit::Postgres::start().await.unwrap();
    let redis = testkit::Redis::start().await.unwrap();
    let rabbitmq = testkit::RabbitMq::start().await.unwrap();
    println!(
        "PORTS {} {} {}",
        postgres.port(),
        redis.port(),
        rabbitmq.port()
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[test]
fn killed_test_process_leaves_no_servers_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "watchdog::watchdog_child_starts_servers_and_waits",
        ])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ports: Vec<u16> = stdout
        .lines()
        .map_while(Result::ok)
        // libtest prints "test <name> ... " before the test's own output, on the same line.
        .find_map(|line| line.split_once("PORTS ").map(|(_, ports)| ports.to_owned()))
        .expect("the child reports its ports")
        .split(' ')
        .map(|port| port.parse().unwrap())
        .collect();
    let processes = descendants(child.id());
    // Local servers are processes below the child; containers live under the engine, and
    // their closed ports below are what shows the watchdog removed them.
    if testkit::backend() == testkit::Backend::Local {
        assert!(
            processes.len() >= 5,
            "expected servers below the child, found {processes:?}"
        );
    }

    child.kill().unwrap();
    child.wait().unwrap();

    // Killing processes is quick; removing containers through the engine (podman stopping
    // three containers and their volumes on a busy machine) took over 20 s in CI, and once,
    // with the binary's other tests creating containers meanwhile, over 90 s: the ports were
    // closed and the watchdog was still waiting for `docker rm` to return.
    let bound = match testkit::backend() {
        testkit::Backend::Local => Duration::from_secs(20),
        testkit::Backend::Containers => Duration::from_secs(240),
    };
    let deadline = Instant::now() + bound;
    loop {
        let alive: Vec<_> = processes.iter().filter(|p| p.is_alive()).collect();
        let open: Vec<_> = ports.iter().filter(|p| accepts(**p)).collect();
        if alive.is_empty() && open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {alive:?}, open ports {open:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A process identified by pid and start time, so a reused pid is not mistaken for it.
#[derive(Debug, PartialEq)]
struct Process {
    pid: u32,
    start_time: u64,
    command: String,
}

impl Process {
    fn read(pid: u32) -> Option<(Self, u32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may contain spaces: split after the last ')'.
        let (head, rest) = stat.rsplit_once(')')?;
        let command = head.split_once('(')?.1.to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state, ppid, ...; starttime is field 22 of the whole line.
        let parent = fields.get(1)?.parse().ok()?;
        let start_time = fields.get(19)?.parse().ok()?;
        let state = fields.first()?;
        (*state != "Z").then_some((
            Self {
                pid,
                start_time,
                command,
            },
            parent,
        ))
    }

    fn is_alive(&self) -> bool {
        Self::read(self.pid).is_some_and(|(now, _)| now.start_time == self.start_time)
    }
}

/// Every live process below `root`, found by following parent links in /proc.
fn descendants(root: u32) -> Vec<Process> {
    let all: Vec<(Process, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(Process::read)
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (process, ppid) in &all {
            if *ppid == parent && !found.iter().any(|p: &Process| p.pid == process.pid) {
                frontier.push(process.pid);
                found.push(Process {
                    command: process.command.clone(),
                    ..*process
                });
            }
        }
    }
    found
}
