//! The demo page (`GET /`) and the training log it picks rows from. The page is one file of
//! HTML, CSS and JS compiled into the binary: no CDN, no build step, nothing downloaded.

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::openapi::ModelVersionPath;
use super::AppState;

/// The page, embedded at compile time.
const PAGE: &str = include_str!("../../web/index.html");

/// `GET /`: the demo page.
#[utoipa::path(
    get,
    path = "/",
    tag = "operations",
    responses((status = 200, description = "The demo page", content_type = "text/html", body = String))
)]
pub async fn index() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /models/{name}/versions/{version}/training-log`: the rows training recorded with their
/// predictions, as `training_log.json` holds them.
#[utoipa::path(
    get,
    path = "/models/{name}/versions/{version}/training-log",
    tag = "operations",
    params(ModelVersionPath),
    responses(
        (status = 200, description = "training_log.json: the rows training recorded with their predictions", body = Object),
        (status = 404, description = "model_not_found, version_not_found, or no training log", body = ErrorBody),
        (status = 503, description = "not_ready (with Retry-After)", body = ErrorBody),
    )
)]
pub async fn training_log(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let repository = state.repository()?;
    let model = repository.get(Some(&name), Some(&version))?;
    let Some(file) = &model.entry.artifacts.training_log else {
        return Err(ApiError::RouteNotFound(format!(
            "model '{name}' version '{version}' has no training log"
        )));
    };
    let path = repository.models_dir.join(&model.entry.path).join(file);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::Inference(format!("cannot read {}: {e}", path.display())))?;
    Ok(([(CONTENT_TYPE, "application/json")], bytes).into_response())
}
