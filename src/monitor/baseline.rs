//! The training baseline of a model version (`models/<name>/<version>/baseline.json`) and the
//! population stability index (PSI) that compares served data against it. Pure math, shared by
//! the server's sliding drift windows ([`super::drift`]) and the offline `drift-report` job.
//!
//! ## The baseline file
//! Training writes, per feature and for the prediction, the interior training deciles as
//! `bin_edges` (deduplicated, so a binary feature has fewer) and the share of training rows in
//! each bin as `fractions`. Bin `i` of `k` edges is `(e[i-1], e[i]]` with `e[-1] = -inf` and
//! `e[k] = +inf` (`bin_rule: searchsorted_left`: a value equal to an edge belongs to the lower
//! bin), so there are `k + 1` fractions.
//!
//! ## PSI
//! `PSI = sum_i (a_i - e_i) * ln(a_i / e_i)` over the bins, with `a_i` the served share and
//! `e_i` the training share of bin `i`. Both shares are floored at [`PSI_EPSILON`] first, so an
//! empty bin (on either side) adds a large but finite term instead of infinity. Rules of thumb:
//! below 0.1 no meaningful shift, 0.1 to 0.25 a moderate one, above 0.25 a major one. On `n`
//! rows, sampling noise alone gives a PSI of about `(bins - 1) / n`, so judge small windows
//! with care (the served window size is configurable; see `docs/observability.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{ModelEntry, ModelOutput, Task};

/// The bin rule this code implements; a baseline written with another is refused.
pub const BIN_RULE: &str = "searchsorted_left";

/// Floor applied to both shares before the PSI sum (the common choice of 1e-4).
pub const PSI_EPSILON: f64 = 1e-4;

/// PSI above which a feature or prediction is reported as drifted by default.
pub const DEFAULT_PSI_THRESHOLD: f64 = 0.25;

/// Why a baseline cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid baseline {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// One binned training distribution: bin edges and the training share in each bin.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Distribution {
    /// Interior edges, strictly increasing.
    pub bin_edges: Vec<f64>,
    /// `bin_edges.len() + 1` shares summing to 1.
    pub fractions: Vec<f64>,
    /// The smallest training value, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The largest training value, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Distribution {
    /// The bin of `x` under `searchsorted_left`: the number of edges strictly below `x`.
    pub fn bin(&self, x: f64) -> usize {
        self.bin_edges.partition_point(|&edge| edge < x)
    }

    /// Number of bins.
    pub fn n_bins(&self) -> usize {
        self.fractions.len()
    }

    fn check(&self, what: &str) -> Result<(), String> {
        if self.fractions.len() != self.bin_edges.len() + 1 {
            return Err(format!(
                "{what}: {} bin_edges need {} fractions, found {}",
                self.bin_edges.len(),
                self.bin_edges.len() + 1,
                self.fractions.len()
            ));
        }
        if self.bin_edges.iter().any(|e| !e.is_finite())
            || self.bin_edges.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(format!(
                "{what}: bin_edges must be finite and strictly increasing"
            ));
        }
        let total: f64 = self.fractions.iter().sum();
        if self.fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || (total - 1.0).abs() > 1e-6 {
            return Err(format!(
                "{what}: fractions must be shares in [0, 1] summing to 1 (sum {total})"
            ));
        }
        Ok(())
    }
}

/// The prediction part of a baseline: class shares and the positive-class probability for a
/// classifier, the predicted value for a regressor.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct PredictionBaseline {
    /// Classifiers: the training share of each predicted class, by class label.
    #[serde(default)]
    pub class_fractions: Option<BTreeMap<String, f64>>,
    /// Classifiers: the class whose probability is binned (the last class label).
    #[serde(default)]
    pub positive_class: Option<String>,
    /// Classifiers: the distribution of the positive class's probability.
    #[serde(default)]
    pub positive_class_probability: Option<Distribution>,
    /// Regressors: the distribution of the predicted value.
    #[serde(default)]
    pub value: Option<Distribution>,
}

/// `baseline.json` as training writes it (statistics this code does not use are ignored).
#[derive(Debug, Clone, Deserialize)]
struct BaselineFile {
    model: String,
    version: String,
    bin_rule: String,
    features: BTreeMap<String, Distribution>,
    prediction: PredictionBaseline,
}

/// A model version's training baseline, checked against its manifest entry and laid out in
/// model feature order so a row's column `j` is binned with `features[j]`.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Feature names in model order.
    pub feature_names: Vec<String>,
    /// One distribution per feature, in model order.
    pub features: Vec<Distribution>,
    /// What the prediction side is compared against.
    pub prediction: PredictionDrift,
}

