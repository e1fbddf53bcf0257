//! One terminal session through tmux: the stack started in a shell, commands typed into its
//! terminal, answers read off the screen, Ctrl-C typed, and nothing left running.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{
    STACK, START_TIMEOUT, alive, assert_nothing_left, free_ports, row, status_rows,
};

/// A tmux server of this test alone (`tmux -L NAME`), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        let socket = format!("stack-test-{}", std::process::id());
        let this = Self { socket };
        let out = this.run(&["new-session", "-d", "-s", "stack", "-x", "220", "-y", "50"]);
        assert!(
            out.status.success(),
            "tmux must be installed (bash scripts/install-deps.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Deep history: the services log a lot, and the test reads back through it.
        this.run(&["set-option", "-g", "history-limit", "100000"]);
        this
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux must be installed (bash scripts/install-deps.sh)")
    }

    /// Types `keys` (tmux key names: `Enter`, `C-c`, or literal text).
    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "stack"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// Types a line and presses Enter.
    fn type_line(&self, line: &str) {
        self.send(&["-l", line]);
        self.send(&["Enter"]);
    }

    /// The whole pane, history included.
    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "stack"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text` at least `count` times; returns the screen.
    fn wait_for(&self, text: &str, count: usize, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= count {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{text:?} (×{count}) not on screen within {timeout:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn commands_typed_into_the_stacks_terminal() {
    let tmux = Tmux::new();
    let (booksvc_port, storagesvc_port) = free_ports();
    tmux.type_line(&format!(
        "TESTKIT_BACKEND=local {STACK} --booksvc-port {booksvc_port} --storagesvc-port {storagesvc_port}"
    ));
    let screen = tmux.wait_for("stack: up in", 1, START_TIMEOUT);
    let first = status_rows(&screen);
    assert_eq!(first.len(), 5, "{screen}");

    tmux.type_line("help");
    tmux.wait_for("kill  NAME", 2, Duration::from_secs(30));

    tmux.type_line("stop redis");
    tmux.wait_for("redis stopped", 1, Duration::from_secs(60));
    tmux.type_line("status");
    let screen = tmux.wait_for("STATE", 2, Duration::from_secs(30));
    let rows = status_rows(&screen);
    assert_eq!(row(&rows, "redis").state, "stopped", "{screen}");
    assert_eq!(row(&rows, "redis").pid, None, "{screen}");
    assert!(!alive(row(&first, "redis").pid.unwrap()), "{screen}");

    tmux.type_line("start redis");
    tmux.wait_for("redis started", 1, Duration::from_secs(60));
    tmux.type_line("kill booksvc");
    tmux.wait_for("booksvc killed", 1, Duration::from_secs(60));
    tmux.type_line("start booksvc");
    tmux.wait_for("booksvc started", 2, Duration::from_secs(120));
    tmux.type_line("frobnicate");
    tmux.wait_for("unknown command", 1, Duration::from_secs(30));
    tmux.type_line("status");
    let screen = tmux.wait_for("STATE", 3, Duration::from_secs(30));
    let last = status_rows(&screen);
    for row in &last {
        assert_eq!(row.state, "running", "{screen}");
    }

    tmux.send(&["C-c"]);
    tmux.wait_for("stack: stopped", 1, Duration::from_secs(120));
    assert_nothing_left(&first, booksvc_port);
    assert_nothing_left(&last, booksvc_port);
}
