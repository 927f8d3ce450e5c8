//! The HTTP API: the router, shared state, and one file per route family. Handlers are thin:
//! they take the model selector ([`select`], which also names each route family's paths) and
//! the body, call a pipeline of [`crate::serving`], and shape the response with [`answer`]'s
//! helpers (the same body encoding, headers and failure count on every inference route);
//! [`ApiError`] maps every failure to a status and a stable code.
//!
//! May import `serving` and the layers below it; never `config`, `server` or `jobs`.

mod answer;
mod body;
pub mod error;
mod explain;
pub mod guard;
mod health;
mod metrics;
pub mod openapi;
mod page;
pub mod panics;
mod predict;
mod repository;
mod select;
pub mod v2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use select::Family;

/// How the gRPC adapter counts failed requests exactly as the HTTP routes do.
pub use answer::counted_against;
pub use error::ApiError;
pub use guard::{Admission, ApiKey};
pub use select::ModelSelector;

use crate::explain::ExplainLimits;
use crate::features::FeatureStore;
use crate::model::Manifest;
use crate::monitor::drift::DriftHandle;
use crate::serving::explanation::ExplainSlots;
use crate::serving::live::{Live, Snapshot};
use crate::serving::reconcile::Control;
use crate::telemetry;

/// Request-size limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_rows: usize,
    pub max_body_bytes: usize,
    /// Longest a request body may take to arrive.
    pub body_read_timeout: std::time::Duration,
    /// `/explain`'s rows, cost and concurrency limits.
    pub explain: ExplainLimits,
}

/// What every handler can see. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The state behind [`AppState`].
pub struct Inner {
    /// Request-size limits.
    pub limits: Limits,
    /// Concurrency limit, queue bound and timeout for inference routes.
    pub admission: Admission,
    /// When set, inference routes require it.
    pub api_key: Option<ApiKey>,
    /// The manifest as read at start (served even while models load).
    pub manifest: Manifest,
    /// What serves, set once every model is loaded and warmed up (until then the server is
    /// not ready); the model controller swaps its snapshot as versions load and unload.
    live: OnceLock<Arc<Live>>,
    /// The model controller's handle: the repository index and its `load` / `unload`.
    control: OnceLock<Control>,
    /// Set on SIGTERM/SIGINT so readiness fails before connections close.
    shutting_down: AtomicBool,
    /// For `/health`'s uptime.
    started: Instant,
    /// Drift monitoring of served rows, once models are loaded (absent when turned off).
    drift: OnceLock<DriftHandle>,
    /// Explanations running and waiting, both bounded (`limits.explain`).
    explain_slots: ExplainSlots,
    /// Where `entity_ids` are looked up; set once at start (unset: lookups are off).
    feature_store: OnceLock<Arc<FeatureStore>>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State for a server that has read its manifest but not loaded its models yet.
    pub fn new(
        manifest: Manifest,
        limits: Limits,
        admission: Admission,
        api_key: Option<ApiKey>,
    ) -> AppState {
        AppState(Arc::new(Inner {
            limits,
            admission,
            api_key,
            manifest,
            live: OnceLock::new(),
            control: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            drift: OnceLock::new(),
            explain_slots: ExplainSlots::new(&limits.explain),
            feature_store: OnceLock::new(),
        }))
    }

    /// Installs the feature store entity-id requests use.
    pub fn set_feature_store(&self, store: Arc<FeatureStore>) {
        if self.feature_store.set(store).is_err() {
            tracing::warn!("a feature store was already set; ignoring a second one");
        }
    }

    /// The feature store; a disabled one if none was set, so lookups fail with a clear 4xx.
    pub fn feature_store(&self) -> Arc<FeatureStore> {
        static DISABLED: OnceLock<Arc<FeatureStore>> = OnceLock::new();
        self.feature_store
            .get()
            .unwrap_or_else(|| DISABLED.get_or_init(|| Arc::new(FeatureStore::disabled())))
            .clone()
    }

    /// Publishes the loaded models and the controller that changes them: from here on the
    /// server is ready.
    pub fn set_models(&self, live: Arc<Live>, control: Control) {
        if self.live.set(live).is_err() || self.control.set(control).is_err() {
            tracing::warn!("models were already loaded; ignoring a second load");
        }
    }

    /// Starts handing served rows to drift monitoring.
    pub fn set_drift(&self, drift: DriftHandle) {
        let _ = self.drift.set(drift);
    }

    /// Drift monitoring, if it runs.
    pub fn drift(&self) -> Option<&DriftHandle> {
        self.drift.get()
    }

    /// Marks the server as draining: readiness fails from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// When the process started.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// The current snapshot of the models, or `not_ready` while they load or the server
    /// drains. A request holds it only to pick its version.
    pub fn repository(&self) -> Result<Arc<Snapshot>, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::NotReady("the server is shutting down"));
        }
        self.live
            .get()
            .map(|live| live.current())
            .ok_or(ApiError::NotReady("models are still loading"))
    }

    /// Readiness: the models loaded (see [`AppState::repository`]) and, when some version
    /// failed to load or was refused, at least one serving. With `--exit-on-error false` a
    /// server whose every model failed stays up (live, its repository index saying why, a
    /// rescan retrying) but is not ready, as Triton's; one model serving is enough to be
    /// ready, since the others answer `model_unavailable` on their own. A server with nothing
    /// loaded only because of explicit-mode unloads stays ready, as Triton's.
    pub fn ready(&self) -> Result<Arc<Snapshot>, ApiError> {
        let snapshot = self.repository()?;
        if snapshot.models.is_empty() && self.control()?.any_unavailable() {
            return Err(ApiError::NotReady(
                "no model serves: every model failed to load or was refused (see /v2/repository/index)",
            ));
        }
        Ok(snapshot)
    }

    /// The model controller, once the models are loaded.
    pub fn control(&self) -> Result<&Control, ApiError> {
        self.control
            .get()
            .ok_or(ApiError::NotReady("models are still loading"))
    }
}

/// The whole API. Separate from the socket so tests can drive it directly.
///
/// Two groups: inference routes pass the API key check and admission control; health,
/// manifest and the like are open and never queue behind inference.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The API with `extra` routes in the inference group (behind the same guards and layers):
/// how the test-only [`panics::fault_routes`] are served.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let inference = Router::new()
        .merge(Family::Predict.routes(post(predict::predict)))
        .merge(Family::Explain.routes(post(explain::explain)))
        .merge(v2::inference_routes())
        .merge(extra)
        .route_layer(from_fn_with_state(state.clone(), guard::admit));
    // Changes what serves, so behind the API key; not behind admission control, whose
    // timeout is for inference, not for loading and warming up a model.
    let repository =
        repository::routes().route_layer(from_fn_with_state(state.clone(), guard::authorize));
    Router::new()
        .merge(inference)
        .merge(repository)
        .route("/health", get(health::summary))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/manifest", get(health::manifest))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/", get(page::index))
        .route(
            "/models/{name}/versions/{version}/training-log",
            get(page::training_log),
        )
        .merge(v2::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn(log_and_catch_panics))
        .with_state(state)
}

/// Every request's one middleware: the request log around panic catching, so a panic is
/// answered first, then logged and counted as a 500 like any answer.
async fn log_and_catch_panics(req: Request, next: Next) -> Response {
    telemetry::log_request(req, |req| panics::catch_panic(next.run(req))).await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(req.method().to_string())
}
