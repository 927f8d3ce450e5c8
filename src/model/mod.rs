//! Models: what the manifest promises, what ONNX Runtime loads, and how raw outputs become
//! predictions. Plain functions and types, no HTTP, so the math is tested directly.
//!
//! The bottom layer: imports nothing of ours. What the layers above build per version (the
//! executor, the explanation assets) is attached by them at load time through
//! [`Repository::load_with`], so a [`LoadedModel`] holds only the model itself.

pub mod discover;
pub mod infer;
mod loaded;
pub mod manifest;
mod onnx_graph;
pub mod output;
pub mod repository;
pub mod runtime;
pub mod signature;
pub mod tabular;
pub mod tensor;
pub mod training_log;

use std::path::PathBuf;

pub use loaded::LoadedModel;
pub use manifest::{Manifest, ModelEntry, Task};
pub use output::{ModelOutput, Predictions, TensorPredictions};
pub use repository::{LoadOptions, Repository};
pub use runtime::Runtime;

/// Why the server could not start serving. Each message names the file or model at fault,
/// because this is what an operator reads in a crash-looping pod's log.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("model '{model}' version '{version}': {path} has sha256 {actual}, but the manifest says {expected}")]
    Sha256Mismatch {
        model: String,
        version: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model '{model}' version '{version}' does not match the manifest: {reason}")]
    Mismatch {
        model: String,
        version: String,
        reason: String,
    },
    #[error("model '{model}' version '{version}': {reason}")]
    Unsupported {
        model: String,
        version: String,
        reason: String,
    },
    #[error("model '{model}' version '{version}': {reason}")]
    Session {
        model: String,
        version: String,
        reason: String,
    },
    #[error("{0}")]
    Runtime(String),
    #[error("model '{model}' version '{version}': artifact {path}: {reason}")]
    Artifact {
        model: String,
        version: String,
        path: PathBuf,
        reason: String,
    },
    #[error("model '{model}' version '{version}' failed its warm-up inference: {source}")]
    Warmup {
        model: String,
        version: String,
        source: InferenceError,
    },
}

/// Why an inference call failed. With validated input this points at the model or runtime,
/// so the API reports it as a server error.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("unexpected output: {0}")]
    Output(String),
}

impl From<ort::Error> for InferenceError {
    fn from(e: ort::Error) -> Self {
        InferenceError::Runtime(e.to_string())
    }
}

impl From<infer::RunError> for InferenceError {
    /// A typed call's failure on inputs already checked against the signature: the runtime's,
    /// or an output the model gave that cannot be served.
    fn from(e: infer::RunError) -> Self {
        match e {
            infer::RunError::Runtime(reason) => InferenceError::Runtime(reason),
            other => InferenceError::Output(other.to_string()),
        }
    }
}

/// Why a request named a model the repository does not have.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    #[error("model '{name}' not found; available: {available}")]
    ModelNotFound { name: String, available: String },
    #[error("model '{name}' has no version '{version}'; available: {available}")]
    VersionNotFound {
        name: String,
        version: String,
        available: String,
    },
}

/// A row-major `f32` matrix in the model's feature order: the one input every model takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// `n_rows * n_cols` values, row after row.
    pub data: Vec<f32>,
    pub n_rows: usize,
    pub n_cols: usize,
}

impl Rows {
    /// Wraps a buffer; `data.len()` must be a multiple of `n_cols`.
    pub fn new(data: Vec<f32>, n_cols: usize) -> Rows {
        assert!(
            n_cols > 0 && data.len().is_multiple_of(n_cols),
            "ragged matrix"
        );
        Rows {
            n_rows: data.len() / n_cols,
            data,
            n_cols,
        }
    }

    /// Row `i` as a slice.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }
}
