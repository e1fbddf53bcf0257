//! W3C trace context through the real binary (its own subscriber, as in production): a write
//! continues the caller's trace or starts one, its event carries that trace as AMQP headers,
//! and the request's JSON log lines carry its `trace_id` and `span_id`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::headers;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{TOKEN, book_body, eventually};
use crate::relay::support::{QueueReader, Received};

const BINARY: &str = env!("CARGO_BIN_EXE_storagesvc");
/// A caller's context, from the W3C specification's examples.
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const PARENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
/// Generous bound for the binary to start and for an event or a log line to show up.
const PATIENCE: Duration = Duration::from_secs(20);

/// The storagesvc binary on a fresh database and vhost, its stdout collected line by line.
pub(crate) struct Binary {
    address: String,
    amqp_url: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts the binary with JSON logs at info and `extra` variables; waits until ready.
    async fn start(extra: &[(&str, &str)]) -> anyhow::Result<Binary> {
        let database_url = testkit::Postgres::shared().await?.fresh_database().await?;
        let amqp_url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(BINARY)
            .env_clear()
            .env("HTTP_PORT", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &database_url)
            .env("AMQP_URL", &amqp_url)
            .env("STORAGESVC_WRITE_TOKEN", TOKEN)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("SHUTDOWN_TIMEOUT", "5s")
            .envs(extra.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        tokio::spawn(collect_lines(stdout, Arc::clone(&lines)));
        let binary = Binary {
            address: format!("http://127.0.0.1:{port}"),
            amqp_url,
            child,
            lines,
        };
        let ready_url = format!("{}/healthz/ready", binary.address);
        let ready = eventually(PATIENCE, || async {
            reqwest::get(&ready_url)
                .await
                .is_ok_and(|response| response.status().is_success())
        })
        .await;
        anyhow::ensure!(ready, "the binary never became ready");
        Ok(binary)
    }

    /// `POST /books` with these extra headers; returns the new book's id.
    async fn create_book(&self, headers: &[(&str, &str)]) -> anyhow::Result<i64> {
        let mut request = reqwest::Client::new()
            .post(format!("{}/books", self.address))
            .bearer_auth(TOKEN)
            .json(&book_body("Traced", "An Author", "A description"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status() == StatusCode::CREATED,
            "create: {}",
            response.status()
        );
        let book: Value = response.json().await?;
        book["id"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no id in {book}"))
    }

    /// The JSON log lines written so far that parse.
    fn log_lines(&self) -> Vec<Value> {
        let lines = self.lines.lock().expect("not poisoned");
        lines
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits for a log line whose message is `message` and whose span carries `trace_id`.
    async fn wait_for_line(&self, message: &str, trace_id: &str) -> Option<Value> {
        let find = || {
            self.log_lines()
                .into_iter()
                .find(|line| line["fields"]["message"] == message && line["trace_id"] == trace_id)
        };
        eventually(PATIENCE, || async { find().is_some() }).await;
        find()
    }

    /// Sends SIGTERM and waits for the exit.
    async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().expect("running").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        anyhow::ensure!(killed.success(), "kill failed");
        Ok(tokio::time::timeout(PATIENCE, self.child.wait()).await??)
    }
}

async fn collect_lines(stdout: tokio::process::ChildStdout, into: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        into.lock().expect("not poisoned").push(line);
    }
}

/// Takes events off the queue until the one about `book_id` arrives.
async fn event_of(reader: &mut QueueReader, book_id: i64) -> anyhow::Result<Received> {
    loop {
        let mut one = reader.take(1, PATIENCE).await?;
        let received = one.remove(0);
        if received.event.book_id == book_id {
            return Ok(received);
        }
    }
}

/// `(trace id, span id)` of a well-formed `traceparent`; panics on anything else.
fn parse_traceparent(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let well_formed = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2);
    assert!(well_formed, "not a valid traceparent: {traceparent:?}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn trace_headers(received: &Received) -> (Option<String>, Option<String>) {
    let headers = received.headers.as_ref();
    (
        headers::text(headers, headers::TRACEPARENT),
        headers::text(headers, headers::TRACESTATE),
    )
}

#[tokio::test]
async fn a_write_with_a_traceparent_publishes_its_event_and_logs_it_in_the_callers_trace()
-> anyhow::Result<()> {
    let binary = Binary::start(&[]).await?;
    let mut reader = QueueReader::connect(&binary.amqp_url).await?;

    let caller = [("traceparent", PARENT), ("tracestate", "vendor=abc")];
    let id = binary.create_book(&caller).await?;

    let received = event_of(&mut reader, id).await?;
    let (traceparent, tracestate) = trace_headers(&received);
    let traceparent = traceparent.expect("the event carries a traceparent");
    let (trace_id, span_id) = parse_traceparent(&traceparent);
    assert_eq!(trace_id, PARENT_TRACE_ID, "the caller's trace goes on");
    assert_ne!(
        span_id, PARENT_SPAN_ID,
        "the parent is the event's span, not the caller's"
    );
    assert_eq!(tracestate.as_deref(), Some("vendor=abc"));

    let line = binary.wait_for_line("book created", &trace_id).await;
    let line = line.unwrap_or_else(|| panic!("no 'book created' line: {:?}", binary.log_lines()));
    assert_eq!(line["level"], "INFO");
    let request_span = line["span_id"].as_str().unwrap_or_default();
    assert_eq!(request_span.len(), 16, "{line}");
    assert!(
        ![PARENT_SPAN_ID, span_id.as_str()].contains(&request_span),
        "the request has a span of its own, the event's `create books` is below it: {line}"
    );
    assert_eq!(line["span"]["http.route"], "/books", "{line}");
    let finished = binary.wait_for_line("answered", &trace_id);
    let finished = finished
        .await
        .expect("the response line is in the trace too");
    assert_eq!(finished["fields"]["status"], 201, "{finished}");
    Ok(())
}

#[tokio::test]
async fn a_write_without_a_traceparent_starts_a_trace_of_its_own() -> anyhow::Result<()> {
    let binary = Binary::start(&[]).await?;
    let mut reader = QueueReader::connect(&binary.amqp_url).await?;

    let first = binary.create_book(&[]).await?;
    let garbage = binary
        .create_book(&[("traceparent", "00-not-a-trace-01")])
        .await?;

    let mut trace_ids = Vec::new();
    for id in [first, garbage] {
        let received = event_of(&mut reader, id).await?;
        let (traceparent, tracestate) = trace_headers(&received);
        let (trace_id, _) = parse_traceparent(&traceparent.expect("a fresh traceparent"));
        assert_eq!(tracestate, None);
        let line = binary.wait_for_line("book created", &trace_id).await;
        assert!(
            line.is_some(),
            "no line of {trace_id}: {:?}",
            binary.log_lines()
        );
        trace_ids.push(trace_id);
    }
    assert_ne!(trace_ids[0], trace_ids[1], "each write has its own trace");
    Ok(())
}

/// OTLP `SpanKind`s.
const SERVER: i32 = 2;
const PRODUCER: i32 = 4;

#[tokio::test]
async fn with_an_otlp_endpoint_the_request_span_is_exported_and_flushed_at_shutdown()
-> anyhow::Result<()> {
    let receiver = testkit::OtlpReceiver::start().await?;
    // A batch delay far beyond the test: only the flush at shutdown can deliver the spans.
    let binary = Binary::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ])
    .await?;
    let mut reader = QueueReader::connect(&binary.amqp_url).await?;
    let caller = [("traceparent", PARENT)];
    let id = binary.create_book(&caller).await?;
    // The relay has sent the event (its `send books` span is over) once it can be read.
    event_of(&mut reader, id).await?;

