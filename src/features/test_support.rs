//! Fixtures the feature-store tests share, the library's own and the mock store binary's
//! (`src/bin/ferrum-feature-store`, which sees the library from outside): the repository's
//! manifest and its entries by name, a store configuration with short timeouts, and each model's
//! training log.
//! Compiled for tests only (`cfg(test)`, or the `test-support` feature that the crate's
//! dev-dependency on itself turns on for test builds).

use std::path::PathBuf;

use serde_json::Value;

use super::StoreConfig;
use crate::model::{Manifest, ModelEntry};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed manifest.
pub fn manifest() -> Manifest {
    Manifest::read(&root().join("manifest.json")).unwrap()
}

/// The manifest's entry for model `name`, which the test expects to be there.
pub fn model_entry<'a>(manifest: &'a Manifest, name: &str) -> &'a ModelEntry {
    manifest
        .models
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no model '{name}' in the manifest"))
}

/// A store configuration for `uri` (`None`: the embedded snapshot store) with timeouts short
/// enough for tests and the cache off.
pub fn store_config(uri: Option<&str>) -> StoreConfig {
    StoreConfig {
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

/// A model's training log: entity ids and their features in model order.
pub fn training_log(entry: &ModelEntry) -> (Vec<String>, Vec<f32>) {
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
