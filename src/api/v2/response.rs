//! V2 responses: which outputs a model has (for metadata and for `outputs` selection), and the
//! inference response, as JSON or as a JSON header followed by binary tensors. A rows-form
//! model answers with its roles' tensors ([`Role`]); a tensors model with its own outputs, of
//! any datatype, exactly as ONNX Runtime gave them.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::HEADER_LENGTH;
use crate::api::ApiError;
use crate::input::{InputError, RequestedOutput};
use crate::model::infer::NamedTensor;
use crate::model::signature::{Dim, TensorSpec};
use crate::model::tensor::{ElementType, TensorData, TypedTensor};
use crate::model::{LoadedModel, ModelOutput, Task};

/// What an output tensor carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Classifiers: the class index per row (INT64 `[n]`), into the model's `class_labels`.
    Label,
    /// Classifiers: class probabilities (FP32 `[n, classes]`).
    Probabilities,
    /// Regressors: the predicted value (FP32 `[n, 1]`).
    Value,
}

impl Role {
    /// The element type.
    pub fn element_type(self) -> ElementType {
        match self {
            Role::Label => ElementType::Int64,
            Role::Probabilities | Role::Value => ElementType::Float32,
        }
    }

    /// The V2 datatype.
    pub fn datatype(self) -> &'static str {
        self.element_type().v2_name()
    }

    fn manifest_role(self) -> &'static str {
        match self {
            Role::Label => "label",
            Role::Probabilities => "probabilities",
            Role::Value => "value",
        }
    }
}

/// A model's outputs in model order, as `(role, tensor name)`.
pub fn outputs_of(model: &LoadedModel) -> Vec<(Role, &str)> {
    let roles: &[Role] = match model.entry.task {
        Task::Classification => &[Role::Label, Role::Probabilities],
        Task::Regression => &[Role::Value],
        Task::Tensors => &[],
    };
    roles
        .iter()
        .map(|&role| {
            let name = model
                .entry
                .onnx
                .outputs
                .get(role.manifest_role())
                .map(String::as_str)
                .unwrap_or(role.manifest_role());
            (role, name)
        })
        .collect()
}

/// The shape of `role`'s tensor for `rows` rows (`-1` for the batch dimension in metadata).
pub fn shape_of(model: &LoadedModel, role: Role, rows: i64) -> Vec<i64> {
    match role {
        Role::Label => vec![rows],
        Role::Probabilities => vec![rows, model.entry.class_labels.len() as i64],
        Role::Value => vec![rows, 1],
    }
}

/// One input or output as model metadata lists it (`-1` for a dimension chosen per call).
pub struct TensorInfo<'m> {
    pub name: &'m str,
    pub datatype: ElementType,
    pub shape: Vec<i64>,
}

/// A model's inputs and outputs for V2 metadata (REST and gRPC): a rows-form model's one FP32
/// input and its roles' outputs; a tensors model's as its signature declares them (a ZipMap
/// as the FP32 probabilities it is served as).
pub fn tensors_of(model: &LoadedModel) -> (Vec<TensorInfo<'_>>, Vec<TensorInfo<'_>>) {
    if model.is_tensors() {
        let info = |t: &'_ TensorSpec| -> (Vec<i64>, ElementType) {
            (t.shape.iter().map(Dim::v2).collect(), t.element_type)
        };
        let signature = &model.signature;
        let inputs = signature
            .inputs
            .iter()
            .map(|t| {
                let (shape, datatype) = info(t);
                TensorInfo {
                    name: &t.name,
                    datatype,
                    shape,
                }
            })
            .collect();
        let outputs = signature
            .outputs
            .iter()
            .map(|o| {
                let (shape, datatype) = info(&o.served());
                TensorInfo {
                    name: o.name(),
                    datatype,
                    shape,
                }
            })
            .collect();
        return (inputs, outputs);
    }
    let entry = &model.entry;
    let inputs = vec![TensorInfo {
        name: &entry.onnx.input,
        datatype: ElementType::Float32,
        shape: vec![-1, entry.feature_names.len() as i64],
    }];
    let outputs = outputs_of(model)
        .into_iter()
        .map(|(role, name)| TensorInfo {
            name,
            datatype: role.element_type(),
            shape: shape_of(model, role, -1),
        })
        .collect();
    (inputs, outputs)
}

