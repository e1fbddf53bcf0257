//! Opening an AMQP connection: lapin 4 on tokio, named, and bounded in time.
//!
//! lapin 4 picks its runtime through `async-rs`: with the `tokio` feature (and default
//! features off, which also drops TLS) `Connection::connect` runs on the ambient tokio
//! runtime, so no executor/reactor adapter crate is needed.
//!
//! lapin's own auto-recovery is left off: the services run an outer reconnect loop with
//! backoff (DESIGN.md), and a connection that fails loudly is easier to reason about than
//! one that silently replays topology under a publisher waiting for confirms.

use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::nodes::{BrokerNode, BrokerNodes};

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a valid `amqp://` URL (the message never contains the URL, which may
    /// hold a password).
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
    /// No connection within the given time (dead host, firewall dropping packets, broker
    /// still booting).
    #[error("no AMQP connection within {0:?}")]
    Timeout(Duration),
    /// The broker refused or the network failed (connection refused, bad credentials,
    /// unknown vhost, ...).
    #[error("AMQP connection failed: {0}")]
    Amqp(#[from] lapin::Error),
}

/// Connects to `url` on the current tokio runtime, naming the connection
/// `connection_name` (shown in the management UI) and giving up after `timeout`
/// (TCP connect + AMQP handshake together), so a dead host cannot hang start-up.
pub async fn connect(
    url: &str,
    connection_name: &str,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let uri: AMQPUri = url
        .parse()
        .map_err(|reason: String| ConnectError::InvalidUrl(redact(&reason, url)))?;
    connect_uri(uri, connection_name, timeout).await
}

/// Connects to one node of an `AMQP_URL` list, like [`connect`].
pub async fn connect_node(
    node: &BrokerNode,
    connection_name: &str,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    connect_uri(node.uri().clone(), connection_name, timeout).await
}

/// Connects to the first node of `nodes` (in the listed order) that answers: for one-off
/// tools; services use [`crate::session::run`], which also spreads and reconnects. The error
/// is the last node's, prefixed with its `host:port`.
pub async fn connect_any(
    nodes: &BrokerNodes,
    connection_name: &str,
    timeout: Duration,
) -> Result<(Connection, BrokerNode), ConnectError> {
    let mut failure = None;
    for node in nodes.nodes() {
        match connect_node(node, connection_name, timeout).await {
            Ok(connection) => return Ok((connection, node.clone())),
            Err(error) => {
                tracing::warn!(node = %node, %error, "cannot connect to a broker node");
                failure = Some(error);
            }
        }
    }
    Err(failure.unwrap_or(ConnectError::Timeout(timeout)))
}

async fn connect_uri(
    uri: AMQPUri,
    connection_name: &str,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    match tokio::time::timeout(timeout, Connection::connect_uri(uri, properties)).await {
        Ok(connected) => Ok(connected?),
        Err(_elapsed) => Err(ConnectError::Timeout(timeout)),
    }
}

/// `reason` with any copy of `url` (which may carry credentials) removed.
fn redact(reason: &str, url: &str) -> String {
    if url.is_empty() {
        reason.to_owned()
    } else {
        reason.replace(url, "<url>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_url_is_reported_without_the_password() {
        let url = "amqp://user:s3cret@[not a host/%2f";
        let error = connect(url, "test", Duration::from_secs(1))
            .await
            .expect_err("an invalid URL must not connect");
        let message = error.to_string();
        assert!(matches!(error, ConnectError::InvalidUrl(_)), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[tokio::test]
    async fn unreachable_host_fails_within_the_timeout() {
        // 192.0.2.0/24 (TEST-NET-1) is never routed: the connect attempt hangs until our
        // timeout unless the network rejects it at once; both are fine, hanging is not.
        let started = std::time::Instant::now();
        let result = connect(
            "amqp://192.0.2.1:5672/%2f",
            "test",
            Duration::from_millis(300),
        )
        .await;
        assert!(result.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn refused_port_is_an_amqp_error() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let result = connect("amqp://127.0.0.1:1/%2f", "test", Duration::from_secs(5)).await;
        assert!(matches!(result, Err(ConnectError::Amqp(_))), "{result:?}");
    }
}
