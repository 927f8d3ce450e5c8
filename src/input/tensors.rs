//! V2 inference requests: the JSON header (tensor data inline, flat or nested, row-major) and,
//! with Triton's binary tensor data extension, the raw little-endian tensors after it. Tensor
//! data goes straight into the model's `f32` input buffer: no `Value` tree, no number boxed.
//!
//! Framing: with an `Inference-Header-Content-Length: N` header the first `N` bytes are the JSON
//! header and the rest is the binary section, consumed in input order by every input that has a
//! `binary_data_size` parameter (and no `data`). The sizes must add up to the section exactly.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{InputError, Key, Parked};
use crate::model::{LoadedModel, Rows};

/// What the model needs to know about its single input, and the request limits.
pub struct InputSpec<'m> {
    /// The input tensor's name (the manifest's `onnx.input`).
    pub name: &'m str,
    /// Feature names, in column order (for messages).
    pub feature_names: &'m [String],
    /// Most rows a request may carry.
    pub max_rows: usize,
}

impl<'m> InputSpec<'m> {
    /// The spec of `model`'s input.
    pub fn of(model: &'m LoadedModel, max_rows: usize) -> InputSpec<'m> {
        InputSpec {
            name: &model.entry.onnx.input,
            feature_names: &model.entry.feature_names,
            max_rows,
        }
    }

    fn width(&self) -> usize {
        self.feature_names.len()
    }
}

/// A parsed, validated V2 inference request.
#[derive(Debug, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed in the response.
    pub id: Option<String>,
    /// The input tensor as model rows.
    pub rows: Rows,
    /// The outputs asked for, in order; empty means all of them.
    pub outputs: Vec<RequestedOutput>,
    /// `parameters.binary_data_output`: outputs default to binary data.
    pub binary_data_output: bool,
}

/// One entry of the request's `outputs`.
#[derive(Debug, PartialEq, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: OutputParameters,
}

/// The output parameters this server acts on; others are ignored.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct OutputParameters {
    /// Return this output as binary data (overrides `binary_data_output`).
    pub binary_data: Option<bool>,
}

/// The value of `Inference-Header-Content-Length`, checked against the body.
pub fn header_length(value: Option<&str>, body_len: usize) -> Result<Option<usize>, InputError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let n: usize = value.trim().parse().map_err(|_| {
        InputError::InvalidBinaryData(format!(
            "Inference-Header-Content-Length must be a byte count, got '{value}'"
        ))
    })?;
    if n > body_len {
        return Err(InputError::InvalidBinaryData(format!(
            "Inference-Header-Content-Length is {n} but the body has only {body_len} bytes"
        )));
    }
    Ok(Some(n))
}

/// Parses a body whose JSON header is its first `header_len` bytes (all of it when `None`).
pub fn parse_infer(
    body: &[u8],
    header_len: Option<usize>,
    spec: &InputSpec,
) -> Result<InferRequest, InputError> {
    let split = header_len.unwrap_or(body.len()).min(body.len());
    let (json, binary) = body.split_at(split);
    let context = Context {
        spec,
        parked: Parked::default(),
    };
    let raw = context.parked.parse(json, RequestSeed(&context), |e| {
        InputError::InvalidJson(e.to_string())
    })?;
    raw.validate(binary, spec)
}

struct Context<'s, 'm> {
    spec: &'s InputSpec<'m>,
    parked: Parked,
}

impl Context<'_, '_> {
    /// Parks `error` and returns the placeholder serde error that unwinds the parse.
    fn fail<E: de::Error>(&self, error: InputError) -> E {
        self.parked.fail(error)
    }
}

/// A JSON number as an `i64`, if it is one (`3`, `3.0`, `3e0`): JSON has one number type, and
/// JSON Schema's `integer` takes all three. A float-spelled one only up to 2^53 in magnitude,
/// where an f64 still holds every integer.
pub(crate) fn integral(n: &serde_json::Number) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        (f.fract() == 0.0 && f.abs() <= EXACT).then_some(f as i64)
    })
}

