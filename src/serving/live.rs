//! What serves right now, swapped whole. A [`Snapshot`] is the loaded versions with, per
//! model, how its unversioned requests are routed (the rollout: split and shadow). A request
//! takes an `Arc` of the current snapshot, resolves its version and holds that version's `Arc`
//! until it has answered, so a swap — a load, a reload, an unload, a split change — never
//! disturbs a request already running: it finishes on the version it started on, and a version
//! dropped from the snapshot is freed when its last request ends.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};

use super::shadow::{ShadowJob, ShadowPair};
use super::{ServedModel, ServedRepository};
use crate::lifecycle::{ModelConfig, Role, Rollout, RolloutConfigs, ShadowQueue, Version};
use crate::model::repository::ModelVersions;
use crate::model::{LookupError, ModelOutput, Rows};

/// The current snapshot, replaced whole by the model controller.
pub struct Live {
    current: RwLock<Arc<Snapshot>>,
}

impl Live {
    /// Serving starts from `snapshot`.
    pub fn new(snapshot: Snapshot) -> Live {
        Live {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    /// The snapshot to serve one request from: a pointer copy under a read lock held for
    /// nanoseconds, so requests never wait on a load (loads happen before the swap).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swaps in `snapshot`; requests that took the previous one finish on it.
    pub fn replace(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }
}

/// The loaded versions and how each model's unversioned requests are routed.
pub struct Snapshot {
    /// The manifest it was built from and the loaded versions.
    pub repository: ServedRepository,
    routes: BTreeMap<String, Route>,
}

/// A snapshot reads as its repository (lookups by name and version, the manifest).
impl Deref for Snapshot {
    type Target = ServedRepository;

    fn deref(&self) -> &ServedRepository {
        &self.repository
    }
}

/// One model's routing: its rollout resolved against the loaded versions.
struct Route {
    rollout: Rollout,
    /// The version with the largest share: what unversioned metadata and readiness describe.
    primary: Version,
    /// The one version taking unversioned traffic, when only one does (no pick needed).
    only: Option<Version>,
    /// The keyless rotation's position (see [`Rollout::pick`]).
    counter: AtomicU64,
    /// Per version taking traffic, its pair with the shadow version, if one is set.
    shadows: BTreeMap<Version, Arc<ShadowPair>>,
}

/// The version that answers one request, and where its copy goes.
pub struct Routed {
    pub model: Arc<ServedModel>,
    /// The shadow pair of an unversioned request to a model with a shadow.
    pub shadow: Option<Arc<ShadowPair>>,
}

impl Routed {
    /// Hands a copy of the answered request to the shadow, if there is one (never waits).
    pub fn copy_to_shadow(&self, rows: Option<Rows>, output: &ModelOutput) {
        if let (Some(pair), Some(rows)) = (&self.shadow, rows) {
            pair.offer(rows, output.clone());
        }
    }
}

impl Snapshot {
    /// A snapshot of `repository` with each model's rollout from `configs`, resolved against
    /// the versions loaded. A configuration that does not fit them (its split names a version
    /// whose load failed) is logged and not applied: the model keeps the previous snapshot's
    /// routing when its versions are still loaded, else the newest loaded version takes all.
    /// Changed routings are logged; `previous` also keeps routing keys where they were.
    pub fn build(
        repository: ServedRepository,
        configs: &RolloutConfigs,
        previous: Option<&Snapshot>,
        queue: &ShadowQueue<ShadowJob>,
    ) -> Snapshot {
        let routes = repository
            .models
            .iter()
            .map(|(name, versions)| {
                let before = previous.and_then(|p| p.routes.get(name));
                let rollout = rollout_for(name, versions, &configs.get(name), before);
                if before.is_none_or(|b| b.rollout != rollout) {
                    tracing::info!(model = %name, rollout = %rollout, "rollout");
                }
                (name.clone(), Route::new(rollout, versions, queue))
            })
            .collect();
        Snapshot { repository, routes }
    }

    /// The version a request is answered by: the one the path names, or for an unversioned
    /// request the split's pick, sticky by `routing_key` (asked for only when the model's
    /// traffic is split).
    pub fn route(
        &self,
        name: Option<&str>,
        version: Option<&str>,
        routing_key: impl FnOnce() -> Option<String>,
    ) -> Result<Routed, LookupError> {
        let model = self.repository.get(name, version)?;
        let name = model.entry.name.as_str();
        let Some(route) = self.routes.get(name).filter(|_| version.is_none()) else {
            return Ok(Routed {
                model: model.clone(),
                shadow: None,
            });
        };
        let picked = route.only.unwrap_or_else(|| {
            let key = routing_key();
            route
                .rollout
                .pick(key.as_deref().map(str::as_bytes), &route.counter)
        });
        Ok(Routed {
            model: self.version(name, picked).unwrap_or(model).clone(),
            shadow: route.shadows.get(&picked).cloned(),
        })
    }

    /// The version a path names without routing a request: the named one, or the model's
    /// primary (for metadata and readiness).
    pub fn named(
        &self,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Arc<ServedModel>, LookupError> {
        let model = self.repository.get(name, version)?;
        let primary = self
            .routes
            .get(&model.entry.name)
            .filter(|_| version.is_none())
            .and_then(|route| self.version(&model.entry.name, route.primary));
        Ok(primary.unwrap_or(model).clone())
    }

    /// A loaded version's role in its model's rollout (`versioned` when the rollout does not
    /// mention it).
    pub fn role(&self, name: &str, version: &str) -> Role {
        let version = version.parse().map(Version);
        self.routes
            .get(name)
            .zip(version.ok())
            .and_then(|(route, version)| route.rollout.role(version))
            .unwrap_or(Role::Versioned)
    }

    /// A loaded version's share of its model's unversioned requests, in percent.
    pub fn share_percent(&self, name: &str, version: &str) -> f64 {
        match (self.routes.get(name), version.parse().map(Version)) {
            (Some(route), Ok(version)) => route.rollout.share_percent(version),
            _ => 0.0,
        }
    }

    /// Every loaded version, by model and version.
    pub fn versions(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.repository
            .models
            .values()
            .flat_map(|versions| versions.versions.values())
    }

    fn version(&self, name: &str, version: Version) -> Option<&Arc<ServedModel>> {
        self.repository.models.get(name)?.versions.get(&version.0)
    }
}

/// A model's rollout against its loaded versions: `config` if it fits them, else the previous
/// routing if its versions are all loaded, else the newest loaded version for everything.
fn rollout_for(
    name: &str,
    versions: &ModelVersions<ServedModel>,
    config: &ModelConfig,
    before: Option<&Route>,
) -> Rollout {
    let available: Vec<Version> = versions.versions.keys().copied().map(Version).collect();
    let field = format!("rollout.{name}");
    let resolved = match before {
        Some(before) => before.rollout.changed_to(config, &field, &available),
        None => config.resolve(name, &field, &available),
    };
    resolved.unwrap_or_else(|error| {
        let still_loaded = |rollout: &Rollout| {
            rollout
                .table
                .shares()
                .iter()
                .filter(|(_, slots)| *slots > 0)
                .map(|(v, _)| *v)
                .chain(rollout.shadow)
                .all(|v| available.contains(&v))
        };
        let kept = match before.map(|b| &b.rollout).filter(|r| still_loaded(r)) {
            Some(rollout) => rollout.clone(),
            None => ModelConfig::default()
                .resolve(name, &field, &available)
                .expect("a model in a snapshot has a loaded version"),
        };
        tracing::warn!(
            model = %name,
            %error,
            kept = %kept,
            "rollout configuration not applied: it does not fit the loaded versions"
        );
        kept
    })
}

impl Route {
    fn new(
        rollout: Rollout,
        versions: &ModelVersions<ServedModel>,
        queue: &ShadowQueue<ShadowJob>,
    ) -> Route {
        let taking: Vec<Version> = rollout
            .table
            .shares()
            .into_iter()
            .filter(|(_, slots)| *slots > 0)
            .map(|(v, _)| v)
            .collect();
        let primary = rollout
            .table
            .shares()
            .into_iter()
            .max_by_key(|(v, slots)| (*slots, *v))
            .map(|(v, _)| v)
            .expect("a split has a version");
        let shadow = rollout
            .shadow
            .and_then(|v| versions.versions.get(&v.0).cloned());
        let shadows = shadow
            .map(|shadow| {
                taking
                    .iter()
                    .filter_map(|v| {
                        let primary = versions.versions.get(&v.0)?;
                        match ShadowPair::new(primary, shadow.clone(), queue.clone()) {
                            Ok(pair) => Some((*v, Arc::new(pair))),
                            Err(error) => {
                                tracing::warn!(
                                    model = %primary.entry.name,
                                    version = %v,
                                    shadow_version = %shadow.entry.version,
                                    %error,
                                    "shadow not set for this version"
                                );
                                None
                            }
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Route {
            only: (taking.len() == 1).then(|| taking[0]),
            primary,
            rollout,
            counter: AtomicU64::new(0),
            shadows,
        }
    }
}
