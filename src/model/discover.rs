//! A model repository served without a manifest: every `<dir>/<name>/<version>/model.onnx`
//! (Triton's layout) with the signature its file declares. The ONNX file is the source of
//! truth; the manifest is optional metadata on top (feature names, labels, artifacts, a sha256
//! pin), and when there is one it is checked against the file as before.
//!
//! Without a manifest each version gets the entry [`super::tabular::entry_from_signature`]
//! derives (feature names `f0..`, the graph's class labels, the file's own sha256), and the
//! manifest served on `/manifest` is made of those entries, each with its `signature`.

use std::path::{Path, PathBuf};

use ort::session::Session;
use serde_json::json;

use super::repository::sha256_hex;
use super::runtime::ExecutionProviderChoice;
use super::signature::Signature;
use super::tabular::{self, MODEL_FILE};
use super::{LoadError, Manifest, ModelEntry, Runtime};

/// The `--manifest` value that means "no manifest: read the repository's files".
pub const NO_MANIFEST: &str = "none";

/// The manifest path the server and jobs default to; when no file is there, the repository is
/// read without a manifest.
pub const DEFAULT_MANIFEST: &str = "manifest.json";

/// `source` of a manifest made from the files, so `/manifest` says where its entries came from.
pub const SOURCE_ONNX: &str = "onnx files (no manifest)";

/// One `<name>/<version>/model.onnx` found in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVersion {
    pub name: String,
    pub version: u64,
    /// The model file.
    pub file: PathBuf,
}

/// True when `manifest` means there is none: `none`, or the default path with no file there.
/// An explicitly named manifest that is missing stays an error (a typo must not silently
/// serve the repository differently).
pub fn is_bare(manifest: &Path) -> bool {
    manifest == Path::new(NO_MANIFEST)
        || (manifest == Path::new(DEFAULT_MANIFEST) && !manifest.exists())
}

/// The manifest to serve `models_dir` with: the file `manifest` names, or, when
/// [`is_bare`], one made from the repository's model files.
pub fn manifest_for(
    manifest: &Path,
    models_dir: &Path,
    runtime: &Runtime,
) -> Result<Manifest, LoadError> {
    let (manifest, unservable) = manifest_for_each(manifest, models_dir, runtime)?;
    match unservable.into_iter().next() {
        Some(first) => Err(first.error),
        None => Ok(manifest),
    }
}

/// [`manifest_for`], except that in a bare repository a file the server cannot serve is left
/// out of the manifest and returned with why, so the others can serve
/// (`--exit-on-error false`, and every rescan).
pub fn manifest_for_each(
    manifest: &Path,
    models_dir: &Path,
    runtime: &Runtime,
) -> Result<(Manifest, Vec<Unservable>), LoadError> {
    if !is_bare(manifest) {
        return Ok((Manifest::read(manifest)?, Vec::new()));
    }
    tracing::info!(
        models_dir = %models_dir.display(),
        "no manifest: serving every <name>/<version>/model.onnx with the signature its file declares"
    );
    discover_each(models_dir, runtime)
}

/// Every `<name>/<version>/model.onnx` under `models_dir`, by name then version. A version is
/// a folder named by a whole number (as Triton's); other folders and files are ignored, so
/// reference data may sit beside the versions.
pub fn find_versions(models_dir: &Path) -> Result<Vec<FoundVersion>, LoadError> {
    let mut found = Vec::new();
    for name_dir in sorted_dirs(models_dir)? {
        let Some(name) = dir_name(&name_dir) else {
            continue;
        };
        for version_dir in sorted_dirs(&name_dir)? {
            let version = dir_name(&version_dir)
                .and_then(|v| v.parse::<u64>().ok().filter(|n| n.to_string() == v));
            let file = version_dir.join(MODEL_FILE);
            if let (Some(version), true) = (version, file.is_file()) {
                found.push(FoundVersion {
                    name: name.clone(),
                    version,
                    file,
                });
            }
        }
    }
    found.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(found)
}

/// The signature of a model file, read through a throw-away CPU session.
pub fn read_signature(
    runtime: &Runtime,
    bytes: &[u8],
    name: &str,
    version: &str,
) -> Result<(Session, Signature), LoadError> {
    let session_error = |reason: String| LoadError::Session {
        model: name.to_owned(),
        version: version.to_owned(),
        reason,
    };
    let (session, _) = runtime
        .session(bytes, 1, ExecutionProviderChoice::Cpu)
        .map_err(|e| session_error(e.to_string()))?;
    let signature = Signature::read(&session, bytes).map_err(|e| session_error(e.to_string()))?;
    Ok((session, signature))
}

