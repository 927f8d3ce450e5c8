//! The served model, the load that assembles it, and the pipelines every route calls. A
//! [`ServedModel`] is one model version as the server serves it: the loaded model (`model`),
//! the executor its requests go through (`batching`) and, when the manifest lists a background
//! set, what `/explain` needs (`explain`). It is put together here, at load time, so the model
//! layer knows nothing of explanations or queues. One pipeline per kind of call —
//! [`pipeline::predict`] (with [`pipeline::infer`], the inference step of `/v2` and gRPC too)
//! and [`explanation::explain`] — owns its spans, metrics and timing, so every route gets the same.
//!
//! What serves changes while the server runs: [`live`] holds the current snapshot of loaded
//! versions with each model's routing (split, shadow), [`reconcile`] is the one task that loads,
//! reloads and unloads versions and swaps the snapshot, and [`shadow`] runs the copies of
//! requests a shadow version receives. The decisions (policy, split, plan, states) are
//! [`crate::lifecycle`]'s; this layer carries them out.
//!
//! May import `model`, `telemetry`, `input`, `explain`, `batching`, `features`, `monitor` and
//! `lifecycle`; never `api`, `config`, `server` or `jobs` (the edges call it, not the other way
//! round).

pub mod error;
pub mod explanation;
pub mod live;
pub mod pipeline;
pub mod reconcile;
pub mod shadow;

pub use error::ServingError;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batching::{self, BatchingChoice, BatchingConfig, Executor};
use crate::explain::columns::ColumnLayout;
use crate::explain::{self, onnx::PostTransform, ExplainAssets};
use crate::input::typed::tensor_rows;
use crate::model::repository::load_entry;
use crate::model::runtime::{ExecutionProviderChoice, SessionPool};
use crate::model::{LoadError, LoadOptions, LoadedModel, ModelEntry, Repository, Runtime};

/// One model version ready to serve: the model with what the layers above built for it.
pub struct ServedModel {
    /// The loaded, checked and warmed-up model.
    pub model: Arc<LoadedModel>,
    /// How requests reach the sessions: per request on the blocking pool, or the dynamic
    /// batcher.
    pub executor: Executor,
    /// What `/explain` needs: the background rows and, when the graph is a tree ensemble, the
    /// parsed trees. `None` when the manifest lists no background for this version.
    pub explain: Option<Arc<ExplainAssets>>,
}

/// A served model reads as its model (entry, features, inference), so code that only needs the
/// model takes `&LoadedModel` and is handed a served one unchanged.
impl Deref for ServedModel {
    type Target = LoadedModel;

    fn deref(&self) -> &LoadedModel {
        &self.model
    }
}

/// Every model version the server serves.
pub type ServedRepository = Repository<ServedModel>;

/// How versions are loaded and assembled, from the configuration: the same at start
/// ([`reconcile::ModelController::start`]) and for every live load or reload, so a version loaded while the server runs is checked (sha256,
/// signature, warm-up) and built (explanations, executor) exactly as one loaded at start.
#[derive(Clone)]
pub struct Loader {
    pub runtime: Runtime,
    /// The local repository the manifest's paths are relative to.
    pub models_dir: PathBuf,
    pub options: LoadOptions,
    pub batching: BatchingChoice,
    pub batching_config: BatchingConfig,
}

impl Loader {
    /// Loads and assembles one version the manifest lists. Blocking: call it off the async
    /// workers.
    pub fn load_version(&self, entry: &ModelEntry) -> Result<ServedModel, LoadError> {
        let (model, bytes) = load_entry(entry, &self.models_dir, &self.runtime, self.options)?;
        self.assemble(model, &bytes)
    }

    /// A loaded model with its explanation assets, then its executor.
    fn assemble(&self, model: LoadedModel, bytes: &[u8]) -> Result<ServedModel, LoadError> {
        let explain = load_explain(&model, bytes, &self.models_dir, &self.runtime, self.options)?
            .map(Arc::new);
        let model = Arc::new(model);
        let executor = batching::executor_for(&model, self.batching, self.batching_config);
        Ok(ServedModel {
            model,
            executor,
            explain,
        })
    }
}

/// A tensors model's explanation assets: its column layout, and the background CSV at `path`
/// read as `/predict` would read those rows. Every failure is the artifact's: a background was
/// promised for a model it cannot serve.
pub fn column_assets(model: &LoadedModel, path: &Path) -> Result<ExplainAssets, String> {
    let layout = ColumnLayout::of(&model.signature, &model.entry.feature_names)?;
    let rows = layout.background_rows(path, &model.signature)?;
    let background =
        tensor_rows(&rows, &model.signature).map_err(|e| format!("as the model's rows: {e}"))?;
    ExplainAssets::prepare_columns(model, layout, background).map_err(|e| e.to_string())
}

/// Prepares `/explain` for a version: its background set (a broken one stops the start, as
/// any artifact the manifest promises) and, when the graph is a tree ensemble, the trees read
/// from the model bytes, with a margin session if the model post-transforms its margins. Trees
/// that cannot be read only cost Tree SHAP: the model-agnostic methods still explain.
pub fn load_explain(
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
    let artifact = |reason: String| LoadError::Artifact {
        model: entry.name.clone(),
        version: entry.version.clone(),
        path: path.clone(),
        reason,
    };
    if model.is_tensors() {
        let assets = column_assets(model, &path).map_err(artifact)?;
        tracing::info!(
            model = %entry.name,
            version = %entry.version,
            background_rows = assets.background.n_rows,
            features = assets.background.n_cols,
            "explanations ready, column by column"
        );
        return Ok(Some(assets));
    }
    let background = explain::read_background(&path, &entry.feature_names).map_err(artifact)?;
    let trees = explain::onnx::read_trees(bytes, entry).and_then(|trees| {
        let Some(trees) = trees else {
            return Ok(None);
        };
        if trees.transform == PostTransform::None {
            return Ok(Some((trees, None)));
        }
        // Tree ensembles run on the CPU whatever the provider: so does their margin session.
        let margin_bytes = explain::onnx::margin_model(bytes, &trees.margin_output)?;
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
