//! Repository reconciliation: from what the repository holds (the manifest, its rollout
//! block, and the model files with their sha256) and what is loaded, the plan of what to
//! load, reload, unload, or refuse.
//!
//! A version whose file does not match the sha256 the manifest pins is refused, never
//! loaded: if an older file of it is serving, that one keeps serving, and the reason is
//! recorded for `/v2/repository/index` and the log (a model.onnx replaced on disk without
//! retraining must not silently change predictions). A pin that changed together with the
//! file (a retrain) is a reload. Without a pin (a bare repository, no manifest hash), a
//! changed sha256 is a reload.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::policy::served_versions;
use super::rollout::{manifest_versions, RolloutConfigs};
use super::Version;
use crate::model::repository::sha256_of_file;
use crate::model::Manifest;

/// What the scan found at a version's model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundFile {
    /// The file's sha256, lowercase hex.
    Sha256(String),
    /// The file could not be read; why.
    Unreadable(String),
    /// Not read: the version is outside the version policy.
    NotChecked,
}

/// One version the repository lists, as scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedVersion {
    pub name: String,
    pub version: Version,
    /// The model file.
    pub file: PathBuf,
    /// The sha256 the manifest pins, lowercase hex (`None`: no pin).
    pub pinned_sha256: Option<String>,
    pub found: FoundFile,
    /// Whether the model's version policy serves it: only those are loaded.
    pub in_policy: bool,
}

/// A version that must not be loaded, found before the repository is scanned, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub name: String,
    pub version: Version,
    /// The model file (local), for the index and the log.
    pub file: PathBuf,
    pub reason: String,
}

/// A file a bare repository cannot serve is refused with why it cannot.
impl From<crate::model::discover::Unservable> for Refusal {
    fn from(unservable: crate::model::discover::Unservable) -> Refusal {
        Refusal {
            name: unservable.version.name,
            version: Version(unservable.version.version),
            file: unservable.version.file,
            reason: unservable.error.to_string(),
        }
    }
}

/// Every version the repository lists, with what is on disk: the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryScan {
    pub versions: Vec<ScannedVersion>,
}

impl RepositoryScan {
    /// Scans the manifest's versions under `models_dir`, hashing the files of the versions the
    /// policies serve (a file unchanged since `hashes` last read it is not read again). Reads
    /// files: call it on a blocking thread, never on the async runtime.
    pub fn scan(
        manifest: &Manifest,
        configs: &RolloutConfigs,
        models_dir: &Path,
        hashes: &mut FileHashes,
    ) -> RepositoryScan {
        RepositoryScan::scan_with(manifest, configs, models_dir, |file, _| {
            match hashes.sha256(file) {
                Ok(sha256) => FoundFile::Sha256(sha256),
                Err(e) => FoundFile::Unreadable(format!("cannot read {}: {e}", file.display())),
            }
        })
    }

    /// The scan of a repository whose in-policy versions were just loaded, each file checked
    /// against its pin by the load itself: the pins stand for what was found, so nothing is
    /// read twice. What the state table starts from, and what the start-up load follows.
    pub fn as_pinned(
        manifest: &Manifest,
        configs: &RolloutConfigs,
        models_dir: &Path,
    ) -> RepositoryScan {
        RepositoryScan::scan_with(manifest, configs, models_dir, |_, pin| {
            FoundFile::Sha256(pin.to_string())
        })
    }

    /// The scan, `found` saying what is at an in-policy version's file (given the file and
    /// its lowercase pin).
    fn scan_with(
        manifest: &Manifest,
        configs: &RolloutConfigs,
        models_dir: &Path,
        mut found: impl FnMut(&Path, &str) -> FoundFile,
    ) -> RepositoryScan {
        let mut served: BTreeMap<&str, Vec<Version>> = BTreeMap::new();
        let versions = manifest
            .models
            .iter()
            .map(|entry| {
                let version: Version = entry.version.parse().expect("checked by the manifest");
                let in_policy = served
                    .entry(entry.name.as_str())
                    .or_insert_with(|| {
                        let policy = configs.get(&entry.name).version_policy;
                        served_versions(&policy, &manifest_versions(manifest, &entry.name))
                    })
                    .contains(&version);
                let file = models_dir.join(&entry.path).join(&entry.onnx.file);
                let pin = entry.onnx.sha256.to_ascii_lowercase();
                let found = if in_policy {
                    found(&file, &pin)
                } else {
                    FoundFile::NotChecked
                };
                ScannedVersion {
                    name: entry.name.clone(),
                    version,
                    file,
                    pinned_sha256: Some(pin),
                    found,
                    in_policy,
                }
            })
            .collect();
        RepositoryScan { versions }
    }

