//! Tree SHAP read from the ONNX files users export, against shap's TreeExplainer on the native
//! models: a StandardScaler→RandomForest pipeline (skl2onnx: a `Scaler` before the trees, a
//! `ZipMap` after), LightGBM and XGBoost through onnxmltools with their defaults.
//! `tests/python/user_models/build.py` exports the models with the pinned converters and
//! records shap's interventional attributions of 32 reference rows over a 16-row background;
//! here the trees are read from the ONNX bytes, the per-feature steps replayed on the rows,
//! and every attribution, base value and model value compared.

mod common;

use std::path::{Path, PathBuf};

use ferrum_serve::explain::onnx::{read_trees, MarginOutput, OnnxTrees, PostTransform};
use ferrum_serve::explain::tree::{Link, Scratch, Target};
use ferrum_serve::model::Manifest;
use serde_json::{json, Value};

/// The fixtures, built once per machine.
fn fixtures() -> &'static Path {
    common::fixtures::user_models()
}

/// A fixture's description in fixtures.json.
fn fixture(name: &str) -> Value {
    let all: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("fixtures.json")).unwrap()).unwrap();
    all["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
        .clone()
}

/// A CSV of numbers (header skipped), row-major as float32: the bits the references used.
fn csv_rows(path: &Path) -> Vec<f32> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .flat_map(|line| {
            line.split(',')
                .map(|v| v.parse::<f64>().unwrap() as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The trees of fixture `name`, read with the manifest entry a user would write for it.
fn trees_of(name: &str, outputs: Value) -> OnnxTrees {
    let f = fixture(name);
    let labels: Vec<String> = f["class_labels"]
        .as_array()
        .map(|l| l.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    let manifest = json!({
        "default_model": name,
        "models": [{
            "name": name,
            "version": "1",
            "path": format!("{name}/1"),
            "task": f["task"],
            "feature_names": f["feature_names"],
            "class_labels": labels,
            "onnx": {"file": "model.onnx", "input": f["inputs"][0]["name"], "outputs": outputs, "sha256": f["sha256"]},
        }],
    });
    let manifest = Manifest::parse(&manifest.to_string()).expect("a valid manifest entry");
    let bytes = std::fs::read(fixtures().join(name).join("1/model.onnx")).unwrap();
    read_trees(&bytes, &manifest.models[0])
        .expect("trees this reader explains")
        .expect("a tree ensemble")
}

/// Every reference row's attributions of `target`, base value and model value against shap's
/// (output `k` of the reference), to 1e-5 relative.
fn assert_matches_shap(name: &str, trees: &OnnxTrees, target: Target, k: usize) {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join(name).join("expected.json")).unwrap(),
    )
    .unwrap();
    let explanation = &expected["explanation"];
    let background = csv_rows(&fixtures().join(name).join("background.csv"));
    let reference = csv_rows(&fixtures().join(name).join("reference.csv"));
    let width = trees.ensemble.n_features();
    let set = trees
        .ensemble
        .background_set(&trees.preprocess.apply(&background));
    let mut scratch = Scratch::default();
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{name} {what}: {got} vs shap {want}"
        );
    };
    for (i, row) in reference.chunks_exact(width).enumerate() {
        let x = trees.preprocess.apply(row);
        let shap = trees.ensemble.shap(&x, &set, target, &mut scratch);
        for (j, &a) in shap.attributions.iter().enumerate() {
            let want = explanation["values"][i][j][k].as_f64().unwrap();
            close(a, want, &format!("row {i} feature {j}"));
        }
        close(
            shap.base_value,
            explanation["base_values"][k].as_f64().unwrap(),
            "base value",
        );
        close(
            shap.model_value,
            explanation["output_values"][i][k].as_f64().unwrap(),
            &format!("row {i} value"),
        );
    }
}

#[test]
fn a_scaled_random_forest_is_explained_through_its_scaler_and_zipmap() {
    let trees = trees_of(
        "scaled-forest",
        json!({"label": "output_label", "probabilities": "output_probability"}),
    );
    assert_eq!(trees.transform, PostTransform::None);
    assert_eq!(trees.classes.len(), 3);
    assert_eq!(
        trees.margin_output,
        MarginOutput::Tree("probabilities".into())
    );
    // The Scaler moves every value: the trees split on standardized features.
    let raw = csv_rows(&fixtures().join("scaled-forest/reference.csv"));
    assert!(trees
        .preprocess
        .apply(&raw)
        .iter()
        .zip(&raw)
        .all(|(a, b)| a != b));
    for (k, class) in trees.classes.iter().enumerate() {
        let target = Target {
            output: class.output,
            sign: class.sign,
            offset: class.offset,
            link: Link::Identity,
        };
        assert_matches_shap("scaled-forest", &trees, target, k);
    }
}

