//! [`Figures`]: what a scenario measured, as one parseable line.
//!
//! `DEGRADATION scenario=<name> key=value …` goes to stderr (shown with `--nocapture`) and is
//! appended to `$CARGO_TARGET_TMPDIR/degradation-figures.txt` (under `target/tmp/`), so the
//! figures of a whole run can be copied into `docs/degradation.md` without rerunning.

use std::fmt::Display;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

/// Figures of one scenario, in the order they were added.
pub struct Figures {
    line: String,
}

impl Figures {
    pub fn new(scenario: &str) -> Figures {
        Figures {
            line: format!("DEGRADATION scenario={scenario}"),
        }
    }

    /// Adds `key=value`.
    pub fn add(&mut self, key: &str, value: impl Display) -> &mut Figures {
        self.line.push_str(&format!(" {key}={value}"));
        self
    }

    /// Adds `key=<milliseconds>ms`.
    pub fn millis(&mut self, key: &str, value: Duration) -> &mut Figures {
        self.add(key, format!("{}ms", value.as_millis()))
    }

    /// Prints the line and appends it to the figures file under `dir`; also records the
    /// machine's load average, which the figures depend on.
    pub fn print(&mut self, dir: &Path) {
        if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
            let one_minute = load.split_whitespace().next().unwrap_or("?").to_owned();
            self.add("loadavg", one_minute);
        }
        eprintln!("{}", self.line);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("degradation-figures.txt"));
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{}", self.line);
        }
    }
}
