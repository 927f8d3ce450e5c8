//! The one error type every route returns, and its one mapping to an HTTP status and a stable
//! machine-readable code. The body is always `{"error": "<what and where>", "code": "<code>"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::explain::ExplainError;
use crate::features::FeatureError;
use crate::model::{InferenceError, LookupError};

/// Everything a request can fail with. Messages name the field or row and the problem.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApiError {
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("unsupported content type {0}: send application/json")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive within {after_ms} ms")]
    BodyTimeout { after_ms: u64 },
    #[error("unknown field '{0}' (expected: instances or entity_ids, and for /explain class, output, top_k)")]
    UnknownField(String),
    #[error("field '{field}': {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("the body has neither 'instances' nor 'entity_ids'")]
    MissingInstances,
    #[error("'instances' is empty: send at least one row")]
    EmptyInstances,
    #[error("'instances' has more than {limit} rows (the server's MAX_REQUEST_ROWS)")]
    TooManyRows { limit: usize },
    #[error("instances[{row}]: a row must be an object keyed by feature name or an array of {expected} numbers, got {got}")]
    InvalidRow {
        row: usize,
        expected: usize,
        got: &'static str,
    },
    #[error("instances[{row}]: unknown feature '{name}'")]
    UnknownFeature { row: usize, name: String },
    #[error("instances[{row}]: feature '{name}' given twice")]
    DuplicateFeature { row: usize, name: String },
    #[error("instances[{row}]: missing features: {names}")]
    MissingFeatures { row: usize, names: String },
    #[error("instances[{row}]: expected {expected} values in model feature order, got {got}")]
    WrongRowLength {
        row: usize,
        expected: usize,
        got: usize,
    },
    #[error("instances[{row}].{feature}: expected a number, got {got}")]
    NonNumeric {
        row: usize,
        feature: String,
        got: &'static str,
    },
    #[error("instances[{row}].{feature}: {value} is not a finite float32 number")]
    NonFinite {
        row: usize,
        feature: String,
        value: f64,
    },
    #[error("{0}")]
    ModelNotFound(String),
    #[error("{0}")]
    VersionNotFound(String),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotReady(&'static str),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("the server is at capacity ({limit} requests running or queued); retry shortly")]
    Overloaded { limit: usize },
    #[error("the request took longer than the server's limit of {after_ms} ms")]
    Timeout { after_ms: u64 },
    #[error("inference failed: {0}")]
    Inference(String),
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
    /// All explanation slots computing and the explanation queue full: shed with 503.
    #[error("explanations are at capacity ({running} computing and {queued} waiting: EXPLAIN_CONCURRENCY and EXPLAIN_MAX_QUEUED); retry shortly")]
    ExplainOverloaded { running: usize, queued: usize },
    /// `entity_ids` names an entity the feature store does not hold.
    #[error("{0}")]
    EntityNotFound(String),
    /// The store has no usable value for a feature (NULL, not found, too old) and the
    /// manifest documents no default.
    #[error("{0}")]
    FeatureMissing(String),
    /// `entity_ids` sent, but lookups are off (`FEATURE_STORE_URI=none`, or no
    /// `feature_store` block for the model).
    #[error("{0}")]
    FeatureStoreDisabled(String),
    /// The feature store cannot be reached.
    #[error("{0}")]
    FeatureStoreUnavailable(String),
    /// The feature store did not answer in time.
    #[error("{0}")]
    FeatureStoreTimeout(String),
    /// The feature store answered with an error or something unusable.
    #[error("{0}")]
    FeatureStoreError(String),
    /// The model's inference queue (direct or batched) is full: shed with 503.
    #[error("the model's inference queue is full (MAX_QUEUE_DEPTH); retry shortly")]
    ModelQueueFull,
    #[error("{0}")]
    InvalidTensor(String),
    #[error("binary tensor data: {0}")]
    InvalidBinaryData(String),
    #[error("{0}")]
    UnknownOutput(String),
    #[error("{rows} rows exceed the limit of {limit} (the server's MAX_REQUEST_ROWS)")]
    TooManyTensorRows { rows: usize, limit: usize },
    /// The handler panicked (a bug): the panic is logged and counted, the client gets this.
    #[error("internal error: the server failed while handling this request")]
    Internal,
}

