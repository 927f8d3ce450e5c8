//! Raw model outputs, and their one JSON shape as predictions. The training pipeline writes the
//! same shape into `training_log.json`, which is what makes the log checkable against `/predict`.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

use super::infer::NamedTensor;
use super::signature::GraphTask;
use super::tensor::{TensorData, TypedTensor};

/// What one inference call produced, copied out of ONNX Runtime's buffers.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOutput {
    /// Per row: the class index and `n_classes` probabilities.
    Classification {
        labels: Vec<i64>,
        probabilities: Vec<f32>,
        n_classes: usize,
    },
    /// Per row: one value.
    Regression { values: Vec<f32> },
}

impl ModelOutput {
    /// Rows in this output.
    pub fn len(&self) -> usize {
        match self {
            ModelOutput::Classification { labels, .. } => labels.len(),
            ModelOutput::Regression { values } => values.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same answer to the bit (not `==`, for which `-0.0` is `0.0` and NaN is no NaN).
    pub fn same_bits(&self, other: &ModelOutput) -> bool {
        let bits = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        match (self, other) {
            (
                ModelOutput::Classification {
                    labels,
                    probabilities,
                    ..
                },
                ModelOutput::Classification {
                    labels: other_labels,
                    probabilities: other_probabilities,
                    ..
                },
            ) => labels == other_labels && bits(probabilities, other_probabilities),
            (
                ModelOutput::Regression { values },
                ModelOutput::Regression {
                    values: other_values,
                },
            ) => bits(values, other_values),
            _ => false,
        }
    }
}

/// Serializes outputs as the list of predictions, without building intermediate maps:
/// classifier rows as `{"label": .., "probabilities": {label: p}}`, regressor rows as
/// `{"value": ..}`. Numbers are widened to f64 exactly, so a client sees the float32 the model
/// computed, not a decimal rounding of it.
pub struct Predictions<'a> {
    pub output: &'a ModelOutput,
    pub class_labels: &'a [String],
}

struct ClassRow<'a> {
    label: &'a str,
    probabilities: &'a [f32],
    class_labels: &'a [String],
}

struct Probabilities<'a>(&'a [f32], &'a [String]);

#[derive(Serialize)]
struct ValueRow {
    value: f64,
}

impl Serialize for Predictions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.output.len()))?;
        match self.output {
            ModelOutput::Classification {
                labels,
                probabilities,
                n_classes,
            } => {
                for (i, &label) in labels.iter().enumerate() {
                    seq.serialize_element(&ClassRow {
                        label: &self.class_labels[label as usize],
                        probabilities: &probabilities[i * n_classes..(i + 1) * n_classes],
                        class_labels: self.class_labels,
                    })?;
                }
            }
            ModelOutput::Regression { values } => {
                for &value in values {
                    seq.serialize_element(&ValueRow {
                        value: f64::from(value),
                    })?;
                }
            }
        }
        seq.end()
    }
}

impl Serialize for ClassRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("label", self.label)?;
        map.serialize_entry(
            "probabilities",
            &Probabilities(self.probabilities, self.class_labels),
        )?;
        map.end()
    }
}

impl Serialize for Probabilities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (p, label) in self.0.iter().zip(self.1) {
            map.serialize_entry(label, &f64::from(*p))?;
        }
        map.end()
    }
}

/// A tensors model's outputs as `/predict` predictions, one object per row: a classifier's
/// `{"label", "probabilities"}` and a regressor's `{"value"}` as the rows form answers them,
/// other models' outputs by name (one value where the output holds one per row, else that
/// row's part nested as its dimensions). Floats widened exactly to JSON numbers.
pub struct TensorPredictions<'a> {
    pub outputs: &'a [NamedTensor],
    pub task: &'a GraphTask,
    /// A classifier's class names in the graph's label order: the manifest's `class_labels`
    /// (the graph's own labels, unless `models add --class-labels` renamed them).
    pub class_names: &'a [String],
    pub rows: usize,
}

