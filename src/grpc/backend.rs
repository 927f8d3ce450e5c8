//! The seam between the gRPC protocol and whatever serves the models: [`Backend`], in the
//! protocol's terms (named typed tensors, model names and versions, readiness) and nothing of
//! the HTTP handlers. The service ([`super::service`]) speaks gRPC on one side and this trait on
//! the other, so the pipeline behind it (today [`super::api_backend`]) can be swapped without
//! touching the protocol code, as TGI's router does with its `Backend`.

use std::future::Future;

use crate::model::infer::NamedTensor;
use crate::model::tensor::ElementType;

/// What serves models to the gRPC service.
pub trait Backend: Send + Sync + 'static {
    /// Ok once every model is loaded and warmed up and the server is not draining; otherwise
    /// why not (an [`ErrorKind::Unavailable`] error).
    fn server_ready(&self) -> Result<(), BackendError>;

    /// A model version's inputs and outputs; `version` `None` is the one the server picks.
    fn model_metadata(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, BackendError>;

    /// Ok when the model version can serve now.
    fn model_ready(&self, name: &str, version: Option<&str>) -> Result<(), BackendError>;

    /// Checks the `authorization` a call carries (`Bearer <key>`) where an API key is set.
    fn authorize(&self, authorization: Option<&str>) -> Result<(), BackendError>;

    /// Runs one inference call, with the same admission control, limits and metrics as every
    /// other protocol's.
    fn infer(&self, call: InferCall)
        -> impl Future<Output = Result<Inferred, BackendError>> + Send;
}

/// A model version's signature as the protocol describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    pub name: String,
    /// Every version served, in order.
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// One input or output: `-1` for a dimension chosen per call.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: ElementType,
    pub shape: Vec<i64>,
}

/// One inference call, decoded from the protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct InferCall {
    pub model: String,
    /// `None`: the version the server picks.
    pub version: Option<String>,
    pub inputs: Vec<NamedTensor>,
    /// The outputs asked for, in order; empty means every output.
    pub outputs: Vec<String>,
}

/// The answer to an [`InferCall`]: the outputs asked for, in the order asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub model_name: String,
    pub model_version: String,
    pub outputs: Vec<NamedTensor>,
}

/// Why a call failed, in the classes gRPC statuses distinguish; `message` is the words the
/// HTTP API answers with for the same failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The class of a [`BackendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's request is wrong (HTTP 4xx other than those below).
    InvalidArgument,
    /// No such model or version (HTTP 404).
    NotFound,
    /// Not ready, draining or overloaded: retry later (HTTP 503).
    Unavailable,
    /// Missing or wrong API key (HTTP 401).
    Unauthenticated,
    /// The call took longer than the server's limit (HTTP 504).
    DeadlineExceeded,
    /// The server failed (HTTP 500).
    Internal,
}

impl BackendError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            kind,
            message: message.into(),
        }
    }

    /// A request the caller must fix.
    pub fn invalid(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::InvalidArgument, message)
    }
}

impl From<BackendError> for tonic::Status {
    fn from(e: BackendError) -> tonic::Status {
        let code = match e.kind {
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorKind::Internal => tonic::Code::Internal,
        };
        tonic::Status::new(code, e.message)
    }
}
