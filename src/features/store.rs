//! The configured feature store ([`FeatureStore`]): its backend (Feast over HTTP, in-process
//! snapshots, or none), its last known health, and the check that it serves the snapshot the
//! manifest names.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::assemble::{assemble, Cell};
use super::cache::RowCache;
use super::client::{ClientOptions, FeastClient};
use super::protocol::{self, FieldStatus};
use super::snapshot::{self, Snapshot};
use super::{FeatureError, StoreUri, TraceContext};
use crate::model::manifest::FeatureStoreSpec;
use crate::model::{Manifest, ModelEntry, Rows};
use crate::telemetry::metrics;

/// How the store is reached and how patiently it is asked: the `--feature-store-*` flags, as
/// plain values (the clap definitions stay in `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `FEATURE_STORE_URI`, unparsed ([`StoreUri::parse`]).
    pub uri: Option<String>,
    /// Time budget of one lookup, retries included.
    pub timeout_ms: u64,
    /// How long to wait for a connection before calling the store unreachable.
    pub connect_timeout_ms: u64,
    /// Retries after a connection error or a 5xx answer.
    pub retries: u32,
    /// First retry's backoff; doubled per retry, with jitter.
    pub backoff_ms: u64,
    /// How long looked-up rows are cached (0: no cache).
    pub cache_ttl_ms: u64,
    /// Most rows the cache holds.
    pub cache_entries: usize,
    /// How often a remote store is re-checked.
    pub check_interval_ms: u64,
    /// Readiness fails until every model's snapshot is verified.
    pub require_snapshot_match: bool,
}

/// A model version, as the store's bookkeeping names it.
type ModelKey = (String, String);

fn key_of(entry: &ModelEntry) -> ModelKey {
    (entry.name.clone(), entry.version.clone())
}

/// A model's snapshot in the in-process store, with the model's features mapped to its
/// columns once at start (or why they cannot be).
struct ModelSnapshot {
    snapshot: Arc<Snapshot>,
    columns: Result<Vec<usize>, String>,
    origin: String,
}

enum Backend {
    Disabled,
    Snapshots(HashMap<ModelKey, ModelSnapshot>),
    Feast {
        client: FeastClient,
        cache: Option<RowCache>,
    },
}

/// Whether the store is reachable, as the last check saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreState {
    /// Not checked yet.
    Unknown,
    /// Answered its health check.
    Up,
    /// Did not answer its health check.
    Down,
    /// Read in-process: always there.
    InProcess,
    /// Entity lookups are off.
    Disabled,
}

impl StoreState {
    fn as_str(self) -> &'static str {
        match self {
            StoreState::Unknown => "unknown",
            StoreState::Up => "up",
            StoreState::Down => "down",
            StoreState::InProcess => "in_process",
            StoreState::Disabled => "disabled",
        }
    }
}

/// What the last check found.
struct Status {
    state: StoreState,
    error: Option<String>,
    checked: Option<Instant>,
    /// The snapshot id the store serves for each model version, when it says.
    actual: HashMap<ModelKey, String>,
    /// Why `actual` is empty, when the store does not report ids.
    ids_note: Option<String>,
}

/// The manifest's promise for one model version.
struct Expected {
    key: ModelKey,
    snapshot_id: String,
    /// Where the store keeps this model's features (to find its snapshot id).
    spec: FeatureStoreSpec,
}

/// The configured feature store: the backend, its last known health, and the snapshot check
/// against the manifest. Shared by every request; cheap to use concurrently.
pub struct FeatureStore {
    /// What FEATURE_STORE_URI resolved to, for `/health` and messages.
    uri: String,
    backend: Backend,
    /// `--require-snapshot-match`: readiness fails until every snapshot is verified.
    require_snapshot_match: bool,
    /// How often the monitor re-checks a remote store.
    check_interval: Duration,
    expected: Vec<Expected>,
    status: RwLock<Status>,
}

