//! The state of every model version the repository lists, as `/v2/repository/index`
//! answers it: READY, UNAVAILABLE, LOADING or UNLOADING, with the reason when it is not
//! plainly serving (a refused file, a failed load, outside the version policy).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::reconcile::{Action, Plan, RepositoryScan};
use super::Version;

/// A version's state, spelled as Triton spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ModelStateKind {
    /// Serving.
    Ready,
    /// Not serving: never loaded, refused, failed, or unloaded.
    Unavailable,
    /// Being read, checked and warmed up; not serving yet.
    Loading,
    /// Draining before it is dropped; finishing the requests already on it.
    Unloading,
}

impl ModelStateKind {
    /// As the index spells it (`READY`, ...), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStateKind::Ready => "READY",
            ModelStateKind::Unavailable => "UNAVAILABLE",
            ModelStateKind::Loading => "LOADING",
            ModelStateKind::Unloading => "UNLOADING",
        }
    }
}

/// One entry of the repository index: `{"name", "version", "state", "reason"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelState {
    pub name: String,
    pub version: Version,
    pub state: ModelStateKind,
    /// Empty when there is nothing to explain.
    pub reason: String,
}

/// Every listed or loaded version's state, updated as a plan runs.
#[derive(Debug, Clone, Default)]
pub struct StateTable {
    entries: BTreeMap<(String, Version), Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    state: ModelState,
    /// Whether the last scan listed it: an unloaded version that is no longer listed leaves
    /// the index.
    listed: bool,
    /// Whether it is not serving because its last load failed or its file was refused (not
    /// merely unloaded or outside the policy): requests to it are answered "unavailable"
    /// with the reason, not "not found".
    failed: bool,
}

impl StateTable {
    /// Records a scan and the plan made from it, before the plan runs: new versions LOADING,
    /// reloads READY (the old file serves meanwhile), unloads UNLOADING, refusals with their
    /// reason (READY if an old file still serves), and listed versions nothing loads
    /// UNAVAILABLE with why. Only the models the scan covers are touched.
    pub fn begin(&mut self, scan: &RepositoryScan, plan: &Plan) {
        let models = scan.models();
        for entry in self
            .entries
            .values_mut()
            .filter(|e| models.contains(e.state.name.as_str()))
        {
            entry.listed = false;
        }
        for scanned in &scan.versions {
            let entry = self.entry(&scanned.name, scanned.version);
            entry.listed = true;
            if !scanned.in_policy {
                entry.failed = false;
            }
            if entry.state.state == ModelStateKind::Ready {
                // Serving as wanted unless the plan says otherwise below.
                entry.state.reason.clear();
            } else if !entry.failed {
                // (A failed version keeps why it failed until it serves.)
                entry.state.state = ModelStateKind::Unavailable;
                entry.state.reason = if scanned.in_policy {
                    "not loaded".into()
                } else {
                    "not served by the version policy".into()
                };
            }
        }
        for action in &plan.actions {
            let (name, version) = action.target();
            let entry = self.entry(name, version);
            let (state, reason) = match action {
                Action::Load { .. } => (ModelStateKind::Loading, String::new()),
                Action::Reload {
                    from_sha256,
                    to_sha256,
                    ..
                } => (
                    ModelStateKind::Ready,
                    format!("reloading: sha256 {from_sha256} → {to_sha256}"),
                ),
                Action::Unload { .. } => (ModelStateKind::Unloading, String::new()),
                Action::Refuse {
                    reason, serving, ..
                } => match serving {
                    Some(sha256) => (
                        ModelStateKind::Ready,
                        format!("{reason}; still serving sha256 {sha256}"),
                    ),
                    None => {
                        entry.failed = true;
                        (ModelStateKind::Unavailable, reason.clone())
                    }
                },
            };
            if state == ModelStateKind::Loading && entry.failed {
                // A retry: requests are still answered with why the last try failed.
                entry.state.state = state;
                continue;
            }
            entry.state.state = state;
            entry.state.reason = reason;
        }
        self.entries
            .retain(|_, e| e.listed || e.state.state != ModelStateKind::Unavailable);
    }

    /// A load or reload finished: the version serves its new file.
    pub fn loaded(&mut self, name: &str, version: Version) {
        let entry = self.entry(name, version);
        entry.state.state = ModelStateKind::Ready;
        entry.state.reason.clear();
        entry.failed = false;
    }

    /// A load or reload failed: a reload keeps serving the old file (READY, with why),
    /// a new version is UNAVAILABLE.
    pub fn load_failed(&mut self, name: &str, version: Version, reason: &str) {
        let entry = self.entry(name, version);
        if entry.state.state == ModelStateKind::Ready {
            entry.state.reason =
                format!("reload failed, still serving the previous file: {reason}");
        } else {
            entry.state.state = ModelStateKind::Unavailable;
            entry.state.reason = format!("load failed: {reason}");
            entry.failed = true;
        }
    }

