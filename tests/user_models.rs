//! The ONNX models users bring (issue #13), served by the real server: exported with the
//! pinned converters' defaults by tests/python/user_models/build.py, which also records what
//! onnxruntime (Python) answers on each model's reference rows. Each model the serving path
//! takes in the rows form (one float [N, F] input) is served from a bare repository
//! (`--manifest none`) and after `ferrum-serve models add`, and `/predict` and V2 JSON and
//! binary must give onnxruntime's answers bit for bit; the others are served as named tensors.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{repo_root, run_to_exit, server_command, Server};
use serde_json::{json, Value};

/// The models the rows form takes: skl2onnx LogisticRegression (ZipMap), a
/// StandardScaler→RandomForest pipeline (ZipMap), LightGBM and XGBoost through onnxmltools.
const SERVED: [&str; 4] = ["logreg-zipmap", "scaled-forest", "lightgbm", "xgboost"];

/// The ones outside the rows form, served as named tensors, with why the log gives.
const TENSORS: [(&str, &str); 4] = [
    (
        "column-transformer",
        "the model has 4 inputs ('city' string[?, 1], 'x1' float[?, 1], 'x2' float[?, 1], 'x3' float[?, 1]): models with several inputs do not fit the rows form",
    ),
    (
        "float64",
        "input 'double_input' is double[?, 10]: double inputs do not fit the rows form",
    ),
    (
        "int64",
        "input 'counts' is int64[?, 4]: int64 inputs do not fit the rows form",
    ),
    (
        "cnn",
        "input 'pixels' is float[N, 1, 8, 8]: inputs of rank 4 do not fit the rows form",
    ),
];

/// The fixtures, built once into the shared cache (`build.py --cached`).
fn fixtures() -> &'static Path {
    common::fixtures::user_models()
}