/// The entry of one model file, as served without a manifest, with its signature.
pub fn entry_of_file(
    runtime: &Runtime,
    name: &str,
    version: &str,
    file: &Path,
) -> Result<(ModelEntry, Signature), LoadError> {
    let bytes = std::fs::read(file).map_err(|source| LoadError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let (_, signature) = read_signature(runtime, &bytes, name, version)?;
    let (entry, why_tensors) =
        tabular::entry_from_signature(name, version, &sha256_hex(&bytes), &signature);
    if let Some(why) = why_tensors {
        tracing::info!(
            model = name,
            version,
            why = %why,
            "served as named tensors (V2 and gRPC), not as /predict rows"
        );
    }
    Ok((entry, signature))
}

/// The manifest entry of `entry` as JSON, with the file's signature beside it.
pub fn entry_json(entry: &ModelEntry, signature: &Signature) -> serde_json::Value {
    let mut json = serde_json::to_value(entry).expect("entries serialize");
    json["signature"] = signature.describe();
    json
}

/// A model file of a bare repository that the server cannot serve, and why.
#[derive(Debug)]
pub struct Unservable {
    pub version: FoundVersion,
    pub error: LoadError,
}

/// The manifest of a repository without one: an entry per model file. The first model by
/// name is the default. Every file is read, so one the server cannot serve stops the start
/// with its name, input or output, and why.
pub fn discover(models_dir: &Path, runtime: &Runtime) -> Result<Manifest, LoadError> {
    let (manifest, unservable) = discover_each(models_dir, runtime)?;
    match unservable.into_iter().next() {
        Some(first) => Err(first.error),
        None => Ok(manifest),
    }
}

/// [`discover`], the files the server cannot serve left out and returned with why. Still an
/// error when none can be served: there is no manifest to serve.
pub fn discover_each(
    models_dir: &Path,
    runtime: &Runtime,
) -> Result<(Manifest, Vec<Unservable>), LoadError> {
    let found = find_versions(models_dir)?;
    if found.is_empty() {
        return Err(LoadError::Manifest {
            path: models_dir.to_path_buf(),
            reason: format!(
                "no manifest, and no model files in the repository: expected <name>/<version>/{MODEL_FILE} with a whole-number version (Triton's layout)"
            ),
        });
    }
    let mut models = Vec::new();
    let mut servable = Vec::new();
    let mut unservable = Vec::new();
    for version in found {
        match entry_of_file(
            runtime,
            &version.name,
            &version.version.to_string(),
            &version.file,
        ) {
            Ok((entry, signature)) => {
                models.push(entry_json(&entry, &signature));
                servable.push(version);
            }
            Err(error) => unservable.push(Unservable { version, error }),
        }
    }
    let Some(default_model) = servable.first().map(|v| v.name.clone()) else {
        return Err(unservable.remove(0).error);
    };
    let raw = json!({
        "source": SOURCE_ONNX,
        "default_model": default_model,
        "models": models,
    });
    let manifest = Manifest::parse(&raw.to_string()).map_err(|reason| LoadError::Manifest {
        path: models_dir.to_path_buf(),
        reason,
    })?;
    Ok((manifest, unservable))
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io)? {
        let path = item.map_err(io)?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// A folder's name, unless hidden (`.git`, `.cache`).
fn dir_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (!name.starts_with('.')).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_whole_number_folders_holding_model_onnx() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (folder, with_model) in [
            ("b/1", true),
            ("b/10", true),
            ("b/2", true),
            ("a/3", true),
            ("a/01", true),
            ("a/latest", true),
            ("a/4", false),
            (".hidden/1", true),
        ] {
            std::fs::create_dir_all(root.join(folder)).unwrap();
            if with_model {
                std::fs::write(root.join(folder).join(MODEL_FILE), b"x").unwrap();
            }
        }
        std::fs::write(root.join("a/reference.csv"), b"f0\n1\n").unwrap();
        let found: Vec<(String, u64)> = find_versions(root)
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.version))
            .collect();
        assert_eq!(
            found,
            [
                ("a".to_string(), 3),
                ("b".to_string(), 1),
                ("b".to_string(), 2),
                ("b".to_string(), 10)
            ]
        );
    }

    #[test]
    fn none_and_a_missing_default_mean_no_manifest() {
        assert!(is_bare(Path::new("none")));
        assert!(!is_bare(Path::new("/nonexistent/manifest.json")));
        // The tests run in the crate root, where the bundled manifest.json is.
        assert!(!is_bare(Path::new(DEFAULT_MANIFEST)));
    }
}