    /// An unload was not carried out: the version keeps serving (READY), with why (the versions
    /// meant to replace it failed to load, so unloading it would leave the model with none).
    pub fn kept(&mut self, name: &str, version: Version, reason: &str) {
        let entry = self.entry(name, version);
        entry.state.state = ModelStateKind::Ready;
        entry.state.reason = reason.to_string();
    }

    /// An unload finished draining: UNAVAILABLE if the repository still lists the version,
    /// else gone from the index.
    pub fn unloaded(&mut self, name: &str, version: Version) {
        let key = (name.to_string(), version);
        let listed = self.entries.get(&key).is_some_and(|e| e.listed);
        if listed {
            let entry = self.entry(name, version);
            entry.state.state = ModelStateKind::Unavailable;
            entry.state.reason = "unloaded".into();
            entry.failed = false;
        } else {
            self.entries.remove(&key);
        }
    }

    /// The repository index, by model and version; `ready_only` keeps the READY ones (the
    /// index request's `"ready": true`).
    pub fn index(&self, ready_only: bool) -> Vec<ModelState> {
        self.entries
            .values()
            .map(|e| &e.state)
            .filter(|s| !ready_only || s.state == ModelStateKind::Ready)
            .cloned()
            .collect()
    }

    /// The state of a version of `name` (the highest one when `version` is `None`) that does not
    /// serve because it failed to load or was refused: what a request to it is answered with.
    /// `None` when there is no such version (unknown, unloaded, or serving).
    pub fn unavailable(&self, name: &str, version: Option<Version>) -> Option<&ModelState> {
        self.entries
            .values()
            .filter(|e| e.failed && e.state.state != ModelStateKind::Ready)
            .map(|e| &e.state)
            .rfind(|s| s.name == name && version.is_none_or(|v| s.version == v))
    }

    /// Whether some version does not serve because it failed to load or was refused.
    pub fn any_unavailable(&self) -> bool {
        self.entries
            .values()
            .any(|e| e.failed && e.state.state != ModelStateKind::Ready)
    }