/// What fixtures.json says of `name`.
fn fixture(name: &str) -> Value {
    let all = common::read_json(&fixtures().join("fixtures.json"));
    all["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap()
        .clone()
}

/// A repository holding only `names` (links to the fixtures' folders).
fn repository_of(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::os::unix::fs::symlink(fixtures().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

/// The reference CSV's header: the feature names.
fn reference_header(name: &str) -> Vec<String> {
    let mut reader = csv::Reader::from_path(fixtures().join(name).join("reference.csv")).unwrap();
    reader.headers().unwrap().iter().map(String::from).collect()
}

/// The reference rows: header and values (parsed as float64, narrowed to float32).
fn reference(name: &str) -> (Vec<String>, Vec<Vec<f32>>) {
    let mut reader = csv::Reader::from_path(fixtures().join(name).join("reference.csv")).unwrap();
    let rows = reader
        .records()
        .map(|r| {
            r.unwrap()
                .iter()
                .map(|v| v.parse::<f64>().unwrap() as f32)
                .collect()
        })
        .collect();
    (reference_header(name), rows)
}

/// onnxruntime's answer on the 32 reference rows in one run, as a served model gives it: the
/// label values, the probabilities `[rows, classes]` in the graph's label order (from the
/// ZipMap's `[label, p]` pairs), or the regression values.
struct Expected {
    labels: Option<Vec<i64>>,
    numbers: Vec<f64>,
}

fn expected(name: &str) -> Expected {
    let outputs =
        common::read_json(&fixtures().join(name).join("expected.json"))["outputs"].clone();
    let fixture = fixture(name);
    let output_names: Vec<&str> = fixture["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let numbers = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    if fixture["task"] == "regression" {
        return Expected {
            labels: None,
            numbers: numbers(&outputs[output_names[0]]["values"]),
        };
    }
    let graph_labels: Vec<i64> = fixture["class_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_i64().unwrap())
        .collect();
    let (label, zipmap) = (&outputs[output_names[0]], &outputs[output_names[1]]);
    assert_eq!(label["dtype"], "int64", "{name}");
    assert_eq!(zipmap["type"], "seq(map(int64,tensor(float)))", "{name}");
    let mut probabilities = Vec::new();
    for row in zipmap["values"].as_array().unwrap() {
        let mut cells = vec![f64::NAN; graph_labels.len()];
        for pair in row.as_array().unwrap() {
            let column = graph_labels
                .iter()
                .position(|&l| l == pair[0].as_i64().unwrap())
                .unwrap();
            cells[column] = pair[1].as_f64().unwrap();
        }
        probabilities.extend(cells);
    }
    let labels: Vec<i64> = label["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_i64().unwrap())
        .collect();
    // Labels 0..C-1: V2's label output (the class index) is the model's label value.
    assert!(graph_labels.iter().enumerate().all(|(i, &l)| l == i as i64));
    Expected {
        labels: Some(labels),
        numbers: probabilities,
    }
}

/// `/predict`'s answer onnxruntime's outputs make, with `class_names` for the graph's labels.
fn expected_predictions(name: &str, class_names: &[String]) -> Vec<Value> {
    let expected = expected(name);
    match &expected.labels {
        None => expected
            .numbers
            .iter()
            .map(|v| json!({"value": v}))
            .collect(),
        Some(labels) => labels
            .iter()
            .enumerate()
            .map(|(r, &label)| {
                let row = &expected.numbers[r * class_names.len()..(r + 1) * class_names.len()];
                let probabilities: serde_json::Map<String, Value> = class_names
                    .iter()
                    .zip(row)
                    .map(|(c, p)| (c.clone(), json!(p)))
                    .collect();
                json!({"label": class_names[label as usize], "probabilities": probabilities})
            })
            .collect(),
    }
}

/// The graph's class labels as names (`"0"`, `"1"`, ...), what a bare repository serves.
fn graph_label_names(name: &str) -> Vec<String> {
    fixture(name)["class_labels"]
        .as_array()
        .map(|a| a.iter().map(|l| l.to_string()).collect())
        .unwrap_or_default()
}

/// The server's flags for a test: one session, one warm-up, one call per request (so a
/// request's 32 rows run together, as onnxruntime Python ran them).
fn serve_args<'a>(models_dir: &'a str, manifest: &'a str) -> Vec<&'a str> {
    vec![
        "--models-dir",
        models_dir,
        "--manifest",
        manifest,
        "--sessions-per-model",
        "1",
        "--warmup-runs",
        "1",
        "--batching",
        "off",
    ]
}

/// `/predict` on the reference rows (as arrays, or as objects by `feature_names`) gives
/// exactly onnxruntime's answers.
async fn check_predict(server: &Server, name: &str, feature_names: &[String], classes: &[String]) {
    let (_, rows) = reference(name);
    let want = expected_predictions(name, classes);
    let arrays = json!(rows);
    let objects: Vec<Value> = rows
        .iter()
        .map(|row| {
            let object: serde_json::Map<String, Value> = feature_names
                .iter()
                .zip(row)
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect();
            Value::Object(object)
        })
        .collect();
    for instances in [arrays, json!(objects)] {
        let (status, body) = server
            .post(
                &format!("/models/{name}/predict"),
                &json!({"instances": instances}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["predictions"], json!(want), "{name}");
    }
}

/// V2 inference, JSON and binary, gives exactly onnxruntime's outputs.
async fn check_v2(server: &Server, name: &str) {
    let (_, rows) = reference(name);
    let fixture = fixture(name);
    let input = fixture["inputs"][0]["name"].as_str().unwrap();
    let (n, width) = (rows.len(), rows[0].len());
    let want = expected(name);
    let body = json!({
        "inputs": [{"name": input, "shape": [n, width], "datatype": "FP32", "data": rows}]
    });
    let (status, response) = server
        .post(&format!("/v2/models/{name}/infer"), &body)
        .await;
    assert_eq!(status, 200, "{name}: {response}");
    let outputs = response["outputs"].as_array().unwrap();
    let numbers = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    match &want.labels {
        Some(labels) => {
            assert_eq!(outputs[0]["datatype"], "INT64", "{name}");
            let got: Vec<i64> = outputs[0]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_i64().unwrap())
                .collect();
            assert_eq!(&got, labels, "{name}: V2 labels");
            assert_eq!(
                outputs[1]["shape"],
                json!([n, want.numbers.len() / n]),
                "{name}"
            );
            assert_eq!(numbers(&outputs[1]["data"]), want.numbers, "{name}: V2 P");
        }
        None => {
            assert_eq!(outputs[0]["shape"], json!([n, 1]), "{name}");
            assert_eq!(
                numbers(&outputs[0]["data"]),
                want.numbers,
                "{name}: V2 value"
            );
        }
    }

    let (head, outputs) = common::v2_binary_infer(server, name, input, &rows).await;
    let mut float_bits = Vec::new();
    for (output, chunk) in head["outputs"].as_array().unwrap().iter().zip(&outputs) {
        match output["datatype"].as_str().unwrap() {
            "INT64" => {
                let got: Vec<i64> = chunk
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                assert_eq!(Some(&got), want.labels.as_ref(), "{name}: binary labels");
            }
            "FP32" => float_bits.extend(
                chunk
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap())),
            ),
            other => panic!("{name}: output datatype {other}"),
        }
    }
    let want_bits: Vec<u32> = want.numbers.iter().map(|&v| (v as f32).to_bits()).collect();
    assert_eq!(float_bits, want_bits, "{name}: binary outputs");
}

/// Served from a bare repository: the signature, task and class labels read from each file
/// equal the builder's record, and predictions equal onnxruntime's bit for bit.
#[tokio::test]
async fn a_bare_repository_serves_each_model_from_its_file() {
    let repo = repository_of(&SERVED);
    let dir = repo.path().to_str().unwrap();
    let server = Server::start_ready(&serve_args(dir, "none")).await;
    let (_, manifest) = server.get("/manifest").await;
    assert_eq!(manifest["default_model"], "lightgbm", "{manifest}");
    for name in SERVED {
        let fixture = fixture(name);
        let entry = manifest["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {manifest}"));
        assert_eq!(entry["signature"]["inputs"], fixture["inputs"], "{name}");
        assert_eq!(entry["signature"]["outputs"], fixture["outputs"], "{name}");
        assert_eq!(entry["task"], fixture["task"], "{name}");
        assert_eq!(entry["onnx"]["sha256"], fixture["sha256"], "{name}");
        let classes = graph_label_names(name);
        assert_eq!(entry["class_labels"], json!(classes), "{name}");
        let width = fixture["inputs"][0]["shape"][1].as_u64().unwrap();
        let feature_names: Vec<String> = (0..width).map(|i| format!("f{i}")).collect();
        assert_eq!(entry["feature_names"], json!(feature_names), "{name}");

        let (status, meta) = server.get(&format!("/v2/models/{name}")).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(
            meta["inputs"],
            json!([{"name": fixture["inputs"][0]["name"], "datatype": "FP32", "shape": [-1, width]}])
        );
        check_predict(&server, name, &feature_names, &classes).await;
        check_v2(&server, name).await;
    }
}

/// With no manifest file at the default path, the repository is served from its files.
#[tokio::test]
async fn no_manifest_file_at_the_default_path_means_a_bare_repository() {
    let repo = repository_of(&["xgboost"]);
    let cwd = tempfile::tempdir().unwrap();
    let dir = repo.path().to_str().unwrap();
    let mut command = server_command(&["--models-dir", dir, "--warmup-runs", "1"]);
    command.current_dir(cwd.path());
    let server = Server::spawn(command);
    server.wait_ready(Duration::from_secs(60)).await;
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    check_predict(&server, "xgboost", &names, &[]).await;

    // A manifest named explicitly must exist: a typo does not fall back to the files.
    let missing = cwd.path().join("manifest.json");
    let mut command =
        server_command(&["--models-dir", dir, "--manifest", missing.to_str().unwrap()]);
    command.current_dir(cwd.path());
    let (status, output) = run_to_exit(command, Duration::from_secs(30));
    assert!(!status.success());
    assert!(output.contains("error: cannot read"), "{output}");
}

fn ferrum(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ferrum-serve"))
        .current_dir(repo_root())
        .env("ORT_DYLIB_PATH", common::ort_dylib())
        .env("LOG_FORMAT", "text")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The method and output space `/explain` is asked for, as the fixture's shap reference was
/// computed: exact enumeration of probabilities (logistic regression), Tree SHAP of the forest's
/// averaged leaf probabilities, of LightGBM's log-odds and of XGBoost's value.
fn explain_as(name: &str) -> (&'static str, Option<&'static str>) {
    match name {
        "logreg-zipmap" => ("exact", Some("probability")),
        "scaled-forest" => ("tree", Some("probability")),
        "lightgbm" => ("tree", Some("margin")),
        "xgboost" => ("tree", None),
        "column-transformer" => ("exact", Some("probability")),
        "float64" | "int64" => ("exact", None),
        other => panic!("no explanation reference for {other}"),
    }
}

/// `/explain` on the reference rows over the recorded background equals shap's attributions,
/// base values and model values to 1e-5 relative, for each output the reference explains.
async fn check_explain(server: &Server, name: &str, feature_names: &[String], classes: &[String]) {
    let (_, rows) = reference(name);
    let rows = rows.into_iter().map(|r| json!(r)).collect();
    check_explain_rows(server, name, rows, feature_names, classes).await;
}

/// [`check_explain`] with the reference rows as `instances` are written for the model.
async fn check_explain_rows(
    server: &Server,
    name: &str,
    rows: Vec<Value>,
    feature_names: &[String],
    classes: &[String],
) {
    let reference =
        common::read_json(&fixtures().join(name).join("expected.json"))["explanation"].clone();
    let graph_labels = graph_label_names(name);
    let (method, output) = explain_as(name);
    let close = |got: &Value, want: &Value, what: &str| {
        let (got, want) = (got.as_f64().unwrap(), want.as_f64().unwrap());
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{name} {what}: {got} vs shap {want}"
        );
    };
    for (k, explained) in reference["outputs"].as_array().unwrap().iter().enumerate() {
        let mut body = json!({"instances": rows});
        if let Some(output) = output {
            body["output"] = json!(output);
        }
        if let Some(index) = graph_labels
            .iter()
            .position(|l| l == explained.as_str().unwrap())
        {
            body["class"] = json!(classes[index]);
        }
        let (status, answer) = server.post(&format!("/models/{name}/explain"), &body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        for (i, e) in answer["explanations"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            assert_eq!(e["method"], method, "{name}");
            close(&e["base_value"], &reference["base_values"][k], "base value");
            close(
                &e["value"],
                &reference["output_values"][i][k],
                &format!("row {i} value"),
            );
            for (j, feature) in feature_names.iter().enumerate() {
                close(
                    &e["attributions"][feature],
                    &reference["values"][i][j][k],
                    &format!("row {i} {feature}"),
                );
            }
        }
    }
}

/// `ferrum-serve models add` of fixture `name`'s model file into `models` and `manifest`, under
/// its own name, with `extra` flags.
fn models_add(
    name: &str,
    models: &Path,
    manifest: &Path,
    extra: &[&str],
) -> (bool, String, String) {
    let file = fixtures().join(name).join("1/model.onnx");
    let mut args = vec![
        "models",
        "add",
        file.to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    ferrum(&args)
}

/// Class names `models add` is given for a classifier: not the graph's, to show the mapping.
fn class_names(name: &str) -> Vec<String> {
    graph_label_names(name)
        .iter()
        .map(|l| format!("class_{l}"))
        .collect()
}

/// `models add` with the real feature names, class names, background and reference rows:
/// the manifest records it, `models check` passes (the training log reproduces), and the
/// server gives onnxruntime's answers under the given names.
#[tokio::test]
async fn models_add_then_serve_with_the_manifest() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    let manifest = root.path().join("manifest.json");
    let (models_s, manifest_s) = (models.to_str().unwrap(), manifest.to_str().unwrap());
    for name in SERVED {
        let dir = fixtures().join(name);
        let (background, reference_csv) = (dir.join("background.csv"), dir.join("reference.csv"));
        let features = reference_header(name).join(",");
        let classes = class_names(name).join(",");
        let mut args = vec![
            "--feature-names",
            &features,
            "--background",
            background.to_str().unwrap(),
            "--reference",
            reference_csv.to_str().unwrap(),
        ];
        if !classes.is_empty() {
            args.extend(["--class-labels", &classes]);
        }
        let (ok, stdout, stderr) = models_add(name, &models, &manifest, &args);
        assert!(ok, "{name}: {stderr}");
        assert!(
            stdout.starts_with(&format!("added {name} version 1 as ")),
            "{stdout}"
        );
    }
    let written = common::read_json(&manifest);
    for name in SERVED {
        let entry = written["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap();
        let fixture = fixture(name);
        assert_eq!(entry["onnx"]["sha256"], fixture["sha256"], "{name}");
        assert_eq!(entry["signature"]["inputs"], fixture["inputs"], "{name}");
        assert_eq!(entry["signature"]["outputs"], fixture["outputs"], "{name}");
        assert_eq!(entry["feature_names"], fixture["feature_names"], "{name}");
        assert_eq!(entry["path"], format!("{name}/1"));
        let log = common::read_json(&models.join(name).join("1/training_log.json"));
        assert_eq!(log["rows"].as_array().unwrap().len(), 32, "{name}");
    }

    let (ok, stdout, stderr) = ferrum(&[
        "models",
        "check",
        "--models-dir",
        models_s,
        "--manifest",
        manifest_s,
    ]);
    assert!(ok, "{stdout}{stderr}");
    for name in SERVED {
        assert!(
            stdout.contains(&format!("ok {name} 1: training log ")),
            "{stdout}"
        );
    }
    let (ok, stdout, _) = ferrum(&[
        "models",
        "list",
        "--models-dir",
        models_s,
        "--manifest",
        manifest_s,
    ]);
    assert!(ok);
    assert!(stdout.starts_with("4 model versions from "), "{stdout}");
    assert!(
        stdout.contains("logreg-zipmap 1 (default): classification, 4 features (sepal_length, sepal_width, petal_length, petal_width), classes class_0, class_1, class_2"),
        "{stdout}"
    );

    let server = Server::start_ready(&serve_args(models_s, manifest_s)).await;
    for name in SERVED {
        let feature_names: Vec<String> = reference(name).0;
        check_predict(&server, name, &feature_names, &class_names(name)).await;
        check_v2(&server, name).await;
        check_explain(&server, name, &feature_names, &class_names(name)).await;
    }

    // A recorded prediction that no longer reproduces stops the start, naming the row.
    let log_path = models.join("xgboost/1/training_log.json");
    let mut log = common::read_json(&log_path);
    log["rows"][3]["prediction"]["value"] = json!(1.5);
    std::fs::write(&log_path, serde_json::to_vec(&log).unwrap()).unwrap();
    let (ok, stdout, _) = ferrum(&[
        "models",
        "check",
        "--models-dir",
        models_s,
        "--manifest",
        manifest_s,
    ]);
    assert!(!ok);
    assert!(
        stdout.contains("FAILED xgboost 1: model 'xgboost' version '1': artifact ")
            && stdout.contains("row 3: the model predicts {\"value\":")
            && stdout.contains("the kind of CPU the log was recorded on"),
        "{stdout}"
    );
    assert!(stdout.contains("ok lightgbm 1"), "{stdout}");
}

/// Expected outputs in the reference rows are checked; a wrong one adds nothing.
#[test]
fn models_add_refuses_a_reference_the_model_does_not_reproduce() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    let manifest = root.path().join("manifest.json");
    let dir = fixtures().join("logreg-zipmap");
    let (header, rows) = reference("logreg-zipmap");
    let labels = expected("logreg-zipmap").labels.unwrap();
    let mut csv = format!("{},label\n", header.join(","));
    for (r, row) in rows.iter().enumerate().take(3) {
        let values: Vec<String> = row.iter().map(|v| f64::from(*v).to_string()).collect();
        // Row 2 (line 4) expects the wrong class.
        let label = if r == 2 { labels[r] + 1 } else { labels[r] };
        csv.push_str(&format!("{},{label}\n", values.join(",")));
    }
    let reference_csv = root.path().join("reference.csv");
    std::fs::write(&reference_csv, csv).unwrap();
    let (ok, _, stderr) = ferrum(&[
        "models",
        "add",
        dir.join("1/model.onnx").to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--name",
        "iris",
        "--feature-names",
        &header.join(","),
        "--reference",
        reference_csv.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "line 4: the model predicts label '{}', the file expects '{}'",
            labels[2],
            labels[2] + 1
        )),
        "{stderr}"
    );
    assert!(!manifest.exists());
    assert!(!models.join("iris").exists());
}

/// The reference rows of a tensors model as `/predict` takes them: keyed by input name, one
/// input per CSV column (a ColumnTransformer's), or the only input's row as an array; each
/// cell as written (strings for string inputs, JSON numbers otherwise).
fn tensor_rows(name: &str) -> Vec<Value> {
    let inputs = fixture(name)["inputs"].as_array().unwrap().clone();
    let mut reader = csv::Reader::from_path(fixtures().join(name).join("reference.csv")).unwrap();
    let cell = |input: &Value, text: &str| -> Value {
        match input["type"].as_str().unwrap() {
            t if t.contains("string") => json!(text),
            _ => serde_json::from_str(text).unwrap(),
        }
    };
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            let row: serde_json::Map<String, Value> = match inputs.as_slice() {
                [only] => {
                    let values = record.iter().map(|t| cell(only, t)).collect();
                    [(
                        only["name"].as_str().unwrap().to_owned(),
                        Value::Array(values),
                    )]
                    .into_iter()
                    .collect()
                }
                several => several
                    .iter()
                    .zip(record.iter())
                    .map(|(input, text)| {
                        (
                            input["name"].as_str().unwrap().to_owned(),
                            cell(input, text),
                        )
                    })
                    .collect(),
            };
            Value::Object(row)
        })
        .collect()
}

