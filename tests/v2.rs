//! The Open Inference Protocol (V2) against the real server: metadata, JSON and binary tensor
//! inference reproducing the training log, output selection, and errors as 4xx JSON.

mod common;

use common::{client, read_json, repo_root, training_log, v2_binary_infer, Server};
use serde_json::{json, Value};

const MODELS: [&str; 2] = ["breast-cancer", "diabetes"];

fn manifest_entry(model: &str) -> Value {
    read_json(&repo_root().join("manifest.json"))["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .unwrap()
        .clone()
}

/// The training log's features as row-major f32 rows in manifest feature order.
fn log_matrix(model: &str) -> (Vec<Vec<f32>>, Vec<Value>) {
    let entry = manifest_entry(model);
    let names: Vec<&str> = entry["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let rows = training_log(model);
    let matrix = rows
        .iter()
        .map(|r| {
            names
                .iter()
                .map(|n| r["features"][n].as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    (
        matrix,
        rows.iter().map(|r| r["prediction"].clone()).collect(),
    )
}

/// Checks V2 outputs (label as class index + probabilities, or value) against logged predictions.
fn assert_outputs_match_log(model: &str, labels: Option<&[i64]>, numbers: &[f64], log: &[Value]) {
    let entry = manifest_entry(model);
    let classes: Vec<&str> = entry["class_labels"]
        .as_array()
        .map(|a| a.iter().map(|c| c.as_str().unwrap()).collect())
        .unwrap_or_default();
    for (i, expected) in log.iter().enumerate() {
        match labels {
            Some(labels) => {
                assert_eq!(
                    classes[labels[i] as usize], expected["label"],
                    "{model} row {i}: label"
                );
                for (c, class) in classes.iter().enumerate() {
                    let want = expected["probabilities"][class].as_f64().unwrap();
                    let got = numbers[i * classes.len() + c];
                    assert!(
                        (got - want).abs() <= 1e-6,
                        "{model} row {i} P({class}): {got} != {want}"
                    );
                }
            }
            None => {
                let want = expected["value"].as_f64().unwrap();
                assert!(
                    (numbers[i] - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{model} row {i}: {} != {want}",
                    numbers[i]
                );
            }
        }
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Server metadata names the binary extension; V2 health answers.
#[tokio::test]
async fn server_metadata_and_health() {
    let server = Server::start_ready(&[]).await;
    let (status, meta) = server.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "ferrum-serve");
    assert!(meta["version"].is_string());
    assert_eq!(
        meta["extensions"],
        json!(["binary_tensor_data", "model_repository"])
    );
    assert_eq!(server.get("/v2/health/live").await.0, 200);
    assert_eq!(server.get("/v2/health/ready").await.0, 200);
}

/// Model metadata: the input with -1 for the batch, outputs with datatypes, readiness.
#[tokio::test]
async fn model_metadata_and_readiness() {
    let server = Server::start_ready(&[]).await;
    for path in [
        "/v2/models/breast-cancer",
        "/v2/models/breast-cancer/versions/1",
    ] {
        let (status, meta) = server.get(path).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["name"], "breast-cancer");
        assert_eq!(meta["versions"], json!(["1"]));
        assert_eq!(
            meta["inputs"],
            json!([{"name": "input", "datatype": "FP32", "shape": [-1, 30]}])
        );
        assert_eq!(
            meta["outputs"],
            json!([
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
            ])
        );
        assert_eq!(
            meta["parameters"]["class_labels"],
            json!(["malignant", "benign"])
        );
        assert_eq!(
            meta["parameters"]["sha256"],
            manifest_entry("breast-cancer")["onnx"]["sha256"]
        );
    }
    let (_, meta) = server.get("/v2/models/diabetes").await;
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 10]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}])
    );
    let (status, ready) = server.get("/v2/models/diabetes/versions/1/ready").await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)));
    assert_eq!(server.get("/v2/models/diabetes/ready").await.0, 200);
    let (status, error) = server.get("/v2/models/nope/ready").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (status, error) = server.get("/v2/models/diabetes/versions/7").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("version_not_found"))
    );
}

