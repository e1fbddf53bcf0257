//! The storagesvc binary: settings, logging, build, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use storagesvc::{Application, Settings, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load_or_exit();
    if let Err(err) = telemetry::init(&settings.rust_log, settings.log_format) {
        eprintln!("storagesvc: cannot initialise logging: {err}");
        return ExitCode::FAILURE;
    }
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "storagesvc failed to start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(storagesvc::app::cancel_on_signal(shutdown.clone()));
    match app.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "storagesvc stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}
