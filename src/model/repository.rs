//! The model repository: every version the manifest lists, loaded, checked and warmed up, and
//! the lookup a request uses to find the one it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::manifest::{Manifest, ModelEntry};
use super::runtime::ExecutionProviderChoice;
use super::runtime::{Runtime, SessionPool};
use super::{LoadError, LoadedModel, LookupError, Rows};
use crate::explain::{self, onnx::PostTransform, ExplainAssets};

/// How to build sessions; from the server configuration.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub sessions_per_model: usize,
    pub intra_op_threads: usize,
    pub execution_provider: ExecutionProviderChoice,
    pub warmup_runs: usize,
}

/// All versions of one model; the highest version answers when none is named.
pub struct ModelVersions {
    pub versions: BTreeMap<u64, Arc<LoadedModel>>,
}

impl ModelVersions {
    /// The highest version.
    pub fn default_version(&self) -> &Arc<LoadedModel> {
        self.versions
            .values()
            .next_back()
            .expect("a model has at least one version")
    }
}

/// Every model the server serves.
pub struct Repository {
    pub manifest: Manifest,
    pub models: BTreeMap<String, ModelVersions>,
    /// Where the versions' folders are, for artifacts served as files (training logs).
    pub models_dir: PathBuf,
}

impl Repository {
    /// Loads every version in the manifest from `models_dir`: sha256 checked against the
    /// manifest, sessions built, signature checked, warm-up run. Any failure stops the start.
    pub fn load(
        manifest: Manifest,
        models_dir: &Path,
        runtime: &Runtime,
        options: LoadOptions,
    ) -> Result<Repository, LoadError> {
        let mut models: BTreeMap<String, ModelVersions> = BTreeMap::new();
        for entry in &manifest.models {
            let started = std::time::Instant::now();
            let model = load_version(entry.clone(), models_dir, runtime, options)?;
            tracing::info!(
                model = %entry.name,
                version = %entry.version,
                sha256 = %entry.onnx.sha256,
                provider = model.provider,
                sessions = model.concurrency(),
                load_ms = started.elapsed().as_millis() as u64,
                "model loaded and warmed up"
            );
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
    pub fn get(
        &self,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<&Arc<LoadedModel>, LookupError> {
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
                available: versions
                    .versions
                    .keys()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The sha256 of a byte string, in lowercase hex as the manifest writes it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn load_version(
    entry: ModelEntry,
    models_dir: &Path,
    runtime: &Runtime,
    options: LoadOptions,
) -> Result<LoadedModel, LoadError> {
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
    let mut model = LoadedModel::new(entry, sessions, provider)?;
    warm_up(&model, options.warmup_runs)?;
    model.explain = load_explain(&model, &bytes, models_dir, runtime, options)?;
    Ok(model)
}

/// Prepares `/explain` for a version: its background set (a broken one stops the start, as
/// any artifact the manifest promises) and, when the graph is a tree ensemble, the trees read
/// from the model bytes, with a margin session if the model post-transforms its margins. Trees
/// that cannot be read only cost Tree SHAP: the model-agnostic methods still explain.
fn load_explain(
    model: &LoadedModel,
    bytes: &[u8],
    models_dir: &Path,
    runtime: &Runtime,
    options: LoadOptions,
) -> Result<Option<ExplainAssets>, LoadError> {
    let entry = &model.entry;
    let Some(file) = &entry.artifacts.background else {
        return Ok(None);
    };
    let path = models_dir.join(&entry.path).join(file);
    let background = explain::read_background(&path, &entry.feature_names).map_err(|reason| {
        LoadError::Artifact {
            model: entry.name.clone(),
            version: entry.version.clone(),
            path: path.clone(),
            reason,
        }
    })?;
    let trees = explain::onnx::read_trees(bytes, entry).and_then(|trees| {
        let Some(trees) = trees else {
            return Ok(None);
        };
        if trees.transform == PostTransform::None {
            return Ok(Some((trees, None)));
        }
        // Tree ensembles run on the CPU whatever the provider: so does their margin session.
        let margin_bytes = explain::onnx::margin_model(bytes)?;
        let (session, _) = runtime
            .session(
                &margin_bytes,
                options.intra_op_threads,
                ExecutionProviderChoice::Cpu,
            )
            .map_err(|e| format!("cannot load the margin model: {e}"))?;
        Ok(Some((trees, Some(SessionPool::new(vec![session])))))
    });
    let (trees, margin_session) = match trees {
        Ok(Some((trees, margin))) => (Some(trees), margin),
        Ok(None) => (None, None),
        Err(reason) => {
            tracing::warn!(
                model = %entry.name,
                version = %entry.version,
                reason = %reason,
                "cannot read the tree ensemble from the ONNX graph; /explain uses the model-agnostic methods"
            );
            (None, None)
        }
    };
    let assets =
        ExplainAssets::prepare(model, background, trees, margin_session).map_err(|source| {
            LoadError::Warmup {
                model: entry.name.clone(),
                version: entry.version.clone(),
                source,
            }
        })?;
    tracing::info!(
        model = %entry.name,
        version = %entry.version,
        background_rows = assets.background.n_rows,
        tree_shap = assets.trees.is_some(),
        "explanations ready"
    );
    Ok(Some(assets))
}

/// Runs the model on a row of zeros (and checks the output's shape): the first inference pays
/// for ONNX Runtime's lazy allocations, so it must not be a client's.
fn warm_up(model: &LoadedModel, runs: usize) -> Result<(), LoadError> {
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
