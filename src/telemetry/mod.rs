//! Observability: what the service tells its operators, always at the edges of a request and
//! never inside the math.
//!
//! - [`logging`]: the global subscriber: JSON (or text) log lines, `RUST_LOG` filtering, and
//!   OTLP span export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`otel`]); the server's lines
//!   go through [`log_writer`], off the request path.
//! - [`http`]: the per-request middleware: log line, HTTP metrics, request span.
//! - [`metrics`]: the one Prometheus registry and a recording function per event.
//! - [`timing`]: the `x-queue-time` / `x-inference-time` response headers.
//! - [`baseline`]: training baselines and the PSI math; [`drift`]: the sliding windows of served
//!   rows, compared in a background thread.
//!
//! [`observe_models`] wires the last three to the loaded models at start.

pub mod baseline;
pub mod drift;
pub mod explain_drift;
pub mod http;
pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod timing;

use std::path::Path;

pub use http::{log_request, REQUEST_ID};
pub use logging::{init, init_logging, LogTarget, Telemetry};

use crate::model::Repository;
use baseline::Baseline;
use drift::{DriftConfig, DriftHandle};

/// Publishes what serves (`ferrum_model_info`), registers the prediction-value buckets from the
/// regressors' baselines, and starts drift monitoring for every model version whose baseline
/// loads. A missing or invalid baseline is logged and that model is served unmonitored.
/// Returns the drift handle, if monitoring runs. Reads files: call off the async workers.
pub fn observe_models(
    repository: &Repository,
    models_dir: &Path,
    drift: DriftConfig,
) -> Option<DriftHandle> {
    let mut baselines = Vec::new();
    let mut buckets = Vec::new();
    for (i, entry) in repository.manifest.models.iter().enumerate() {
        metrics::set_model_info(entry);
        let raw = repository.manifest.raw["models"].get(i);
        match Baseline::read(models_dir, entry, raw) {
            Ok(baseline) => {
                buckets.extend(baseline.value_buckets().unwrap_or_default());
                baselines.push(baseline);
            }
            Err(error) => tracing::warn!(
                model = %entry.name,
                version = %entry.version,
                %error,
                "no usable training baseline: this model version is served without drift monitoring"
            ),
        }
    }
    metrics::register_prediction_buckets(buckets);
    let monitored = baselines.len();
    let handle = DriftHandle::start(drift, baselines);
    if handle.is_some() {
        tracing::info!(
            models = monitored,
            window_rows = drift.window_rows,
            interval_ms = drift.interval.as_millis() as u64,
            "drift monitoring started"
        );
    }
    handle
}
