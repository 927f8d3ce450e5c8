//! Watching the served model against its training run: drift of the served rows and
//! predictions from the training baseline (PSI over sliding windows, [`drift`], with the
//! baseline and the math in [`baseline`]), and drift of the explanations ([`explain_drift`]).
//!
//! Runs beside the request path, never in it: served rows are handed over without waiting,
//! and the comparisons run on background threads. May import `model`, `explain` and
//! `telemetry` (its metrics); never `batching`, `features`, `serving` or `api`.

pub mod baseline;
pub mod drift;
pub mod explain_drift;

use std::path::Path;

use crate::model::Manifest;
use crate::telemetry::metrics;
use baseline::Baseline;
use drift::{DriftConfig, DriftHandle};

/// Registers the prediction-value buckets from the regressors' baselines, and starts drift monitoring for every model version whose baseline
/// loads. A missing or invalid baseline is logged and that model is served unmonitored.
/// Returns the drift handle, if monitoring runs. Reads files: call off the async workers.
pub fn observe_models(
    manifest: &Manifest,
    models_dir: &Path,
    drift: DriftConfig,
) -> Option<DriftHandle> {
    let mut baselines = Vec::new();
    let mut buckets = Vec::new();
    for (i, entry) in manifest.models.iter().enumerate() {
        let raw = manifest.raw["models"].get(i);
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
