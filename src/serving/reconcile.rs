//! Changing what serves while the server runs. One [`ModelController`] task owns the changes:
//! a rescan (every `--repository-poll-secs` in `poll` mode, on SIGHUP in every mode) or a
//! repository `load` / `unload` (`explicit` mode) reads the manifest, scans the repository
//! ([`lifecycle::RepositoryScan`]), plans ([`lifecycle::plan`]) and carries the plan out on the
//! blocking pool: each new or changed version is read, sha256-checked, signature-checked and
//! warmed up by the same [`Loader`] the start-up uses, and only then swapped in with the rest
//! of the snapshot ([`Live::replace`]); a removed version is drained (its last request
//! finishes) before it is dropped. A version that is refused or fails to load leaves what was
//! serving untouched and is reported: a log line, `ferrum_model_load_failures_total`, and its
//! state and reason in the repository index (`/v2/repository/index`, `/health`). Requests to
//! such a version are answered "unavailable" with that reason ([`Control::unavailable`]).
//!
//! At start the same holds with `--exit-on-error false`; with `true` (the default) the first
//! version that cannot be served stops the start. Before each rescan and repository `load`,
//! a [`Refresh`] (a remote repository's re-sync into the local cache) runs on the async
//! runtime, and the versions it refuses are refused by the plan as a file refused on disk is.
//!
//! [`lifecycle::RepositoryScan`]: crate::lifecycle::RepositoryScan
//! [`lifecycle::plan`]: crate::lifecycle::plan

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::live::{Live, Snapshot};
use super::shadow::ShadowJob;
use super::{Loader, ServedModel, ServedRepository, ServingError};
use crate::lifecycle::{
    plan, unload_model, Action, FileHashes, LoadedVersion, ModelConfig, ModelControl, ModelState,
    Refusal, RepositoryScan, RolloutConfigs, ShadowQueue, StateTable, Version,
};
use crate::model::repository::ModelVersions;
use crate::model::{discover, LoadError, LookupError, Manifest, Repository};
use crate::telemetry::metrics;

/// Longest an unload waits for the requests still running on a version before dropping the
/// snapshot's hold on it (the version is then freed when the last of them ends).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Brings the local repository up to date before a rescan (a remote repository's re-sync) and
/// returns the versions that must not be loaded, with why; an error stops that rescan (nothing
/// changes). Async: network work stays off the blocking pool's load threads.
pub type Refresh = Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<Refusal>, String>> + Send + Sync>;

/// What the start-up load takes beyond the manifest.
pub struct Start {
    /// Stop at the first version that fails to load (`--exit-on-error true`), or report it
    /// unavailable and serve the others.
    pub exit_on_error: bool,
    /// Versions already found unservable (a bare repository's files, a remote repository's
    /// refused objects): reported, not loaded. Only given with `exit_on_error` false.
    pub refused: Vec<Refusal>,
    /// Runs before each rescan and repository `load`.
    pub refresh: Option<Refresh>,
    /// `--model-name`: every manifest read is served under it ([`Manifest::serve_as`]).
    pub model_name: Option<String>,
}

/// `--exit-on-error`'s default, a local repository: the first failure stops the start.
impl Default for Start {
    fn default() -> Start {
        Start {
            exit_on_error: true,
            refused: Vec::new(),
            refresh: None,
            model_name: None,
        }
    }
}

/// What the API sees of the model controller: the repository index, the last rescan's error,
/// and the repository extension's `load` / `unload`. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    /// The mode and poll period.
    pub settings: ModelControl,
    commands: mpsc::Sender<Command>,
    status: Arc<Status>,
}

/// What the controller reports while it works.
#[derive(Default)]
struct Status {
    states: Mutex<StateTable>,
    /// Why the last rescan changed nothing (the manifest or its rollout block could not be
    /// read); `None` once one succeeds.
    last_error: Mutex<Option<String>>,
}