    /// Marks versions found unservable before the scan (a file a bare repository cannot serve,
    /// a remote object refused on its sha256) as unreadable with their reason, so the plan
    /// refuses them (the loaded file keeps serving, if one does). A version the manifest does
    /// not list (a bare repository leaves unservable files out of it) is added.
    pub fn refuse(&mut self, refusals: &[Refusal]) {
        for refusal in refusals {
            let found = FoundFile::Unreadable(refusal.reason.clone());
            match self
                .versions
                .iter_mut()
                .find(|v| v.name == refusal.name && v.version == refusal.version)
            {
                // Outside the version policy it would not be loaded anyway.
                Some(scanned) if !scanned.in_policy => {}
                Some(scanned) => scanned.found = found,
                None => self.versions.push(ScannedVersion {
                    name: refusal.name.clone(),
                    version: refusal.version,
                    file: refusal.file.clone(),
                    pinned_sha256: None,
                    found,
                    in_policy: true,
                }),
            }
        }
    }

    /// The part of the scan about one model: what an explicit-mode `load` reconciles.
    pub fn only(&self, model: &str) -> RepositoryScan {
        RepositoryScan {
            versions: self
                .versions
                .iter()
                .filter(|v| v.name == model)
                .cloned()
                .collect(),
        }
    }

    /// The models the scan covers.
    pub fn models(&self) -> BTreeSet<&str> {
        self.versions.iter().map(|v| v.name.as_str()).collect()
    }
}

/// The hashes of model files as last read, kept across rescans: a poll every few seconds must
/// not read every model file in full each time. A file is read again when its length or
/// modification time changed (what Triton's poll mode compares); one replaced by a file of the
/// same length with its modification time set back is not noticed until it changes again,
/// and is still checked against its pin when it is loaded.
#[derive(Debug, Default)]
pub struct FileHashes {
    known: BTreeMap<PathBuf, (u64, std::time::SystemTime, String)>,
}

impl FileHashes {
    /// `path`'s sha256, read only when the file changed since the last call for it.
    pub fn sha256(&mut self, path: &Path) -> io::Result<String> {
        let metadata = std::fs::metadata(path)?;
        let stamp = (metadata.len(), metadata.modified()?);
        if let Some((len, modified, sha256)) = self.known.get(path) {
            if (*len, *modified) == stamp {
                return Ok(sha256.clone());
            }
        }
        let sha256 = sha256_of_file(path)?;
        self.known
            .insert(path.to_path_buf(), (stamp.0, stamp.1, sha256.clone()));
        Ok(sha256)
    }
}

/// A version that is loaded and serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedVersion {
    pub name: String,
    pub version: Version,
    /// The sha256 of the file it was loaded from, lowercase hex.
    pub sha256: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Load a version that is not loaded.
    Load {
        name: String,
        version: Version,
        sha256: String,
    },
    /// Load a version's new file beside the serving one and swap it in.
    Reload {
        name: String,
        version: Version,
        from_sha256: String,
        to_sha256: String,
    },
    /// Drain and drop a loaded version (no longer listed, or outside the policy).
    Unload { name: String, version: Version },
    /// Do not load this version's file; `serving` is the sha256 of the file that keeps
    /// serving, if one does.
    Refuse {
        name: String,
        version: Version,
        reason: String,
        serving: Option<String>,
    },
}

impl Action {
    /// The (model, version) the action is about.
    pub fn target(&self) -> (&str, Version) {
        match self {
            Action::Load { name, version, .. }
            | Action::Reload { name, version, .. }
            | Action::Unload { name, version }
            | Action::Refuse { name, version, .. } => (name, *version),
        }
    }
}

