//! Tabular models served as named tensors (a ColumnTransformer's one input per column, a
//! float64 or int64 matrix), explained column by column: each column of each input is one
//! feature, whatever its element type, and a string column is swapped whole.
//!
//! The model-agnostic methods ([`super::exact`], [`super::permutation`]) never do arithmetic
//! on feature values: they only choose, per feature, the explained row's value or a
//! background row's. So a row and the background are handed to them as *codes*: the
//! background rows and the explained row are stacked into one set of tensors (background row
//! `b` at index `b`, the row at index `K`), a background row is coded as `b` in every column and
//! the row as `K`, and the model function turns each coded row back into typed tensors by
//! gathering from the stack. The attributions are those of the values themselves, with every
//! type kept exact, and the enumeration and sampling code is the rows form's own.

use std::path::Path;

use super::ExplainError;
use crate::model::infer::NamedTensor;
use crate::model::signature::{ClassLabels, Dim, Signature};
use crate::model::tabular::default_feature_names;
use crate::model::tensor::{ElementType, TypedTensor};
use crate::model::{InferenceError, LoadedModel, Rows};

/// How a tensors model's inputs split into feature columns.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnLayout {
    inputs: Vec<InputColumns>,
    names: Vec<String>,
}

/// One input's columns: `width` features from `first` on; `rank_one` for an input `[N]`
/// (one value per row, no column dimension).
#[derive(Debug, Clone, PartialEq)]
struct InputColumns {
    name: String,
    first: usize,
    width: usize,
    rank_one: bool,
}

impl ColumnLayout {
    /// The columns of a model whose every input is `[N]` or `[N, k]` (a dynamic batch, then at
    /// most one fixed dimension). Features are numbered input by input, column by column, and
    /// named `feature_names` when given (as many as there are columns), else by input name
    /// (an input of several columns: `input[j]`; the only input: `f0`, `f1`, ... as the rows
    /// form names unnamed columns). The error says which input is not a column set and why.
    pub fn of(signature: &Signature, feature_names: &[String]) -> Result<ColumnLayout, String> {
        let mut inputs = Vec::with_capacity(signature.inputs.len());
        let mut first = 0;
        for spec in &signature.inputs {
            let (width, rank_one) = match spec.shape.as_slice() {
                [Dim::Dynamic(_)] => (1, true),
                [Dim::Dynamic(_), Dim::Fixed(k)] if *k > 0 => (*k, false),
                _ => {
                    let shape: Vec<String> = spec
                        .shape
                        .iter()
                        .map(|d| d.fixed().map_or("?".into(), |n| n.to_string()))
                        .collect();
                    return Err(format!(
                        "input '{}' has shape [{}]: only inputs [N] and [N, k] (one value or one row of k values per example, N dynamic) are explained column by column",
                        spec.name,
                        shape.join(", ")
                    ));
                }
            };
            inputs.push(InputColumns {
                name: spec.name.clone(),
                first,
                width,
                rank_one,
            });
            first += width;
        }
        let names = if feature_names.is_empty() {
            match inputs.as_slice() {
                [only] if only.width > 1 => default_feature_names(only.width),
                _ => inputs
                    .iter()
                    .flat_map(|i| {
                        (0..i.width).map(move |j| match i.width {
                            1 => i.name.clone(),
                            _ => format!("{}[{j}]", i.name),
                        })
                    })
                    .collect(),
            }
        } else if feature_names.len() == first {
            feature_names.to_vec()
        } else {
            return Err(format!(
                "{} feature names are listed, the model's inputs have {first} columns",
                feature_names.len()
            ));
        };
        Ok(ColumnLayout { inputs, names })
    }

