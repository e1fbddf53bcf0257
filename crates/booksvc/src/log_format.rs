//! The JSON log lines: one object per line with the event's fields, the innermost span's
//! fields under `span`, and the trace context's `trace_id` and `span_id` at the top level when
//! the line is emitted inside a traced span (a request, a delivery).
//!
//! Both are built for the hot path, where a span is made for every request and almost never
//! logged in (a cache hit writes no line at the default level):
//! - The ids are kept with the span when it starts ([`crate::trace_context::record_ids`]) and
//!   read only when a line is written ([`TraceIds`]), instead of being recorded as span
//!   fields: tracing-subscriber's JSON fields parse and re-serialise a span's fields on every
//!   `record`, which cost half of a cache hit's instructions.
//! - A span's fields are written as JSON text as they are visited ([`SpanFields`]), instead
//!   of being collected into a map of JSON values first, which cost another fifth.
//!
//! Measured with `scripts/profile-hit.sh` (issue 12, docs/benchmarks.md).

use std::fmt::{self, Debug, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::trace_context::SpanIds;

/// The service's JSON log layer, writing to `writer`.
pub fn json_lines<S, W>(
    writer: W,
) -> tracing_subscriber::fmt::Layer<S, SpanFields, TraceIds<Format<Json>>, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(SpanFields)
        .with_writer(writer)
        .map_event_format(TraceIds)
}

/// Wraps the JSON event format: adds `"trace_id"` and `"span_id"` to the line's object.
#[derive(Debug)]
pub struct TraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for TraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(ids) = trace_ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(512);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON format writes one object and a newline: the ids go last inside it.
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                r#"{object},"trace_id":"{}","span_id":"{}"}}"#,
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The ids of the innermost span around the event that has them; `None` outside any.
///
/// The log layer sees only the spans its filter lets through: with `RUST_LOG=warn` a warning
/// inside a request (an INFO span) has no ids, as it has no `span` either.
fn trace_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<SpanIds>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    ctx.event_scope()?
        .find_map(|span| span.extensions().get::<SpanIds>().copied())
}

/// A span's fields as one JSON object (what the JSON event format shows under `span`),
/// written as they are visited.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        write_object(&mut writer, fields)
    }

    /// Fields recorded later go inside the object written so far. A field recorded twice
    /// appears twice; the reader (serde_json, when a line is written) keeps the later value.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        write_object(&mut added, fields)?;
        let Some(added) = added.strip_prefix('{').and_then(|a| a.strip_suffix('}')) else {
            return Err(fmt::Error);
        };
        let object = &mut current.fields;
        if added.is_empty() {
            return Ok(());
        }
        if object.is_empty() || object == "{}" {
            object.clear();
            return write!(object, "{{{added}}}");
        }
        if object.pop() != Some('}') {
            return Err(fmt::Error);
        }
        write!(object, ",{added}}}")
    }
}

/// Writes `fields` to `out` as one JSON object.
fn write_object(out: &mut dyn fmt::Write, fields: impl RecordFields) -> fmt::Result {
    out.write_char('{')?;
    let mut object = JsonObject {
        out,
        empty: true,
        result: Ok(()),
    };
    fields.record(&mut object);
    object.result?;
    object.out.write_char('}')
}

/// Writes each visited field as `"name":value` (the object's braces are the caller's).
struct JsonObject<'a> {
    out: &'a mut dyn fmt::Write,
    empty: bool,
    result: fmt::Result,
}

impl JsonObject<'_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.empty { "" } else { "," };
        self.empty = false;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| json_string(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }
}

impl Visit for JsonObject<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| json_string(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        match value.is_finite() {
            true => self.entry(field, |out| write!(out, "{value}")),
            false => self.entry(field, |out| out.write_str("null")),
        }
    }

    /// Everything else (`%display`, `?debug`, errors) as a string.
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn json_string(out: &mut dyn fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(text)?;
    out.write_char('"')
}

