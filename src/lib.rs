//! # Ferrum Serve
//!
//! A model-serving HTTP microservice whose promise is *reproducibility*: the prediction a client
//! gets is the one the training log recorded, from a model file whose sha256 the manifest names.
//!
//! ## Where a request goes
//! `api` (parse and validate the body straight into an `f32` matrix) → `batching` (one call per
//! request on a blocking thread, or concurrent requests merged into one call on a scheduler
//! thread) → `model` (ONNX Runtime, one pooled session per call) → `api` (shape the response).
//! `telemetry` watches at the edges (one log line per request) and never sits inside the math.
//!
//! ## Layout
//! - [`config`]: command-line flags with environment fallbacks, printed at start.
//! - [`model`]: `manifest.json`, the model repository, ONNX Runtime sessions and execution
//!   providers, and the mapping of raw model outputs to predictions. Knows nothing of HTTP.
//! - [`batching`]: the one way to inference: per request, or merged by the dynamic batcher
//!   (bounded queue, scheduler threads, cancelled requests skipped, results fanned out in order).
//! - [`api`]: the axum router, request parsing, the one error enum mapped to HTTP statuses.
//! - [`telemetry`]: logging set-up and the per-request log line.
//! - [`server`]: start-up order (bind, load, warm up, ready) and graceful shutdown.

pub mod api;
pub mod batching;
pub mod config;
pub mod model;
pub mod server;
pub mod telemetry;

/// The git commit this binary was built from (`GIT_COMMIT` at build time, else `git rev-parse`),
/// so `/manifest` can say exactly which code serves.
pub const BUILD_GIT_COMMIT: &str = env!("FERRUM_BUILD_GIT_COMMIT");

/// The crate version, reported beside the commit.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");
