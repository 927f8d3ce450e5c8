//! What a serving pipeline can fail with: the layers' own errors, wrapped whole, and the few
//! failures that belong to the pipeline itself (capacity of the explanation slots, a worker
//! task lost); and what a repository `load` or `unload` can fail with. The API maps each to a
//! status and a stable code; gRPC to a status code.

use crate::batching::InferError;
use crate::explain::ExplainError;
use crate::features::FeatureError;
use crate::input::InputError;
use crate::lifecycle::{LifecycleError, ModelControlMode};
use crate::model::LookupError;

/// Why a predict, infer or explain call gave no answer, or a repository change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The body cannot become model input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Entity ids could not become rows.
    #[error(transparent)]
    Feature(#[from] FeatureError),
    /// The executor refused or failed the call.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The explanation cannot be given, or failed.
    #[error(transparent)]
    Explain(#[from] ExplainError),
    /// More rows than `/explain` takes; its limit is tighter than the request limit, so the
    /// message names the explain flag, not `MAX_REQUEST_ROWS`.
    #[error("'instances' has more than {limit} rows: /explain takes at most {limit} per request (the server's EXPLAIN_MAX_ROWS, --explain-max-rows)")]
    ExplainTooManyRows { limit: usize },
    /// All explanation slots computing and the explanation queue full: shed.
    #[error("explanations are at capacity ({running} computing and {queued} waiting: EXPLAIN_CONCURRENCY and EXPLAIN_MAX_QUEUED); retry shortly")]
    ExplainOverloaded { running: usize, queued: usize },
    /// The explanation slots closed: the server is draining.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A blocking-pool task (parsing, explaining, loading) panicked or was cancelled.
    #[error("{0}")]
    TaskFailed(String),
    /// A repository `load` or `unload` outside `explicit` mode (Triton refuses them too).
    #[error("explicit model load / unload is not allowed in --model-control-mode {}: start the server with --model-control-mode explicit", mode.as_str())]
    ControlDisabled { mode: ModelControlMode },
    /// The repository does not list the model.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A `load`'s body or configuration is invalid (the message names the field).
    #[error(transparent)]
    Rollout(#[from] LifecycleError),
    /// Some of the model's versions were refused or failed to load; what was serving serves.
    #[error("model '{model}' did not load: {reason}")]
    LoadFailed { model: String, reason: String },
    /// The manifest (or its rollout block) cannot be read: nothing changed.
    #[error("{0}")]
    Manifest(String),
}