    fn entry(&mut self, name: &str, version: Version) -> &mut Entry {
        self.entries
            .entry((name.to_string(), version))
            .or_insert_with(|| Entry {
                state: ModelState {
                    name: name.to_string(),
                    version,
                    state: ModelStateKind::Unavailable,
                    reason: String::new(),
                },
                listed: false,
                failed: false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::reconcile::{plan, FoundFile, LoadedVersion, ScannedVersion};

    fn scanned(version: u64, pin: &str, found: &str, in_policy: bool) -> ScannedVersion {
        ScannedVersion {
            name: "m".into(),
            version: Version(version),
            file: format!("m/{version}/model.onnx").into(),
            pinned_sha256: Some(pin.into()),
            found: if in_policy {
                FoundFile::Sha256(found.into())
            } else {
                FoundFile::NotChecked
            },
            in_policy,
        }
    }

    /// Begins a reconcile pass over a scan of `versions` while `loaded` serve; the scan, for
    /// another pass.
    fn rescan(
        table: &mut StateTable,
        versions: Vec<ScannedVersion>,
        loaded: &[LoadedVersion],
    ) -> RepositoryScan {
        let scan = RepositoryScan { versions };
        table.begin(&scan, &plan(&scan, loaded));
        scan
    }

    /// Version `version` of "m" serving the file with `sha256`.
    fn serving(version: u64, sha256: &str) -> LoadedVersion {
        LoadedVersion {
            name: "m".into(),
            version: Version(version),
            sha256: sha256.into(),
        }
    }

    /// A table in which version 1 of "m" serves the file with sha256 "a", just rescanned as
    /// `versions`; also what serves, for further rescans.
    fn rescanned_while_1_serves(versions: Vec<ScannedVersion>) -> (StateTable, [LoadedVersion; 1]) {
        let mut table = StateTable::default();
        let loaded = [serving(1, "a")];
        table.loaded("m", Version(1));
        rescan(&mut table, versions, &loaded);
        (table, loaded)
    }

    fn states(table: &StateTable) -> Vec<(u64, ModelStateKind, String)> {
        table
            .index(false)
            .into_iter()
            .map(|s| (s.version.0, s.state, s.reason))
            .collect()
    }

    #[test]
    fn a_rescan_walks_versions_through_their_states() {
        use ModelStateKind::*;
        let mut table = StateTable::default();
        // Start: 1 and 2 listed, policy serves 2 only.
        let scan = RepositoryScan {
            versions: vec![scanned(1, "a", "a", false), scanned(2, "b", "b", true)],
        };
        let first = plan(&scan, &[]);
        table.begin(&scan, &first);
        assert_eq!(
            states(&table),
            [
                (1, Unavailable, "not served by the version policy".into()),
                (2, Loading, String::new())
            ]
        );
        table.loaded("m", Version(2));
        assert_eq!(table.index(true).len(), 1);
        assert_eq!(table.index(true)[0].state, Ready);

        // model.onnx of 2 replaced on disk; 3 added and its load fails.
        let loaded = [serving(2, "b")];
        rescan(
            &mut table,
            vec![
                scanned(1, "a", "a", false),
                scanned(2, "b", "x", true),
                scanned(3, "c", "c", true),
            ],
            &loaded,
        );
        table.load_failed("m", Version(3), "warm-up inference failed");
        assert_eq!(
            states(&table),
            [
                (1, Unavailable, "not served by the version policy".into()),
                (
                    2,
                    Ready,
                    "sha256 pin mismatch: m/2/model.onnx has sha256 x, the manifest pins b; still serving sha256 b".into()
                ),
                (3, Unavailable, "load failed: warm-up inference failed".into()),
            ]
        );

        // 2 dropped from the manifest: unloading, then gone; 1 stays listed.
        rescan(&mut table, vec![scanned(1, "a", "a", false)], &loaded);
        assert_eq!(states(&table)[1], (2, Unloading, String::new()));
        // (The failed 3 is no longer listed: it leaves the index.)
        assert_eq!(states(&table).len(), 2);
        table.unloaded("m", Version(2));
        assert_eq!(
            states(&table),
            [(1, Unavailable, "not served by the version policy".into())]
        );
    }

    #[test]
    fn a_failed_version_is_unavailable_with_its_reason_through_retries_until_it_serves() {
        let mut table = StateTable::default();
        let scan = rescan(
            &mut table,
            vec![scanned(1, "a", "a", true), scanned(2, "b", "b", true)],
            &[],
        );
        table.load_failed("m", Version(2), "bad graph");
        table.loaded("m", Version(1));
        let reason = |table: &StateTable, version| {
            table
                .unavailable("m", version)
                .map(|s| (s.version.0, s.state, s.reason.clone()))
        };
        let failed = Some((
            2,
            ModelStateKind::Unavailable,
            "load failed: bad graph".into(),
        ));
        assert_eq!(reason(&table, Some(Version(2))), failed);
        assert_eq!(reason(&table, None), failed);
        // Serving, unknown or merely unloaded versions are not "unavailable".
        assert_eq!(reason(&table, Some(Version(1))), None);
        assert_eq!(reason(&table, Some(Version(3))), None);
        assert_eq!(table.unavailable("other", None), None);
        // A rescan retries it: LOADING, still with why the last try failed.
        let loaded = [serving(1, "a")];
        table.begin(&scan, &plan(&scan, &loaded));
        assert_eq!(
            reason(&table, Some(Version(2))),
            Some((2, ModelStateKind::Loading, "load failed: bad graph".into()))
        );
        assert!(table.any_unavailable());
        table.loaded("m", Version(2));
        assert_eq!(reason(&table, None), None);
        assert!(!table.any_unavailable());
        table.unloaded("m", Version(2));
        assert_eq!(reason(&table, Some(Version(2))), None);
    }

    #[test]
    fn state_names_are_spelled_as_the_index_serializes_them() {
        use ModelStateKind::*;
        for kind in [Ready, Unavailable, Loading, Unloading] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn a_kept_version_stays_ready_with_why() {
        let (mut table, _) = rescanned_while_1_serves(vec![
            scanned(1, "a", "a", false),
            scanned(2, "b", "b", true),
        ]);
        assert_eq!(states(&table)[0].1, ModelStateKind::Unloading);
        table.load_failed("m", Version(2), "warm-up failed");
        table.kept("m", Version(1), "kept serving: no newer version loaded");
        assert_eq!(
            states(&table),
            [
                (
                    1,
                    ModelStateKind::Ready,
                    "kept serving: no newer version loaded".into()
                ),
                (
                    2,
                    ModelStateKind::Unavailable,
                    "load failed: warm-up failed".into()
                )
            ]
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_old_file_ready() {
        let (mut table, _) = rescanned_while_1_serves(vec![scanned(1, "a2", "a2", true)]);
        assert_eq!(
            states(&table),
            [(1, ModelStateKind::Ready, "reloading: sha256 a → a2".into())]
        );
        table.load_failed("m", Version(1), "bad signature");
        assert_eq!(
            states(&table),
            [(
                1,
                ModelStateKind::Ready,
                "reload failed, still serving the previous file: bad signature".into()
            )]
        );
    }

    #[test]
    fn a_refusal_clears_once_the_file_matches_its_pin_again() {
        let (mut table, loaded) = rescanned_while_1_serves(vec![scanned(1, "a", "x", true)]);
        assert!(table.index(true)[0]
            .reason
            .starts_with("sha256 pin mismatch"));
        rescan(&mut table, vec![scanned(1, "a", "a", true)], &loaded);
        assert_eq!(states(&table), [(1, ModelStateKind::Ready, String::new())]);
    }

    #[test]
    fn an_explicit_unload_of_a_listed_version_leaves_it_unavailable() {
        let mut table = StateTable::default();
        rescan(&mut table, vec![scanned(1, "a", "a", true)], &[]);
        table.loaded("m", Version(1));
        table.unloaded("m", Version(1));
        let index = table.index(false);
        assert_eq!(index[0].state, ModelStateKind::Unavailable);
        assert_eq!(index[0].reason, "unloaded");
        assert!(table.index(true).is_empty());
        assert_eq!(
            serde_json::to_value(&index[0]).unwrap(),
            serde_json::json!({"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"})
        );
    }
}
