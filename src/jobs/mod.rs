//! Offline jobs: the same binary and model code as the server, over files instead of HTTP.
//!
//! - [`predict`]: batch inference from CSV or JSON lines to CSV or JSON lines.
//! - [`drift_report`]: feature and prediction drift of a file of rows as a JSON report, with an
//!   exit status a Kubernetes CronJob can alert on.
//! - [`models`]: `models add | list | check`, the model repository as the server reads it.
//!
//! Both stream their input in chunks of `--chunk-rows` rows ([`input`]), so memory stays flat
//! whatever the file size, and validate every row as `/predict` does: each feature present once
//! by name, each value a finite float32 (for a model served as named tensors, each input's
//! value of its own type). Both load the model exactly as the server does
//! (sha256 checked against the manifest, signature checked, warmed up).
//!
//! An edge: may import any layer; no layer imports it.

pub mod args;
pub mod drift_report;
pub mod input;
pub mod models;
pub mod predict;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::explain::ExplainAssets;
use crate::model::{
    discover, InferenceError, LoadError, LoadOptions, LoadedModel, LookupError, Manifest,
    Repository, Runtime,
};
use crate::monitor::baseline::{Baseline, BaselineError};
use crate::serving::load_explain;
use args::JobModelArgs;

/// A data file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Comma-separated values with a header row naming the columns.
    Csv,
    /// One JSON value per line (a row: an object by feature name or an array in model order).
    Jsonl,
}

/// Why a job failed. Every message names the file, line or model at fault.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("inference failed: {0}")]
    Inference(#[from] InferenceError),
    #[error("{failed} of {total} model versions failed their check")]
    CheckFailed { failed: usize, total: usize },
}

/// A model version loaded for a job, with what the job needs to find its artifacts.
pub struct JobModel {
    /// The loaded model (one session: jobs run one inference at a time).
    pub model: Arc<LoadedModel>,
    /// What explaining it needs, when the manifest lists a background set (drift reports).
    pub explain: Option<Arc<ExplainAssets>>,
    /// The manifest it came from (`raw` holds the artifact names).
    pub manifest: Manifest,
}

impl JobModel {
    /// The model's training baseline.
    pub fn baseline(&self, models_dir: &Path) -> Result<Baseline, JobError> {
        let entry = &self.model.entry;
        let raw = self.manifest.raw["models"].as_array().and_then(|models| {
            models.iter().find(|m| {
                m["name"] == entry.name.as_str() && m["version"] == entry.version.as_str()
            })
        });
        Ok(Baseline::read(models_dir, entry, raw)?)
    }
}

/// Loads the one model version a job names (default: the manifest's default model, its
/// highest version), as the server would.
pub fn load_model(args: &JobModelArgs) -> Result<JobModel, JobError> {
    let runtime = Runtime::load(&args.ort_dylib_path)?;
    let manifest = discover::manifest_for(&args.manifest, &args.models_dir, &runtime)?;
    // Resolve the name and version against the whole manifest first, for the API's messages.
    let name = args
        .model
        .clone()
        .unwrap_or_else(|| manifest.default_model.clone());
    let mut candidates: Vec<_> = manifest
        .models
        .iter()
        .filter(|m| m.name == name)
        .cloned()
        .collect();
    if candidates.is_empty() {
        let mut available: Vec<&str> = manifest.models.iter().map(|m| m.name.as_str()).collect();
        available.dedup();
        return Err(LookupError::ModelNotFound {
            name,
            available: available.join(", "),
        }
        .into());
    }
    candidates.sort_by_key(|m| m.version.parse::<u64>().unwrap_or(0));
    let chosen = match &args.model_version {
        None => candidates.pop(),
        Some(version) => candidates
            .iter()
            .position(|m| version.parse::<u64>().ok() == m.version.parse().ok())
            .map(|i| candidates.swap_remove(i)),
    };
    let Some(entry) = chosen else {
        return Err(LookupError::VersionNotFound {
            name,
            version: args.model_version.clone().unwrap_or_default(),
            available: candidates
                .iter()
                .map(|m| m.version.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    };
    let one = Manifest {
        default_model: entry.name.clone(),
        models: vec![entry],
        raw: manifest.raw.clone(),
    };
    let options = LoadOptions {
        sessions_per_model: 1,
        intra_op_threads: args.intra_op_threads,
        execution_provider: args.execution_provider,
        warmup_runs: 1,
    };
    let repository =
        Repository::load_with(one, &args.models_dir, &runtime, options, |model, bytes| {
            let explain = load_explain(&model, bytes, &args.models_dir, &runtime, options)?;
            Ok((Arc::new(model), explain.map(Arc::new)))
        })?;
    let (model, explain) = repository.get(None, None)?.as_ref().clone();
    Ok(JobModel {
        model,
        explain,
        manifest,
    })
}

/// The format of `path` when not given: `.csv` is CSV, anything else JSON lines.
pub fn format_of(path: &Path, given: Option<DataFormat>) -> DataFormat {
    given.unwrap_or_else(|| {
        let csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if csv {
            DataFormat::Csv
        } else {
            DataFormat::Jsonl
        }
    })
}

/// True for the `-` path (stdin or stdout).
pub fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// A progress bar over the input's bytes, drawn on stderr only when stderr is a terminal (a
/// CronJob's log gets no control characters).
pub fn progress_bar(input: &Path) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total = (!is_std(input))
        .then(|| std::fs::metadata(input).ok().map(|m| m.len()))
        .flatten();
    let bar = match total {
        Some(bytes) => ProgressBar::new(bytes).with_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {bytes} {bytes_per_sec} {msg}")
                .expect("a valid template"),
        ),
    };
    Some(bar)
}

/// The process's peak resident memory (Linux: `VmHWM`), logged at the end of a job so a
/// CronJob's log shows whether its memory limit fits; `None` where it cannot be read.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
