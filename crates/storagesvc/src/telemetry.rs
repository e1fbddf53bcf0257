//! Logging and span export: tracing with an env filter (JSON lines or pretty text), and the
//! OpenTelemetry layer that turns request and event spans into OpenTelemetry spans, exported
//! over OTLP when configured.
//!
//! Two layers see every span, each with its own filter: the log layer with `RUST_LOG`, the
//! OpenTelemetry layer with `SPAN_FILTER` (ours at info), so `RUST_LOG=warn` still
//! propagates trace context and `RUST_LOG=debug` does not turn every debug span into an
//! exported one. How spans continue a caller's trace is [`crate::trace_context`].
//!
//! The JSON lines themselves (fields, trace ids) are [`crate::log_format`].
//!
//! Export: only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set, over http/protobuf, batched on the SDK's own thread; the standard `OTEL_*`
//! variables configure it. Without it spans still get ids (they are propagated) but nothing
//! is collected or sent.

use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::log_format;

/// The service's name in exported spans unless `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) names it otherwise.
const SERVICE_NAME: &str = env!("CARGO_PKG_NAME");

/// Which spans become OpenTelemetry spans: ours at info and above (requests, events), not
/// lapin's or the exporter's own HTTP client's.
const SPAN_FILTER: &str = "info,lapin=off,reqwest=off,hyper=off,hyper_util=off,h2=off";

/// The tracer provider: keep it until shutdown, then call [`Telemetry::shutdown`] so the
/// spans still batched are sent.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends what is batched and stops the exporter. Blocks (up to the SDK's export
    /// timeout): call it from `spawn_blocking` or after the runtime.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "flushing the OpenTelemetry spans failed");
        }
    }
}

/// Installs the global subscriber. `filter` was validated when the settings were read.
///
/// Fails if a subscriber is already installed or the OTLP exporter cannot be built from the
/// `OTEL_*` variables.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let provider = tracer_provider()?;
    // busy/idle times are not in the conventions, and tracking them costs on every poll.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SERVICE_NAME))
        .with_tracked_inactivity(false)
        // Nothing here reads OpenTelemetry's current context (the context is taken from the
        // span, `trace_context`): attaching it on every poll of a request would cost for naught.
        .with_context_activation(false)
        .with_filter(span_filter());
    let filter = env_filter(filter)?;
    let logs = match format {
        LogFormat::Json => log_format::json_lines(std::io::stdout)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .pretty()
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    Ok(Telemetry { provider })
}

/// A provider with an OTLP batch exporter when an endpoint is configured, with none otherwise.
fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder().with_resource(resource());
    let var = |name: &str| std::env::var(name).ok();
    if !export_configured(var) {
        return Ok(builder.build());
    }
    check_protocol(var)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| anyhow::anyhow!("invalid OTEL_EXPORTER_OTLP_* settings: {error}"))?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// Whether this process exports spans: the `OTEL_*` variables of its environment ask for OTLP
/// export, as [`init`] reads them. Without an exporter a span that logs nothing is seen by
/// nobody, so a request answered from memory may go without one.
pub fn spans_exported() -> bool {
    export_configured(|name| std::env::var(name).ok())
}

/// Whether the variables ask for OTLP export: an endpoint is set and `OTEL_TRACES_EXPORTER`
/// does not say `none`.
fn export_configured(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|value| !value.trim().is_empty());
    let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let disabled = var("OTEL_TRACES_EXPORTER").is_some_and(|value| value.trim() == "none");
    endpoint && !disabled
}

/// Refuses an OTLP protocol other than http/protobuf, the only one built in: the exporter
/// would silently fall back to it, and a collector's gRPC port would get nothing it reads.
fn check_protocol(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = var(name).filter(|value| !value.trim().is_empty()) {
            anyhow::ensure!(
                protocol.trim() == "http/protobuf",
                "invalid {name} {protocol:?}: only http/protobuf is supported"
            );
        }
    }
    Ok(())
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), with our name when
/// those do not give one (the SDK would say `unknown_service:<binary>`).
fn resource() -> Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

