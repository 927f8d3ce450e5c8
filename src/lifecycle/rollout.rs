//! A model's rollout configuration, the manifest's top-level `rollout` block (and a repository
//! `load`'s `parameters.config`, the same object as a JSON string):
//!
//! ```json
//! "rollout": {
//!   "credit": {
//!     "version_policy": {"latest": {"num_versions": 3}},
//!     "split": {"2": 90, "3": 10},
//!     "shadow": "4"
//!   }
//! }
//! ```
//!
//! Every field is optional; a model without a block is served as today (every version,
//! unversioned requests to the highest). Kept outside the per-version `models` entries because
//! the split and the shadow are about a model, not one version; the manifest parser ignores
//! the block, and `/manifest` serves it back as written.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};

use super::policy::{served_versions, VersionPolicy};
use super::router::{SplitTable, SLOTS};
use super::{LifecycleError, Version};
use crate::model::Manifest;

/// The manifest's key for the rollout block.
pub const MANIFEST_FIELD: &str = "rollout";

/// One model's rollout configuration, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Which versions are served; default `all`.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Relative weights of unversioned traffic per version (`{"1": 90, "2": 10}` puts a
    /// canary at 10%). Absent: the newest served version takes it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<BTreeMap<Version, u32>>,
    /// A version that receives a copy of each unversioned request, off the response path,
    /// and whose answers are only compared, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Version>,
}

impl ModelConfig {
    /// Reads a repository `load`'s `parameters.config` (Triton's config override: a JSON
    /// string holding the model's configuration), so a split or shadow changes live.
    pub fn from_override(json: &str, field: &str) -> Result<ModelConfig, LifecycleError> {
        serde_json::from_str(json).map_err(|e| LifecycleError::config(field, e.to_string()))
    }

    /// Checks the configuration against the versions the repository has and resolves it
    /// into what routing uses. `field` is where it was read (`rollout.credit`), for errors.
    pub fn resolve(
        &self,
        model: &str,
        field: &str,
        available: &[Version],
    ) -> Result<Rollout, LifecycleError> {
        let policy_field = format!("{field}.version_policy");
        self.version_policy.check(&policy_field)?;
        let served = served_versions(&self.version_policy, available);
        if served.is_empty() {
            return Err(LifecycleError::config(
                policy_field,
                format!(
                    "serves none of the available versions ({})",
                    list(available)
                ),
            ));
        }
        let not_served = |v: &Version| {
            format!(
                "version {v} is not served by version_policy (served: {})",
                list(&served)
            )
        };
        if let Some(shadow) = self.shadow {
            if !served.contains(&shadow) {
                return Err(LifecycleError::config(
                    format!("{field}.shadow"),
                    not_served(&shadow),
                ));
            }
        }
        let weights = match &self.split {
            Some(split) => {
                if let Some(v) = split.keys().find(|v| !served.contains(v)) {
                    return Err(LifecycleError::config(
                        format!("{field}.split.\"{v}\""),
                        not_served(v),
                    ));
                }
                if let Some(shadow) = self.shadow.filter(|s| split.get(s).is_some_and(|w| *w > 0)) {
                    return Err(LifecycleError::config(
                        format!("{field}.shadow"),
                        format!(
                            "version {shadow} also has a weight in split; a shadow only receives copies of requests"
                        ),
                    ));
                }
                split.clone()
            }
            // The newest served version that is not the shadow: shadowing a new version
            // needs no split.
            None => {
                let Some(primary) = served.iter().rev().find(|v| Some(**v) != self.shadow) else {
                    return Err(LifecycleError::config(
                        format!("{field}.shadow"),
                        "is the only served version; nothing would answer unversioned requests",
                    ));
                };
                BTreeMap::from([(*primary, 1)])
            }
        };
        let table = SplitTable::new(&weights, &format!("{field}.split"))?;
        Ok(Rollout {
            model: model.to_string(),
            served,
            table,
            shadow: self.shadow,
        })
    }
}

/// Every model's configuration from the manifest's `rollout` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutConfigs {
    configs: BTreeMap<String, ModelConfig>,
}

