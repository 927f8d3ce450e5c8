//! V2 inference requests for a tensors model: every input the model's signature declares, of
//! any datatype (BOOL, INT8…UINT64, FP16, FP32, FP64, BYTES) and rank, from inline JSON `data`
//! (flat or nested, row-major) or Triton's binary tensor data extension.
//!
//! Unlike the rows form's streaming parser ([`super::tensors`]), this one reads the JSON header
//! into a `Value` first: a value's meaning depends on its input's datatype, which the header
//! may give after the data, and a tensors model's requests are few large tensors, not many
//! small rows. Checks that the inputs fit the model (all present, types, shapes, batch sizes)
//! are the model layer's ([`crate::model::infer::check_inputs`]), so REST and gRPC say the same.

use half::f16;
use serde_json::{Map, Value};

use super::tensors::{integral, RequestedOutput};
use super::{ExplainOptions, InputError};
use crate::model::infer::{check_inputs, NamedTensor};
use crate::model::signature::Signature;
use crate::model::tensor::{ElementType, TensorData, TypedTensor};

/// A parsed V2 request for a tensors model.
#[derive(Debug, PartialEq)]
pub struct TypedRequest {
    /// The client's request id, echoed in the response.
    pub id: Option<String>,
    /// One tensor per input the request names, in request order.
    pub inputs: Vec<NamedTensor>,
    /// The outputs asked for, in order; empty means all of them.
    pub outputs: Vec<RequestedOutput>,
    /// `parameters.binary_data_output`: outputs default to binary data.
    pub binary_data_output: bool,
}

/// Parses a body whose JSON header is its first `header_len` bytes (all of it when `None`)
/// into the named tensors it declares.
pub fn parse_typed_infer(
    body: &[u8],
    header_len: Option<usize>,
) -> Result<TypedRequest, InputError> {
    let split = header_len.unwrap_or(body.len()).min(body.len());
    let (json, mut binary) = body.split_at(split);
    let header: Value =
        serde_json::from_slice(json).map_err(|e| InputError::InvalidJson(e.to_string()))?;
    let Value::Object(header) = header else {
        return Err(InputError::InvalidJson(
            "the body must be a JSON object".into(),
        ));
    };
    let id = match header.get("id") {
        None => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => return Err(InputError::InvalidTensor("'id' must be a string".into())),
    };
    let Some(Value::Array(raw_inputs)) = header.get("inputs") else {
        return Err(InputError::InvalidTensor(
            "the request has no 'inputs' list".into(),
        ));
    };
    let mut inputs = Vec::with_capacity(raw_inputs.len());
    for (i, raw) in raw_inputs.iter().enumerate() {
        inputs.push(parse_input(i, raw, &mut binary)?);
    }
    if !binary.is_empty() {
        return Err(InputError::InvalidBinaryData(format!(
            "{} bytes after the JSON header are not claimed by any input's binary_data_size",
            binary.len()
        )));
    }
    let outputs = match header.get("outputs") {
        None => Vec::new(),
        Some(outputs) => serde_json::from_value(outputs.clone())
            .map_err(|e| InputError::InvalidTensor(format!("'outputs': {e}")))?,
    };
    let binary_data_output = parameter(&header, "binary_data_output")
        .map(|v| {
            v.as_bool().ok_or_else(|| {
                InputError::InvalidTensor("parameters.binary_data_output must be a boolean".into())
            })
        })
        .transpose()?
        .unwrap_or(false);
    Ok(TypedRequest {
        id,
        inputs,
        outputs,
        binary_data_output,
    })
}

/// `object.parameters[name]`, when given.
fn parameter<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get("parameters")?.get(name)
}

