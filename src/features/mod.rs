//! Entity ids in, model rows out: the feature-store lookup behind `{"entity_ids": [...]}`.
//!
//! The store is chosen once at start from `FEATURE_STORE_URI` ([`StoreUri`]): a Feast feature
//! server over HTTP ([`client`]), a snapshot read in-process ([`snapshot`]; the default serves
//! each model's own `snapshot.csv`, so `make run` answers entity ids with nothing else running),
//! or none. Which feature service or view, join key and defaults a model needs is the manifest's
//! `feature_store` block, never code. Every backend's answer goes through one assembly step, so a
//! missing entity, a NULL value or a bad answer is the same error whichever store gave it.
//!
//! [`rows_for`] is the one call a handler makes (`/predict` now, `/explain` too).
//! [`mock`] is the mock feature store's router, served by the `ferrum-feature-store` binary.

pub mod client;
pub mod mock;
pub mod protocol;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::{json, Value};

pub use client::{ClientOptions, FeastClient};
use protocol::FieldStatus;
use snapshot::Snapshot;

use crate::api::request::RequestInput;
use crate::config::FeatureStoreArgs;
use crate::model::manifest::FeatureStoreSpec;
use crate::model::{LoadedModel, Manifest, ModelEntry, Rows};

/// Why an entity-id lookup failed. Each maps to one HTTP status and stable code in the API
/// (`crate::api::ApiError`), and each message names the entity, feature or store at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// No store is configured (`FEATURE_STORE_URI=none`), or the model's manifest entry names
    /// no `feature_store`: the client must send `instances`.
    #[error("entity lookups are off: {0}; send 'instances' instead")]
    Disabled(String),
    /// The store has no row for these entities (every feature `NOT_FOUND`).
    #[error("{} not found in {origin}", quote_ids(.ids))]
    EntityNotFound {
        /// The unknown ids, in request order.
        ids: Vec<String>,
        /// The feature service, view or snapshot that was asked.
        origin: String,
    },
    /// The entity exists but a feature has no usable value (NULL, not found, too old, not
    /// finite) and the manifest documents no default for it.
    #[error("entity '{entity}': feature '{feature}' {reason} in {origin}, and the manifest documents no default for it")]
    FeatureMissing {
        /// The entity whose value is missing.
        entity: String,
        /// The feature without a value.
        feature: String,
        /// What the store said, in words (e.g. "is NULL").
        reason: String,
        /// The feature service, view or snapshot that was asked.
        origin: String,
    },
    /// The store could not be reached (connection refused or reset, DNS, 503), after retries.
    #[error("the feature store at {uri} is unavailable: {reason}")]
    Unavailable {
        /// The store's address.
        uri: String,
        /// The last failure, in words.
        reason: String,
    },
    /// The store did not answer within the lookup's time budget.
    #[error("the feature store at {uri} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The store's address.
        uri: String,
        /// `--feature-store-timeout-ms`.
        timeout_ms: u64,
    },
    /// The store answered, but not with something usable: an error status, malformed JSON, a
    /// response of the wrong shape, or without a column the model needs.
    #[error("the feature store's answer cannot be used: {0}")]
    StoreError(String),
}

fn quote_ids(ids: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut quoted: Vec<String> = ids.iter().take(SHOWN).map(|i| format!("'{i}'")).collect();
    if ids.len() > SHOWN {
        quoted.push(format!("and {} more", ids.len() - SHOWN));
    }
    let noun = if ids.len() == 1 { "entity" } else { "entities" };
    format!("{noun} {}", quoted.join(", "))
}

/// What `FEATURE_STORE_URI` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUri {
    /// Unset: each model's own `snapshot.csv` in the models directory, read in-process.
    Embedded,
    /// `none`: entity lookups are off.
    Disabled,
    /// `file://<path>`: a models-directory-shaped tree of snapshots, or one snapshot file for
    /// every model, read in-process.
    File(PathBuf),
    /// `http://host:port[/prefix]`: a server speaking Feast's feature-server protocol.
    Http(String),
}

