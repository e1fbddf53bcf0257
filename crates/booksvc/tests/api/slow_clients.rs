//! Slow clients: a connection that never finishes its request is closed within
//! `HTTP_HEADER_READ_TIMEOUT`, while other clients are served as usual.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestStack;

#[tokio::test]
async fn a_client_that_never_finishes_its_request_line_is_disconnected() -> anyhow::Result<()> {
    let stack = TestStack::options()
        .booksvc(|settings| settings.http_header_read_timeout = Duration::from_millis(500))
        .spawn()
        .await?;
    let address = stack.address.trim_start_matches("http://").to_owned();

    // Half a request line, then silence: the classic slowloris connection.
    let mut slow = TcpStream::connect(&address).await?;
    slow.write_all(b"GET /heal").await?;

    // Everyone else is served normally meanwhile.
    let response = stack.get_book(1).await?;
    assert_eq!(response.status(), 200, "a normal client is served");

    // The server closes the slow connection: reading reaches the end (or a reset) instead of
    // waiting for ever. The bound is generous: only "closed at all" matters here.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the slow connection was still open after 20 s (HTTP_HEADER_READ_TIMEOUT is 500ms)"
    );
    stack.stop().await
}