impl FeatureStore {
    /// A store that refuses every lookup; what a server without a store configured uses.
    pub fn disabled() -> FeatureStore {
        FeatureStore {
            uri: "none".into(),
            backend: Backend::Disabled,
            require_snapshot_match: false,
            check_interval: Duration::from_secs(10),
            expected: Vec::new(),
            status: RwLock::new(Status {
                state: StoreState::Disabled,
                error: None,
                checked: None,
                actual: HashMap::new(),
                ids_note: None,
            }),
        }
    }

    /// Opens the store `args` configure for the models in `manifest`. In-process snapshots are
    /// read here (on a blocking thread); a remote store is only checked later, by
    /// [`FeatureStore::check`], so a down store never stops the API from starting.
    pub async fn open(
        args: &StoreConfig,
        manifest: &Manifest,
        models_dir: &Path,
    ) -> Result<FeatureStore, String> {
        let uri = StoreUri::parse(args.uri.as_deref())?;
        let expected: Vec<Expected> = manifest
            .models
            .iter()
            .filter_map(|m| {
                Some(Expected {
                    key: key_of(m),
                    snapshot_id: m.dataset.feature_snapshot_id.clone(),
                    spec: m.feature_store.clone()?,
                })
            })
            .collect();
        let (shown, backend, state, actual) = match uri {
            StoreUri::Disabled => {
                let mut store = FeatureStore::disabled();
                store.require_snapshot_match = args.require_snapshot_match;
                return Ok(store);
            }
            StoreUri::Embedded | StoreUri::File(_) => {
                let (shown, root) = match uri {
                    StoreUri::File(path) => (format!("file://{}", path.display()), path),
                    _ => (
                        format!(
                            "embedded ({}/<model>/<version>/snapshot.csv)",
                            models_dir.display()
                        ),
                        models_dir.to_path_buf(),
                    ),
                };
                let entries = manifest.models.clone();
                let raw = manifest.raw.clone();
                let snapshots =
                    tokio::task::spawn_blocking(move || load_snapshots(&entries, &raw, &root))
                        .await
                        .map_err(|e| format!("loading feature snapshots failed: {e}"))??;
                let actual = snapshots
                    .iter()
                    .map(|(k, s)| (k.clone(), s.snapshot.id.clone()))
                    .collect();
                (
                    shown,
                    Backend::Snapshots(snapshots),
                    StoreState::InProcess,
                    actual,
                )
            }
            StoreUri::Http(base) => {
                let client = FeastClient::new(
                    &base,
                    ClientOptions {
                        timeout: Duration::from_millis(args.timeout_ms.max(1)),
                        connect_timeout: Duration::from_millis(args.connect_timeout_ms.max(1)),
                        retries: args.retries,
                        backoff: Duration::from_millis(args.backoff_ms),
                    },
                )?;
                let cache = (args.cache_ttl_ms > 0).then(|| {
                    RowCache::new(
                        Duration::from_millis(args.cache_ttl_ms),
                        args.cache_entries.max(1),
                    )
                });
                (
                    base,
                    Backend::Feast { client, cache },
                    StoreState::Unknown,
                    HashMap::new(),
                )
            }
        };
        let store = FeatureStore {
            uri: shown,
            backend,
            require_snapshot_match: args.require_snapshot_match,
            check_interval: Duration::from_millis(args.check_interval_ms.max(100)),
            expected,
            status: RwLock::new(Status {
                state,
                error: None,
                checked: (state == StoreState::InProcess).then(Instant::now),
                actual,
                ids_note: None,
            }),
        };
        store.log_snapshot_matches(None);
        Ok(store)
    }

    /// Where lookups go, as configured (for logs and `/health`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// True when [`FeatureStore::lookup`] can answer `model`'s entity ids at all: the store is
    /// on, the manifest names the model's features in it and, for in-process snapshots, the
    /// model's snapshot was read. The OpenAPI document offers `entity_ids` only then, since
    /// otherwise every such request is refused whatever its ids.
    pub fn looks_up(&self, model: &ModelEntry) -> bool {
        if model.feature_store.is_none() {
            return false;
        }
        match &self.backend {
            Backend::Disabled => false,
            Backend::Snapshots(snapshots) => snapshots
                .get(&key_of(model))
                .is_some_and(|found| found.columns.is_ok()),
            Backend::Feast { .. } => true,
        }
    }