impl RolloutConfigs {
    /// Reads and checks the block: each named model must be in the manifest, and its
    /// configuration must resolve against the versions the manifest lists for it. A bad block
    /// refuses the whole manifest (at start, or at a rescan, which keeps the old one).
    pub fn from_manifest(manifest: &Manifest) -> Result<RolloutConfigs, LifecycleError> {
        let Some(block) = manifest.raw.get(MANIFEST_FIELD) else {
            return Ok(RolloutConfigs::default());
        };
        let block = block.as_object().ok_or_else(|| {
            LifecycleError::config(
                MANIFEST_FIELD,
                "must be an object of model name → configuration",
            )
        })?;
        let mut configs = BTreeMap::new();
        for (name, value) in block {
            let field = format!("{MANIFEST_FIELD}.{name}");
            let available = manifest_versions(manifest, name);
            if available.is_empty() {
                return Err(LifecycleError::config(
                    field,
                    "no such model among the manifest's models",
                ));
            }
            let config: ModelConfig = serde_json::from_value(value.clone())
                .map_err(|e| LifecycleError::config(&field, e.to_string()))?;
            config.resolve(name, &field, &available)?;
            configs.insert(name.clone(), config);
        }
        Ok(RolloutConfigs { configs })
    }

    /// Puts a repository `load`'s configuration in place of the manifest's for `model`,
    /// checked as the manifest's block is (the model must be listed, the configuration must
    /// resolve against its versions); `field` is where it was read (`parameters.config`).
    pub fn set_override(
        &mut self,
        manifest: &Manifest,
        model: &str,
        config: ModelConfig,
        field: &str,
    ) -> Result<(), LifecycleError> {
        let available = manifest_versions(manifest, model);
        if available.is_empty() {
            return Err(LifecycleError::config(
                field,
                format!("model '{model}' is not among the manifest's models"),
            ));
        }
        config.resolve(model, field, &available)?;
        self.configs.insert(model.to_string(), config);
        Ok(())
    }

    /// A model's configuration: the default (today's behaviour) when the block omits it.
    pub fn get(&self, model: &str) -> ModelConfig {
        self.configs.get(model).cloned().unwrap_or_default()
    }
}

/// The versions the manifest lists for a model (versions are checked whole numbers there).
pub fn manifest_versions(manifest: &Manifest, model: &str) -> Vec<Version> {
    manifest
        .models
        .iter()
        .filter(|entry| entry.name == model)
        .filter_map(|entry| entry.version.parse().ok())
        .collect()
}

/// What a version does in a model's rollout: the bounded `role` label of
/// `ferrum_model_info` and `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes the largest share of unversioned traffic (ties: the higher version).
    Primary,
    /// Takes a smaller, positive share.
    Canary,
    /// Receives copies of requests; its answers are compared, never returned.
    Shadow,
    /// Loaded and served only to requests that name it.
    Versioned,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Canary => "canary",
            Role::Shadow => "shadow",
            Role::Versioned => "versioned",
        }
    }
}

/// A model's configuration resolved against its versions: what a request's routing step and
/// the shadow dispatcher read. Built once per change, shared behind an `Arc` by requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The model's name.
    pub model: String,
    /// The versions the policy serves, ascending: what must be loaded.
    pub served: Vec<Version>,
    /// The split of unversioned traffic.
    pub table: SplitTable,
    /// The shadow version, if any.
    pub shadow: Option<Version>,
}

impl Rollout {
    /// The version that answers one unversioned request (see [`SplitTable::pick`]).
    pub fn pick(&self, routing_key: Option<&[u8]>, fallback_counter: &AtomicU64) -> Version {
        self.table.pick(routing_key, fallback_counter)
    }

    /// Applies a changed configuration live: resolved and checked like a new one, with the
    /// split re-laid from this one so as few routing keys as possible change version.
    pub fn changed_to(
        &self,
        config: &ModelConfig,
        field: &str,
        available: &[Version],
    ) -> Result<Rollout, LifecycleError> {
        let fresh = config.resolve(&self.model, field, available)?;
        let weights: BTreeMap<Version, u32> = fresh.table.weights().collect();
        let table = self.table.reweighted(&weights, &format!("{field}.split"))?;
        Ok(Rollout { table, ..fresh })
    }

    /// A version's share of unversioned traffic, in percent (0 for one without slots).
    pub fn share_percent(&self, version: Version) -> f64 {
        let slots = self
            .table
            .shares()
            .into_iter()
            .find(|(v, _)| *v == version)
            .map_or(0, |(_, slots)| slots);
        100.0 * slots as f64 / SLOTS as f64
    }

