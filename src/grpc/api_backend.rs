//! The gRPC [`Backend`] over the HTTP API's state and the serving pipeline ([`AppState`],
//! [`pipeline::infer`]): one repository, one batcher, one set of limits, one API key and one
//! admission control for both protocols, and the V2 REST routes' checks
//! ([`InputSpec::check`], [`select`]) so a bad request gets the same words on both.
//!
//! This is the only gRPC file that knows the HTTP side. A rows-form model takes one FP32
//! `[rows, features]` input and gives the roles of [`Role`]: the typed tensors the service
//! decodes are narrowed to that here. A tensors model takes and gives them as they are.

use axum::http::StatusCode;

use super::backend::{
    Backend, BackendError, ErrorKind, InferCall, Inferred, ModelMetadata, TensorMetadata,
};
use crate::api::v2::response::{
    select, select_tensors, shape_of, tensors_of, Role, Selected, TensorInfo,
};
use crate::api::{counted_against, ApiError, AppState, ModelSelector};
use crate::input::{InputSpec, RequestedOutput};
use crate::model::infer::NamedTensor;
use crate::model::tensor::{TensorData, TypedTensor};
use crate::model::{LoadedModel, ModelOutput, Rows};
use crate::serving::live::Routed;
use crate::serving::pipeline;

/// The HTTP API's models and pipeline, served over gRPC.
pub struct ApiBackend {
    state: AppState,
}

impl ApiBackend {
    /// A backend sharing `state` with the HTTP router.
    pub fn new(state: AppState) -> ApiBackend {
        ApiBackend { state }
    }

    /// The version that answers a call, as the V2 REST route picks it (the split's pick for
    /// an unversioned call; there is no routing key over gRPC yet).
    fn lookup(&self, name: &str, version: Option<&str>) -> Result<Routed, ApiError> {
        let selector = ModelSelector {
            name: Some(name.to_owned()),
            version: version.map(str::to_owned),
            routing_key: None,
        };
        self.state.route(&selector, &[])
    }

    /// The V2 inference route's steps on typed tensors: check the input, select the outputs,
    /// run the shared inference step; a failure is counted as the HTTP routes count it.
    async fn run(&self, call: InferCall) -> Result<Inferred, ApiError> {
        let routed = self.lookup(&call.model, call.version.as_deref())?;
        self.run_on(&routed, call)
            .await
            .map_err(counted_against(&routed.model))
    }