/// One input tensor object, its binary data (if any) taken from the front of `binary`.
fn parse_input(index: usize, raw: &Value, binary: &mut &[u8]) -> Result<NamedTensor, InputError> {
    let invalid = |reason: String| InputError::InvalidTensor(reason);
    let Value::Object(raw) = raw else {
        return Err(invalid(format!("inputs[{index}] must be an object")));
    };
    let Some(Value::String(name)) = raw.get("name") else {
        return Err(invalid(format!("inputs[{index}] has no 'name'")));
    };
    let fail = |reason: String| invalid(format!("input '{name}': {reason}"));
    let ty = match raw.get("datatype").and_then(Value::as_str) {
        Some(given) => ElementType::from_v2_name(given).ok_or_else(|| {
            fail(format!(
                "datatype '{given}' is not one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES"
            ))
        })?,
        None => return Err(fail("no datatype".into())),
    };
    let shape = shape_of(raw.get("shape"))
        .ok_or_else(|| fail("'shape' must be a list of whole numbers >= 0".into()))?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            fail(format!(
                "shape {shape:?} holds more elements than can be counted"
            ))
        })?;
    let binary_size = parameter(raw, "binary_data_size");
    let tensor = match (raw.get("data"), binary_size) {
        (Some(_), Some(_)) => {
            return Err(fail(
                "has both 'data' and a binary_data_size parameter".into(),
            ))
        }
        (None, None) => {
            return Err(fail(
                "has no 'data' and no binary_data_size parameter".into(),
            ))
        }
        (Some(data), None) => {
            let mut values = Vec::new();
            flatten(data, &mut values, count).map_err(fail)?;
            if values.len() != count {
                return Err(fail(format!(
                    "shape {shape:?} needs {count} values, 'data' has {}",
                    values.len()
                )));
            }
            let data = json_values(ty, &values, &|i| format!("data[{i}]")).map_err(fail)?;
            TypedTensor::new(shape, data).map_err(|e| fail(e.to_string()))?
        }
        (None, Some(size)) => {
            let size = size.as_u64().ok_or_else(|| {
                InputError::InvalidBinaryData(format!(
                    "input '{name}': binary_data_size must be a byte count"
                ))
            })? as usize;
            let Some((bytes, rest)) = binary.split_at_checked(size) else {
                return Err(InputError::InvalidBinaryData(format!(
                    "input '{name}' needs {size} bytes, the binary section has {}",
                    binary.len()
                )));
            };
            *binary = rest;
            TypedTensor::from_le_bytes(ty, shape, bytes)
                .map_err(|e| InputError::InvalidBinaryData(format!("input '{name}': {e}")))?
        }
    };
    Ok(NamedTensor {
        name: name.clone(),
        tensor,
    })
}

/// The model's inputs as messages list them: `'city' BYTES [-1, 1], 'x1' FP32 [-1, 1]`.
pub fn inputs_text(signature: &Signature) -> String {
    let inputs: Vec<String> = signature
        .inputs
        .iter()
        .map(|i| {
            let dims: Vec<String> = i.shape.iter().map(|d| d.v2().to_string()).collect();
            format!(
                "'{}' {} [{}]",
                i.name,
                i.element_type.v2_name(),
                dims.join(", ")
            )
        })
        .collect();
    inputs.join(", ")
}

/// A V2 shape: whole numbers >= 0, however spelled (`2` or `2.0`).
fn shape_of(shape: Option<&Value>) -> Option<Vec<usize>> {
    shape?
        .as_array()?
        .iter()
        .map(|d| {
            let d = d.as_f64()?;
            (d >= 0.0 && d.fract() == 0.0 && d < 9.0e15).then_some(d as usize)
        })
        .collect()
}

/// Appends the leaves of `data` (arrays nested to any depth) in row-major order, refusing more
/// than `limit` of them before collecting them all.
fn flatten<'v>(data: &'v Value, out: &mut Vec<&'v Value>, limit: usize) -> Result<(), String> {
    match data {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out, limit)),
        leaf if out.len() < limit => {
            out.push(leaf);
            Ok(())
        }
        _ => Err(format!(
            "'data' has more than the {limit} values its shape holds"
        )),
    }
}

