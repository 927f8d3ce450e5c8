//! The bodies of the KServe V2 repository extension, as Triton defines them:
//!
//! - `POST /v2/repository/index` `{"ready": bool}` (optional, default false) → a JSON array of
//!   [`ModelState`] (`{"name", "version", "state", "reason"}`);
//! - `POST /v2/repository/models/{name}/load` `{"parameters": {"config": "<JSON string>"}}`,
//!   where `config` overrides the model's rollout configuration (its split and shadow);
//! - `POST /v2/repository/models/{name}/unload` `{"parameters": {"unload_dependents": bool}}`.
//!
//! Every body may be empty, as Triton allows. Unknown fields are refused by name, so a typo
//! in a rollout command fails loudly instead of changing nothing.
//!
//! [`ModelState`]: super::ModelState

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::rollout::ModelConfig;
use super::LifecycleError;

/// `POST /v2/repository/index`'s body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryIndexRequest {
    /// Only the versions ready for inference.
    #[serde(default)]
    pub ready: bool,
}

/// `POST /v2/repository/models/{name}/load`'s body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    #[serde(default)]
    pub parameters: LoadParameters,
}

/// A load's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadParameters {
    /// Triton's config override: a JSON string holding the model's configuration, here its
    /// rollout block (`version_policy`, `split`, `shadow`), used instead of the manifest's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

impl LoadRequest {
    /// The rollout configuration the load carries, if any.
    pub fn config_override(&self) -> Result<Option<ModelConfig>, LifecycleError> {
        self.parameters
            .config
            .as_deref()
            .map(|json| ModelConfig::from_override(json, "parameters.config"))
            .transpose()
    }
}

/// `POST /v2/repository/models/{name}/unload`'s body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnloadRequest {
    #[serde(default)]
    pub parameters: UnloadParameters,
}

/// An unload's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnloadParameters {
    /// Accepted for Triton compatibility; no model here is composed of others, so there is
    /// never a dependent to unload.
    #[serde(default)]
    pub unload_dependents: bool,
}

/// Reads one of these bodies; an empty body, or JSON `null` (the body is optional, and a client
/// may send "nothing" as null), is the default request. The error names the body (and serde's
/// message names the field).
pub fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, LifecycleError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // serde reads a struct from an array too (fields in order); the extension's bodies are
    // objects, so anything else is refused by name.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if !matches!(first, Some(b'{' | b'n')) {
        return Err(LifecycleError::config(
            "body",
            "expected a JSON object (or no body)",
        ));
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| LifecycleError::config("body", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Version;

    #[test]
    fn empty_bodies_are_default_requests() {
        assert_eq!(
            parse_body::<RepositoryIndexRequest>(b" null ").unwrap(),
            RepositoryIndexRequest::default()
        );
        assert!(parse_body::<RepositoryIndexRequest>(b"[]").is_err());
        assert!(parse_body::<RepositoryIndexRequest>(b"true").is_err());
        assert_eq!(
            parse_body::<RepositoryIndexRequest>(b"").unwrap(),
            RepositoryIndexRequest::default()
        );
        assert_eq!(
            parse_body::<LoadRequest>(b" \n").unwrap(),
            LoadRequest::default()
        );
        assert!(
            !parse_body::<UnloadRequest>(b"{}")
                .unwrap()
                .parameters
                .unload_dependents
        );
        assert!(
            parse_body::<RepositoryIndexRequest>(br#"{"ready": true}"#)
                .unwrap()
                .ready
        );
    }

    #[test]
    fn a_load_carries_a_rollout_override_as_a_json_string() {
        let body =
            br#"{"parameters": {"config": "{\"split\": {\"1\": 90, \"2\": 10}, \"shadow\": 3}"}}"#;
        let request: LoadRequest = parse_body(body).unwrap();
        let config = request.config_override().unwrap().unwrap();
        assert_eq!(config.split.unwrap()[&Version(2)], 10);
        assert_eq!(config.shadow, Some(Version(3)));
        assert_eq!(LoadRequest::default().config_override(), Ok(None));
        let bad: LoadRequest =
            parse_body(br#"{"parameters": {"config": "{\"split\": []}"}}"#).unwrap();
        let error = bad.config_override().unwrap_err().to_string();
        assert!(
            error.starts_with("parameters.config: invalid type"),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_and_bad_json_are_refused_by_name() {
        let error = parse_body::<LoadRequest>(br#"{"parameters": {"conifg": "{}"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("body: unknown field `conifg`, expected `config`"),
            "{error}"
        );
        let error = parse_body::<UnloadRequest>(br#"{"parameters": {"unload_dependents": "yes"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("body: invalid type: string \"yes\", expected a boolean"),
            "{error}"
        );
        assert!(parse_body::<RepositoryIndexRequest>(b"{").is_err());
        let unload: UnloadRequest =
            parse_body(br#"{"parameters": {"unload_dependents": true}}"#).unwrap();
        assert!(unload.parameters.unload_dependents);
    }
}
