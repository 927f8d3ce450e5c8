//! Which model version a route names: every route family comes in up to three forms
//! (`/predict`, `/models/{name}/predict`, `/models/{name}/versions/{version}/predict`), served
//! by one handler that takes a [`ModelSelector`] from whichever path parameters its form has.
//! An unversioned request goes where the model's traffic split sends it, sticky by its routing
//! key (the `x-ferrum-routing-key` header, else the body's first entity id); the answer's
//! `x-ferrum-version` header says which version it was. A version the repository lists but
//! that does not serve because its load failed or its file was refused is answered 503
//! `model_unavailable` with why, not 404: it exists, it is just not loaded.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::HeaderName;
use axum::routing::MethodRouter;
use axum::Router;

use super::body::JsonBody;
use super::error::ApiError;
use super::AppState;
use crate::features::TraceContext;
use crate::input::first_entity_id;
use crate::model::LookupError;
use crate::serving::live::{Routed, Snapshot};
use crate::serving::ServedModel;

/// The request header that keeps one client on one version of a split model.
pub const ROUTING_KEY_HEADER: &str = "x-ferrum-routing-key";

/// The response header naming the version that answered (a `HeaderName`, so inserting it does
/// not copy the name per request).
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-ferrum-version");

/// A per-model route family: one handler behind up to three paths. The router, the OpenAPI
/// document's forms and the served document's concrete routes all read this one list, so a
/// family's paths and operation ids are spelled in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `POST /predict`, `/models/{name}[/versions/{version}]/predict`.
    Predict,
    /// `POST /explain`, `/models/{name}[/versions/{version}]/explain`.
    Explain,
    /// `GET /v2/models/{name}[/versions/{version}]`.
    ModelMetadata,
    /// `GET /v2/models/{name}[/versions/{version}]/ready`.
    ModelReady,
    /// `POST /v2/models/{name}[/versions/{version}]/infer`.
    Infer,
}

/// Which of a family's paths: the manifest's default model (the row families only), a named
/// model (the version its split picks), or one exact version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Default,
    Model,
    Version,
}

impl Family {
    /// Every family, in the order the document lists them.
    pub const ALL: [Family; 5] = [
        Family::Predict,
        Family::Explain,
        Family::ModelMetadata,
        Family::ModelReady,
        Family::Infer,
    ];

    /// Where the family's model paths start: `/models` for rows, `/v2/models` for V2.
    pub fn root(self) -> &'static str {
        match self {
            Family::Predict | Family::Explain => "/models",
            Family::ModelMetadata | Family::ModelReady | Family::Infer => "/v2/models",
        }
    }

    /// What follows the model (and version) in the path; empty for V2 model metadata.
    pub fn action(self) -> &'static str {
        match self {
            Family::Predict => "/predict",
            Family::Explain => "/explain",
            Family::ModelMetadata => "",
            Family::ModelReady => "/ready",
            Family::Infer => "/infer",
        }
    }

    /// The row families also answer for the manifest's default model at their bare action
    /// (`/predict`); V2 always names the model.
    pub fn has_default(self) -> bool {
        self.root() == "/models"
    }

    /// The family's forms, in the order the document lists them.
    pub fn forms(self) -> &'static [Form] {
        if self.has_default() {
            &[Form::Default, Form::Model, Form::Version]
        } else {
            &[Form::Model, Form::Version]
        }
    }

    /// The templated path of one form, as the router and the document spell it.
    pub fn path(self, form: Form) -> String {
        let (root, action) = (self.root(), self.action());
        match form {
            Form::Default => action.to_owned(),
            Form::Model => format!("{root}/{{name}}{action}"),
            Form::Version => format!("{root}/{{name}}/versions/{{version}}{action}"),
        }
    }

    /// Every form's path, in order.
    pub fn paths(self) -> impl Iterator<Item = String> {
        self.forms().iter().map(move |&form| self.path(form))
    }

    /// The family's routes: `handler` behind each of its paths.
    pub fn routes(self, handler: MethodRouter<AppState>) -> Router<AppState> {
        self.paths().fold(Router::new(), |router, path| {
            router.route(&path, handler.clone())
        })
    }
}

/// The model and version a route's path names; `None` means the manifest's default model, or
/// the version the model's split picks. `routing_key` is the `x-ferrum-routing-key` header.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ModelSelector {
    pub name: Option<String>,
    pub version: Option<String>,
    pub routing_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ModelSelector {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            // Only a path segment that is not UTF-8 once percent-decoded gets here.
            .map_err(|rejection| ApiError::RouteNotFound(rejection.body_text()))?;
        let routing_key = parts
            .headers
            .get(ROUTING_KEY_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Ok(ModelSelector {
            name: params.remove("name"),
            version: params.remove("version"),
            routing_key,
        })
    }
}

/// A `/predict` or `/explain` call, extracted: the version that answers it (see
/// [`AppState::route`]), its JSON body and the caller's W3C trace context, which the
/// feature-store lookup carries on.
pub struct RowsCall {
    pub routed: Routed,
    pub body: Bytes,
    pub trace: TraceContext,
}

impl FromRequest<AppState> for RowsCall {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let selector = ModelSelector::from_request_parts(&mut parts, state).await?;
        let trace = TraceContext::from_headers(&parts.headers);
        let JsonBody(body) =
            JsonBody::from_request(Request::from_parts(parts, body), state).await?;
        let routed = state.route(&selector, &body)?;
        Ok(RowsCall {
            routed,
            body,
            trace,
        })
    }
}

impl AppState {
    /// The served model version `selector` names, without routing a request (metadata,
    /// readiness): an unversioned path names the model's primary version. Or why there is
    /// none (`not_ready`, `model_not_found`, `version_not_found`, `model_unavailable`).
    pub fn served(&self, selector: &ModelSelector) -> Result<Arc<ServedModel>, ApiError> {
        let snapshot = self.repository()?;
        self.served_in(
            &snapshot,
            selector.name.as_deref(),
            selector.version.as_deref(),
        )
    }

    /// [`AppState::served`] in a snapshot the caller holds (to read more of it consistently).
    pub fn served_in(
        &self,
        snapshot: &Snapshot,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Arc<ServedModel>, ApiError> {
        snapshot
            .named(name, version)
            .map_err(|e| self.lookup_failed(e))
    }

    /// A lookup that found nothing serving: `model_unavailable` with the reason when the
    /// repository lists the version but its load failed or its file was refused, else the
    /// lookup's own 404.
    fn lookup_failed(&self, error: LookupError) -> ApiError {
        let (name, version) = match &error {
            LookupError::ModelNotFound { name, .. } => (name, None),
            LookupError::VersionNotFound { name, version, .. } => (name, Some(version.as_str())),
        };
        match self
            .control()
            .ok()
            .and_then(|c| c.unavailable(name, version))
        {
            Some(state) => ApiError::ModelUnavailable {
                name: state.name,
                version: state.version.to_string(),
                state: state.state.as_str(),
                reason: state.reason,
            },
            None => error.into(),
        }
    }

    /// The version that answers an inference request, and its shadow: the split's pick for an
    /// unversioned one, keyed by the routing key header or else the first of the body's
    /// `entity_ids` (read only when the model's traffic is split).
    pub fn route(&self, selector: &ModelSelector, body: &[u8]) -> Result<Routed, ApiError> {
        self.repository()?
            .route(
                selector.name.as_deref(),
                selector.version.as_deref(),
                || {
                    selector
                        .routing_key
                        .clone()
                        .or_else(|| first_entity_id(body))
                },
            )
            .map_err(|e| self.lookup_failed(e))
    }
}
