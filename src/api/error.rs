//! The one error type every route returns, and its one mapping to an HTTP status and a stable
//! machine-readable code. The body is always `{"error": "<what and where>", "code": "<code>"}`.
//! The layers' errors (input, model lookup, feature store, batching, explanations) come in by
//! `From`; their messages reach the client unchanged.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::batching::InferError;
use crate::explain::ExplainError;
use crate::features::FeatureError;
use crate::input::InputError;
use crate::lifecycle::LifecycleError;
use crate::model::LookupError;
use crate::serving::ServingError;

/// Everything a request can fail with. The layers' own errors are wrapped whole
/// ([`InputError`], [`LookupError`], [`FeatureError`]); the rest are the API's own: the HTTP
/// request itself, capacity, explanations and the server's own failures. Messages name the field
/// or row and the problem.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApiError {
    // -- the HTTP request itself
    #[error("unsupported content type {0}: send application/json")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive within {after_ms} ms")]
    BodyTimeout { after_ms: u64 },
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    // -- the layers below, wrapped
    /// The body cannot become model input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The route names a model or version the repository does not have.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Entity ids could not become rows.
    #[error(transparent)]
    Feature(#[from] FeatureError),
    // -- capacity and availability
    #[error("{0}")]
    NotReady(&'static str),
    /// The repository lists the version but it does not serve: its load failed or its file
    /// was refused (`--exit-on-error false`, or a rescan). Not a 404: it exists.
    #[error("model '{name}' version {version} is unavailable ({state}): {reason}")]
    ModelUnavailable {
        name: String,
        version: String,
        state: &'static str,
        reason: String,
    },
    #[error("the server is at capacity ({limit} requests running or queued); retry shortly")]
    Overloaded { limit: usize },
    #[error("the request took longer than the server's limit of {after_ms} ms")]
    Timeout { after_ms: u64 },
    /// All explanation slots computing and the explanation queue full: shed with 503.
    #[error("explanations are at capacity ({running} computing and {queued} waiting: EXPLAIN_CONCURRENCY and EXPLAIN_MAX_QUEUED); retry shortly")]
    ExplainOverloaded { running: usize, queued: usize },
    /// The model's inference queue (direct or batched) is full: shed with 503.
    #[error("the model's inference queue is full (MAX_QUEUE_DEPTH); retry shortly")]
    ModelQueueFull,
    // -- explanations the model cannot give
    /// `/explain`'s `class` is not one of the model's class labels.
    #[error("{0}")]
    UnknownClass(String),
    /// An explanation over `EXPLAIN_MAX_ROWS` or `EXPLAIN_MAX_EVALUATIONS` (named in the
    /// message), refused before any work.
    #[error("{0}")]
    ExplanationTooExpensive(String),
    /// The model cannot give this explanation (a margin of a non-tree classifier, no
    /// background set).
    #[error("{0}")]
    ExplanationUnavailable(String),
    // -- the repository extension (load, unload, index)
    /// A repository request's body or `parameters.config` is invalid (the message names the
    /// field).
    #[error(transparent)]
    RepositoryRequest(#[from] LifecycleError),
    /// `load` / `unload` outside `explicit` mode.
    #[error("{0}")]
    ModelControlDisabled(String),
    /// Versions of the model were refused or failed to load; what was serving still serves.
    #[error("{0}")]
    LoadFailed(String),
    // -- the server's own failure
    #[error("inference failed: {0}")]
    Inference(String),
    /// The handler panicked (a bug): the panic is logged and counted, the client gets this.
    #[error("internal error: the server failed while handling this request")]
    Internal,
}

impl ApiError {
    /// The HTTP status and the stable code clients branch on (codes never change once
    /// released): 4xx for anything the client can fix, 503 while not ready or shedding load,
    /// 500 only for a model that misbehaves on validated input. One mapping per category.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            RouteNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Input(e) if e.is_malformed() => (StatusCode::BAD_REQUEST, e.code()),
            Input(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.code()),
            Lookup(LookupError::ModelNotFound { .. }) => (StatusCode::NOT_FOUND, "model_not_found"),
            Lookup(LookupError::VersionNotFound { .. }) => {
                (StatusCode::NOT_FOUND, "version_not_found")
            }
            Feature(e) => feature_status(e),
            NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ModelUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable"),
            Overloaded { .. } | ExplainOverloaded { .. } | ModelQueueFull => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
            Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "request_timeout"),
            UnknownClass(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_class"),
            ExplanationTooExpensive(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "explanation_too_expensive",
            ),
            ExplanationUnavailable(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "explanation_unavailable")
            }
            // Triton answers every refused load or unload with 400.
            RepositoryRequest(_) => (StatusCode::BAD_REQUEST, "invalid_repository_request"),
            ModelControlDisabled(_) => (StatusCode::FORBIDDEN, "model_control_disabled"),
            LoadFailed(_) => (StatusCode::BAD_REQUEST, "load_failed"),
            Inference(_) => (StatusCode::INTERNAL_SERVER_ERROR, "inference_failed"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The stable code clients branch on; never changes once released.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

/// A feature-store failure's status and code: the client's fault (422/404), the store's
/// (503/504/502).
fn feature_status(e: &FeatureError) -> (StatusCode, &'static str) {
    match e {
        FeatureError::Disabled(_) => (StatusCode::UNPROCESSABLE_ENTITY, "feature_store_disabled"),
        FeatureError::EntityNotFound { .. } => (StatusCode::NOT_FOUND, "entity_not_found"),
        FeatureError::FeatureMissing { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "feature_missing")
        }
        FeatureError::Unavailable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "feature_store_unavailable")
        }
        FeatureError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "feature_store_timeout"),
        FeatureError::StoreError(_) => (StatusCode::BAD_GATEWAY, "feature_store_error"),
    }
}