/// One output to return: which one (`key`: its role, or a tensors model's output index), its
/// name, and whether it goes as binary data after the JSON header rather than inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected<'m, K = Role> {
    pub key: K,
    pub name: &'m str,
    pub binary: bool,
}

/// The outputs a request asks for (all of them when it names none), checked before inference;
/// `binary_data_output` is the request's default encoding. Shared by the REST routes and the
/// gRPC service ([`crate::grpc`]), which answer an unknown output with the same words.
pub fn select<'m>(
    model: &'m LoadedModel,
    outputs: &[RequestedOutput],
    binary_data_output: bool,
) -> Result<Vec<Selected<'m>>, ApiError> {
    pick(outputs_of(model), outputs, binary_data_output)
}

/// [`select`] for a tensors model: its outputs by index in the signature's order.
pub fn select_tensors<'m>(
    model: &'m LoadedModel,
    outputs: &[RequestedOutput],
    binary_data_output: bool,
) -> Result<Vec<Selected<'m, usize>>, ApiError> {
    let available = model
        .signature
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| (i, o.name()))
        .collect();
    pick(available, outputs, binary_data_output)
}

fn pick<'m, K: Copy>(
    available: Vec<(K, &'m str)>,
    outputs: &[RequestedOutput],
    binary_data_output: bool,
) -> Result<Vec<Selected<'m, K>>, ApiError> {
    if outputs.is_empty() {
        return Ok(available
            .into_iter()
            .map(|(key, name)| Selected {
                key,
                name,
                binary: binary_data_output,
            })
            .collect());
    }
    outputs
        .iter()
        .map(|wanted| {
            let (key, name) = available
                .iter()
                .copied()
                .find(|(_, name)| *name == wanted.name)
                .ok_or_else(|| {
                    let names: Vec<&str> = available.iter().map(|(_, n)| *n).collect();
                    ApiError::from(InputError::UnknownOutput(format!(
                        "unknown output '{}'; the model's outputs are: {}",
                        wanted.name,
                        names.join(", ")
                    )))
                })?;
            Ok(Selected {
                key,
                name,
                binary: wanted.parameters.binary_data.unwrap_or(binary_data_output),
            })
        })
        .collect()
}

/// A tensor's values, borrowed from the model output.
#[derive(Clone, Copy)]
enum Values<'a> {
    I64(&'a [i64]),
    F32(&'a [f32]),
    /// A tensors model's output, of any element type.
    Typed(&'a TypedTensor),
}

impl Values<'_> {
    fn of(output: &ModelOutput, role: Role) -> Values<'_> {
        match (output, role) {
            (ModelOutput::Classification { labels, .. }, Role::Label) => Values::I64(labels),
            (ModelOutput::Classification { probabilities, .. }, _) => Values::F32(probabilities),
            (ModelOutput::Regression { values }, _) => Values::F32(values),
        }
    }

    fn byte_len(self) -> usize {
        match self {
            Values::I64(v) => v.len() * 8,
            Values::F32(v) => v.len() * 4,
            Values::Typed(t) => match t.data() {
                TensorData::String(v) => v.iter().map(|s| 4 + s.len()).sum(),
                data => data.len() * t.element_type().byte_width().unwrap_or_default(),
            },
        }
    }

    fn write_le(self, out: &mut Vec<u8>) {
        match self {
            Values::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Values::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Values::Typed(t) => out.extend_from_slice(&t.to_le_bytes()),
        }
    }
}

/// Numbers widened exactly to f64, so a JSON client sees the float the model computed; other
/// element types as themselves (integers exact, booleans, strings).
impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Values::I64(v) => v.serialize(s),
            Values::F32(v) => widened(s, v, |x| f64::from(*x)),
            Values::Typed(t) => match t.data() {
                TensorData::Float16(v) => widened(s, v, |x| x.to_f64()),
                TensorData::Float32(v) => widened(s, v, |x| f64::from(*x)),
                TensorData::Float64(v) => v.serialize(s),
                TensorData::Bool(v) => v.serialize(s),
                TensorData::Uint8(v) => v.serialize(s),
                TensorData::Uint16(v) => v.serialize(s),
                TensorData::Uint32(v) => v.serialize(s),
                TensorData::Uint64(v) => v.serialize(s),
                TensorData::Int8(v) => v.serialize(s),
                TensorData::Int16(v) => v.serialize(s),
                TensorData::Int32(v) => v.serialize(s),
                TensorData::Int64(v) => v.serialize(s),
                TensorData::String(v) => v.serialize(s),
            },
        }
    }
}

