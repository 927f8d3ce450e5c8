//! One model version, loaded: its manifest entry, its signature as the file declares it, its
//! session pool, and the checks that it is the model the manifest describes.

use std::borrow::Cow;
use std::collections::HashMap;

use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use super::infer::{self, NamedTensor, RunError};
use super::manifest::{ModelEntry, Task};
use super::output::ModelOutput;
use super::runtime::{ProviderName, SessionPool};
use super::signature::{ClassLabels, Signature};
use super::tabular;
use super::tensor::{probe_value, ElementType, TensorData, TypedTensor};
use super::{InferenceError, LoadError, Rows};

/// A model version ready to serve.
pub struct LoadedModel {
    /// What the manifest says about it.
    pub entry: ModelEntry,
    /// Feature name → column, for requests that name their features.
    pub feature_index: HashMap<String, usize>,
    /// The execution provider that actually serves it.
    pub provider: ProviderName,
    /// Its inputs and outputs as the ONNX file declares them (ZipMap outputs recognised).
    pub signature: Signature,
    /// The graph's class labels in probability-column order, when it states them: a label
    /// output's value is looked up here to give its class index. `None`: the value is the index.
    graph_labels: Option<ClassLabels>,
    sessions: SessionPool,
}

impl LoadedModel {
    /// Wraps sessions after reading the signature of `model_bytes` (the file they were built
    /// from) and checking it against the manifest entry.
    pub fn new(
        entry: ModelEntry,
        sessions: Vec<Session>,
        provider: ProviderName,
        model_bytes: &[u8],
    ) -> Result<LoadedModel, LoadError> {
        let pool = SessionPool::new(sessions);
        let signature =
            Signature::read(&pool.first(), model_bytes).map_err(|e| LoadError::Session {
                model: entry.name.clone(),
                version: entry.version.clone(),
                reason: e.to_string(),
            })?;
        let graph_labels = tabular::check_entry(&entry, &signature)
            .map_err(|e| e.into_load_error(&entry.name, &entry.version))?;
        let feature_index = entry
            .feature_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Ok(LoadedModel {
            entry,
            feature_index,
            provider,
            signature,
            graph_labels,
            sessions: pool,
        })
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.entry.feature_names.len()
    }

    /// How many inferences of this model can run at once.
    pub fn concurrency(&self) -> usize {
        self.sessions.size()
    }

    /// True when the model is served in the tensors form (V2 and gRPC take its own inputs),
    /// not as `/predict` rows.
    pub fn is_tensors(&self) -> bool {
        self.entry.task == Task::Tensors
    }

    /// Runs the model on named typed `inputs` (one per model input) and returns every output in
    /// the signature's order, calling `on_session` once a session is held (as
    /// [`LoadedModel::infer_with`]). Blocking: call from a blocking thread.
    pub fn infer_tensors(
        &self,
        inputs: &[NamedTensor],
        on_session: impl FnOnce(),
    ) -> Result<Vec<NamedTensor>, RunError> {
        let mut session = self.sessions.acquire();
        on_session();
        infer::run(&mut session, &self.signature, inputs)
    }

    /// Zeros (empty strings) for every input, `rows` rows where the batch dimension is dynamic
    /// and one element along any other dynamic dimension: a warm-up or timing input.
    pub fn zero_inputs(&self, rows: usize) -> Vec<NamedTensor> {
        self.inputs_of(rows, TypedTensor::zeros)
    }

    /// Like [`LoadedModel::zero_inputs`] with varied values ([`TypedTensor::probe`]): the
    /// input on which the batcher checks that merging changes no bits.
    pub fn probe_inputs(&self, rows: usize) -> Vec<NamedTensor> {
        self.inputs_of(rows, TypedTensor::probe)
    }

    /// The rows form's [`LoadedModel::probe_inputs`]: `rows` rows of varied feature values.
    pub fn probe_rows(&self, rows: usize) -> Rows {
        let width = self.n_features();
        let values = (0..rows * width).map(|i| probe_value(i) as f32).collect();
        Rows::new(values, width)
    }

