//! The KServe V2 repository extension, with Triton's bodies and answers:
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET`/`POST /v2/repository/index` | `{"ready": bool}` (optional) | `[{"name", "version", "state", "reason"}]` |
//! | `POST /v2/repository/models/{name}/load` | `{"parameters": {"config": "<JSON>"}}` (optional) | `{}` once the versions serve |
//! | `POST /v2/repository/models/{name}/unload` | `{"parameters": {"unload_dependents": bool}}` (optional) | `{}` once drained |
//!
//! The index is served in every `--model-control-mode`; `load` and `unload` in `explicit` mode
//! only. All three are behind the API key when one is set. Handlers are thin: the body is read
//! by [`crate::lifecycle::protocol`], the change made by [`crate::serving::reconcile`].

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::RawBody;
use super::error::{ApiError, ErrorBody};
use super::openapi::{V2LoadRequest, V2RepositoryIndexRequest, V2RepositoryModel, V2UnloadRequest};
use super::AppState;
use crate::lifecycle::protocol::{parse_body, LoadRequest, RepositoryIndexRequest, UnloadRequest};
use crate::lifecycle::ModelState;

/// The extension's routes; the router puts them behind the API key check.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/repository/index", get(index).post(index))
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v2/repository/models/{name}/unload", post(unload))
}

/// `GET`/`POST /v2/repository/index`: every version the repository lists or serves, with its
/// state (`READY`, `UNAVAILABLE`, `LOADING`, `UNLOADING`) and, when it is not plainly serving,
/// why (a refused file, a failed load, outside the version policy).
#[utoipa::path(
    method(get, post),
    path = "/v2/repository/index",
    operation_id = "repository_index",
    tag = "v2",
    request_body(content = Option<V2RepositoryIndexRequest>, description = "Optional; an empty body lists every version"),
    responses(
        (status = 200, description = "Every listed or loaded version with its state and reason", body = Vec<V2RepositoryModel>),
        (status = 400, description = "invalid_repository_request: the body is not the extension's", body = ErrorBody),
        (status = 401, description = "unauthorized: the API key is required", body = ErrorBody),
        (status = 503, description = "not_ready: models are still loading", body = ErrorBody),
    )
)]
async fn index(
    State(state): State<AppState>,
    RawBody(body): RawBody,
) -> Result<Json<Vec<ModelState>>, ApiError> {
    let request: RepositoryIndexRequest = parse_body(&body)?;
    Ok(Json(state.control()?.index(request.ready)))
}

/// `POST /v2/repository/models/{name}/load`: (re)loads the versions of `name` its policy serves,
/// each read, sha256-checked and warmed up before it is swapped in; `parameters.config` sets the
/// model's rollout (version policy, split, shadow) in place of the manifest's. Answers once the
/// versions serve; a version that fails leaves what was serving untouched.
#[utoipa::path(
    post,
    path = "/v2/repository/models/{name}/load",
    tag = "v2",
    params(("name" = String, Path, description = "The model, as the manifest names it")),
    request_body(content = Option<V2LoadRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The model's versions are loaded and serve", body = Object),
        (status = 400, description = "invalid_repository_request (the field at fault), or load_failed (the versions and why; what was serving still serves)", body = ErrorBody),
        (status = 403, description = "model_control_disabled: loads and unloads are taken in --model-control-mode explicit only", body = ErrorBody),
        (status = 401, description = "unauthorized: the API key is required", body = ErrorBody),
        (status = 404, description = "model_not_found: the manifest does not list it", body = ErrorBody),
    )
)]
async fn load(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let request: LoadRequest = parse_body(&body)?;
    let config = request.config_override()?;
    state.control()?.load(name, config).await?;
    Ok(Json(json!({})))
}

/// `POST /v2/repository/models/{name}/unload`: takes every version of `name` out of service;
/// answers once the requests already running on them have finished.
#[utoipa::path(
    post,
    path = "/v2/repository/models/{name}/unload",
    tag = "v2",
    params(("name" = String, Path, description = "The model, as the manifest names it")),
    request_body(content = Option<V2UnloadRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The model's versions are drained and unloaded", body = Object),
        (status = 400, description = "invalid_repository_request", body = ErrorBody),
        (status = 403, description = "model_control_disabled: loads and unloads are taken in --model-control-mode explicit only", body = ErrorBody),
        (status = 401, description = "unauthorized: the API key is required", body = ErrorBody),
        (status = 404, description = "model_not_found: neither listed nor loaded", body = ErrorBody),
    )
)]
async fn unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    // No model here has dependents: `unload_dependents` is read (and checked) only.
    let _: UnloadRequest = parse_body(&body)?;
    state.control()?.unload(name).await?;
    Ok(Json(json!({})))
}