impl Status {
    fn states(&self) -> MutexGuard<'_, StateTable> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}

enum Command {
    Rescan,
    Load {
        name: String,
        config: Option<ModelConfig>,
        reply: oneshot::Sender<Result<(), ServingError>>,
    },
    Unload {
        name: String,
        reply: oneshot::Sender<Result<(), ServingError>>,
    },
}

impl Control {
    /// The repository index: every listed or loaded version with its state and reason;
    /// `ready_only` keeps the READY ones.
    pub fn index(&self, ready_only: bool) -> Vec<ModelState> {
        self.status.states().index(ready_only)
    }

    /// The state of the version of `name` a request names (`version`, else the highest) when
    /// it does not serve because it failed to load or was refused; `None` when it is unknown,
    /// unloaded or serving (the request is then answered as the lookup says).
    pub fn unavailable(&self, name: &str, version: Option<&str>) -> Option<ModelState> {
        let version = match version {
            Some(version) => Some(Version(version.parse().ok()?)),
            None => None,
        };
        self.status.states().unavailable(name, version).cloned()
    }

    /// Whether some version does not serve because it failed to load or was refused.
    pub fn any_unavailable(&self) -> bool {
        self.status.states().any_unavailable()
    }

    /// Why the last rescan applied nothing, if it did not.
    pub fn last_error(&self) -> Option<String> {
        self.status
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks for one rescan of the manifest and the repository, in any mode (what SIGHUP
    /// does); returns at once. A rescan already waiting covers this one.
    pub fn rescan(&self) {
        let _ = self.commands.try_send(Command::Rescan);
    }

    /// Loads (or reloads) every version of `name` the policy serves, with `config` as its
    /// rollout in place of the manifest's; answers once the versions serve, or with why not.
    pub async fn load(
        &self,
        name: String,
        config: Option<ModelConfig>,
    ) -> Result<(), ServingError> {
        self.ask(|reply| Command::Load {
            name,
            config,
            reply,
        })
        .await
    }

    /// Unloads every version of `name`; answers once they are drained.
    pub async fn unload(&self, name: String) -> Result<(), ServingError> {
        self.ask(|reply| Command::Unload { name, reply }).await
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), ServingError>>) -> Command,
    ) -> Result<(), ServingError> {
        if !self.settings.accepts_load_requests() {
            return Err(ServingError::ControlDisabled {
                mode: self.settings.mode,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ServingError::ShuttingDown)?;
        answer.await.map_err(|_| ServingError::ShuttingDown)?
    }
}

/// The task that changes what serves; see the module documentation.
pub struct ModelController {
    reconciler: Arc<Mutex<Reconciler>>,
    commands: mpsc::Receiver<Command>,
    settings: ModelControl,
    refresh: Option<Refresh>,
    status: Arc<Status>,
}

impl ModelController {
    /// Loads every version the manifest's policies serve, each checked and warmed up, and
    /// returns what serves them with the controller that will change it. With
    /// `start.exit_on_error`, any failure stops the start, as before live loading existed: a
    /// pod that cannot serve what it was deployed with should crash-loop visibly; without it,
    /// a version that fails (or was refused before) is reported and the others serve.
    /// Blocking: call it off the async workers.
    pub fn start(
        loader: Loader,
        manifest_path: PathBuf,
        manifest: Manifest,
        settings: ModelControl,
        shadow_queue: ShadowQueue<ShadowJob>,
        start: Start,
    ) -> Result<(ModelController, Control, Arc<Live>), LoadError> {
        let configs =
            RolloutConfigs::from_manifest(&manifest).map_err(|e| LoadError::Manifest {
                path: manifest_path.clone(),
                reason: e.to_string(),
            })?;
        let mut scan = RepositoryScan::as_pinned(&manifest, &configs, &loader.models_dir);
        scan.refuse(&start.refused);
        let planned = plan(&scan, &[]);
        let status = Arc::new(Status::default());
        status.states().begin(&scan, &planned);
        let mut models = BTreeMap::new();
        for action in planned.actions {
            match action {
                Action::Load { name, version, .. } => {
                    match loader.load_version(entry_of(&manifest, &name, version)) {
                        Ok(model) => {
                            insert(&mut models, &name, version, Arc::new(model));
                            status.states().loaded(&name, version);
                        }
                        Err(error) if start.exit_on_error => return Err(error),
                        Err(error) => {
                            load_failed(&status, &name, version, &error.to_string());
                        }
                    }
                }
                Action::Refuse {
                    name,
                    version,
                    reason,
                    serving,
                } => refused(&name, version, &reason, serving.as_deref()),
                // Nothing is loaded yet: a first plan only loads and refuses.
                Action::Reload { .. } | Action::Unload { .. } => {}
            }
        }
        let repository = repository_of(manifest, models, &loader);
        let live = Arc::new(Live::new(Snapshot::build(
            repository,
            &configs,
            None,
            &shadow_queue,
        )));
        publish_model_info(&live.current());
        let (sender, commands) = mpsc::channel(16);
        let reconciler = Reconciler {
            loader,
            manifest_path,
            settings,
            live: live.clone(),
            status: status.clone(),
            configs,
            overrides: BTreeMap::new(),
            unloaded: BTreeSet::new(),
            shadow_queue,
            hashes: FileHashes::default(),
            model_name: start.model_name,
        };
        let controller = ModelController {
            reconciler: Arc::new(Mutex::new(reconciler)),
            commands,
            settings,
            refresh: start.refresh,
            status: status.clone(),
        };
        let control = Control {
            settings,
            commands: sender,
            status,
        };
        Ok((controller, control, live))
    }

    /// Runs until every [`Control`] is gone: a rescan at each poll period and each
    /// [`Control::rescan`], the repository requests as they come, one at a time.
    pub async fn run(mut self) {
        let mut poll = self.settings.poll_every().map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        loop {
            let tick = async {
                match &mut poll {
                    Some(interval) => {
                        interval.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tick => {
                    let _ = self.rescan().await;
                }
                command = self.commands.recv() => match command {
                    None => return,
                    Some(Command::Rescan) => {
                        let _ = self.rescan().await;
                    }
                    Some(Command::Load { name, config, reply }) => {
                        let loaded = match self.refresh().await {
                            Ok(refused) => {
                                self.blocking(move |r| r.load(&name, config, refused)).await
                            }
                            Err(error) => Err(error),
                        };
                        let _ = reply.send(loaded);
                    }
                    Some(Command::Unload { name, reply }) => {
                        let _ = reply.send(self.blocking(move |r| r.unload(&name)).await);
                    }
                },
            }
        }
    }

    /// A refresh, then a rescan on the blocking pool.
    async fn rescan(&self) -> Result<(), ServingError> {
        let refused = self.refresh().await?;
        self.blocking(move |r| r.rescan(refused)).await
    }

    /// Runs the [`Refresh`], if there is one, on the async runtime; a failure is logged,
    /// counted and reported as a failed rescan.
    async fn refresh(&self) -> Result<Vec<Refusal>, ServingError> {
        let Some(refresh) = &self.refresh else {
            return Ok(Vec::new());
        };
        refresh().await.map_err(|reason| {
            tracing::error!(%reason, "rescan failed: nothing changed, what was serving still serves");
            metrics::record_repository_rescan("failed");
            self.status.set_error(Some(reason.clone()));
            ServingError::Manifest(reason)
        })
    }

    /// Runs one change on the blocking pool (loads read files and warm up).
    async fn blocking(
        &self,
        change: impl FnOnce(&mut Reconciler) -> Result<(), ServingError> + Send + 'static,
    ) -> Result<(), ServingError> {
        let reconciler = self.reconciler.clone();
        tokio::task::spawn_blocking(move || {
            change(&mut reconciler.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        .map_err(|e| ServingError::TaskFailed(format!("model load task failed: {e}")))?
    }
}

/// The controller's state, changed on the blocking pool only.
struct Reconciler {
    loader: Loader,
    manifest_path: PathBuf,
    settings: ModelControl,
    live: Arc<Live>,
    status: Arc<Status>,
    /// The rollout configurations the current snapshot was built with.
    configs: RolloutConfigs,
    /// `explicit` mode: the configurations repository loads gave, in place of the manifest's.
    overrides: BTreeMap<String, ModelConfig>,
    /// `explicit` mode: models unloaded by request, which rescans leave alone.
    unloaded: BTreeSet<String>,
    shadow_queue: ShadowQueue<ShadowJob>,
    /// Model files' hashes as last read, so a rescan reads only the files that changed.
    hashes: FileHashes,
    /// `--model-name`, applied to every manifest read.
    model_name: Option<String>,
}

/// A version that was not loaded, and why.
struct Failure {
    version: Version,
    reason: String,
}

impl Reconciler {
    /// Rescans the manifest and the repository and applies what changed (in `explicit` mode,
    /// only for the models loaded: nothing else loads unless asked); `refused` are not loaded.
    fn rescan(&mut self, mut refused: Vec<Refusal>) -> Result<(), ServingError> {
        let (manifest, configs) = self.read_manifest(&mut refused)?;
        let mut scan = self.scan(&manifest, &configs, &refused);
        let full = !self.settings.accepts_load_requests();
        if !full {
            let current = self.live.current();
            scan.versions
                .retain(|v| current.models.contains_key(&v.name));
        }
        self.apply(manifest, configs, scan, full);
        metrics::record_repository_rescan("applied");
        Ok(())
    }

    /// What the repository holds against `manifest`, with the `refused` versions marked.
    fn scan(
        &mut self,
        manifest: &Manifest,
        configs: &RolloutConfigs,
        refused: &[Refusal],
    ) -> RepositoryScan {
        let mut scan =
            RepositoryScan::scan(manifest, configs, &self.loader.models_dir, &mut self.hashes);
        scan.refuse(refused);
        scan
    }

    /// A repository `load`: the model's versions (re)loaded per its policy, with `config` as
    /// its rollout from now on, if given; `refused` are not loaded.
    fn load(
        &mut self,
        name: &str,
        config: Option<ModelConfig>,
        mut refused: Vec<Refusal>,
    ) -> Result<(), ServingError> {
        let (manifest, mut configs) = self.read_manifest(&mut refused)?;
        if !manifest.models.iter().any(|e| e.name == name) {
            return Err(not_found(name, &manifest));
        }
        if let Some(config) = config {
            configs.set_override(&manifest, name, config.clone(), "parameters.config")?;
            self.overrides.insert(name.to_string(), config);
        }
        self.unloaded.remove(name);
        let scan = self.scan(&manifest, &configs, &refused).only(name);
        let failures = self.apply(manifest, configs, scan, false);
        metrics::record_repository_rescan("applied");
        if failures.is_empty() {
            return Ok(());
        }
        let reasons: Vec<String> = failures
            .iter()
            .map(|f| format!("version {}: {}", f.version, f.reason))
            .collect();
        Err(ServingError::LoadFailed {
            model: name.to_string(),
            reason: reasons.join("; "),
        })
    }

    /// A repository `unload`: every loaded version of the model, drained.
    fn unload(&mut self, name: &str) -> Result<(), ServingError> {
        let current = self.live.current();
        if !current.models.contains_key(name) {
            return if current.manifest.models.iter().any(|e| e.name == name) {
                Ok(())
            } else {
                Err(not_found(name, &current.manifest))
            };
        }
        let plan = unload_model(name, &loaded_versions(&current));
        self.status
            .states()
            .begin(&RepositoryScan::default(), &plan);
        let mut models = models_of(&current.repository);
        let draining: Vec<_> = models
            .remove(name)
            .into_iter()
            .flatten()
            .map(|(version, model)| (name.to_string(), Version(version), model))
            .collect();
        let manifest = current.manifest.clone();
        drop(current);
        self.overrides.remove(name);
        self.unloaded.insert(name.to_string());
        let configs = self.configs.clone();
        self.swap(manifest, models, configs, draining);
        metrics::record_repository_rescan("applied");
        Ok(())
    }

    /// The manifest and its rollout configurations (with the loads' overrides); on failure
    /// nothing changes, and the error is logged, counted and reported. The files a bare
    /// repository cannot serve are added to `refused`.
    fn read_manifest(
        &mut self,
        refused: &mut Vec<Refusal>,
    ) -> Result<(Manifest, RolloutConfigs), ServingError> {
        // Without a manifest, a rescan reads the repository's files again (new models and
        // versions appear, removed ones go), as Triton's poll mode does.
        let read = discover::manifest_for_each(
            &self.manifest_path,
            &self.loader.models_dir,
            &self.loader.runtime,
        )
        .map_err(|e| e.to_string())
        .and_then(|(manifest, unservable)| {
            refused.extend(unservable.into_iter().map(Refusal::from));
            let manifest = match &self.model_name {
                Some(name) => manifest.serve_as(name)?,
                None => manifest,
            };
            let configs = RolloutConfigs::from_manifest(&manifest)
                .map_err(|e| format!("invalid manifest {}: {e}", self.manifest_path.display()))?;
            Ok((manifest, configs))
        });
        let (manifest, mut configs) = match read {
            Ok(read) => read,
            Err(reason) => {
                tracing::error!(%reason, "rescan failed: nothing changed, what was serving still serves");
                metrics::record_repository_rescan("failed");
                self.status.set_error(Some(reason.clone()));
                return Err(ServingError::Manifest(reason));
            }
        };
        self.status.set_error(None);
        self.overrides.retain(|name, config| {
            match configs.set_override(&manifest, name, config.clone(), "parameters.config") {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(model = %name, %error, "the configuration of the model's last load no longer fits the manifest; using the manifest's");
                    false
                }
            }
        });
        Ok((manifest, configs))
    }

    /// Carries out the plan from `scan`: loads first (each swapped in with the rest, once all
    /// are done), then unloads, drained. `full`: the scan covers the whole manifest, so a
    /// loaded model the manifest no longer lists is unloaded too. Returns the failures.
    fn apply(
        &mut self,
        manifest: Manifest,
        configs: RolloutConfigs,
        scan: RepositoryScan,
        full: bool,
    ) -> Vec<Failure> {
        let current = self.live.current();
        let loaded = loaded_versions(&current);
        let mut plan = plan(&scan, &loaded);
        if full {
            let listed = scan.models();
            plan.actions.extend(
                loaded
                    .iter()
                    .filter(|l| !listed.contains(l.name.as_str()))
                    .map(|l| Action::Unload {
                        name: l.name.clone(),
                        version: l.version,
                    }),
            );
        }
        self.status.states().begin(&scan, &plan);
        let mut models = models_of(&current.repository);
        drop(current);
        let mut failures = Vec::new();
        let mut unloads = Vec::new();
        for action in plan.actions {
            match action {
                Action::Load { name, version, .. } | Action::Reload { name, version, .. } => {
                    let entry = entry_of(&manifest, &name, version);
                    match self.loader.load_version(entry) {
                        Ok(model) => {
                            insert(&mut models, &name, version, Arc::new(model));
                            self.status.states().loaded(&name, version);
                        }
                        Err(error) => {
                            let reason = error.to_string();
                            load_failed(&self.status, &name, version, &reason);
                            failures.push(Failure { version, reason });
                        }
                    }
                }
                Action::Refuse {
                    name,
                    version,
                    reason,
                    serving,
                } => {
                    refused(&name, version, &reason, serving.as_deref());
                    failures.push(Failure { version, reason });
                }
                Action::Unload { name, version } => unloads.push((name, version)),
            }
        }
        let mut draining = Vec::new();
        for (name, version) in unloads {
            let listed = manifest.models.iter().any(|e| e.name == name);
            let Some(versions) = models.get_mut(&name) else {
                continue;
            };
            if listed && versions.len() == 1 {
                let reason = "kept serving: unloading it would leave the model without a loaded version (the versions that replace it did not load)";
                tracing::warn!(model = %name, %version, reason);
                self.status.states().kept(&name, version, reason);
                continue;
            }
            if let Some(model) = versions.remove(&version.0) {
                draining.push((name.clone(), version, model));
            }
            if versions.is_empty() {
                models.remove(&name);
            }
        }
        self.swap(manifest, models, configs, draining);
        failures
    }

    /// Swaps in the snapshot of `models`, publishes what serves, then drains `draining`.
    fn swap(
        &mut self,
        manifest: Manifest,
        models: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>>,
        configs: RolloutConfigs,
        draining: Vec<(String, Version, Arc<ServedModel>)>,
    ) {
        let repository = repository_of(manifest, models, &self.loader);
        let snapshot = Snapshot::build(
            repository,
            &configs,
            Some(&self.live.current()),
            &self.shadow_queue,
        );
        self.live.replace(snapshot);
        self.configs = configs;
        publish_model_info(&self.live.current());
        for (name, version, model) in draining {
            drain(&name, version, model);
            self.status.states().unloaded(&name, version);
        }
    }
}

/// Reports a version whose load failed: a log line, `ferrum_model_load_failures_total`, and its
/// state and reason.
fn load_failed(status: &Status, name: &str, version: Version, reason: &str) {
    tracing::error!(model = %name, %version, %reason, "load failed; what was serving still serves");
    metrics::record_model_load_failure(name, &version.to_string(), "load_failed");
    status.states().load_failed(name, version, reason);
}

/// Reports a version whose file was refused (its state was set when the plan began): a log
/// line and `ferrum_model_load_failures_total`.
fn refused(name: &str, version: Version, reason: &str, serving: Option<&str>) {
    tracing::error!(model = %name, %version, %reason, still_serving = serving.unwrap_or("nothing"), "model file refused");
    metrics::record_model_load_failure(name, &version.to_string(), "refused");
}

/// Waits for the requests still running on an unloaded version, then drops the last hold on
/// it (which stops its executor and frees its sessions).
fn drain(name: &str, version: Version, model: Arc<ServedModel>) {
    tracing::info!(model = %name, %version, "unloading: draining the requests still on it");
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while Arc::strong_count(&model) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if Arc::strong_count(&model) > 1 {
        tracing::warn!(model = %name, %version, drain_secs = DRAIN_TIMEOUT.as_secs(), "requests still running after the drain timeout; the version is freed when they end");
    }
    drop(model);
    tracing::info!(model = %name, %version, "unloaded");
}

/// `ferrum_model_info` for what serves now, with each version's role.
fn publish_model_info(snapshot: &Snapshot) {
    metrics::set_model_info(snapshot.versions().map(|model| {
        let role = snapshot.role(&model.entry.name, &model.entry.version);
        (&model.entry, role.as_str())
    }));
}

fn loaded_versions(snapshot: &Snapshot) -> Vec<LoadedVersion> {
    snapshot
        .versions()
        .map(|model| LoadedVersion {
            name: model.entry.name.clone(),
            version: Version(
                model
                    .entry
                    .version
                    .parse()
                    .expect("checked by the manifest"),
            ),
            sha256: model.entry.onnx.sha256.to_ascii_lowercase(),
        })
        .collect()
}

fn models_of(repository: &ServedRepository) -> BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>> {
    repository
        .models
        .iter()
        .map(|(name, versions)| (name.clone(), versions.versions.clone()))
        .collect()
}

fn repository_of(
    manifest: Manifest,
    models: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>>,
    loader: &Loader,
) -> ServedRepository {
    Repository {
        manifest,
        models: models
            .into_iter()
            .map(|(name, versions)| (name, ModelVersions { versions }))
            .collect(),
        models_dir: loader.models_dir.clone(),
    }
}

fn insert(
    models: &mut BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>>,
    name: &str,
    version: Version,
    model: Arc<ServedModel>,
) {
    models
        .entry(name.to_string())
        .or_default()
        .insert(version.0, model);
}

/// The manifest entry of a version a scan of that manifest listed.
fn entry_of<'a>(
    manifest: &'a Manifest,
    name: &str,
    version: Version,
) -> &'a crate::model::ModelEntry {
    manifest
        .models
        .iter()
        .find(|e| e.name == name && e.version.parse() == Ok(version.0))
        .expect("scanned from this manifest")
}

fn not_found(name: &str, manifest: &Manifest) -> ServingError {
    let available: BTreeSet<&str> = manifest.models.iter().map(|e| e.name.as_str()).collect();
    ServingError::Lookup(LookupError::ModelNotFound {
        name: name.to_string(),
        available: available.into_iter().collect::<Vec<_>>().join(", "),
    })
}
