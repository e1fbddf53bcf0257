//! Re-drive: moves dead letters back to the main queue for another go, once the cause is
//! fixed — `booksvc redrive-dlq [--limit N]`.
//!
//! Each message is taken from `booksvc.book-changed.dlq` unacked (`basic.get`), republished
//! to `booksvc.book-changed` through the default exchange (so no other queue bound to `books`
//! sees it twice), and acked in the DLQ only after the broker confirmed the republish.
//! Interrupted at any point, nothing is lost: a message is in the DLQ, in the main queue, or
//! at worst in both (a duplicate, which the cache's version rule makes harmless).
//!
//! The republished message keeps its body, id, timestamp, trace context and
//! `x-original-routing-key`, and loses `x-retry-count` and `x-error`: it starts again with a
//! full set of attempts. A run moves at most the messages that were in the DLQ when it
//! started, so a message that fails straight back into the DLQ is not looped on for ever.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use events::headers::{X_ERROR, X_RETRY_COUNT};
use events::lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use events::lapin::types::{FieldTable, ShortString};
use events::lapin::{Channel, Connection};
use events::{BrokerNodes, ConfirmPublisher, DLQ, Outgoing, QUEUE};

use crate::consumer::routing::kept_headers;

/// Bound on connecting and on each broker confirm.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a re-drive did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedriveReport {
    /// Messages moved back to the main queue.
    pub moved: u64,
    /// Messages in the DLQ after the run, as the broker last reported.
    pub remaining: u32,
}

/// `booksvc redrive-dlq`: moves dead letters back to the main queue. `Debug` leaves out the
/// URL: it carries the broker password.
#[derive(Parser)]
#[command(
    name = "booksvc redrive-dlq",
    bin_name = "booksvc redrive-dlq",
    version
)]
pub struct RedriveArgs {
    /// RabbitMQ: one URL, or a cluster's nodes comma-separated.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = crate::config::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Move at most this many messages (default: all that are in the DLQ at the start).
    #[arg(long)]
    pub limit: Option<u64>,
}

impl std::fmt::Debug for RedriveArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedriveArgs")
            .field("amqp_url", &"[redacted]")
            .field("limit", &self.limit)
            .finish()
    }
}