fn span_filter() -> Targets {
    SPAN_FILTER
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
}

/// The service's filter for `directives` (`RUST_LOG`): as given, with two libraries' own
/// lines about a lost dependency left out unless the directives name the library, since the
/// service logs each loss itself, once, with its cause and what it does next:
/// - lapin logs every broker connection loss at ERROR ("Connection closed", "Connection
///   error"), an expected broker stop included (the broker session logs it at WARN);
/// - sqlx's pool warns once per pooled connection found dead during a PostgreSQL outage
///   ("error occurred while testing the connection on-release"; the outage is logged by
///   `events::outage`).
///
/// `RUST_LOG=info,lapin=info,sqlx=warn` brings them back.
pub fn env_filter(directives: &str) -> Result<EnvFilter, ParseError> {
    EnvFilter::builder().parse(quiet_libraries(directives))
}

fn quiet_libraries(directives: &str) -> String {
    let mut filter = directives.to_owned();
    if !directives.contains("lapin") {
        filter.push_str(",lapin=off");
    }
    if !directives.contains("sqlx") {
        filter.push_str(",sqlx_core::pool=error");
    }
    filter
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The events a subscriber with `filter` lets through, of those lapin and we emit when a
    /// broker stops and the one sqlx's pool emits per connection when PostgreSQL goes.
    fn passed(filter: &str) -> Vec<String> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let layer = tracing_subscriber::fmt::layer()
            .with_writer({
                let seen = Arc::clone(&seen);
                move || Capture(Arc::clone(&seen))
            })
            .without_time();
        let filter = EnvFilter::builder()
            .parse(quiet_libraries(filter))
            .expect("a valid filter");
        let subscriber = tracing_subscriber::registry().with(filter).with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "lapin::channels", "Connection error");
            tracing::error!(target: "lapin::channel", "Connection closed");
            tracing::warn!(target: "events::session", "broker session lost; reconnecting");
            tracing::warn!(
                target: "sqlx_core::pool::connection",
                "error occurred while testing the connection on-release"
            );
        });
        seen.lock().expect("not poisoned").clone()
    }

    struct Capture(Arc<Mutex<Vec<String>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let line = String::from_utf8_lossy(bytes).trim().to_owned();
            self.0.lock().expect("not poisoned").push(line);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_broker_stop_is_logged_once_by_the_session_not_as_error_by_lapin() {
        let lines = passed("info");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("WARN") && lines[0].contains("broker session lost"));
    }

    #[test]
    fn a_filter_that_names_sqlx_gets_its_pool_warnings() {
        let lines = passed("info,sqlx=warn");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[1].contains("on-release"), "{lines:?}");
    }

    #[test]
    fn a_filter_that_names_lapin_gets_its_lines() {
        let lines = passed("info,lapin=error");
        assert_eq!(lines.len(), 3, "{lines:?}");
    }

    #[test]
    fn export_is_on_only_with_an_endpoint_and_not_disabled() {
        let cases: [(&[(&str, &str)], bool); 6] = [
            (&[], false),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")], false),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")], true),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces",
                )],
                true,
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "none"),
                ],
                false,
            ),
            (&[("OTEL_SERVICE_NAME", "x")], false),
        ];
        for (variables, expected) in cases {
            let var = |name: &str| {
                let found = variables.iter().find(|(key, _)| *key == name);
                found.map(|(_, value)| (*value).to_owned())
            };
            assert_eq!(export_configured(var), expected, "{variables:?}");
        }
    }

    #[test]
    fn only_the_http_protobuf_protocol_is_accepted() {
        let with = |name: &'static str, value: &'static str| {
            move |asked: &str| (asked == name).then(|| value.to_owned())
        };
        assert!(check_protocol(|_| None).is_ok());
        assert!(check_protocol(with("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")).is_ok());
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ] {
            let error = check_protocol(with(name, value)).expect_err(value);
            assert!(error.to_string().contains(name), "{error}");
        }
    }
}
