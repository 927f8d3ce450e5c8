//! `inference.GRPCInferenceService` on top of a [`Backend`]: each RPC is decode → backend →
//! encode. Health and metadata are open; `ModelInfer` checks the `authorization` metadata first,
//! as the HTTP inference routes check the `Authorization` header.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::backend::{Backend, InferCall, ModelMetadata, TensorMetadata};
use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::model_metadata_response::TensorMetadata as ProtoTensorMetadata;
use super::proto::*;
use super::tensors::{decode_inputs, encode_outputs, Encoding};
use crate::input::{parse_weight, INLINE_PARSE_BYTES};

/// The Open Inference Protocol service over `B`.
pub struct OpenInference<B> {
    backend: Arc<B>,
}

impl<B: Backend> OpenInference<B> {
    /// The service answering from `backend`.
    pub fn new(backend: Arc<B>) -> OpenInference<B> {
        OpenInference { backend }
    }
}

/// The protocol's empty version: the one the server picks.
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

impl From<TensorMetadata> for ProtoTensorMetadata {
    fn from(t: TensorMetadata) -> ProtoTensorMetadata {
        ProtoTensorMetadata {
            name: t.name,
            datatype: t.datatype.v2_name().to_owned(),
            shape: t.shape,
        }
    }
}

impl From<ModelMetadata> for ModelMetadataResponse {
    fn from(m: ModelMetadata) -> ModelMetadataResponse {
        ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.to_owned(),
            inputs: m.inputs.into_iter().map(Into::into).collect(),
            outputs: m.outputs.into_iter().map(Into::into).collect(),
        }
    }
}

#[tonic::async_trait]
impl<B: Backend> GrpcInferenceService for OpenInference<B> {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    /// Not ready is an answer here, not an error: what a readiness probe reads.
    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.backend.server_ready().is_ok();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        self.backend.model_ready(&r.name, version(&r.version))?;
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "ferrum-serve".into(),
            version: crate::BUILD_VERSION.into(),
            // binary_tensor_data is the REST protocol's; gRPC carries raw tensors natively.
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let metadata = self.backend.model_metadata(&r.name, version(&r.version))?;
        Ok(Response::new(metadata.into()))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.backend.authorize(authorization)?;
        let r = request.into_inner();
        let encoding = Encoding::of_request(&r.inputs, &r.raw_input_contents);
        let raw_bytes: usize = r.raw_input_contents.iter().map(|b| b.len()).sum();
        let (inputs, raw) = (r.inputs, r.raw_input_contents);
        // The HTTP routes' rule for bodies: large tensors are decoded on the blocking pool, so
        // a burst of them cannot starve health probes.
        let inputs = if parse_weight(0, raw_bytes) <= INLINE_PARSE_BYTES {
            decode_inputs(inputs, &raw)?
        } else {
            tokio::task::spawn_blocking(move || decode_inputs(inputs, &raw))
                .await
                .map_err(|e| Status::internal(format!("decoding task failed: {e}")))??
        };
        let call = InferCall {
            version: version(&r.model_version).map(str::to_owned),
            model: r.model_name,
            inputs,
            outputs: r.outputs.into_iter().map(|o| o.name).collect(),
        };
        let inferred = self.backend.infer(call).await?;
        let (outputs, raw_output_contents) = encode_outputs(inferred.outputs, encoding);
        Ok(Response::new(ModelInferResponse {
            model_name: inferred.model_name,
            model_version: inferred.model_version,
            id: r.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        }))
    }
}
