//! The model repository: every version the manifest lists, loaded, checked and warmed up, and
//! the lookup a request uses to find the one it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::manifest::{Manifest, ModelEntry};
use super::runtime::ExecutionProviderChoice;
use super::runtime::Runtime;
use super::{LoadError, LoadedModel, LookupError, Rows};

/// How to build sessions; from the server configuration.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub sessions_per_model: usize,
    pub intra_op_threads: usize,
    pub execution_provider: ExecutionProviderChoice,
    pub warmup_runs: usize,
}

/// All versions of one model; the highest version answers when none is named. `M` is what a
/// version is served as: the bare [`LoadedModel`], or what the layers above assemble around it
/// at load time (the serving layer's `ServedModel`), so the model layer owns the lookup without
/// knowing what is built on it.
pub struct ModelVersions<M = LoadedModel> {
    pub versions: BTreeMap<u64, Arc<M>>,
}

impl<M> ModelVersions<M> {
    /// The highest version.
    pub fn default_version(&self) -> &Arc<M> {
        self.versions
            .values()
            .next_back()
            .expect("a model has at least one version")
    }

    /// The version numbers, in ascending order, as the protocols spell them.
    pub fn names(&self) -> Vec<String> {
        self.versions.keys().map(u64::to_string).collect()
    }
}

/// Every model the server serves, each version as an `M` (see [`ModelVersions`]).
pub struct Repository<M = LoadedModel> {
    pub manifest: Manifest,
    pub models: BTreeMap<String, ModelVersions<M>>,
    /// Where the versions' folders are, for artifacts served as files (training logs).
    pub models_dir: PathBuf,
}

impl Repository {
    /// Loads every version in the manifest from `models_dir`: sha256 checked against the
    /// manifest, sessions built, signature checked, warm-up run, training log reproduced. Any failure stops the start.
    pub fn load(
        manifest: Manifest,
        models_dir: &Path,
        runtime: &Runtime,
        options: LoadOptions,
    ) -> Result<Repository, LoadError> {
        Repository::load_with(manifest, models_dir, runtime, options, |model, _| Ok(model))
    }
}

impl<M> Repository<M> {
    /// [`Repository::load`], each version then handed with its model bytes to `prepare`, which
    /// builds what it is served as (the layers above attach their explanation assets and
    /// executor here, so the model layer never imports them).
    pub fn load_with(
        manifest: Manifest,
        models_dir: &Path,
        runtime: &Runtime,
        options: LoadOptions,
        mut prepare: impl FnMut(LoadedModel, &[u8]) -> Result<M, LoadError>,
    ) -> Result<Repository<M>, LoadError> {
        let mut models: BTreeMap<String, ModelVersions<M>> = BTreeMap::new();
        for entry in &manifest.models {
            let (model, bytes) = load_entry(entry, models_dir, runtime, options)?;
            let model = prepare(model, &bytes)?;
            let version: u64 = entry.version.parse().expect("checked by the manifest");
            let versions = &mut models
                .entry(entry.name.clone())
                .or_insert_with(|| ModelVersions {
                    versions: BTreeMap::new(),
                })
                .versions;
            if versions.insert(version, Arc::new(model)).is_some() {
                return Err(LoadError::Mismatch {
                    model: entry.name.clone(),
                    version: entry.version.clone(),
                    reason: "listed twice in the manifest".into(),
                });
            }
        }
        Ok(Repository {
            manifest,
            models,
            models_dir: models_dir.to_path_buf(),
        })
    }