impl TensorPredictions<'_> {
    fn output(&self, name: &str) -> Option<&TypedTensor> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| &o.tensor)
    }

    /// Row `r` as one prediction.
    pub fn row(&self, r: usize) -> Value {
        match self.task {
            GraphTask::Classifier {
                label_output,
                probabilities_output,
                labels,
            } => {
                let (Some(label), Some(probabilities)) =
                    (self.output(label_output), self.output(probabilities_output))
                else {
                    return Value::Null;
                };
                let scores = row_elements(probabilities, r);
                let probabilities: Map<String, Value> =
                    self.class_names.iter().cloned().zip(scores).collect();
                let label = match labels.position_of(label.data(), r) {
                    Some(column) => Value::String(self.class_names[column].clone()),
                    None => Value::Null,
                };
                json!({"label": label, "probabilities": probabilities})
            }
            GraphTask::Regressor { output } => match self.output(output) {
                Some(value) => json!({"value": row_value(value, r)}),
                None => Value::Null,
            },
            GraphTask::Tensors => self
                .outputs
                .iter()
                .map(|o| (o.name.clone(), row_value(&o.tensor, r)))
                .collect::<Map<String, Value>>()
                .into(),
        }
    }
}

impl Serialize for TensorPredictions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows))?;
        for r in 0..self.rows {
            seq.serialize_element(&self.row(r))?;
        }
        seq.end()
    }
}

/// Row `r` of `tensor`: one value when it holds one per row, else nested as its dimensions
/// after the batch.
fn row_value(tensor: &TypedTensor, r: usize) -> Value {
    let elements = row_elements(tensor, r);
    let trailing = tensor.shape().get(1..).unwrap_or_default();
    if elements.len() == 1 && trailing.len() <= 1 {
        return elements.into_iter().next().unwrap_or(Value::Null);
    }
    nest(&mut elements.into_iter(), trailing)
}

/// The elements of row `r` (all of them for a tensor without a batch dimension).
fn row_elements(tensor: &TypedTensor, r: usize) -> Vec<Value> {
    let per_row: usize = tensor.shape().iter().skip(1).product();
    let (start, end) = match tensor.batch_size() {
        Some(_) => (r * per_row, (r + 1) * per_row),
        None => (0, tensor.data().len()),
    };
    (start..end.min(tensor.data().len()))
        .map(|i| element(tensor.data(), i))
        .collect()
}

fn nest(elements: &mut impl Iterator<Item = Value>, dims: &[usize]) -> Value {
    match dims.split_first() {
        None => elements.next().unwrap_or(Value::Null),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(elements, rest)).collect()),
    }
}

/// Element `i` as JSON: floats widened exactly, integers exact, booleans, strings.
fn element(data: &TensorData, i: usize) -> Value {
    match data {
        TensorData::Bool(v) => v[i].into(),
        TensorData::Uint8(v) => v[i].into(),
        TensorData::Uint16(v) => v[i].into(),
        TensorData::Uint32(v) => v[i].into(),
        TensorData::Uint64(v) => v[i].into(),
        TensorData::Int8(v) => v[i].into(),
        TensorData::Int16(v) => v[i].into(),
        TensorData::Int32(v) => v[i].into(),
        TensorData::Int64(v) => v[i].into(),
        TensorData::Float16(v) => v[i].to_f64().into(),
        TensorData::Float32(v) => f64::from(v[i]).into(),
        TensorData::Float64(v) => v[i].into(),
        TensorData::String(v) => v[i].clone().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classification_rows_name_labels_and_keep_float32_exactly() {
        let labels = vec!["malignant".to_string(), "benign".to_string()];
        let output = ModelOutput::Classification {
            labels: vec![1, 0],
            probabilities: vec![0.1, 0.9, 0.7, 0.3],
            n_classes: 2,
        };
        let json = serde_json::to_value(Predictions {
            output: &output,
            class_labels: &labels,
        })
        .unwrap();
        assert_eq!(
            json,
            json!([
                {"label": "benign", "probabilities": {"malignant": f64::from(0.1f32), "benign": f64::from(0.9f32)}},
                {"label": "malignant", "probabilities": {"malignant": f64::from(0.7f32), "benign": f64::from(0.3f32)}}
            ])
        );
    }

    #[test]
    fn regression_rows_are_values() {
        let output = ModelOutput::Regression {
            values: vec![152.25, -1.5],
        };
        let json = serde_json::to_value(Predictions {
            output: &output,
            class_labels: &[],
        })
        .unwrap();
        assert_eq!(json, json!([{"value": 152.25}, {"value": -1.5}]));
        assert_eq!(output.len(), 2);
    }
}
