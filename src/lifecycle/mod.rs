//! Model lifecycle without restarts: which versions of a model are served (version policy),
//! how unversioned requests are spread across them (traffic split, shadow), how a shadow's
//! answers are compared with the primary's, and what to load, reload or unload when the
//! repository changes (reconciliation, the KServe V2 repository extension's index).
//!
//! Everything here is a plain decision over data: no HTTP, no handler state, no ONNX Runtime
//! session. It may import only [`crate::model`] (manifest entries and model outputs), so the
//! serving layer can call it from a load task, the repository routes or a request's routing
//! step alike. The serving layer owns the swap of loaded models; this module says what to swap.

pub mod control;
pub mod policy;
pub mod protocol;
pub mod reconcile;
pub mod rollout;
pub mod router;
pub mod shadow;
pub mod state;

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use control::{ModelControl, ModelControlMode};
pub use policy::{newest_version, served_versions, VersionPolicy};
pub use reconcile::{
    plan, unload_model, Action, FileHashes, FoundFile, LoadedVersion, Plan, Refusal,
    RepositoryScan, ScannedVersion,
};
pub use rollout::{ModelConfig, Role, Rollout, RolloutConfigs};
pub use router::SplitTable;
pub use shadow::{Comparison, Offer, ShadowComparator, ShadowMetrics, ShadowQueue, ShadowSeries};
pub use state::{ModelState, ModelStateKind, StateTable};

/// A model version number. The manifest writes versions as strings of digits ("2"), Triton's
/// configuration as numbers (2): both are read, so either spelling works in the manifest's
/// `rollout` block and in a repository `load`'s `parameters.config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

impl Version {
    /// Versions from their numbers: the lists the policy and rollout tests are written in.
    #[cfg(test)]
    pub(crate) fn list(numbers: &[u64]) -> Vec<Version> {
        numbers.iter().copied().map(Version).collect()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Version {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Version, Self::Err> {
        s.parse().map(Version)
    }
}

/// Written as a string: the form the manifest and the repository index use.
impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        struct VersionVisitor;
        impl Visitor<'_> for VersionVisitor {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version: a whole number, or a string of one")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Version, E> {
                Ok(Version(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Version, E> {
                u64::try_from(v)
                    .map(Version)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Version, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(VersionVisitor)
    }
}

/// Why a lifecycle decision could not be made. Configuration errors name the field at fault
/// (`rollout.credit.split."3"`, `parameters.config`), because an operator fixes them by hand.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LifecycleError {
    /// A `rollout` block, a load's config override or a control flag is invalid.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    /// A primary and a shadow output cannot be compared (different task, classes or rows).
    #[error("cannot compare shadow output: {0}")]
    Incomparable(String),
}

impl LifecycleError {
    /// A configuration error at `field`.
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> LifecycleError {
        LifecycleError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_numbers_or_strings_and_write_as_strings() {
        let versions: Vec<Version> = serde_json::from_str(r#"[1, "2", 30]"#).unwrap();
        assert_eq!(versions, [Version(1), Version(2), Version(30)]);
        assert_eq!(serde_json::to_string(&Version(7)).unwrap(), r#""7""#);
        let bad = serde_json::from_str::<Version>(r#""v1""#).unwrap_err();
        assert!(bad.to_string().contains("whole number"), "{bad}");
        assert!(serde_json::from_str::<Version>("-1").is_err());
    }
}