impl StoreUri {
    /// Parses the flag. `https://` is refused: the client is built without TLS on purpose
    /// (the store sits beside the API on a private network).
    pub fn parse(uri: Option<&str>) -> Result<StoreUri, String> {
        let Some(uri) = uri.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(StoreUri::Embedded);
        };
        if uri.eq_ignore_ascii_case("none") {
            return Ok(StoreUri::Disabled);
        }
        if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err("FEATURE_STORE_URI 'file://' names no path".into());
            }
            return Ok(StoreUri::File(PathBuf::from(path)));
        }
        if let Some(rest) = uri.strip_prefix("http://") {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("FEATURE_STORE_URI '{uri}' names no host"));
            }
            return Ok(StoreUri::Http(uri.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "FEATURE_STORE_URI '{uri}' is not understood: use http://host:port (a Feast feature \
             server; plain HTTP only), file://<path> (a snapshot read in-process), or none"
        ))
    }
}

/// The W3C trace context of the request being served, forwarded to the feature store so its
/// spans join the caller's trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// A valid incoming `traceparent` header.
    pub traceparent: Option<String>,
    /// The incoming `tracestate`, forwarded only alongside a valid `traceparent`.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Takes `traceparent` (and `tracestate`) from request headers; an invalid `traceparent`
    /// is dropped, as the W3C spec asks, rather than forwarded.
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        };
        let traceparent = header("traceparent").filter(|v| valid_traceparent(v));
        let tracestate = traceparent
            .as_ref()
            .and(header("tracestate"))
            .filter(|v| !v.is_empty() && v.len() <= 512);
        TraceContext {
            traceparent,
            tracestate,
        }
    }
}

/// `version-traceid-parentid-flags`, lowercase hex, non-zero ids, version `ff` forbidden;
/// version `00` has exactly these four fields, later versions may append more.
fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if parts.len() < 4 || !hex(parts[0], 2) || parts[0] == "ff" {
        return false;
    }
    if parts[0] == "00" && parts.len() != 4 {
        return false;
    }
    hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

/// Turns a request's input into the model's rows: inline rows pass through; entity ids are
/// looked up in `store` (one call for the whole batch). The plain function `/predict` and
/// `/explain` both call, so both answer an entity id identically.
pub async fn rows_for(
    store: &FeatureStore,
    input: RequestInput,
    model: &LoadedModel,
    trace: &TraceContext,
) -> Result<Rows, FeatureError> {
    match input {
        RequestInput::Rows(rows) => Ok(rows),
        RequestInput::EntityIds(ids) => store.lookup(&model.entry, &ids, trace).await,
    }
}

/// One feature value of one entity, as a store gave it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell {
    /// A number.
    Value(f64),
    /// No value, and why (`NOT_FOUND` for every feature means the entity is unknown).
    Absent(FieldStatus),
    /// A value that is not a number (a string, a list): the store breaks the contract.
    Wrong(&'static str),
}

