//! The demo page (`GET /`) and the training log it picks rows from. The page is one file of
//! HTML, CSS and JS compiled into the binary: no CDN, no build step, nothing downloaded.

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

/// The page, embedded at compile time.
const PAGE: &str = include_str!("../../web/index.html");

/// `GET /`: the demo page.
pub async fn index() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /models/{name}/versions/{version}/training-log`: the rows training recorded with their
/// predictions, as `training_log.json` holds them.
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
