//! SHAP explanations: interventional Shapley values of one model output over the model's
//! committed background set. No HTTP here: [`plan`] checks a request against the model and the
//! limits (cheap, before any work), [`explain`] computes (blocking; run it off the async
//! workers).
//!
//! Methods, chosen per model and output space:
//! - **tree** ([`tree`]): exact interventional Tree SHAP on the trees read from the ONNX graph
//!   ([`onnx`]), for tree ensembles, any width. Explains margins, and probabilities through a
//!   logistic (or identity) post-transform with shap's per-background-row rescaling.
//! - **exact** ([`exact`]): enumeration of all coalitions through ONNX Runtime, for any other
//!   model with at most `max_exact_features` features.
//! - **permutation** ([`permutation`]): antithetic permutation sampling for the rest.
//!
//! A tabular model served as named tensors (several inputs, float64, int64, strings) is
//! explained by the same exact and permutation methods, column by column ([`columns`]).
//!
//! Every explanation reports `value` (ONNX Runtime's own output for the row, in the explained
//! space), `base_value`, the attributions and `residual = value - base_value - sum(phi)`: the
//! additivity check against the model as served.
//!
//! May import `model` only; never `batching`, `serving`, `api` or anything that knows of HTTP
//! or queues (the serving pipeline runs it on the blocking pool).

pub mod columns;
pub mod exact;
pub mod onnx;
pub mod permutation;
pub mod tree;

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ort::session::SessionInputValue;
use ort::value::TensorRef;
use serde::Serialize;

use crate::model::infer::{batch_rows, NamedTensor};
use crate::model::runtime::SessionPool;
use crate::model::signature::{ClassLabels, GraphTask};
use crate::model::{InferenceError, LoadedModel, ModelEntry, ModelOutput, Rows, Task};
use columns::{Column, ColumnLayout};
use onnx::{MarginOutput, OnnxTrees, PostTransform};
use tree::{Link, Target};

/// The limits and knobs of `/explain`, from the configuration. They exist so that no request
/// can occupy the server for long: every request's cost is known before any work starts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ExplainLimits {
    /// Widest non-tree model explained by exact enumeration (2^M coalitions); wider ones are
    /// sampled.
    pub max_exact_features: usize,
    /// Most rows one `/explain` request may carry.
    pub max_rows: usize,
    /// Permutations per row for the sampling method (even: antithetic pairs).
    pub permutations: usize,
    /// Most model evaluations (rows through the model, or background rows through the trees)
    /// one request may cost.
    pub max_evaluations: u64,
    /// Rows per ONNX Runtime call when evaluating coalitions.
    pub batch_rows: usize,
    /// Explanations computed at once; more wait their turn without holding a thread.
    pub concurrency: usize,
    /// Explanations that may wait for a turn; beyond, requests are shed at once (503), so
    /// waiting explanations never fill the server's admission queue ahead of `/predict`.
    pub max_queued: usize,
}

impl Default for ExplainLimits {
    fn default() -> Self {
        ExplainLimits {
            max_exact_features: 16,
            max_rows: 32,
            permutations: 10,
            max_evaluations: 10_000_000,
            batch_rows: 4096,
            concurrency: 1,
            max_queued: 8,
        }
    }
}

/// Why an explanation cannot be given. The API maps each to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// `class` names no class of the model; the message lists them so the client can fix it.
    #[error("class '{class}' is not a class of this model; classes: {available}")]
    UnknownClass { class: String, available: String },
    /// `class` or `output` sent for a regressor, which only explains its value.
    #[error("field '{field}': applies to classifiers only; model '{model}' is a regressor and explains its value")]
    NotAClassifier { field: &'static str, model: String },
    /// The model cannot give this explanation (no background set, no known margin).
    #[error("{0}")]
    Unavailable(String),
    /// Over the evaluation budget: refused before any work, naming the limit and the numbers.
    #[error("explaining {rows} row(s) of model '{model}' with the {method} method needs {needed} model evaluations; the server allows {allowed} per request (EXPLAIN_MAX_EVALUATIONS, --explain-max-evaluations)")]
    TooExpensive {
        rows: usize,
        model: String,
        method: Method,
        needed: u64,
        allowed: u64,
    },
    /// The client went away (or the request timed out): stopped between model batches.
    #[error("the explanation was cancelled")]
    Cancelled,
    /// ONNX Runtime failed on rows built from validated input: a server error.
    #[error("model evaluation failed: {0}")]
    Model(String),
}