/// Tabular models served as named tensors (a ColumnTransformer with a string column, a float64
/// and an int64 matrix), added with their feature and class names and background: `/predict` gives
/// onnxruntime's answers bit for bit, and `/explain` takes the same rows keyed by input name and
/// gives shap's ExactExplainer attributions to 1e-5 relative, each column a feature and the
/// string column swapped whole.
#[tokio::test]
async fn tabular_tensors_models_are_explained_as_shap_does() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    let manifest = root.path().join("manifest.json");
    let (models_s, manifest_s) = (models.to_str().unwrap(), manifest.to_str().unwrap());
    let tabular = ["column-transformer", "float64", "int64"];
    for name in tabular {
        let header = reference_header(name).join(",");
        let background = fixtures().join(name).join("background.csv");
        let classes = class_names(name).join(",");
        let mut args = vec![
            "--feature-names",
            &header,
            "--background",
            background.to_str().unwrap(),
        ];
        if !classes.is_empty() {
            args.extend(["--class-labels", &classes]);
        }
        let (ok, stdout, stderr) = models_add(name, &models, &manifest, &args);
        assert!(ok, "{name}: {stdout} {stderr}");
        let written = common::read_json(&manifest);
        let entry = written["models"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(entry["task"], "tensors", "{name}: {entry}");
        assert_eq!(entry["artifacts"]["background"], "background.csv", "{name}");
    }
    let server = Server::start_ready(&serve_args(models_s, manifest_s)).await;
    let ready = "explanations ready, column by column";
    let logs = server.log_text_once(|logs| logs.contains(ready)).await;
    assert!(logs.contains(ready), "{logs}");
    for name in tabular {
        let feature_names = reference_header(name);
        // The names `models add` was given, in /predict and /explain alike.
        let classes = class_names(name);
        let instances = tensor_rows(name);
        let (status, body) = server
            .post(
                &format!("/models/{name}/predict"),
                &json!({ "instances": instances }),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(
            body["predictions"],
            json!(expected_predictions(name, &classes)),
            "{name}"
        );
        check_explain_rows(&server, name, instances, &feature_names, &classes).await;
    }
    // The served document describes the explain request: the /predict rows and the classes.
    let (_, document) = server.get("/openapi.json").await;
    let body = &document["paths"]["/models/column-transformer/explain"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"];
    assert_eq!(
        body["properties"]["class"]["enum"],
        json!(["class_0", "class_1"]),
        "{body}"
    );
    let row = &body["properties"]["instances"]["items"];
    assert_eq!(row["required"], json!(["city", "x1", "x2", "x3"]), "{row}");
    assert_eq!(row["properties"]["city"]["type"], "string", "{row}");
    // Inputs are checked as for /predict: a string ONNX Runtime cannot take is the client's.
    let mut nul = tensor_rows("column-transformer")[0].clone();
    nul["city"] = json!("a\u{0}b");
    let (status, body) = server
        .post(
            "/models/column-transformer/explain",
            &json!({ "instances": [nul] }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_tensor")),
        "{body}"
    );
    // The string column is one feature, and a class must be one of the graph's.
    let rows = tensor_rows("column-transformer");
    let (status, body) = server
        .post(
            "/models/column-transformer/explain",
            &json!({"instances": [rows[0]], "class": "7"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("unknown_class")),
        "{body}"
    );
}

/// Models outside the rows form load as named tensors, from a bare repository and through
/// `models add`, with why in the log; without a background `/explain` says what it lacks (a
/// background, or inputs that are columns), and `models add` refuses metadata flags that do
/// not fit them with the reason (their V2 answers are checked bit for bit
/// in tests/typed_models.rs).
#[tokio::test]
async fn other_models_are_served_as_named_tensors() {
    for (name, why) in TENSORS {
        let repo = repository_of(&[name]);
        let dir = repo.path().to_str().unwrap();
        let server = Server::start_ready(&serve_args(dir, "none")).await;
        assert!(
            server.log_text().contains(why),
            "{name}: {}",
            server.log_text()
        );
        let (status, metadata) = server.get(&format!("/v2/models/{name}")).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(metadata["parameters"]["task"], "tensors", "{name}");
        let inputs = fixture(name)["inputs"].as_array().unwrap().len();
        assert_eq!(
            metadata["inputs"].as_array().unwrap().len(),
            inputs,
            "{name}"
        );
        let row = tensor_rows(name).remove(0);
        let (status, body) = server
            .post(
                &format!("/explain?model={name}"),
                &json!({"instances": [row]}),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("explanation_unavailable")),
            "{name}: {body}"
        );
        let lacks = match name {
            "cnn" => "cannot be explained column by column: input 'pixels' has shape [?, 1, 8, 8]",
            _ => "has no background set (artifacts.background in the manifest)",
        };
        assert!(
            body["error"].as_str().unwrap().contains(lacks),
            "{name}: {body}"
        );

        let target = tempfile::tempdir().unwrap();
        let models = target.path().join("models");
        let manifest = target.path().join("manifest.json");
        let add = |extra: &[&str]| models_add(name, &models, &manifest, extra);
        let (ok, _, stderr) = add(&["--feature-names", "a"]);
        assert!(!ok, "{name}");
        assert!(
            stderr.contains("need the rows form") && stderr.contains(why),
            "{name}: {stderr}"
        );
        let (ok, _, stderr) = add(&[]);
        assert!(ok, "{name}: {stderr}");
        let written = common::read_json(&manifest);
        assert_eq!(written["models"][0]["task"], "tensors", "{name}: {written}");
        let (ok, stdout, stderr) = ferrum(&[
            "models",
            "check",
            "--models-dir",
            models.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
        assert!(ok, "{name}: {stdout} {stderr}");
    }
}

/// In `poll` mode a bare repository is rescanned from its files: a model copied in while the
/// server runs is loaded and served without a restart.
#[tokio::test]
async fn poll_mode_picks_up_a_model_file_added_to_a_bare_repository() {
    let repo = repository_of(&["xgboost"]);
    let dir = repo.path().to_str().unwrap();
    let mut args = serve_args(dir, "none");
    args.extend([
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "1",
    ]);
    let server = Server::start_ready(&args).await;
    let (status, _) = server.get("/v2/models/logreg-zipmap").await;
    assert_eq!(status, 404);
    // The version folder is complete before it appears (renamed in), as a deploy would do it.
    let staging = tempfile::tempdir_in(repo.path()).unwrap();
    std::fs::create_dir_all(staging.path().join("1")).unwrap();
    std::fs::copy(
        fixtures().join("logreg-zipmap/1/model.onnx"),
        staging.path().join("1/model.onnx"),
    )
    .unwrap();
    std::fs::rename(staging.path(), repo.path().join("logreg-zipmap")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.get("/v2/models/logreg-zipmap/ready").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not loaded; logs:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<String> = (0..4).map(|i| format!("f{i}")).collect();
    check_predict(
        &server,
        "logreg-zipmap",
        &names,
        &graph_label_names("logreg-zipmap"),
    )
    .await;
    check_predict(
        &server,
        "xgboost",
        &(0..10).map(|i| format!("f{i}")).collect::<Vec<_>>(),
        &[],
    )
    .await;
}

/// `ferrum-serve predict` on models served as named tensors, from a bare repository: JSON lines
/// keyed by input name, or CSV for one whose inputs are columns, give the predictions
/// onnxruntime Python gave for the same 32 rows in one run (the job's chunk), bit for bit:
/// the ColumnTransformer's label and probabilities, the float64 regressor's value. A CSV the
/// model cannot take, or CSV predictions of a model that is neither, are refused up front, and
/// so is a drift report (it needs the rows form's feature columns).
#[test]
fn the_offline_jobs_take_tensors_models_rows() {
    let repo = repository_of(&["column-transformer", "float64", "cnn"]);
    let dir = repo.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let predict = |name: &str, input: &Path, output: &Path| {
        ferrum(&[
            "predict",
            "--models-dir",
            dir,
            "--manifest",
            "none",
            "--model",
            name,
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
    };
    for name in ["column-transformer", "float64"] {
        let expected = expected(name);
        let jsonl = work.path().join(format!("{name}.jsonl"));
        let lines: Vec<String> = tensor_rows(name).iter().map(Value::to_string).collect();
        std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
        // A bare repository names a matrix's columns f0, f1, ... (the ColumnTransformer's by
        // input, as its CSV does).
        let csv_in = work.path().join(format!("{name}.csv"));
        let reference =
            std::fs::read_to_string(fixtures().join(name).join("reference.csv")).unwrap();
        let (header, body) = reference.split_once('\n').unwrap();
        let header = match name {
            "float64" => (0..header.split(',').count())
                .map(|i| format!("f{i}"))
                .collect::<Vec<_>>()
                .join(","),
            _ => header.to_owned(),
        };
        std::fs::write(&csv_in, format!("{header}\n{body}")).unwrap();
        let (jsonl_out, csv_out) = (
            work.path().join(format!("{name}-out.jsonl")),
            work.path().join(format!("{name}-out.csv")),
        );
        let (ok, stdout, stderr) = predict(name, &jsonl, &jsonl_out);
        assert!(ok, "{name}: {stdout} {stderr}");
        let (ok, stdout, stderr) = predict(name, &csv_in, &csv_out);
        assert!(ok, "{name}: {stdout} {stderr}");
        let from_jsonl: Vec<Value> = std::fs::read_to_string(&jsonl_out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["prediction"].clone())
            .collect();
        let mut csv = csv::Reader::from_path(&csv_out).unwrap();
        let header: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
        let from_csv: Vec<Vec<String>> = csv
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        let classes = graph_label_names(name);
        assert_eq!(from_jsonl, expected_predictions(name, &classes), "{name}");
        assert_eq!(from_csv.len(), 32, "{name}");
        match &expected.labels {
            Some(labels) => {
                let mut columns = vec!["label".to_string()];
                columns.extend(classes.iter().map(|c| format!("probability_{c}")));
                assert_eq!(header, columns, "{name}");
                for (r, row) in from_csv.iter().enumerate() {
                    assert_eq!(row[0], labels[r].to_string(), "{name} row {r}");
                    let got: Vec<f64> = row[1..].iter().map(|v| v.parse().unwrap()).collect();
                    let want = &expected.numbers[r * classes.len()..(r + 1) * classes.len()];
                    assert_eq!(got, want, "{name} row {r}");
                }
            }
            None => {
                assert_eq!(header, ["value"], "{name}");
                let got: Vec<f64> = from_csv.iter().map(|row| row[0].parse().unwrap()).collect();
                assert_eq!(got, expected.numbers, "{name}");
            }
        }
    }
    let cnn_csv = fixtures().join("cnn").join("reference.csv");
    let (ok, _, stderr) = predict("cnn", &cnn_csv, &work.path().join("cnn.jsonl"));
    assert!(!ok);
    assert!(
        stderr.contains("CSV rows need a model whose inputs are columns, and input 'pixels' has shape [?, 1, 8, 8]"),
        "{stderr}"
    );
    let (ok, _, stderr) = predict("cnn", &cnn_csv, &work.path().join("cnn.csv"));
    assert!(!ok);
    assert!(
        stderr.contains("write JSON lines (--output-format jsonl)"),
        "{stderr}"
    );
    // A bad row is refused with its line and the API's words, and so is what ONNX Runtime
    // would refuse (a NUL in a string).
    let bad = work.path().join("bad.jsonl");
    let with_city = |city: Value| {
        let mut rows = tensor_rows("column-transformer");
        rows[1]["city"] = city;
        let lines: Vec<String> = rows[..3].iter().map(Value::to_string).collect();
        std::fs::write(&bad, lines.join("\n")).unwrap();
        let (ok, _, stderr) = predict("column-transformer", &bad, &work.path().join("bad.out"));
        assert!(!ok);
        stderr
    };
    let stderr = with_city(json!(7));
    assert!(stderr.contains("line 2: city"), "{stderr}");
    let stderr = with_city(json!("a\u{0}b"));
    assert!(
        stderr.contains("line 2: input 'city': element 0 is a string holding a NUL character"),
        "{stderr}"
    );
    // Drift compares feature columns with a training baseline: the rows form's only.
    let (ok, _, stderr) = ferrum(&[
        "drift-report",
        "--models-dir",
        dir,
        "--manifest",
        "none",
        "--model",
        "column-transformer",
        "--input",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("is served as named tensors: drift reports need the rows form"),
        "{stderr}"
    );
}