/// JSON tensors, nested and flat, for the whole training log of both models.
#[tokio::test]
async fn json_infer_reproduces_the_training_log() {
    let server = Server::start_ready(&[]).await;
    for model in MODELS {
        let (matrix, log) = log_matrix(model);
        let n = matrix.len();
        let width = matrix[0].len();
        let flat: Vec<f32> = matrix.iter().flatten().copied().collect();
        for data in [json!(matrix), json!(flat)] {
            let body = json!({
                "id": "req-7",
                "inputs": [{"name": "input", "shape": [n, width], "datatype": "FP32", "data": data}],
                "parameters": {"custom": "ignored"}
            });
            let (status, response) = server
                .post(&format!("/v2/models/{model}/versions/1/infer"), &body)
                .await;
            assert_eq!(status, 200, "{response}");
            assert_eq!(response["model_name"], model);
            assert_eq!(response["model_version"], "1");
            assert_eq!(response["id"], "req-7");
            let outputs = response["outputs"].as_array().unwrap();
            if model == "breast-cancer" {
                assert_eq!(outputs[0]["name"], "label");
                assert_eq!(outputs[0]["datatype"], "INT64");
                assert_eq!(outputs[0]["shape"], json!([n]));
                assert_eq!(outputs[1]["shape"], json!([n, 2]));
                let labels: Vec<i64> = outputs[0]["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_i64().unwrap())
                    .collect();
                assert_outputs_match_log(model, Some(&labels), &floats(&outputs[1]["data"]), &log);
            } else {
                assert_eq!(outputs[0]["shape"], json!([n, 1]));
                assert_outputs_match_log(model, None, &floats(&outputs[0]["data"]), &log);
            }
        }
    }
}

/// Binary tensors in and out (Triton's extension), parsed from the raw HTTP body.
#[tokio::test]
async fn binary_infer_reproduces_the_training_log() {
    let server = Server::start_ready(&[]).await;
    for model in MODELS {
        let (matrix, log) = log_matrix(model);
        let (_, outputs) = v2_binary_infer(&server, model, "input", &matrix).await;
        let mut outputs = outputs.into_iter();
        let mut take = || outputs.next().expect("an output");
        if model == "breast-cancer" {
            let labels: Vec<i64> = take()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let probabilities: Vec<f64> = take()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect();
            assert_outputs_match_log(model, Some(&labels), &probabilities, &log);
        } else {
            let values: Vec<f64> = take()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect();
            assert_outputs_match_log(model, None, &values, &log);
        }
    }
}

/// `outputs` picks and orders outputs; per-output `binary_data` overrides the request default.
#[tokio::test]
async fn output_selection_and_mixed_encodings() {
    let server = Server::start_ready(&[]).await;
    let (matrix, log) = log_matrix("breast-cancer");
    let row = &matrix[0];
    let body = json!({
        "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}],
        "outputs": [{"name": "probabilities"}]
    });
    let (status, response) = server.post("/v2/models/breast-cancer/infer", &body).await;
    assert_eq!(status, 200, "{response}");
    let outputs = response["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], "probabilities");
    let p = floats(&outputs[0]["data"]);
    let want = log[0]["probabilities"]["malignant"].as_f64().unwrap();
    assert!((p[0] - want).abs() <= 1e-6);

    // probabilities as JSON, label binary: only the label's 8 bytes follow the header.
    let body = json!({
        "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": false}},
                    {"name": "label", "parameters": {"binary_data": true}}]
    });
    let response = client()
        .post(server.url("/v2/models/breast-cancer/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json_len: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), json_len + 8);
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["name"], "probabilities");
    assert!(head["outputs"][0]["data"].is_array());
    assert_eq!(head["outputs"][1]["parameters"]["binary_data_size"], 8);
    let label = i64::from_le_bytes(bytes[json_len..].try_into().unwrap());
    assert_eq!(["malignant", "benign"][label as usize], log[0]["label"]);
}

/// Every problem is a 4xx with both `error` and `code`, and the server keeps serving.
#[tokio::test]
async fn errors_are_4xx_json_with_error_and_code() {
    let server = Server::start_ready(&["--max-request-rows", "4"]).await;
    let good = |rows: usize| {
        json!({"inputs": [{"name": "input", "shape": [rows, 10], "datatype": "FP32",
                            "data": vec![0.01f32; rows * 10]}]})
    };
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "/v2/models/nope/infer",
            good(1),
            404,
            "model_not_found",
            "nope",
        ),
        (
            "/v2/models/diabetes/versions/9/infer",
            good(1),
            404,
            "version_not_found",
            "'9'",
        ),
        (
            "/v2/models/diabetes/infer",
            json!({"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [0]}]}),
            422,
            "invalid_tensor",
            "unknown input 'x'",
        ),
        (
            "/v2/models/diabetes/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 9], "datatype": "FP32", "data": [0]}]}),
            422,
            "invalid_tensor",
            "[rows >= 1, 10]",
        ),
        (
            "/v2/models/diabetes/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP64", "data": [0]}]}),
            422,
            "invalid_tensor",
            "FP32",
        ),
        (
            "/v2/models/diabetes/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32",
                               "data": [0, 0, 0, 0, "s", 0, 0, 0, 0, 0]}]}),
            422,
            "invalid_tensor",
            "data[4]: expected a number, got a string",
        ),
        (
            "/v2/models/diabetes/infer",
            good(5),
            422,
            "too_many_rows",
            "limit of 4",
        ),
        (
            "/v2/models/diabetes/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32",
                               "data": vec![0.0; 10]}], "outputs": [{"name": "label"}]}),
            422,
            "unknown_output",
            "the model's outputs are: variable",
        ),
    ];
    for (path, body, status, code, fragment) in cases {
        let (got, error) = server.post(path, &body).await;
        assert_eq!(got, status, "{path} {body}: {error}");
        assert_eq!(error["code"], code, "{body}: {error}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(fragment), "{body}: {message}");
    }
    // Binary framing errors: a header length past the body, and bytes no input claims.
    for (header_len, extra) in [("999999", 0usize), ("", 4)] {
        let header = good(1).to_string();
        let mut body = header.clone().into_bytes();
        body.extend(std::iter::repeat_n(0u8, extra));
        let value = if header_len.is_empty() {
            header.len().to_string()
        } else {
            header_len.to_string()
        };
        let response = client()
            .post(server.url("/v2/models/diabetes/infer"))
            .header("inference-header-content-length", value)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "invalid_binary_data", "{error}");
    }
    let (status, error) = server
        .post_raw(
            "/v2/models/diabetes/infer",
            "application/json",
            b"{".to_vec(),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_json"))
    );
    // Still serving.
    let (status, _) = server.post("/v2/models/diabetes/infer", &good(1)).await;
    assert_eq!(status, 200);
}
