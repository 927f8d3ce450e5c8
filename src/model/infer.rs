//! One inference call on named typed tensors: the inputs checked against the signature (so a
//! caller's mistake is reported by input name, not as an ONNX Runtime message), lent to ONNX
//! Runtime without copies, and every output copied out as a typed tensor — ZipMap outputs as
//! the probabilities tensor `[rows, classes]` in the order of the model's class labels.
//!
//! ZipMap comes back from ONNX Runtime as a sequence of maps; ort reads each map through two
//! small tensors (keys, values), so this costs a few allocations per row. ONNX Runtime's maps
//! are ordered by key, not by the ZipMap's label order, which is why columns are placed by key.

use std::borrow::Cow;

use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynMapValueType, DynValue};

use super::signature::{ClassLabels, OutputSpec, Signature, TensorSpec, ZipMapSpec};
use super::tensor::{TensorData, TensorError, TypedTensor};

/// A tensor with the name of the model input or output it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: TypedTensor,
}

/// Rows in a call's inputs: the batch dimension of the first (every input of a call holds
/// the same rows); 1 for inputs without one.
pub fn batch_rows(inputs: &[NamedTensor]) -> usize {
    inputs
        .first()
        .and_then(|input| input.tensor.batch_size())
        .unwrap_or(1)
}

/// Why a typed inference call failed. The input variants are the caller's (the request layer
/// should have caught them); the others point at the model or the runtime.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("input '{name}' is missing (the model takes {expected})")]
    MissingInput { name: String, expected: String },
    #[error("the model has no input '{name}' (it takes {expected})")]
    UnknownInput { name: String, expected: String },
    #[error("input '{name}' is given twice")]
    DuplicateInput { name: String },
    #[error("input '{name}' is {got}, the model takes {expected}")]
    InputType {
        name: String,
        expected: String,
        got: String,
    },
    #[error("input '{name}' has shape {got:?}, the model takes {expected}")]
    InputShape {
        name: String,
        expected: String,
        got: Vec<usize>,
    },
    #[error(
        "inputs disagree on the number of rows: '{first}' has {first_rows}, '{name}' has {rows}"
    )]
    BatchSize {
        first: String,
        first_rows: usize,
        name: String,
        rows: usize,
    },
    #[error("input '{name}': element {index} is a string holding a NUL character, which ONNX Runtime cannot take")]
    NulInString { name: String, index: usize },
    #[error("input '{name}': {source}")]
    Input { name: String, source: TensorError },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("output '{name}': {reason}")]
    Output { name: String, reason: String },
}

/// Runs `session` (whose signature is `signature`) on `inputs`, one per model input in any
/// order, and returns every output in the signature's order. Blocking: call it from a blocking
/// thread with a session taken from the pool.
pub fn run(
    session: &mut Session,
    signature: &Signature,
    inputs: &[NamedTensor],
) -> Result<Vec<NamedTensor>, RunError> {
    let ordered = match_inputs(signature, inputs)?;
    let values = ordered
        .iter()
        .map(|(spec, tensor)| {
            let value = tensor.to_ort_input().map_err(|source| RunError::Input {
                name: spec.name.clone(),
                source,
            })?;
            Ok((Cow::Borrowed(spec.name.as_str()), value))
        })
        .collect::<Result<Vec<(Cow<'_, str>, SessionInputValue<'_>)>, RunError>>()?;
    let outputs = session
        .run(values)
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    signature
        .outputs
        .iter()
        .map(|spec| {
            Ok(NamedTensor {
                name: spec.name().to_owned(),
                tensor: output(spec, &outputs)?,
            })
        })
        .collect()
}

/// Checks `inputs` against `signature` as [`run`] will (every input once, types, shapes, batch
/// sizes agreeing), so a request is refused with its input named before it takes a place in
/// a queue.
pub fn check_inputs(signature: &Signature, inputs: &[NamedTensor]) -> Result<(), RunError> {
    match_inputs(signature, inputs).map(|_| ())
}

/// Copies the output `spec` describes out of a run's `outputs` as a typed tensor, a ZipMap as
/// its probabilities `[rows, classes]`. Public so a caller that builds its own inputs (the
/// `f32` rows path of [`super::LoadedModel`]) reads outputs exactly as [`run`] does.
pub fn output(spec: &OutputSpec, outputs: &SessionOutputs<'_>) -> Result<TypedTensor, RunError> {
    let name = spec.name();
    let output_error = |reason: String| RunError::Output {
        name: name.to_owned(),
        reason,
    };
    let value = outputs
        .get(name)
        .ok_or_else(|| output_error("ONNX Runtime did not return it".into()))?;
    match spec {
        OutputSpec::Tensor(_) => {
            TypedTensor::from_ort_value(value).map_err(|e| output_error(e.to_string()))
        }
        OutputSpec::ZipMap(zipmap) => zipmap_probabilities(value, zipmap).map_err(output_error),
    }
}

