//! `POST /predict` and its per-model forms.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::Instrument;

use super::body::JsonBody;
use super::error::ApiError;
use super::openapi::{InferenceErrors, PredictRequest, Prediction};
use super::AppState;
use crate::features::{rows_for, TraceContext};
use crate::input::{parse_request, InferenceRequest, InputError, RequestInput};
use crate::model::{LoadedModel, ModelOutput, Predictions, Rows};
use crate::serving::ServedModel;
use crate::telemetry::metrics;
use crate::telemetry::otel::{feature_lookup_span, inference_span, traceparent_of};
use crate::telemetry::timing::InferenceTiming;

/// `POST /predict`: the manifest's default model, its highest version.
#[utoipa::path(
    post,
    path = "/predict",
    tag = "inference",
    request_body(content = PredictRequest, example = super::openapi::default_model_example),
    responses(
        (status = 200, description = "One prediction per row, from the model version named in `model`", body = PredictResponse),
        InferenceErrors,
    )
)]
pub async fn predict_default(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    predict(&state, None, None, &headers, body).await
}

/// `POST /models/{name}/predict`: the named model, its highest version.
#[utoipa::path(
    post,
    path = "/models/{name}/predict",
    tag = "inference",
    params(("name" = String, Path, description = "A model in the manifest", example = "diabetes")),
    request_body(content = PredictRequest, example = super::openapi::named_model_example),
    responses(
        (status = 200, description = "One prediction per row, from the model version named in `model`", body = PredictResponse),
        InferenceErrors,
    )
)]
pub async fn predict_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    predict(&state, Some(&name), None, &headers, body).await
}

/// `POST /models/{name}/versions/{version}/predict`: one exact version.
#[utoipa::path(
    post,
    path = "/models/{name}/versions/{version}/predict",
    tag = "inference",
    params(
        ("name" = String, Path, description = "A model in the manifest", example = "diabetes"),
        ("version" = String, Path, description = "One of its versions", example = "1"),
    ),
    request_body(content = PredictRequest, example = super::openapi::named_model_example),
    responses(
        (status = 200, description = "One prediction per row, from the model version named in `model`", body = PredictResponse),
        InferenceErrors,
    )
)]
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
    body: JsonBody,
) -> Result<Response, ApiError> {
    let model = state.repository()?.get(name, version)?.clone();
    let result = predict_with(state, model.clone(), headers, body).await;
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
    model: Arc<ServedModel>,
    headers: &HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = parse_off_runtime(body, model.clone(), state.limits.max_request_rows).await?;
    if let Some(field) = request.explain.first_given() {
        return Err(InputError::InvalidField {
            field,
            reason: "applies to /explain only".into(),
        }
        .into());
    }
    let entity_ids = match &request.input {
        RequestInput::EntityIds(ids) => Some(ids.clone()),
        RequestInput::Rows(_) => None,
    };
    let store = state.feature_store();
    let mut trace = TraceContext::from_headers(headers);
    // Entity ids are looked up inside a `feature_lookup` span; when spans are exported, the
    // store is told that span as its parent, so its own spans nest under this request's.
    let lookup = match &entity_ids {
        Some(ids) => feature_lookup_span(ids.len()),
        None => tracing::Span::none(),
    };
    if let Some(traceparent) = traceparent_of(&lookup) {
        trace.traceparent = Some(traceparent);
    }
    let rows = rows_for(&store, request.input, &model, &trace)
        .instrument(lookup)
        .await?;
    let Inferred {
        output,
        rows,
        timing,
    } = infer_timed(model.clone(), rows, state.drift().is_some()).await?;
    metrics::record_predictions(&model.entry, &output);
    let mut response = json_response(&PredictResponse {
        model: ModelRef::of(&model),
        entity_ids: entity_ids.as_deref(),
        predictions: Predictions {
            output: &output,
            class_labels: &model.entry.class_labels,
        },
    });
    timing.write_headers(response.headers_mut());
    if let (Some(drift), Some(rows)) = (state.drift(), rows) {
        // Moves the rows and output; never waits.
        drift.observe(&model.entry.name, &model.entry.version, rows, output);
    }
    Ok(response)
}

/// Bodies up to this size are parsed on the async worker (tens of microseconds); larger ones
/// on the blocking pool, so a burst of megabyte bodies cannot starve health probes.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Parses a request body for `model`, off the async workers when it is large.
pub async fn parse_off_runtime(
    body: axum::body::Bytes,
    model: Arc<ServedModel>,
    max_rows: usize,
) -> Result<InferenceRequest, ApiError> {
    if body.len() <= INLINE_PARSE_BYTES {
        return Ok(parse_request(&body, &model, max_rows)?);
    }
    tokio::task::spawn_blocking(move || parse_request(&body, &model, max_rows))
        .await
        .map_err(|e| ApiError::Inference(format!("parsing task failed: {e}")))?
        .map_err(ApiError::from)
}

/// Runs inference through the model's executor (per request on the blocking pool, or merged
/// with concurrent requests by the dynamic batcher), so a slow model never stalls the async
/// workers that answer health probes and parse other requests. Records the same metrics as
/// [`infer_timed`]; for callers that need neither the timing nor the rows back.
pub async fn infer(model: Arc<ServedModel>, rows: Rows) -> Result<ModelOutput, ApiError> {
    infer_timed(model, rows, false)
        .await
        .map(|inferred| inferred.output)
}

/// What one inference call gives back.
pub struct Inferred {
    /// The model's output.
    pub output: ModelOutput,
    /// The input rows, when asked for (drift monitoring takes them after the response).
    pub rows: Option<Rows>,
    /// Queue wait and inference time, for the timing headers.
    pub timing: InferenceTiming,
}

/// [`infer`], also returning where the time went and, with `keep_rows`, the input rows. The one
/// inference entry point of every route: it goes through [`crate::batching::infer`], records
/// the inference metrics (queue depth and wait, duration, batch rows, success or failure) and
/// runs in an `inference` span, a child of the request's.
pub async fn infer_timed(
    model: Arc<ServedModel>,
    rows: Rows,
    keep_rows: bool,
) -> Result<Inferred, ApiError> {
    let (name, version) = (model.entry.name.as_str(), model.entry.version.as_str());
    let span = inference_span(name, version, rows.n_rows);
    // The batcher takes the rows into its merged buffer; a copy is kept only for drift.
    let kept = keep_rows.then(|| rows.clone());
    let mut queued = metrics::inference_queued(name, version);
    let result = crate::batching::infer(&model.executor, &model.model, rows)
        .instrument(span.clone())
        .await
        .map_err(ApiError::from);
    queued.started();
    let inferred = result.inspect_err(|e| {
        metrics::record_inference_failure(name, version, e.code());
    })?;
    let timing = InferenceTiming {
        queue: inferred.queue_time,
        inference: inferred.inference_time,
    };
    metrics::record_inference(name, version, timing.queue);
    span.record("queue_ms", timing.queue.as_secs_f64() * 1000.0);
    span.record("inference_ms", timing.inference.as_secs_f64() * 1000.0);
    Ok(Inferred {
        output: inferred.output,
        rows: kept,
        timing,
    })
}

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

/// A `/predict` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PredictResponse<'a> {
    model: ModelRef<'a>,
    /// Echo of `entity_ids`, parallel to `predictions` (absent for inline `instances`), so
    /// prediction objects stay exactly the training log's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    entity_ids: Option<&'a [String]>,
    /// One per row, in request order.
    #[schema(value_type = Vec<Prediction>)]
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