fn tensor_error(input: &str, reason: impl fmt::Display) -> InputError {
    InputError::InvalidTensor(format!("input '{input}': {reason}"))
}

/// The request as written, before its parts are checked against each other and the model.
#[derive(Default)]
struct RawRequest {
    id: Option<String>,
    inputs: Vec<RawInput>,
    outputs: Option<Vec<RequestedOutput>>,
    binary_data_output: bool,
}

#[derive(Default)]
struct RawInput {
    name: Option<String>,
    shape: Option<Vec<i64>>,
    datatype: Option<String>,
    binary_data_size: Option<u64>,
    data: Option<Vec<f32>>,
}

impl InputSpec<'_> {
    /// The error for a request that does not carry exactly one input.
    pub fn not_one_input(&self) -> InputError {
        InputError::InvalidTensor(format!(
            "the model takes exactly one input, '{}' (FP32 [-1, {}])",
            self.name,
            self.width()
        ))
    }

    /// Checks a V2 input's name, datatype and shape against the model's one input and the row
    /// limit, and gives its rows. The words every V2 protocol answers with: the REST routes
    /// here, and the gRPC service ([`crate::grpc`]), so a client sees the same message on both.
    pub fn check(
        &self,
        name: &str,
        datatype: Option<&str>,
        shape: Option<&[i64]>,
    ) -> Result<usize, InputError> {
        if name != self.name {
            return Err(InputError::InvalidTensor(format!(
                "unknown input '{name}': the model's input is '{}'",
                self.name
            )));
        }
        let fail = |reason: String| Err(tensor_error(self.name, reason));
        match datatype {
            Some("FP32") => {}
            Some(other) => return fail(format!("datatype must be FP32, got {other}")),
            None => return fail("no datatype (FP32)".into()),
        }
        let width = self.width();
        let n_rows = match shape {
            Some(&[rows, cols]) if rows >= 1 && cols == width as i64 => rows as usize,
            Some(shape) => return fail(format!("shape {shape:?} is not [rows >= 1, {width}]")),
            None => return fail("no shape".into()),
        };
        if n_rows > self.max_rows {
            return Err(InputError::TooManyTensorRows {
                rows: n_rows,
                limit: self.max_rows,
            });
        }
        Ok(n_rows)
    }

    /// Refuses a value that is not a finite number (NaN, infinity), naming its row and feature:
    /// binary tensor data can carry any bit pattern, and no model output means anything for one.
    pub fn check_finite(&self, data: &[f32]) -> Result<(), InputError> {
        let width = self.width();
        match data.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(tensor_error(
                self.name,
                format!(
                    "row {}, feature '{}': {} is not a finite number",
                    i / width,
                    self.feature_names[i % width],
                    data[i]
                ),
            )),
            None => Ok(()),
        }
    }
}

