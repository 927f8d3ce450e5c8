//! A remote repository mirrored into the cache: fetching the manifest, finding each listed
//! version's files, and downloading only what the cache cannot vouch for.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::{self, CacheIndex, CachedFile, ObjectVersion};
use super::location::{is_remote, Location};
use super::StorageError;
use crate::model::{Manifest, ModelEntry};

/// Files of one version fetched at once: enough to hide request latency, few enough not to
/// flood a small bucket or a slow link.
const CONCURRENT_DOWNLOADS: usize = 4;

/// A model repository in object storage and its local mirror. Cheap to keep: a later rescan
/// calls [`RemoteRepository::resolve_manifest`] and [`RemoteRepository::sync`] again and gets
/// told what changed.
#[derive(Debug)]
pub struct RemoteRepository {
    root: Location,
    cache_root: PathBuf,
    local: PathBuf,
    /// Model files refused on their sha256, by path: the object version and what it hashed
    /// to. The same object is refused again without a download (each poll would otherwise
    /// fetch the whole file again) until it or the manifest's sha256 changes.
    refused: Mutex<HashMap<String, (ObjectVersion, String)>>,
}

/// What one [`RemoteRepository::sync`] did. `refused` holds the versions that must not be
/// loaded (a sha256 mismatch, a missing file, a store error), each with its one-line reason;
/// the other versions were mirrored.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// URIs of the objects downloaded (not in the cache, or changed).
    pub downloaded: Vec<String>,
    /// Bytes written by those downloads.
    pub downloaded_bytes: u64,
    /// Files reused from the cache because their hash still matched.
    pub reused: Vec<String>,
    /// `<name>/<version>` folders under the prefix that the manifest does not list (a
    /// rescan in poll mode is what would load them once the manifest names them).
    pub unlisted_versions: Vec<String>,
    pub refused: Vec<RefusedVersion>,
}

/// A version [`RemoteRepository::sync`] did not mirror, and why: its local files are as they
/// were (absent, or the previous verified copy).
#[derive(Debug)]
pub struct RefusedVersion {
    pub name: String,
    pub version: String,
    /// Its model file, relative to the repository root.
    pub file: String,
    pub error: StorageError,
}

impl SyncReport {
    /// Whether this sync changed any local file (a rescan needs to reload nothing if not).
    pub fn changed(&self) -> bool {
        !self.downloaded.is_empty()
    }
}

/// One file a version needs: its path relative to the repository root, what the store says of
/// it (when it was listed), and the sha256 the manifest promises (model files only).
struct WantedFile<'a> {
    relative: String,
    listed: Option<ObjectMeta>,
    manifest_sha256: Option<&'a str>,
}

/// How one file was made present locally.
struct FileOutcome {
    relative: String,
    cached: CachedFile,
    /// `Some((uri, bytes))` when it was downloaded.
    download: Option<(String, u64)>,
}

impl RemoteRepository {
    /// A repository at `uri` (see [`Location::parse`]), mirrored below `cache_root`.
    pub fn open(uri: &str, cache_root: &Path) -> Result<RemoteRepository, StorageError> {
        let root = Location::parse(uri)?;
        let local = root.cache_path(cache_root);
        Ok(RemoteRepository {
            root,
            cache_root: cache_root.to_path_buf(),
            local,
            refused: Mutex::default(),
        })
    }

    /// The repository's URI.
    pub fn uri(&self) -> String {
        self.root.uri()
    }

    /// The local directory the repository is mirrored into: the `--models-dir` the rest of
    /// the server reads.
    pub fn local_dir(&self) -> &Path {
        &self.local
    }

    /// Makes the manifest local and returns its path. `manifest` is an object-store URI (any
    /// supported scheme), a relative path taken inside the repository (so the default
    /// `manifest.json` is `<prefix>/manifest.json`), or an absolute local path, used as is.
    /// A remote manifest is fetched on every call: it is the source of truth for what to
    /// serve, and small.
    pub async fn resolve_manifest(&self, manifest: &Path) -> Result<PathBuf, StorageError> {
        let text = manifest.to_string_lossy();
        let location = if is_remote(&text) {
            Location::parse(&text)?
        } else if manifest.is_absolute() {
            return Ok(manifest.to_path_buf());
        } else {
            self.root.join(&text)?
        };
        let local = location.cache_path(&self.cache_root);
        let uri = location.uri();
        let bytes = location
            .store()
            .get(location.path())
            .await
            .map_err(|source| store_error(&uri, source))?
            .bytes()
            .await
            .map_err(|source| store_error(&uri, source))?;
        let target = local.clone();
        blocking(move || cache::write_atomically(&target, &bytes)).await?;
        tracing::info!(manifest = %uri, local = %local.display(), "manifest fetched");
        Ok(local)
    }

