//! `POST /predict` and its per-model forms.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::Instrument;

use super::body::JsonBody;
use super::error::ApiError;
use super::request::{parse_request, RequestInput};
use super::AppState;
use crate::model::{InferenceError, LoadedModel, ModelOutput, Predictions, Rows};
use crate::telemetry::metrics;
use crate::telemetry::otel::inference_span;
use crate::telemetry::timing::InferenceTiming;

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
    body: JsonBody,
) -> Result<Response, ApiError> {
    let model = state.repository()?.get(name, version)?.clone();
    let result = predict_with(state, model.clone(), body).await;
    if let Err(error) = &result {
        // Failed inference calls are counted by `infer_timed` itself.
        if !matches!(error, ApiError::Inference(_)) {
            metrics::record_inference_failure(
                &model.entry.name,
                &model.entry.version,
                error.code(),
            );
        }
    }
    result
}

async fn predict_with(
    state: &AppState,
    model: Arc<LoadedModel>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
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
    let Inferred {
        output,
        rows,
        timing,
    } = infer_timed(model.clone(), rows).await?;
    metrics::record_predictions(&model.entry, &output);
    let mut response = json_response(&PredictResponse {
        model: ModelRef::of(&model),
        predictions: Predictions {
            output: &output,
            class_labels: &model.entry.class_labels,
        },
    });
    timing.write_headers(response.headers_mut());
    if let Some(drift) = state.drift() {
        // Moves the rows and output (no copy); never waits.
        drift.observe(&model.entry.name, &model.entry.version, rows, output);
    }
    Ok(response)
}

/// Runs inference on the blocking pool, so a slow model never stalls the async workers that
/// answer health probes and parse other requests. Records the same metrics as
/// [`infer_timed`]; for callers that need neither the timing nor the rows back.
#[allow(dead_code)] // kept for the /explain routes (on another branch), which call it
pub async fn infer(model: Arc<LoadedModel>, rows: Rows) -> Result<ModelOutput, ApiError> {
    infer_timed(model, rows)
        .await
        .map(|inferred| inferred.output)
}

/// What one inference call gives back.
pub struct Inferred {
    /// The model's output.
    pub output: ModelOutput,
    /// The input rows, handed back so they can go on (to drift monitoring) without a copy.
    pub rows: Rows,
    /// Queue wait and inference time, for the timing headers.
    pub timing: InferenceTiming,
}

/// [`infer`], also returning the rows and where the time went. Records the inference metrics
/// (queue depth and wait, duration, batch size, success or failure) and runs in an
/// `inference` span, a child of the request's.
pub async fn infer_timed(model: Arc<LoadedModel>, rows: Rows) -> Result<Inferred, ApiError> {
    let (name, version) = (model.entry.name.as_str(), model.entry.version.as_str());
    let span = inference_span(name, version, rows.n_rows);
    let submitted = Instant::now();
    let mut queued = metrics::inference_queued(name, version);
    let task_model = model.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut started = None;
        let output = task_model.infer_with(&rows, || {
            started = Some(Instant::now());
            queued.started();
        });
        let finished = Instant::now();
        (output, rows, started.unwrap_or(finished), finished)
    })
    .instrument(span.clone())
    .await;
    let (output, rows, started, finished) = match joined {
        Ok(done) => done,
        Err(e) => {
            metrics::record_inference_failure(name, version, "task_failed");
            return Err(ApiError::Inference(format!("inference task failed: {e}")));
        }
    };
    let output = output.map_err(|e| {
        let reason = match e {
            InferenceError::Runtime(_) => "runtime_error",
            InferenceError::Output(_) => "output_error",
        };
        metrics::record_inference_failure(name, version, reason);
        ApiError::from(e)
    })?;
    let timing = InferenceTiming {
        queue: started.saturating_duration_since(submitted),
        inference: finished.saturating_duration_since(started),
    };
    metrics::record_inference(name, version, rows.n_rows, timing.queue, timing.inference);
    span.record("queue_ms", timing.queue.as_secs_f64() * 1000.0);
    span.record("inference_ms", timing.inference.as_secs_f64() * 1000.0);
    Ok(Inferred {
        output,
        rows,
        timing,
    })
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
