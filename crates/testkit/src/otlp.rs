//! An OTLP/HTTP trace receiver for tests: it decodes what an exporter really sends
//! (`ExportTraceServiceRequest`, protobuf, on `POST /v1/traces`) and keeps the spans, so a
//! test can assert which spans a service exported, in which trace, with which attributes.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let receiver = testkit::OtlpReceiver::start().await?;
//! // Run the service with OTEL_EXPORTER_OTLP_ENDPOINT = receiver.endpoint(), then:
//! let spans = receiver.spans();
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::task::JoinHandle;

/// A span as the receiver decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    /// The span's name, e.g. `POST /books`.
    pub name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits; empty for a root span.
    pub parent_span_id: String,
    /// OTLP `SpanKind`: 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// The span's attributes.
    pub attributes: BTreeMap<String, Value>,
    /// The spans it links to: (trace id, span id), hex as above.
    pub links: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// A string attribute.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key)? {
            Value::StringValue(value) => Some(value),
            _ => None,
        }
    }

    /// An integer attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            Value::IntValue(value) => Some(*value),
            _ => None,
        }
    }
}

/// A receiver on `127.0.0.1:<free port>`, stopped on drop.
pub struct OtlpReceiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Binds a free port and starts serving.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let spans = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&spans));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(OtlpReceiver {
            endpoint,
            spans,
            server,
        })
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter appends `/v1/traces`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("not poisoned").clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `POST /v1/traces`: protobuf only (http/protobuf); anything undecodable is a 400, so an
/// exporter speaking something else shows up as missing spans rather than as garbage.
async fn receive(
    State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    if content_type != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let decoded = decode(request);
    spans.lock().expect("not poisoned").extend(decoded);
    // An empty ExportTraceServiceResponse encodes as no bytes: full success.
    (StatusCode::OK, Vec::new())
}

fn decode(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut decoded = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let service_name = match attributes(resource).remove("service.name") {
            Some(Value::StringValue(name)) => Some(name),
            _ => None,
        };
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            decoded.push(ReceivedSpan {
                service_name: service_name.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                kind: span.kind,
                attributes: attributes(span.attributes),
                links: span
                    .links
                    .iter()
                    .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                    .collect(),
            });
        }
    }
    decoded
}

fn attributes(pairs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    pairs
        .into_iter()
        .filter_map(|pair| Some((pair.key, pair.value?.value?)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
