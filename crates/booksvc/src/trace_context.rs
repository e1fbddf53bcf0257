//! W3C trace context: the spans of requests and events continue the caller's trace (or start
//! one), carry their ids into every log line inside them, and hand the context on (on the
//! calls one service makes to the other, with an event through the outbox, on republished
//! messages).
//!
//! The format is W3C Trace Context (`traceparent`, `tracestate`) through OpenTelemetry's
//! propagator; the ids are the OpenTelemetry layer's, kept with the span ([`record_ids`]) so
//! the JSON log lines inside it carry them ([`crate::log_format`]). Without the OpenTelemetry
//! layer (a test that installed no subscriber) spans have no context, and nothing here fails.
//!
//! What is known only once a span runs (the response's status, an error) goes to the
//! OpenTelemetry span directly ([`OpenTelemetrySpanExt::set_attribute`]), not through
//! `Span::record`: the JSON log layer re-serialises a span's fields on every `record`.

use std::collections::HashMap;

use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Method, Request, StatusCode, Version};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, Status, TraceContextExt, TraceId};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Longest `tracestate` kept and passed on. W3C asks vendors to pass on at least 512
/// characters; a longer one is dropped rather than stored with every outbox row.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// The span of one HTTP request, named and attributed per the OpenTelemetry semantic
/// conventions for HTTP servers (`{method} {route}`, `http.request.method`, `http.route`,
/// `url.path`, ...), continuing the caller's trace. `request_id` and `path` (already cut to a
/// loggable length) ride along for the log lines.
pub fn http_server_span<B>(request: &Request<B>, request_id: &str, path: &str) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let method = known_method(request.method());
    // The conventions name a request with an unknown method `HTTP`, and its method `_OTHER`.
    let name = match (method, route) {
        (Some(method), Some(route)) => format!("{method} {route}"),
        (Some(method), None) => method.to_owned(),
        (None, _) => "HTTP".to_owned(),
    };
    // An unknown method is kept as sent, unless it is too long to be worth a log field.
    let original = (method.is_none())
        .then_some(request.method().as_str())
        .filter(|original| original.len() <= 32);
    let span = tracing::info_span!(
        "request",
        otel.name = name.as_str(),
        otel.kind = "server",
        http.request.method = method.unwrap_or("_OTHER"),
        http.request.method_original = original,
        http.route = route,
        url.path = path,
        url.scheme = "http",
        network.protocol.version = protocol_version(request.version()),
        request_id,
    );
    continue_trace(&span, request.headers());
    span
}

/// Sets the response's status on an HTTP span (server or client); a 5xx marks the span as
/// failed (a 4xx is the client's error, not the server's, per the conventions).
pub fn record_http_status(span: &Span, status: StatusCode) {
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        record_error(span, status.as_str().to_owned());
    }
}

/// Marks `span` as failed with the conventions' `error.type` (a status code, or a class of
/// error such as `"transport"`: a `&'static str` is passed on without a copy).
pub fn record_error(span: &Span, error_type: impl Into<opentelemetry::Value>) {
    span.set_status(Status::error(""));
    span.set_attribute("error.type", error_type);
}

/// The method as the conventions spell it, if it is one of the methods they know.
fn known_method(method: &Method) -> Option<&'static str> {
    let known = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    let index = known.iter().position(|candidate| candidate == method)?;
    let names = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    Some(names[index])
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Makes `span` continue the W3C trace context in `headers` (`traceparent`, `tracestate`),
/// or start a trace when there is none or it is malformed.
///
/// Without the OpenTelemetry layer (a test that installed no subscriber) nothing happens.
pub fn continue_trace(span: &Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only when the span is disabled or has no OpenTelemetry layer: then it has no ids.
    let _ = span.set_parent(parent);
    record_ids(span);
}

/// A span's OpenTelemetry ids, kept with it in the registry for the log lines inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    /// The W3C trace id.
    pub trace_id: TraceId,
    /// The span's own id.
    pub span_id: SpanId,
}

/// Keeps the span's OpenTelemetry ids with it ([`SpanIds`]), so every JSON log line inside it
/// carries them. Starts the OpenTelemetry span (its ids exist from then on); call it once the
/// parent is set.
pub fn record_ids(span: &Span) {
    let context = span.context();
    let otel_span = context.span();
    let ids = otel_span.span_context();
    if !ids.is_valid() {
        return;
    }
    let ids = SpanIds {
        trace_id: ids.trace_id(),
        span_id: ids.span_id(),
    };
    span.with_subscriber(|(id, dispatch)| {
        let span = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id));
        if let Some(span) = span {
            span.extensions_mut().replace(ids);
        }
    });
}

