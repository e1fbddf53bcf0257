//! A start that cannot succeed stops at once, exits non-zero and says why in one line.

use std::net::TcpListener;
use std::process::Command;

use crate::support::{STACK, ctl, free_ports, stack_env};

#[test]
fn a_taken_port_fails_the_start_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_, storagesvc_port) = free_ports();
    let mut command = Command::new(STACK);
    let output = stack_env(&mut command)
        .args(["--booksvc-port", &port.to_string()])
        .args(["--storagesvc-port", &storagesvc_port.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("stack: failed to start: port ")
            && lines[0].contains(&port.to_string())
            && lines[0].contains("--booksvc-port"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn ctl_without_a_stack_says_so() {
    let (port, _) = free_ports();
    let (status, out) = ctl(port, "status");
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("no stack with booksvc on port {port}")),
        "{out}"
    );
}

/// A machine without Redis: `redis-server` is not on the `PATH` the stack gets (a copy of the
/// machine's, less that one program). The start stops what it started and exits 1, its last
/// line naming what is missing and how to install it.
#[test]
fn a_missing_server_fails_the_start_with_one_line_naming_it() {
    let bin = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let link = bin.path().join(entry.file_name());
            if entry.file_name() != "redis-server" && !link.exists() {
                std::os::unix::fs::symlink(entry.path(), link).unwrap();
            }
        }
    }
    let (booksvc_port, storagesvc_port) = free_ports();
    let mut command = Command::new(STACK);
    let output = stack_env(&mut command)
        .env("PATH", bin.path())
        .args(["--booksvc-port", &booksvc_port.to_string()])
        .args(["--storagesvc-port", &storagesvc_port.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("stack: failed") || line.starts_with("stack: details"))
        .collect();
    assert_eq!(failures.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(failures[0]), "{stderr}");
    assert!(
        failures[0].starts_with("stack: failed to start: cannot start Redis")
            && failures[0].contains("apt-get install redis-server"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("stack: up"), "{stdout}");
}