/// Pairs each model input with the one tensor given for it, checking type, shape and that
/// batched inputs agree on their rows.
fn match_inputs<'a>(
    signature: &'a Signature,
    inputs: &'a [NamedTensor],
) -> Result<Vec<(&'a TensorSpec, &'a TypedTensor)>, RunError> {
    let expected = || {
        let names: Vec<String> = signature
            .inputs
            .iter()
            .map(|i| format!("'{}' {}{}", i.name, i.element_type, i.shape_text()))
            .collect();
        names.join(", ")
    };
    for (i, given) in inputs.iter().enumerate() {
        if signature.input(&given.name).is_none() {
            return Err(RunError::UnknownInput {
                name: given.name.clone(),
                expected: expected(),
            });
        }
        if inputs[..i].iter().any(|earlier| earlier.name == given.name) {
            return Err(RunError::DuplicateInput {
                name: given.name.clone(),
            });
        }
    }
    let mut ordered = Vec::with_capacity(signature.inputs.len());
    for spec in &signature.inputs {
        let tensor = &inputs
            .iter()
            .find(|given| given.name == spec.name)
            .ok_or_else(|| RunError::MissingInput {
                name: spec.name.clone(),
                expected: expected(),
            })?
            .tensor;
        if tensor.element_type() != spec.element_type {
            return Err(RunError::InputType {
                name: spec.name.clone(),
                expected: spec.element_type.to_string(),
                got: tensor.element_type().to_string(),
            });
        }
        if !spec.accepts_shape(tensor.shape()) {
            return Err(RunError::InputShape {
                name: spec.name.clone(),
                expected: spec.shape_text(),
                got: tensor.shape().to_vec(),
            });
        }
        // ONNX Runtime takes strings as C strings: a NUL would fail the run (a 500) instead of
        // being the client's error.
        if let TensorData::String(values) = tensor.data() {
            if let Some(index) = values.iter().position(|v| v.contains('\0')) {
                return Err(RunError::NulInString {
                    name: spec.name.clone(),
                    index,
                });
            }
        }
        ordered.push((spec, tensor));
    }
    if signature.batched {
        if let Some(((first, first_tensor), rest)) = ordered.split_first() {
            let first_rows = first_tensor.batch_size().unwrap_or_default();
            for (spec, tensor) in rest {
                let rows = tensor.batch_size().unwrap_or_default();
                if rows != first_rows {
                    return Err(RunError::BatchSize {
                        first: first.name.clone(),
                        first_rows,
                        name: spec.name.clone(),
                        rows,
                    });
                }
            }
        }
    }
    Ok(ordered)
}

/// A ZipMap output (one `{label: probability}` map per row) as a float tensor
/// `[rows, classes]`, columns in the order of `zipmap.labels`.
fn zipmap_probabilities(value: &DynValue, zipmap: &ZipMapSpec) -> Result<TypedTensor, String> {
    let maps = value
        .try_extract_sequence::<DynMapValueType>()
        .map_err(|e| e.to_string())?;
    let classes = zipmap.labels.len();
    let mut probabilities = vec![0.0f32; maps.len() * classes];
    for (row, map) in maps.iter().enumerate() {
        let cells = &mut probabilities[row * classes..(row + 1) * classes];
        match &zipmap.labels {
            ClassLabels::Int64(_) => {
                let pairs = map
                    .try_extract_key_values::<i64, f32>()
                    .map_err(|e| e.to_string())?;
                place(row, cells, &pairs, |k| zipmap.column_of_int(*k))?;
            }
            ClassLabels::String(_) => {
                let pairs = map
                    .try_extract_key_values::<String, f32>()
                    .map_err(|e| e.to_string())?;
                place(row, cells, &pairs, |k| zipmap.column_of_str(k))?;
            }
        }
    }
    TypedTensor::new(
        vec![maps.len(), classes],
        TensorData::Float32(probabilities),
    )
    .map_err(|e| e.to_string())
}

