//! Which model version a route names: every route family comes in up to three forms
//! (`/predict`, `/models/{name}/predict`, `/models/{name}/versions/{version}/predict`), served
//! by one handler that takes a [`ModelSelector`] from whichever path parameters its form has.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::serving::ServedModel;

/// The model and version a route's path names; `None` means the manifest's default model, or
/// the model's highest version.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ModelSelector {
    pub name: Option<String>,
    pub version: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ModelSelector {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            // Only a path segment that is not UTF-8 once percent-decoded gets here.
            .map_err(|rejection| ApiError::RouteNotFound(rejection.body_text()))?;
        Ok(ModelSelector {
            name: params.remove("name"),
            version: params.remove("version"),
        })
    }
}

impl AppState {
    /// The served model version `selector` names, or why there is none (`not_ready`,
    /// `model_not_found`, `version_not_found`).
    pub fn served(&self, selector: &ModelSelector) -> Result<Arc<ServedModel>, ApiError> {
        Ok(self
            .repository()?
            .get(selector.name.as_deref(), selector.version.as_deref())?
            .clone())
    }
}