impl From<InferenceError> for ExplainError {
    fn from(e: InferenceError) -> Self {
        ExplainError::Model(e.to_string())
    }
}

/// How the attributions were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Enumeration of every coalition: exact.
    Exact,
    /// Interventional Tree SHAP on the ONNX trees: exact.
    Tree,
    /// Antithetic permutation sampling: additive exactly, attributions estimated.
    Permutation,
}

impl Method {
    /// The method's name, as responses, metrics labels and spans spell it.
    pub fn name(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Tree => "tree",
            Method::Permutation => "permutation",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The output space the numbers are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// A class probability as the model reports it.
    Probability,
    /// A class margin: the raw score before the logistic/softmax post-transform.
    Margin,
    /// A regressor's predicted value.
    Value,
}

/// One row's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The explained class index (classifiers).
    pub class: Option<usize>,
    /// The space of `value`, `base_value` and the attributions.
    pub output: Output,
    /// ONNX Runtime's output for the row, in `output` space.
    pub value: f64,
    /// The mean output over the background set, in `output` space.
    pub base_value: f64,
    /// One per feature, in model feature order.
    pub attributions: Vec<f64>,
    /// How they were computed, so clients know whether they are exact.
    pub method: Method,
    /// `value - base_value - sum(attributions)`.
    pub residual: f64,
    /// Permutations used (sampling method only).
    pub permutations: Option<usize>,
    /// Per feature, the standard error of a sampled attribution (sampling method only, from
    /// two antithetic pairs on; see [`permutation`]).
    pub standard_errors: Option<Vec<f64>>,
}

/// Set when the client has gone away; long computations poll it between model batches.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the computation to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// `Err(Cancelled)` once [`Cancel::cancel`] has been called.
    pub fn check(&self) -> Result<(), ExplainError> {
        if self.0.load(Ordering::Relaxed) {
            Err(ExplainError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// What `/explain` needs of one model version, prepared once at load and shared by every
/// request: the background set, the model's mean output over it, and the trees if any.
pub struct ExplainAssets {
    /// The committed background rows (`artifacts.background`), in model feature order; for a
    /// tensors model, their codes (row `b` is `b` in every column, see [`columns`]).
    pub background: Rows,
    /// Per output column (class probabilities, or the value): the mean of ONNX Runtime's
    /// outputs over the background, i.e. `v(∅)` and the base value of the exact methods.
    background_mean: Vec<f64>,
    /// Tree SHAP support, when the graph is a tree ensemble that reproduces ONNX Runtime.
    pub trees: Option<TreeSupport>,
    /// A tensors model's columns and its background as tensors.
    columns: Option<ColumnSet>,
}

/// A tensors model's background, as its inputs take it, and how its columns are laid out.
struct ColumnSet {
    layout: ColumnLayout,
    background: Vec<NamedTensor>,
}

/// A tree ensemble checked against ONNX Runtime, with what Tree SHAP needs precomputed.
pub struct TreeSupport {
    /// The trees and the meaning of their outputs.
    pub model: OnnxTrees,
    /// The background rows prepared for Tree SHAP: raw outputs, rows grouped per tree.
    background: tree::BackgroundSet,
    /// A session on the same graph with `post_transform = NONE`, so a margin explanation can
    /// report ONNX Runtime's own margin; `None` when the model already outputs margins.
    margin_session: Option<SessionPool>,
}

impl TreeSupport {
    /// The link Tree SHAP uses to explain `output`, if it can.
    fn link(&self, output: Output) -> Option<Link> {
        match (output, self.model.transform) {
            (Output::Margin, _) | (_, PostTransform::None) => Some(Link::Identity),
            (_, PostTransform::Logistic) => Some(Link::Logistic),
            (_, PostTransform::Softmax | PostTransform::Other) => None,
        }
    }
}

/// Reads a background CSV: a header naming exactly the model's features in order, then
/// finite numbers (each read as f64 and narrowed to f32, as the server feeds the model).
pub fn read_background(path: &Path, feature_names: &[String]) -> Result<Rows, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| e.to_string())?;
    let header = reader.headers().map_err(|e| e.to_string())?.clone();
    if header.iter().ne(feature_names.iter().map(String::as_str)) {
        return Err("its header is not the model's feature names in order".into());
    }
    let mut data = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| e.to_string())?;
        for (value, name) in record.iter().zip(feature_names) {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("row {i}, {name}: '{value}' is not a number"))?;
            let narrowed = v as f32;
            if !narrowed.is_finite() {
                return Err(format!("row {i}, {name}: {v} is not a finite float32"));
            }
            data.push(narrowed);
        }
    }
    if data.is_empty() {
        return Err("it has no rows".into());
    }
    Ok(Rows::new(data, feature_names.len()))
}