/// JSON values as elements of `ty`: `true`/`false` for BOOL, whole numbers in range for the
/// integer types (exact, never through a float: `3.0` is 3, as JSON Schema's `integer` says,
/// but only where an f64 holds every integer, see [`integral`]), numbers for the floats (narrowed as numpy
/// narrows a Python float), strings for BYTES. `place(i)` names element `i` in a message.
fn json_values(
    ty: ElementType,
    values: &[&Value],
    place: &dyn Fn(usize) -> String,
) -> Result<TensorData, String> {
    let each = |what: &str| {
        let what = what.to_owned();
        move |(i, v): (usize, &&Value)| format!("{}: expected {what}, got {v}", place(i))
    };
    fn read<T>(
        values: &[&Value],
        fail: impl Fn((usize, &&Value)) -> String,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, String> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| read(v).ok_or_else(|| fail((i, v))))
            .collect()
    }
    fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Option<T> {
        match (v.as_i64(), v.as_u64()) {
            (Some(i), _) => T::try_from(i).ok(),
            (None, Some(u)) => T::try_from(u).ok(),
            (None, None) => T::try_from(integral(v.as_number()?)?).ok(),
        }
    }
    fn finite<T>(
        v: &Value,
        narrow: impl Fn(f64) -> T,
        is_finite: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let x = narrow(v.as_f64()?);
        is_finite(&x).then_some(x)
    }
    let name = ty.v2_name();
    let integer = format!("a whole number in {name}'s range");
    let float = format!("a number finite in {name}");
    Ok(match ty {
        ElementType::Bool => TensorData::Bool(read(values, each("true or false"), Value::as_bool)?),
        ElementType::Uint8 => TensorData::Uint8(read(values, each(&integer), int)?),
        ElementType::Uint16 => TensorData::Uint16(read(values, each(&integer), int)?),
        ElementType::Uint32 => TensorData::Uint32(read(values, each(&integer), int)?),
        ElementType::Uint64 => TensorData::Uint64(read(values, each(&integer), int)?),
        ElementType::Int8 => TensorData::Int8(read(values, each(&integer), int)?),
        ElementType::Int16 => TensorData::Int16(read(values, each(&integer), int)?),
        ElementType::Int32 => TensorData::Int32(read(values, each(&integer), int)?),
        ElementType::Int64 => TensorData::Int64(read(values, each(&integer), int)?),
        ElementType::Float16 => TensorData::Float16(read(values, each(&float), |v| {
            finite(v, f16::from_f64, |x| x.is_finite())
        })?),
        ElementType::Float32 => TensorData::Float32(read(values, each(&float), |v| {
            finite(v, |x| x as f32, |x| x.is_finite())
        })?),
        ElementType::Float64 => TensorData::Float64(read(values, each(&float), |v| {
            finite(v, |x| x, |x| x.is_finite())
        })?),
        ElementType::String => TensorData::String(read(values, each("a string"), |v| {
            v.as_str().map(str::to_owned)
        })?),
    })
}

/// `/predict`'s body for a tensors model: `{"instances": [row, ...]}`, each row an object keyed
/// by input name (a ColumnTransformer's columns), each value that row's part of the input in
/// the input's own type: one value where the input holds one per row (`[N]` or `[N, 1]`), else
/// the dimensions after the batch as arrays, flat or nested (an image `[N, 1, 8, 8]`: 64
/// numbers). Each input becomes one tensor of all rows; errors name the row and the input.
/// `/explain`'s options are read as the rows form reads them.
pub fn parse_tensor_rows(
    body: &[u8],
    signature: &Signature,
    max_rows: usize,
) -> Result<(Vec<NamedTensor>, ExplainOptions), InputError> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| InputError::InvalidJson(e.to_string()))?;
    let Value::Object(mut body) = body else {
        return Err(InputError::InvalidJson(
            "the body must be a JSON object".into(),
        ));
    };
    let mut explain = ExplainOptions::default();
    for field in ExplainOptions::FIELDS {
        if let Some(value) = body.remove(field) {
            explain.set(field, value)?;
        }
    }
    if let Some(field) = body.keys().find(|k| *k != "instances") {
        return Err(match field.as_str() {
            "entity_ids" => InputError::InvalidField {
                field: "entity_ids",
                reason:
                    "a model served as named tensors has no feature store lookup: send 'instances'"
                        .into(),
            },
            other => InputError::UnknownField(other.to_owned()),
        });
    }
    let rows = match body.get("instances") {
        None => return Err(InputError::MissingInstances),
        Some(Value::Array(rows)) if rows.is_empty() => return Err(InputError::EmptyInstances),
        Some(Value::Array(rows)) if rows.len() > max_rows => {
            return Err(InputError::TooManyRows { limit: max_rows })
        }
        Some(Value::Array(rows)) => rows,
        Some(_) => {
            return Err(InputError::InvalidField {
                field: "instances",
                reason: "must be a list of rows".into(),
            })
        }
    };
    Ok((tensor_rows(rows, signature)?, explain))
}