    /// Looks up `ids` for `model`, one store call for the batch, and returns the rows in
    /// request order.
    pub async fn lookup(
        &self,
        model: &ModelEntry,
        ids: &[String],
        trace: &TraceContext,
    ) -> Result<Rows, FeatureError> {
        let Some(spec) = &model.feature_store else {
            return Err(FeatureError::Disabled(format!(
                "model '{}' version '{}' names no feature_store in the manifest",
                model.name, model.version
            )));
        };
        match &self.backend {
            Backend::Disabled => Err(FeatureError::Disabled(
                "this server runs with FEATURE_STORE_URI=none".into(),
            )),
            Backend::Snapshots(snapshots) => {
                let Some(found) = snapshots.get(&key_of(model)) else {
                    return Err(FeatureError::Disabled(format!(
                        "no feature snapshot is loaded for model '{}' version '{}'",
                        model.name, model.version
                    )));
                };
                let columns = found
                    .columns
                    .as_ref()
                    .map_err(|e| FeatureError::StoreError(format!("{}: {e}", found.origin)))?;
                let rows: Vec<Option<&[Option<f64>]>> =
                    ids.iter().map(|id| found.snapshot.row(id)).collect();
                assemble(
                    model,
                    &spec.defaults,
                    ids,
                    &found.origin,
                    |j, i| match rows[j] {
                        None => Cell::Absent(FieldStatus::NotFound),
                        Some(row) => match row[columns[i]] {
                            Some(v) => Cell::Value(v),
                            None => Cell::Absent(FieldStatus::NullValue),
                        },
                    },
                )
            }
            Backend::Feast { client, cache } => {
                self.lookup_feast(client, cache.as_ref(), model, spec, ids, trace)
                    .await
            }
        }
    }

    /// Remote lookup: repeated ids are asked once, cached rows are not asked at all.
    async fn lookup_feast(
        &self,
        client: &FeastClient,
        cache: Option<&RowCache>,
        model: &ModelEntry,
        spec: &FeatureStoreSpec,
        ids: &[String],
        trace: &TraceContext,
    ) -> Result<Rows, FeatureError> {
        let width = model.feature_names.len();
        let model_key = format!("{}@{}", model.name, model.version);
        // Row of each distinct id: cached, or to be fetched (index into `misses`).
        enum Source {
            Cached(Arc<[f32]>),
            Fetched(usize),
        }
        let mut sources: HashMap<&str, Source> = HashMap::with_capacity(ids.len());
        let mut misses: Vec<String> = Vec::new();
        for id in ids {
            if sources.contains_key(id.as_str()) {
                continue;
            }
            let source = match cache.and_then(|c| c.get(&model_key, id)) {
                Some(row) => Source::Cached(row),
                None => {
                    misses.push(id.clone());
                    Source::Fetched(misses.len() - 1)
                }
            };
            sources.insert(id, source);
        }
        if cache.is_some() {
            let hits = (sources.len() - misses.len()) as u64;
            metrics::record_feature_store_cache(hits, misses.len() as u64);
            tracing::Span::current().record("cache_hits", hits as i64);
        }
        let fetched = if misses.is_empty() {
            Rows::default()
        } else {
            let started = Instant::now();
            let fetched = client.fetch_rows(model, spec, &misses, trace).await;
            let error_kind = fetched.as_ref().err().map(FeatureError::kind);
            metrics::record_feature_store_call(started.elapsed(), error_kind);
            fetched?
        };
        if let Some(cache) = cache {
            for (k, id) in misses.iter().enumerate() {
                cache.put(&model_key, id, fetched.row(k));
            }
        }
        let mut data = Vec::with_capacity(ids.len() * width);
        for id in ids {
            match &sources[id.as_str()] {
                Source::Cached(row) => data.extend_from_slice(row),
                Source::Fetched(k) => data.extend_from_slice(fetched.row(*k)),
            }
        }
        Ok(Rows::new(data, width))
    }

