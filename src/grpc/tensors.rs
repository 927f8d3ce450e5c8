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

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            parameters: Default::default(),
            contents: None,
        }
    }

    fn with_contents(mut tensor: InferInputTensor, c: InferTensorContents) -> InferInputTensor {
        tensor.contents = Some(c);
        tensor
    }

    /// One tensor of every served type, with its extreme values.
    fn every_type() -> Vec<TensorData> {
        vec![
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, u8::MAX]),
            TensorData::Uint16(vec![1, u16::MAX]),
            TensorData::Uint32(vec![7, u32::MAX]),
            TensorData::Uint64(vec![9, u64::MAX]),
            TensorData::Int8(vec![i8::MIN, i8::MAX]),
            TensorData::Int16(vec![i16::MIN, i16::MAX]),
            TensorData::Int32(vec![i32::MIN, i32::MAX]),
            TensorData::Int64(vec![i64::MIN, i64::MAX]),
            TensorData::Float16(vec![f16::from_f32(0.5), f16::MAX]),
            TensorData::Float32(vec![0.1, f32::MIN_POSITIVE]),
            TensorData::Float64(vec![0.1, -0.0]),
            TensorData::String(vec!["é".into(), String::new()]),
        ]
    }

    fn named(data: TensorData) -> NamedTensor {
        NamedTensor {
            name: format!("t_{}", data.element_type().v2_name()),
            tensor: TypedTensor::new(vec![2, 1], data).unwrap(),
        }
    }

    /// The request tensor a client would send for `t`'s outputs, from the response's parts.
    fn as_request(output: &InferOutputTensor) -> InferInputTensor {
        InferInputTensor {
            name: output.name.clone(),
            datatype: output.datatype.clone(),
            shape: output.shape.clone(),
            parameters: Default::default(),
            contents: output.contents.clone(),
        }
    }

    #[test]
    fn every_type_round_trips_through_raw_contents() {
        let tensors: Vec<NamedTensor> = every_type().into_iter().map(named).collect();
        let (outputs, raw) = encode_outputs(tensors.clone(), Encoding::Raw);
        assert_eq!(raw.len(), tensors.len());
        assert!(outputs.iter().all(|o| o.contents.is_none()));
        assert_eq!(outputs[5].datatype, "INT8");
        assert_eq!(outputs[5].shape, [2, 1]);
        let requests: Vec<InferInputTensor> = outputs.iter().map(as_request).collect();
        assert_eq!(decode_inputs(requests, &raw).unwrap(), tensors);
    }

    #[test]
    fn every_type_but_fp16_round_trips_through_typed_contents() {
        let tensors: Vec<NamedTensor> = every_type()
            .into_iter()
            .filter(|d| d.element_type() != ElementType::Float16)
            .map(named)
            .collect();
        let (outputs, raw) = encode_outputs(tensors.clone(), Encoding::Contents);
        assert!(raw.is_empty());
        let int8 = outputs.iter().find(|o| o.datatype == "INT8").unwrap();
        assert_eq!(int8.contents.as_ref().unwrap().int_contents, [-128, 127]);
        let strings = outputs.iter().find(|o| o.datatype == "BYTES").unwrap();
        assert_eq!(
            strings.contents.as_ref().unwrap().bytes_contents,
            [Vec::from("é"), Vec::new()]
        );
        let requests: Vec<InferInputTensor> = outputs.iter().map(as_request).collect();
        assert_eq!(decode_inputs(requests, &[]).unwrap(), tensors);
    }

    #[test]
    fn an_fp16_output_makes_the_whole_answer_raw() {
        let tensors = vec![
            named(TensorData::Float32(vec![1.0, 2.0])),
            named(TensorData::Float16(vec![f16::ONE, f16::ZERO])),
        ];
        let (outputs, raw) = encode_outputs(tensors, Encoding::Contents);
        assert!(outputs.iter().all(|o| o.contents.is_none()));
        assert_eq!(raw[0].as_ref(), [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);
        assert_eq!(raw[1].as_ref(), [0x00, 0x3c, 0x00, 0x00]);
    }

    #[test]
    fn the_answer_takes_the_encoding_of_the_request() {
        let one = [input("x", "FP32", &[1])];
        assert_eq!(Encoding::of_request(&one, &[]), Encoding::Contents);
        let bytes = [Bytes::from_static(&[0; 4])];
        assert_eq!(Encoding::of_request(&one, &bytes), Encoding::Raw);
        assert_eq!(Encoding::of_request(&[], &[]), Encoding::Raw);
    }

    #[test]
    fn raw_bytes_are_checked_against_datatype_and_shape() {
        let err = |tensor: InferInputTensor, bytes: &'static [u8]| {
            decode_inputs(vec![tensor], &[Bytes::from_static(bytes)])
                .unwrap_err()
                .message
        };
        assert_eq!(
            err(input("x", "FP64", &[1, 2]), &[0; 12]),
            "input 'x': double data of shape [1, 2] takes 16 bytes, got 12"
        );
        assert_eq!(
            err(input("b", "BOOL", &[2]), &[1, 7]),
            "input 'b': element 1: byte 7 is not a bool (0 or 1)"
        );
        assert_eq!(
            err(input("s", "BYTES", &[1]), &[9, 0, 0, 0, b'a']),
            "input 's': element 0: length 9 runs past the end of the data"
        );
        assert_eq!(
            err(input("x", "BF16", &[1]), &[0; 2]),
            "input 'x': datatype 'BF16' is not served (served: BOOL, UINT8, UINT16, UINT32, \
             UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES)"
        );
        assert_eq!(
            err(input("x", "FP32", &[-1, 2]), &[0; 8]),
            "input 'x': shape [-1, 2] has a negative dimension"
        );
    }

    #[test]
    fn raw_contents_must_match_the_inputs_one_to_one() {
        let inputs = vec![input("a", "INT64", &[1]), input("b", "INT64", &[1])];
        let err = decode_inputs(inputs, &[Bytes::from_static(&[0; 8])]).unwrap_err();
        assert_eq!(
            err.message,
            "raw_input_contents has 1 entries for 2 inputs: send one per input, in input order"
        );
        let both = with_contents(
            input("a", "INT64", &[1]),
            InferTensorContents {
                int64_contents: vec![3],
                ..Default::default()
            },
        );
        let err = decode_inputs(vec![both], &[Bytes::from_static(&[0; 8])]).unwrap_err();
        assert_eq!(
            err.message,
            "input 'a': has both contents and raw_input_contents: send one or the other"
        );
    }

    #[test]
    fn typed_contents_are_range_checked_and_counted() {
        let err = |tensor: InferInputTensor| decode_inputs(vec![tensor], &[]).unwrap_err().message;
        let ints = |v: Vec<i32>| InferTensorContents {
            int_contents: v,
            ..Default::default()
        };
        assert_eq!(
            err(with_contents(input("x", "INT8", &[2]), ints(vec![1, 200]))),
            "input 'x': element 1: 200 is out of range for INT8"
        );
        let uints = InferTensorContents {
            uint_contents: vec![70_000],
            ..Default::default()
        };
        assert_eq!(
            err(with_contents(input("x", "UINT16", &[1]), uints)),
            "input 'x': element 0: 70000 is out of range for UINT16"
        );
        assert_eq!(
            err(with_contents(
                input("x", "INT32", &[2, 2]),
                ints(vec![1, 2, 3])
            )),
            "input 'x': shape [2, 2] holds 4 elements, got 3"
        );
        assert_eq!(
            err(input("x", "FP32", &[1, 3])),
            "input 'x': shape [1, 3] holds 3 elements, got 0"
        );
        assert_eq!(
            err(with_contents(
                input("h", "FP16", &[1]),
                InferTensorContents::default()
            )),
            "input 'h': FP16 has no contents field: send it in raw_input_contents"
        );
        let bad_utf8 = InferTensorContents {
            bytes_contents: vec![vec![0xff]],
            ..Default::default()
        };
        let message = err(with_contents(input("s", "BYTES", &[1]), bad_utf8));
        assert!(
            message.starts_with("input 's': element 0: not UTF-8"),
            "{message}"
        );
    }
}