    /// Mirrors every version the manifest lists: lists the prefix (where the store can),
    /// reuses cached files whose hash still matches, downloads the rest, and checks each model
    /// file's sha256 against the manifest before it is renamed into place, so no session is
    /// ever built from bytes the manifest does not vouch for. Safe to call again: the second
    /// call with nothing changed downloads nothing.
    pub async fn sync(&self, manifest: &Manifest) -> Result<SyncReport, StorageError> {
        let started = Instant::now();
        let listing = self.list().await?;
        let local = self.local.clone();
        let mut index = blocking(move || Ok(CacheIndex::load(&local))).await?;
        let mut report = SyncReport::default();
        if let Some(listing) = &listing {
            report.unlisted_versions = self.unlisted_versions(manifest, listing);
        }
        for (i, entry) in manifest.models.iter().enumerate() {
            let artifacts = &manifest.raw["models"][i]["artifacts"];
            match self
                .sync_version(entry, artifacts, listing.as_deref(), &index)
                .await
            {
                Ok(outcomes) => {
                    for outcome in outcomes {
                        match outcome.download {
                            Some((uri, bytes)) => {
                                report.downloaded.push(uri);
                                report.downloaded_bytes += bytes;
                            }
                            None => report.reused.push(outcome.relative.clone()),
                        }
                        index.record(&outcome.relative, outcome.cached);
                    }
                }
                Err(error) => report.refused.push(RefusedVersion {
                    name: entry.name.clone(),
                    version: entry.version.clone(),
                    file: format!("{}/{}", entry.path, entry.onnx.file),
                    error,
                }),
            }
        }
        let local = self.local.clone();
        blocking(move || index.save(&local)).await?;
        tracing::info!(
            repository = %self.uri(),
            local = %self.local.display(),
            downloads = report.downloaded.len(),
            downloaded_bytes = report.downloaded_bytes,
            cache_hits = report.reused.len(),
            refused = report.refused.len(),
            unlisted_versions = ?report.unlisted_versions,
            sync_ms = started.elapsed().as_millis() as u64,
            "model repository synced"
        );
        Ok(report)
    }

