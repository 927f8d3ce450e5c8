//! The global `tracing` subscriber: log lines (JSON by default, text for humans, filtered by
//! `RUST_LOG`) and, when the environment asks for it, span export over OTLP.
//!
//! The log layer sees events only, never spans, so that with export off no layer wants a span
//! and `tracing` skips span bookkeeping entirely: a request pays nothing for tracing it does
//! not export. The OpenTelemetry layer sees this crate's spans at INFO and above, whatever
//! `RUST_LOG` says about log lines.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::otel::{self, OtelGuard};
use super::LogFormat;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The server logs to stdout, for the container's log collector.
    Stdout,
    /// Offline jobs log to stderr, keeping stdout for their output.
    Stderr,
}

/// Keeps span export alive; [`Telemetry::shutdown`] flushes it.
#[must_use = "drop only after the last span: shutdown() flushes exported spans"]
pub struct Telemetry {
    otel: Option<OtelGuard>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.otel.is_some()
    }

    /// Flushes buffered spans and stops the exporter (blocking; see [`OtelGuard::shutdown`]).
    pub fn shutdown(self) {
        if let Some(otel) = self.otel {
            otel.shutdown();
        }
    }
}

/// Log lines only, to stdout, no span export: for helper binaries (the mock feature store).
pub fn init_logging(format: LogFormat) {
    init(format, LogTarget::Stdout, false).shutdown();
}

/// Installs the global subscriber. `RUST_LOG` filters log lines (default `info,ort=warn`);
/// `OTEL_EXPORTER_OTLP_ENDPOINT` turns span export on (`export_spans` false never exports).
/// A second call (several servers in one test process) keeps the first subscriber.
pub fn init(format: LogFormat, target: LogTarget, export_spans: bool) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let events_only = filter_fn(|metadata| metadata.is_event());
    let log_layer = match (format, target) {
        (LogFormat::Json, LogTarget::Stdout) => json_layer().with_writer(std::io::stdout).boxed(),
        (LogFormat::Json, LogTarget::Stderr) => json_layer().with_writer(std::io::stderr).boxed(),
        // Colours only on a terminal: a log file or collector gets no escape codes.
        (LogFormat::Text, LogTarget::Stdout) => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(std::io::stdout)
            .boxed(),
        (LogFormat::Text, LogTarget::Stderr) => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter.and(events_only));

    let (guard, otel_layer) = match export_spans.then(otel::init) {
        Some(Ok(Some((guard, tracer)))) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(Targets::new().with_target("ferrum_serve", Level::INFO));
            (Some(guard), Some(layer))
        }
        Some(Err(error)) => {
            eprintln!("warning: {error}; spans are not exported");
            (None, None)
        }
        _ => (None, None),
    };
    // Not `.with(Option<layer>)`: a `None` layer counts as one that wants every span, which
    // would make the request spans cost their bookkeeping even with export off.
    let registry = tracing_subscriber::registry().with(log_layer);
    let _ = match otel_layer {
        Some(otel_layer) => registry.with(otel_layer).try_init(),
        None => registry.try_init(),
    };
    Telemetry { otel: guard }
}

fn json_layer<S>() -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::JsonFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
}
