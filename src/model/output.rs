//! Raw model outputs, and their one JSON shape as predictions. The training pipeline writes the
//! same shape into `training_log.json`, which is what makes the log checkable against `/predict`.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

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
