//! The two forms a model is served in. The rows form: one float `[N, F]` input (the row-major
//! matrix [`super::Rows`]) and as outputs a classifier's label and probabilities (a float tensor
//! or a ZipMap) or a regressor's one float value per row — what `/predict`, `/explain`, drift
//! and the feature store work on. The tensors form ([`Task::Tensors`]): every other model
//! (several inputs, other element types, other ranks, named outputs), served through V2 and
//! gRPC as the named typed tensors its file declares.
//!
//! Two uses, one set of rules: [`entry_from_signature`] writes the manifest entry of a model
//! served without a manifest (`--manifest none`, `models add`), in the rows form when the file
//! fits it and the tensors form otherwise; [`check_entry`] checks a manifest's entry against
//! the file, which is what catches a manifest and a model from different training runs.

use std::collections::BTreeMap;

use super::manifest::{ModelEntry, OnnxEntry, Task};
use super::signature::{ClassLabels, Dim, GraphTask, OutputSpec, Signature, TensorSpec};
use super::tensor::ElementType;
use super::LoadError;

/// The file name of a model in a repository version folder (Triton's layout).
pub const MODEL_FILE: &str = "model.onnx";

/// What the rows form takes, said at the end of every refusal with the way out, so the log
/// reads as a choice of form, not as a broken model.
const ROWS_FORM: &str = "the rows form takes one float (FP32) input [N, F] and gives a classifier's label and probabilities or one float regression value per row; declare task \"tensors\" (or serve without a manifest) to serve the model as named tensors through V2 and gRPC; see docs/your-models.md";

/// Why an entry and a file do not go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The file is a valid model that does not fit the rows form.
    #[error("{0} ({ROWS_FORM})")]
    Unsupported(String),
    /// The manifest says something the file contradicts.
    #[error("{0}")]
    Mismatch(String),
}

impl EntryError {
    /// The load error for model `name` version `version`.
    pub fn into_load_error(self, name: &str, version: &str) -> LoadError {
        let (model, version) = (name.to_owned(), version.to_owned());
        match self {
            EntryError::Unsupported(_) => LoadError::Unsupported {
                model,
                version,
                reason: self.to_string(),
            },
            EntryError::Mismatch(reason) => LoadError::Mismatch {
                model,
                version,
                reason,
            },
        }
    }
}

/// The feature names of a model served without a manifest: `f0`, `f1`, ... in input column
/// order, the names XGBoost and onnxmltools give unnamed columns.
pub fn default_feature_names(n_features: usize) -> Vec<String> {
    (0..n_features).map(|i| format!("f{i}")).collect()
}

/// The one float `[N, F]` input and its `F`, or why the model does not have one.
pub fn rows_input(signature: &Signature) -> Result<(&TensorSpec, usize), EntryError> {
    let unsupported = |reason: String| Err(EntryError::Unsupported(reason));
    let [input] = signature.inputs.as_slice() else {
        let inputs: Vec<String> = signature
            .inputs
            .iter()
            .map(|i| format!("'{}' {}", i.name, tensor_text(i)))
            .collect();
        return unsupported(format!(
            "the model has {} inputs ({}): models with several inputs do not fit the rows form",
            signature.inputs.len(),
            inputs.join(", ")
        ));
    };
    let what = || format!("input '{}' is {}", input.name, tensor_text(input));
    if input.element_type != ElementType::Float32 {
        return unsupported(format!(
            "{}: {} inputs do not fit the rows form",
            what(),
            input.element_type
        ));
    }
    match input.shape.as_slice() {
        [Dim::Dynamic(_), Dim::Fixed(f)] if *f > 0 => Ok((input, *f)),
        [Dim::Fixed(_), _] => unsupported(format!(
            "{}: a fixed first dimension (no batch dimension) does not fit the rows form",
            what()
        )),
        [_, _] => unsupported(format!(
            "{}: a dynamic number of features (second dimension) does not fit the rows form",
            what()
        )),
        shape => unsupported(format!(
            "{}: inputs of rank {} do not fit the rows form",
            what(),
            shape.len()
        )),
    }
}

/// The manifest entry of a model served from its file alone: in the rows form when the file
/// fits it (see [`rows_entry`]), else in the tensors form, with why it is not rows (for the log
/// and `models add`).
pub fn entry_from_signature(
    name: &str,
    version: &str,
    sha256: &str,
    signature: &Signature,
) -> (ModelEntry, Option<EntryError>) {
    match rows_entry(name, version, sha256, signature) {
        Ok(entry) => (entry, None),
        Err(why) => {
            let mut entry = base_entry(name, version, sha256);
            entry.task = Task::Tensors;
            if let GraphTask::Classifier { labels, .. } = &signature.task {
                entry.class_labels = labels.names();
            }
            (entry, Some(why))
        }
    }
}