/// Writes through to the inner writer with JSON's string escapes.
struct Escaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Most values (ids, paths, routes) need no escape: one quick scan, one write.
        if !text
            .bytes()
            .any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\')
        {
            return self.0.write_str(text);
        }
        // Every byte that needs an escape is ASCII, never part of a multi-byte character, so
        // the text is cut only at character boundaries.
        let mut plain = 0;
        for (index, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..index])?;
            match escape {
                "" => write!(self.0, "\\u{byte:04x}")?,
                escape => self.0.write_str(escape)?,
            }
            plain = index + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use serde_json::{Value, json};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// The JSON lines `emit` writes under the service's log layer (at `log_filter`) and the
    /// OpenTelemetry layer without an exporter, as the service runs by default.
    fn json_lines_of(log_filter: &str, emit: impl FnOnce()) -> Vec<Value> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let logs = json_lines({
            let seen = Arc::clone(&seen);
            move || Capture(Arc::clone(&seen))
        });
        let filter = crate::telemetry::env_filter(log_filter).expect("a valid filter");
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = seen.lock().expect("not poisoned").clone();
        String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn traced_request() -> tracing::Span {
        let span = tracing::info_span!("request", request_id = "r-1");
        let headers = [("traceparent", PARENT)]
            .into_iter()
            .map(|(name, value)| {
                (
                    name.parse().expect("a name"),
                    value.parse().expect("a value"),
                )
            })
            .collect();
        crate::trace_context::continue_trace(&span, &headers);
        span
    }

    #[test]
    fn a_line_inside_a_traced_span_carries_its_trace_id_and_span_id_at_the_top() {
        let lines = json_lines_of("info", || {
            tracing::info!("before");
            traced_request().in_scope(|| {
                tracing::info!(book_id = 7, "inside");
                tracing::info_span!("untraced").in_scope(|| tracing::warn!("nested"));
            });
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert_eq!(
            lines[0].get("trace_id"),
            None,
            "no span, no ids: {}",
            lines[0]
        );
        for line in &lines[1..] {
            assert_eq!(
                line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
                "{line}"
            );
            let span_id = line["span_id"].as_str().unwrap_or_default();
            assert_eq!(span_id.len(), 16, "{line}");
            assert_ne!(
                span_id, "00f067aa0ba902b7",
                "the request's own span: {line}"
            );
        }
        assert_eq!(lines[1]["fields"]["book_id"], 7, "{}", lines[1]);
        assert_eq!(lines[1]["span"]["request_id"], "r-1", "{}", lines[1]);
        // A span without ids of its own: the lines in it carry the request's.
        assert_eq!(lines[2]["span"]["name"], "untraced", "{}", lines[2]);
        assert_eq!(lines[1]["span_id"], lines[2]["span_id"]);
    }

    #[test]
    fn span_fields_are_json_whatever_their_values() {
        let awkward = "a \"quoted\" \\ back\nslash\t\u{1}\u{1f} ünïcode ☃";
        let lines = json_lines_of("info", || {
            let span = tracing::info_span!(
                "request",
                text = awkward,
                count = 3_u64,
                delta = -4_i64,
                ratio = 0.5_f64,
                nan = f64::NAN,
                ok = true,
                shown = %awkward,
                debugged = ?Some(awkward),
                later = tracing::field::Empty,
                again = 1_u64,
            );
            span.record("later", "set after");
            span.record("again", 2_u64);
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let span = &lines[0]["span"];
        let expected = json!({
            "name": "request",
            "text": awkward,
            "count": 3,
            "delta": -4,
            "ratio": 0.5,
            "nan": null,
            "ok": true,
            "shown": awkward,
            "debugged": format!("{:?}", Some(awkward)),
            "later": "set after",
            "again": 2,
        });
        assert_eq!(span, &expected);
    }

    #[test]
    fn a_span_with_no_fields_then_a_recorded_one_is_an_object_with_it() {
        let lines = json_lines_of("info", || {
            let span = tracing::info_span!("bare", late = tracing::field::Empty);
            span.record("late", 1_u64);
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(lines[0]["span"], json!({"name": "bare", "late": 1}));
    }
}