impl ExplainAssets {
    /// Precomputes the background outputs and, for a tree ensemble, checks the parsed trees
    /// against ONNX Runtime on every background row: margins within float32 accumulation
    /// error, transformed outputs within 1e-4. A mismatch means the trees were misread, so
    /// they are dropped (with a warning) and the model-agnostic methods explain the model.
    pub fn prepare(
        model: &LoadedModel,
        background: Rows,
        trees: Option<OnnxTrees>,
        margin_session: Option<SessionPool>,
    ) -> Result<ExplainAssets, InferenceError> {
        let outputs = model.infer(&background)?;
        let columns = output_columns(&outputs);
        let width = columns.len() / background.n_rows;
        let background_mean = (0..width)
            .map(|c| {
                columns
                    .iter()
                    .skip(c)
                    .step_by(width)
                    .map(|&v| f64::from(v))
                    .sum::<f64>()
                    / background.n_rows as f64
            })
            .collect();
        let trees = match trees {
            None => None,
            Some(trees) => {
                let support = TreeSupport {
                    background: trees
                        .ensemble
                        .background_set(&trees.preprocess.apply(&background.data)),
                    model: trees,
                    margin_session,
                };
                match check_trees(model, &support, &background, columns) {
                    Ok(()) => Some(support),
                    Err(reason) => {
                        tracing::warn!(
                            model = %model.entry.name,
                            version = %model.entry.version,
                            reason = %reason,
                            "the trees read from the ONNX graph do not reproduce ONNX Runtime; /explain uses the model-agnostic methods"
                        );
                        None
                    }
                }
            }
        };
        Ok(ExplainAssets {
            background,
            background_mean,
            trees,
            columns: None,
        })
    }

    /// A tensors model's assets: `background` (its [`ColumnLayout::background_rows`] read as
    /// a request's) and the mean of the model's scores over it.
    pub fn prepare_columns(
        model: &LoadedModel,
        layout: ColumnLayout,
        background: Vec<NamedTensor>,
    ) -> Result<ExplainAssets, ExplainError> {
        let n_background = batch_rows(&background);
        let scores = scored_outputs(model)?.scores;
        let outputs = model
            .infer_tensors(&background, || {})
            .map_err(InferenceError::from)?;
        let (values, width) = columns::output_values(&outputs, scores, n_background)?;
        let background_mean = (0..width)
            .map(|c| values.iter().skip(c).step_by(width).sum::<f64>() / n_background as f64)
            .collect();
        Ok(ExplainAssets {
            background: layout.background_codes(n_background),
            background_mean,
            trees: None,
            columns: Some(ColumnSet { layout, background }),
        })
    }

    /// The names of the explained features: the model's, or a tensors model's columns.
    pub fn feature_names<'a>(&'a self, entry: &'a ModelEntry) -> &'a [String] {
        match &self.columns {
            Some(set) => set.layout.names(),
            None => &entry.feature_names,
        }
    }
}

/// A tensors model's explained output and, for a classifier, where its predicted class is.
struct Scored<'a> {
    /// A classifier's probabilities, or a regressor's value.
    scores: &'a str,
    /// A classifier's label output and the graph's labels.
    label: Option<(&'a str, &'a ClassLabels)>,
}

