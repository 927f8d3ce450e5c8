//! Tensors between the gRPC messages and [`TypedTensor`], for every datatype the server serves:
//! from `raw_input_contents` (little-endian bytes, through [`TypedTensor::from_le_bytes`]) or the
//! typed `contents` fields, and back to `raw_output_contents` or `contents`.
//!
//! The typed fields are shared between datatypes: INT8/INT16/INT32 travel in `int_contents`,
//! UINT8/UINT16/UINT32 in `uint_contents` (each value range-checked on the way in), BYTES in
//! `bytes_contents` (UTF-8, as the server's string tensors are). FP16 has no typed field and
//! travels as raw bytes only.

use bytes::Bytes;

use super::backend::BackendError;
use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::InferTensorContents;
use crate::model::infer::NamedTensor;
use crate::model::tensor::{ElementType, TensorData, TypedTensor};

/// Decodes a request's inputs: all from `raw` (one entry per input, in order) when it is not
/// empty, otherwise each from its `contents`.
pub fn decode_inputs(
    inputs: Vec<InferInputTensor>,
    raw: &[Bytes],
) -> Result<Vec<NamedTensor>, BackendError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(BackendError::invalid(format!(
            "raw_input_contents has {} entries for {} inputs: send one per input, in input order",
            raw.len(),
            inputs.len()
        )));
    }
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| decode_input(input, raw.get(i)))
        .collect()
}

fn decode_input(input: InferInputTensor, raw: Option<&Bytes>) -> Result<NamedTensor, BackendError> {
    let InferInputTensor {
        name,
        datatype,
        shape,
        contents,
        ..
    } = input;
    let fail = |reason: String| BackendError::invalid(format!("input '{name}': {reason}"));
    let ty = ElementType::from_v2_name(&datatype).ok_or_else(|| {
        let served: Vec<&str> = ElementType::ALL.iter().map(|t| t.v2_name()).collect();
        fail(format!(
            "datatype '{datatype}' is not served (served: {})",
            served.join(", ")
        ))
    })?;
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| fail(format!("shape {shape:?} has a negative dimension")))?;
    let has_contents = contents
        .as_ref()
        .is_some_and(|c| *c != InferTensorContents::default());
    let tensor = match raw {
        Some(_) if has_contents => {
            return Err(fail(
                "has both contents and raw_input_contents: send one or the other".into(),
            ))
        }
        Some(bytes) => TypedTensor::from_le_bytes(ty, dims, bytes),
        None => {
            let data = from_contents(ty, contents.unwrap_or_default()).map_err(&fail)?;
            TypedTensor::new(dims, data)
        }
    }
    .map_err(|e| fail(e.to_string()))?;
    Ok(NamedTensor { name, tensor })
}

/// The elements of `ty` from the typed field that carries it.
fn from_contents(ty: ElementType, c: InferTensorContents) -> Result<TensorData, String> {
    Ok(match ty {
        ElementType::Bool => TensorData::Bool(c.bool_contents),
        ElementType::Int8 => TensorData::Int8(narrow(c.int_contents, ty)?),
        ElementType::Int16 => TensorData::Int16(narrow(c.int_contents, ty)?),
        ElementType::Int32 => TensorData::Int32(c.int_contents),
        ElementType::Int64 => TensorData::Int64(c.int64_contents),
        ElementType::Uint8 => TensorData::Uint8(narrow(c.uint_contents, ty)?),
        ElementType::Uint16 => TensorData::Uint16(narrow(c.uint_contents, ty)?),
        ElementType::Uint32 => TensorData::Uint32(c.uint_contents),
        ElementType::Uint64 => TensorData::Uint64(c.uint64_contents),
        ElementType::Float16 => {
            return Err("FP16 has no contents field: send it in raw_input_contents".into())
        }
        ElementType::Float32 => TensorData::Float32(c.fp32_contents),
        ElementType::Float64 => TensorData::Float64(c.fp64_contents),
        ElementType::String => TensorData::String(
            c.bytes_contents
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|e| format!("element {i}: not UTF-8: {e}"))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Values of a wider shared field narrowed to `ty`'s Rust type, refusing any out of range.
fn narrow<S, T>(values: Vec<S>, ty: ElementType) -> Result<Vec<T>, String>
where
    S: Copy + std::fmt::Display,
    T: TryFrom<S>,
{
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            T::try_from(v)
                .map_err(|_| format!("element {i}: {v} is out of range for {}", ty.v2_name()))
        })
        .collect()
}

/// How a response carries its output tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `raw_output_contents`: what Triton answers and its client reads.
    Raw,
    /// The typed `contents` fields, for clients that sent their inputs that way.
    Contents,
}

impl Encoding {
    /// The encoding a request's answer takes: the one its inputs came in (raw when it has
    /// `raw_input_contents` or no inputs at all).
    pub fn of_request(inputs: &[InferInputTensor], raw: &[Bytes]) -> Encoding {
        if raw.is_empty() && !inputs.is_empty() {
            Encoding::Contents
        } else {
            Encoding::Raw
        }
    }
}

/// Encodes the outputs. A `Contents` answer with an FP16 output is sent raw as a whole,
/// since FP16 has no typed field and a response may not mix the two.
pub fn encode_outputs(
    outputs: Vec<NamedTensor>,
    encoding: Encoding,
) -> (Vec<InferOutputTensor>, Vec<Bytes>) {
    let raw = encoding == Encoding::Raw
        || outputs
            .iter()
            .any(|o| o.tensor.element_type() == ElementType::Float16);
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw_contents = Vec::with_capacity(if raw { outputs.len() } else { 0 });
    for NamedTensor { name, tensor } in outputs {
        let datatype = tensor.element_type().v2_name().to_owned();
        let shape = tensor.shape().iter().map(|&d| d as i64).collect();
        let contents = if raw {
            raw_contents.push(Bytes::from(tensor.to_le_bytes()));
            None
        } else {
            Some(to_contents(tensor.into_data()))
        };
        tensors.push(InferOutputTensor {
            name,
            datatype,
            shape,
            parameters: Default::default(),
            contents,
        });
    }
    (tensors, raw_contents)
}

/// The elements in the typed field of their type (never called for FP16, which has none).
fn to_contents(data: TensorData) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v,
        TensorData::Int8(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int16(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int32(v) => c.int_contents = v,
        TensorData::Int64(v) => c.int64_contents = v,
        TensorData::Uint8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint16(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint32(v) => c.uint_contents = v,
        TensorData::Uint64(v) => c.uint64_contents = v,
        TensorData::Float16(_) => unreachable!("encode_outputs sends FP16 outputs raw"),
        TensorData::Float32(v) => c.fp32_contents = v,
        TensorData::Float64(v) => c.fp64_contents = v,
        TensorData::String(v) => c.bytes_contents = v.into_iter().map(String::into_bytes).collect(),
    }
    c
}
