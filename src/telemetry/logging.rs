//! The global `tracing` subscriber: log lines (JSON by default, text for humans, filtered by
//! `RUST_LOG`) and, when the environment asks for it, span export over OTLP.
//!
//! The log layer sees events only, never spans, so that with export off no layer wants a span
//! and `tracing` skips span bookkeeping entirely: a request pays nothing for tracing it does
//! not export. The OpenTelemetry layer sees this crate's spans at INFO and above, whatever
//! `RUST_LOG` says about log lines.
//!
//! The server's stdout lines go through a bounded queue to a writer thread
//! ([`super::log_writer`]) so no request waits for stdout; [`Telemetry::shutdown`] flushes it.
//! Jobs (stderr) and helper binaries write their lines directly.

use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;

use tracing::Level;
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::log_writer::{self, LogWriterGuard, LOG_QUEUE_LINES};
use super::otel::{self, OtelGuard};
use crate::config::LogFormat;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The server logs to stdout, for the container's log collector.
    Stdout,
    /// Offline jobs log to stderr, keeping stdout for their output.
    Stderr,
}

/// Keeps span export and the log writer alive; [`Telemetry::shutdown`] flushes both.
#[must_use = "drop only after the last span: shutdown() flushes exported spans and queued log lines"]
pub struct Telemetry {
    otel: Option<OtelGuard>,
    log_queue: Option<LogWriterGuard>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.otel.is_some()
    }

    /// Flushes buffered spans and stops the exporter (blocking; see [`OtelGuard::shutdown`]),
    /// then writes every queued log line.
    pub fn shutdown(self) {
        if let Some(otel) = self.otel {
            otel.shutdown();
        }
        if let Some(log_queue) = self.log_queue {
            log_queue.flush();
        }
    }
}

/// Log lines only, to stdout written directly, no span export: for helper binaries (the mock
/// feature store), which never call [`Telemetry::shutdown`].
pub fn init_logging(format: LogFormat) {
    install(format, LogTarget::Stdout, false, false).shutdown();
}

/// Installs the global subscriber. `RUST_LOG` filters log lines (default `info,ort=warn`);
/// `OTEL_EXPORTER_OTLP_ENDPOINT` turns span export on (`export_spans` false never exports).
/// Stdout lines (the server's) are queued for the log writer thread; call
/// [`Telemetry::shutdown`] before exiting so none is lost. A second call (several servers in
/// one test process) keeps the first subscriber.
pub fn init(format: LogFormat, target: LogTarget, export_spans: bool) -> Telemetry {
    install(format, target, export_spans, target == LogTarget::Stdout)
}

fn install(format: LogFormat, target: LogTarget, export_spans: bool, queued: bool) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let events_only = filter_fn(|metadata| metadata.is_event());
    // Colours only on a terminal, and never under NO_COLOR: a log file or collector gets no
    // escape codes.
    let terminal = match target {
        LogTarget::Stdout => std::io::stdout().is_terminal(),
        LogTarget::Stderr => std::io::stderr().is_terminal(),
    };
    let ansi = colours(terminal, no_color());
    let queue = queued
        .then(|| log_writer::non_blocking(std::io::stdout(), LOG_QUEUE_LINES))
        .and_then(|started| {
            started
                .map_err(|error| {
                    eprintln!("warning: no log writer thread ({error}); logging directly")
                })
                .ok()
        });
    let (log_layer, log_queue) = match (queue, target) {
        (Some((writer, guard)), _) => (log_layer(format, ansi, writer), Some(guard)),
        (None, LogTarget::Stdout) => (log_layer(format, ansi, std::io::stdout), None),
        (None, LogTarget::Stderr) => (log_layer(format, ansi, std::io::stderr), None),
    };
    let log_layer = log_layer.with_filter(filter.and(events_only));

    let (guard, otel_layer, warning) = match export_spans.then(otel::init) {
        Some(Ok(Some(exporting))) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(exporting.tracer)
                .with_filter(Targets::new().with_target("ferrum_serve", Level::INFO));
            (Some(exporting.guard), Some(layer), exporting.warning)
        }
        Some(Err(error)) => (None, None, Some(format!("{error}; spans are not exported"))),
        _ => (None, None, None),
    };
    // Not `.with(Option<layer>)`: a `None` layer counts as one that wants every span, which
    // would make the request spans cost their bookkeeping even with export off.
    let registry = tracing_subscriber::registry().with(log_layer);
    let _ = match otel_layer {
        Some(otel_layer) => registry.with(otel_layer).try_init(),
        None => registry.try_init(),
    };
    if let Some(warning) = warning {
        // On stderr for whoever starts the process, and in the log stream for the collector.
        eprintln!("warning: {warning}");
        tracing::warn!(warning = %warning, "span export");
    }
    Telemetry {
        otel: guard,
        log_queue,
    }
}

/// The log-line layer in `format`, writing through `writer`.
fn log_layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => json_layer().with_writer(writer).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
    }
}

/// `NO_COLOR` set to anything but the empty string (<https://no-color.org>).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty())
}

/// Whether text log lines carry ANSI colours: on a terminal, unless `NO_COLOR` asks otherwise.
fn colours(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, false));
        assert!(!colours(true, true));
        assert!(!colours(false, false));
        assert!(!colours(false, true));
    }
}
