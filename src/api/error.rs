//! The one error type every route returns, and its one mapping to an HTTP status and a stable
//! machine-readable code. The body is always `{"error": "<what and where>", "code": "<code>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the server is at capacity for this model (its request queue is full); retry after {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    #[error("{0}")]
    InvalidTensor(String),
    #[error("binary tensor data: {0}")]
    InvalidBinaryData(String),
    #[error("{0}")]
    UnknownOutput(String),
    #[error("{rows} rows exceed the limit of {limit} (the server's MAX_REQUEST_ROWS)")]
    TooManyTensorRows { rows: usize, limit: usize },
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
            | NonFinite { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ModelNotFound(_) | VersionNotFound(_) | RouteNotFound(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            NotReady(_) | Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Inference(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Inference(_) => "inference_failed",
            Overloaded { .. } => "overloaded",
            InvalidTensor(_) => "invalid_tensor",
            InvalidBinaryData(_) => "invalid_binary_data",
            UnknownOutput(_) => "unknown_output",
            TooManyTensorRows { .. } => "too_many_rows",
        }
    }
}

/// The JSON error body.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: String,
    pub code: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error()
            && !matches!(self, ApiError::NotReady(_) | ApiError::Overloaded { .. })
        {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if matches!(self, ApiError::PayloadTooLarge { .. }) {
            // The rest of the body is never read, so the connection cannot carry another
            // request: tell the client not to reuse it.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if let ApiError::Overloaded { retry_after_secs } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
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
