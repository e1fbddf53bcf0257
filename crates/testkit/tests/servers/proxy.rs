//! `TcpProxy` in front of a real TCP echo server.

use std::time::{Duration, Instant};

use testkit::{Direction, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on a free port: every byte it reads it writes back.
async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

/// Sends `message` and reads the same number of bytes back (bounded: a hang fails the test).
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut answer = vec![0_u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer within 5 s"))??;
    Ok(answer)
}

#[tokio::test]
async fn forwards_both_ways() {
    let proxy = TcpProxy::start(&echo_server().await).await.unwrap();
    assert!(proxy.http_url().ends_with(&proxy.address().to_string()));
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"hello").await.unwrap(), b"hello");
    let big = vec![7_u8; 200_000];
    assert_eq!(round_trip(&mut stream, &big).await.unwrap(), big);
}

#[tokio::test]
async fn latency_delays_each_direction_and_can_be_removed() {
    let proxy = TcpProxy::start(&echo_server().await).await.unwrap();
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();

    proxy.set_latency(Direction::Upstream, Duration::from_millis(200));
    proxy.set_latency(Direction::Downstream, Duration::from_millis(300));
    let started = Instant::now();
    round_trip(&mut stream, b"slow").await.unwrap();
    // A lower bound only: the delays are sleeps, so this cannot be flaky.
    assert!(started.elapsed() >= Duration::from_millis(500));

    proxy.set_latency(Direction::Upstream, Duration::ZERO);
    proxy.set_latency(Direction::Downstream, Duration::ZERO);
    assert_eq!(round_trip(&mut stream, b"fast").await.unwrap(), b"fast");
}

#[tokio::test]
async fn cut_closes_open_connections_and_accepts_new_ones() {
    let proxy = TcpProxy::start(&echo_server().await).await.unwrap();
    let mut open = TcpStream::connect(proxy.address()).await.unwrap();
    round_trip(&mut open, b"before").await.unwrap();

    proxy.cut();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest))
        .await
        .expect("a cut connection ends");
    assert!(read.is_err() || rest.is_empty(), "no data after a cut");

    let mut fresh = TcpStream::connect(proxy.address()).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"after").await.unwrap(), b"after");
}

#[tokio::test]
async fn refuse_refuses_new_connections_until_restore() {
    let proxy = TcpProxy::start(&echo_server().await).await.unwrap();
    proxy.set_latency(Direction::Downstream, Duration::from_secs(60));

    proxy.refuse().await;
    let refused = TcpStream::connect(proxy.address()).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    proxy.restore().unwrap();
    proxy.restore().unwrap(); // idempotent
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    // The latency went too: this answers at once rather than in a minute.
    assert_eq!(round_trip(&mut stream, b"back").await.unwrap(), b"back");
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_client_connection() {
    let nowhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = nowhere.local_addr().unwrap().to_string();
    drop(nowhere);
    let proxy = TcpProxy::start(&address).await.unwrap();
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    assert!(round_trip(&mut stream, b"anyone?").await.is_err());
}