/// An entry with the file's place and hash and nothing about its inputs and outputs.
fn base_entry(name: &str, version: &str, sha256: &str) -> ModelEntry {
    ModelEntry {
        name: name.to_owned(),
        version: version.to_owned(),
        task: Task::Tensors,
        path: format!("{name}/{version}"),
        feature_names: Vec::new(),
        class_labels: Vec::new(),
        onnx: OnnxEntry {
            file: MODEL_FILE.to_owned(),
            sha256: sha256.to_owned(),
            input: String::new(),
            outputs: BTreeMap::new(),
        },
        dataset: Default::default(),
        artifacts: Default::default(),
        feature_store: None,
    }
}

/// The rows-form entry of a file: the ONNX input and outputs, the task and class labels the
/// graph states, feature names `f0..` (see [`default_feature_names`]), and the file's sha256;
/// or why the file does not fit the rows form.
pub fn rows_entry(
    name: &str,
    version: &str,
    sha256: &str,
    signature: &Signature,
) -> Result<ModelEntry, EntryError> {
    let (input, n_features) = rows_input(signature)?;
    let (task, outputs, class_labels) = match &signature.task {
        GraphTask::Classifier {
            label_output,
            probabilities_output,
            labels,
        } => {
            PROBABILITIES.output(signature, probabilities_output)?;
            let outputs = [
                (LABEL.name, label_output),
                (PROBABILITIES.name, probabilities_output),
            ];
            (Task::Classification, roles(&outputs), labels.names())
        }
        GraphTask::Regressor { output } => {
            VALUE.output(signature, output)?;
            (Task::Regression, roles(&[(VALUE.name, output)]), Vec::new())
        }
        GraphTask::Tensors => {
            let outputs: Vec<String> = signature
                .outputs
                .iter()
                .map(|o| format!("'{}' {}", o.name(), output_text(o)))
                .collect();
            return Err(EntryError::Unsupported(format!(
                "its outputs ({}) are neither a classifier's label and probabilities (with class labels in the graph) nor one regression value per row",
                outputs.join(", ")
            )));
        }
    };
    let mut entry = base_entry(name, version, sha256);
    entry.task = task;
    entry.feature_names = default_feature_names(n_features);
    entry.class_labels = class_labels;
    entry.onnx.input = input.name.clone();
    entry.onnx.outputs = outputs;
    Ok(entry)
}

/// Checks a manifest entry against the file's signature: the same input, as many features,
/// every named output present with the type its role needs, and as many class labels as the
/// graph has. Returns the graph's class labels in probability-column order when the graph
/// states them, so label outputs can be turned into columns; `None` means the label value is
/// the column (the manifest's promise: label `i` is class `i`).
pub fn check_entry(
    entry: &ModelEntry,
    signature: &Signature,
) -> Result<Option<ClassLabels>, EntryError> {
    let mismatch = |reason: String| Err(EntryError::Mismatch(reason));
    if entry.task == Task::Tensors {
        // The file's own signature is what is served; only labels the manifest adds can
        // contradict it.
        return match &signature.task {
            GraphTask::Classifier { labels, .. }
                if !entry.class_labels.is_empty() && labels.len() != entry.class_labels.len() =>
            {
                mismatch(format!(
                    "the graph has {} class labels, the manifest lists {}",
                    labels.len(),
                    entry.class_labels.len()
                ))
            }
            _ => Ok(None),
        };
    }
    let (input, n_features) = rows_input(signature)?;
    if input.name != entry.onnx.input {
        return mismatch(format!(
            "the ONNX input is '{}', the manifest says '{}'",
            input.name, entry.onnx.input
        ));
    }
    if n_features != entry.feature_names.len() {
        return mismatch(format!(
            "the ONNX input takes {n_features} features, the manifest lists {}",
            entry.feature_names.len()
        ));
    }
    for (role, name) in &entry.onnx.outputs {
        if signature.output(name).is_none() {
            let have: Vec<&str> = signature.outputs.iter().map(OutputSpec::name).collect();
            return mismatch(format!(
                "output '{name}' ({role}) is not in the ONNX model (it has {have:?})"
            ));
        }
    }
    match entry.task {
        Task::Tensors => Ok(None),
        Task::Regression => {
            VALUE.output(signature, &entry.onnx.outputs[VALUE.name])?;
            Ok(None)
        }
        Task::Classification => {
            let label_name = &entry.onnx.outputs[LABEL.name];
            let probabilities_name = &entry.onnx.outputs[PROBABILITIES.name];
            let label = LABEL.output(signature, label_name)?;
            PROBABILITIES.output(signature, probabilities_name)?;
            let graph_labels = match &signature.task {
                GraphTask::Classifier {
                    label_output,
                    probabilities_output,
                    labels,
                } if label_output == label_name && probabilities_output == probabilities_name => {
                    Some(labels)
                }
                _ => None,
            };
            let Some(labels) = graph_labels else {
                if label.served().element_type == ElementType::String {
                    return mismatch(format!(
                        "output '{label_name}' (label) holds strings, but the graph names no class labels to put them in columns"
                    ));
                }
                return Ok(None);
            };
            if labels.len() != entry.class_labels.len() {
                return mismatch(format!(
                    "the graph has {} class labels ({}), the manifest lists {}",
                    labels.len(),
                    labels.names().join(", "),
                    entry.class_labels.len()
                ));
            }
            Ok(Some(labels.clone()))
        }
    }
}