    /// A served version's role; `None` for a version the policy does not serve.
    pub fn role(&self, version: Version) -> Option<Role> {
        if !self.served.contains(&version) {
            return None;
        }
        if self.shadow == Some(version) {
            return Some(Role::Shadow);
        }
        let shares = self.table.shares();
        let primary = shares
            .iter()
            .max_by_key(|(v, slots)| (*slots, *v))
            .map(|(v, _)| *v);
        let share = shares.iter().find(|(v, _)| *v == version).map(|(_, s)| *s);
        Some(match share {
            _ if primary == Some(version) => Role::Primary,
            Some(slots) if slots > 0 => Role::Canary,
            _ => Role::Versioned,
        })
    }
}

/// The line a change is logged with: `credit: 2 90.00% primary, 3 10.00% canary; shadow 4`.
impl fmt::Display for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.model)?;
        let mut first = true;
        for (version, slots) in self.table.shares() {
            if slots == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            let role = self.role(version).map_or("", Role::as_str);
            write!(
                f,
                "{version} {:.2}% {role}",
                100.0 * slots as f64 / SLOTS as f64
            )?;
        }
        if let Some(shadow) = self.shadow {
            write!(f, "; shadow {shadow}")?;
        }
        Ok(())
    }
}

fn list(versions: &[Version]) -> String {
    let mut sorted = versions.to_vec();
    sorted.sort_unstable();
    sorted
        .iter()
        .map(Version::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ModelConfig {
        serde_json::from_str(json).unwrap()
    }

    fn manifest(rollout: &str) -> Manifest {
        let entry = |version: u32| {
            format!(
                r#"{{"name": "m", "version": "{version}", "task": "regression", "path": "m/{version}",
                "feature_names": ["a"], "onnx": {{"file": "model.onnx", "sha256": "00",
                "input": "input", "outputs": {{"value": "variable"}}}}}}"#
            )
        };
        Manifest::parse(&format!(
            r#"{{"models": [{}, {}, {}]{rollout}}}"#,
            entry(1),
            entry(2),
            entry(3)
        ))
        .unwrap()
    }

    #[test]
    fn no_configuration_is_todays_behaviour() {
        let rollout = ModelConfig::default()
            .resolve("m", "rollout.m", &Version::list(&[1, 2, 3]))
            .unwrap();
        assert_eq!(rollout.served, Version::list(&[1, 2, 3]));
        assert_eq!(rollout.table.shares(), [(Version(3), SLOTS)]);
        assert_eq!(rollout.role(Version(3)), Some(Role::Primary));
        assert_eq!(rollout.role(Version(1)), Some(Role::Versioned));
        assert_eq!(rollout.role(Version(9)), None);
        let configs = RolloutConfigs::from_manifest(&manifest("")).unwrap();
        assert_eq!(configs.get("m"), ModelConfig::default());
    }

    #[test]
    fn a_canary_and_a_shadow() {
        let c = config(r#"{"split": {"1": 90, "2": 10}, "shadow": 3}"#);
        let rollout = c
            .resolve("m", "rollout.m", &Version::list(&[1, 2, 3]))
            .unwrap();
        assert_eq!(
            rollout.table.shares(),
            [(Version(1), 9000), (Version(2), 1000)]
        );
        assert_eq!(rollout.role(Version(1)), Some(Role::Primary));
        assert_eq!(rollout.role(Version(2)), Some(Role::Canary));
        assert_eq!(rollout.role(Version(3)), Some(Role::Shadow));
        assert_eq!(
            rollout.to_string(),
            "m: 1 90.00% primary, 2 10.00% canary; shadow 3"
        );
        assert_eq!(rollout.share_percent(Version(2)), 10.0);
        assert_eq!(rollout.share_percent(Version(3)), 0.0);
        // Shadowing the newest without a split: the next newest answers.
        let shadow_newest = config(r#"{"shadow": "3"}"#)
            .resolve("m", "rollout.m", &Version::list(&[1, 2, 3]))
            .unwrap();
        assert_eq!(shadow_newest.table.shares(), [(Version(2), SLOTS)]);
    }

    #[test]
    fn invalid_configurations_name_the_field() {
        let available = Version::list(&[1, 2]);
        let cases = [
            (
                r#"{"split": {"1": 0, "2": 0}}"#,
                "rollout.m.split: the weights sum to 0",
            ),
            (
                r#"{"split": {"1": 90, "3": 10}}"#,
                "rollout.m.split.\"3\": version 3 is not served by version_policy (served: 1, 2)",
            ),
            (
                r#"{"version_policy": {"latest": {"num_versions": 1}}, "split": {"1": 50, "2": 50}}"#,
                "rollout.m.split.\"1\": version 1 is not served by version_policy (served: 2)",
            ),
            (
                r#"{"split": {"1": 90, "2": 10}, "shadow": 2}"#,
                "rollout.m.shadow: version 2 also has a weight in split",
            ),
            (
                r#"{"shadow": 7}"#,
                "rollout.m.shadow: version 7 is not served",
            ),
            (
                r#"{"version_policy": {"specific": {"versions": [2]}}, "shadow": 2}"#,
                "rollout.m.shadow: is the only served version",
            ),
            (
                r#"{"version_policy": {"specific": {"versions": [5]}}}"#,
                "rollout.m.version_policy: serves none of the available versions (1, 2)",
            ),
        ];
        for (json, expected) in cases {
            let error = config(json)
                .resolve("m", "rollout.m", &available)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(expected), "{json}: {error}");
        }
        // A shadow at weight 0 in the split is allowed: it takes no unversioned traffic.
        assert!(config(r#"{"split": {"1": 1, "2": 0}, "shadow": 2}"#)
            .resolve("m", "rollout.m", &available)
            .is_ok());
    }

    #[test]
    fn the_manifest_block_is_checked_against_the_manifests_versions() {
        let configs = RolloutConfigs::from_manifest(&manifest(
            r#", "rollout": {"m": {"split": {"2": 90, "3": 10}}}"#,
        ))
        .unwrap();
        assert_eq!(configs.get("m").split.unwrap()[&Version(3)], 10);
        for (block, expected) in [
            (r#""rollout": {"x": {}}"#, "rollout.x: no such model"),
            (
                r#""rollout": {"m": {"split": {"4": 1}}}"#,
                "rollout.m.split.\"4\"",
            ),
            (
                r#""rollout": {"m": {"splits": {}}}"#,
                "rollout.m: unknown field `splits`",
            ),
            (r#""rollout": []"#, "rollout: must be an object"),
        ] {
            let error = RolloutConfigs::from_manifest(&manifest(&format!(", {block}")))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(expected), "{block}: {error}");
        }
    }

    #[test]
    fn a_load_override_replaces_the_manifests_block_once_checked() {
        let manifest = manifest(r#", "rollout": {"m": {"split": {"2": 90, "3": 10}}}"#);
        let mut configs = RolloutConfigs::from_manifest(&manifest).unwrap();
        let field = "parameters.config";
        configs
            .set_override(&manifest, "m", config(r#"{"split": {"3": 1}}"#), field)
            .unwrap();
        assert_eq!(configs.get("m").split.unwrap().len(), 1);
        let error = configs
            .set_override(&manifest, "m", config(r#"{"split": {"9": 1}}"#), field)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("parameters.config.split.\"9\""),
            "{error}"
        );
        // The refused override changed nothing.
        assert_eq!(configs.get("m").split.unwrap()[&Version(3)], 1);
        let error = configs
            .set_override(&manifest, "x", ModelConfig::default(), field)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "parameters.config: model 'x' is not among the manifest's models"
        );
    }

    #[test]
    fn a_load_override_changes_the_split_live_moving_few_keys() {
        let available = Version::list(&[1, 2]);
        let canary = config(r#"{"split": {"1": 90, "2": 10}}"#)
            .resolve("m", "rollout.m", &available)
            .unwrap();
        let promoted_half =
            ModelConfig::from_override(r#"{"split": {"1": 50, "2": 50}}"#, "parameters.config")
                .unwrap();
        let half = canary
            .changed_to(&promoted_half, "parameters.config", &available)
            .unwrap();
        assert_eq!(canary.table.moved_slots(&half.table), 4000);
        let promoted = canary
            .changed_to(&ModelConfig::default(), "parameters.config", &available)
            .unwrap();
        assert_eq!(promoted.table.shares(), [(Version(2), SLOTS)]);
        let error = ModelConfig::from_override(r#"{"split": 3}"#, "parameters.config")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("parameters.config: invalid type"),
            "{error}"
        );
        let error = canary
            .changed_to(
                &config(r#"{"shadow": 1, "split": {"1": 1}}"#),
                "parameters.config",
                &available,
            )
            .unwrap_err();
        assert!(
            error.to_string().starts_with("parameters.config.shadow"),
            "{error}"
        );
    }
}
