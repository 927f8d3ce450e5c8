//! How every inference route shapes its answer: the JSON body serialized straight to bytes,
//! the model reference it names, the headers saying which version answered and where its time
//! went, and the failure metric a refused request is counted in. `/predict`, `/explain`,
//! `/v2/.../infer` and the gRPC adapter all answer through these, so they cannot drift apart.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::select::VERSION_HEADER;
use crate::model::LoadedModel;
use crate::telemetry::metrics;
use crate::telemetry::timing::InferenceTiming;

/// Which model answered: name, version and the sha256 of the exact file.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelRef<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
}

impl<'a> ModelRef<'a> {
    /// The reference for a loaded model.
    pub fn of(model: &'a LoadedModel) -> ModelRef<'a> {
        ModelRef {
            name: &model.entry.name,
            version: &model.entry.version,
            sha256: &model.entry.onnx.sha256,
        }
    }
}

/// Serializes straight to bytes (no `Value` tree) with a JSON content type.
pub fn json_response<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            ApiError::Inference(format!("cannot serialize the response: {e}")).into_response()
        }
    }
}

/// Stamps an inference answer: the version that answered (`x-ferrum-version`) and where its
/// time went (`x-queue-time`, `x-inference-time`). Every inference route answers through this,
/// so `/predict`, `/explain` and `/v2/.../infer` carry the same headers.
pub fn answered_by(model: &LoadedModel, timing: &InferenceTiming, response: &mut Response) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&model.entry.version) {
        headers.insert(VERSION_HEADER, value);
    }
    timing.write_headers(headers);
}

/// Turns a pipeline failure into the API's error, counting it against `model` in
/// `ferrum_inference_request_failures_total` under its code: every inference route (`/predict`,
/// `/v2`, gRPC) counts the requests that got no predictions the same way.
pub fn counted_against<E: Into<ApiError>>(model: &LoadedModel) -> impl FnOnce(E) -> ApiError + '_ {
    move |error| {
        let error = error.into();
        metrics::record_inference_failure(&model.entry.name, &model.entry.version, error.code());
        error
    }
}