impl ApiError {
    /// The HTTP status: 4xx for anything the client can fix, 503 while not ready, 500 only for
    /// a model that misbehaves on validated input.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidJson(_) => StatusCode::BAD_REQUEST,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            UnknownField(_)
            | InvalidField { .. }
            | MissingInstances
            | EmptyInstances
            | TooManyRows { .. }
            | InvalidRow { .. }
            | UnknownFeature { .. }
            | DuplicateFeature { .. }
            | MissingFeatures { .. }
            | WrongRowLength { .. }
            | NonNumeric { .. }
            | NonFinite { .. }
            | UnknownClass(_)
            | ExplanationTooExpensive(_)
            | ExplanationUnavailable(_)
            | FeatureMissing(_)
            | FeatureStoreDisabled(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EntityNotFound(_) => StatusCode::NOT_FOUND,
            FeatureStoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            FeatureStoreTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            FeatureStoreError(_) => StatusCode::BAD_GATEWAY,
            ModelNotFound(_) | VersionNotFound(_) | RouteNotFound(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            NotReady(_) | Overloaded { .. } | ExplainOverloaded { .. } | ModelQueueFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Inference(_) | Internal => StatusCode::INTERNAL_SERVER_ERROR,
            InvalidBinaryData(_) => StatusCode::BAD_REQUEST,
            InvalidTensor(_) | UnknownOutput(_) | TooManyTensorRows { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    }

    /// The stable code clients branch on; never changes once released.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            UnsupportedMediaType(_) => "unsupported_media_type",
            PayloadTooLarge { .. } => "payload_too_large",
            BodyTimeout { .. } => "body_timeout",
            UnknownField(_) => "unknown_field",
            InvalidField { .. } => "invalid_field",
            MissingInstances => "missing_instances",
            EmptyInstances => "empty_instances",
            TooManyRows { .. } => "too_many_rows",
            InvalidRow { .. } => "invalid_row",
            UnknownFeature { .. } => "unknown_feature",
            DuplicateFeature { .. } => "duplicate_feature",
            MissingFeatures { .. } => "missing_feature",
            WrongRowLength { .. } => "wrong_row_length",
            NonNumeric { .. } => "non_numeric_value",
            NonFinite { .. } => "non_finite_value",
            ModelNotFound(_) => "model_not_found",
            VersionNotFound(_) => "version_not_found",
            RouteNotFound(_) => "not_found",
            MethodNotAllowed(_) => "method_not_allowed",
            NotReady(_) => "not_ready",
            Unauthorized(_) => "unauthorized",
            Overloaded { .. } | ExplainOverloaded { .. } => "overloaded",
            Timeout { .. } => "request_timeout",
            Inference(_) => "inference_failed",
            UnknownClass(_) => "unknown_class",
            ExplanationTooExpensive(_) => "explanation_too_expensive",
            ExplanationUnavailable(_) => "explanation_unavailable",
            EntityNotFound(_) => "entity_not_found",
            FeatureMissing(_) => "feature_missing",
            FeatureStoreDisabled(_) => "feature_store_disabled",
            FeatureStoreUnavailable(_) => "feature_store_unavailable",
            FeatureStoreTimeout(_) => "feature_store_timeout",
            FeatureStoreError(_) => "feature_store_error",
            ModelQueueFull => "overloaded",
            InvalidTensor(_) => "invalid_tensor",
            InvalidBinaryData(_) => "invalid_binary_data",
            UnknownOutput(_) => "unknown_output",
            TooManyTensorRows { .. } => "too_many_rows",
            Internal => "internal_error",
        }
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

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::ModelNotFound { .. } => ApiError::ModelNotFound(e.to_string()),
            LookupError::VersionNotFound { .. } => ApiError::VersionNotFound(e.to_string()),
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        ApiError::Inference(e.to_string())
    }
}

impl From<ExplainError> for ApiError {
    fn from(e: ExplainError) -> Self {
        match e {
            ExplainError::UnknownClass { .. } => ApiError::UnknownClass(e.to_string()),
            ExplainError::NotAClassifier { field, ref model } => ApiError::InvalidField {
                field,
                reason: format!(
                    "applies to classifiers only; model '{model}' is a regressor and explains its value"
                ),
            },
            ExplainError::TooExpensive { .. } => ApiError::ExplanationTooExpensive(e.to_string()),
            ExplainError::Unavailable(reason) => ApiError::ExplanationUnavailable(reason),
            ExplainError::Cancelled | ExplainError::Model(_) => ApiError::Inference(e.to_string()),
        }
    }
}

impl From<FeatureError> for ApiError {
    fn from(e: FeatureError) -> Self {
        let message = e.to_string();
        match e {
            FeatureError::Disabled(_) => ApiError::FeatureStoreDisabled(message),
            FeatureError::EntityNotFound { .. } => ApiError::EntityNotFound(message),
            FeatureError::FeatureMissing { .. } => ApiError::FeatureMissing(message),
            FeatureError::Unavailable { .. } => ApiError::FeatureStoreUnavailable(message),
            FeatureError::Timeout { .. } => ApiError::FeatureStoreTimeout(message),
            FeatureError::StoreError(_) => ApiError::FeatureStoreError(message),
        }
    }
}
