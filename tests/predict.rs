//! `/predict` against the real server: the training log reproduces, every way of addressing a
//! model works, and the response says which exact model answered.

mod common;

use common::{assert_json_close, read_json, repo_root, training_log, Server};
use serde_json::{json, Value};

const MODELS: [&str; 2] = ["breast-cancer", "diabetes"];

/// Every training-log row, sent by feature name one at a time, returns the logged prediction.
#[tokio::test]
async fn every_training_log_row_reproduces_by_feature_name() {
    let server = Server::start_ready(&[]).await;
    for model in MODELS {
        let rows = training_log(model);
        assert!(rows.len() >= 20, "{model}: the log has {} rows", rows.len());
        for (i, row) in rows.iter().enumerate() {
            let (status, body) = server
                .post(
                    &format!("/models/{model}/predict"),
                    &json!({"instances": [row["features"]]}),
                )
                .await;
            assert_eq!(status, 200, "{model} row {i}: {body}");
            assert_json_close(
                &body["predictions"][0],
                &row["prediction"],
                1e-6,
                &format!("{model} row {i}"),
            );
        }
    }
}

/// All rows of a log in one request, as arrays in manifest order, come back in request order.
#[tokio::test]
async fn many_rows_as_arrays_keep_request_order() {
    let server = Server::start_ready(&[]).await;
    let manifest = read_json(&repo_root().join("manifest.json"));
    for model in MODELS {
        let entry = manifest["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == model)
            .unwrap();
        let names: Vec<&str> = entry["feature_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let rows = training_log(model);
        let instances: Vec<Value> = rows
            .iter()
            .map(|r| Value::Array(names.iter().map(|n| r["features"][n].clone()).collect()))
            .collect();
        let (status, body) = server
            .post(
                &format!("/models/{model}/versions/1/predict"),
                &json!({"instances": instances}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"]["name"], model);
        assert_eq!(body["model"]["version"], "1");
        assert_eq!(body["model"]["sha256"], entry["onnx"]["sha256"]);
        let expected: Vec<Value> = rows.iter().map(|r| r["prediction"].clone()).collect();
        assert_json_close(&body["predictions"], &Value::Array(expected), 1e-6, model);
    }
}

/// `/predict` without a model name serves the manifest's default model.
#[tokio::test]
async fn default_route_serves_the_default_model() {
    let server = Server::start_ready(&[]).await;
    let manifest = read_json(&repo_root().join("manifest.json"));
    let default = manifest["default_model"].as_str().unwrap();
    let row = &training_log(default)[0];
    let (status, body) = server
        .post("/predict", &json!({"instances": [row["features"]]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"]["name"], default);
    assert_json_close(
        &body["predictions"][0],
        &row["prediction"],
        1e-6,
        "default model",
    );
}

/// Health and manifest say what serves: every model, its provider, and the build's commit.
#[tokio::test]
async fn health_and_manifest_describe_what_serves() {
    let server = Server::start_ready(&[]).await;
    let (status, live) = server.get("/health/live").await;
    assert_eq!((status, live["status"].as_str()), (200, Some("live")));
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (_, health) = server.get("/health").await;
    assert_eq!(health["status"], "ready");
    let served: Vec<(&str, &str)> = health["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["execution_provider"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(served, vec![("breast-cancer", "cpu"), ("diabetes", "cpu")]);
    let (status, manifest) = server.get("/manifest").await;
    assert_eq!(status, 200);
    assert_eq!(
        manifest["models"],
        read_json(&repo_root().join("manifest.json"))["models"]
    );
    let commit = manifest["build"]["git_commit"].as_str().unwrap();
    assert!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "the build's git commit: {manifest}"
    );
    // Only the image ships an SBOM (and sets SBOM_PATH): none is named here.
    assert_eq!(manifest["build"].get("sbom"), None, "{manifest}");
}

/// Each request gets one log line, and a client's `x-request-id` is honoured and echoed.
#[tokio::test]
async fn request_ids_are_honoured_and_logged() {
    let server = Server::start_ready(&[]).await;
    let response = common::client()
        .get(server.url("/health/live"))
        .header("x-request-id", "test-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "test-id-42");
    let generated = common::client()
        .get(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert!(!generated.headers()["x-request-id"].is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let line = server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["request_id"] == "test-id-42")
        .expect("a log line for the request");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/health/live");
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].as_f64().unwrap() >= 0.0);
}
