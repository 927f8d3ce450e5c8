//! `POST /predict` and its per-model forms.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::body::JsonBody;
use super::error::ApiError;
use super::request::{parse_request, InferenceRequest, RequestInput};
use super::AppState;
use crate::features::{rows_for, TraceContext};
use crate::model::{LoadedModel, ModelOutput, Predictions, Rows};

/// `POST /predict`: the manifest's default model, its highest version.
pub async fn predict_default(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    predict(&state, None, None, &headers, body).await
}

/// `POST /models/{name}/predict`: the named model, its highest version.
pub async fn predict_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    predict(&state, Some(&name), None, &headers, body).await
}

/// `POST /models/{name}/versions/{version}/predict`: one exact version.
pub async fn predict_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    predict(&state, Some(&name), Some(&version), &headers, body).await
}

async fn predict(
    state: &AppState,
    name: Option<&str>,
    version: Option<&str>,
    headers: &HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let model = state.repository()?.get(name, version)?.clone();
    let request = parse_off_runtime(body, model.clone(), state.limits.max_request_rows).await?;
    if let Some(field) = request.explain.first_given() {
        return Err(ApiError::InvalidField {
            field,
            reason: "applies to /explain only".into(),
        });
    }
    let entity_ids = match &request.input {
        RequestInput::EntityIds(ids) => Some(ids.clone()),
        RequestInput::Rows(_) => None,
    };
    let store = state.feature_store();
    let trace = TraceContext::from_headers(headers);
    let rows = rows_for(&store, request.input, &model, &trace).await?;
    let output = infer(model.clone(), rows).await?;
    Ok(json_response(&PredictResponse {
        model: ModelRef::of(&model),
        entity_ids: entity_ids.as_deref(),
        predictions: Predictions {
            output: &output,
            class_labels: &model.entry.class_labels,
        },
    }))
}

/// Bodies up to this size are parsed on the async worker (tens of microseconds); larger ones
/// on the blocking pool, so a burst of megabyte bodies cannot starve health probes.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Parses a request body for `model`, off the async workers when it is large.
pub async fn parse_off_runtime(
    body: axum::body::Bytes,
    model: Arc<LoadedModel>,
    max_rows: usize,
) -> Result<InferenceRequest, ApiError> {
    if body.len() <= INLINE_PARSE_BYTES {
        return parse_request(&body, &model, max_rows);
    }
    tokio::task::spawn_blocking(move || parse_request(&body, &model, max_rows))
        .await
        .map_err(|e| ApiError::Inference(format!("parsing task failed: {e}")))?
}

/// Runs inference on the blocking pool, so a slow model never stalls the async workers that
/// answer health probes and parse other requests.
pub async fn infer(model: Arc<LoadedModel>, rows: Rows) -> Result<ModelOutput, ApiError> {
    tokio::task::spawn_blocking(move || model.infer(&rows))
        .await
        .map_err(|e| ApiError::Inference(format!("inference task failed: {e}")))?
        .map_err(ApiError::from)
}

/// Which model answered: name, version and the sha256 of the exact file.
#[derive(Serialize)]
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

#[derive(Serialize)]
struct PredictResponse<'a> {
    model: ModelRef<'a>,
    /// Echo of `entity_ids`, parallel to `predictions` (absent for inline `instances`), so
    /// prediction objects stay exactly the training log's.
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_ids: Option<&'a [String]>,
    predictions: Predictions<'a>,
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
