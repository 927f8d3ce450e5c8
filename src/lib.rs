//! # Ferrum Serve
//!
//! A model-serving HTTP microservice whose promise is *reproducibility*: the prediction a client
//! gets is the one the training log recorded, from a model file whose sha256 the manifest names.
//!
//! ## Where a request goes
//! `api` (parse and validate the body straight into an `f32` matrix) → `batching` (one call per
//! request on a blocking thread, or concurrent requests merged into one call on a scheduler
//! thread) → `model` (ONNX Runtime, one pooled session per call) → `api` (shape the response).
//! `telemetry` watches at the edges (a log line, metrics and a span per request; served rows handed
//! to a background drift monitor) and never sits inside the math.
//!
//! A body with `entity_ids` instead of `instances` first goes through `features`, which looks
//! the rows up in a feature store (Feast's HTTP protocol, or a snapshot read in-process).
//! `/explain` takes the same path, then `explain` (SHAP over the model's background set, on a
//! blocking thread) instead of a single inference.
//!
//! ## Layout
//! - [`config`]: command-line flags with environment fallbacks, printed at start.
//! - [`model`]: `manifest.json`, the model repository, ONNX Runtime sessions and execution
//!   providers, and the mapping of raw model outputs to predictions. Knows nothing of HTTP.
//! - [`batching`]: the one way to inference: per request, or merged by the dynamic batcher
//!   (bounded queue, scheduler threads, cancelled requests skipped, results fanned out in order).
//! - [`explain`]: SHAP attributions over each model's background set: Tree SHAP on the trees
//!   read from the ONNX graph, exact enumeration, or permutation sampling. Knows nothing of HTTP.
//! - [`api`]: the axum router, request parsing, the one error enum mapped to HTTP statuses.
//! - [`features`]: entity ids → rows: the Feast-protocol client, the in-process snapshot store,
//!   the mock feature store (`ferrum-feature-store`), and the data-contract check.
//! - [`telemetry`]: logs, OpenTelemetry spans, Prometheus metrics, timing headers, drift (PSI of
//!   served rows against the training baseline).
//! - [`grpc`]: the Open Inference Protocol over gRPC (`--grpc-port`) and gRPC health, behind a
//!   narrow backend seam over the same state and inference path as the HTTP API.
//! - [`server`]: start-up order (bind, load, warm up, ready) and graceful shutdown.
//! - [`listener`]: the accept loop: HTTP/1.1 and h2c with hyper's header-read timeout.
//! - [`healthcheck`]: `--healthcheck`, the curl-free probe container health checks run.
//! - [`jobs`]: the offline `predict` and `drift-report` subcommands, over files.

pub mod api;
pub mod batching;
pub mod config;
pub mod explain;
pub mod features;
pub mod grpc;
pub mod healthcheck;
pub mod jobs;
pub mod listener;
pub mod model;
pub mod server;
pub mod telemetry;

/// The git commit this binary was built from (`GIT_COMMIT` at build time, else `git rev-parse`),
/// so `/manifest` can say exactly which code serves.
pub const BUILD_GIT_COMMIT: &str = env!("FERRUM_BUILD_GIT_COMMIT");

/// The crate version, reported beside the commit.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");