#[test]
fn lightgbm_through_onnxmltools_is_explained_in_log_odds() {
    let trees = trees_of(
        "lightgbm",
        json!({"label": "label", "probabilities": "probabilities"}),
    );
    assert_eq!(trees.transform, PostTransform::Logistic);
    // Scores reach the graph output through Identity and ZipMap: the margin session reads the
    // tree node's own output.
    assert_eq!(
        trees.margin_output,
        MarginOutput::Tree("probability_tensor".into())
    );
    let class_1 = trees.classes[1];
    let target = Target {
        output: class_1.output,
        sign: class_1.sign,
        offset: class_1.offset,
        link: Link::Identity,
    };
    assert_matches_shap("lightgbm", &trees, target, 0);
}

#[test]
fn xgboost_through_onnxmltools_is_explained_with_its_base_score() {
    let trees = trees_of("xgboost", json!({"value": "variable"}));
    assert_eq!(trees.margin_output, MarginOutput::Declared);
    let value = trees.classes[0];
    let target = Target {
        output: value.output,
        sign: value.sign,
        offset: value.offset,
        link: Link::Identity,
    };
    assert_matches_shap("xgboost", &trees, target, 0);
}

/// LightGBM's scores reach the graph output only through a ZipMap: the margin model exposes the
/// tree node's own output, and ONNX Runtime's margins there are the trees' (float32 sums) and,
/// through the logistic, the probabilities onnxruntime (Python) reported.
#[test]
fn the_margin_model_exposes_lightgbm_scores_behind_the_zipmap() {
    use ferrum_serve::explain::onnx::margin_model;
    use ferrum_serve::model::runtime::ExecutionProviderChoice;
    use ferrum_serve::model::Runtime;
    use ort::value::TensorRef;

    let trees = trees_of(
        "lightgbm",
        json!({"label": "label", "probabilities": "probabilities"}),
    );
    let bytes = std::fs::read(fixtures().join("lightgbm/1/model.onnx")).unwrap();
    let margin_bytes = margin_model(&bytes, &trees.margin_output).unwrap();
    let dylib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join(".ort/libonnxruntime.so"));
    let runtime = Runtime::load(&dylib).expect("ONNX Runtime");
    let (mut session, _) = runtime
        .session(&margin_bytes, 1, ExecutionProviderChoice::Cpu)
        .expect("the margin model loads");
    let reference = csv_rows(&fixtures().join("lightgbm/reference.csv"));
    let width = trees.ensemble.n_features();
    let n = reference.len() / width;
    let input = TensorRef::from_array_view(([n, width], reference.as_slice())).unwrap();
    let outputs = session.run(ort::inputs!["input" => input]).unwrap();
    let (_, margins) = outputs["probability_tensor"]
        .try_extract_tensor::<f32>()
        .unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("lightgbm/expected.json")).unwrap())
            .unwrap();
    let class_1 = trees.classes[1];
    for (i, row) in reference.chunks_exact(width).enumerate() {
        let tree_margin = class_1.offset
            + class_1.sign
                * trees
                    .ensemble
                    .predict(&trees.preprocess.apply(row), class_1.output);
        let ort_margin = f64::from(margins[i * 2 + 1]);
        assert!(
            (tree_margin - ort_margin).abs() <= 1e-5 * ort_margin.abs().max(1.0),
            "row {i}: trees {tree_margin}, ONNX Runtime {ort_margin}"
        );
        // ZipMap rows are [[label, probability], ...] in label order.
        let reported = expected["outputs"]["probabilities"]["values"][i][1][1]
            .as_f64()
            .unwrap();
        let probability = 1.0 / (1.0 + (-ort_margin).exp());
        assert!(
            (probability - reported).abs() < 1e-6,
            "row {i}: σ(margin) {probability}, onnxruntime {reported}"
        );
    }
}