/// The prediction distributions a model's outputs are compared against.
#[derive(Debug, Clone)]
pub enum PredictionDrift {
    /// A classifier: predicted class shares (in class-label order) and the binned probability
    /// of class `positive` (its index among the class labels).
    Classification {
        class_labels: Vec<String>,
        class_fractions: Vec<f64>,
        positive: usize,
        probability: Distribution,
    },
    /// A regressor: the binned predicted value.
    Regression { value: Distribution },
}

/// The name of a prediction-drift series: `class` and `probability` for classifiers, `value`
/// for regressors. Used as the `output` label and as report keys.
pub type OutputName = &'static str;

impl Baseline {
    /// Reads the baseline of `entry` from `models_dir`. The file name comes from the manifest's
    /// `artifacts.baseline` (`raw_entry`), else `baseline.json`.
    pub fn read(
        models_dir: &Path,
        entry: &ModelEntry,
        raw_entry: Option<&serde_json::Value>,
    ) -> Result<Baseline, BaselineError> {
        let file = raw_entry
            .and_then(|e| e["artifacts"]["baseline"].as_str())
            .unwrap_or("baseline.json");
        let path = models_dir.join(&entry.path).join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| BaselineError::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, entry).map_err(|reason| BaselineError::Invalid { path, reason })
    }

    /// Parses baseline text for `entry`; the error says what does not fit, in words.
    pub fn parse(text: &str, entry: &ModelEntry) -> Result<Baseline, String> {
        let file: BaselineFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.model != entry.name || file.version != entry.version {
            return Err(format!(
                "it is for model '{}' version '{}', not '{}' version '{}'",
                file.model, file.version, entry.name, entry.version
            ));
        }
        if file.bin_rule != BIN_RULE {
            return Err(format!(
                "bin_rule '{}' is not supported (only '{BIN_RULE}')",
                file.bin_rule
            ));
        }
        let mut features = Vec::with_capacity(entry.feature_names.len());
        for name in &entry.feature_names {
            let distribution = file
                .features
                .get(name)
                .ok_or_else(|| format!("no distribution for feature '{name}'"))?;
            distribution.check(&format!("feature '{name}'"))?;
            features.push(distribution.clone());
        }
        if let Some(extra) = file
            .features
            .keys()
            .find(|k| !entry.feature_names.contains(k))
        {
            return Err(format!("feature '{extra}' is not one of the model's"));
        }
        let prediction = match entry.task {
            Task::Classification => {
                let p = &file.prediction;
                let shares = p
                    .class_fractions
                    .as_ref()
                    .ok_or("prediction.class_fractions is missing")?;
                let class_fractions = entry
                    .class_labels
                    .iter()
                    .map(|c| {
                        shares
                            .get(c)
                            .copied()
                            .ok_or_else(|| format!("prediction.class_fractions has no '{c}'"))
                    })
                    .collect::<Result<Vec<f64>, String>>()?;
                let positive_name = p
                    .positive_class
                    .as_ref()
                    .ok_or("prediction.positive_class is missing")?;
                let positive = entry
                    .class_labels
                    .iter()
                    .position(|c| c == positive_name)
                    .ok_or_else(|| {
                        format!("positive_class '{positive_name}' is not a class label")
                    })?;
                let probability = p
                    .positive_class_probability
                    .clone()
                    .ok_or("prediction.positive_class_probability is missing")?;
                probability.check("prediction.positive_class_probability")?;
                PredictionDrift::Classification {
                    class_labels: entry.class_labels.clone(),
                    class_fractions,
                    positive,
                    probability,
                }
            }
            Task::Regression => {
                let value = file
                    .prediction
                    .value
                    .clone()
                    .ok_or("prediction.value is missing")?;
                value.check("prediction.value")?;
                PredictionDrift::Regression { value }
            }
            Task::Tensors => {
                return Err("a tensors model has no prediction columns to watch".into())
            }
        };
        Ok(Baseline {
            model: file.model,
            version: file.version,
            feature_names: entry.feature_names.clone(),
            features,
            prediction,
        })
    }

    /// Empty counts, ready to accumulate rows and predictions.
    pub fn counts(&self) -> DriftCounts {
        DriftCounts {
            rows: 0,
            features: self.features.iter().map(|d| vec![0; d.n_bins()]).collect(),
            outputs: self
                .outputs()
                .iter()
                .map(|(_, expected)| vec![0; expected.len()])
                .collect(),
        }
    }

    /// The prediction series and their expected shares, in a fixed order.
    pub fn outputs(&self) -> Vec<(OutputName, &[f64])> {
        match &self.prediction {
            PredictionDrift::Classification {
                class_fractions,
                probability,
                ..
            } => vec![
                ("class", class_fractions.as_slice()),
                ("probability", probability.fractions.as_slice()),
            ],
            PredictionDrift::Regression { value } => vec![("value", value.fractions.as_slice())],
        }
    }

    /// The bucket bounds for a histogram of predicted values: the training minimum, deciles and
    /// maximum, so each bucket held about a tenth of the training predictions. `None` for a
    /// classifier.
    pub fn value_buckets(&self) -> Option<Vec<f64>> {
        match &self.prediction {
            PredictionDrift::Regression { value } => {
                let mut bounds: Vec<f64> = value.min.into_iter().collect();
                bounds.extend(&value.bin_edges);
                bounds.extend(value.max);
                bounds.dedup();
                Some(bounds)
            }
            PredictionDrift::Classification { .. } => None,
        }
    }
}

