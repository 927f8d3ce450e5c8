//! The local mirror's bookkeeping: for every file downloaded, which object version it came
//! from (ETag, size, modification time) and the sha256 of what was written. A file is reused
//! only if it still hashes to what it should: the manifest's sha256 for a model file, the
//! recorded one for an artifact whose object has not changed since.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::StorageError;

/// The index file's name inside a repository's cache directory.
const INDEX_FILE: &str = ".ferrum-cache-index.json";

/// The identity of one stored object version, as listings and HEAD requests report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    pub size: u64,
    pub e_tag: Option<String>,
    pub last_modified_ms: i64,
}

impl From<&ObjectMeta> for ObjectVersion {
    fn from(meta: &ObjectMeta) -> Self {
        ObjectVersion {
            size: meta.size,
            e_tag: meta.e_tag.clone(),
            last_modified_ms: meta.last_modified.timestamp_millis(),
        }
    }
}

/// What the cache knows of one local file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedFile {
    pub object: ObjectVersion,
    pub sha256: String,
}

/// The index of one repository's cache directory, keyed by path relative to it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CacheIndex {
    files: BTreeMap<String, CachedFile>,
}

impl CacheIndex {
    /// Reads the index of `dir`; a missing or unreadable index is an empty one (every file is
    /// then re-checked or downloaded, never trusted blindly).
    pub fn load(dir: &Path) -> CacheIndex {
        let path = dir.join(INDEX_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "model cache index unreadable; re-checking every file");
                CacheIndex::default()
            }),
            Err(_) => CacheIndex::default(),
        }
    }

    /// Writes the index atomically (a crash leaves the old one or the new one).
    pub fn save(&self, dir: &Path) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec_pretty(self).expect("the index serializes");
        write_atomically(&dir.join(INDEX_FILE), &bytes)
    }

    pub fn get(&self, relative: &str) -> Option<&CachedFile> {
        self.files.get(relative)
    }

    pub fn record(&mut self, relative: &str, file: CachedFile) {
        self.files.insert(relative.to_string(), file);
    }
}

/// The sha256 of a local file in lowercase hex, or `None` if it cannot be read (a cached copy
/// that is missing or unreadable is fetched again). Blocking: call it from a blocking thread.
pub fn sha256_of_file(path: &Path) -> Option<String> {
    crate::model::repository::sha256_of_file(path).ok()
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let cache_error = |source| StorageError::Cache {
        path: path.to_path_buf(),
        source,
    };
    create_parent(path)?;
    let partial = partial_path(path);
    std::fs::write(&partial, bytes).map_err(cache_error)?;
    std::fs::rename(&partial, path).map_err(cache_error)
}

/// Creates the directory a file goes in.
pub fn create_parent(path: &Path) -> Result<(), StorageError> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|source| StorageError::Cache {
            path: parent.to_path_buf(),
            source,
        }),
        None => Ok(()),
    }
}

/// Where a download is written before it is verified and renamed into place: beside the
/// target (same file system, so the rename is atomic), named per process so two servers
/// sharing a cache do not write into each other's file.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_round_trips_and_a_broken_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = CacheIndex::default();
        let file = CachedFile {
            object: ObjectVersion {
                size: 3,
                e_tag: Some("\"abc\"".into()),
                last_modified_ms: 1,
            },
            sha256: "00".into(),
        };
        index.record("m/1/background.csv", file);
        index.save(dir.path()).unwrap();
        let loaded = CacheIndex::load(dir.path());
        let cached = loaded.get("m/1/background.csv").unwrap();
        assert_eq!(cached.object.e_tag.as_deref(), Some("\"abc\""));
        assert_eq!(cached.sha256, "00");
        std::fs::write(dir.path().join(INDEX_FILE), b"{not json").unwrap();
        assert!(CacheIndex::load(dir.path())
            .get("m/1/background.csv")
            .is_none());
    }

    #[test]
    fn file_hashes_match_the_manifest_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file");
        write_atomically(&path, b"abc").unwrap();
        assert_eq!(
            sha256_of_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_of_file(&dir.path().join("missing")).is_none());
        assert!(!partial_path(&path).exists());
    }
}