impl RawRequest {
    fn validate(self, mut binary: &[u8], spec: &InputSpec) -> Result<InferRequest, InputError> {
        let mut inputs = self.inputs.into_iter();
        let (Some(input), None) = (inputs.next(), inputs.next()) else {
            return Err(spec.not_one_input());
        };
        let n_rows = spec.check(
            input.name.as_deref().unwrap_or_default(),
            input.datatype.as_deref(),
            input.shape.as_deref(),
        )?;
        let fail = |reason: String| Err(tensor_error(spec.name, reason));
        let width = spec.width();
        let n_values = n_rows * width;
        let data = match (input.data, input.binary_data_size) {
            (Some(_), Some(_)) => {
                return fail("has both 'data' and a binary_data_size parameter".into())
            }
            (None, None) => return fail("has no 'data' and no binary_data_size parameter".into()),
            (Some(data), None) => {
                if data.len() != n_values {
                    return fail(format!(
                        "shape [{n_rows}, {width}] needs {n_values} values, 'data' has {}",
                        data.len()
                    ));
                }
                data
            }
            (None, Some(size)) => {
                if size != (n_values * 4) as u64 {
                    return Err(InputError::InvalidBinaryData(format!(
                        "input '{}': binary_data_size is {size}, but FP32 [{n_rows}, {width}] is {} bytes",
                        spec.name,
                        n_values * 4
                    )));
                }
                if binary.len() < size as usize {
                    return Err(InputError::InvalidBinaryData(format!(
                        "input '{}' needs {size} bytes, the binary section has {}",
                        spec.name,
                        binary.len()
                    )));
                }
                let (bytes, rest) = binary.split_at(size as usize);
                binary = rest;
                let data: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                spec.check_finite(&data)?;
                data
            }
        };
        if !binary.is_empty() {
            return Err(InputError::InvalidBinaryData(format!(
                "{} bytes after the JSON header are not claimed by any input's binary_data_size",
                binary.len()
            )));
        }
        Ok(InferRequest {
            id: self.id,
            rows: Rows::new(data, width),
            outputs: self.outputs.unwrap_or_default(),
            binary_data_output: self.binary_data_output,
        })
    }
}

/// The top-level object.
struct RequestSeed<'c, 's, 'm>(&'c Context<'s, 'm>);

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_, '_> {
    type Value = RawRequest;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawRequest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_, '_> {
    type Value = RawRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an inference request object with 'inputs'")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let context = self.0;
        let mut request = RawRequest::default();
        let mut have_inputs = false;
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_ref() {
                "id" => match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(id) => request.id = Some(id),
                    _ => {
                        return Err(
                            context.fail(InputError::InvalidTensor("'id' must be a string".into()))
                        )
                    }
                },
                "parameters" => {
                    let parameters: RequestParameters = map.next_value()?;
                    request.binary_data_output = parameters.binary_data_output.unwrap_or(false);
                }
                "inputs" => {
                    have_inputs = true;
                    request.inputs = map.next_value_seed(InputsSeed(context))?;
                }
                "outputs" => request.outputs = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !have_inputs {
            return Err(context.fail(InputError::InvalidTensor(
                "the request has no 'inputs'".into(),
            )));
        }
        Ok(request)
    }
}

/// Request-level parameters this server acts on; others are accepted and ignored.
#[derive(Deserialize)]
struct RequestParameters {
    binary_data_output: Option<bool>,
}

/// `inputs`: a list of input tensors.
struct InputsSeed<'c, 's, 'm>(&'c Context<'s, 'm>);

impl<'de> DeserializeSeed<'de> for InputsSeed<'_, '_, '_> {
    type Value = Vec<RawInput>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<RawInput>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_, '_, '_> {
    type Value = Vec<RawInput>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of input tensors")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<RawInput>, A::Error> {
        let mut inputs = Vec::with_capacity(1);
        while let Some(input) = seq.next_element_seed(InputSeed(self.0))? {
            inputs.push(input);
            if inputs.len() > 16 {
                return Err(self.0.fail(InputError::InvalidTensor(
                    "too many inputs: the model takes one".into(),
                )));
            }
        }
        Ok(inputs)
    }
}

/// One input tensor object.
struct InputSeed<'c, 's, 'm>(&'c Context<'s, 'm>);

impl<'de> DeserializeSeed<'de> for InputSeed<'_, '_, '_> {
    type Value = RawInput;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawInput, D::Error> {
        d.deserialize_map(self)
    }
}

/// Input parameters this server acts on.
#[derive(Deserialize)]
struct InputParameters {
    binary_data_size: Option<u64>,
}

