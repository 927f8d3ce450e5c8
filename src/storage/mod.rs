//! Model repositories in object storage: `--models-dir s3://bucket/prefix` (and `gs://`,
//! `az://`, `https://`). The repository is mirrored into a local cache directory and every
//! model file is checked against the manifest's sha256 *before* anything else reads it, so the
//! rest of the server keeps loading from a plain directory and never knows where the files came
//! from. Files whose hash still matches are reused across restarts instead of downloaded again.
//!
//! Owns: parsing repository URIs into [`object_store`] clients (credentials and endpoints from
//! the standard environment variables each builder reads: `AWS_*`, `GOOGLE_*`, `AZURE_*`), the
//! cache layout and its index, and [`RemoteRepository::sync`], which is written to be called
//! again on a rescan and says what changed. Knows nothing of HTTP serving or ONNX Runtime; it
//! reads only the manifest's plain types.
//!
//! May import `model` only.

mod cache;
mod location;
mod repository;

use std::path::PathBuf;

pub use location::{is_remote, Location};
pub use repository::{RefusedVersion, RemoteRepository, SyncReport};

/// Why a remote model repository could not be mirrored. Each message names the object at fault
/// by its full URI, because that is what an operator can look up in the bucket.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{uri}: not a usable repository location: {reason}")]
    Location { uri: String, reason: String },
    #[error("{object}: {source}")]
    Store {
        object: String,
        source: object_store::Error,
    },
    #[error("model '{model}' version '{version}': {object} is named by the manifest but is not in the repository")]
    Missing {
        model: String,
        version: String,
        object: String,
    },
    #[error("model '{model}' version '{version}': {object} has sha256 {actual}, but the manifest says {expected}")]
    Sha256Mismatch {
        model: String,
        version: String,
        object: String,
        expected: String,
        actual: String,
    },
    #[error("model cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where remote repositories are mirrored when `--model-cache-dir` is not set: under the
/// system temporary directory, which is writable in the container (an `emptyDir` on `/tmp`
/// in the Kubernetes manifests, kept across container restarts within a pod).
pub fn default_cache_dir() -> PathBuf {
    std::env::temp_dir().join("ferrum-serve").join("models")
}
