//! One model version, loaded: its manifest entry, its session pool, and the checks that it is
//! the model the manifest describes.

use std::borrow::Cow;
use std::collections::HashMap;

use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use super::manifest::{ModelEntry, Task};
use super::output::ModelOutput;
use super::runtime::{ProviderName, SessionPool};
use super::{InferenceError, LoadError, Rows};

/// A model version ready to serve.
pub struct LoadedModel {
    /// What the manifest says about it.
    pub entry: ModelEntry,
    /// Feature name → column, for requests that name their features.
    pub feature_index: HashMap<String, usize>,
    /// The execution provider that actually serves it.
    pub provider: ProviderName,
    sessions: SessionPool,
}

impl LoadedModel {
    /// Wraps sessions after checking their inputs and outputs against the manifest entry.
    pub fn new(
        entry: ModelEntry,
        sessions: Vec<Session>,
        provider: ProviderName,
    ) -> Result<LoadedModel, LoadError> {
        let pool = SessionPool::new(sessions);
        check_signature(&entry, &pool.first())?;
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
        let tensor_f32 = |role: &str| -> Result<Vec<f32>, InferenceError> {
            let name = &onnx.outputs[role];
            let value = outputs
                .get(name)
                .ok_or_else(|| InferenceError::Output(format!("no output '{name}'")))?;
            Ok(value.try_extract_tensor::<f32>()?.1.to_vec())
        };
        let n = rows.n_rows;
        match self.entry.task {
            Task::Classification => {
                let name = &onnx.outputs["label"];
                let labels = outputs
                    .get(name)
                    .ok_or_else(|| InferenceError::Output(format!("no output '{name}'")))?
                    .try_extract_tensor::<i64>()?
                    .1
                    .to_vec();
                let probabilities = tensor_f32("probabilities")?;
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
            Task::Regression => {
                let values = tensor_f32("value")?;
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
}

/// The session must take one float32 `[batch, n_features]` input under the manifest's name and
/// produce every output the manifest names: a mismatch means the file and the manifest are not
/// from the same training run.
fn check_signature(entry: &ModelEntry, session: &Session) -> Result<(), LoadError> {
    let mismatch = |reason: String| LoadError::Mismatch {
        model: entry.name.clone(),
        version: entry.version.clone(),
        reason,
    };
    let inputs = session.inputs();
    let [input] = inputs else {
        return Err(mismatch(format!(
            "the ONNX model has {} inputs, expected 1",
            inputs.len()
        )));
    };
    if input.name() != entry.onnx.input {
        return Err(mismatch(format!(
            "the ONNX input is '{}', the manifest says '{}'",
            input.name(),
            entry.onnx.input
        )));
    }
    if let Some(shape) = input.dtype().tensor_shape() {
        let width = shape.last().copied().unwrap_or(-1);
        if width >= 0 && width as usize != entry.feature_names.len() {
            return Err(mismatch(format!(
                "the ONNX input takes {width} features, the manifest lists {}",
                entry.feature_names.len()
            )));
        }
    }
    for (role, name) in &entry.onnx.outputs {
        if !session.outputs().iter().any(|o| o.name() == name) {
            let have: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
            return Err(mismatch(format!(
                "output '{name}' ({role}) is not in the ONNX model (it has {have:?})"
            )));
        }
    }
    Ok(())
}
