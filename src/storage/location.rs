//! Repository URIs: which object-store client serves a scheme, where below it the repository
//! (or a single object such as a manifest) is, and where its local mirror goes in the cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use url::Url;

use super::StorageError;

/// Schemes served through `object_store`; anything else is a local path.
const SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "http", "https",
];

/// Whether `uri` names object storage rather than a local directory: the one test the rest of
/// the server needs to decide whether to mirror a repository first.
pub fn is_remote(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}

/// A remote repository root or object: the client for its store, its path inside the store,
/// and the URI it was named by (for messages and the cache layout).
#[derive(Debug, Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    url: Url,
    /// Whether the store can list a prefix. Plain HTTP(S) servers cannot (object_store would
    /// need WebDAV), so there the manifest is the index of what to fetch.
    listable: bool,
}

impl Location {
    /// Parses `uri` and builds its store client from the environment: `AWS_*` for `s3://`
    /// (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ALLOW_HTTP`, ...), `GOOGLE_*` for `gs://`, `AZURE_*` for `az://`; `http(s)://` is
    /// plain GET requests. No request is sent yet.
    pub fn parse(uri: &str) -> Result<Location, StorageError> {
        let invalid = |reason: String| StorageError::Location {
            uri: uri.to_string(),
            reason,
        };
        let url = Url::parse(uri.trim_end_matches('/')).map_err(|e| invalid(e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no bucket, container or host".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "query strings and fragments are not supported".into(),
            ));
        }
        let path = ObjectPath::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
        let (store, listable) = match url.scheme() {
            "s3" | "s3a" => (
                shared(AmazonS3Builder::from_env().with_url(url.as_str()).build()),
                true,
            ),
            "gs" => (
                shared(
                    GoogleCloudStorageBuilder::from_env()
                        .with_url(url.as_str())
                        .build(),
                ),
                true,
            ),
            "az" | "azure" | "abfs" | "abfss" | "adl" => (
                shared(
                    MicrosoftAzureBuilder::from_env()
                        .with_url(url.as_str())
                        .build(),
                ),
                true,
            ),
            "http" | "https" => {
                // The operator wrote the scheme, so `http://` is allowed as written.
                let options =
                    object_store::ClientOptions::new().with_allow_http(url.scheme() == "http");
                let origin = &url[..url::Position::BeforePath];
                (
                    shared(
                        HttpBuilder::new()
                            .with_url(origin)
                            .with_client_options(options)
                            .build(),
                    ),
                    false,
                )
            }
            other => return Err(invalid(format!("unsupported scheme '{other}'"))),
        };
        let store = store.map_err(|e| invalid(e.to_string()))?;
        Ok(Location {
            store,
            path,
            url,
            listable,
        })
    }

    /// The location `relative` (slash-separated, no `.` or `..`) below this one, on the same
    /// client: a version's file below the repository root, or a manifest given as a relative
    /// path.
    pub fn join(&self, relative: &str) -> Result<Location, StorageError> {
        let mut path = self.path.clone();
        let mut url = self.url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| StorageError::Location {
                    uri: self.uri(),
                    reason: "cannot hold a path".into(),
                })?;
            segments.pop_if_empty();
            for part in relative_parts(relative).ok_or_else(|| StorageError::Location {
                uri: format!("{}/{relative}", self.uri()),
                reason: "a relative path must be slash-separated names without '.' or '..'".into(),
            })? {
                path = path.join(part);
                segments.push(part);
            }
        }
        Ok(Location {
            store: self.store.clone(),
            path,
            url,
            listable: self.listable,
        })
    }

    /// The URI as an operator would write it (no trailing slash).
    pub fn uri(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_string()
    }

    /// Where this location is mirrored below the cache root: `<root>/<scheme>/<host>/<path>`,
    /// so two repositories never share files and the layout can be read by a person.
    pub fn cache_path(&self, root: &Path) -> PathBuf {
        let mut host = self.url.host_str().unwrap_or_default().to_string();
        if let Some(port) = self.url.port() {
            host = format!("{host}_{port}");
        }
        let mut local = root.join(self.url.scheme()).join(host);
        for part in self.path.parts() {
            local.push(part.as_ref());
        }
        local
    }

    pub(super) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(super) fn path(&self) -> &ObjectPath {
        &self.path
    }

    pub(super) fn listable(&self) -> bool {
        self.listable
    }
}

/// A store client as built, behind the one type `Location` holds whatever the scheme, so a build
/// error is turned into the URI's error in one place.
fn shared<S: ObjectStore>(
    built: object_store::Result<S>,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    Ok(Arc::new(built?))
}

/// The names of a relative path, or `None` if it could escape its root or is empty.
pub(super) fn relative_parts(relative: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = relative.split('/').collect();
    let safe = parts.iter().all(|p| {
        !p.is_empty() && *p != "." && *p != ".." && !p.contains('\\') && !p.contains('\0')
    });
    (safe && !parts.is_empty()).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_schemes_are_recognised_and_paths_are_not() {
        for uri in [
            "s3://bucket/prefix",
            "S3://bucket",
            "gs://b/p",
            "az://container/p",
            "https://host/models",
            "http://127.0.0.1:9000/m",
        ] {
            assert!(is_remote(uri), "{uri}");
        }
        for path in ["models", "/srv/models", "./s3:/x", "file:///srv/models", ""] {
            assert!(!is_remote(path), "{path}");
        }
    }

    #[test]
    fn s3_locations_join_and_map_into_the_cache() {
        let root = Location::parse("s3://models-bucket/prod/repo/").unwrap();
        assert_eq!(root.uri(), "s3://models-bucket/prod/repo");
        assert_eq!(root.path().as_ref(), "prod/repo");
        let file = root.join("diabetes/1/model.onnx").unwrap();
        assert_eq!(
            file.uri(),
            "s3://models-bucket/prod/repo/diabetes/1/model.onnx"
        );
        assert_eq!(file.path().as_ref(), "prod/repo/diabetes/1/model.onnx");
        assert_eq!(
            file.cache_path(Path::new("/cache")),
            Path::new("/cache/s3/models-bucket/prod/repo/diabetes/1/model.onnx")
        );
        assert!(root.listable());
        let bucket_root = Location::parse("s3://b").unwrap();
        assert_eq!(
            bucket_root.join("manifest.json").unwrap().uri(),
            "s3://b/manifest.json"
        );
    }

    #[test]
    fn http_locations_keep_the_port_apart_and_do_not_list() {
        let root = Location::parse("http://127.0.0.1:8000/models").unwrap();
        assert!(!root.listable());
        assert_eq!(
            root.join("a/1/model.onnx")
                .unwrap()
                .cache_path(Path::new("/c")),
            Path::new("/c/http/127.0.0.1_8000/models/a/1/model.onnx")
        );
    }

    #[test]
    fn escaping_or_malformed_locations_are_refused() {
        let root = Location::parse("s3://b/p").unwrap();
        for bad in ["../x", "a/../../x", "a//b", "", "/abs", "a\\b"] {
            let error = root.join(bad).unwrap_err().to_string();
            assert!(error.contains("relative path"), "{bad}: {error}");
        }
        for (uri, reason) in [
            ("s3:///prefix", "no bucket"),
            ("s3://b/p?versionId=1", "query strings"),
            ("ftp://host/p", "unsupported scheme"),
        ] {
            let error = Location::parse(uri).unwrap_err().to_string();
            assert!(error.contains(reason), "{uri}: {error}");
        }
    }
}