/// Rows already read as JSON (`instances` of [`parse_tensor_rows`], lines of a file, a
/// background CSV's cells) as one tensor per input, by the same rules and with the same
/// messages (`instances[r]` is row `r` of `rows`), checked against the signature as a run
/// will check them.
pub fn tensor_rows(rows: &[Value], signature: &Signature) -> Result<Vec<NamedTensor>, InputError> {
    let names = signature.input_names();
    for (r, row) in rows.iter().enumerate() {
        let Value::Object(row) = row else {
            return Err(InputError::InvalidTensor(format!(
                "instances[{r}]: a row must be an object keyed by input name ({}), got {row}",
                names.join(", ")
            )));
        };
        if let Some(unknown) = row.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(InputError::UnknownFeature {
                row: r,
                name: unknown.clone(),
            });
        }
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !row.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            return Err(InputError::MissingFeatures {
                row: r,
                names: missing.join(", "),
            });
        }
    }
    let tensors: Vec<NamedTensor> = signature
        .inputs
        .iter()
        .map(|spec| {
            let name = &spec.name;
            let trailing: Option<Vec<usize>> =
                spec.shape.iter().skip(1).map(|d| d.fixed()).collect();
            let Some(trailing) = trailing else {
                return Err(InputError::InvalidTensor(format!(
                    "input '{name}' has a dynamic dimension after the batch ({}): send it through V2, which takes its shape",
                    spec.shape_text()
                )));
            };
            let per_row: usize = trailing.iter().product();
            let mut leaves = Vec::with_capacity(rows.len() * per_row);
            for (r, row) in rows.iter().enumerate() {
                let before = leaves.len();
                flatten(&row[name], &mut leaves, before + per_row)
                    .and_then(|()| match leaves.len() - before {
                        n if n == per_row => Ok(()),
                        n => Err(format!("{n} values")),
                    })
                    .map_err(|_| {
                        InputError::InvalidTensor(format!(
                            "instances[{r}].{name}: input '{name}' takes {per_row} value{} per row ({} {})",
                            if per_row == 1 { "" } else { "s" },
                            spec.element_type.v2_name(),
                            spec.shape_text()
                        ))
                    })?;
            }
            let place = |i: usize| match per_row {
                1 => format!("instances[{}].{name}", i),
                _ => format!("instances[{}].{name}[{}]", i / per_row, i % per_row),
            };
            let data = json_values(spec.element_type, &leaves, &place)
                .map_err(InputError::InvalidTensor)?;
            let shape = std::iter::once(rows.len()).chain(trailing).collect();
            let tensor = TypedTensor::new(shape, data)
                .map_err(|e| InputError::InvalidTensor(format!("input '{name}': {e}")))?;
            Ok(NamedTensor {
                name: name.clone(),
                tensor,
            })
        })
        .collect::<Result<_, _>>()?;
    // What ONNX Runtime would refuse (a NUL in a string) is the client's error, named here.
    check_inputs(signature, &tensors).map_err(|e| InputError::InvalidTensor(e.to_string()))?;
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(ty: ElementType, json: &str) -> Result<TensorData, String> {
        let values: Vec<Value> = serde_json::from_str(json).unwrap();
        let refs: Vec<&Value> = values.iter().collect();
        json_values(ty, &refs, &|i| format!("data[{i}]"))
    }

    #[test]
    fn whole_numbers_are_integers_however_spelled() {
        assert_eq!(
            elements(
                ElementType::Int64,
                "[3, 3.0, -2e0, 9223372036854775807, -9007199254740992.0]"
            )
            .unwrap(),
            TensorData::Int64(vec![3, 3, -2, i64::MAX, -(1 << 53)])
        );
        assert_eq!(
            elements(ElementType::Uint64, "[18446744073709551615, 7.0]").unwrap(),
            TensorData::Uint64(vec![u64::MAX, 7])
        );
        for (ty, json) in [
            (ElementType::Int64, "[3.5]"),
            // Past 2^53 a float may already be rounded: only exact integers are taken.
            (ElementType::Int64, "[1e16]"),
            (ElementType::Uint64, "[9007199254740994.0]"),
            (ElementType::Uint8, "[256.0]"),
            (ElementType::Uint8, "[-1.0]"),
        ] {
            assert!(elements(ty, json).is_err(), "{ty:?} {json}");
        }
    }
}