    let status = binary.terminate().await?;

    assert_eq!(status.code(), Some(0), "{status:?}");
    let spans = receiver.spans();
    let span = spans
        .iter()
        .find(|span| span.name == "POST /books" && span.trace_id == PARENT_TRACE_ID)
        .unwrap_or_else(|| panic!("no POST /books span in the caller's trace: {spans:#?}"));
    assert_eq!(span.parent_span_id, PARENT_SPAN_ID);
    assert_eq!(span.kind, SERVER);
    assert_eq!(span.service_name.as_deref(), Some("storagesvc"));
    assert_eq!(span.text("http.request.method"), Some("POST"));
    assert_eq!(span.text("http.route"), Some("/books"));
    assert_eq!(span.text("url.path"), Some("/books"));
    assert_eq!(span.text("url.scheme"), Some("http"));
    assert_eq!(span.int("http.response.status_code"), Some(201));
    // The seeded books' events were created too, each in a trace of its own.
    let create = spans
        .iter()
        .find(|span| span.name == "create books" && span.trace_id == PARENT_TRACE_ID);
    let create = create.unwrap_or_else(|| panic!("no create books span: {spans:#?}"));
    assert_eq!(
        create.parent_span_id, span.span_id,
        "the write creates the event"
    );
    assert_eq!(create.kind, PRODUCER);
    assert_eq!(create.text("messaging.system"), Some("rabbitmq"));
    assert_eq!(create.text("messaging.operation.type"), Some("create"));
    assert_eq!(create.text("messaging.destination.name"), Some("books"));
    assert_eq!(
        create.text("messaging.rabbitmq.destination.routing_key"),
        Some("book.created")
    );
    // The relay sent it in a batch: a trace of its own, linked to the event's creation.
    let created = (create.trace_id.clone(), create.span_id.clone());
    let send = spans
        .iter()
        .find(|span| span.name == "send books" && span.links.contains(&created));
    let send = send.unwrap_or_else(|| panic!("no send books span links to it: {spans:#?}"));
    assert_eq!(send.kind, PRODUCER);
    assert_ne!(send.trace_id, PARENT_TRACE_ID, "a batch is not one write's");
    assert_eq!(send.text("messaging.operation.type"), Some("send"));
    assert_eq!(send.text("messaging.destination.name"), Some("books"));
    let count = send
        .int("messaging.batch.message_count")
        .unwrap_or_default();
    assert!(
        count >= 1 && count >= i64::try_from(send.links.len())?,
        "{send:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn exported_spans_follow_the_standard_variables_and_name_routes_not_paths()
-> anyhow::Result<()> {
    let receiver = testkit::OtlpReceiver::start().await?;
    let binary = Binary::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "storage-under-test"),
    ])
    .await?;
    binary.create_book(&[]).await?;
    let missing = reqwest::get(format!("{}/books/999999", binary.address)).await?;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Batches go out on their own (100 ms), without a shutdown.
    let arrived = eventually(PATIENCE, || async {
        receiver
            .spans()
            .iter()
            .any(|span| span.name == "GET /books/{id}")
    })
    .await;

    let spans = receiver.spans();
    assert!(arrived, "no GET /books/{{id}} span: {spans:#?}");
    let get = spans.iter().find(|span| span.name == "GET /books/{id}");
    let get = get.expect("found above");
    assert_eq!(get.service_name.as_deref(), Some("storage-under-test"));
    assert_eq!(get.text("url.path"), Some("/books/999999"));
    assert_eq!(get.int("http.response.status_code"), Some(404), "{get:#?}");
    assert!(
        get.parent_span_id.is_empty(),
        "no caller context: a root span"
    );
    Ok(())
}