fn roles(outputs: &[(&str, &String)]) -> BTreeMap<String, String> {
    outputs
        .iter()
        .map(|(role, name)| (role.to_string(), name.to_string()))
        .collect()
}

/// What an output must be to play a part (its manifest role) in the rows form.
struct Role {
    /// The role's key in the manifest's `onnx.outputs`.
    name: &'static str,
    /// What the refusal says the output must be.
    needed: &'static str,
    fits: fn(&OutputSpec) -> bool,
}

/// The label: an int64 or string tensor of rank 1 (onnxmltools declares LightGBM's `[1]`,
/// though it has one label per row).
const LABEL: Role = Role {
    name: "label",
    needed: "an int64 or string tensor [N]",
    fits: |output| {
        matches!(output, OutputSpec::Tensor(t) if t.shape.len() == 1
            && matches!(t.element_type, ElementType::Int64 | ElementType::String))
    },
};

/// Probabilities: a ZipMap, or a float32 tensor `[N, classes]`.
const PROBABILITIES: Role = Role {
    name: "probabilities",
    needed: "a float (FP32) tensor [N, classes] or a ZipMap",
    fits: |output| match output {
        OutputSpec::ZipMap(_) => true,
        OutputSpec::Tensor(t) => t.element_type == ElementType::Float32 && t.shape.len() == 2,
    },
};

/// A regression value: a float32 tensor `[N]` or `[N, 1]`.
const VALUE: Role = Role {
    name: "value",
    needed: "a float (FP32) tensor [N] or [N, 1]",
    fits: |output| {
        matches!(output, OutputSpec::Tensor(t) if t.element_type == ElementType::Float32
            && matches!(t.shape.as_slice(), [_] | [_, Dim::Fixed(1)]))
    },
};

impl Role {
    /// The output called `name` if it can play this role, else why not.
    fn output<'s>(
        &self,
        signature: &'s Signature,
        name: &str,
    ) -> Result<&'s OutputSpec, EntryError> {
        match signature.output(name) {
            Some(output) if (self.fits)(output) => Ok(output),
            other => Err(role_error(name, self.name, other, self.needed)),
        }
    }
}

/// An output of the wrong type for its role: unsupported when it is another float width (the
/// model is fine, this version cannot serve it), a mismatch otherwise.
fn role_error(name: &str, role: &str, found: Option<&OutputSpec>, needed: &str) -> EntryError {
    let found = found.map_or_else(|| "missing".to_owned(), output_text);
    let reason = format!("output '{name}' ({role}) is {found}: {role} is served as {needed}");
    let other_float = found.starts_with("double") || found.starts_with("float16");
    if other_float {
        EntryError::Unsupported(reason)
    } else {
        EntryError::Mismatch(reason)
    }
}

/// A tensor as messages write it: `float[?, 4]`.
fn tensor_text(t: &TensorSpec) -> String {
    format!("{}{}", t.element_type, t.shape_text())
}