/// Bin counts of some rows and their predictions, per feature and per prediction series.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftCounts {
    /// Rows counted.
    pub rows: u64,
    /// Per feature (model order), per bin.
    pub features: Vec<Vec<u64>>,
    /// Per prediction series (the order of [`Baseline::outputs`]), per bin or class.
    pub outputs: Vec<Vec<u64>>,
}

/// One prediction of one row, reduced to what prediction drift compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PredictionPoint {
    /// The predicted class index and the probability of the baseline's positive class.
    Class { label: usize, probability: f32 },
    /// The predicted value.
    Value(f32),
}

impl PredictionPoint {
    /// The points of every row of a model output, for the baseline's positive class.
    pub fn all(output: &ModelOutput, baseline: &Baseline) -> Vec<PredictionPoint> {
        match (output, &baseline.prediction) {
            (
                ModelOutput::Classification {
                    labels,
                    probabilities,
                    n_classes,
                },
                PredictionDrift::Classification { positive, .. },
            ) => labels
                .iter()
                .enumerate()
                .map(|(i, &label)| PredictionPoint::Class {
                    label: label.max(0) as usize,
                    probability: probabilities[i * n_classes + positive],
                })
                .collect(),
            (ModelOutput::Regression { values }, _) => {
                values.iter().map(|&v| PredictionPoint::Value(v)).collect()
            }
            // A classifier's output with a regressor's baseline cannot happen (both come from
            // the same manifest entry); count nothing rather than guess.
            _ => Vec::new(),
        }
    }
}

impl DriftCounts {
    /// Counts one row of features (model order).
    pub fn add_row(&mut self, baseline: &Baseline, row: &[f32]) {
        for ((counts, distribution), &x) in
            self.features.iter_mut().zip(&baseline.features).zip(row)
        {
            counts[distribution.bin(f64::from(x))] += 1;
        }
        self.rows += 1;
    }

    /// Counts one prediction.
    pub fn add_prediction(&mut self, baseline: &Baseline, point: PredictionPoint) {
        match (point, &baseline.prediction) {
            (
                PredictionPoint::Class { label, probability },
                PredictionDrift::Classification {
                    probability: distribution,
                    ..
                },
            ) => {
                if let Some(slot) = self.outputs[0].get_mut(label) {
                    *slot += 1;
                }
                self.outputs[1][distribution.bin(f64::from(probability))] += 1;
            }
            (PredictionPoint::Value(v), PredictionDrift::Regression { value }) => {
                self.outputs[0][value.bin(f64::from(v))] += 1;
            }
            _ => {}
        }
    }

    /// The PSI of every feature (model order); `None` when no row was counted.
    pub fn feature_psi(&self, baseline: &Baseline) -> Vec<Option<f64>> {
        self.features
            .iter()
            .zip(&baseline.features)
            .map(|(counts, d)| psi(&d.fractions, counts))
            .collect()
    }

    /// The PSI of every prediction series, named; `None` when nothing was counted.
    pub fn output_psi(&self, baseline: &Baseline) -> Vec<(OutputName, Option<f64>)> {
        baseline
            .outputs()
            .into_iter()
            .zip(&self.outputs)
            .map(|((name, expected), counts)| (name, psi(expected, counts)))
            .collect()
    }
}

/// Served shares from bin counts.
pub fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            }
        })
        .collect()
}

