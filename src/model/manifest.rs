//! `manifest.json`: the record of what was trained, from which data and code, with which hash.
//! The server trusts nothing it cannot check against it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::LoadError;

/// The whole manifest: the parsed parts the server acts on, plus the raw JSON it serves back on
/// `/manifest` untouched (so no field the training pipeline adds is ever lost).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The model `/predict` serves when no model is named.
    pub default_model: String,
    /// One entry per model version.
    pub models: Vec<ModelEntry>,
    /// The file as written by training.
    pub raw: serde_json::Value,
}

/// What a model is for; decides the shape of its predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Outputs a label and class probabilities.
    Classification,
    /// Outputs one number.
    Regression,
    /// Takes and gives named typed tensors exactly as the ONNX file declares them (several
    /// inputs, any element type and rank: a ColumnTransformer pipeline, a float64 or int64
    /// model, an image model): served through V2 and gRPC, where a request is those tensors.
    Tensors,
}

/// One model version as the manifest describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelEntry {
    pub name: String,
    pub version: String,
    pub task: Task,
    /// The version's folder, relative to the models directory.
    pub path: String,
    /// Model input columns, in order (none for a `tensors` model).
    #[serde(default)]
    pub feature_names: Vec<String>,
    /// Classifiers: label `i` is ONNX label value `i` and probability column `i`.
    #[serde(default)]
    pub class_labels: Vec<String>,
    pub onnx: OnnxEntry,
    #[serde(default)]
    pub dataset: DatasetEntry,
    #[serde(default)]
    pub artifacts: Artifacts,
    /// Where this model's features are looked up by entity id (the data contract with the
    /// feature store); `None` means the model only takes inline `instances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_store: Option<FeatureStoreSpec>,
}

/// The `feature_store` block of a model entry: which Feast feature service or view, which join
/// key, and which documented defaults stand in for a missing value. Kept in the manifest, not in
/// code, so retraining against a new feature set changes data, not the server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FeatureStoreSpec {
    /// The Feast entity (informational: the join key is what goes on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The feature service to ask for; preferred over `feature_view` when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
    /// The feature view holding the model's features (`<view>:<feature>` references); also how
    /// `<view>__<feature>` column names are recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_view: Option<String>,
    /// The entity key column, e.g. `entity_id`.
    pub join_key: String,
    /// Per-feature values to use when the store has none (NULL, not found, too old). A feature
    /// without a default makes such a lookup fail with `feature_missing`.
    #[serde(default)]
    pub defaults: BTreeMap<String, f64>,
}

/// The ONNX file and the tensor names the server reads and writes.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OnnxEntry {
    pub file: String,
    pub sha256: String,
    /// The single float32 `[batch, features]` input (empty for a `tensors` model, whose inputs
    /// are the file's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub input: String,
    /// Role → tensor name: `label` and `probabilities` for classifiers, `value` for regressors
    /// (empty for a `tensors` model).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// Where the training data came from; reported so every prediction can be traced to it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct DatasetEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot_id: String,
    /// sha256 of the feature snapshot (`snapshot.csv`) exported with the model: the feature
    /// store must serve this snapshot for entity-id predictions to match the training log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub feature_snapshot_id: String,
}

/// Files training wrote beside the model, relative to the version's folder.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Artifacts {
    /// The background rows `/explain` integrates over (CSV with a feature-name header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<String>,
    /// Held-out rows with the prediction training recorded for each (served to the demo page
    /// and to anyone checking reproducibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_log: Option<String>,
}

#[derive(Deserialize)]
struct ManifestFile {
    default_model: Option<String>,
    models: Vec<ModelEntry>,
}

