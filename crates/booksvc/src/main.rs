//! The booksvc binary: `booksvc redrive-dlq`, or the service until SIGTERM/SIGINT.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // `booksvc redrive-dlq [--limit N]`: an operator's one-off, not the service.
    if std::env::args().nth(1).as_deref() == Some("redrive-dlq") {
        return booksvc::redrive::main(std::env::args().skip(1)).await;
    }
    booksvc::app::run_from_env().await
}