/// The JSON error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// What went wrong, and where (the field or row).
    pub error: String,
    /// A stable machine-readable code, e.g. `invalid_json`.
    pub code: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Inference(_)) {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            // The rest of the body is never read, so the connection cannot carry another
            // request: tell the client not to reuse it.
            // A request timed out (or whose handler panicked) may not have had its body read
            // either.
            ApiError::PayloadTooLarge { .. }
            | ApiError::BodyTimeout { .. }
            | ApiError::Timeout { .. }
            | ApiError::Internal => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Shed load comes back soon; say when to retry instead of letting clients hammer.
            ApiError::Overloaded { .. }
            | ApiError::ExplainOverloaded { .. }
            | ApiError::ModelQueueFull
            | ApiError::NotReady(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        match e {
            InferError::QueueFull => ApiError::ModelQueueFull,
            InferError::ShuttingDown => ApiError::NotReady("the server is shutting down"),
            InferError::Model(e) => ApiError::Inference(e.to_string()),
            InferError::Lost(what) => ApiError::Inference(what.into()),
        }
    }
}

impl From<ExplainError> for ApiError {
    fn from(e: ExplainError) -> Self {
        match e {
            ExplainError::UnknownClass { .. } => ApiError::UnknownClass(e.to_string()),
            ExplainError::NotAClassifier { field, ref model } => {
                ApiError::Input(InputError::InvalidField {
                    field,
                    reason: format!(
                        "applies to classifiers only; model '{model}' is a regressor and explains its value"
                    ),
                })
            }
            ExplainError::TooExpensive { .. } => ApiError::ExplanationTooExpensive(e.to_string()),
            ExplainError::Unavailable(reason) => ApiError::ExplanationUnavailable(reason),
            ExplainError::Cancelled | ExplainError::Model(_) => ApiError::Inference(e.to_string()),
        }
    }
}

impl From<ServingError> for ApiError {
    fn from(e: ServingError) -> Self {
        match e {
            ServingError::Input(e) => ApiError::Input(e),
            ServingError::Feature(e) => ApiError::Feature(e),
            ServingError::Infer(e) => e.into(),
            ServingError::Explain(e) => e.into(),
            ServingError::ExplainTooManyRows { .. } => {
                ApiError::ExplanationTooExpensive(e.to_string())
            }
            ServingError::ExplainOverloaded { running, queued } => {
                ApiError::ExplainOverloaded { running, queued }
            }
            ServingError::ShuttingDown => ApiError::NotReady("the server is shutting down"),
            ServingError::TaskFailed(what) => ApiError::Inference(what),
            ServingError::ControlDisabled { .. } => ApiError::ModelControlDisabled(e.to_string()),
            ServingError::Lookup(e) => ApiError::Lookup(e),
            ServingError::Rollout(e) => ApiError::RepositoryRequest(e),
            ServingError::LoadFailed { .. } | ServingError::Manifest(_) => {
                ApiError::LoadFailed(e.to_string())
            }
        }
    }
}
