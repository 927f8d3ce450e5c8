//! The held-out feature snapshot the training pipeline exports with each model
//! (`models/<name>/<version>/snapshot.csv`: first column the entity id, then one column per
//! feature), held in memory. The in-process store answers from it directly, and the mock
//! feature store serves it over Feast's protocol, so both give the features training logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::model::repository::sha256_hex;
use crate::model::ModelEntry;

/// Why a snapshot file cannot be used; each message names the file and the place in it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file cannot be read.
    #[error("cannot read the feature snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a snapshot: no header, a bad cell, a repeated entity.
    #[error("invalid feature snapshot {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
}

/// One snapshot file, parsed. Values are kept as the CSV's `f64`s (the float32 training values
/// widened exactly), so the store hands out the very numbers the training log used.
#[derive(Debug)]
pub struct Snapshot {
    /// sha256 of the file's bytes: the manifest's `dataset.feature_snapshot_id` names it.
    pub id: String,
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// The header of the first column (`entity_id`).
    pub key_column: String,
    /// The feature columns, in file order.
    pub columns: Vec<String>,
    /// Column name → position in `columns`.
    column_index: HashMap<String, usize>,
    /// Entity id → row.
    rows: HashMap<String, usize>,
    /// Row-major values; `None` is an empty cell, which a store reports as NULL.
    values: Vec<Option<f64>>,
}

impl Snapshot {
    /// Reads and parses a snapshot file. Blocking: call it off the async workers.
    pub fn load(path: &Path) -> Result<Snapshot, SnapshotError> {
        let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Snapshot::parse(&bytes, path)
    }

    /// Parses snapshot bytes; `path` is only for messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Snapshot, SnapshotError> {
        let invalid = |reason: String| SnapshotError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(bytes);
        let header = reader
            .headers()
            .map_err(|e| invalid(format!("cannot read the header: {e}")))?
            .clone();
        let mut names = header.iter().map(str::to_owned);
        let key_column = names
            .next()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("the header is empty".into()))?;
        let columns: Vec<String> = names.collect();
        let mut column_index = HashMap::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            if column_index.insert(name.clone(), i).is_some() {
                return Err(invalid(format!("column '{name}' appears twice")));
            }
        }
        let mut rows = HashMap::new();
        let mut values = Vec::new();
        for (line, record) in reader.records().enumerate() {
            let record = record.map_err(|e| invalid(e.to_string()))?;
            let row = line + 1;
            let mut cells = record.iter();
            let entity = cells.next().unwrap_or_default().to_owned();
            if entity.is_empty() {
                return Err(invalid(format!("data row {row} has no entity id")));
            }
            if record.len() != columns.len() + 1 {
                return Err(invalid(format!(
                    "data row {row} ('{entity}') has {} cells, the header {}",
                    record.len(),
                    columns.len() + 1
                )));
            }
            for (cell, name) in cells.zip(&columns) {
                let value = if cell.trim().is_empty() {
                    None
                } else {
                    Some(cell.trim().parse::<f64>().map_err(|_| {
                        invalid(format!(
                            "data row {row} ('{entity}'), column '{name}': '{cell}' is not a number"
                        ))
                    })?)
                };
                values.push(value);
            }
            if rows.insert(entity.clone(), rows.len()).is_some() {
                return Err(invalid(format!("entity '{entity}' appears twice")));
            }
        }
        Ok(Snapshot {
            id: sha256_hex(bytes),
            path: path.to_path_buf(),
            key_column,
            columns,
            column_index,
            rows,
            values,
        })
    }

    /// The position of a feature column, if the snapshot has it.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.column_index.get(name).copied()
    }

    /// An entity's values in column order, or `None` if the snapshot does not hold it.
    pub fn row(&self, entity: &str) -> Option<&[Option<f64>]> {
        let n = self.columns.len();
        self.rows
            .get(entity)
            .map(|&r| &self.values[r * n..(r + 1) * n])
    }

    /// How many entities the snapshot holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the snapshot holds no entity.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The snapshot's file name from the manifest's `artifacts.snapshot`, else `snapshot.csv`.
pub fn artifact_name(raw: &serde_json::Value, entry: &ModelEntry) -> String {
    raw["models"]
        .as_array()
        .and_then(|models| {
            models.iter().find(|m| {
                m["name"] == entry.name.as_str() && m["version"] == entry.version.as_str()
            })
        })
        .and_then(|m| m["artifacts"]["snapshot"].as_str())
        .unwrap_or("snapshot.csv")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Snapshot, SnapshotError> {
        Snapshot::parse(text.as_bytes(), Path::new("s.csv"))
    }

    #[test]
    fn rows_by_entity_with_nulls_and_the_file_hash() {
        let text = "entity_id,a,b\nx-1,1.5,\nx-2,-2,3e-3\n";
        let s = parse(text).unwrap();
        assert_eq!(s.key_column, "entity_id");
        assert_eq!(s.columns, ["a", "b"]);
        assert_eq!(s.row("x-1"), Some(&[Some(1.5), None][..]));
        assert_eq!(s.row("x-2"), Some(&[Some(-2.0), Some(0.003)][..]));
        assert_eq!(s.row("x-3"), None);
        assert_eq!(s.column("b"), Some(1));
        assert_eq!(s.len(), 2);
        assert_eq!(s.id, sha256_hex(text.as_bytes()));
    }

    #[test]
    fn the_bundled_snapshots_match_their_manifest_ids() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = crate::model::Manifest::read(&root.join("manifest.json")).unwrap();
        for entry in &manifest.models {
            let s = Snapshot::load(&root.join("models").join(&entry.path).join("snapshot.csv"))
                .unwrap();
            assert_eq!(s.id, entry.dataset.feature_snapshot_id, "{}", entry.name);
            assert_eq!(s.columns, entry.feature_names, "{}", entry.name);
            assert!(s.len() >= 20);
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_place() {
        for (text, problem) in [
            ("", "header is empty"),
            ("entity_id,a\nx,1\nx,2\n", "'x' appears twice"),
            ("entity_id,a,a\n", "'a' appears twice"),
            ("entity_id,a\nx,abc\n", "column 'a': 'abc' is not a number"),
            ("entity_id,a\n,1\n", "no entity id"),
            ("entity_id,a\nx,1,2\n", "has 3 cells, the header 2"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(problem), "{text:?}: {error}");
        }
        assert!(Snapshot::load(Path::new("/no/such/file.csv"))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }
}
