//! The booksvc binary: settings, logging, build, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use booksvc::{Application, Settings, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    // `booksvc redrive-dlq [--limit N]`: an operator's one-off, not the service.
    if std::env::args().nth(1).as_deref() == Some("redrive-dlq") {
        return booksvc::redrive::main(std::env::args().skip(1)).await;
    }
    let settings = Settings::load_or_exit();
    if let Err(err) = telemetry::init(&settings.rust_log, settings.log_format) {
        eprintln!("booksvc: cannot initialise logging: {err}");
        return ExitCode::FAILURE;
    }
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "booksvc failed to start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(booksvc::app::cancel_on_signal(shutdown.clone()));
    match app.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "booksvc stopped with an error");
            ExitCode::FAILURE
        }
    }
}