    /// One tensor per input, made by `make` from its element type and shape (`rows` along a
    /// dynamic batch dimension, one along any other dynamic dimension).
    fn inputs_of(
        &self,
        rows: usize,
        make: impl Fn(ElementType, Vec<usize>) -> TypedTensor,
    ) -> Vec<NamedTensor> {
        self.signature
            .inputs
            .iter()
            .map(|spec| {
                let shape = spec
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(i, d)| d.fixed().unwrap_or(if i == 0 { rows } else { 1 }))
                    .collect();
                NamedTensor {
                    name: spec.name.clone(),
                    tensor: make(spec.element_type, shape),
                }
            })
            .collect()
    }

    /// Runs the model on `rows`. Blocking: call from a blocking thread.
    pub fn infer(&self, rows: &Rows) -> Result<ModelOutput, InferenceError> {
        self.infer_with(rows, || {})
    }

    /// Like [`LoadedModel::infer`], calling `on_session` as soon as a session is held: the end
    /// of the call's queueing, for the queue-wait metric and the `x-queue-time` header.
    pub fn infer_with(
        &self,
        rows: &Rows,
        on_session: impl FnOnce(),
    ) -> Result<ModelOutput, InferenceError> {
        if self.is_tensors() {
            return Err(not_rows());
        }
        if rows.n_cols != self.n_features() {
            return Err(InferenceError::Output(format!(
                "input has {} columns, model takes {}",
                rows.n_cols,
                self.n_features()
            )));
        }
        let onnx = &self.entry.onnx;
        let tensor =
            TensorRef::from_array_view(([rows.n_rows, rows.n_cols], rows.data.as_slice()))?;
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            vec![(Cow::Borrowed(onnx.input.as_str()), tensor.into())];
        let mut session = self.sessions.acquire();
        on_session();
        let outputs = session.run(inputs)?;
        let output = |role: &str| -> Result<TypedTensor, InferenceError> {
            let spec = self
                .signature
                .output(&onnx.outputs[role])
                .expect("checked at load");
            infer::output(spec, &outputs).map_err(|e| match e {
                RunError::Runtime(reason) => InferenceError::Runtime(reason),
                other => InferenceError::Output(other.to_string()),
            })
        };
        let n = rows.n_rows;
        match self.entry.task {
            Task::Classification => {
                let labels = self.class_indices(output("label")?)?;
                let probabilities = float32(output("probabilities")?)?;
                let n_classes = self.entry.class_labels.len();
                if labels.len() != n || probabilities.len() != n * n_classes {
                    return Err(InferenceError::Output(format!(
                        "{n} rows gave {} labels and {} probabilities for {n_classes} classes",
                        labels.len(),
                        probabilities.len()
                    )));
                }
                if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= n_classes) {
                    return Err(InferenceError::Output(format!(
                        "label {bad} has no class name"
                    )));
                }
                Ok(ModelOutput::Classification {
                    labels,
                    probabilities,
                    n_classes,
                })
            }
            Task::Tensors => Err(not_rows()),
            Task::Regression => {
                let values = float32(output("value")?)?;
                if values.len() != n {
                    return Err(InferenceError::Output(format!(
                        "{n} rows gave {} values",
                        values.len()
                    )));
                }
                Ok(ModelOutput::Regression { values })
            }
        }
    }

    /// A label output as class indices: through the graph's labels when it states them (a
    /// label not among them is an error), else the int64 value itself.
    fn class_indices(&self, labels: TypedTensor) -> Result<Vec<i64>, InferenceError> {
        fn index_of<T: PartialEq + std::fmt::Debug>(
            values: &[T],
            labels: &[T],
        ) -> Result<Vec<i64>, InferenceError> {
            values
                .iter()
                .map(|v| {
                    labels
                        .iter()
                        .position(|l| l == v)
                        .map(|i| i as i64)
                        .ok_or_else(|| {
                            InferenceError::Output(format!("label {v:?} is not a class label"))
                        })
                })
                .collect()
        }
        match (labels.into_data(), &self.graph_labels) {
            (TensorData::Int64(values), None) => Ok(values),
            (TensorData::Int64(values), Some(ClassLabels::Int64(labels))) => {
                index_of(&values, labels)
            }
            (TensorData::String(values), Some(ClassLabels::String(labels))) => {
                index_of(&values, labels)
            }
            (data, _) => Err(InferenceError::Output(format!(
                "the label output is {}, which the graph's class labels do not match",
                data.element_type()
            ))),
        }
    }
}

/// A rows call on a tensors model: the layers above route those models to
/// [`LoadedModel::infer_tensors`], so this is a caller's bug, reported rather than run.
fn not_rows() -> InferenceError {
    InferenceError::Output("a tensors model takes named tensors, not rows".into())
}

/// The elements of a float32 output (its type is checked at load).
fn float32(tensor: TypedTensor) -> Result<Vec<f32>, InferenceError> {
    match tensor.into_data() {
        TensorData::Float32(values) => Ok(values),
        other => Err(InferenceError::Output(format!(
            "expected float values, got {}",
            other.element_type()
        ))),
    }
}
