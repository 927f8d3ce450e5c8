//! V2 responses: which outputs a model has (for metadata and for `outputs` selection), and the
//! inference response, as JSON or as a JSON header followed by binary tensors.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::HEADER_LENGTH;
use crate::api::ApiError;
use crate::input::{InputError, RequestedOutput};
use crate::model::tensor::ElementType;
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

/// One output to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected<'m> {
    pub role: Role,
    pub name: &'m str,
    /// As binary data after the JSON header, rather than inline.
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
    let available = outputs_of(model);
    if outputs.is_empty() {
        return Ok(available
            .into_iter()
            .map(|(role, name)| Selected {
                role,
                name,
                binary: binary_data_output,
            })
            .collect());
    }
    outputs
        .iter()
        .map(|wanted| {
            let (role, name) = available
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
                role,
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
        }
    }
}

/// Numbers widened exactly to f64, so a JSON client sees the float32 the model computed.
impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Values::I64(v) => v.serialize(s),
            Values::F32(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&f64::from(*x))?;
                }
                seq.end()
            }
        }
    }
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
    /// `INT64` (class indices) or `FP32`.
    datatype: &'static str,
    shape: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BinaryParameters>)]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f64>>)]
    data: Option<Values<'a>>,
}

/// Where a binary output sits in the binary section.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = V2BinaryParameters)]
pub struct BinaryParameters {
    binary_data_size: usize,
}

/// The inference response: JSON, or (when any output is binary) the JSON header followed by
/// the binary outputs in header order, with `Inference-Header-Content-Length`.
pub fn infer_response(
    model: &LoadedModel,
    id: Option<&str>,
    output: &ModelOutput,
    selection: &[Selected],
) -> Response {
    let rows = output.len() as i64;
    let values: Vec<Values> = selection
        .iter()
        .map(|s| Values::of(output, s.role))
        .collect();
    let header = Header {
        model_name: &model.entry.name,
        model_version: &model.entry.version,
        id,
        outputs: selection
            .iter()
            .zip(&values)
            .map(|(s, &v)| OutputTensor {
                name: s.name,
                datatype: s.role.datatype(),
                shape: shape_of(model, s.role, rows),
                parameters: s.binary.then(|| BinaryParameters {
                    binary_data_size: v.byte_len(),
                }),
                data: (!s.binary).then_some(v),
            })
            .collect(),
    };
    let binary_len: usize = selection
        .iter()
        .zip(&values)
        .filter(|(s, _)| s.binary)
        .map(|(_, v)| v.byte_len())
        .sum();
    let mut body = Vec::with_capacity(
        256 + binary_len
            + if binary_len == 0 {
                rows as usize * 48
            } else {
                0
            },
    );
    if let Err(e) = serde_json::to_writer(&mut body, &header) {
        return ApiError::Inference(format!("cannot serialize the response: {e}")).into_response();
    }
    if !selection.iter().any(|s| s.binary) {
        return ([(CONTENT_TYPE, "application/json")], body).into_response();
    }
    let header_len = body.len();
    for (s, v) in selection.iter().zip(&values) {
        if s.binary {
            v.write_le(&mut body);
        }
    }
    let mut response = ([(CONTENT_TYPE, "application/octet-stream")], body).into_response();
    response
        .headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(header_len));
    response
}
