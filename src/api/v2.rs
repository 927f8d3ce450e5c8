//! The Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor data
//! extension, for every model in the repository:
//!
//! | route | what |
//! |---|---|
//! | `GET /v2` | server metadata: name, version, extensions |
//! | `GET /v2/health/live`, `/v2/health/ready` | liveness, readiness |
//! | `GET /v2/models/{name}[/versions/{v}]` | model metadata: inputs, outputs, `-1` for the batch |
//! | `GET /v2/models/{name}[/versions/{v}]/ready` | model readiness |
//! | `POST /v2/models/{name}[/versions/{v}]/infer` | inference on tensors (JSON or binary) |
//!
//! Handlers are thin: [`crate::input::tensors`] parses, [`crate::serving::pipeline::infer`] runs
//! the model (the same step `/predict` takes, batcher included), [`response`] shapes the answer. Errors are the API's
//! usual `{"error": "...", "code": "..."}` with a 4xx status, which V2 clients read by `error`.

pub mod response;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::answer::{answered_by, counted_against};
use super::body::RawBody;
use super::error::{ApiError, ErrorBody};
use super::openapi::{
    InferenceErrors, ModelLookupErrors, ModelVersionPath, V2InferRequest, V2Live, V2ModelMetadata,
    V2ModelReady, V2Ready, V2ServerMetadata,
};
use super::select::{Family, ModelSelector};
use super::AppState;
use crate::input::{header_length, parse_infer, parse_typed_infer, InputSpec};
use crate::serving::live::Routed;
use crate::serving::pipeline;
use crate::telemetry::timing::InferenceTiming;
use response::Header as V2InferResponse;
use response::{infer_response, select, select_tensors, tensors_of, tensors_response, TensorInfo};

/// The binary tensor data extension's framing header.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The extensions `GET /v2` reports.
pub const EXTENSIONS: [&str; 2] = ["binary_tensor_data", "model_repository"];

/// The V2 metadata and health routes (open, like `/health`), merged into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .merge(Family::ModelMetadata.routes(get(model_metadata)))
        .merge(Family::ModelReady.routes(get(model_ready)))
}

/// The V2 inference routes: merged into the API's inference group, so the API key and
/// admission control apply to them exactly as to `/predict`.
pub fn inference_routes() -> Router<AppState> {
    Family::Infer.routes(post(infer))
}

/// `GET /v2`: who serves, and which protocol extensions it speaks.
#[utoipa::path(
    get,
    path = "/v2",
    tag = "v2",
    responses((status = 200, description = "Server name, version and protocol extensions", body = V2ServerMetadata))
)]
async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "ferrum-serve",
        "version": crate::BUILD_VERSION,
        "extensions": EXTENSIONS,
    }))
}

/// `GET /v2/health/live`: the process answers.
#[utoipa::path(
    get,
    path = "/v2/health/live",
    operation_id = "v2_live",
    tag = "v2",
    responses((status = 200, description = "The process answers", body = V2Live))
)]
async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

/// `GET /v2/health/ready`: 200 once every model is loaded and warmed up, 503 before and while
/// draining.
#[utoipa::path(
    get,
    path = "/v2/health/ready",
    operation_id = "v2_ready",
    tag = "v2",
    responses(
        (status = 200, description = "Every model is loaded and warmed up", body = V2Ready),
        (status = 503, description = "not_ready (with Retry-After)", body = ErrorBody),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.ready()?;
    Ok(Json(json!({"ready": true})))
}