/// What a tensors model's graph says is scored; one whose outputs are neither a classifier's
/// nor a regressor's has no score to attribute.
fn scored_outputs(model: &LoadedModel) -> Result<Scored<'_>, ExplainError> {
    match &model.signature.task {
        GraphTask::Classifier {
            probabilities_output,
            label_output,
            labels,
        } => Ok(Scored {
            scores: probabilities_output,
            label: Some((label_output, labels)),
        }),
        GraphTask::Regressor { output } => Ok(Scored {
            scores: output,
            label: None,
        }),
        GraphTask::Tensors => Err(ExplainError::Unavailable(format!(
            "model '{}' gives neither a classifier's label and probabilities nor one regression value per row, so there is no score to explain",
            model.entry.name
        ))),
    }
}

/// Compares the f64 trees with ONNX Runtime on the background rows.
fn check_trees(
    model: &LoadedModel,
    support: &TreeSupport,
    background: &Rows,
    reported: &[f32],
) -> Result<(), String> {
    let margins = ort_margins(model, support, background, reported).map_err(|e| e.to_string())?;
    let n_classes = support.model.classes.len();
    let n_outputs = support.model.ensemble.n_outputs();
    for b in 0..background.n_rows {
        for (c, class) in support.model.classes.iter().enumerate() {
            let ours =
                class.offset + class.sign * support.background.raw()[b * n_outputs + class.output];
            let theirs = f64::from(margins[b * n_classes + c]);
            if (ours - theirs).abs() > 1e-3 * theirs.abs().max(1.0) {
                return Err(format!(
                    "background row {b}, output {c}: trees give margin {ours}, ONNX Runtime {theirs}"
                ));
            }
            if let Some(link) = support.link(Output::Probability) {
                let p = f64::from(reported[b * n_classes + c]);
                if (link.apply(ours) - p).abs() > 1e-4 * p.abs().max(1.0) {
                    return Err(format!(
                        "background row {b}, output {c}: trees give {}, ONNX Runtime {p}",
                        link.apply(ours)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The per-class margins ONNX Runtime computes for `rows` (`rows * classes`): from the margin
/// session, or the reported outputs themselves when the model has no post-transform.
fn ort_margins<'a>(
    model: &LoadedModel,
    support: &TreeSupport,
    rows: &Rows,
    reported: &'a [f32],
) -> Result<Cow<'a, [f32]>, ExplainError> {
    let Some(pool) = &support.margin_session else {
        return Ok(Cow::Borrowed(reported));
    };
    let entry = &model.entry;
    let tensor = TensorRef::from_array_view(([rows.n_rows, rows.n_cols], rows.data.as_slice()))
        .map_err(InferenceError::from)?;
    let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
        vec![(Cow::Borrowed(entry.onnx.input.as_str()), tensor.into())];
    let mut session = pool.acquire();
    let outputs = session.run(inputs).map_err(InferenceError::from)?;
    let name = match &support.model.margin_output {
        MarginOutput::Declared => {
            let role = entry.score_role().ok_or_else(|| {
                ExplainError::Model("a tensors model has no scores to explain".into())
            })?;
            &entry.onnx.outputs[role]
        }
        MarginOutput::Tree(name) => name,
    };
    let value = outputs
        .get(name)
        .ok_or_else(|| ExplainError::Model(format!("the margin model has no output '{name}'")))?;
    let margins = value
        .try_extract_tensor::<f32>()
        .map_err(InferenceError::from)?
        .1
        .to_vec();
    let expected = rows.n_rows * support.model.classes.len();
    if margins.len() != expected {
        return Err(ExplainError::Model(format!(
            "the margin model gave {} values for {expected}",
            margins.len()
        )));
    }
    Ok(Cow::Owned(margins))
}

/// The explained columns of an output: probabilities (`rows * classes`) or values.
fn output_columns(output: &ModelOutput) -> &[f32] {
    match output {
        ModelOutput::Classification { probabilities, .. } => probabilities,
        ModelOutput::Regression { values } => values,
    }
}

/// What a request asks, in the explain module's terms.
#[derive(Debug, Clone, Default)]
pub struct ExplainQuery {
    /// A class label (classifiers); `None` explains each row's predicted class.
    pub class: Option<String>,
    /// `Probability` or `Margin` (classifiers); `None` picks the method's natural space.
    pub output: Option<Output>,
}

/// A checked request: the method, output space, class and cost, decided before any work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The method the model and output space call for.
    pub method: Method,
    /// The output space, with the default resolved.
    pub output: Output,
    /// A fixed class for every row, or `None` for each row's predicted class (classifiers).
    pub class: Option<usize>,
    /// Model evaluations the request will cost.
    pub evaluations: u64,
    /// Permutations per row (sampling method).
    pub permutations: usize,
}

/// Chooses the method and output space for `query` on `model` and checks the cost of
/// `n_rows` rows against the limits. `assets` are the model's, `None` when it has no
/// background set (then it cannot be explained). Cheap: call it before spawning the work.
pub fn plan(
    model: &LoadedModel,
    assets: Option<&ExplainAssets>,
    query: &ExplainQuery,
    n_rows: usize,
    limits: &ExplainLimits,
) -> Result<Plan, ExplainError> {
    let entry = &model.entry;
    let assets = assets.ok_or_else(|| {
        if model.is_tensors() {
            if let Err(why) = ColumnLayout::of(&model.signature, &entry.feature_names) {
                return ExplainError::Unavailable(format!(
                    "model '{}' is served as named tensors and cannot be explained column by column: {why}",
                    entry.name
                ));
            }
        }
        ExplainError::Unavailable(format!(
            "model '{}' version '{}' has no background set (artifacts.background in the manifest), so it cannot be explained",
            entry.name, entry.version
        ))
    })?;
    let classifier = is_classifier(model);
    let not_a_classifier = |field| ExplainError::NotAClassifier {
        field,
        model: entry.name.clone(),
    };
    let class = match (&query.class, classifier) {
        (None, _) => None,
        (Some(_), false) => return Err(not_a_classifier("class")),
        (Some(name), true) => Some(class_index(entry, name)?),
    };
    let trees = assets.trees.as_ref();
    let output = match (query.output, classifier) {
        (Some(_), false) => return Err(not_a_classifier("output")),
        (None, false) => Output::Value,
        (Some(output), true) => output,
        (None, true) if trees.is_some() => Output::Margin,
        (None, true) => Output::Probability,
    };
    let m = assets.background.n_cols;
    let n_background = assets.background.n_rows;
    let method = if trees.is_some_and(|t| t.link(output).is_some()) {
        Method::Tree
    } else if output == Output::Margin {
        return Err(ExplainError::Unavailable(format!(
            "model '{}' is not a tree ensemble read from its ONNX graph, so its margin is unknown; ask for \"output\": \"probability\"",
            entry.name
        )));
    } else if m <= limits.max_exact_features {
        Method::Exact
    } else {
        Method::Permutation
    };
    let per_row = match method {
        Method::Tree => n_background as u64,
        Method::Exact => exact::cost(m, n_background),
        Method::Permutation => permutation::cost(m, limits.permutations, n_background),
    }
    .saturating_add(1); // the row itself
    let evaluations = per_row.saturating_mul(n_rows as u64);
    if evaluations > limits.max_evaluations {
        return Err(ExplainError::TooExpensive {
            rows: n_rows,
            model: entry.name.clone(),
            method,
            needed: evaluations,
            allowed: limits.max_evaluations,
        });
    }
    Ok(Plan {
        method,
        output,
        class,
        evaluations,
        permutations: limits.permutations,
    })
}

/// True for a classifier (what `class` and `output` apply to): the rows form's task, or a
/// tensors model whose graph gives a label and probabilities.
pub fn is_classifier(model: &LoadedModel) -> bool {
    match model.entry.task {
        Task::Classification => true,
        Task::Regression => false,
        Task::Tensors => matches!(model.signature.task, GraphTask::Classifier { .. }),
    }
}

fn class_index(entry: &ModelEntry, name: &str) -> Result<usize, ExplainError> {
    entry
        .class_labels
        .iter()
        .position(|c| c == name)
        .ok_or_else(|| ExplainError::UnknownClass {
            class: name.to_string(),
            available: entry.class_labels.join(", "),
        })
}

/// Explains every row of `rows` as `plan` says, in request order. Blocking and CPU-bound:
/// run it on a blocking thread. Stops early with [`ExplainError::Cancelled`] once `cancel` is
/// set.
pub fn explain(
    model: &LoadedModel,
    assets: Option<&ExplainAssets>,
    rows: &Rows,
    plan: &Plan,
    limits: &ExplainLimits,
    cancel: &Cancel,
) -> Result<Vec<Explanation>, ExplainError> {
    let assets = assets.ok_or_else(|| ExplainError::Unavailable("no background set".into()))?;
    let background = &assets.background;
    let outputs = model.infer(rows)?;
    let reported = output_columns(&outputs);
    let width = reported.len() / rows.n_rows;
    let labels: &[i64] = match &outputs {
        ModelOutput::Classification { labels, .. } => labels,
        ModelOutput::Regression { .. } => &[],
    };
    let trees = match plan.method {
        Method::Tree => Some(assets.trees.as_ref().ok_or_else(|| {
            ExplainError::Unavailable("the model's trees are not available".into())
        })?),
        _ => None,
    };
    let margins = match (trees, plan.output) {
        (Some(support), Output::Margin) => Some(ort_margins(model, support, rows, reported)?),
        _ => None,
    };
    let permutations = match plan.method {
        Method::Permutation => {
            permutation::permutations(model.n_features(), plan.permutations, permutation::SEED)
        }
        _ => Vec::new(),
    };
    let mut scratch = tree::Scratch::default();
    let mut explanations = Vec::with_capacity(rows.n_rows);
    for i in 0..rows.n_rows {
        cancel.check()?;
        let class = match model.entry.task {
            Task::Classification => Some(plan.class.unwrap_or(labels[i] as usize)),
            Task::Regression | Task::Tensors => None,
        };
        let column = class.unwrap_or(0);
        let value = f64::from(match &margins {
            Some(margins) => margins[i * width + column],
            None => reported[i * width + column],
        });
        let x = rows.row(i);
        let mut column_of = |batch: &Rows| -> Result<Vec<f64>, ExplainError> {
            let out = model.infer(batch)?;
            let columns = output_columns(&out);
            Ok(columns
                .iter()
                .skip(column)
                .step_by(width)
                .map(|&v| f64::from(v))
                .collect())
        };
        let base = assets.background_mean[column];
        let (attributions, base_value) = match (plan.method, trees) {
            (Method::Tree, Some(support)) => {
                let class_output = support.model.classes[column];
                let target = Target {
                    output: class_output.output,
                    sign: class_output.sign,
                    offset: class_output.offset,
                    link: support.link(plan.output).expect("checked by plan"),
                };
                let x = support.model.preprocess.apply(x);
                let shap =
                    support
                        .model
                        .ensemble
                        .shap(&x, &support.background, target, &mut scratch);
                ((shap.attributions, None), shap.base_value)
            }
            (Method::Tree, None) => unreachable!("trees checked above"),
            (method, _) => {
                let game = Game {
                    x,
                    background,
                    base,
                    value,
                };
                let phi = game.attribute(method, &permutations, limits, &mut column_of, cancel)?;
                (phi, base)
            }
        };
        explanations.push(Explanation::new(
            class,
            plan,
            value,
            base_value,
            attributions,
        ));
    }
    Ok(explanations)
}

/// One row's Shapley game for the model-agnostic methods: the row, the background, and the
/// two values known without enumerating (`v(∅)` and `f(x)`).
struct Game<'a> {
    x: &'a [f32],
    background: &'a Rows,
    base: f64,
    value: f64,
}

impl Game<'_> {
    /// The attributions by `method` (exact or permutation), `model` evaluating coalitions,
    /// with their standard errors when sampled.
    fn attribute(
        &self,
        method: Method,
        permutations: &[Vec<usize>],
        limits: &ExplainLimits,
        model: &mut exact::ModelFn<'_>,
        cancel: &Cancel,
    ) -> Result<(Vec<f64>, Option<Vec<f64>>), ExplainError> {
        let Game {
            x,
            background,
            base,
            value,
        } = *self;
        match method {
            Method::Exact => {
                exact::explain(x, background, base, value, limits.batch_rows, model, cancel)
                    .map(|phi| (phi, None))
            }
            Method::Permutation => permutation::explain(
                x,
                background,
                base,
                value,
                permutations,
                limits.batch_rows,
                model,
                cancel,
            )
            .map(|sampled| (sampled.attributions, sampled.standard_errors)),
            Method::Tree => Err(ExplainError::Unavailable(
                "Tree SHAP runs on the trees, not through the model".into(),
            )),
        }
    }
}

impl Explanation {
    /// An explanation as `plan` computed it, with its additivity residual.
    fn new(
        class: Option<usize>,
        plan: &Plan,
        value: f64,
        base_value: f64,
        (attributions, standard_errors): (Vec<f64>, Option<Vec<f64>>),
    ) -> Explanation {
        let residual = value - base_value - attributions.iter().sum::<f64>();
        Explanation {
            class,
            output: plan.output,
            value,
            base_value,
            attributions,
            method: plan.method,
            residual,
            permutations: (plan.method == Method::Permutation).then_some(plan.permutations),
            standard_errors,
        }
    }
}

/// Explains every row of a tensors model's `inputs` (one tensor per input, a batch of rows) as
/// `plan` says, column by column (see [`columns`]). Blocking, cancellable, in request order, as
/// [`explain`].
pub fn explain_columns(
    model: &LoadedModel,
    assets: Option<&ExplainAssets>,
    inputs: &[NamedTensor],
    plan: &Plan,
    limits: &ExplainLimits,
    cancel: &Cancel,
) -> Result<Vec<Explanation>, ExplainError> {
    let (assets, set) = match assets {
        Some(
            assets @ ExplainAssets {
                columns: Some(set), ..
            },
        ) => (assets, set),
        _ => return Err(ExplainError::Unavailable("no background set".into())),
    };
    let n_rows = batch_rows(inputs);
    let Scored { scores, label } = scored_outputs(model)?;
    let outputs = model
        .infer_tensors(inputs, || {})
        .map_err(InferenceError::from)?;
    let (reported, width) = columns::output_values(&outputs, scores, n_rows)?;
    let background = &assets.background;
    // Every row is coded as the index after the background's in the stack.
    let x = vec![background.n_rows as f32; background.n_cols];
    let permutations = match plan.method {
        Method::Permutation => {
            permutation::permutations(x.len(), plan.permutations, permutation::SEED)
        }
        _ => Vec::new(),
    };
    let mut explanations = Vec::with_capacity(n_rows);
    for r in 0..n_rows {
        cancel.check()?;
        let class = match label {
            Some((label_output, labels)) => Some(match plan.class {
                Some(class) => class,
                None => columns::label_index(&outputs, label_output, labels, r)?,
            }),
            None => None,
        };
        let index = class.unwrap_or(0);
        let stack = columns::stack_row(&set.background, inputs, r)?;
        let mut column_of = columns::model_fn(
            model,
            &set.layout,
            &stack,
            Column {
                output: scores,
                index,
            },
        );
        let game = Game {
            x: &x,
            background,
            base: assets.background_mean[index],
            value: reported[r * width + index],
        };
        let phi = game.attribute(plan.method, &permutations, limits, &mut column_of, cancel)?;
        explanations.push(Explanation::new(class, plan, game.value, game.base, phi));
    }
    Ok(explanations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn read(text: &str) -> Result<Rows, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("background.csv");
        std::fs::write(&path, text).unwrap();
        read_background(&path, &names())
    }

    #[test]
    fn background_rows_are_read_in_feature_order_as_float32() {
        let rows = read("a,b\n0.1,2\n-3.5,1e-3\n").unwrap();
        assert_eq!((rows.n_rows, rows.n_cols), (2, 2));
        assert_eq!(rows.data, vec![0.1f64 as f32, 2.0, -3.5, 1e-3f64 as f32]);
    }

    #[test]
    fn a_broken_background_is_refused_with_the_place() {
        // the background CSV (`\n`: a line break) | a fragment of why it is refused
        let refusals = r"
            b,a\n1,2\n | feature names in order
            a,b,c\n1,2,3\n | feature names in order
            a,b\n1,x\n | row 0, b: 'x'
            a,b\n1,2\n1,1e39\n | row 1, b
            a,b\n | no rows
        ";
        for case in refusals.trim().lines() {
            let (csv, fragment) = case.split_once('|').unwrap();
            let (csv, fragment) = (csv.trim(), fragment.trim());
            let error = read(&csv.replace(r"\n", "\n")).unwrap_err();
            assert!(error.contains(fragment), "{csv}: {error}");
        }
        assert!(read("a,b\n1,2,3\n").is_err(), "a ragged row");
    }
}
