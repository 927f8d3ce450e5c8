//! `ferrum-serve drift-report`: how far a batch of rows (and the model's predictions for them)
//! has moved from the training data, as a JSON report.
//!
//! Every row of the input is binned per feature with the training baseline's deciles, and the
//! model predicts every row (a chunk at a time) so its predictions are binned too; the PSI of
//! each is compared with `--threshold`. The process exits with status 3 when anything drifted
//! ([`DRIFT_EXIT_CODE`]), 1 on an error, 0 otherwise: a Kubernetes CronJob fails, and alerts,
//! exactly when there is drift or the check could not run.

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

use super::args::DriftReportArgs;
use super::input::RowReader;
use super::{format_of, is_std, load_model, progress_bar, JobError};
use crate::explain::{ExplainAssets, ExplainLimits};
use crate::model::{LoadedModel, Rows};
use crate::monitor::baseline::{shares, Baseline, PredictionDrift, PredictionPoint, BIN_RULE};
use crate::monitor::explain_drift::mean_abs_attributions;

/// Exit status of a report that found drift.
pub const DRIFT_EXIT_CODE: u8 = 3;

/// The report.
#[derive(Debug, Serialize)]
pub struct DriftReport {
    /// `drift` when any PSI exceeds the threshold, else `ok`.
    pub status: &'static str,
    /// Which model the rows were compared for.
    pub model: ModelInfo,
    /// Rows read.
    pub rows: u64,
    /// The PSI above which something counts as drifted.
    pub threshold: f64,
    /// How rows are binned (`searchsorted_left`).
    pub bin_rule: &'static str,
    /// The largest PSI of any feature or prediction series.
    pub max_psi: f64,
    /// Names of what drifted: feature names, and `prediction:<output>`.
    pub drifted: Vec<String>,
    /// One entry per feature, in model order.
    pub features: Vec<Entry>,
    /// One entry per prediction series: `class` and `probability` (of the baseline's positive
    /// class) for classifiers, `value` for regressors.
    pub predictions: Vec<Entry>,
    /// Explanation drift: per feature, the mean |SHAP attribution| over the first rows of the
    /// batch beside the same over the training background (empty when the model has no
    /// background set). Reported for inspection; the exit status follows the PSI.
    pub explanations: Vec<ExplanationEntry>,
}

/// One feature's mean |attribution| on training rows and on the batch.
#[derive(Debug, Serialize)]
pub struct ExplanationEntry {
    pub name: String,
    pub training_mean_abs: f64,
    pub batch_mean_abs: f64,
}

/// Rows of the batch (its first ones) and of the background explained for explanation drift.
const EXPLAIN_SAMPLE_ROWS: usize = 32;

/// Mean |attribution| per feature on the background's first rows and on `sample`.
fn explanation_drift(
    model: &LoadedModel,
    assets: Option<&ExplainAssets>,
    sample: Rows,
) -> Vec<ExplanationEntry> {
    let Some(assets) = assets else {
        return Vec::new();
    };
    let limits = ExplainLimits::default();
    let background = &assets.background;
    let n = background.n_rows.min(EXPLAIN_SAMPLE_ROWS);
    let training = Rows::new(
        background.data[..n * background.n_cols].to_vec(),
        background.n_cols,
    );
    match (
        mean_abs_attributions(model, assets, &training, &limits),
        mean_abs_attributions(model, assets, &sample, &limits),
    ) {
        (Some(training), Some(batch)) => model
            .entry
            .feature_names
            .iter()
            .zip(training.into_iter().zip(batch))
            .map(
                |(name, (training_mean_abs, batch_mean_abs))| ExplanationEntry {
                    name: name.clone(),
                    training_mean_abs,
                    batch_mean_abs,
                },
            )
            .collect(),
        _ => Vec::new(),
    }
}

/// The model version and its provenance.
#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub snapshot_id: String,
}

/// The drift of one feature or prediction series.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// Feature name or prediction series.
    pub name: String,
    /// Population stability index against the training baseline.
    pub psi: f64,
    /// `psi > threshold`.
    pub drifted: bool,
    /// Share of the rows in each bin (or class).
    pub fractions: Vec<f64>,
    /// The training share of each bin (or class).
    pub baseline_fractions: Vec<f64>,
    /// Interior bin edges (absent for classes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_edges: Option<Vec<f64>>,
    /// Class labels, for the `class` series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

