//! The booksvc binary: `booksvc redrive-dlq`, `booksvc rebuild-cache`, or the service until
//! SIGTERM/SIGINT.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // `booksvc redrive-dlq [--limit N]`: an operator's one-off, not the service.
    if std::env::args().nth(1).as_deref() == Some("redrive-dlq") {
        return booksvc::redrive::main(std::env::args().skip(1)).await;
    }
    // `booksvc rebuild-cache [--after ID]`: refills Redis from storagesvc, page by page.
    if std::env::args().nth(1).as_deref() == Some("rebuild-cache") {
        return booksvc::rebuild::main(std::env::args().skip(1)).await;
    }
    booksvc::app::run_from_env().await
}
