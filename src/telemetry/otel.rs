//! OpenTelemetry tracing over OTLP/HTTP, configured only by the standard variables:
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): turns export on.
//!   Unset, nothing is built: no exporter, no thread, and the spans below are disabled (free).
//! - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`
//!   (the default). This build compiles in no other encoding or transport: `http/json` exports
//!   `http/protobuf` to the same endpoint (every OTLP/HTTP receiver accepts it) with a warning
//!   that says so, and `grpc` (no gRPC client in the build) or an unknown value turns export off
//!   with a warning naming the value. See [`resolve_protocol`].
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (default service name
//!   `ferrum-serve`, `service.version` the crate version).
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_SCHEDULE_DELAY`,
//!   `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_TRACES_SAMPLER`(`_ARG`), `OTEL_SDK_DISABLED`: as
//!   the OpenTelemetry specification says.
//!
//! Integer span fields are recorded as `i64`: tracing-opentelemetry exports unsigned ones as
//! strings. Spans are batched and sent by the SDK's own thread; [`OtelGuard::shutdown`] flushes them when
//! the server stops. An incoming W3C `traceparent` header makes the request span a child of the
//! caller's span, in the caller's trace.
//!
//! ## Span names
//! One span per request, named `"{method} {route}"` (e.g. `POST /predict`), with children:
//! [`INFERENCE`] (per inference call, with `batch_size`), [`FEATURE_LOOKUP`] and [`EXPLAIN`]
//! (created by the feature-store and explain code with [`feature_lookup_span`] and
//! [`explain_span`]).

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;

/// Name of the span of one inference call.
pub const INFERENCE: &str = "inference";
/// Name of the span of one feature-store lookup.
pub const FEATURE_LOOKUP: &str = "feature_lookup";
/// Name of the span of one request's explanations.
pub const EXPLAIN: &str = "explain";

/// Keeps the tracer provider alive; flush it with [`OtelGuard::shutdown`].
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl OtelGuard {
    /// Exports every finished span still buffered and stops the exporter thread. Blocks up to
    /// the exporter's timeout: call it off the async workers (or after the runtime stopped).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("warning: flushing OpenTelemetry spans failed: {error}");
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// True when the environment asks for span export.
pub fn export_requested() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The variable naming the protocol for traces only; it wins over [`PROTOCOL_VAR`].
pub const TRACES_PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// The variable naming the protocol for every signal.
pub const PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";

/// Which OTLP protocol to export with, from the traces-specific and the general variable's
/// values (unset or blank: not given), and a warning to log when the choice is not exactly
/// what was asked for. `Err` (export off) for a protocol this build cannot speak.
pub fn resolve_protocol(
    traces: Option<&str>,
    general: Option<&str>,
) -> Result<(Protocol, Option<String>), String> {
    let given = [(TRACES_PROTOCOL_VAR, traces), (PROTOCOL_VAR, general)]
        .into_iter()
        .find_map(|(name, value)| Some((name, value?.trim())).filter(|(_, v)| !v.is_empty()));
    let Some((name, value)) = given else {
        return Ok((Protocol::HttpBinary, None));
    };
    match value.to_ascii_lowercase().as_str() {
        "http/protobuf" => Ok((Protocol::HttpBinary, None)),
        "http/json" => Ok((
            Protocol::HttpBinary,
            Some(format!(
                "{name}=http/json: this build exports OTLP/HTTP with protobuf bodies only; \
                 exporting http/protobuf to the same endpoint"
            )),
        )),
        "grpc" => Err(format!(
            "{name}=grpc is not supported: this build has no gRPC client (tonic); \
             set {name}=http/protobuf and point the endpoint at the collector's OTLP/HTTP port"
        )),
        _ => Err(format!(
            "{name}={value:?} is not an OTLP protocol this build speaks (expected http/protobuf)"
        )),
    }
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// An exporter ready to use, and what to warn about.
pub struct Exporting {
    /// Flushes and stops the exporter.
    pub guard: OtelGuard,
    /// For the tracing layer.
    pub tracer: SdkTracer,
    /// A protocol asked for that was replaced (see [`resolve_protocol`]).
    pub warning: Option<String>,
}

/// Builds the OTLP exporter and tracer when [`export_requested`]; `Ok(None)` otherwise.
pub fn init() -> Result<Option<Exporting>, String> {
    if !export_requested() {
        return Ok(None);
    }
    let (protocol, warning) = resolve_protocol(
        env_value(TRACES_PROTOCOL_VAR).as_deref(),
        env_value(PROTOCOL_VAR).as_deref(),
    )?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("cannot build the OTLP span exporter: {e}"))?;
    let mut resource = Resource::builder();
    let attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    if !env_set("OTEL_SERVICE_NAME") && !attributes.contains("service.name=") {
        resource = resource.with_service_name("ferrum-serve");
    }
    if !attributes.contains("service.version=") {
        resource = resource.with_attribute(KeyValue::new("service.version", crate::BUILD_VERSION));
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("ferrum-serve");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Some(Exporting {
        guard: OtelGuard { provider },
        tracer,
        warning,
    }))
}

/// Reads W3C trace context from request headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` continue the trace of an incoming `traceparent` (if any) and returns the trace
/// id it belongs to, for the request's log line. Call before the span is first entered.
pub fn continue_trace(span: &Span, headers: &HeaderMap) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The W3C `traceparent` naming `span` as the parent, for an outgoing call made inside it
/// (the feature-store lookup), so the callee's spans nest under it. `None` when spans are not
/// exported (the span is disabled).
pub fn traceparent_of(span: &Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The trace id of a well-formed `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`, ids not
/// all zero), for the log line when spans are not exported.
pub fn traceparent_trace_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    (hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && nonzero(trace)
        && nonzero(parent))
    .then_some(trace)
}

/// The span of one inference call of `rows` rows, a child of the current span.
pub fn inference_span(model: &str, version: &str, batch_size: usize) -> Span {
    tracing::info_span!(
        "inference",
        otel.name = INFERENCE,
        model = %model,
        model_version = %version,
        batch_size = batch_size as i64,
        queue_ms = tracing::field::Empty,
        inference_ms = tracing::field::Empty,
    )
}

/// The span of one feature-store lookup of `entities` entity ids: for the feature-store client
/// to wrap its call in (`.instrument(feature_lookup_span(n))`). Record `cache_hits` on it.
pub fn feature_lookup_span(entities: usize) -> Span {
    tracing::info_span!(
        "feature_lookup",
        otel.name = FEATURE_LOOKUP,
        entities = entities as i64,
        cache_hits = tracing::field::Empty,
    )
}

/// The span of one request's explanations: for the explain code to wrap its work in.
pub fn explain_span(model: &str, version: &str, method: &'static str, rows: usize) -> Span {
    tracing::info_span!(
        "explain",
        otel.name = EXPLAIN,
        model = %model,
        model_version = %version,
        method,
        rows = rows as i64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", traceparent.parse().unwrap());
        h
    }

    #[test]
    fn traceparent_is_validated() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_trace_id(&headers(good)),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(traceparent_trace_id(&headers(bad)), None, "{bad}");
        }
        assert_eq!(traceparent_trace_id(&HeaderMap::new()), None);
    }

    #[test]
    fn the_protocol_comes_from_the_traces_variable_then_the_general_one() {
        let protocol = |traces, general| resolve_protocol(traces, general);
        assert_eq!(protocol(None, None), Ok((Protocol::HttpBinary, None)));
        assert_eq!(protocol(Some(" "), None), Ok((Protocol::HttpBinary, None)));
        assert_eq!(
            protocol(None, Some("HTTP/Protobuf")),
            Ok((Protocol::HttpBinary, None))
        );
        // The traces variable wins, whatever the general one says.
        assert_eq!(
            protocol(Some("http/protobuf"), Some("grpc")),
            Ok((Protocol::HttpBinary, None))
        );
        let (json, warning) = protocol(None, Some("http/json")).unwrap();
        assert_eq!(json, Protocol::HttpBinary);
        assert_eq!(
            warning.as_deref(),
            Some("OTEL_EXPORTER_OTLP_PROTOCOL=http/json: this build exports OTLP/HTTP with protobuf bodies only; exporting http/protobuf to the same endpoint")
        );
        let grpc = protocol(Some("grpc"), None).unwrap_err();
        assert!(
            grpc.starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc is not supported"),
            "{grpc}"
        );
        let unknown = protocol(None, Some("carrier-pigeon")).unwrap_err();
        assert_eq!(
            unknown,
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"carrier-pigeon\" is not an OTLP protocol this build speaks (expected http/protobuf)"
        );
    }

    #[test]
    fn without_an_exporter_spans_are_disabled() {
        // No subscriber with an OpenTelemetry layer in unit tests: a span costs nothing and
        // continue_trace finds no trace.
        let span = inference_span("m", "1", 3);
        assert_eq!(continue_trace(&span, &headers("garbage")), None);
    }
}
