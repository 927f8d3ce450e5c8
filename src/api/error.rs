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

/// Everything a request can fail with, in a handful of categories: the HTTP request itself, a
/// serving call's failure ([`ServingError`], wrapped whole: the layers' own errors and the
/// pipeline's), the API's own availability checks, and the server's own failures. Messages
/// name the field or row and the problem.
#[derive(Debug, thiserror::Error)]
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
    // -- a serving call's failure: the message is the layer's own, and a server fault's says
    // so (`inference failed: ...`)
    #[error("{}{}", fault_prefix(.0), .0)]
    Serving(#[from] ServingError),
    // -- availability and capacity, decided here
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
    // -- the server's own failure
    #[error("inference failed: {0}")]
    Inference(String),
    /// The handler panicked (a bug): the panic is logged and counted, the client gets this.
    #[error("internal error: the server failed while handling this request")]
    Internal,
}

/// The code of a model or the server failing on validated input (500, logged).
const INFERENCE_FAILED: &str = "inference_failed";
/// The codes of load shed and of not (yet, or any more) serving: 503 with `Retry-After`.
const OVERLOADED: &str = "overloaded";
const NOT_READY: &str = "not_ready";

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
            Serving(e) => serving_status(e),
            NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, NOT_READY),
            ModelUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable"),
            Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, OVERLOADED),
            Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "request_timeout"),
            Inference(_) => (StatusCode::INTERNAL_SERVER_ERROR, INFERENCE_FAILED),
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

/// For the tests: two errors are the same when a client sees the same, code and message (a
/// wrapped [`ServingError`] is not comparable itself).
#[cfg(test)]
impl PartialEq for ApiError {
    fn eq(&self, other: &ApiError) -> bool {
        self.code() == other.code() && self.to_string() == other.to_string()
    }
}

/// `inference failed: ` before a server fault's message: the client learns it was not their
/// input.
fn fault_prefix(e: &ServingError) -> &'static str {
    if serving_status(e).1 == INFERENCE_FAILED {
        "inference failed: "
    } else {
        ""
    }
}

/// A serving call's failure's status and code, by the layer that failed and how.
fn serving_status(e: &ServingError) -> (StatusCode, &'static str) {
    let unprocessable = |code| (StatusCode::UNPROCESSABLE_ENTITY, code);
    let server_fault = (StatusCode::INTERNAL_SERVER_ERROR, INFERENCE_FAILED);
    match e {
        ServingError::Input(e) if e.is_malformed() => (StatusCode::BAD_REQUEST, e.code()),
        ServingError::Input(e) => unprocessable(e.code()),
        ServingError::Lookup(LookupError::ModelNotFound { .. }) => {
            (StatusCode::NOT_FOUND, "model_not_found")
        }
        ServingError::Lookup(LookupError::VersionNotFound { .. }) => {
            (StatusCode::NOT_FOUND, "version_not_found")
        }
        ServingError::Feature(e) => feature_status(e),
        ServingError::Infer(InferError::QueueFull) | ServingError::ExplainOverloaded { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, OVERLOADED)
        }
        ServingError::Infer(InferError::ShuttingDown) | ServingError::ShuttingDown => {
            (StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
        }
        ServingError::Infer(InferError::Model(_) | InferError::Lost(_))
        | ServingError::TaskFailed(_)
        | ServingError::Explain(ExplainError::Cancelled | ExplainError::Model(_)) => server_fault,
        ServingError::Explain(ExplainError::UnknownClass { .. }) => unprocessable("unknown_class"),
        // A field the request may not set for this model: the input's own code.
        ServingError::Explain(ExplainError::NotAClassifier { .. }) => {
            unprocessable("invalid_field")
        }
        ServingError::Explain(ExplainError::TooExpensive { .. })
        | ServingError::ExplainTooManyRows { .. } => unprocessable("explanation_too_expensive"),
        ServingError::Explain(ExplainError::Unavailable(_)) => {
            unprocessable("explanation_unavailable")
        }
        // Triton answers every refused load or unload with 400.
        ServingError::Rollout(_) => (StatusCode::BAD_REQUEST, "invalid_repository_request"),
        ServingError::ControlDisabled { .. } => (StatusCode::FORBIDDEN, "model_control_disabled"),
        ServingError::LoadFailed { .. } | ServingError::Manifest(_) => {
            (StatusCode::BAD_REQUEST, "load_failed")
        }
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
        let (status, code) = self.status_and_code();
        if code == INFERENCE_FAILED {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            code,
        };
        let mut response = (status, axum::Json(body)).into_response();
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
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // Shed load comes back soon; say when to retry instead of letting clients hammer.
            _ if code == OVERLOADED || code == NOT_READY => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The layers' errors that the API meets outside a serving call (a route's model lookup, a
/// body read, a repository request) come in as a serving call's would.
macro_rules! from_layer_error {
    ($($layer:ty),*) => {$(
        impl From<$layer> for ApiError {
            fn from(e: $layer) -> Self {
                ApiError::Serving(e.into())
            }
        }
    )*};
}
from_layer_error!(InputError, LookupError, LifecycleError);