/// Runs the subcommand; `args` starts with the subcommand's name.
pub async fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = match RedriveArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match redrive_from_url(&args.amqp_url, args.limit).await {
        Ok(report) => {
            println!(
                "moved {} message(s) from {DLQ} to {QUEUE}; {} left in {DLQ}",
                report.moved, report.remaining
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("booksvc redrive-dlq: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to `amqp_url` (one URL, or a cluster's nodes comma-separated: the first that
/// answers), re-drives, and closes the connection.
pub async fn redrive_from_url(amqp_url: &str, limit: Option<u64>) -> anyhow::Result<RedriveReport> {
    let nodes = BrokerNodes::parse(amqp_url)
        .map_err(|reason| anyhow::anyhow!("invalid AMQP_URL: {reason}"))?;
    let (connection, _node) = events::connect_any(&nodes, "booksvc-redrive-dlq", TIMEOUT).await?;
    let result = redrive_dlq(&connection, limit).await;
    let closing = connection.close(200, ShortString::from("bye"));
    match tokio::time::timeout(TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the connection"),
        Err(_elapsed) => tracing::debug!("closing the connection timed out"),
    }
    result
}

/// Moves up to `limit` messages (default: all present at the start) from the DLQ back to
/// the main queue; see the module docs.
pub async fn redrive_dlq(
    connection: &Connection,
    limit: Option<u64>,
) -> anyhow::Result<RedriveReport> {
    let channel = connection.create_channel().await?;
    let publisher = ConfirmPublisher::open(connection).await?;
    let result = move_messages(&channel, &publisher, limit).await;
    // Channels before the connection; an unacked message goes back to the DLQ.
    let _ = publisher.close().await;
    if channel.status().connected() {
        let _ = channel.close(200, ShortString::from("bye")).await;
    }
    let moved = result?;
    crate::metrics::consumer::record_redriven(moved);
    let remaining = dlq_depth(connection).await?;
    Ok(RedriveReport { moved, remaining })
}

async fn move_messages(
    channel: &Channel,
    publisher: &ConfirmPublisher,
    limit: Option<u64>,
) -> anyhow::Result<u64> {
    let present = u64::from(dlq_depth_on(channel).await?);
    let budget = limit.map_or(present, |limit| limit.min(present));
    let mut moved = 0;
    while moved < budget {
        let Some(message) = channel
            .basic_get(ShortString::from(DLQ), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let outgoing = back_to_main_queue(&delivery.properties, &delivery.data);
        let report = publisher
            .publish_in_order("", &[outgoing], 1, TIMEOUT)
            .await;
        if let Some(error) = report.error {
            return Err(error).with_context(|| format!("republishing after {moved} moved"));
        }
        // Only now is the message safe in the main queue.
        delivery.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    Ok(moved)
}

/// The dead letter as a fresh message for the main queue: same body and identity, no
/// retry count or error.
fn back_to_main_queue(properties: &events::lapin::BasicProperties, body: &[u8]) -> Outgoing {
    let mut headers = kept_headers(properties.headers().as_ref()).inner().clone();
    headers.remove(X_RETRY_COUNT);
    headers.remove(X_ERROR);
    Outgoing {
        routing_key: QUEUE.to_owned(),
        message_id: properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        body: body.to_vec(),
        headers: FieldTable::from(headers),
        timestamp: *properties.timestamp(),
    }
}

async fn dlq_depth(connection: &Connection) -> anyhow::Result<u32> {
    let channel = connection.create_channel().await?;
    let depth = dlq_depth_on(&channel).await;
    if channel.status().connected() {
        let _ = channel.close(200, ShortString::from("bye")).await;
    }
    depth
}

/// Messages ready in the DLQ (a passive declare: fails if the DLQ does not exist).
async fn dlq_depth_on(channel: &Channel) -> anyhow::Result<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(ShortString::from(DLQ), passive, FieldTable::default())
        .await
        .with_context(|| format!("{DLQ} (has booksvc declared its topology?)"))?;
    Ok(queue.message_count())
}

#[cfg(test)]
mod tests {
    use events::headers::X_ORIGINAL_ROUTING_KEY;
    use events::lapin::BasicProperties;
    use events::lapin::types::{AMQPValue, LongString};

    use super::*;

    #[test]
    fn the_arguments_never_debug_print_the_password() {
        let args = RedriveArgs::try_parse_from([
            "booksvc redrive-dlq",
            "--amqp-url",
            "amqp://admin:Pr0dPass@mq:5672/%2f",
        ])
        .expect("valid arguments");
        let printed = format!("{args:?}");
        assert!(!printed.contains("Pr0dPass"), "leaked: {printed}");
    }

    #[test]
    fn a_redriven_message_starts_over_but_keeps_its_identity() {
        let mut headers = FieldTable::default();
        headers.insert(X_RETRY_COUNT.into(), AMQPValue::LongInt(5));
        headers.insert(
            X_ERROR.into(),
            AMQPValue::LongString(LongString::from("boom")),
        );
        headers.insert(
            X_ORIGINAL_ROUTING_KEY.into(),
            AMQPValue::LongString(LongString::from("book.updated")),
        );
        headers.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        let properties = BasicProperties::default()
            .with_headers(headers)
            .with_message_id("m-1".into())
            .with_timestamp(7);

        let message = back_to_main_queue(&properties, b"{}");

        assert_eq!(message.routing_key, QUEUE);
        assert_eq!(message.message_id, "m-1");
        assert_eq!(message.timestamp, Some(7));
        let names: Vec<_> = message.headers.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, [X_ORIGINAL_ROUTING_KEY]);
    }
}