/// The PSI of observed bin `counts` against `expected` shares (same length); `None` when there
/// is nothing counted.
pub fn psi(expected: &[f64], counts: &[u64]) -> Option<f64> {
    debug_assert_eq!(expected.len(), counts.len());
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let n = total as f64;
    Some(
        expected
            .iter()
            .zip(counts)
            .map(|(&e, &c)| {
                let a = (c as f64 / n).max(PSI_EPSILON);
                let e = e.max(PSI_EPSILON);
                (a - e) * (a / e).ln()
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Manifest;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn entry(name: &str) -> (ModelEntry, serde_json::Value) {
        let manifest = Manifest::read(&repo().join("manifest.json")).unwrap();
        let i = manifest.models.iter().position(|m| m.name == name).unwrap();
        (
            manifest.models[i].clone(),
            manifest.raw["models"][i].clone(),
        )
    }

    #[test]
    fn bins_follow_searchsorted_left() {
        let d = Distribution {
            bin_edges: vec![1.0, 2.0, 3.0],
            fractions: vec![0.25; 4],
            min: None,
            max: None,
        };
        // numpy.searchsorted([1, 2, 3], x, side="left") for these x: 0 0 1 1 2 3 3
        let xs = [-5.0, 1.0, 1.5, 2.0, 3.0, 3.0001, 1e9];
        let bins: Vec<usize> = xs.iter().map(|&x| d.bin(x)).collect();
        assert_eq!(bins, vec![0, 0, 1, 1, 2, 3, 3]);
    }

    #[test]
    fn psi_is_zero_for_identical_shares_and_known_for_a_shift() {
        assert_eq!(psi(&[0.5, 0.5], &[10, 10]), Some(0.0));
        assert_eq!(psi(&[0.5, 0.5], &[0, 0]), None);
        // (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5)
        let expected = 0.4 * (1.8f64).ln() + (-0.4) * (0.2f64).ln();
        assert!((psi(&[0.5, 0.5], &[9, 1]).unwrap() - expected).abs() < 1e-12);
        // An empty expected bin is floored, not infinite.
        let p = psi(&[1.0, 0.0], &[1, 1]).unwrap();
        assert!(p.is_finite() && p > 1.0, "{p}");
    }

    #[test]
    fn bundled_baselines_load_in_feature_order() {
        for name in ["breast-cancer", "diabetes"] {
            let (entry, raw) = entry(name);
            let b = Baseline::read(&repo().join("models"), &entry, Some(&raw)).unwrap();
            assert_eq!(b.features.len(), entry.feature_names.len());
            assert_eq!(b.feature_names, entry.feature_names);
        }
        let (entry, _) = entry("breast-cancer");
        let b = Baseline::read(&repo().join("models"), &entry, None).unwrap();
        match &b.prediction {
            PredictionDrift::Classification {
                positive,
                class_fractions,
                ..
            } => {
                assert_eq!(entry.class_labels[*positive], "benign");
                assert!((class_fractions.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.outputs()[0].0, "class");
        assert!(b.value_buckets().is_none());
    }

    #[test]
    fn a_baseline_for_another_model_or_rule_is_refused() {
        let (bc, _) = entry("breast-cancer");
        let (diabetes, _) = entry("diabetes");
        let text = std::fs::read_to_string(repo().join("models/diabetes/1/baseline.json")).unwrap();
        assert!(Baseline::parse(&text, &bc)
            .unwrap_err()
            .contains("for model 'diabetes'"));
        let other_rule = text.replace("searchsorted_left", "searchsorted_right");
        assert!(Baseline::parse(&other_rule, &diabetes)
            .unwrap_err()
            .contains("not supported"));
        let mut renamed = diabetes.clone();
        renamed.feature_names[0] = "years".into();
        assert!(Baseline::parse(&text, &renamed)
            .unwrap_err()
            .contains("no distribution for feature 'years'"));
    }

    /// A row at every feature's first edge lands in bin 0; a huge prediction in the last bin.
    #[test]
    fn counts_accumulate_rows_and_predictions() {
        let (entry, _) = entry("diabetes");
        let b = Baseline::read(&repo().join("models"), &entry, None).unwrap();
        let mut counts = b.counts();
        let row: Vec<f32> = b.features.iter().map(|d| d.bin_edges[0] as f32).collect();
        counts.add_row(&b, &row);
        counts.add_prediction(&b, PredictionPoint::Value(1e6));
        assert_eq!(counts.rows, 1);
        let last = counts.outputs[0].len() - 1;
        assert_eq!(counts.outputs[0][last], 1);
        assert!(counts.feature_psi(&b).iter().all(|p| p.unwrap() > 0.0));
        let named: Vec<&str> = counts.output_psi(&b).iter().map(|(n, _)| *n).collect();
        assert_eq!(named, vec!["value"]);
        // min, the 9 deciles, max
        assert_eq!(b.value_buckets().unwrap().len(), 11);
    }
}