/// The W3C headers of a trace context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: Option<String>,
    /// Vendor entries; `None` when empty or longer than [`MAX_TRACESTATE_LEN`].
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// The context of the current span; empty outside any traced span.
    pub fn current() -> TraceHeaders {
        TraceHeaders::of(&Span::current())
    }

    /// The context of `span`; empty when it has none.
    pub fn of(span: &Span) -> TraceHeaders {
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
        TraceHeaders {
            traceparent: carrier.remove("traceparent"),
            tracestate: carrier
                .remove("tracestate")
                .filter(|state| !state.is_empty() && state.len() <= MAX_TRACESTATE_LEN),
        }
    }

    /// Reads the headers with `get` (e.g. from an AMQP message), dropping a `tracestate`
    /// longer than [`MAX_TRACESTATE_LEN`]. Nothing is validated here: the propagator ignores
    /// a malformed `traceparent` when the context is extracted.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> TraceHeaders {
        TraceHeaders {
            traceparent: get("traceparent"),
            tracestate: get("tracestate")
                .filter(|state| !state.is_empty() && state.len() <= MAX_TRACESTATE_LEN),
        }
    }

    /// The span context these headers name, if they name a valid one (e.g. to link a span to
    /// the span that created a message).
    pub fn span_context(&self) -> Option<SpanContext> {
        span_context_of(self.traceparent.as_deref(), self.tracestate.as_deref())
    }

    /// Makes `span` continue this context (or start a trace when it is empty or malformed),
    /// like [`continue_trace`] does from HTTP headers.
    pub fn continue_in(&self, span: &Span) {
        let carrier = Carrier {
            traceparent: self.traceparent.as_deref(),
            tracestate: self.tracestate.as_deref(),
        };
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
        record_ids(span);
    }
}

/// The span context that a `traceparent` (and `tracestate`) name, if valid; read in place,
/// without copying the values into a map (the relay links a span per published event).
pub fn span_context_of(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    let carrier = Carrier {
        traceparent,
        tracestate,
    };
    let context = TraceContextPropagator::new().extract(&carrier);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The two W3C headers, borrowed, as the propagator reads them.
struct Carrier<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let present = [
            ("traceparent", self.traceparent),
            ("tracestate", self.tracestate),
        ];
        present
            .into_iter()
            .filter_map(|(name, value)| value.map(|_| name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A subscriber with the OpenTelemetry layer and no exporter, as the service runs
    /// without `OTEL_EXPORTER_OTLP_ENDPOINT`.
    fn traced() -> impl tracing::Subscriber + Send + Sync {
        let provider = SdkTracerProvider::builder().build();
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("a header value"));
        }
        map
    }

    /// `(trace id, span id)` of a `traceparent`.
    fn ids(traceparent: &str) -> (String, String) {
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        (parts[1].to_owned(), parts[2].to_owned())
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_span_continues_an_incoming_trace_with_its_own_span_id_and_the_tracestate() {
        tracing::subscriber::with_default(traced(), || {
            let span = tracing::info_span!("request");
            let incoming = headers(&[("traceparent", PARENT), ("tracestate", "vendor=abc")]);
            continue_trace(&span, &incoming);

            let out = TraceHeaders::of(&span);
            let (trace_id, span_id) = ids(out.traceparent.as_deref().expect("a traceparent"));
            assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(
                span_id, "00f067aa0ba902b7",
                "the span is a child, not the caller"
            );
            assert_eq!(out.tracestate.as_deref(), Some("vendor=abc"));
        });
    }

    #[test]
    fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
        tracing::subscriber::with_default(traced(), || {
            let cases = [
                headers(&[]),
                headers(&[("traceparent", "garbage")]),
                headers(&[("traceparent", &"0".repeat(4096))]),
                headers(&[(
                    "traceparent",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                )]),
            ];
            let mut seen = std::collections::HashSet::new();
            for incoming in cases {
                let span = tracing::info_span!("request");
                continue_trace(&span, &incoming);
                let out = TraceHeaders::of(&span);
                let traceparent = out.traceparent.expect("a new trace is started");
                let (trace_id, _) = ids(&traceparent);
                assert_eq!(trace_id.len(), 32, "{traceparent}");
                assert_ne!(trace_id, "0".repeat(32), "{traceparent}");
                assert!(seen.insert(trace_id), "each request gets its own trace");
            }
        });
    }

    #[test]
    fn an_overlong_tracestate_is_not_passed_on() {
        let long = format!("vendor={}", "a".repeat(MAX_TRACESTATE_LEN));
        let read = TraceHeaders::read(|name| match name {
            "traceparent" => Some(PARENT.to_owned()),
            "tracestate" => Some(long.clone()),
            _ => None,
        });
        assert_eq!(read.traceparent.as_deref(), Some(PARENT));
        assert_eq!(read.tracestate, None);
    }

    #[test]
    fn stored_headers_name_their_span_context_and_a_malformed_one_names_none() {
        let context = span_context_of(Some(PARENT), Some("vendor=abc")).expect("valid");
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(context.trace_state().header(), "vendor=abc");
        for malformed in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            assert_eq!(span_context_of(malformed, None), None, "{malformed:?}");
        }
    }

    #[test]
    fn stored_headers_are_continued_by_a_span() {
        tracing::subscriber::with_default(traced(), || {
            let span = tracing::info_span!("event");
            let stored = TraceHeaders {
                traceparent: Some(PARENT.to_owned()),
                tracestate: Some("vendor=abc".to_owned()),
            };
            stored.continue_in(&span);
            let out = TraceHeaders::of(&span);
            let (trace_id, span_id) = ids(out.traceparent.as_deref().expect("a traceparent"));
            assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(span_id, "00f067aa0ba902b7");
            assert_eq!(out.tracestate.as_deref(), Some("vendor=abc"));
        });
    }

    #[test]
    fn without_the_opentelemetry_layer_there_is_no_context_and_no_panic() {
        let span = tracing::info_span!("request");
        continue_trace(&span, &headers(&[("traceparent", PARENT)]));
        assert_eq!(TraceHeaders::of(&span), TraceHeaders::default());
    }
}