    async fn run_on(&self, routed: &Routed, call: InferCall) -> Result<Inferred, ApiError> {
        let model = &routed.model;
        let requested: Vec<RequestedOutput> = call
            .outputs
            .into_iter()
            .map(|name| RequestedOutput {
                name,
                parameters: Default::default(),
            })
            .collect();
        if model.is_tensors() {
            let selection = select_tensors(model, &requested, true)?;
            let max_rows = self.state.limits.max_request_rows;
            let outputs = pipeline::infer_tensors(model, call.inputs, max_rows)
                .await?
                .output;
            return Ok(Inferred {
                model_name: model.entry.name.clone(),
                model_version: model.entry.version.clone(),
                outputs: take_selected(outputs, &selection),
            });
        }
        let spec = InputSpec::of(model, self.state.limits.max_request_rows);
        let mut inputs = call.inputs.into_iter();
        let (Some(input), None) = (inputs.next(), inputs.next()) else {
            return Err(spec.not_one_input().into());
        };
        let shape: Vec<i64> = input.tensor.shape().iter().map(|&d| d as i64).collect();
        spec.check(
            &input.name,
            Some(input.tensor.element_type().v2_name()),
            Some(&shape),
        )?;
        let TensorData::Float32(data) = input.tensor.into_data() else {
            unreachable!("InputSpec::check accepts FP32 only");
        };
        spec.check_finite(&data)?;
        let selection = select(model, &requested, true)?;
        let rows = Rows::new(data, model.n_features());
        let inferred = pipeline::infer(model, rows, routed.shadow.is_some()).await?;
        let output = inferred.output;
        let outputs = selection
            .iter()
            .map(|s| {
                Ok(NamedTensor {
                    name: s.name.to_owned(),
                    tensor: output_tensor(model, &output, s.key)?,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        routed.copy_to_shadow(inferred.rows, &output);
        Ok(Inferred {
            model_name: model.entry.name.clone(),
            model_version: model.entry.version.clone(),
            outputs,
        })
    }
}

/// The selected outputs of a tensors model's answer, moved out of it (one selected twice is
/// copied the second time).
fn take_selected(outputs: Vec<NamedTensor>, selection: &[Selected<usize>]) -> Vec<NamedTensor> {
    let mut slots: Vec<Option<NamedTensor>> = outputs.into_iter().map(Some).collect();
    let mut taken: Vec<NamedTensor> = Vec::with_capacity(selection.len());
    for s in selection {
        let output = match slots[s.key].take() {
            Some(output) => output,
            None => taken
                .iter()
                .find(|t| t.name == s.name)
                .cloned()
                .expect("an output taken earlier"),
        };
        taken.push(output);
    }
    taken
}

/// One output role of a model's answer as a typed tensor.
fn output_tensor(
    model: &LoadedModel,
    output: &ModelOutput,
    role: Role,
) -> Result<TypedTensor, ApiError> {
    let shape = shape_of(model, role, output.len() as i64)
        .into_iter()
        .map(|d| d as usize)
        .collect();
    let data = match (output, role) {
        (ModelOutput::Classification { labels, .. }, Role::Label) => {
            TensorData::Int64(labels.clone())
        }
        (ModelOutput::Classification { probabilities, .. }, _) => {
            TensorData::Float32(probabilities.clone())
        }
        (ModelOutput::Regression { values }, _) => TensorData::Float32(values.clone()),
    };
    TypedTensor::new(shape, data).map_err(|e| ApiError::Inference(e.to_string()))
}

impl From<ApiError> for BackendError {
    /// The gRPC class of an API error, by its HTTP status; the message is the HTTP `error`.
    fn from(e: ApiError) -> BackendError {
        let kind = match e.status() {
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Unavailable,
            StatusCode::UNAUTHORIZED => ErrorKind::Unauthenticated,
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => {
                ErrorKind::DeadlineExceeded
            }
            status if status.is_client_error() => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        };
        if kind == ErrorKind::Internal {
            tracing::error!(error = %e, "gRPC call failed");
        }
        BackendError::new(kind, e.to_string())
    }
}

impl Backend for ApiBackend {
    fn server_ready(&self) -> Result<(), BackendError> {
        self.state.ready()?;
        Ok(())
    }

    /// What `GET /v2/models/{name}` says, without its REST-only `parameters`.
    fn model_metadata(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, BackendError> {
        let repository = self.state.repository()?;
        let model = &self.state.served_in(&repository, Some(name), version)?;
        let versions = repository.models[&model.entry.name].names();
        let (inputs, outputs) = tensors_of(model);
        let listed = |tensors: Vec<TensorInfo>| {
            tensors
                .into_iter()
                .map(|t| TensorMetadata {
                    name: t.name.to_owned(),
                    datatype: t.datatype,
                    shape: t.shape,
                })
                .collect()
        };
        Ok(ModelMetadata {
            name: model.entry.name.clone(),
            versions,
            platform: "onnxruntime_onnx",
            inputs: listed(inputs),
            outputs: listed(outputs),
        })
    }

    fn model_ready(&self, name: &str, version: Option<&str>) -> Result<(), BackendError> {
        self.lookup(name, version)?;
        Ok(())
    }

    fn authorize(&self, authorization: Option<&str>) -> Result<(), BackendError> {
        match &self.state.api_key {
            Some(key) => Ok(key.check(authorization)?),
            None => Ok(()),
        }
    }

    async fn infer(&self, call: InferCall) -> Result<Inferred, BackendError> {
        let ticket = self.state.admission.enter();
        Ok(ticket.run(self.run(call)).await??)
    }
}
