//! `FEATURE_STORE_URI`, parsed once at start into the store it names ([`StoreUri`]).

use std::path::PathBuf;

/// What `FEATURE_STORE_URI` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUri {
    /// Unset: each model's own `snapshot.csv` in the models directory, read in-process.
    Embedded,
    /// `none`: entity lookups are off.
    Disabled,
    /// `file://<path>`: a models-directory-shaped tree of snapshots, or one snapshot file for
    /// every model, read in-process.
    File(PathBuf),
    /// `http://host:port[/prefix]`: a server speaking Feast's feature-server protocol.
    Http(String),
}

impl StoreUri {
    /// Parses the flag. `https://` is refused: the client is built without TLS on purpose
    /// (the store sits beside the API on a private network).
    pub fn parse(uri: Option<&str>) -> Result<StoreUri, String> {
        let Some(uri) = uri.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(StoreUri::Embedded);
        };
        if uri.eq_ignore_ascii_case("none") {
            return Ok(StoreUri::Disabled);
        }
        if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err("FEATURE_STORE_URI 'file://' names no path".into());
            }
            return Ok(StoreUri::File(PathBuf::from(path)));
        }
        if let Some(rest) = uri.strip_prefix("http://") {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("FEATURE_STORE_URI '{uri}' names no host"));
            }
            return Ok(StoreUri::Http(uri.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "FEATURE_STORE_URI '{uri}' is not understood: use http://host:port (a Feast feature \
             server; plain HTTP only), file://<path> (a snapshot read in-process), or none"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_forms() {
        assert_eq!(StoreUri::parse(None), Ok(StoreUri::Embedded));
        assert_eq!(StoreUri::parse(Some(" ")), Ok(StoreUri::Embedded));
        assert_eq!(StoreUri::parse(Some("NONE")), Ok(StoreUri::Disabled));
        assert_eq!(
            StoreUri::parse(Some("file:///data/snap.csv")),
            Ok(StoreUri::File("/data/snap.csv".into()))
        );
        assert_eq!(
            StoreUri::parse(Some("file://models")),
            Ok(StoreUri::File("models".into()))
        );
        assert_eq!(
            StoreUri::parse(Some("http://feature-store:6566/")),
            Ok(StoreUri::Http("http://feature-store:6566".into()))
        );
        for bad in ["https://x", "feature-store:6566", "file://", "http://"] {
            assert!(StoreUri::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
