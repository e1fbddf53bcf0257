//! What booksvc writes to the log, at the default level, while storagesvc cannot answer (the
//! stand-in answers storagesvc's 503) and readers ask for books nothing cached: one outage (a
//! start and an end) and the breaker's changes of state, not a line per 503.
//!
//! The log is captured as JSON lines through booksvc's own filter; the test's runtime runs
//! on one thread, so the capture sees booksvc's tasks. storagesvc's own outage lines are
//! storagesvc's tests' business.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use testkit::log_capture::{LogCapture, field, outage_lines};

use crate::helpers::{Answer, TestStack, eventually};

/// Concurrent readers during the outage, and reads each (every one of a book never read).
const READERS: i64 = 16;
const READS_EACH: i64 = 25;
const OUTAGE: &str = "storagesvc, reads with nothing cached";

/// Every reader's reads, concurrently; how many were answered 503.
async fn read_uncached(stack: &TestStack) -> anyhow::Result<usize> {
    let readers = (0..READERS).map(|reader| async move {
        let mut unavailable = 0;
        for read in 0..READS_EACH {
            let id = 1_000 + reader * READS_EACH + read;
            if stack.get_book(id).await?.status() == StatusCode::SERVICE_UNAVAILABLE {
                unavailable += 1;
            }
        }
        anyhow::Ok(unavailable)
    });
    let mut total = 0;
    for unavailable in join_all(readers).await {
        total += unavailable?;
    }
    Ok(total)
}

#[tokio::test]
async fn reads_with_nothing_to_serve_are_logged_as_one_outage_not_a_line_each() -> anyhow::Result<()>
{
    let (captured, _log) = LogCapture::install(booksvc::telemetry::env_filter("info")?);
    let stack = TestStack::options()
        .standin()
        .booksvc(|settings| settings.breaker_timeout = Duration::from_secs(1))
        .spawn()
        .await?;
    stack.standin().answer(Answer::Unavailable);

    let before = captured.lines().len();
    let unavailable = read_uncached(&stack).await?;
    let during = captured.lines()[before..].to_vec();
    let reads = usize::try_from(READERS * READS_EACH)?;
    assert_eq!(unavailable, reads, "nothing cached, storagesvc failing");

    stack.standin().answer(Answer::Normal);
    let answered = eventually(Duration::from_secs(30), || async {
        stack
            .get_book(1)
            .await
            .is_ok_and(|response| response.status() == StatusCode::OK)
    });
    assert!(answered.await, "reads never recovered");
    let lines = captured.lines();

    // booksvc's lines: its outage and its breaker.
    eprintln!(
        "{unavailable} answers 503, {} log lines meanwhile",
        during.len()
    );
    assert!(
        during.len() <= 12,
        "{unavailable} reads answered 503 wrote {} lines: {during:#?}",
        during.len()
    );
    let started = outage_lines(&lines, OUTAGE, "outage started");
    assert_eq!(started.len(), 1, "{lines:#?}");
    assert_eq!(started[0]["level"], "WARN");
    let ended = outage_lines(&lines, OUTAGE, "outage ended");
    assert_eq!(ended.len(), 1, "{lines:#?}");
    let failures = ended[0]["fields"]["failures"].as_u64().unwrap_or_default();
    assert!(
        failures >= u64::try_from(unavailable)?,
        "{failures} counted, {unavailable} answered 503"
    );
    // Nothing of ours warns outside an outage's lines or the breaker's; a library may warn
    // once (a reconnect), never per request.
    let mut library_warnings = vec![];
    for line in &lines {
        let level = line["level"].as_str().unwrap_or_default();
        if level != "WARN" && level != "ERROR" {
            continue;
        }
        let target = line["target"].as_str().unwrap_or_default();
        let message = field(line, "message");
        if ["booksvc", "storagesvc", "events"]
            .iter()
            .any(|ours| target.starts_with(ours))
        {
            assert!(
                message.starts_with("outage") || message == "circuit breaker changed state",
                "a {level} line outside an outage's or the breaker's: {line}"
            );
        } else {
            library_warnings.push(line);
        }
    }
    assert!(library_warnings.len() <= 3, "{library_warnings:#?}");
    stack.stop().await
}
