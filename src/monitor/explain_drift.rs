//! Explanation drift: the mean |SHAP attribution| of each feature over recently served rows,
//! beside the same over training rows (the model's background set), as gauges. A feature whose
//! influence on served predictions moves away from its training influence is drift that PSI of
//! the inputs alone can miss. Computed on its own thread at a configurable cadence, from the
//! drift monitor's window: never on the request path.

use std::sync::Arc;
use std::time::Duration;

use super::drift::DriftHandle;
use crate::explain::{self, Cancel, ExplainAssets, ExplainLimits, ExplainQuery};
use crate::model::{LoadedModel, Rows};
use crate::telemetry::metrics;

/// How explanation drift is sampled; from the server flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplainDriftConfig {
    /// How often the served-rows gauges are recomputed; zero turns explanation drift off.
    pub interval: Duration,
    /// Rows explained per model version and population.
    pub sample_rows: usize,
}

/// Mean |attribution| per feature over `rows`, or `None` when the model cannot be explained
/// (no background set) or the sample is too expensive for the limits.
pub fn mean_abs_attributions(
    model: &LoadedModel,
    assets: &ExplainAssets,
    rows: &Rows,
    limits: &ExplainLimits,
) -> Option<Vec<f64>> {
    if rows.n_rows == 0 {
        return None;
    }
    let query = ExplainQuery {
        class: None,
        output: None,
    };
    let plan = explain::plan(model, Some(assets), &query, rows.n_rows, limits).ok()?;
    let explanations =
        explain::explain(model, Some(assets), rows, &plan, limits, &Cancel::default()).ok()?;
    let mut sums = vec![0.0; model.n_features()];
    for explanation in &explanations {
        for (sum, phi) in sums.iter_mut().zip(&explanation.attributions) {
            *sum += phi.abs();
        }
    }
    let n = explanations.len().max(1) as f64;
    Some(sums.into_iter().map(|s| s / n).collect())
}

fn publish(model: &LoadedModel, population: &str, means: &[f64]) {
    for (feature, value) in model.entry.feature_names.iter().zip(means) {
        metrics::set_explanation_mean_abs(
            &model.entry.name,
            &model.entry.version,
            feature,
            population,
            *value,
        );
    }
}

/// Starts the background thread: the training gauges once, then the served gauges every
/// `interval` from the drift window, for each model version with explanation assets. Does
/// nothing when the interval is zero.
pub fn spawn(
    models: Vec<(Arc<LoadedModel>, Arc<ExplainAssets>)>,
    drift: DriftHandle,
    limits: ExplainLimits,
    config: ExplainDriftConfig,
) {
    if config.interval.is_zero() || config.sample_rows == 0 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("explain-drift".into())
        .spawn(move || {
            for (model, assets) in &models {
                let background = &assets.background;
                let n = background.n_rows.min(config.sample_rows);
                let sample = Rows::new(
                    background.data[..n * background.n_cols].to_vec(),
                    background.n_cols,
                );
                if let Some(means) = mean_abs_attributions(model, assets, &sample, &limits) {
                    publish(model, "training", &means);
                }
            }
            loop {
                std::thread::sleep(config.interval);
                for (model, assets) in &models {
                    let (name, version) = (&model.entry.name, &model.entry.version);
                    let Some(rows) = drift.sample_served_rows(
                        name,
                        version,
                        config.sample_rows,
                        Duration::from_secs(5),
                    ) else {
                        continue;
                    };
                    if let Some(means) = mean_abs_attributions(model, assets, &rows, &limits) {
                        publish(model, "served", &means);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "explanation drift not started");
    }
}