    /// The features' names, in feature order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Reads a background CSV (a header naming the features in order, then one row per line)
    /// as the `/predict` rows it holds (see [`ColumnLayout::request_row`]). The caller reads
    /// them as a request's (integers exactly, floats rounded to the input's type as numpy
    /// does), so the background is what a client sending those rows would have sent.
    pub fn background_rows(
        &self,
        path: &Path,
        signature: &Signature,
    ) -> Result<Vec<serde_json::Value>, String> {
        let mut reader = csv::Reader::from_path(path).map_err(|e| e.to_string())?;
        let header = reader.headers().map_err(|e| e.to_string())?.clone();
        if header.iter().ne(self.names.iter().map(String::as_str)) {
            return Err(format!(
                "its header is not the model's feature names in order ({})",
                self.names.join(", ")
            ));
        }
        let mut rows = Vec::new();
        for (r, record) in reader.records().enumerate() {
            let record = record.map_err(|e| e.to_string())?;
            let row = self
                .request_row(|i| &record[i], signature)
                .map_err(|e| format!("row {r}, {e}"))?;
            rows.push(row);
        }
        if rows.is_empty() {
            return Err("it has no rows".into());
        }
        Ok(rows)
    }

    /// One row of `/predict`'s `instances` from the text of each feature (`cell(i)` for
    /// feature `i`): an object keyed by input name, strings as they are, other cells as JSON
    /// numbers or booleans, an input of several columns as an array. The error names the
    /// feature and the text.
    pub fn request_row<'a>(
        &self,
        cell: impl Fn(usize) -> &'a str,
        signature: &Signature,
    ) -> Result<serde_json::Value, String> {
        let mut row = serde_json::Map::with_capacity(self.inputs.len());
        for (input, spec) in self.inputs.iter().zip(&signature.inputs) {
            let value = |j: usize| -> Result<serde_json::Value, String> {
                let text = cell(input.first + j);
                if spec.element_type == ElementType::String {
                    return Ok(text.into());
                }
                serde_json::from_str(text.trim()).map_err(|_| {
                    format!(
                        "{}: '{text}' is not a {} value",
                        self.names[input.first + j],
                        spec.element_type
                    )
                })
            };
            let value = match input.width {
                1 => value(0)?,
                width => (0..width).map(value).collect::<Result<Vec<_>, _>>()?.into(),
            };
            row.insert(input.name.clone(), value);
        }
        Ok(serde_json::Value::Object(row))
    }

    /// The coded background: `n_background` rows, row `b` holding `b` in every column.
    pub fn background_codes(&self, n_background: usize) -> Rows {
        let m = self.names.len();
        let data = (0..n_background).flat_map(|b| vec![b as f32; m]).collect();
        Rows::new(data, m)
    }

    /// The model inputs of coded `rows`, each value gathered from `stack` (one tensor per input,
    /// in input order, background rows first and the explained row last).
    fn decode(&self, rows: &Rows, stack: &[NamedTensor]) -> Result<Vec<NamedTensor>, ExplainError> {
        self.inputs
            .iter()
            .zip(stack)
            .map(|(input, stacked)| {
                let indices: Vec<usize> = (0..rows.n_rows)
                    .flat_map(|r| {
                        let row = rows.row(r);
                        (0..input.width)
                            .map(move |j| row[input.first + j] as usize * input.width + j)
                    })
                    .collect();
                let shape = match input.rank_one {
                    true => vec![rows.n_rows],
                    false => vec![rows.n_rows, input.width],
                };
                let tensor = TypedTensor::new(shape, stacked.tensor.data().gather(&indices))
                    .map_err(|e| ExplainError::Model(e.to_string()))?;
                Ok(NamedTensor {
                    name: input.name.clone(),
                    tensor,
                })
            })
            .collect()
    }
}

/// Which output column is explained: a classifier's probability of one class, or a regressor's
/// value (column 0).
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    pub output: &'a str,
    pub index: usize,
}

