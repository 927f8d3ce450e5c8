//! # Ferrum Serve
//!
//! A model-serving HTTP microservice whose promise is *reproducibility*: the prediction a client
//! gets is the one the training log recorded, from a model file whose sha256 the manifest names.
//!
//! ## Where a request goes
//! `api` extracts what the route gives — the model selector (`api::select`: which of the
//! forms `/predict`, `/models/{name}/predict`, `/models/{name}/versions/{v}/predict` was
//! called; the same for `/explain` and `/v2`, one `api::select::Family` each, which the router
//! and the OpenAPI document both read) and the body, read within its limits — and calls
//! one pipeline of `serving` for the kind of call:
//!
//! - `serving::pipeline::predict` (`/predict`): `input` parses the body straight into an `f32`
//!   matrix in the model's feature order, or entity ids (off the async workers when large) →
//!   `features` looks entity ids up (Feast's HTTP protocol, or a snapshot read in-process) in a
//!   `feature_lookup` span → `serving::pipeline::infer`: `batching` runs one call per request
//!   on a blocking thread, or merges concurrent requests into one call on a scheduler thread,
//!   on `model`'s pooled ONNX Runtime sessions, in an `inference` span with the queue and
//!   inference metrics.
//! - `/v2` and gRPC parse tensors with their own decoders (`input::tensors`, `grpc`) and take
//!   the same `serving::pipeline::infer` step.
//! - `serving::explanation::explain` (`/explain`): the same parse and lookup, then an
//!   explanation slot and `explain` (SHAP over the model's background set) on a blocking thread.
//!
//! `api` then shapes the answer (`api::answer`: the body, `x-ferrum-version` and the timing
//! headers, the same on every inference route) and maps any failure to one status and stable
//! code (`ApiError`, which wraps the layers' errors). The model a route names is a
//! `serving::ServedModel`: the loaded model with its executor and explanation assets, put
//! together once at load time. `telemetry` watches at the edges (a log line, metrics and a span
//! per request); served rows go to `monitor` (drift against the training baseline) after the
//! answer. The offline `jobs` read files and call the same model step (`LoadedModel::infer`)
//! synchronously, without the server's queues.
//!
//! ## Layout
//! A module may import only the modules listed before it (`tests/module_graph.rs` checks this
//! on every `crate::` path, and that there is no import cycle):
//!
//! | module | owns | may import |
//! |---|---|---|
//! | [`model`] | `manifest.json` (or, without one, the entries read from the ONNX files), the repository, ONNX Runtime sessions, raw outputs → predictions | nothing of ours |
//! | [`shutdown`] | the SIGINT/SIGTERM wait, as a future; SIGHUP (a rescan request) as a sequence of events | nothing of ours |
//! | [`storage`] | model repositories in object storage (`s3://`, `gs://`, `az://`, `https://`) mirrored into a sha256-checked local cache | `model` |
//! | [`lifecycle`] | the decisions of live rollouts: version policies, traffic split, shadow comparison, repository reconciliation and index states | `model` |
//! | [`telemetry`] | logs, OpenTelemetry spans, Prometheus metrics, timing headers | `model` |
//! | [`input`] | request rows and tensors → model input; `InputError` | `model` |
//! | [`explain`] | SHAP: Tree SHAP on the ONNX trees, exact enumeration, permutation sampling | `model` |
//! | [`batching`] | the executors and the dynamic batcher; `InferError` | `model`, `telemetry` |
//! | [`features`] | entity ids → rows: the Feast client, the snapshot store, the cache; `FeatureError` | `model`, `telemetry`, `input` |
//! | [`monitor`] | drift of served rows, predictions and explanations; the baselines | `model`, `explain`, `telemetry` |
//! | [`serving`] | `ServedModel` {model, executor, explanation assets}, assembled at load time; one pipeline per kind of call (predict, infer, explain) owning its spans, metrics and timing; the live snapshot of loaded versions, the model controller that swaps it, the shadow worker; `ServingError` | all of the above |
//! | [`api`] | the axum router, one handler per route family: extract → call a `serving` pipeline → shape; `ApiError` wraps the layers' errors | all of the above |
//! | [`grpc`] | the Open Inference Protocol over gRPC (`--grpc-port`) and gRPC health, on the same state and inference path as the HTTP API | `api` and all below it |
//!
//! The edges wire them together and are the only modules that see clap types: [`config`] (the
//! command line, with environment fallbacks), [`server`] (start-up order: bind, load, warm up,
//! ready; then drain on the shutdown future), [`listener`] (the accept loop: HTTP/1.1 and h2c with
//! hyper's header-read timeout), [`jobs`] (the offline `predict` and
//! `drift-report` subcommands, over files, and `models add | list | check`), [`healthcheck`] (`--healthcheck`, the curl-free
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
