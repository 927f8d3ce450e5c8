//! # Ferrum Serve
//!
//! A model-serving HTTP microservice whose promise is *reproducibility*: the prediction a client
//! gets is the one the training log recorded, from a model file whose sha256 the manifest names.
//!
//! ## Where a request goes
//! `api` (extract: the body read within its limits, the model the route names) → `input` (the
//! body parsed straight into an `f32` matrix in the model's feature order, or entity ids) →
//! `features` (entity ids looked up in the feature store: Feast's HTTP protocol, or a snapshot
//! read in-process) → `batching` (one call per request on a blocking thread, or concurrent
//! requests merged into one call on a scheduler thread) → `model` (ONNX Runtime, one pooled
//! session per call) → `api` (shape the response). `/explain` takes the same path, then
//! `explain` (SHAP over the model's background set, on a blocking thread) instead of a single
//! inference. The model a route names is looked up as a `serving::ServedModel`: the loaded
//! model with its executor and explanation assets, put together once at load time. `telemetry`
//! watches at the edges (a log line, metrics and a span per request); served rows are handed
//! to `monitor` (drift against the training baseline) after the answer.
//!
//! ## Layout
//! A module may import only the modules listed before it (`tests/module_graph.rs` checks this
//! on every `crate::` path, and that there is no import cycle):
//!
//! | module | owns | may import |
//! |---|---|---|
//! | [`model`] | `manifest.json`, the repository, ONNX Runtime sessions, raw outputs → predictions | nothing of ours |
//! | [`shutdown`] | the SIGINT/SIGTERM wait, as a future; SIGHUP (a rescan request) as a sequence of events | nothing of ours |
//! | [`storage`] | model repositories in object storage (`s3://`, `gs://`, `az://`, `https://`) mirrored into a sha256-checked local cache | `model` |
//! | [`lifecycle`] | the decisions of live rollouts: version policies, traffic split, shadow comparison, repository reconciliation and index states | `model` |
//! | [`telemetry`] | logs, OpenTelemetry spans, Prometheus metrics, timing headers | `model` |
//! | [`input`] | request rows and tensors → model input; `InputError` | `model` |
//! | [`explain`] | SHAP: Tree SHAP on the ONNX trees, exact enumeration, permutation sampling | `model` |
//! | [`batching`] | the executors and the dynamic batcher; `InferError` | `model`, `telemetry` |
//! | [`features`] | entity ids → rows: the Feast client, the snapshot store, the cache; `FeatureError` | `model`, `telemetry`, `input` |
//! | [`monitor`] | drift of served rows, predictions and explanations; the baselines | `model`, `explain`, `telemetry` |
//! | [`serving`] | `ServedModel` {model, executor, explanation assets}, assembled at load time; the live snapshot of loaded versions, the model controller that swaps it, the shadow worker | all of the above |
//! | [`api`] | the axum router, extract → call → shape; `ApiError` wraps the layers' errors | all of the above |
//! | [`grpc`] | the Open Inference Protocol over gRPC (`--grpc-port`) and gRPC health, on the same state and inference path as the HTTP API | `api` and all below it |
//!
//! The edges wire them together and are the only modules that see clap types: [`config`] (the
//! command line, with environment fallbacks), [`server`] (start-up order: bind, load, warm up,
//! ready; then drain on the shutdown future), [`listener`] (the accept loop: HTTP/1.1 and h2c with
//! hyper's header-read timeout), [`jobs`] (the offline `predict` and
//! `drift-report` subcommands, over files), [`healthcheck`] (`--healthcheck`, the curl-free
//! probe), and the binaries (`ferrum-serve`; `ferrum-feature-store`, the mock Feast server, whose
//! code lives in its own module tree under `src/bin/`). Domain enums (`ExecutionProviderChoice`,
//! `BatchingChoice`, `LogFormat`, `DataFormat`) carry their `clap::ValueEnum` derive in their
//! own module, so `config` names them without owning them.

pub mod api;
pub mod batching;
pub mod config;
pub mod explain;
pub mod features;
pub mod grpc;
pub mod healthcheck;
pub mod input;
pub mod jobs;
pub mod lifecycle;
pub mod listener;
pub mod model;
pub mod monitor;
pub mod server;
pub mod serving;
pub mod shutdown;
pub mod storage;
pub mod telemetry;

/// The git commit this binary was built from (`GIT_COMMIT` at build time, else `git rev-parse`),
/// so `/manifest` can say exactly which code serves.
pub const BUILD_GIT_COMMIT: &str = env!("FERRUM_BUILD_GIT_COMMIT");

/// The crate version, reported beside the commit.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");
