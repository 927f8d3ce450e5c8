//! Which of a model's versions are served: Triton's version policy (`all`, `latest N`,
//! `specific [..]`), spelled as Triton's JSON configuration spells it. The default is `all`,
//! today's behaviour (every version the manifest lists is served), not Triton's `latest 1`,
//! so a manifest without a policy serves exactly what it served before.

use serde::{Deserialize, Serialize};

use super::{LifecycleError, Version};

/// A model's version policy: `{"all": {}}`, `{"latest": {"num_versions": 2}}` or
/// `{"specific": {"versions": [1, 3]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum VersionPolicy {
    /// Every available version.
    All {},
    /// The `num_versions` numerically greatest available versions.
    Latest { num_versions: u32 },
    /// Only these versions (those of them that are available).
    Specific { versions: Vec<Version> },
}

impl Default for VersionPolicy {
    fn default() -> VersionPolicy {
        VersionPolicy::All {}
    }
}

impl VersionPolicy {
    /// Refuses a policy that could never serve anything; `field` is where it was read
    /// (e.g. `rollout.credit.version_policy`), so the error says where to look.
    pub fn check(&self, field: &str) -> Result<(), LifecycleError> {
        match self {
            VersionPolicy::All {} => Ok(()),
            VersionPolicy::Latest { num_versions: 0 } => Err(LifecycleError::config(
                format!("{field}.latest.num_versions"),
                "must be at least 1",
            )),
            VersionPolicy::Latest { .. } => Ok(()),
            VersionPolicy::Specific { versions } if versions.is_empty() => Err(
                LifecycleError::config(format!("{field}.specific.versions"), "is empty"),
            ),
            VersionPolicy::Specific { versions } => {
                let mut seen = std::collections::BTreeSet::new();
                match versions.iter().find(|v| !seen.insert(**v)) {
                    Some(dup) => Err(LifecycleError::config(
                        format!("{field}.specific.versions"),
                        format!("lists version {dup} twice"),
                    )),
                    None => Ok(()),
                }
            }
        }
    }

    /// The versions `specific` names that are not available: served versions a policy
    /// promised and the repository does not have, reported rather than silently skipped.
    pub fn unavailable(&self, available: &[Version]) -> Vec<Version> {
        match self {
            VersionPolicy::Specific { versions } => {
                let mut missing: Vec<Version> = versions
                    .iter()
                    .filter(|v| !available.contains(v))
                    .copied()
                    .collect();
                missing.sort_unstable();
                missing
            }
            _ => Vec::new(),
        }
    }
}

/// The versions `policy` serves out of `available` (in any order, duplicates allowed),
/// ascending and deduplicated.
pub fn served_versions(policy: &VersionPolicy, available: &[Version]) -> Vec<Version> {
    let mut versions = available.to_vec();
    versions.sort_unstable();
    versions.dedup();
    match policy {
        VersionPolicy::All {} => versions,
        VersionPolicy::Latest { num_versions } => {
            let keep = (*num_versions as usize).min(versions.len());
            versions.split_off(versions.len() - keep)
        }
        VersionPolicy::Specific { versions: wanted } => {
            versions.retain(|v| wanted.contains(v));
            versions
        }
    }
}

/// The version unversioned requests go to when no split says otherwise: the policy's
/// numerically greatest served version (Triton's rule, and today's "highest version").
pub fn newest_version(policy: &VersionPolicy, available: &[Version]) -> Option<Version> {
    served_versions(policy, available).last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> VersionPolicy {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_tritons_json_spelling() {
        assert_eq!(policy(r#"{"all": {}}"#), VersionPolicy::All {});
        assert_eq!(
            policy(r#"{"latest": {"num_versions": 2}}"#),
            VersionPolicy::Latest { num_versions: 2 }
        );
        assert_eq!(
            policy(r#"{"specific": {"versions": [1, "3"]}}"#),
            VersionPolicy::Specific {
                versions: Version::list(&[1, 3])
            }
        );
        assert!(serde_json::from_str::<VersionPolicy>(r#"{"newest": {}}"#).is_err());
        assert!(serde_json::from_str::<VersionPolicy>(
            r#"{"latest": {"num_versions": 1, "x": 2}}"#
        )
        .is_err());
    }

    #[test]
    fn the_default_serves_every_version_and_routes_to_the_highest() {
        let available = Version::list(&[3, 1, 2, 2]);
        let default = VersionPolicy::default();
        assert_eq!(
            served_versions(&default, &available),
            Version::list(&[1, 2, 3])
        );
        assert_eq!(newest_version(&default, &available), Some(Version(3)));
    }

    #[test]
    fn latest_keeps_the_numerically_greatest() {
        let available = Version::list(&[10, 2, 9, 1]);
        let latest2 = VersionPolicy::Latest { num_versions: 2 };
        assert_eq!(
            served_versions(&latest2, &available),
            Version::list(&[9, 10])
        );
        let latest9 = VersionPolicy::Latest { num_versions: 9 };
        assert_eq!(
            served_versions(&latest9, &available),
            Version::list(&[1, 2, 9, 10])
        );
        assert_eq!(newest_version(&latest2, &[]), None);
    }

    #[test]
    fn specific_serves_the_listed_available_versions_and_reports_the_rest() {
        let available = Version::list(&[1, 2, 3]);
        let specific = VersionPolicy::Specific {
            versions: Version::list(&[4, 1, 2]),
        };
        assert_eq!(
            served_versions(&specific, &available),
            Version::list(&[1, 2])
        );
        // The newest of the policy, not of the repository: version 3 is not served.
        assert_eq!(newest_version(&specific, &available), Some(Version(2)));
        assert_eq!(specific.unavailable(&available), Version::list(&[4]));
        assert!(VersionPolicy::default().unavailable(&available).is_empty());
    }

    #[test]
    fn refuses_policies_that_serve_nothing_naming_the_field() {
        let field = "rollout.m.version_policy";
        assert_eq!(
            VersionPolicy::Latest { num_versions: 0 }
                .check(field)
                .unwrap_err()
                .to_string(),
            "rollout.m.version_policy.latest.num_versions: must be at least 1"
        );
        let empty = VersionPolicy::Specific { versions: vec![] };
        assert_eq!(
            empty.check(field).unwrap_err().to_string(),
            "rollout.m.version_policy.specific.versions: is empty"
        );
        let dup = VersionPolicy::Specific {
            versions: Version::list(&[1, 1]),
        };
        assert!(dup.check(field).unwrap_err().to_string().contains("twice"));
        assert!(VersionPolicy::Latest { num_versions: 1 }
            .check(field)
            .is_ok());
    }
}