    /// Re-checks a remote store: its health, and which snapshot it serves per model. Logs
    /// when reachability or a snapshot match changes. In-process stores need no check.
    pub async fn check(&self) {
        let Backend::Feast { client, .. } = &self.backend else {
            return;
        };
        let health = client.health().await;
        let ids = match &health {
            Ok(()) => Some(client.snapshot_ids().await),
            Err(_) => None,
        };
        let before = self.snapshot_matches();
        {
            let mut status = self.status.write().unwrap_or_else(|p| p.into_inner());
            let was = status.state;
            status.checked = Some(Instant::now());
            match &health {
                Ok(()) => {
                    status.state = StoreState::Up;
                    status.error = None;
                    if was != StoreState::Up {
                        tracing::info!(uri = %self.uri, "feature store is up");
                    }
                }
                Err(e) => {
                    status.state = StoreState::Down;
                    status.error = Some(e.clone());
                    if was != StoreState::Down {
                        tracing::warn!(uri = %self.uri, error = %e, "feature store is down; entity-id requests fail with 503 until it is back");
                    }
                }
            }
            match ids {
                Some(Ok(Some(ids))) => {
                    status.ids_note = None;
                    for expected in &self.expected {
                        match store_id_for(&expected.spec, &ids) {
                            Some(id) => {
                                status.actual.insert(expected.key.clone(), id);
                            }
                            None => {
                                status.actual.remove(&expected.key);
                            }
                        }
                    }
                }
                Some(Ok(None)) => {
                    status.actual.clear();
                    status.ids_note = Some(
                        "the store does not report snapshot ids (GET /snapshot-id): unverified"
                            .into(),
                    );
                }
                Some(Err(e)) => {
                    status.ids_note = Some(format!("cannot read the store's snapshot ids: {e}"));
                }
                // Down: keep what was last verified; the data did not change by going away.
                None => {}
            }
        }
        self.log_snapshot_matches(Some(&before));
    }