/// `GET /v2/models/{name}[/versions/{version}]`: the input and outputs with datatype and shape
/// (`-1` for the batch dimension), every version served, and in `parameters` what turns
/// outputs into predictions. The OpenAPI document lists both forms (see [`super::openapi`]).
#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}",
    tag = "v2",
    params(ModelVersionPath),
    responses(
        (status = 200, description = "The version's input and outputs", body = V2ModelMetadata),
        ModelLookupErrors,
    )
)]
async fn model_metadata(
    State(state): State<AppState>,
    selector: ModelSelector,
) -> Result<Json<Value>, ApiError> {
    // One snapshot for the version and the list, so a reload in between cannot split them.
    let repository = state.repository()?;
    let model = state.served_in(
        &repository,
        selector.name.as_deref(),
        selector.version.as_deref(),
    )?;
    let entry = &model.entry;
    let versions = repository.models[&entry.name].names();
    let (inputs, outputs) = tensors_of(&model);
    let listed = |tensors: Vec<TensorInfo>| -> Vec<Value> {
        tensors
            .into_iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype.v2_name(), "shape": t.shape}))
            .collect()
    };
    let (inputs, outputs) = (listed(inputs), listed(outputs));
    Ok(Json(json!({
        "name": entry.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "version": entry.version,
            "task": entry.task_name(),
            "sha256": entry.onnx.sha256,
            "feature_names": entry.feature_names,
            "class_labels": entry.class_labels,
        },
    })))
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`: the version is loaded and serves.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}/ready",
    tag = "v2",
    params(ModelVersionPath),
    responses(
        (status = 200, description = "The version is loaded and serves", body = V2ModelReady),
        ModelLookupErrors,
    )
)]
async fn model_ready(
    State(state): State<AppState>,
    selector: ModelSelector,
) -> Result<Json<Value>, ApiError> {
    let model = state.served(&selector)?;
    Ok(Json(
        json!({"name": model.entry.name, "version": model.entry.version, "ready": true}),
    ))
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`: parse (JSON, or JSON header + binary
/// tensors, off the async workers when large), check the requested outputs, run the model
/// through the shared inference step, answer in the requested encoding.
#[utoipa::path(
    post,
    path = "/v2/models/{name}/versions/{version}/infer",
    tag = "v2",
    params(ModelVersionPath),
    request_body(content = V2InferRequest, description = "JSON; or, with Inference-Header-Content-Length, that many bytes of JSON header followed by the binary input tensors (any content type)", example = super::openapi::v2_infer_example),
    responses(
        (status = 200, description = "The requested outputs of this version", body = V2InferResponse),
        InferenceErrors,
    )
)]
async fn infer(
    State(state): State<AppState>,
    selector: ModelSelector,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // Tensors carry no entity id: only the routing key header makes a client sticky.
    let routed = state.route(&selector, &[])?;
    let (mut response, timing) = infer_tensors(&state, &routed, &headers, body)
        .await
        .map_err(counted_against(&routed.model))?;
    answered_by(&routed.model, &timing, &mut response);
    Ok(response)
}

/// The answer and its timing, for [`answered_by`].
async fn infer_tensors(
    state: &AppState,
    routed: &Routed,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Response, InferenceTiming), ApiError> {
    let model = &routed.model;
    if let Some(encoding) = headers.get(axum::http::header::CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content encoding '{}' (send the body uncompressed)",
                String::from_utf8_lossy(encoding.as_bytes())
            )));
        }
    }
    let header_len = header_length(
        headers.get(HEADER_LENGTH).and_then(|v| v.to_str().ok()),
        body.len(),
    )?;
    let max_rows = state.limits.max_request_rows;
    let parsing = model.clone();
    let json = header_len.unwrap_or(body.len());
    let weight = crate::input::parse_weight(json, body.len() - json);
    if model.is_tensors() {
        let request =
            pipeline::parse_off_runtime(weight, move || parse_typed_infer(&body, header_len))
                .await?;
        let selection = select_tensors(model, &request.outputs, request.binary_data_output)?;
        let inferred = pipeline::infer_tensors(model, request.inputs, max_rows).await?;
        let response = tensors_response(model, request.id.as_deref(), &inferred.output, &selection);
        return Ok((response, inferred.timing));
    }
    let request = pipeline::parse_off_runtime(weight, move || {
        parse_infer(&body, header_len, &InputSpec::of(&parsing, max_rows))
    })
    .await?;
    let selection = select(model, &request.outputs, request.binary_data_output)?;
    let inferred = pipeline::infer(model, request.rows, routed.shadow.is_some()).await?;
    let response = infer_response(model, request.id.as_deref(), &inferred.output, &selection);
    routed.copy_to_shadow(inferred.rows, &inferred.output);
    Ok((response, inferred.timing))
}