/// Every value of output `name` as f64, with the values per row (`[N]` and `[N, 1]`: one).
pub fn output_values(
    outputs: &[NamedTensor],
    name: &str,
    rows: usize,
) -> Result<(Vec<f64>, usize), ExplainError> {
    let output = outputs
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| ExplainError::Model(format!("the model gave no output '{name}'")))?;
    let values = output.tensor.data().to_f64().ok_or_else(|| {
        ExplainError::Model(format!(
            "output '{name}' is {}, not a score",
            output.tensor.element_type()
        ))
    })?;
    if rows == 0 || values.len() % rows != 0 {
        return Err(ExplainError::Model(format!(
            "output '{name}' has {} values for {rows} rows",
            values.len()
        )));
    }
    let width = values.len() / rows;
    Ok((values, width))
}

/// Row `r`'s class index from a classifier's label output, by the graph's labels.
pub fn label_index(
    outputs: &[NamedTensor],
    label_output: &str,
    labels: &ClassLabels,
    r: usize,
) -> Result<usize, ExplainError> {
    let label = outputs
        .iter()
        .find(|o| o.name == label_output)
        .ok_or_else(|| ExplainError::Model(format!("the model gave no output '{label_output}'")))?;
    labels.position_of(label.tensor.data(), r).ok_or_else(|| {
        ExplainError::Model(format!(
            "row {r} of output '{label_output}' is not one of the graph's class labels"
        ))
    })
}

/// The model as the explainers see it for one row: coded rows in, `column` out, each batch one
/// ONNX Runtime call on the gathered tensors. `stack` is the background with the row appended.
pub fn model_fn<'a>(
    model: &'a LoadedModel,
    layout: &'a ColumnLayout,
    stack: &'a [NamedTensor],
    column: Column<'a>,
) -> impl FnMut(&Rows) -> Result<Vec<f64>, ExplainError> + 'a {
    move |rows: &Rows| {
        let inputs = layout.decode(rows, stack)?;
        let outputs = model
            .infer_tensors(&inputs, || {})
            .map_err(InferenceError::from)?;
        let (values, width) = output_values(&outputs, column.output, rows.n_rows)?;
        Ok(values
            .into_iter()
            .skip(column.index)
            .step_by(width)
            .collect())
    }
}

