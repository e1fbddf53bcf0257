//! The storagesvc binary: the service until SIGTERM/SIGINT.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    storagesvc::app::run_from_env().await
}
