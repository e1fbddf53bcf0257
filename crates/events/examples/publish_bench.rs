//! Publisher-confirm throughput: awaiting each confirm before the next publish versus a
//! window of confirms in flight, through [`events::ConfirmPublisher::publish_in_order`].
//!
//! ```text
//! cargo run --release -p events --example publish_bench [N] [WINDOW]
//! ```
//! Uses `AMQP_URL` when set (declares the topology there and purges its queue), otherwise
//! starts a private broker through `testkit`, so a shared broker is never touched by accident.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use events::{BookChanged, BookData, ConfirmPublisher, EXCHANGE, Outgoing, QUEUE, Topology};
use lapin::Connection;
use lapin::options::QueuePurgeOptions;

const DEFAULT_N: usize = 20_000;
const DEFAULT_WINDOW: usize = 64;
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n = parse_arg(args.next(), DEFAULT_N).context("N must be a positive integer")?;
    let window =
        parse_arg(args.next(), DEFAULT_WINDOW).context("WINDOW must be a positive integer")?;

    // Keep the private broker (if any) alive until the end: dropping it stops it.
    let (url, _broker) = match std::env::var("AMQP_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            eprintln!("AMQP_URL not set: starting a private RabbitMQ through testkit ...");
            let broker = testkit::RabbitMq::start().await?;
            (broker.amqp_url(), Some(broker))
        }
    };
    let connection = events::connect(&url, "publish-bench", Duration::from_secs(15)).await?;
    Topology::default()
        .declare(&connection.create_channel().await?)
        .await?;
    let messages = sample_messages(n);

    let one_by_one = run(&connection, &messages, 1).await?;
    let windowed = run(&connection, &messages, window).await?;
    println!("messages: {n} (~{} bytes each)", messages[0].body.len());
    println!("awaiting each confirm: {one_by_one:>8.0} msgs/s");
    println!(
        "window of {window:<4}       : {windowed:>8.0} msgs/s ({:.1}x)",
        windowed / one_by_one
    );
    connection
        .close(200, "done".into())
        .await
        .context("closing the connection")?;
    Ok(())
}

fn parse_arg(arg: Option<String>, default: usize) -> Result<usize> {
    match arg {
        None => Ok(default),
        Some(text) => match text.parse::<usize>()? {
            0 => bail!("must be at least 1"),
            n => Ok(n),
        },
    }
}

fn sample_messages(n: usize) -> Vec<Outgoing> {
    (1..=n)
        .map(|i| {
            let id = i64::try_from(i).unwrap_or(i64::MAX);
            let book = BookData {
                id,
                title: format!("Book {id}"),
                author: "Jane Doe".to_owned(),
                desc: "A description of typical length for a catalogue entry.".to_owned(),
            };
            Outgoing::event(&BookChanged::updated(book, 1, Utc::now()))
        })
        .collect()
}

/// Publishes all `messages` with `window` in flight on a fresh publisher; msgs/s.
async fn run(connection: &Connection, messages: &[Outgoing], window: usize) -> Result<f64> {
    let publisher = ConfirmPublisher::open(connection).await?;
    let started = Instant::now();
    let report = publisher
        .publish_in_order(EXCHANGE, messages, window, CONFIRM_TIMEOUT)
        .await;
    let elapsed = started.elapsed();
    if let Some(error) = report.error {
        bail!(
            "window {window}: {} confirmed, then: {error}",
            report.confirmed
        );
    }
    publisher.close().await.context("closing the publisher")?;
    // Empty the queue so the next run starts from the same broker state.
    let channel = connection.create_channel().await?;
    channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await
        .context("purging the queue")?;
    channel.close(200, "purged".into()).await?;
    Ok(report.confirmed as f64 / elapsed.as_secs_f64())
}