/// The background tensors with row `r` of `inputs` appended: the stack the codes index.
pub fn stack_row(
    background: &[NamedTensor],
    inputs: &[NamedTensor],
    r: usize,
) -> Result<Vec<NamedTensor>, ExplainError> {
    background
        .iter()
        .map(|b| {
            let input = inputs
                .iter()
                .find(|i| i.name == b.name)
                .ok_or_else(|| ExplainError::Model(format!("no input '{}'", b.name)))?;
            let row = input
                .tensor
                .slice_batch(r, r + 1)
                .and_then(|row| TypedTensor::concat_batch(&[&b.tensor, &row]))
                .map_err(|e| ExplainError::Model(format!("input '{}': {e}", b.name)))?;
            Ok(NamedTensor {
                name: b.name.clone(),
                tensor: row,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::signature::{GraphTask, TensorSpec};
    use crate::model::tensor::TensorData;

    fn signature(inputs: Vec<(&str, ElementType, Vec<Dim>)>) -> Signature {
        Signature {
            inputs: inputs
                .into_iter()
                .map(|(name, element_type, shape)| TensorSpec {
                    name: name.into(),
                    element_type,
                    shape,
                })
                .collect(),
            outputs: Vec::new(),
            task: GraphTask::Tensors,
            batched: true,
        }
    }

    fn batch() -> Dim {
        Dim::Dynamic(None)
    }

    fn column_transformer() -> Signature {
        signature(vec![
            ("city", ElementType::String, vec![batch(), Dim::Fixed(1)]),
            ("x", ElementType::Float64, vec![batch(), Dim::Fixed(2)]),
            ("n", ElementType::Int64, vec![batch()]),
        ])
    }

    #[test]
    fn columns_are_named_by_input_or_as_given() {
        let layout = ColumnLayout::of(&column_transformer(), &[]).unwrap();
        assert_eq!(layout.names(), ["city", "x[0]", "x[1]", "n"]);
        let one = signature(vec![(
            "m",
            ElementType::Float64,
            vec![batch(), Dim::Fixed(3)],
        )]);
        assert_eq!(
            ColumnLayout::of(&one, &[]).unwrap().names(),
            ["f0", "f1", "f2"]
        );
        let named: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(ColumnLayout::of(&one, &named).unwrap().names(), named);
        let err = ColumnLayout::of(&one, &named[..2]).unwrap_err();
        assert_eq!(
            err,
            "2 feature names are listed, the model's inputs have 3 columns"
        );
    }

    #[test]
    fn inputs_that_are_not_columns_are_named() {
        let image = signature(vec![(
            "pixels",
            ElementType::Float32,
            vec![batch(), Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)],
        )]);
        let err = ColumnLayout::of(&image, &[]).unwrap_err();
        assert!(
            err.starts_with("input 'pixels' has shape [?, 1, 8, 8]: only inputs [N] and [N, k]"),
            "{err}"
        );
        let fixed = signature(vec![(
            "x",
            ElementType::Float32,
            vec![Dim::Fixed(1), Dim::Fixed(2)],
        )]);
        assert!(ColumnLayout::of(&fixed, &[])
            .unwrap_err()
            .contains("'x' has shape [1, 2]"));
    }

    #[test]
    fn coded_rows_decode_to_each_columns_value_from_its_stacked_row() {
        let layout = ColumnLayout::of(&column_transformer(), &[]).unwrap();
        // Two stacked rows: a background row (0) and the explained row (1).
        let stack = vec![
            NamedTensor {
                name: "city".into(),
                tensor: TypedTensor::new(
                    vec![2, 1],
                    TensorData::String(vec!["oslo".into(), "rome".into()]),
                )
                .unwrap(),
            },
            NamedTensor {
                name: "x".into(),
                tensor: TypedTensor::new(
                    vec![2, 2],
                    TensorData::Float64(vec![0.5, 1.5, 10.5, 11.5]),
                )
                .unwrap(),
            },
            NamedTensor {
                name: "n".into(),
                tensor: TypedTensor::new(vec![2], TensorData::Int64(vec![7, 9])).unwrap(),
            },
        ];
        // Features city, x[0], x[1], n: the row's city and x[1], the background's x[0] and n.
        let rows = Rows::new(vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], 4);
        let decoded = layout.decode(&rows, &stack).unwrap();
        assert_eq!(decoded[0].tensor.shape(), [2, 1]);
        assert_eq!(
            decoded[0].tensor.data(),
            &TensorData::String(vec!["rome".into(), "oslo".into()])
        );
        assert_eq!(decoded[1].tensor.shape(), [2, 2]);
        assert_eq!(
            decoded[1].tensor.data(),
            &TensorData::Float64(vec![0.5, 11.5, 0.5, 1.5])
        );
        assert_eq!(decoded[2].tensor.shape(), [2]);
        assert_eq!(decoded[2].tensor.data(), &TensorData::Int64(vec![7, 7]));
        assert_eq!(
            layout.background_codes(2).data,
            vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn a_background_csv_becomes_rows_keyed_by_input() {
        let layout = ColumnLayout::of(&column_transformer(), &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("background.csv");
        std::fs::write(&path, "city,x[0],x[1],n\noslo,0.5,1e-3,7\n").unwrap();
        let body = layout
            .background_rows(&path, &column_transformer())
            .unwrap();
        assert_eq!(
            body,
            vec![serde_json::json!({"city": "oslo", "x": [0.5, 1e-3], "n": 7})]
        );
        std::fs::write(&path, "city,x[0],x[1],n\noslo,zero,1,7\n").unwrap();
        let err = layout
            .background_rows(&path, &column_transformer())
            .unwrap_err();
        assert_eq!(err, "row 0, x[0]: 'zero' is not a double value");
        std::fs::write(&path, "city,n\noslo,7\n").unwrap();
        let err = layout
            .background_rows(&path, &column_transformer())
            .unwrap_err();
        assert!(
            err.starts_with("its header is not the model's feature names in order"),
            "{err}"
        );
    }
}
