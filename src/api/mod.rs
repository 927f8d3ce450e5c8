//! The HTTP API: the router, shared state, and one file per route family. Handlers are thin:
//! they parse, call plain functions in [`crate::model`], and shape the response.

mod body;
pub mod error;
mod health;
mod predict;
pub mod request;
pub mod v2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::Request;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;

use crate::model::{Manifest, Repository};
use crate::telemetry;

/// Request-size limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_rows: usize,
    pub max_body_bytes: usize,
}

/// What every handler can see. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The state behind [`AppState`].
pub struct Inner {
    /// Request-size limits.
    pub limits: Limits,
    /// The manifest as read at start (served even while models load).
    pub manifest: Manifest,
    /// Set once every model is loaded and warmed up; until then the server is not ready.
    repository: OnceLock<Arc<Repository>>,
    /// Set on SIGTERM/SIGINT so readiness fails before connections close.
    shutting_down: AtomicBool,
    /// For `/health`'s uptime.
    started: Instant,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State for a server that has read its manifest but not loaded its models yet.
    pub fn new(manifest: Manifest, limits: Limits) -> AppState {
        AppState(Arc::new(Inner {
            limits,
            manifest,
            repository: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
        }))
    }

    /// Publishes the loaded models: from here on the server is ready.
    pub fn set_repository(&self, repository: Repository) {
        if self.repository.set(Arc::new(repository)).is_err() {
            tracing::warn!("models were already loaded; ignoring a second load");
        }
    }

    /// Marks the server as draining: readiness fails from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// When the process started.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// The models, or `not_ready` while they load or the server drains.
    pub fn repository(&self) -> Result<&Arc<Repository>, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::NotReady("the server is shutting down"));
        }
        self.repository
            .get()
            .ok_or(ApiError::NotReady("models are still loading"))
    }
}

/// The whole API. Separate from the socket so tests can drive it directly.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/predict", post(predict::predict_default))
        .route("/models/{name}/predict", post(predict::predict_model))
        .route(
            "/models/{name}/versions/{version}/predict",
            post(predict::predict_version),
        )
        .route("/health", get(health::summary))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/manifest", get(health::manifest))
        .merge(v2::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(telemetry::log_request))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(req.method().to_string())
}