/// What to do, ordered by model and version; empty when nothing changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
}

/// The plan that takes `loaded` to what `scan` wants, for the models the scan covers (loaded
/// versions of other models are left alone, so an explicit load of one model touches only it).
pub fn plan(scan: &RepositoryScan, loaded: &[LoadedVersion]) -> Plan {
    let models = scan.models();
    let loaded_by_key: BTreeMap<(&str, Version), &LoadedVersion> = loaded
        .iter()
        .filter(|l| models.contains(l.name.as_str()))
        .map(|l| ((l.name.as_str(), l.version), l))
        .collect();
    let mut actions = Vec::new();
    let mut wanted: BTreeSet<(&str, Version)> = BTreeSet::new();
    for scanned in scan.versions.iter().filter(|s| s.in_policy) {
        let key = (scanned.name.as_str(), scanned.version);
        wanted.insert(key);
        let serving = loaded_by_key
            .get(&key)
            .map(|l| l.sha256.to_ascii_lowercase());
        let refuse = |reason: String| Action::Refuse {
            name: scanned.name.clone(),
            version: scanned.version,
            reason,
            serving: serving.clone(),
        };
        let found = match &scanned.found {
            FoundFile::Sha256(found) => found,
            FoundFile::Unreadable(reason) => {
                actions.push(refuse(reason.clone()));
                continue;
            }
            FoundFile::NotChecked => continue,
        };
        if let Some(pin) = scanned.pinned_sha256.as_ref().filter(|pin| *pin != found) {
            actions.push(refuse(format!(
                "sha256 pin mismatch: {} has sha256 {found}, the manifest pins {pin}",
                scanned.file.display()
            )));
            continue;
        }
        match serving {
            None => actions.push(Action::Load {
                name: scanned.name.clone(),
                version: scanned.version,
                sha256: found.clone(),
            }),
            Some(from) if from != *found => actions.push(Action::Reload {
                name: scanned.name.clone(),
                version: scanned.version,
                from_sha256: from,
                to_sha256: found.clone(),
            }),
            Some(_) => {}
        }
    }
    for key in loaded_by_key.keys().filter(|k| !wanted.contains(*k)) {
        actions.push(Action::Unload {
            name: key.0.to_string(),
            version: key.1,
        });
    }
    actions.sort_by(|a, b| a.target().cmp(&b.target()));
    Plan { actions }
}

