//! What the benchmarks share: the servers under test ([`servers`]), `wrk` rounds and their
//! report, the load average, a child's RSS, and numeric settings from the environment.
#![allow(dead_code)] // each bench uses its own part

pub(crate) mod servers;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

/// What one `wrk` round measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Round {
    pub(crate) per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Non-2xx/3xx answers plus socket errors.
    pub(crate) errors: u64,
}

impl Round {
    /// Each figure's median over `rounds` (errors: their sum).
    pub(crate) fn median_of(rounds: &[Round]) -> Round {
        let secs = |pick: fn(&Round) -> Duration| {
            Duration::from_secs_f64(median(
                rounds.iter().map(|r| pick(r).as_secs_f64()).collect(),
            ))
        };
        Round {
            per_sec: median(rounds.iter().map(|r| r.per_sec).collect()),
            p50: secs(|r| r.p50),
            p99: secs(|r| r.p99),
            errors: rounds.iter().map(|r| r.errors).sum(),
        }
    }
}

/// wrk's settings for every round.
#[derive(Clone, Copy)]
pub(crate) struct Wrk {
    pub(crate) threads: u32,
    pub(crate) connections: u32,
    pub(crate) seconds: u64,
}

impl Wrk {
    /// One round against `url` for `seconds`, printed with the load average around it.
    pub(crate) async fn round(
        &self,
        label: &str,
        url: &str,
        seconds: u64,
    ) -> anyhow::Result<Round> {
        self.round_with_script(label, url, seconds, None).await
    }

    /// [`Wrk::round`], with a wrk Lua `script` (e.g. one that picks each request's path).
    pub(crate) async fn round_with_script(
        &self,
        label: &str,
        url: &str,
        seconds: u64,
        script: Option<&Path>,
    ) -> anyhow::Result<Round> {
        let before = loadavg();
        let mut command = Command::new("wrk");
        command
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{seconds}s"))
            .arg("--latency");
        if let Some(script) = script {
            command.arg("-s").arg(script);
        }
        let output = command
            .arg(url)
            .output()
            .await
            .context("running wrk (scripts/bench-read.sh installs it)")?;
        anyhow::ensure!(output.status.success(), "wrk failed: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let round = parse_wrk(&stdout)?;
        println!(
            "{label:<34} {:>9.0} req/s  p50 {:>9.3?}  p99 {:>9.3?}  errors {:<5} load {before} -> {}",
            round.per_sec,
            round.p50,
            round.p99,
            round.errors,
            loadavg()
        );
        // What a script such as [`status_script`]'s prints about the answers.
        for line in stdout.lines() {
            if line.starts_with("status ") || line.starts_with("first error: ") {
                println!("{:<34} {line}", "");
            }
        }
        Ok(round)
    }
}

/// A wrk script that counts answers per status and prints the first non-2xx one after the
/// round (`statuses.lua`), so a round's errors say what they were. Its Lua `response` hook
/// costs wrk some speed: compare rounds run with the same script.
pub(crate) fn status_script() -> anyhow::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new().suffix(".lua").tempfile()?;
    std::fs::write(file.path(), include_str!("statuses.lua"))?;
    Ok(file)
}

/// Requests/sec, the 50% and 99% latencies, and errors from `wrk --latency`'s report.
fn parse_wrk(text: &str) -> anyhow::Result<Round> {
    let mut round = Round::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(value)) => round.per_sec = value.parse()?,
            (Some("50%"), Some(value)) => round.p50 = parse_wrk_duration(value)?,
            (Some("99%"), Some(value)) => round.p99 = parse_wrk_duration(value)?,
            (Some("Non-2xx"), _) => round.errors += last_number(line),
            (Some("Socket"), Some("errors:")) => {
                round.errors += line.split(',').map(last_number).sum::<u64>();
            }
            _ => {}
        }
    }
    anyhow::ensure!(
        round.per_sec > 0.0,
        "no Requests/sec in wrk's output:\n{text}"
    );
    Ok(round)
}

fn last_number(text: &str) -> u64 {
    text.split_whitespace()
        .rev()
        .find_map(|word| word.parse().ok())
        .unwrap_or(0)
}

/// `1.23ms`, `456.00us`, `1.02s`, `2.00m` as wrk writes them.
fn parse_wrk_duration(text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("a unit")?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        other => anyhow::bail!("unknown wrk unit {other:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A process's resident memory now and at its peak.
#[derive(Clone, Copy)]
pub(crate) struct Rss {
    pub(crate) now_kib: u64,
    pub(crate) peak_kib: u64,
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |kib: u64| kib as f64 / 1024.0;
        write!(
            f,
            "{:.1} MiB (peak {:.1} MiB)",
            mib(self.now_kib),
            mib(self.peak_kib)
        )
    }
}

impl Rss {
    /// Read from `/proc/<pid>/status`.
    pub(crate) fn of(pid: u32) -> anyhow::Result<Rss> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Rss {
            now_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        })
    }
}

pub(crate) fn env_number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={text:?} is not a number")),
        Err(_) => Ok(default),
    }
}