    /// Every object under the prefix, or `None` for a store that cannot list.
    async fn list(&self) -> Result<Option<Vec<ObjectMeta>>, StorageError> {
        if !self.root.listable() {
            return Ok(None);
        }
        let listing = self
            .root
            .store()
            .list(Some(self.root.path()))
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| store_error(&self.uri(), source))?;
        Ok(Some(listing))
    }

    /// The path of `meta` relative to the repository root, if it is below it.
    fn relative(&self, meta: &ObjectMeta) -> Option<String> {
        let parts: Vec<String> = meta
            .location
            .prefix_match(self.root.path())?
            .map(|part| part.as_ref().to_string())
            .collect();
        (!parts.is_empty()).then(|| parts.join("/"))
    }

    /// `<name>/<version>` folders (a whole-number version) the manifest does not name.
    fn unlisted_versions(&self, manifest: &Manifest, listing: &[ObjectMeta]) -> Vec<String> {
        let listed: BTreeSet<&str> = manifest.models.iter().map(|m| m.path.as_str()).collect();
        let folders: BTreeSet<String> = listing
            .iter()
            .filter_map(|meta| {
                let relative = self.relative(meta)?;
                let mut parts = relative.splitn(3, '/');
                let (name, version, _file) = (parts.next()?, parts.next()?, parts.next()?);
                version
                    .parse::<u64>()
                    .is_ok()
                    .then(|| format!("{name}/{version}"))
            })
            .collect();
        folders
            .into_iter()
            .filter(|folder| !listed.contains(folder.as_str()))
            .collect()
    }

    /// The files of one version: everything under its folder where the store lists (so the
    /// local copy is the version as it is in the bucket), else the files the manifest names.
    /// Either way each file the manifest names must be there.
    fn wanted_files<'a>(
        &self,
        entry: &'a ModelEntry,
        artifacts: &serde_json::Value,
        listing: Option<&[ObjectMeta]>,
    ) -> Result<Vec<WantedFile<'a>>, StorageError> {
        let model_file = format!("{}/{}", entry.path, entry.onnx.file);
        let mut named: Vec<String> = vec![model_file.clone()];
        if let Some(artifacts) = artifacts.as_object() {
            named.extend(
                artifacts
                    .values()
                    .filter_map(|file| file.as_str())
                    .map(|file| format!("{}/{file}", entry.path)),
            );
        }
        let sha256_of =
            |relative: &str| (relative == model_file).then_some(entry.onnx.sha256.as_str());
        let Some(listing) = listing else {
            return Ok(named
                .into_iter()
                .map(|relative| WantedFile {
                    manifest_sha256: sha256_of(&relative),
                    relative,
                    listed: None,
                })
                .collect());
        };
        let folder = format!("{}/", entry.path);
        let files: Vec<WantedFile<'a>> = listing
            .iter()
            .filter_map(|meta| Some((self.relative(meta)?, meta)))
            .filter(|(relative, _)| relative.starts_with(&folder))
            .map(|(relative, meta)| WantedFile {
                manifest_sha256: sha256_of(&relative),
                relative,
                listed: Some(meta.clone()),
            })
            .collect();
        if let Some(missing) = named
            .iter()
            .find(|name| !files.iter().any(|f| &f.relative == *name))
        {
            return Err(StorageError::Missing {
                model: entry.name.clone(),
                version: entry.version.clone(),
                object: self.root.join(missing)?.uri(),
            });
        }
        Ok(files)
    }

    async fn sync_version(
        &self,
        entry: &ModelEntry,
        artifacts: &serde_json::Value,
        listing: Option<&[ObjectMeta]>,
        index: &CacheIndex,
    ) -> Result<Vec<FileOutcome>, StorageError> {
        let files = self.wanted_files(entry, artifacts, listing)?;
        // Boxed before they are streamed: with a closure in the stream's type the compiler
        // cannot prove the sync `Send` for every lifetime, which the model controller's task
        // (a rescan's re-sync) needs.
        let syncs: Vec<BoxFuture<'_, Result<FileOutcome, StorageError>>> = files
            .into_iter()
            .map(|file| self.sync_file(entry, file, index).boxed())
            .collect();
        futures_util::stream::iter(syncs)
            .buffer_unordered(CONCURRENT_DOWNLOADS)
            .try_collect()
            .await
    }

    /// Makes one file present and verified locally, downloading it only if the cache cannot
    /// vouch for it.
    async fn sync_file(
        &self,
        entry: &ModelEntry,
        file: WantedFile<'_>,
        index: &CacheIndex,
    ) -> Result<FileOutcome, StorageError> {
        let location = self.root.join(&file.relative)?;
        let uri = location.uri();
        let meta = match file.listed {
            Some(meta) => meta,
            None => match location.store().head(location.path()).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(StorageError::Missing {
                        model: entry.name.clone(),
                        version: entry.version.clone(),
                        object: uri,
                    })
                }
                Err(source) => return Err(store_error(&uri, source)),
            },
        };
        let object = ObjectVersion::from(&meta);
        let local = self.local.join(&file.relative);
        // What the local file must hash to for it to be used without a download: the
        // manifest's word for a model file, else what was recorded when this very object
        // version was downloaded.
        let trusted = match file.manifest_sha256 {
            Some(sha256) => Some(sha256.to_ascii_lowercase()),
            None => index
                .get(&file.relative)
                .filter(|cached| cached.object == object)
                .map(|cached| cached.sha256.clone()),
        };
        if let Some(expected) = trusted {
            let path = local.clone();
            let actual = blocking(move || Ok(cache::sha256_of_file(&path))).await?;
            if actual.as_deref() == Some(expected.as_str()) {
                tracing::info!(object = %uri, local = %local.display(), "model file reused from the cache");
                return Ok(FileOutcome {
                    relative: file.relative,
                    cached: CachedFile {
                        object,
                        sha256: expected,
                    },
                    download: None,
                });
            }
        }
        let mismatch = |actual: String, expected: &str| StorageError::Sha256Mismatch {
            model: entry.name.clone(),
            version: entry.version.clone(),
            object: uri.clone(),
            expected: expected.to_string(),
            actual,
        };
        let refused_before = self.refused_lock().get(&file.relative).cloned();
        if let (Some((refused, actual)), Some(expected)) = (refused_before, file.manifest_sha256) {
            if refused == object && !expected.eq_ignore_ascii_case(&actual) {
                tracing::info!(object = %uri, "model file refused again without a download: the object and the manifest's sha256 are unchanged");
                return Err(mismatch(actual, expected));
            }
        }
        let started = Instant::now();
        let downloaded = self
            .download(&location, &local, file.manifest_sha256)
            .await?;
        let (object, sha256, bytes) = match downloaded {
            Download::Verified(done) => done,
            Download::Refused { actual } => {
                let expected = file.manifest_sha256.unwrap_or_default();
                tracing::warn!(object = %uri, %expected, %actual, "model file downloaded and refused: its sha256 is not the manifest's; not fetched again until the object or the manifest changes");
                self.refused_lock()
                    .insert(file.relative.clone(), (object, actual.clone()));
                return Err(mismatch(actual, expected));
            }
        };
        self.refused_lock().remove(&file.relative);
        tracing::info!(
            object = %uri,
            local = %local.display(),
            bytes,
            download_ms = started.elapsed().as_millis() as u64,
            "model file downloaded"
        );
        Ok(FileOutcome {
            relative: file.relative,
            cached: CachedFile { object, sha256 },
            download: Some((uri, bytes)),
        })
    }

    /// The refused files, whatever a panicking holder left (a map of plain values).
    fn refused_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ObjectVersion, String)>> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Streams an object into a partial file while hashing it; checks a model file's hash
    /// against the manifest, and only then renames it into place. A mismatch leaves nothing
    /// behind.
    async fn download(
        &self,
        location: &Location,
        local: &Path,
        manifest_sha256: Option<&str>,
    ) -> Result<Download, StorageError> {
        let uri = location.uri();
        let cache_error = |source| StorageError::Cache {
            path: local.to_path_buf(),
            source,
        };
        let target = local.to_path_buf();
        blocking(move || cache::create_parent(&target)).await?;
        let partial = cache::partial_path(local);
        let result = location
            .store()
            .get(location.path())
            .await
            .map_err(|source| store_error(&uri, source))?;
        let object = ObjectVersion::from(&result.meta);
        let mut stream = result.into_stream();
        let mut out = tokio::fs::File::create(&partial)
            .await
            .map_err(cache_error)?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let written: Result<(), StorageError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| store_error(&uri, source))?;
                hasher.update(&chunk);
                bytes += chunk.len() as u64;
                out.write_all(&chunk).await.map_err(cache_error)?;
            }
            out.flush().await.map_err(cache_error)?;
            out.sync_all().await.map_err(cache_error)
        }
        .await;
        let actual = hex::encode(hasher.finalize());
        let refused =
            manifest_sha256.is_some_and(|expected| !expected.eq_ignore_ascii_case(&actual));
        if written.is_err() || refused {
            let _ = tokio::fs::remove_file(&partial).await;
            written?;
            return Ok(Download::Refused { actual });
        }
        tokio::fs::rename(&partial, local)
            .await
            .map_err(cache_error)?;
        Ok(Download::Verified((object, actual, bytes)))
    }
}

/// How a download ended, when the store and the disk did not fail.
enum Download {
    /// In place: the object version, its sha256 and its size.
    Verified((ObjectVersion, String, u64)),
    /// A model file whose content is not the manifest's (hashing to `actual`): nothing kept.
    Refused { actual: String },
}

fn store_error(uri: &str, source: object_store::Error) -> StorageError {
    StorageError::Store {
        object: uri.to_string(),
        source,
    }
}

/// Runs file-system work (hashing, the index) on a blocking thread, off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("cache file work does not panic")
}
