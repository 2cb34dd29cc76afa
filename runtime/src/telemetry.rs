//! Traces, so one request can be followed across both services: each process's
//! spans (a request, a gRPC call, a write batch, its commit) go to an OpenTelemetry
//! collector over OTLP/gRPC, and the W3C `traceparent` header carries a trace from
//! the ingress to the gateway and from the gateway to the user-service.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set, as every OpenTelemetry SDK does it; the standard variables then apply
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_BSP_SCHEDULE_DELAY`, …). Off, spans cost what `tracing` spans cost and no
//! header is read or written.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    Layer, Registry,
    filter::{FilterExt, Targets, filter_fn},
};

/// The variables that turn export on, in the order the SDK reads them.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// What `--help` says of traces (both binaries, after the options), naming each
/// variable read, so the manifests' tests can check the ones they set.
pub const HELP: &str = "Traces (OpenTelemetry over OTLP/gRPC), off unless an endpoint is set:
  OTEL_EXPORTER_OTLP_ENDPOINT          the collector, e.g. http://otel-collector:4317
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT   the same, for traces only (wins)
  OTEL_EXPORTER_OTLP_TIMEOUT           ms an export may take (default 10000)
  OTEL_EXPORTER_OTLP_PROTOCOL          grpc (the only one built in)
  OTEL_SERVICE_NAME                    service.name (default: the binary's name)
  OTEL_RESOURCE_ATTRIBUTES             more resource attributes, key=value,...
  OTEL_TRACES_SAMPLER                  e.g. parentbased_traceidratio (default parentbased_always_on)
  OTEL_TRACES_SAMPLER_ARG              its ratio, e.g. 0.1
  OTEL_BSP_SCHEDULE_DELAY              ms between exports (default 5000)";

/// The name of a span kept out of traces (a stream that lasts hours): its log
/// lines keep their context, no trace gets a span that never ends.
pub const UNTRACED_SPAN: &str = "stream";

/// Set once export is on: spans then carry OpenTelemetry contexts worth sending.
static EXPORTING: OnceLock<()> = OnceLock::new();

/// The exporter, kept so the spans still buffered are sent at exit.
#[must_use = "dropping the guard ends export; keep it until the process stops"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (waiting at most the exporter's timeout):
    /// the last requests before a shutdown are the ones an operator looks for.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "traces still buffered at exit were not sent");
        }
    }
}

/// A layer of the global subscriber, whichever kind.
pub(crate) type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The OpenTelemetry layer for `service` (the default `service.name`, which
/// `OTEL_SERVICE_NAME` overrides), or `None` when no endpoint is configured.
/// Must run inside the Tokio runtime: the exporter's gRPC client lives there.
pub(crate) fn layer(service: &'static str) -> Result<(Option<BoxedLayer>, Telemetry), String> {
    let configured = ENDPOINT_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !configured {
        return Ok((None, Telemetry { provider: None }));
    }
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && protocol != "grpc"
    {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol:?}: only \"grpc\" is supported (OTLP over gRPC, port 4317)"
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(Protocol::Grpc)
        .build()
        .map_err(|e| format!("the OTLP trace exporter ({}): {e}", ENDPOINT_VARIABLES[1]))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(service);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = EXPORTING.set(());
    // Our own spans only: the exporter's gRPC client (tonic, h2, hyper) would
    // otherwise trace its own exports.
    let ours = Targets::new()
        .with_target("gateway", tracing::Level::INFO)
        .with_target("user_service", tracing::Level::INFO)
        .with_target("service_runtime", tracing::Level::INFO);
    let traced = ours.and(filter_fn(|meta| meta.name() != UNTRACED_SPAN));
    // Less work per span and per poll: no context attached on every enter (our
    // parents and propagation go through the tracing spans themselves), no
    // busy/idle timing (two clock reads per poll), no thread name (an allocation
    // per span), no source location (three attributes per span).
    let layer = tracing_opentelemetry::layer()
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_tracer(tracer)
        .with_filter(traced)
        .boxed();
    Ok((
        Some(layer),
        Telemetry {
            provider: Some(provider),
        },
    ))
}

/// Whether spans are being exported: callers skip work only traces use.
pub fn exporting() -> bool {
    EXPORTING.get().is_some()
}

/// Names `span` in traces and says what it is (`kind`: `server`, `client`),
/// with OpenTelemetry's semantic `attributes` (`http.route`, `rpc.method`, …);
/// nothing when export is off, so log lines keep their fields. The span must
/// declare `otel.name` and `otel.kind` (empty).
pub fn describe(
    span: &tracing::Span,
    name: impl FnOnce() -> String,
    kind: &'static str,
    attributes: &[(&'static str, &str)],
) {
    if EXPORTING.get().is_none() || span.is_disabled() {
        return;
    }
    span.record("otel.name", name());
    span.record("otel.kind", kind);
    for (key, value) in attributes {
        span.set_attribute(*key, value.to_string());
    }
}

/// Marks `span` failed in traces, with why; nothing when export is off.
pub fn failed(span: &tracing::Span, why: &str) {
    if EXPORTING.get().is_none() || span.is_disabled() {
        return;
    }
    span.set_status(opentelemetry::trace::Status::error(why.to_owned()));
}

/// gRPC codes that make a server span an error, as OpenTelemetry's conventions
/// for RPC say: the server failed, not the caller (NOT_FOUND, INVALID_ARGUMENT,
/// FAILED_PRECONDITION… are answers, not failures).
const GRPC_SERVER_FAILURES: [i32; 6] = [
    2,  // UNKNOWN
    4,  // DEADLINE_EXCEEDED
    12, // UNIMPLEMENTED
    13, // INTERNAL
    14, // UNAVAILABLE
    15, // DATA_LOSS
];

/// Whether a server span that ended with gRPC `code` is an error.
pub fn grpc_server_failed(code: i32) -> bool {
    GRPC_SERVER_FAILURES.contains(&code)
}

/// Records on the server span of a gRPC call how it ended, from its response
/// `headers`: `rpc.grpc.status_code`, and an error status when
/// [`grpc_server_failed`]. A refused call ends in its headers (trailers-only);
/// one without `grpc-status` there succeeded so far (its status comes in the
/// trailers: OK). Nothing when export is off.
pub fn grpc_served(span: &tracing::Span, headers: &HeaderMap) {
    if EXPORTING.get().is_none() || span.is_disabled() {
        return;
    }
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    if grpc_server_failed(code) {
        let message = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let name = crate::metrics::grpc_code_name(code);
        span.set_status(opentelemetry::trace::Status::error(format!(
            "{name}: {message}"
        )));
    }
}

/// Makes `span` a child of the trace `headers` carry (`traceparent`,
/// `tracestate`), when export is on and they carry one. Call before the span is
/// first entered.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if EXPORTING.get().is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if opentelemetry::trace::TraceContextExt::has_active_span(&context) {
        let _ = span.set_parent(context);
    }
}

/// Writes the current span's trace into `headers` (`traceparent`, and
/// `tracestate` when set), so the callee's spans join it. Nothing when export
/// is off.
pub fn propagate(headers: &mut HeaderMap) {
    if EXPORTING.get().is_none() {
        return;
    }
    let context: Context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// Reads propagation fields from HTTP headers or gRPC metadata (both are a
/// `HeaderMap` underneath).
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes propagation fields into HTTP headers or gRPC metadata.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_through_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let mut out = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut out));
        assert_eq!(
            out.get("traceparent").unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn only_the_servers_own_failures_make_a_server_span_an_error() {
        let failures: Vec<&str> = (0..17)
            .filter(|&code| grpc_server_failed(code))
            .map(crate::metrics::grpc_code_name)
            .collect();
        assert_eq!(
            failures,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_no_trace() {
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_static(bad));
            let context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
            assert!(
                !opentelemetry::trace::TraceContextExt::has_active_span(&context),
                "{bad}"
            );
        }
    }
}
