//! The training log (`training_log.json`): rows with the prediction recorded for each when the
//! model was trained or added (`models add --reference`). At load every row is run again and
//! must give exactly the recorded prediction, or the version is refused: the log is the
//! proof that this file, on this runtime, answers as it did when it was recorded. (On the CPU
//! with one intra-op thread, where bits are promised; elsewhere the repository only warns.)
//!
//! Format: `{"model", "version", "rows": [{"features": {name: value}, "prediction": P}]}`
//! where `P` is one element of `/predict`'s `predictions` (rows may carry more keys, e.g.
//! `entity_id`). Each row is run alone (one row per call), as it was recorded: ONNX Runtime's
//! float kernels may sum in another order for a batch, so only batch-1 answers are exact.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::output::Predictions;
use super::{InferenceError, LoadError, LoadedModel, Rows};

/// The prediction for one row, run alone, as `/predict` writes it.
pub fn predict_one(model: &LoadedModel, values: &[f32]) -> Result<Value, InferenceError> {
    let output = model.infer(&Rows::new(values.to_vec(), values.len()))?;
    let predictions = serde_json::to_value(Predictions {
        output: &output,
        class_labels: &model.entry.class_labels,
    })
    .expect("predictions serialize");
    Ok(predictions[0].clone())
}

/// A training log of `rows` (values in the model's feature order), each with the prediction
/// the model makes for it now.
pub fn record(model: &LoadedModel, rows: &[Vec<f32>]) -> Result<Value, InferenceError> {
    let entry = &model.entry;
    let rows = rows
        .iter()
        .map(|values| {
            let features: Map<String, Value> = entry
                .feature_names
                .iter()
                .zip(values)
                .map(|(name, &v)| (name.clone(), json!(f64::from(v))))
                .collect();
            Ok(json!({"features": features, "prediction": predict_one(model, values)?}))
        })
        .collect::<Result<Vec<Value>, InferenceError>>()?;
    Ok(json!({"model": entry.name, "version": entry.version, "rows": rows}))
}

/// Where the version's training log is, if its entry lists one.
pub fn path_of(model: &LoadedModel, models_dir: &Path) -> Option<PathBuf> {
    let entry = &model.entry;
    let file = entry.artifacts.training_log.as_ref()?;
    Some(models_dir.join(&entry.path).join(file))
}

/// Runs every row of the version's training log (when its entry lists one) and refuses the
/// version at the first row whose prediction differs from the recorded one in any bit.
/// Returns the number of rows checked.
pub fn check(model: &LoadedModel, models_dir: &Path) -> Result<usize, LoadError> {
    let Some(path) = path_of(model, models_dir) else {
        return Ok(0);
    };
    let entry = &model.entry;
    let fail = |reason: String| LoadError::Artifact {
        model: entry.name.clone(),
        version: entry.version.clone(),
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let log: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let rows = log["rows"]
        .as_array()
        .ok_or_else(|| fail("no \"rows\" array".into()))?;
    for (i, row) in rows.iter().enumerate() {
        let values = entry
            .feature_names
            .iter()
            .map(|name| {
                row["features"][name]
                    .as_f64()
                    .map(|v| v as f32)
                    .ok_or_else(|| fail(format!("row {i}: feature '{name}' is not a number")))
            })
            .collect::<Result<Vec<f32>, LoadError>>()?;
        let got = predict_one(model, &values)
            .map_err(|e| fail(format!("row {i}: inference failed: {e}")))?;
        if !same(&got, &row["prediction"]) {
            return Err(fail(format!(
                "row {i}: the model predicts {got}, the training log recorded {} \
                 (bits hold on the kind of CPU the log was recorded on: a log recorded on \
                 another CPU may need recording again here, see docs/your-models.md)",
                row["prediction"]
            )));
        }
    }
    Ok(rows.len())
}

/// JSON equality with numbers compared as float64 values (`1` and `1.0` are the same).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_value_and_everything_else_exactly() {
        assert!(same(&json!({"value": 1}), &json!({"value": 1.0})));
        assert!(!same(
            &json!({"value": 0.1}),
            &json!({"value": f64::from(0.1f32)})
        ));
        assert!(!same(&json!({"label": "a"}), &json!({"label": "b"})));
        assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(same(&json!([1, "x"]), &json!([1.0, "x"])));
    }
}
