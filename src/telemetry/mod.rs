//! Observability: what the service tells its operators, always at the edges of a request and
//! never inside the math.
//!
//! - [`logging`]: the global subscriber: JSON (or text) log lines, `RUST_LOG` filtering, and
//!   OTLP span export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`otel`]); the server's lines
//!   go through [`log_writer`], off the request path.
//! - [`http`]: the per-request middleware: log line, HTTP metrics, request span.
//! - [`metrics`]: the one Prometheus registry and a recording function per event.
//! - [`timing`]: the `x-queue-time` / `x-inference-time` response headers.
//!
//! Drift (what the served rows say about the model) is [`crate::monitor`]'s, not this module's.
//! May import only `model`.

pub mod http;
pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod timing;

pub use http::{log_request, REQUEST_ID};
pub use logging::{init, init_logging, LogTarget, Telemetry};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Text,
}