/// The plan of an explicit `unload`: every loaded version of the model.
pub fn unload_model(model: &str, loaded: &[LoadedVersion]) -> Plan {
    let mut actions: Vec<Action> = loaded
        .iter()
        .filter(|l| l.name == model)
        .map(|l| Action::Unload {
            name: l.name.clone(),
            version: l.version,
        })
        .collect();
    actions.sort_by(|a, b| a.target().cmp(&b.target()));
    Plan { actions }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(name: &str, version: u64, pin: Option<&str>, found: FoundFile) -> ScannedVersion {
        ScannedVersion {
            name: name.into(),
            version: Version(version),
            file: PathBuf::from(format!("models/{name}/{version}/model.onnx")),
            pinned_sha256: pin.map(str::to_string),
            found,
            in_policy: true,
        }
    }

    fn sha(s: &str) -> FoundFile {
        FoundFile::Sha256(s.into())
    }

    #[test]
    fn refusals_found_before_the_scan_are_refused_by_the_plan() {
        let mut out_of_policy = scanned("m", 3, Some("cc"), FoundFile::NotChecked);
        out_of_policy.in_policy = false;
        let mut scan = RepositoryScan {
            versions: vec![
                scanned("m", 1, Some("aa"), sha("aa")),
                scanned("m", 2, Some("bb"), sha("bb")),
                out_of_policy,
            ],
        };
        let refusal = |name: &str, version: u64, reason: &str| Refusal {
            name: name.into(),
            version: Version(version),
            file: PathBuf::from(format!("models/{name}/{version}/model.onnx")),
            reason: reason.into(),
        };
        scan.refuse(&[
            refusal("m", 1, "object tampered"),
            refusal("m", 2, "object tampered"),
            refusal("m", 3, "outside the policy anyway"),
            refusal("bare", 1, "not an ONNX model"),
        ]);
        // 1 serves its old file, 2 is new, 3 is not served, "bare" is not in the manifest.
        let actions = plan(&scan, &[loaded("m", 1, "aa")]).actions;
        let refuse =
            |name: &str, version: u64, reason: &str, serving: Option<&str>| Action::Refuse {
                name: name.into(),
                version: Version(version),
                reason: reason.into(),
                serving: serving.map(str::to_string),
            };
        assert_eq!(
            actions,
            [
                refuse("bare", 1, "not an ONNX model", None),
                refuse("m", 1, "object tampered", Some("aa")),
                refuse("m", 2, "object tampered", None),
            ]
        );
    }

    fn loaded(name: &str, version: u64, sha256: &str) -> LoadedVersion {
        LoadedVersion {
            name: name.into(),
            version: Version(version),
            sha256: sha256.into(),
        }
    }

    #[test]
    fn loads_reloads_unloads_and_leaves_the_unchanged_alone() {
        let scan = RepositoryScan {
            versions: vec![
                scanned("m", 1, Some("aa"), sha("aa")), // unchanged
                scanned("m", 2, Some("bb"), sha("bb")), // new
                scanned("m", 3, Some("c2"), sha("c2")), // retrained: pin and file changed
                scanned("u", 1, None, sha("u2")),       // unpinned, file changed
            ],
        };
        let now = [
            loaded("m", 1, "aa"),
            loaded("m", 3, "c1"),
            loaded("m", 4, "dd"), // no longer listed
            loaded("u", 1, "u1"),
            loaded("other", 1, "ee"), // a model the scan does not cover
        ];
        assert_eq!(
            plan(&scan, &now).actions,
            [
                Action::Load {
                    name: "m".into(),
                    version: Version(2),
                    sha256: "bb".into()
                },
                Action::Reload {
                    name: "m".into(),
                    version: Version(3),
                    from_sha256: "c1".into(),
                    to_sha256: "c2".into()
                },
                Action::Unload {
                    name: "m".into(),
                    version: Version(4)
                },
                Action::Reload {
                    name: "u".into(),
                    version: Version(1),
                    from_sha256: "u1".into(),
                    to_sha256: "u2".into()
                },
            ]
        );
        let steady = [
            loaded("m", 1, "aa"),
            loaded("m", 2, "bb"),
            loaded("m", 3, "c2"),
            loaded("u", 1, "u2"),
        ];
        assert_eq!(plan(&scan, &steady), Plan::default());
    }

    #[test]
    fn a_file_replaced_on_disk_is_refused_and_the_old_one_keeps_serving() {
        let scan = RepositoryScan {
            versions: vec![
                scanned("m", 1, Some("aa"), sha("ff")),
                scanned("m", 2, Some("bb"), sha("ff")),
                scanned(
                    "m",
                    3,
                    Some("cc"),
                    FoundFile::Unreadable("cannot read x: gone".into()),
                ),
            ],
        };
        let actions = plan(&scan, &[loaded("m", 1, "aa")]).actions;
        assert_eq!(
            actions,
            [
                Action::Refuse {
                    name: "m".into(),
                    version: Version(1),
                    reason: "sha256 pin mismatch: models/m/1/model.onnx has sha256 ff, the manifest pins aa".into(),
                    serving: Some("aa".into()),
                },
                Action::Refuse {
                    name: "m".into(),
                    version: Version(2),
                    reason: "sha256 pin mismatch: models/m/2/model.onnx has sha256 ff, the manifest pins bb".into(),
                    serving: None,
                },
                Action::Refuse {
                    name: "m".into(),
                    version: Version(3),
                    reason: "cannot read x: gone".into(),
                    serving: None,
                },
            ]
        );
    }

    #[test]
    fn versions_outside_the_policy_are_unloaded_and_explicit_plans_touch_one_model() {
        let mut old = scanned("m", 1, Some("aa"), FoundFile::NotChecked);
        old.in_policy = false;
        let scan = RepositoryScan {
            versions: vec![
                old,
                scanned("m", 2, Some("bb"), sha("bb")),
                scanned("n", 1, None, sha("nn")),
            ],
        };
        let now = [loaded("m", 1, "aa"), loaded("m", 2, "bb")];
        assert_eq!(
            plan(&scan.only("m"), &now).actions,
            [Action::Unload {
                name: "m".into(),
                version: Version(1)
            }]
        );
        assert_eq!(
            plan(&scan.only("n"), &now).actions,
            [Action::Load {
                name: "n".into(),
                version: Version(1),
                sha256: "nn".into()
            }]
        );
        assert_eq!(
            unload_model("m", &now).actions,
            [
                Action::Unload {
                    name: "m".into(),
                    version: Version(1)
                },
                Action::Unload {
                    name: "m".into(),
                    version: Version(2)
                }
            ]
        );
    }

    #[test]
    fn scans_the_manifest_hashing_only_what_the_policy_serves() {
        let dir = tempfile::tempdir().unwrap();
        for (version, bytes) in [(1, &b"one"[..]), (2, &b"two"[..])] {
            let folder = dir.path().join(format!("m/{version}"));
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("model.onnx"), bytes).unwrap();
        }
        let sha_two = crate::model::repository::sha256_hex(b"two");
        let entry = |version: u32, sha: &str| {
            format!(
                r#"{{"name": "m", "version": "{version}", "task": "regression", "path": "m/{version}",
                "feature_names": ["a"], "onnx": {{"file": "model.onnx", "sha256": "{sha}",
                "input": "i", "outputs": {{"value": "v"}}}}}}"#
            )
        };
        let text = format!(
            r#"{{"models": [{}, {}, {}], "rollout": {{"m": {{"version_policy": {{"latest": {{"num_versions": 2}}}}}}}}}}"#,
            entry(1, "00"),
            entry(2, &sha_two.to_uppercase()),
            entry(3, "33")
        );
        let manifest = Manifest::parse(&text).unwrap();
        let configs = RolloutConfigs::from_manifest(&manifest).unwrap();
        let scan =
            RepositoryScan::scan(&manifest, &configs, dir.path(), &mut FileHashes::default());
        let found: Vec<(u64, bool, &FoundFile)> = scan
            .versions
            .iter()
            .map(|v| (v.version.0, v.in_policy, &v.found))
            .collect();
        assert_eq!(found[0], (1, false, &FoundFile::NotChecked));
        assert_eq!(found[1], (2, true, &FoundFile::Sha256(sha_two.clone())));
        assert_eq!(found[2].0, 3);
        assert!(matches!(found[2].2, FoundFile::Unreadable(r) if r.contains("m/3/model.onnx")));
        // The uppercase pin matches the lowercase digest.
        let actions = plan(&scan, &[]).actions;
        assert_eq!(
            actions[0],
            Action::Load {
                name: "m".into(),
                version: Version(2),
                sha256: sha_two.clone()
            }
        );
        assert!(matches!(
            &actions[1],
            Action::Refuse {
                version: Version(3),
                ..
            }
        ));
        // After a load that checked the files: the pins stand for them, nothing is read (the
        // file of version 3 does not exist), and the plan from a full load is empty.
        let pinned = RepositoryScan::as_pinned(&manifest, &configs, dir.path());
        assert_eq!(pinned.versions[0].found, FoundFile::NotChecked);
        assert_eq!(pinned.versions[2].found, FoundFile::Sha256("33".into()));
        let loaded: Vec<LoadedVersion> = [(2, sha_two.as_str()), (3, "33")]
            .iter()
            .map(|&(v, sha)| LoadedVersion {
                name: "m".into(),
                version: Version(v),
                sha256: sha.into(),
            })
            .collect();
        assert_eq!(plan(&pinned, &loaded), Plan::default());
    }

    #[test]
    fn file_hashes_read_a_file_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, b"one").unwrap();
        let mut hashes = FileHashes::default();
        let one = hashes.sha256(&path).unwrap();
        assert_eq!(one, crate::model::repository::sha256_hex(b"one"));
        // Same length and the old modification time: not read again (the cached hash).
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, b"two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_eq!(hashes.sha256(&path).unwrap(), one);
        // A new modification time: read, and the new hash.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified + std::time::Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            hashes.sha256(&path).unwrap(),
            crate::model::repository::sha256_hex(b"two")
        );
    }
}