fn output_text(o: &OutputSpec) -> String {
    match o {
        OutputSpec::Tensor(t) => tensor_text(t),
        OutputSpec::ZipMap(z) => format!("a ZipMap of {} labels", z.labels.element_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, element_type: ElementType, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            element_type,
            shape,
        }
    }

    fn batch() -> Dim {
        Dim::Dynamic(None)
    }

    fn regressor(input: TensorSpec, value: TensorSpec) -> Signature {
        Signature {
            task: GraphTask::Regressor {
                output: value.name.clone(),
            },
            inputs: vec![input],
            outputs: vec![OutputSpec::Tensor(value)],
            batched: true,
        }
    }

    fn rows(n: usize) -> TensorSpec {
        tensor("input", ElementType::Float32, vec![batch(), Dim::Fixed(n)])
    }

    fn value(ty: ElementType) -> TensorSpec {
        tensor("variable", ty, vec![batch(), Dim::Fixed(1)])
    }

    #[test]
    fn a_regressor_gets_an_entry_with_default_feature_names() {
        let sig = regressor(rows(3), value(ElementType::Float32));
        let (entry, why_tensors) = entry_from_signature("xgb", "2", "ab", &sig);
        assert_eq!(why_tensors, None);
        assert_eq!(entry.feature_names, ["f0", "f1", "f2"]);
        assert_eq!(entry.task, Task::Regression);
        assert_eq!(entry.path, "xgb/2");
        assert_eq!(entry.onnx.input, "input");
        assert_eq!(entry.onnx.outputs["value"], "variable");
        assert_eq!(check_entry(&entry, &sig), Ok(None));
    }

    #[test]
    fn what_is_not_rows_is_served_as_tensors_and_says_why() {
        let unsupported = |sig: &Signature| match entry_from_signature("m", "1", "ab", sig) {
            (entry, Some(EntryError::Unsupported(reason))) => {
                assert_eq!(entry.task, Task::Tensors);
                assert_eq!(entry.onnx.sha256, "ab");
                assert!(entry.feature_names.is_empty() && entry.onnx.outputs.is_empty());
                assert_eq!(check_entry(&entry, sig), Ok(None));
                reason
            }
            other => panic!("{other:?}"),
        };
        let image_shape = vec![Dim::Dynamic(Some("N".into())), Dim::Fixed(1), Dim::Fixed(8)];
        let inputs = [
            (
                tensor("x", ElementType::Float64, vec![batch(), Dim::Fixed(2)]),
                "input 'x' is double[?, 2]: double inputs do not fit the rows form",
            ),
            (
                tensor("pixels", ElementType::Float32, image_shape),
                "input 'pixels' is float[N, 1, 8]: inputs of rank 3 do not fit the rows form",
            ),
            (
                tensor("x", ElementType::Float32, vec![Dim::Fixed(1), Dim::Fixed(2)]),
                "input 'x' is float[1, 2]: a fixed first dimension (no batch dimension) does not fit the rows form",
            ),
        ];
        for (input, reason) in inputs {
            assert_eq!(
                unsupported(&regressor(input, value(ElementType::Float32))),
                reason
            );
        }
        let mut two = regressor(rows(1), value(ElementType::Float32));
        two.inputs.push(tensor(
            "city",
            ElementType::String,
            vec![batch(), Dim::Fixed(1)],
        ));
        assert_eq!(
            unsupported(&two),
            "the model has 2 inputs ('input' float[?, 1], 'city' string[?, 1]): models with several inputs do not fit the rows form"
        );
        assert_eq!(
            unsupported(&regressor(rows(2), value(ElementType::Float64))),
            "output 'variable' (value) is double[?, 1]: value is served as a float (FP32) tensor [N] or [N, 1]"
        );
        let mut tensors = regressor(rows(2), value(ElementType::Float32));
        tensors.task = GraphTask::Tensors;
        assert!(unsupported(&tensors).starts_with("its outputs ('variable' float[?, 1])"));
        let message = EntryError::Unsupported("x".into()).to_string();
        assert!(message.starts_with("x (the rows form takes one float (FP32) input [N, F]"));
    }

    #[test]
    fn a_classifier_maps_labels_through_the_graph() {
        let labels = ClassLabels::Int64(vec![3, 7]);
        let sig = Signature {
            inputs: vec![rows(2)],
            outputs: vec![
                OutputSpec::Tensor(tensor("label", ElementType::Int64, vec![Dim::Fixed(1)])),
                OutputSpec::Tensor(tensor(
                    "probabilities",
                    ElementType::Float32,
                    vec![batch(), Dim::Fixed(2)],
                )),
            ],
            task: GraphTask::Classifier {
                label_output: "label".into(),
                probabilities_output: "probabilities".into(),
                labels: labels.clone(),
            },
            batched: false,
        };
        let mut entry = rows_entry("m", "1", "", &sig).unwrap();
        assert_eq!(entry.class_labels, ["3", "7"]);
        assert_eq!(check_entry(&entry, &sig), Ok(Some(labels)));
        entry.class_labels.push("9".into());
        assert_eq!(
            check_entry(&entry, &sig),
            Err(EntryError::Mismatch(
                "the graph has 2 class labels (3, 7), the manifest lists 3".into()
            ))
        );
        entry
            .onnx
            .outputs
            .insert("label".into(), "probabilities".into());
        assert_eq!(
            check_entry(&entry, &sig),
            Err(EntryError::Mismatch(
                "output 'probabilities' (label) is float[?, 2]: label is served as an int64 or string tensor [N]"
                    .into()
            ))
        );
    }
}
