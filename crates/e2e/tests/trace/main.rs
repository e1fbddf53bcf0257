//! Trace context end to end: both services as real processes, exporting their spans to one
//! OTLP receiver (`testkit::OtlpReceiver`, which decodes the protobuf they send). A write and
//! the consumer's application of its event are one trace; so are a read through booksvc and
//! its call to storagesvc. Each span's parent is the span that caused it.

use std::time::Duration;

use e2e::system::TOKEN;
use e2e::{Binaries, Options, System};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{OtlpReceiver, ReceivedSpan, eventually};

/// A caller's context, from the W3C specification's examples.
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const PARENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
/// OTLP `SpanKind`s.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
/// Generous bound for spans to be batched (every 100 ms here) and received.
const PATIENCE: Duration = Duration::from_secs(20);

/// Both services, each exporting to `receiver` every 100 ms.
async fn traced_system(receiver: &OtlpReceiver) -> anyhow::Result<System> {
    let binaries = Binaries {
        booksvc: env!("CARGO_BIN_EXE_e2e-booksvc").into(),
        storagesvc: env!("CARGO_BIN_EXE_e2e-storagesvc").into(),
    };
    Options::new(binaries)
        .storagesvc_env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .storagesvc_env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .booksvc_env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .booksvc_env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start()
        .await
}

/// Waits for the span of `service` named `name` in the caller's trace.
async fn span_of(receiver: &OtlpReceiver, service: &str, name: &str) -> ReceivedSpan {
    let find = || {
        receiver.spans().into_iter().find(|span| {
            span.trace_id == PARENT_TRACE_ID
                && span.name == name
                && span.service_name.as_deref() == Some(service)
        })
    };
    eventually(PATIENCE, || async { find().is_some() }).await;
    find().unwrap_or_else(|| {
        panic!(
            "no {service} span {name:?} in the trace: {:#?}",
            receiver.spans()
        )
    })
}

#[tokio::test]
async fn a_write_and_the_application_of_its_event_are_one_trace() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let system = traced_system(&receiver).await?;

    let response = system
        .client
        .post(format!("{}/books", system.storagesvc.url()))
        .bearer_auth(TOKEN)
        .header("traceparent", PARENT)
        .json(&json!({ "title": "Traced", "author": "E2E", "desc": "" }))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await?["id"].as_i64();
    let id = id.expect("the created book has an id");

    let write = span_of(&receiver, "storagesvc", "POST /books").await;
    let create = span_of(&receiver, "storagesvc", "create books").await;
    let apply = span_of(&receiver, "booksvc", "process books").await;
    assert_eq!(write.parent_span_id, PARENT_SPAN_ID);
    assert_eq!(write.kind, SERVER);
    assert_eq!(
        create.parent_span_id, write.span_id,
        "the write creates the event"
    );
    assert_eq!(create.kind, PRODUCER);
    assert_eq!(apply.parent_span_id, create.span_id, "the event is applied");
    assert_eq!(apply.kind, CONSUMER);
    assert_eq!(apply.text("messaging.system"), Some("rabbitmq"));
    assert_eq!(apply.text("messaging.operation.type"), Some("process"));
    assert_eq!(apply.text("messaging.destination.name"), Some("books"));
    assert_eq!(
        apply.text("messaging.rabbitmq.destination.routing_key"),
        Some("book.created")
    );
    assert_eq!(
        system.cached_version(id).await,
        Some(1),
        "and it was applied"
    );
    Ok(())
}

#[tokio::test]
async fn a_read_through_booksvc_and_its_call_to_storagesvc_are_one_trace() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let system = traced_system(&receiver).await?;
    let id = system.create_books(1).await?[0];

    let response = system
        .client
        .get(format!("{}/books/{id}", system.booksvc.url()))
        .header("traceparent", PARENT)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);

    let read = span_of(&receiver, "booksvc", "GET /books/{id}").await;
    let call = span_of(&receiver, "booksvc", "GET").await;
    let served = span_of(&receiver, "storagesvc", "GET /books/{id}").await;
    assert_eq!(read.parent_span_id, PARENT_SPAN_ID);
    assert_eq!(
        (read.kind, call.kind, served.kind),
        (SERVER, CLIENT, SERVER)
    );
    assert_eq!(read.text("http.route"), Some("/books/{id}"));
    assert_eq!(read.int("http.response.status_code"), Some(200));
    assert_eq!(
        call.parent_span_id, read.span_id,
        "booksvc's call is part of the read"
    );
    assert_eq!(
        served.parent_span_id, call.span_id,
        "storagesvc serves that call"
    );
    assert_eq!(call.int("http.response.status_code"), Some(200));
    assert_eq!(
        served.text("url.path"),
        Some(format!("/books/{id}").as_str())
    );
    Ok(())
}