    /// The model version a request names: `name` defaults to the manifest's default model,
    /// `version` to the model's highest.
    pub fn get(&self, name: Option<&str>, version: Option<&str>) -> Result<&Arc<M>, LookupError> {
        let name = name.unwrap_or(&self.manifest.default_model);
        let versions = self
            .models
            .get(name)
            .ok_or_else(|| LookupError::ModelNotFound {
                name: name.to_string(),
                available: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        let Some(version) = version else {
            return Ok(versions.default_version());
        };
        version
            .parse::<u64>()
            .ok()
            .and_then(|v| versions.versions.get(&v))
            .ok_or_else(|| LookupError::VersionNotFound {
                name: name.to_string(),
                version: version.to_string(),
                available: versions.names().join(", "),
            })
    }
}

/// The sha256 of a byte string, in lowercase hex as the manifest writes it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The sha256 of a file, streamed (model files can be large), in lowercase hex. Blocking: call
/// it from a blocking thread.
pub fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Loads one version the manifest lists: its file read and sha256-checked against the entry,
/// sessions built, signature checked, warm-up run; the model bytes come back for what the layers
/// above read from them (the explanation trees). What both the start-up load and a live load or
/// reload of one version run, so a version is checked the same way whenever it is loaded.
/// Blocking: call it off the async workers.
pub fn load_entry(
    entry: &ModelEntry,
    models_dir: &Path,
    runtime: &Runtime,
    options: LoadOptions,
) -> Result<(LoadedModel, Vec<u8>), LoadError> {
    let started = std::time::Instant::now();
    let (model, bytes) = load_version(entry.clone(), models_dir, runtime, options)?;
    tracing::info!(
        model = %entry.name,
        version = %entry.version,
        sha256 = %entry.onnx.sha256,
        provider = model.provider,
        sessions = model.concurrency(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded and warmed up"
    );
    Ok((model, bytes))
}

fn load_version(
    entry: ModelEntry,
    models_dir: &Path,
    runtime: &Runtime,
    options: LoadOptions,
) -> Result<(LoadedModel, Vec<u8>), LoadError> {
    let path = models_dir.join(&entry.path).join(&entry.onnx.file);
    let bytes = std::fs::read(&path).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&entry.onnx.sha256) {
        return Err(LoadError::Sha256Mismatch {
            model: entry.name.clone(),
            version: entry.version.clone(),
            path,
            expected: entry.onnx.sha256.clone(),
            actual,
        });
    }
    let mut sessions = Vec::with_capacity(options.sessions_per_model);
    let mut provider = "cpu";
    for i in 0..options.sessions_per_model {
        let (session, used) = runtime
            .session(&bytes, options.intra_op_threads, options.execution_provider)
            .map_err(|e| match e {
                LoadError::Runtime(reason) => LoadError::Session {
                    model: entry.name.clone(),
                    version: entry.version.clone(),
                    reason,
                },
                other => other,
            })?;
        if let (0, Some(reason)) = (i, &used.fallback_reason) {
            tracing::warn!(
                model = %entry.name,
                version = %entry.version,
                reason = %reason,
                "CUDA execution provider not used; falling back to CPU"
            );
        }
        sessions.push(session);
        provider = used.name;
    }
    let model = LoadedModel::new(entry, sessions, provider, &bytes)?;
    warm_up(&model, options.warmup_runs)?;
    // Bits are promised on the CPU with one intra-op thread (the training log's own session):
    // other providers and thread counts may sum in another order, so there a difference is
    // reported, not fatal.
    let exact = model.provider == "cpu" && options.intra_op_threads == 1;
    match super::training_log::check(&model, models_dir) {
        Ok(0) => {}
        Ok(rows) => tracing::info!(
            model = %model.entry.name,
            version = %model.entry.version,
            rows,
            "training log reproduced exactly"
        ),
        Err(error) if exact => return Err(error),
        Err(error) => tracing::warn!(
            model = %model.entry.name,
            version = %model.entry.version,
            provider = model.provider,
            intra_op_threads = options.intra_op_threads,
            error = %error,
            "training log not reproduced bit for bit (promised on the CPU with one intra-op thread only)"
        ),
    }
    Ok((model, bytes))
}

/// Runs the model on a row of zeros (and checks the output's shape): the first inference pays
/// for ONNX Runtime's lazy allocations, so it must not be a client's.
fn warm_up(model: &LoadedModel, runs: usize) -> Result<(), LoadError> {
    if model.is_tensors() {
        warm_up_tensors(model, runs);
        return Ok(());
    }
    let rows = Rows::new(vec![0.0; model.n_features()], model.n_features());
    for _ in 0..runs.max(1) {
        let output = model.infer(&rows).map_err(|source| LoadError::Warmup {
            model: model.entry.name.clone(),
            version: model.entry.version.clone(),
            source,
        })?;
        debug_assert_eq!(output.len(), 1);
    }
    Ok(())
}

/// A tensors model's warm-up: zeros (empty strings) for each input, one row where the batch
/// dimension is dynamic. Zeros are not always a valid input of such a model (a category
/// lookup may refuse an empty string), so a failure is logged, not fatal: it says nothing
/// about the model's real inputs, and requests get the runtime's words if it is real.
fn warm_up_tensors(model: &LoadedModel, runs: usize) {
    let inputs = model.zero_inputs(1);
    for _ in 0..runs.max(1) {
        if let Err(error) = model.infer_tensors(&inputs, || {}) {
            tracing::warn!(
                model = %model.entry.name,
                version = %model.entry.version,
                error = %error,
                "warm-up on zero inputs failed; the first request pays ONNX Runtime's lazy allocations"
            );
            return;
        }
    }
}