/// Computes the report and writes it to `--output`.
pub fn run(args: &DriftReportArgs) -> Result<DriftReport, JobError> {
    let started = Instant::now();
    let job = load_model(&args.model)?;
    let model = &job.model;
    if model.is_tensors() {
        // Drift compares feature columns with the training log's, as the server's monitor does.
        return Err(JobError::Input {
            path: args.rows.input.clone(),
            message: format!(
                "model '{}' is served as named tensors: drift reports need the rows form's feature columns and training baseline",
                model.entry.name
            ),
        });
    }
    let baseline = job.baseline(&args.model.models_dir)?;
    let progress = progress_bar(&args.rows.input);
    let chunk_rows = usize::try_from(args.model.chunk_rows).unwrap_or(usize::MAX);
    let mut reader = RowReader::open(
        &args.rows.input,
        format_of(&args.rows.input, args.rows.input_format),
        model,
        chunk_rows,
        progress.as_ref(),
    )?;
    let mut counts = baseline.counts();
    let mut sample: Vec<f32> = Vec::new();
    let result = (|| {
        while let Some(chunk) = reader.next_chunk()? {
            let wanted = (EXPLAIN_SAMPLE_ROWS * chunk.rows.n_cols).saturating_sub(sample.len());
            sample.extend(chunk.rows.data.iter().take(wanted));
            for i in 0..chunk.rows.n_rows {
                counts.add_row(&baseline, chunk.rows.row(i));
            }
            let output = model.infer(&chunk.rows)?;
            for point in PredictionPoint::all(&output, &baseline) {
                counts.add_prediction(&baseline, point);
            }
            if let Some(bar) = &progress {
                bar.set_message(format!("{} rows", counts.rows));
            }
        }
        Ok::<(), JobError>(())
    })();
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    result?;
    if counts.rows == 0 {
        return Err(JobError::Input {
            path: args.rows.input.clone(),
            message: "no rows: drift needs at least one".into(),
        });
    }

    let threshold = args.threshold;
    let entry = |name: String,
                 psi: Option<f64>,
                 counts: &[u64],
                 expected: &[f64],
                 bin_edges: Option<Vec<f64>>,
                 classes: Option<Vec<String>>| {
        let psi = psi.unwrap_or(0.0);
        Entry {
            name,
            psi,
            drifted: psi > threshold,
            fractions: shares(counts),
            baseline_fractions: expected.to_vec(),
            bin_edges,
            classes,
        }
    };
    let features: Vec<Entry> = baseline
        .feature_names
        .iter()
        .zip(counts.feature_psi(&baseline))
        .zip(&counts.features)
        .zip(&baseline.features)
        .map(|(((name, psi), c), d)| {
            entry(
                name.clone(),
                psi,
                c,
                &d.fractions,
                Some(d.bin_edges.clone()),
                None,
            )
        })
        .collect();
    let predictions: Vec<Entry> = counts
        .output_psi(&baseline)
        .into_iter()
        .zip(&counts.outputs)
        .zip(baseline.outputs())
        .map(|(((name, psi), c), (_, expected))| {
            let (edges, classes) = series_axis(&baseline, name);
            entry(name.to_string(), psi, c, expected, edges, classes)
        })
        .collect();
    let mut drifted: Vec<String> = features
        .iter()
        .filter(|e| e.drifted)
        .map(|e| e.name.clone())
        .collect();
    drifted.extend(
        predictions
            .iter()
            .filter(|e| e.drifted)
            .map(|e| format!("prediction:{}", e.name)),
    );
    let max_psi = features
        .iter()
        .chain(&predictions)
        .map(|e| e.psi)
        .fold(0.0, f64::max);
    let report = DriftReport {
        status: if drifted.is_empty() { "ok" } else { "drift" },
        model: ModelInfo {
            name: model.entry.name.clone(),
            version: model.entry.version.clone(),
            sha256: model.entry.onnx.sha256.clone(),
            snapshot_id: model.entry.dataset.snapshot_id.clone(),
        },
        rows: counts.rows,
        threshold,
        bin_rule: BIN_RULE,
        max_psi,
        drifted,
        features,
        predictions,
        explanations: explanation_drift(
            model,
            job.explain.as_deref(),
            Rows::new(sample, model.n_features()),
        ),
    };
    write_report(args, &report)?;
    tracing::info!(
        model = %report.model.name,
        version = %report.model.version,
        rows = report.rows,
        status = report.status,
        max_psi = report.max_psi,
        drifted = %report.drifted.join(","),
        elapsed_s = started.elapsed().as_secs_f64(),
        peak_rss_bytes = super::peak_rss_bytes(),
        "drift report written"
    );
    Ok(report)
}

/// The bin edges or class labels of a prediction series.
fn series_axis(baseline: &Baseline, name: &str) -> (Option<Vec<f64>>, Option<Vec<String>>) {
    match (&baseline.prediction, name) {
        (PredictionDrift::Classification { class_labels, .. }, "class") => {
            (None, Some(class_labels.clone()))
        }
        (PredictionDrift::Classification { probability, .. }, _) => {
            (Some(probability.bin_edges.clone()), None)
        }
        (PredictionDrift::Regression { value }, _) => (Some(value.bin_edges.clone()), None),
    }
}

fn write_report(args: &DriftReportArgs, report: &DriftReport) -> Result<(), JobError> {
    let mut text = serde_json::to_vec_pretty(report).expect("the report serializes");
    text.push(b'\n');
    let io = |source| JobError::Io {
        path: args.output.clone(),
        source,
    };
    if is_std(&args.output) {
        let mut out = std::io::stdout().lock();
        out.write_all(&text).and_then(|()| out.flush()).map_err(io)
    } else {
        std::fs::write(&args.output, text).map_err(io)
    }
}