/// Builds the model's rows from per-(entity, feature) cells, whichever store produced them.
/// Unknown entities win over missing features in the error, so the client hears about the id
/// it can fix first; documented defaults fill NULL/missing/too-old values.
pub(crate) fn assemble(
    entry: &ModelEntry,
    defaults: &BTreeMap<String, f64>,
    ids: &[String],
    origin: &str,
    mut cell: impl FnMut(usize, usize) -> Cell,
) -> Result<Rows, FeatureError> {
    let width = entry.feature_names.len();
    let mut data = Vec::with_capacity(ids.len() * width);
    let mut not_found = Vec::new();
    let mut first_problem: Option<FeatureError> = None;
    for (j, id) in ids.iter().enumerate() {
        let start = data.len();
        let mut every_feature_not_found = true;
        let mut problem = None;
        for (i, feature) in entry.feature_names.iter().enumerate() {
            let missing = |reason: String| FeatureError::FeatureMissing {
                entity: id.clone(),
                feature: feature.clone(),
                reason,
                origin: origin.to_owned(),
            };
            match cell(j, i) {
                Cell::Value(v) => {
                    every_feature_not_found = false;
                    let narrowed = v as f32;
                    if narrowed.is_finite() {
                        data.push(narrowed);
                    } else if let Some(&d) = defaults.get(feature) {
                        data.push(d as f32);
                    } else {
                        problem
                            .get_or_insert(missing(format!("is {v}, not a finite float32 number")));
                    }
                }
                Cell::Absent(status) => {
                    every_feature_not_found &= status == FieldStatus::NotFound;
                    if let Some(&d) = defaults.get(feature) {
                        data.push(d as f32);
                    } else {
                        problem.get_or_insert(missing(status_in_words(status)));
                    }
                }
                Cell::Wrong(kind) => {
                    return Err(FeatureError::StoreError(format!(
                        "feature '{feature}' of entity '{id}' is {kind}, not a number ({origin})"
                    )));
                }
            }
        }
        if every_feature_not_found {
            not_found.push(id.clone());
            data.truncate(start);
        } else if problem.is_some() && first_problem.is_none() {
            first_problem = problem;
        }
    }
    if !not_found.is_empty() {
        return Err(FeatureError::EntityNotFound {
            ids: not_found,
            origin: origin.to_owned(),
        });
    }
    if let Some(problem) = first_problem {
        return Err(problem);
    }
    Ok(Rows::new(data, width))
}

