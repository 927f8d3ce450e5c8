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
//! Handlers are thin: [`crate::input::tensors`] parses, [`crate::api::predict::infer`] runs the model (the same
//! path `/predict` takes, batcher included), [`response`] shapes the answer. Errors are the API's
//! usual `{"error": "...", "code": "..."}` with a 4xx status, which V2 clients read by `error`.

pub mod response;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::RawBody;
use super::error::{ApiError, ErrorBody};
use super::openapi::{
    InferenceErrors, V2InferRequest, V2Live, V2ModelMetadata, V2ModelReady, V2Ready,
    V2ServerMetadata,
};
use super::AppState;
use crate::input::{header_length, parse_infer, InputSpec};
use crate::serving::ServedModel;
use response::Header as V2InferResponse;
use response::{infer_response, outputs_of, select, shape_of};

/// The binary tensor data extension's framing header.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The extensions `GET /v2` reports.
pub const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

/// The V2 metadata and health routes (open, like `/health`), merged into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_version),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_version),
        )
}

/// The V2 inference routes: merged into the API's inference group, so the API key and
/// admission control apply to them exactly as to `/predict`.
pub fn inference_routes() -> Router<AppState> {
    Router::new()
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
}

/// `GET /v2`: who serves, and which protocol extensions it speaks.
#[utoipa::path(
    get,
    path = "/v2",
    tag = "v2",
    responses(
        (status = 200, description = "Server name, version and protocol extensions", body = V2ServerMetadata),
    )
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
    tag = "v2",
    responses(
        (status = 200, description = "The process answers", body = V2Live),
    )
)]
async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

/// `GET /v2/health/ready`: 200 once every model is loaded and warmed up, 503 before and while
/// draining.
#[utoipa::path(
    get,
    path = "/v2/health/ready",
    tag = "v2",
    responses(
        (status = 200, description = "Every model is loaded and warmed up", body = V2Ready),
        (status = 503, description = "not_ready (with Retry-After)", body = ErrorBody),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.repository()?;
    Ok(Json(json!({"ready": true})))
}

fn lookup(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<std::sync::Arc<ServedModel>, ApiError> {
    Ok(state.repository()?.get(Some(name), version)?.clone())
}

#[utoipa::path(
    get,
    path = "/v2/models/{name}",
    tag = "v2",
    params(("name" = String, Path, description = "A model in the manifest", example = "diabetes")),
    responses(
        (status = 200, description = "The model's input and outputs (datatype, shape with -1 for the batch) and versions", body = V2ModelMetadata),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 503, description = "not_ready: models loading or the server draining (with Retry-After)", body = ErrorBody),
    )
)]
async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    metadata(&state, &name, None)
}

#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}",
    tag = "v2",
    params(
        ("name" = String, Path, description = "A model in the manifest", example = "diabetes"),
        ("version" = String, Path, description = "One of its versions", example = "1"),
    ),
    responses(
        (status = 200, description = "The version's input and outputs", body = V2ModelMetadata),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 503, description = "not_ready: models loading or the server draining (with Retry-After)", body = ErrorBody),
    )
)]
async fn model_metadata_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    metadata(&state, &name, Some(&version))
}

/// Model metadata: the input and outputs with datatype and shape (`-1` for the batch
/// dimension), every version served, and in `parameters` what turns outputs into predictions.
fn metadata(state: &AppState, name: &str, version: Option<&str>) -> Result<Json<Value>, ApiError> {
    let repository = state.repository()?;
    let model = repository.get(Some(name), version)?;
    let versions: Vec<String> = repository.models[name]
        .versions
        .keys()
        .map(u64::to_string)
        .collect();
    let entry = &model.entry;
    let outputs: Vec<Value> = outputs_of(model)
        .into_iter()
        .map(|(role, tensor)| {
            json!({
                "name": tensor,
                "datatype": role.datatype(),
                "shape": shape_of(model, role, -1),
            })
        })
        .collect();
    Ok(Json(json!({
        "name": entry.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [{
            "name": entry.onnx.input,
            "datatype": "FP32",
            "shape": [-1, entry.feature_names.len()],
        }],
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

#[utoipa::path(
    get,
    path = "/v2/models/{name}/ready",
    tag = "v2",
    params(("name" = String, Path, description = "A model in the manifest", example = "diabetes")),
    responses(
        (status = 200, description = "The model is loaded and serves", body = V2ModelReady),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 503, description = "not_ready: models loading or the server draining (with Retry-After)", body = ErrorBody),
    )
)]
async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = lookup(&state, &name, None)?;
    Ok(Json(
        json!({"name": name, "version": model.entry.version, "ready": true}),
    ))
}

#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}/ready",
    tag = "v2",
    params(
        ("name" = String, Path, description = "A model in the manifest", example = "diabetes"),
        ("version" = String, Path, description = "One of its versions", example = "1"),
    ),
    responses(
        (status = 200, description = "The version is loaded and serves", body = V2ModelReady),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 503, description = "not_ready: models loading or the server draining (with Retry-After)", body = ErrorBody),
    )
)]
async fn model_ready_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let model = lookup(&state, &name, Some(&version))?;
    Ok(Json(
        json!({"name": name, "version": model.entry.version, "ready": true}),
    ))
}

#[utoipa::path(
    post,
    path = "/v2/models/{name}/infer",
    tag = "v2",
    params(("name" = String, Path, description = "A model in the manifest", example = "diabetes")),
    request_body(content = V2InferRequest, description = "JSON; or, with Inference-Header-Content-Length, that many bytes of JSON header followed by the binary input tensors (any content type)", example = super::openapi::v2_infer_example),
    responses(
        (status = 200, description = "The requested outputs (all by default), as JSON or, when any output is binary, a JSON header then binary tensors", body = V2InferResponse),
        InferenceErrors,
    )
)]
async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    run(&state, &name, None, &headers, body).await
}

#[utoipa::path(
    post,
    path = "/v2/models/{name}/versions/{version}/infer",
    tag = "v2",
    params(
        ("name" = String, Path, description = "A model in the manifest", example = "diabetes"),
        ("version" = String, Path, description = "One of its versions", example = "1"),
    ),
    request_body(content = V2InferRequest, description = "JSON; or, with Inference-Header-Content-Length, that many bytes of JSON header followed by the binary input tensors (any content type)", example = super::openapi::v2_infer_example),
    responses(
        (status = 200, description = "The requested outputs of this version", body = V2InferResponse),
        InferenceErrors,
    )
)]
async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    run(&state, &name, Some(&version), &headers, body).await
}

/// `POST .../infer`: parse (JSON, or JSON header + binary tensors), check the requested outputs,
/// run the model through the shared inference path, answer in the requested encoding.
async fn run(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let model = lookup(state, name, version)?;
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
    let request = parse_infer(
        &body,
        header_len,
        &InputSpec::of(&model, state.limits.max_request_rows),
    )?;
    drop(body);
    let selection = select(&model, &request.outputs, request.binary_data_output)?;
    let output = super::predict::infer(model.clone(), request.rows).await?;
    Ok(infer_response(
        &model,
        request.id.as_deref(),
        &output,
        &selection,
    ))
}