/// Puts one row's `(label, probability)` pairs in their columns. Map keys are unique, so as
/// many pairs as classes, each a known label, fill every column exactly once.
fn place<K: std::fmt::Debug>(
    row: usize,
    cells: &mut [f32],
    pairs: &[(K, f32)],
    column: impl Fn(&K) -> Option<usize>,
) -> Result<(), String> {
    if pairs.len() != cells.len() {
        return Err(format!(
            "row {row} has {} probabilities for {} class labels",
            pairs.len(),
            cells.len()
        ));
    }
    for (key, p) in pairs {
        let c = column(key)
            .ok_or_else(|| format!("row {row} has a probability for {key:?}, not a class label"))?;
        cells[c] = *p;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::signature::{Dim, GraphTask};
    use super::super::tensor::ElementType;
    use super::*;

    /// A ColumnTransformer-like signature: `city` string [N, 1], `x1` float [N, 1].
    fn two_columns() -> Signature {
        let column = |name: &str, element_type| TensorSpec {
            name: name.into(),
            element_type,
            shape: vec![Dim::Dynamic(None), Dim::Fixed(1)],
        };
        Signature {
            inputs: vec![
                column("city", ElementType::String),
                column("x1", ElementType::Float32),
            ],
            outputs: vec![],
            task: GraphTask::Tensors,
            batched: true,
        }
    }

    fn named(name: &str, shape: Vec<usize>, data: TensorData) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            tensor: TypedTensor::new(shape, data).unwrap(),
        }
    }

    fn city(rows: usize) -> NamedTensor {
        named(
            "city",
            vec![rows, 1],
            TensorData::String(vec!["nice".into(); rows]),
        )
    }

    fn x1(rows: usize) -> NamedTensor {
        named("x1", vec![rows, 1], TensorData::Float32(vec![0.5; rows]))
    }

    #[test]
    fn inputs_are_put_in_signature_order() {
        let sig = two_columns();
        let given = [x1(2), city(2)];
        let ordered = match_inputs(&sig, &given).unwrap();
        let names: Vec<&str> = ordered.iter().map(|(s, _)| s.name.as_str()).collect();
        assert_eq!(names, ["city", "x1"]);
        assert_eq!(ordered[0].1, &given[1].tensor);
    }

    #[test]
    fn input_mistakes_name_the_input() {
        let sig = two_columns();
        let err = |given: &[NamedTensor]| match_inputs(&sig, given).unwrap_err().to_string();
        assert_eq!(
            err(&[city(1)]),
            "input 'x1' is missing (the model takes 'city' string[?, 1], 'x1' float[?, 1])"
        );
        assert_eq!(
            err(&[
                city(1),
                x1(1),
                named("x9", vec![1], TensorData::Bool(vec![true]))
            ]),
            "the model has no input 'x9' (it takes 'city' string[?, 1], 'x1' float[?, 1])"
        );
        assert_eq!(err(&[city(1), x1(1), x1(1)]), "input 'x1' is given twice");
        assert_eq!(
            err(&[
                city(1),
                named("x1", vec![1, 1], TensorData::Float64(vec![0.5]))
            ]),
            "input 'x1' is double, the model takes float"
        );
        assert_eq!(
            err(&[
                city(1),
                named("x1", vec![1, 2], TensorData::Float32(vec![0.5, 1.0]))
            ]),
            "input 'x1' has shape [1, 2], the model takes [?, 1]"
        );
        assert_eq!(
            err(&[city(2), x1(3)]),
            "inputs disagree on the number of rows: 'city' has 2, 'x1' has 3"
        );
        assert_eq!(
            err(&[
                named(
                    "city",
                    vec![2, 1],
                    TensorData::String(vec!["nice".into(), "ni\0ce".into()])
                ),
                x1(2)
            ]),
            "input 'city': element 1 is a string holding a NUL character, which ONNX Runtime cannot take"
        );
    }

    #[test]
    fn place_orders_by_label_and_refuses_unknown_or_missing_ones() {
        let labels = ["b", "a"];
        let column = |k: &&str| labels.iter().position(|l| l == k);
        let mut cells = [0.0; 2];
        place(0, &mut cells, &[("a", 0.25), ("b", 0.75)], column).unwrap();
        assert_eq!(cells, [0.75, 0.25]);
        assert_eq!(
            place(3, &mut cells, &[("a", 1.0)], column).unwrap_err(),
            "row 3 has 1 probabilities for 2 class labels"
        );
        assert_eq!(
            place(1, &mut cells, &[("a", 0.5), ("c", 0.5)], column).unwrap_err(),
            "row 1 has a probability for \"c\", not a class label"
        );
    }
}
