//! schemathesis (PyPI): property-based tests of a running service against its OpenAPI
//! description. `scripts/install-deps.sh` installs it into a virtualenv of its own.
//!
//! Tests call [`run`] with the served description's URL; schemathesis generates requests from
//! it (valid and invalid), sends them, and checks every answer: no 5xx, and status, headers,
//! content type and body as the description says.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;

/// The `st` binary: `$SCHEMATHESIS_VENV/bin/st`, by default in
/// `~/.cache/bookstore/schemathesis` (where `scripts/install-deps.sh` puts it).
fn st() -> PathBuf {
    let venv = std::env::var_os("SCHEMATHESIS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                        .join(".cache")
                });
            cache.join("bookstore/schemathesis")
        });
    venv.join("bin/st")
}

/// Runs `st --config-file <config> run <description_url> <args>` and fails with its report
/// unless every check passed. `config` is a `schemathesis.toml` (what a check may expect of
/// this service); `args` adds headers, checks or limits (`st run --help`).
pub async fn run(config: &Path, description_url: &str, args: &[&str]) -> anyhow::Result<String> {
    let st = st();
    anyhow::ensure!(
        st.exists(),
        "schemathesis is not installed at {}: run scripts/install-deps.sh (it installs the \
         pinned version into a virtualenv of its own)",
        st.display()
    );
    let output = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(config)
        .arg("--no-color")
        .arg("run")
        .arg(description_url)
        .args(args)
        // No colours, no progress bars: the report is read by people in a test log.
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", st.display()))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(
        output.status.success(),
        "schemathesis found problems ({}):\n{report}",
        output.status
    );
    Ok(report)
}