impl<'de> Visitor<'de> for InputSeed<'_, '_, '_> {
    type Value = RawInput;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an input tensor object (name, shape, datatype, data)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawInput, A::Error> {
        let context = self.0;
        let spec = context.spec;
        let mut input = RawInput::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_ref() {
                "name" => input.name = Some(map.next_value()?),
                "shape" => {
                    // JSON has one number type: `2.0` is as much an integer as `2` (and JSON
                    // Schema agrees), so integral values are taken whatever their spelling.
                    let dims: Vec<serde_json::Number> = map.next_value()?;
                    let dims: Option<Vec<i64>> = dims.iter().map(integral).collect();
                    match dims {
                        Some(dims) => input.shape = Some(dims),
                        None => {
                            return Err(
                                context.fail(tensor_error(spec.name, "'shape' must hold integers"))
                            )
                        }
                    }
                }
                "datatype" => input.datatype = Some(map.next_value()?),
                "parameters" => {
                    let parameters: InputParameters = map.next_value()?;
                    input.binary_data_size = parameters.binary_data_size;
                }
                "data" => {
                    let limit = spec.max_rows * spec.width();
                    let mut data = Vec::with_capacity(spec.width());
                    map.next_value_seed(DataSeed {
                        context,
                        data: &mut data,
                        limit,
                    })?;
                    input.data = Some(data);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(input)
    }
}

/// Tensor data: numbers, or arrays of them nested to any depth, appended in row-major order.
struct DataSeed<'c, 's, 'm, 'd> {
    context: &'c Context<'s, 'm>,
    data: &'d mut Vec<f32>,
    limit: usize,
}

impl DataSeed<'_, '_, '_, '_> {
    fn push<E: de::Error>(self, v: f64) -> Result<(), E> {
        let spec = self.context.spec;
        let i = self.data.len();
        if i == self.limit {
            return Err(self.context.fail(InputError::TooManyTensorRows {
                rows: i / spec.width() + 1,
                limit: spec.max_rows,
            }));
        }
        let narrowed = v as f32;
        if !narrowed.is_finite() {
            return Err(self.context.fail(tensor_error(
                spec.name,
                format!(
                    "data[{i}] (row {}, feature '{}'): {v} is not a finite float32 number",
                    i / spec.width(),
                    spec.feature_names[i % spec.width()]
                ),
            )));
        }
        self.data.push(narrowed);
        Ok(())
    }

    fn not_a_number<E: de::Error>(self, got: &str) -> E {
        let i = self.data.len();
        self.context.fail(tensor_error(
            self.context.spec.name,
            format!("data[{i}]: expected a number, got {got}"),
        ))
    }
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor data: numbers, flat or nested")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let DataSeed {
            context,
            data,
            limit,
        } = self;
        while seq
            .next_element_seed(DataSeed {
                context,
                data: &mut *data,
                limit,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(v as f64)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_a_number("a string"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_a_number("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_a_number("null"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_a_number("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(names: &[String]) -> InputSpec<'_> {
        InputSpec {
            name: "input",
            feature_names: names,
            max_rows: 3,
        }
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn parse(body: &str) -> Result<InferRequest, InputError> {
        let names = names();
        parse_infer(body.as_bytes(), None, &spec(&names))
    }

    #[test]
    fn integral_shapes_are_integers_however_spelled() {
        let parse = |shape: &str| {
            let body = format!(
                r#"{{"inputs": [{{"name": "input", "shape": {shape}, "datatype": "FP32", "data": [1, 2]}}]}}"#
            );
            parse(&body).map(|r| r.rows.n_rows)
        };
        assert_eq!(parse("[1, 2]").unwrap(), 1);
        assert_eq!(parse("[1.0, 2e0]").unwrap(), 1);
        assert_eq!(parse("[1.5, 2]").unwrap_err().code(), "invalid_tensor");
        assert_eq!(parse("[-3.0, 2]").unwrap_err().code(), "invalid_tensor");
    }

    #[test]
    fn flat_and_nested_data_are_row_major() {
        for data in [
            "[1, 2, 3, 4]",
            "[[1, 2], [3, 4]]",
            "[[[1], [2]], [[3], [4]]]",
        ] {
            let body = format!(
                r#"{{"id": "r1", "inputs": [{{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": {data}}}],
                "outputs": [{{"name": "label", "parameters": {{"binary_data": true}}}}], "parameters": {{"x": [1]}}}}"#
            );
            let r = parse(&body).unwrap();
            assert_eq!(r.rows.data, vec![1.0, 2.0, 3.0, 4.0]);
            assert_eq!((r.rows.n_rows, r.rows.n_cols), (2, 2));
            assert_eq!(r.id.as_deref(), Some("r1"));
            assert_eq!(r.outputs[0].name, "label");
            assert_eq!(r.outputs[0].parameters.binary_data, Some(true));
            assert!(!r.binary_data_output);
        }
    }

    #[test]
    fn binary_inputs_follow_the_json_header() {
        let header = r#"{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}], "parameters": {"binary_data_output": true}}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.25f32).to_le_bytes());
        let names = names();
        let r = parse_infer(&body, Some(header.len()), &spec(&names)).unwrap();
        assert_eq!(r.rows.data, vec![1.5, -2.25]);
        assert!(r.binary_data_output);

        let mut extra = body.clone();
        extra.push(0);
        let e = parse_infer(&extra, Some(header.len()), &spec(&names)).unwrap_err();
        assert_eq!(e.code(), "invalid_binary_data");
        let e =
            parse_infer(&body[..body.len() - 1], Some(header.len()), &spec(&names)).unwrap_err();
        assert_eq!(e.code(), "invalid_binary_data");

        let mut nan = header.as_bytes().to_vec();
        nan.extend_from_slice(&f32::NAN.to_le_bytes());
        nan.extend_from_slice(&1f32.to_le_bytes());
        let e = parse_infer(&nan, Some(header.len()), &spec(&names)).unwrap_err();
        assert_eq!(e.code(), "invalid_tensor");
        assert!(e.to_string().contains("feature 'a'"), "{e}");
    }

    #[test]
    fn header_length_is_checked() {
        assert_eq!(header_length(None, 10).unwrap(), None);
        assert_eq!(header_length(Some("4"), 10).unwrap(), Some(4));
        assert_eq!(
            header_length(Some("11"), 10).unwrap_err().code(),
            "invalid_binary_data"
        );
        assert_eq!(
            header_length(Some("x"), 10).unwrap_err().code(),
            "invalid_binary_data"
        );
    }

    #[test]
    fn problems_are_named() {
        // code | a fragment of the message | the body
        let cases = r#"
            invalid_tensor | unknown input 'x' | {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
            invalid_tensor | datatype must be FP32 | {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}
            invalid_tensor | is not [rows >= 1, 2] | {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
            invalid_tensor | needs 4 values, 'data' has 3 | {"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}
            invalid_tensor | data[1]: expected a number, got a string | {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, "2"]}]}
            invalid_tensor | feature 'b' | {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 1e39]}]}
            too_many_rows | 4 rows exceed the limit of 3 | {"inputs": [{"name": "input", "shape": [4, 2], "datatype": "FP32", "data": [1, 2]}]}
            too_many_rows | limit of 3 | {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1,2,3,4,5,6,7]}]}
            invalid_tensor | no 'data' | {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32"}]}
            invalid_tensor | exactly one input | {"inputs": []}
            invalid_tensor | 'id' must be a string | {"id": 5, "inputs": []}
            invalid_tensor | no 'inputs' | {}
            invalid_json |  | {"inputs": [}
            invalid_json |  | [1]
        "#;
        for case in cases.trim().lines() {
            let mut fields = case.trim().splitn(3, " | ");
            let mut field = || fields.next().unwrap().trim();
            let (code, fragment, body) = (field(), field(), field());
            let e = parse(body).unwrap_err();
            assert_eq!(e.code(), code, "{body}: {e}");
            assert!(e.to_string().contains(fragment), "{body}: {e}");
        }
    }
}