impl Manifest {
    /// Reads and checks the manifest's own consistency (the model files are checked on load).
    pub fn read(path: &Path) -> Result<Manifest, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(&text).map_err(|reason| LoadError::Manifest {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses manifest text; the error says what is wrong in words.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let file: ManifestFile = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        if file.models.is_empty() {
            return Err("no models listed".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for entry in &file.models {
            entry.check()?;
            if !seen.insert((entry.name.as_str(), entry.version.as_str())) {
                return Err(format!(
                    "model '{}' version '{}' is listed twice",
                    entry.name, entry.version
                ));
            }
        }
        let default_model = file
            .default_model
            .unwrap_or_else(|| file.models[0].name.clone());
        if !file.models.iter().any(|m| m.name == default_model) {
            return Err(format!(
                "default_model '{default_model}' is not among the models"
            ));
        }
        Ok(Manifest {
            default_model,
            models: file.models,
            raw,
        })
    }
}

impl Manifest {
    /// The manifest served under `--model-name` (KServe passes the InferenceService's name, so
    /// that `/v2/models/<that name>` is the model): unchanged when a model already has that
    /// name; a repository of one model serves it under `name` (entries, default, rollout block;
    /// its files stay where they are); a repository of several models, none named so, is an
    /// error naming them, since which one was meant cannot be guessed.
    pub fn serve_as(self, name: &str) -> Result<Manifest, String> {
        let names: std::collections::BTreeSet<&str> =
            self.models.iter().map(|m| m.name.as_str()).collect();
        if names.contains(name) {
            return Ok(self);
        }
        let [old] = names.into_iter().collect::<Vec<_>>()[..] else {
            return Err(format!(
                "--model-name {name}: the repository has several models ({}) and none is named {name}; name the InferenceService after one of them, or give it a repository of one model",
                self.models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let old = old.to_string();
        let mut raw = self.raw;
        raw["default_model"] = serde_json::Value::from(name);
        if let Some(models) = raw["models"].as_array_mut() {
            for entry in models {
                entry["name"] = serde_json::Value::from(name);
            }
        }
        if let Some(rollout) = raw.get_mut("rollout").and_then(|r| r.as_object_mut()) {
            if let Some(config) = rollout.remove(&old) {
                rollout.insert(name.to_string(), config);
            }
        }
        tracing::info!(model = %old, served_as = %name, "serving the repository's one model under --model-name");
        Manifest::parse(&raw.to_string())
    }
}

impl ModelEntry {
    /// The task as the manifest spells it.
    pub fn task_name(&self) -> &'static str {
        match self.task {
            Task::Classification => "classification",
            Task::Regression => "regression",
            Task::Tensors => "tensors",
        }
    }

    /// The output role holding the scores an explanation attributes (the probabilities, or
    /// the value); `None` for a tensors model, which has no roles.
    pub fn score_role(&self) -> Option<&'static str> {
        match self.task {
            Task::Classification => Some("probabilities"),
            Task::Regression => Some("value"),
            Task::Tensors => None,
        }
    }

    /// Checks that the entry can be served: roles present, names unique, version numeric.
    fn check(&self) -> Result<(), String> {
        let who = format!("model '{}' version '{}'", self.name, self.version);
        if self.version.parse::<u64>().is_err() {
            return Err(format!("{who}: version must be a whole number"));
        }
        if self.task == Task::Tensors {
            // The file's signature is the whole contract; a feature store needs named columns.
            if self.feature_store.is_some() {
                return Err(format!(
                    "{who}: a tensors model has no feature columns for feature_store"
                ));
            }
            return Ok(());
        }
        if self.feature_names.is_empty() {
            return Err(format!("{who}: feature_names is empty"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.feature_names.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(format!("{who}: feature '{dup}' listed twice"));
        }
        let roles: &[&str] = match self.task {
            Task::Classification => &["label", "probabilities"],
            Task::Regression => &["value"],
            Task::Tensors => &[],
        };
        if let Some(missing) = roles.iter().find(|r| !self.onnx.outputs.contains_key(**r)) {
            return Err(format!("{who}: onnx.outputs has no '{missing}'"));
        }
        if self.task == Task::Classification && self.class_labels.len() < 2 {
            return Err(format!(
                "{who}: a classifier needs at least two class_labels"
            ));
        }
        if let Some(spec) = &self.feature_store {
            spec.check(&self.feature_names)
                .map_err(|e| format!("{who}: feature_store: {e}"))?;
        }
        Ok(())
    }
}

impl FeatureStoreSpec {
    /// A lookup needs a service or a view, and a default must be a finite float32 for one of
    /// the model's own features: a typo here would otherwise only show at request time.
    fn check(&self, feature_names: &[String]) -> Result<(), String> {
        if self.feature_service.is_none() && self.feature_view.is_none() {
            return Err("names neither a feature_service nor a feature_view".into());
        }
        if self.join_key.is_empty() {
            return Err("join_key is empty".into());
        }
        for (name, value) in &self.defaults {
            if !feature_names.contains(name) {
                return Err(format!(
                    "a default for '{name}', which is not a model feature"
                ));
            }
            if !(*value as f32).is_finite() {
                return Err(format!("the default for '{name}' is not a finite float32"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(extra: &str) -> String {
        format!(
            r#"{{"models": [{{"name": "m", "version": "1", "task": "regression", "path": "m/1",
            "feature_names": ["a", "b"], "onnx": {{"file": "model.onnx", "sha256": "00",
            "input": "input", "outputs": {{"value": "variable"}}}}{extra}}}]}}"#
        )
    }

    #[test]
    fn parses_and_defaults_to_the_first_model() {
        let m = Manifest::parse(&entry("")).unwrap();
        assert_eq!(m.default_model, "m");
        assert_eq!(m.models[0].feature_names, ["a", "b"]);
        assert_eq!(m.raw["models"][0]["path"], "m/1");
    }

    #[test]
    fn one_model_is_served_under_the_model_name_and_several_need_one_so_named() {
        let one: serde_json::Value = serde_json::from_str(&entry("")).unwrap();
        let mut with_rollout = one.clone();
        with_rollout["rollout"] = serde_json::json!({"m": {"split": {"1": 1}}});
        let renamed = Manifest::parse(&with_rollout.to_string())
            .unwrap()
            .serve_as("isvc")
            .unwrap();
        assert_eq!(renamed.default_model, "isvc");
        assert_eq!(renamed.models[0].name, "isvc");
        assert_eq!(renamed.models[0].path, "m/1");
        assert_eq!(renamed.raw["models"][0]["name"], "isvc");
        assert_eq!(
            renamed.raw["rollout"],
            serde_json::json!({"isvc": {"split": {"1": 1}}})
        );
        let mut other = one["models"][0].clone();
        other["name"] = "n".into();
        let two = serde_json::json!({"models": [one["models"][0], other]});
        let two = Manifest::parse(&two.to_string()).unwrap();
        assert_eq!(two.clone().serve_as("n").unwrap().models[1].name, "n");
        assert_eq!(
            two.serve_as("isvc").unwrap_err(),
            "--model-name isvc: the repository has several models (m, n) and none is named isvc; name the InferenceService after one of them, or give it a repository of one model"
        );
    }

    #[test]
    fn refuses_inconsistent_entries() {
        let dup = entry("").replace(r#"["a", "b"]"#, r#"["a", "a"]"#);
        assert!(Manifest::parse(&dup).unwrap_err().contains("listed twice"));
        let one: serde_json::Value = serde_json::from_str(&entry("")).unwrap();
        let twice = serde_json::json!({"models": [one["models"][0], one["models"][0]]});
        assert_eq!(
            Manifest::parse(&twice.to_string()).unwrap_err(),
            "model 'm' version '1' is listed twice"
        );
        let bad_version = entry("").replace(r#""version": "1""#, r#""version": "v1""#);
        assert!(Manifest::parse(&bad_version)
            .unwrap_err()
            .contains("whole number"));
        let no_role = entry("").replace(r#""value""#, r#""score""#);
        assert!(Manifest::parse(&no_role)
            .unwrap_err()
            .contains("no 'value'"));
        assert!(Manifest::parse(r#"{"models": []}"#)
            .unwrap_err()
            .contains("no models"));
    }

    #[test]
    fn feature_store_block_is_the_data_contract() {
        let m = Manifest::parse(&entry(
            r#", "feature_store": {"feature_service": "s", "join_key": "entity_id",
            "defaults": {"b": 0.5}}, "dataset": {"feature_snapshot_id": "ab"}"#,
        ))
        .unwrap();
        let spec = m.models[0].feature_store.as_ref().unwrap();
        assert_eq!(spec.feature_service.as_deref(), Some("s"));
        assert_eq!(spec.defaults["b"], 0.5);
        assert_eq!(m.models[0].dataset.feature_snapshot_id, "ab");
        assert!(Manifest::parse(&entry("")).unwrap().models[0]
            .feature_store
            .is_none());
        for (block, problem) in [
            (r#"{"join_key": "k"}"#, "neither"),
            (
                r#"{"feature_view": "v", "join_key": "k", "defaults": {"z": 1}}"#,
                "not a model feature",
            ),
            (
                r#"{"feature_view": "v", "join_key": "k", "defaults": {"a": 1e300}}"#,
                "finite",
            ),
        ] {
            let text = entry(&format!(r#", "feature_store": {block}"#));
            let error = Manifest::parse(&text).unwrap_err();
            assert!(error.contains(problem), "{block}: {error}");
        }
    }
}