    /// Runs [`FeatureStore::check`] now and then every `--feature-store-check-interval-ms`,
    /// for the life of the process. Nothing to do for in-process stores.
    pub fn spawn_monitor(self: &Arc<Self>) {
        if !matches!(self.backend, Backend::Feast { .. }) {
            return;
        }
        let store = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                store.check().await;
                tokio::time::sleep(store.check_interval).await;
            }
        });
    }

    /// Per model version: `Some(true)` when the store serves the manifest's snapshot,
    /// `Some(false)` when it serves another, `None` when unknown.
    fn snapshot_matches(&self) -> BTreeMap<ModelKey, Option<bool>> {
        let status = self.status.read().unwrap_or_else(|p| p.into_inner());
        self.expected
            .iter()
            .map(|e| {
                let verdict = match status.actual.get(&e.key) {
                    _ if e.snapshot_id.is_empty() => None,
                    Some(actual) => Some(actual.eq_ignore_ascii_case(&e.snapshot_id)),
                    None => None,
                };
                (e.key.clone(), verdict)
            })
            .collect()
    }

    fn log_snapshot_matches(&self, before: Option<&BTreeMap<ModelKey, Option<bool>>>) {
        let now = self.snapshot_matches();
        let status = self.status.read().unwrap_or_else(|p| p.into_inner());
        for expected in &self.expected {
            let verdict = now.get(&expected.key).copied().flatten();
            let was = before.and_then(|b| b.get(&expected.key).copied().flatten());
            if before.is_some() && was == verdict {
                continue;
            }
            let (model, version) = &expected.key;
            let actual = status.actual.get(&expected.key).map(String::as_str);
            match verdict {
                Some(true) => {
                    tracing::info!(model = %model, version = %version, snapshot_id = %expected.snapshot_id, uri = %self.uri, "feature store serves the manifest's feature snapshot")
                }
                Some(false) => {
                    tracing::warn!(model = %model, version = %version, expected = %expected.snapshot_id, actual = actual.unwrap_or(""), uri = %self.uri, require_snapshot_match = self.require_snapshot_match, "feature snapshot mismatch: the store serves other data than the model was validated on")
                }
                None if before.is_some() => {
                    tracing::warn!(model = %model, version = %version, uri = %self.uri, "feature snapshot no longer verified")
                }
                None => {}
            }
        }
    }

    /// `Err` while `--require-snapshot-match` is set and some model's snapshot is not verified
    /// to match the manifest: the server then reports not ready.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.require_snapshot_match || matches!(self.backend, Backend::Disabled) {
            return Ok(());
        }
        if self
            .snapshot_matches()
            .values()
            .all(|verdict| *verdict == Some(true))
        {
            Ok(())
        } else {
            Err("the feature store's snapshot is not verified to match the manifest's feature_snapshot_id (--require-snapshot-match; see /health)")
        }
    }

    /// The store's part of `/health`: where it is, whether it answers, and per model whether
    /// it serves the snapshot the manifest names.
    pub fn health(&self) -> Value {
        let matches = self.snapshot_matches();
        let status = self.status.read().unwrap_or_else(|p| p.into_inner());
        let snapshots: Vec<Value> = self
            .expected
            .iter()
            .map(|e| {
                json!({
                    "model": e.key.0,
                    "version": e.key.1,
                    "expected": e.snapshot_id,
                    "actual": status.actual.get(&e.key),
                    "match": matches.get(&e.key).copied().flatten(),
                })
            })
            .collect();
        let overall = if matches.values().any(|v| *v == Some(false)) {
            Some(false)
        } else if !matches.is_empty() && matches.values().all(|v| *v == Some(true)) {
            Some(true)
        } else {
            None
        };
        let (kind, cache) = match &self.backend {
            Backend::Disabled => ("disabled", Value::Null),
            Backend::Snapshots(_) => ("in_process", Value::Null),
            Backend::Feast { cache, .. } => (
                "feast_http",
                cache.as_ref().map_or(Value::Null, RowCache::describe),
            ),
        };
        json!({
            "uri": self.uri,
            "kind": kind,
            "state": status.state.as_str(),
            "error": status.error,
            "last_check_seconds_ago": status.checked.map(|c| c.elapsed().as_secs_f64()),
            "snapshot_match": overall,
            "snapshot_note": status.ids_note,
            "require_snapshot_match": self.require_snapshot_match,
            "snapshots": snapshots,
            "cache": cache,
        })
    }
}

/// The id a store reports for a model: by its feature service, else by its feature view.
fn store_id_for(spec: &FeatureStoreSpec, ids: &protocol::SnapshotIds) -> Option<String> {
    spec.feature_service
        .as_ref()
        .and_then(|s| ids.feature_services.get(s))
        .or_else(|| {
            spec.feature_view
                .as_ref()
                .and_then(|v| ids.feature_views.get(v))
        })
        .cloned()
}

