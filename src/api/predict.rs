//! `POST /predict` and its per-model forms.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::body::JsonBody;
use super::error::ApiError;
use super::request::{parse_request, RequestInput};
use super::AppState;
use crate::model::{LoadedModel, ModelOutput, Predictions, Rows};

/// `POST /predict`: the manifest's default model, its highest version.
pub async fn predict_default(
    State(state): State<AppState>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    predict(&state, None, None, body).await
}

/// `POST /models/{name}/predict`: the named model, its highest version.
pub async fn predict_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    predict(&state, Some(&name), None, body).await
}

/// `POST /models/{name}/versions/{version}/predict`: one exact version.
pub async fn predict_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    predict(&state, Some(&name), Some(&version), body).await
}

async fn predict(
    state: &AppState,
    name: Option<&str>,
    version: Option<&str>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let model = state.repository()?.get(name, version)?.clone();
    let request = parse_request(&body, &model, state.limits.max_request_rows)?;
    if let Some(field) = request.explain.first_given() {
        return Err(ApiError::InvalidField {
            field,
            reason: "applies to /explain only".into(),
        });
    }
    let rows = match request.input {
        RequestInput::Rows(rows) => rows,
        RequestInput::EntityIds(_) => {
            return Err(ApiError::InvalidField {
                field: "entity_ids",
                reason: "no feature store is configured".into(),
            })
        }
    };
    let output = infer(model.clone(), rows).await?;
    Ok(json_response(&PredictResponse {
        model: ModelRef::of(&model),
        predictions: Predictions {
            output: &output,
            class_labels: &model.entry.class_labels,
        },
    }))
}

/// Runs inference through the model's executor (per request on the blocking pool, or merged
/// with concurrent requests by the dynamic batcher), so a slow model never stalls the async
/// workers that answer health probes and parse other requests. The one inference entry point of
/// every route; [`crate::batching::infer`] also reports queue and inference time.
pub async fn infer(model: Arc<LoadedModel>, rows: Rows) -> Result<ModelOutput, ApiError> {
    crate::batching::infer(model, rows)
        .await
        .map(|inferred| inferred.output)
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