fn status_in_words(status: FieldStatus) -> String {
    match status {
        FieldStatus::NullValue | FieldStatus::Present => "is NULL (NULL_VALUE)".into(),
        FieldStatus::NotFound => "has no value (NOT_FOUND)".into(),
        FieldStatus::OutsideMaxAge => "is older than its max age (OUTSIDE_MAX_AGE)".into(),
        FieldStatus::Invalid => "is invalid (INVALID)".into(),
        FieldStatus::Unknown => "has no usable value (unknown status)".into(),
    }
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
        args: &FeatureStoreArgs,
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
        let fetched = if misses.is_empty() {
            Rows::default()
        } else {
            client.fetch_rows(model, spec, &misses, trace).await?
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
                let path = root.join(&entry.path).join(snapshot_artifact(raw, entry));
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

/// The snapshot's file name from the manifest's `artifacts.snapshot`, else `snapshot.csv`.
fn snapshot_artifact(raw: &Value, entry: &ModelEntry) -> String {
    raw["models"]
        .as_array()
        .and_then(|models| {
            models.iter().find(|m| {
                m["name"] == entry.name.as_str() && m["version"] == entry.version.as_str()
            })
        })
        .and_then(|m| m["artifacts"]["snapshot"].as_str())
        .unwrap_or("snapshot.csv")
        .to_owned()
}

/// A small TTL cache of looked-up rows, per model version and entity: a hot entity asked many
/// times a second costs one store call per TTL. Off unless `--feature-store-cache-ttl-ms` > 0,
/// because a cached row can be up to one TTL older than the store's.
pub struct RowCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, CachedRow>>,
}

/// (model `name@version`, entity id).
type CacheKey = (String, String);

/// When a row was fetched, and the row in model feature order.
type CachedRow = (Instant, Arc<[f32]>);

impl RowCache {
    /// An empty cache holding rows for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> RowCache {
        RowCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh row, if cached.
    pub fn get(&self, model: &str, id: &str) -> Option<Arc<[f32]>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (at, row) = entries.get(&(model.to_owned(), id.to_owned()))?;
        (at.elapsed() < self.ttl).then(|| Arc::clone(row))
    }

    /// Stores a row; when full, drops expired rows first, then everything (a burst of new
    /// ids must not grow memory without bound).
    pub fn put(&self, model: &str, id: &str, row: &[f32]) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            (model.to_owned(), id.to_owned()),
            (Instant::now(), row.into()),
        );
    }

    fn describe(&self) -> Value {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        json!({"ttl_ms": self.ttl.as_millis() as u64, "entries": entries.len(), "capacity": self.capacity})
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::features::mock::{MockOptions, MockStore};

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn manifest() -> Manifest {
        Manifest::read(&root().join("manifest.json")).unwrap()
    }

    fn args(uri: Option<&str>) -> FeatureStoreArgs {
        FeatureStoreArgs {
            uri: uri.map(str::to_owned),
            timeout_ms: 2000,
            connect_timeout_ms: 500,
            retries: 1,
            backoff_ms: 5,
            cache_ttl_ms: 0,
            cache_entries: 1000,
            check_interval_ms: 10_000,
            require_snapshot_match: false,
        }
    }

    /// Each model's training log: entity ids and their features in model order.
    fn training_log(entry: &ModelEntry) -> (Vec<String>, Vec<f32>) {
        let path = root()
            .join("models")
            .join(&entry.path)
            .join("training_log.json");
        let log: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let rows = log["rows"].as_array().unwrap();
        let ids = rows
            .iter()
            .map(|r| r["entity_id"].as_str().unwrap().to_owned())
            .collect();
        let data = rows
            .iter()
            .flat_map(|r| {
                entry
                    .feature_names
                    .iter()
                    .map(move |f| r["features"][f].as_f64().unwrap() as f32)
            })
            .collect();
        (ids, data)
    }

    #[test]
    fn uri_forms() {
        assert_eq!(StoreUri::parse(None), Ok(StoreUri::Embedded));
        assert_eq!(StoreUri::parse(Some(" ")), Ok(StoreUri::Embedded));
        assert_eq!(StoreUri::parse(Some("NONE")), Ok(StoreUri::Disabled));
        assert_eq!(
            StoreUri::parse(Some("file:///data/snap.csv")),
            Ok(StoreUri::File("/data/snap.csv".into()))
        );
        assert_eq!(
            StoreUri::parse(Some("file://models")),
            Ok(StoreUri::File("models".into()))
        );
        assert_eq!(
            StoreUri::parse(Some("http://feature-store:6566/")),
            Ok(StoreUri::Http("http://feature-store:6566".into()))
        );
        for bad in ["https://x", "feature-store:6566", "file://", "http://"] {
            assert!(StoreUri::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_valid_traceparents_are_forwarded() {
        let context = |tp: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", tp.parse().unwrap());
            headers.insert("tracestate", "vendor=1".parse().unwrap());
            TraceContext::from_headers(&headers)
        };
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            context(good),
            TraceContext {
                traceparent: Some(good.into()),
                tracestate: Some("vendor=1".into())
            }
        );
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(context(bad), TraceContext::default(), "{bad}");
        }
        // A later version may carry more fields.
        let future = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz";
        assert_eq!(context(future).traceparent.as_deref(), Some(future));
        assert_eq!(
            TraceContext::from_headers(&HeaderMap::new()),
            TraceContext::default()
        );
    }

    #[tokio::test]
    async fn embedded_store_gives_the_training_log_features() {
        let manifest = manifest();
        let store = FeatureStore::open(&args(None), &manifest, &root().join("models"))
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
        let store = FeatureStore::open(&args(Some(&uri)), &manifest, Path::new("unused"))
            .await
            .unwrap();
        let diabetes = manifest
            .models
            .iter()
            .find(|m| m.name == "diabetes")
            .unwrap();
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
        let store = FeatureStore::open(&args(Some(&tree)), &manifest, Path::new("unused"))
            .await
            .unwrap();
        assert_eq!(store.health()["snapshot_match"], true);
        for bad in ["file:///no/such/dir", "gopher://x"] {
            assert!(
                FeatureStore::open(&args(Some(bad)), &manifest, Path::new("models"))
                    .await
                    .is_err(),
                "{bad}"
            );
        }
    }

    /// The mock on loopback, counting the lookups it answers.
    async fn counted_mock() -> (String, Arc<AtomicUsize>) {
        let store = MockStore::from_manifest(
            &manifest(),
            &root().join("models"),
            MockOptions {
                shuffle_columns: true,
                seed: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = mock::router(Arc::new(store)).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    if req.uri().path() == "/get-online-features" {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    next.run(req).await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}"), calls)
    }

    #[tokio::test]
    async fn remote_lookups_batch_dedupe_and_cache() {
        let (base, calls) = counted_mock().await;
        let manifest = manifest();
        let mut with_cache = args(Some(&base));
        with_cache.cache_ttl_ms = 60_000;
        let store = FeatureStore::open(&with_cache, &manifest, Path::new("unused"))
            .await
            .unwrap();
        let entry = manifest
            .models
            .iter()
            .find(|m| m.name == "diabetes")
            .unwrap();
        let (ids, expected) = training_log(entry);
        let width = entry.feature_names.len();
        // The whole log in one call, columns shuffled by the store: the training features.
        let rows = store
            .lookup(entry, &ids, &TraceContext::default())
            .await
            .unwrap();
        assert_eq!(rows.data, expected);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Cached now: repeated and known ids cost no call; a new mix asks only for the misses.
        let again = vec![ids[1].clone(), ids[0].clone(), ids[1].clone()];
        let rows = store
            .lookup(entry, &again, &TraceContext::default())
            .await
            .unwrap();
        assert_eq!(rows.row(0), &expected[width..2 * width]);
        assert_eq!(rows.row(1), &expected[..width]);
        assert_eq!(rows.row(2), rows.row(0));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.health()["cache"]["entries"], ids.len());

        // Without a cache, a batch with repeats is still one call for distinct ids.
        let store = FeatureStore::open(&args(Some(&base)), &manifest, Path::new("unused"))
            .await
            .unwrap();
        let rows = store
            .lookup(entry, &again, &TraceContext::default())
            .await
            .unwrap();
        assert_eq!(rows.n_rows, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let error = store
            .lookup(entry, &["nobody".into()], &TraceContext::default())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "entity 'nobody' not found in feature service 'diabetes_v1'"
        );
    }

    #[tokio::test]
    async fn snapshot_checks_drive_readiness_only_when_required() {
        let (base, _) = counted_mock().await;
        let mut strict = args(Some(&base));
        strict.require_snapshot_match = true;
        let manifest = manifest();
        let store = FeatureStore::open(&strict, &manifest, Path::new("unused"))
            .await
            .unwrap();
        // Not checked yet: unverified, so not ready.
        assert!(store.readiness().is_err());
        assert_eq!(store.health()["state"], "unknown");
        store.check().await;
        assert_eq!(store.readiness(), Ok(()));
        assert_eq!(store.health()["state"], "up");
        assert_eq!(store.health()["snapshot_match"], true);

        // A manifest expecting other data: a mismatch, visible, and not ready when required.
        let mut other = manifest.clone();
        other.models[0].dataset.feature_snapshot_id = "0".repeat(64);
        let store = FeatureStore::open(&strict, &other, Path::new("unused"))
            .await
            .unwrap();
        store.check().await;
        assert!(store.readiness().is_err());
        let health = store.health();
        assert_eq!(health["snapshot_match"], false);
        assert_eq!(health["snapshots"][0]["match"], false);
        assert_eq!(health["snapshots"][1]["match"], true);
        let lenient = FeatureStore::open(&args(Some(&base)), &other, Path::new("unused"))
            .await
            .unwrap();
        lenient.check().await;
        assert_eq!(lenient.readiness(), Ok(()));

        // A store that went away: down, and the last verified ids are kept.
        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let store = FeatureStore::open(
            &args(Some(&format!("http://127.0.0.1:{gone}"))),
            &manifest,
            Path::new("unused"),
        )
        .await
        .unwrap();
        store.check().await;
        let health = store.health();
        assert_eq!(health["state"], "down");
        assert!(
            health["error"].as_str().unwrap().contains("refused"),
            "{health}"
        );
        assert_eq!(health["snapshot_match"], Value::Null);
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let cache = RowCache::new(Duration::from_millis(30), 2);
        cache.put("m@1", "a", &[1.0]);
        cache.put("m@1", "b", &[2.0]);
        assert_eq!(cache.get("m@1", "a").as_deref(), Some(&[1.0][..]));
        assert_eq!(cache.get("m@2", "a"), None);
        cache.put("m@1", "c", &[3.0]);
        assert!(cache.entries.lock().unwrap().len() <= 2);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get("m@1", "c"), None);
    }
}