/// Reads each model's snapshot: `<root>/<model path>/<snapshot artifact>` when `root` is a
/// directory, or the one file `root` for every model. A model whose snapshot lacks one of its
/// features still loads (the lookup then answers `feature_store_error`), so one bad file does
/// not stop the other models.
fn load_snapshots(
    entries: &[ModelEntry],
    raw: &Value,
    root: &Path,
) -> Result<HashMap<ModelKey, ModelSnapshot>, String> {
    let single = root.is_file().then(|| Snapshot::load(root).map(Arc::new));
    let single = match single {
        Some(Err(e)) => return Err(e.to_string()),
        Some(Ok(s)) => Some(s),
        None if !root.is_dir() => {
            return Err(format!(
                "feature snapshots: {} is neither a file nor a directory",
                root.display()
            ))
        }
        None => None,
    };
    let mut out = HashMap::new();
    for entry in entries.iter().filter(|e| e.feature_store.is_some()) {
        let snapshot = match &single {
            Some(s) => Arc::clone(s),
            None => {
                let path = root
                    .join(&entry.path)
                    .join(snapshot::artifact_name(raw, entry));
                Arc::new(Snapshot::load(&path).map_err(|e| e.to_string())?)
            }
        };
        let columns: Result<Vec<usize>, String> = entry
            .feature_names
            .iter()
            .map(|f| {
                snapshot.column(f).ok_or_else(|| {
                    format!(
                        "the snapshot has no column for feature '{f}' (it has: {})",
                        snapshot.columns.join(", ")
                    )
                })
            })
            .collect();
        if let Err(e) = &columns {
            tracing::warn!(model = %entry.name, version = %entry.version, path = %snapshot.path.display(), error = %e, "feature snapshot does not fit the model");
        }
        let origin = format!("snapshot {}", snapshot.path.display());
        out.insert(
            key_of(entry),
            ModelSnapshot {
                snapshot,
                columns,
                origin,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    use super::super::test_support::{manifest, model_entry, root, store_config, training_log};
    use super::*;

    #[tokio::test]
    async fn embedded_store_gives_the_training_log_features() {
        let manifest = manifest();
        let store = FeatureStore::open(&store_config(None), &manifest, &root().join("models"))
            .await
            .unwrap();
        for entry in &manifest.models {
            let (ids, expected) = training_log(entry);
            let rows = store
                .lookup(entry, &ids, &TraceContext::default())
                .await
                .unwrap();
            assert_eq!(rows.n_rows, ids.len());
            assert_eq!(rows.data, expected, "{}", entry.name);
        }
        assert_eq!(store.readiness(), Ok(()));
        let health = store.health();
        assert_eq!(health["snapshot_match"], true);
        assert_eq!(health["state"], "in_process");
        // One unknown id among known ones is named; a model without a feature_store block,
        // and a disabled store, refuse entity ids.
        let entry = &manifest.models[0];
        let error = store
            .lookup(
                entry,
                &["breast-cancer-1".into(), "ghost".into()],
                &TraceContext::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "entity 'ghost' not found in snapshot {}",
                root().join("models/breast-cancer/1/snapshot.csv").display()
            )
        );
        let mut bare = entry.clone();
        bare.feature_store = None;
        let ids = vec!["breast-cancer-1".to_string()];
        assert!(matches!(
            store.lookup(&bare, &ids, &TraceContext::default()).await,
            Err(FeatureError::Disabled(m)) if m.contains("names no feature_store")
        ));
        assert!(matches!(
            FeatureStore::disabled().lookup(entry, &ids, &TraceContext::default()).await,
            Err(FeatureError::Disabled(m)) if m.contains("FEATURE_STORE_URI=none")
        ));
    }

    #[tokio::test]
    async fn file_uri_reads_one_snapshot_or_a_tree_and_bad_paths_stop_the_start() {
        let manifest = manifest();
        let dir = tempfile::tempdir().unwrap();
        // A single file serves every model; the one whose columns it lacks gets a store error.
        let file = dir.path().join("diabetes.csv");
        std::fs::copy(root().join("models/diabetes/1/snapshot.csv"), &file).unwrap();
        let uri = format!("file://{}", file.display());
        let store = FeatureStore::open(&store_config(Some(&uri)), &manifest, Path::new("unused"))
            .await
            .unwrap();
        let diabetes = model_entry(&manifest, "diabetes");
        let ids = vec!["diabetes-0".to_string()];
        assert_eq!(
            store
                .lookup(diabetes, &ids, &TraceContext::default())
                .await
                .unwrap()
                .row(0)[0],
            0.03807590529322624f64 as f32
        );
        let error = store
            .lookup(&manifest.models[0], &ids, &TraceContext::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, FeatureError::StoreError(m) if m.contains("no column for feature 'mean_radius'")),
            "{error}"
        );
        // The breast-cancer snapshot is not the file the manifest names.
        assert_eq!(store.health()["snapshot_match"], false);
        let tree = format!("file://{}", root().join("models").display());
        let store = FeatureStore::open(&store_config(Some(&tree)), &manifest, Path::new("unused"))
            .await
            .unwrap();
        assert_eq!(store.health()["snapshot_match"], true);
        for bad in ["file:///no/such/dir", "gopher://x"] {
            assert!(
                FeatureStore::open(&store_config(Some(bad)), &manifest, Path::new("models"))
                    .await
                    .is_err(),
                "{bad}"
            );
        }
    }
}
