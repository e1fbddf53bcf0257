//! [`Figures`]: what a scenario measured, as one parseable line.
//!
//! `DEGRADATION scenario=<name> key=value …` goes to stderr (shown with `--nocapture`) and is
//! appended to `$CARGO_TARGET_TMPDIR/degradation-figures.txt` (under `target/tmp/`), so the
//! figures of a whole run can be copied into `docs/degradation.md` without rerunning. The
//! fleet scenarios write `FLEET scenario=…` lines to `fleet-figures.txt` the same way, for
//! `docs/scaling.md`.

use std::fmt::Display;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

/// Figures of one scenario, in the order they were added.
pub struct Figures {
    scenario: String,
    line: String,
    file: &'static str,
}

impl Figures {
    /// A degradation scenario's figures: `DEGRADATION scenario=…`, into
    /// `degradation-figures.txt`.
    pub fn new(scenario: &str) -> Figures {
        Figures {
            scenario: scenario.to_owned(),
            line: format!("DEGRADATION scenario={scenario}"),
            file: "degradation-figures.txt",
        }
    }

    /// A fleet scenario's figures: `FLEET scenario=…`, into `fleet-figures.txt`.
    pub fn fleet(scenario: &str) -> Figures {
        Figures {
            scenario: scenario.to_owned(),
            line: format!("FLEET scenario={scenario}"),
            file: "fleet-figures.txt",
        }
    }

    /// The scenario's name.
    pub fn scenario(&self) -> &str {
        &self.scenario
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
            .open(dir.join(self.file));
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{}", self.line);
        }
    }
}