/// A float list as exact f64s.
fn widened<S: Serializer, T>(
    s: S,
    values: &[T],
    widen: impl Fn(&T) -> f64,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(values.len()))?;
    for x in values {
        seq.serialize_element(&widen(x))?;
    }
    seq.end()
}

/// A V2 inference response (with binary outputs: its JSON header).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = V2InferResponse)]
pub struct Header<'a> {
    model_name: &'a str,
    model_version: &'a str,
    /// The request's `id`, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[schema(value_type = Vec<OutputTensor>)]
    outputs: Vec<OutputTensor<'a>>,
}

/// One output tensor: `data` inline (row-major), or `parameters.binary_data_size` bytes in the
/// binary section.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = V2OutputTensor)]
pub struct OutputTensor<'a> {
    name: &'a str,
    /// `INT64` (class indices) or `FP32` for a rows-form model; a tensors model's own.
    datatype: &'static str,
    shape: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BinaryParameters>)]
    parameters: Option<BinaryParameters>,
    /// The values, row-major; `null` where a float is not finite (NaN or ±infinity, which
    /// JSON cannot write).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Option<f64>>>)]
    data: Option<Values<'a>>,
}

/// Where a binary output sits in the binary section.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = V2BinaryParameters)]
pub struct BinaryParameters {
    binary_data_size: usize,
}

/// The inference response of a rows-form model: its selected roles' tensors.
pub fn infer_response(
    model: &LoadedModel,
    id: Option<&str>,
    output: &ModelOutput,
    selection: &[Selected],
) -> Response {
    let rows = output.len() as i64;
    let tensors = selection
        .iter()
        .map(|s| {
            let values = Values::of(output, s.key);
            (
                s.name,
                s.key.datatype(),
                shape_of(model, s.key, rows),
                values,
                s.binary,
            )
        })
        .collect();
    respond(model, id, tensors, rows as usize * 48)
}

/// The inference response of a tensors model: the selected outputs as ONNX Runtime gave them.
pub fn tensors_response(
    model: &LoadedModel,
    id: Option<&str>,
    outputs: &[NamedTensor],
    selection: &[Selected<usize>],
) -> Response {
    let tensors = selection
        .iter()
        .map(|s| {
            let tensor = &outputs[s.key].tensor;
            let shape = tensor.shape().iter().map(|&d| d as i64).collect();
            let values = Values::Typed(tensor);
            (
                s.name,
                tensor.element_type().v2_name(),
                shape,
                values,
                s.binary,
            )
        })
        .collect();
    respond(model, id, tensors, 256)
}

/// One output as it goes out: name, datatype, shape, values, and whether binary.
type Outgoing<'a> = (&'a str, &'static str, Vec<i64>, Values<'a>, bool);

/// JSON, or (when any output is binary) the JSON header followed by the binary outputs in
/// header order, with `Inference-Header-Content-Length`. `json_hint` is room to reserve for
/// inline data.
fn respond(
    model: &LoadedModel,
    id: Option<&str>,
    tensors: Vec<Outgoing>,
    json_hint: usize,
) -> Response {
    let binary_len: usize = tensors.iter().filter(|t| t.4).map(|t| t.3.byte_len()).sum();
    let header = Header {
        model_name: &model.entry.name,
        model_version: &model.entry.version,
        id,
        outputs: tensors
            .iter()
            .map(
                |&(name, datatype, ref shape, values, binary)| OutputTensor {
                    name,
                    datatype,
                    shape: shape.clone(),
                    parameters: binary.then(|| BinaryParameters {
                        binary_data_size: values.byte_len(),
                    }),
                    data: (!binary).then_some(values),
                },
            )
            .collect(),
    };
    let mut body =
        Vec::with_capacity(256 + binary_len + if binary_len == 0 { json_hint } else { 0 });
    if let Err(e) = serde_json::to_writer(&mut body, &header) {
        return ApiError::Inference(format!("cannot serialize the response: {e}")).into_response();
    }
    if !tensors.iter().any(|t| t.4) {
        return ([(CONTENT_TYPE, "application/json")], body).into_response();
    }
    let header_len = body.len();
    for (_, _, _, values, binary) in &tensors {
        if *binary {
            values.write_le(&mut body);
        }
    }
    let mut response = ([(CONTENT_TYPE, "application/octet-stream")], body).into_response();
    response
        .headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(header_len));
    response
}
