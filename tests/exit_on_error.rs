//! `--exit-on-error false`, on the real binary over a copy of the bundled repository: a model
//! that cannot be served (a truncated graph, a file that does not match its sha256 pin, a bare
//! repository's unreadable file) is reported unavailable — log line, failure metric, repository
//! index, `/health` — and answered 503 `model_unavailable` with the reason on every route,
//! while the other model serves its training log's predictions; a rescan retries it; with every
//! model failed the server stays live but not ready. (The default, `true`, stops the start:
//! tests/startup.rs.)

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::{
    assert_json_close, client, eventually, index, read_json, repo_root, training_log, RepoCopy,
    Server,
};

const GOOD: &str = "breast-cancer";
const BAD: &str = "diabetes";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl RepoCopy {
    /// The server over this copy with `--exit-on-error false` and `extra` flags; waits until
    /// it listens only (it may never be ready).
    fn serve_lenient(&self, extra: &[&str]) -> Server {
        let models = self.models();
        let manifest = self.manifest_path();
        let mut args = vec![
            "--models-dir",
            models.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--exit-on-error",
            "false",
            "--warmup-runs",
            "1",
            "--sessions-per-model",
            "1",
        ];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// Replaces `model`'s version 1 file with its first half, its pin updated to match: a
    /// graph ONNX Runtime cannot load.
    fn truncate_model(&self, model: &str) {
        let file = self.models().join(model).join("1/model.onnx");
        let bytes = std::fs::read(&file).unwrap();
        let half = bytes[..bytes.len() / 2].to_vec();
        std::fs::write(&file, &half).unwrap();
        let mut manifest = self.manifest();
        for entry in manifest["models"].as_array_mut().unwrap() {
            if entry["name"] == model {
                entry["onnx"]["sha256"] = json!(sha256_hex(&half));
            }
        }
        self.write_manifest(&manifest);
    }
}

/// Every training-log row of `model` in one request gives the logged predictions.
async fn assert_serves_its_training_log(server: &Server, model: &str) {
    let rows = training_log(model);
    let instances: Vec<Value> = rows.iter().map(|r| r["features"].clone()).collect();
    let (status, body) = server
        .post(
            &format!("/models/{model}/predict"),
            &json!({ "instances": instances }),
        )
        .await;
    assert_eq!(status, 200, "{model}: {body}");
    let expected: Vec<Value> = rows.iter().map(|r| r["prediction"].clone()).collect();
    assert_json_close(&body["predictions"], &Value::Array(expected), 1e-6, model);
}

/// The first training-log row of `model` as values in the manifest's feature order (what a
/// bare repository's `f0..` and a V2 tensor take).
fn first_row_values(model: &str) -> Vec<Value> {
    let manifest = read_json(&repo_root().join("manifest.json"));
    let entry = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .unwrap()
        .clone();
    let features = &training_log(model)[0]["features"];
    entry["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| features[name.as_str().unwrap()].clone())
        .collect()
}

/// One training-log row of `model` as a V2 infer body.
fn v2_body(model: &str) -> Value {
    let data = first_row_values(model);
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, data.len()], "data": data}]})
}

/// `(status, code, error)` of a JSON answer.
fn error_of(answer: (u16, Value)) -> (u16, String, String) {
    let (status, body) = answer;
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_string();
    (status, text("code"), text("error"))
}

/// The value of the sample `series` on `/metrics` (0 when absent).
async fn sample(server: &Server, series: &str) -> f64 {
    server
        .scrape()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_broken_model_is_reported_unavailable_while_the_other_serves() {
    let repo = RepoCopy::new();
    repo.truncate_model(BAD);
    let server = repo.serve_lenient(&[]);
    server.wait_ready(Duration::from_secs(60)).await;

    // The good model serves, on its own path and as the default model.
    assert_serves_its_training_log(&server, GOOD).await;
    let row = training_log(GOOD)[0].clone();
    let (status, body) = server
        .post("/predict", &json!({"instances": [row["features"]]}))
        .await;
    assert_eq!((status, &body["predictions"][0]), (200, &row["prediction"]));

    // The broken one: 503 model_unavailable naming the reason, on every route, never 404.
    let reason = "ONNX Runtime cannot load the model";
    let row = &training_log(BAD)[0]["features"];
    for (path, answer) in [
        (
            "/models/diabetes/predict",
            server
                .post("/models/diabetes/predict", &json!({"instances": [row]}))
                .await,
        ),
        (
            "/models/diabetes/versions/1/predict",
            server
                .post(
                    "/models/diabetes/versions/1/predict",
                    &json!({"instances": [row]}),
                )
                .await,
        ),
        (
            "/v2/models/diabetes/infer",
            server
                .post("/v2/models/diabetes/infer", &v2_body(BAD))
                .await,
        ),
        (
            "/v2/models/diabetes/ready",
            server.get("/v2/models/diabetes/ready").await,
        ),
        (
            "/v2/models/diabetes",
            server.get("/v2/models/diabetes").await,
        ),
    ] {
        let (status, code, error) = error_of(answer);
        assert_eq!(
            (status, code.as_str()),
            (503, "model_unavailable"),
            "{path}: {error}"
        );
        assert!(
            error.starts_with(
                "model 'diabetes' version 1 is unavailable (UNAVAILABLE): load failed: "
            ) && error.contains(reason),
            "{path}: {error}"
        );
    }
    // A model the repository does not list is still a 404.
    let (status, code, _) = error_of(server.get("/v2/models/nope/ready").await);
    assert_eq!((status, code.as_str()), (404, "model_not_found"));

    // Reported: the index, /health, the failure counter and a log line.
    let states = index(&server, None).await;
    let bad = &states[&(BAD.to_string(), "1".to_string())];
    assert_eq!(bad["state"], "UNAVAILABLE");
    let index_reason = bad["reason"].as_str().unwrap();
    assert!(
        index_reason.starts_with("load failed: ") && index_reason.contains(reason),
        "{index_reason}"
    );
    assert_eq!(
        states[&(GOOD.to_string(), "1".to_string())]["state"],
        "READY"
    );
    let (status, health) = server.get("/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ready")));
    let served: Vec<&str> = health["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(served, [GOOD]);
    assert!(
        health["repository"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == BAD
                && e["state"] == "UNAVAILABLE"
                && e["reason"] == bad["reason"]),
        "{health}"
    );
    assert_eq!(
        sample(
            &server,
            r#"ferrum_model_load_failures_total{model="diabetes",reason="load_failed",version="1"}"#
        )
        .await,
        1.0
    );
    let logged = server.logs.lock().unwrap().iter().any(|line| {
        let event: Value = serde_json::from_str(line).unwrap_or_default();
        event["message"] == "load failed; what was serving still serves"
            && event["model"] == BAD
            && event["version"] == "1"
            && event["reason"].as_str().is_some_and(|r| r.contains(reason))
    });
    assert!(
        logged,
        "no load-failure log line; logs:\n{}",
        server.log_text()
    );
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
}

#[tokio::test]
async fn a_sha256_mismatch_at_start_is_retried_by_a_rescan_once_the_file_is_fixed() {
    let repo = RepoCopy::new();
    let file = repo.models().join(BAD).join("1/model.onnx");
    let original = std::fs::read(&file).unwrap();
    let mut corrupted = original.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0xff;
    std::fs::write(&file, &corrupted).unwrap();
    let server = repo.serve_lenient(&[
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "1",
    ]);
    server.wait_ready(Duration::from_secs(60)).await;
    let (status, code, error) = error_of(
        server
            .post(
                "/models/diabetes/predict",
                &json!({"instances": [training_log(BAD)[0]["features"]]}),
            )
            .await,
    );
    assert_eq!(
        (status, code.as_str()),
        (503, "model_unavailable"),
        "{error}"
    );
    // At start the load says so; a poll in between refuses it on its pin: both name the hash.
    assert!(error.contains(&sha256_hex(&corrupted)), "{error}");
    assert_serves_its_training_log(&server, GOOD).await;

    // The file restored: a later poll loads it, and it serves what it was trained to.
    std::fs::write(&file, &original).unwrap();
    eventually(&server, "diabetes 1 loaded by a rescan", || async {
        index(&server, None).await[&(BAD.to_string(), "1".to_string())]["state"] == "READY"
    })
    .await;
    assert_serves_its_training_log(&server, BAD).await;
}

#[tokio::test]
async fn a_bare_repository_serves_the_files_it_can() {
    let repo = RepoCopy::new();
    std::fs::write(
        repo.models().join(BAD).join("1/model.onnx"),
        b"this is not an ONNX model",
    )
    .unwrap();
    let models = repo.models();
    let server = Server::start(&[
        "--models-dir",
        models.to_str().unwrap(),
        "--manifest",
        "none",
        "--exit-on-error",
        "false",
        "--warmup-runs",
        "1",
    ]);
    server.wait_ready(Duration::from_secs(60)).await;
    let (status, body) = server
        .post(
            &format!("/models/{GOOD}/predict"),
            &json!({"instances": [first_row_values(GOOD)]}),
        )
        .await;
    // Without a manifest the classes are the graph's own labels: 0 is malignant.
    let logged = &training_log(GOOD)[0]["prediction"];
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["predictions"][0]["probabilities"]["0"],
            &body["predictions"][0]["probabilities"]["1"]
        ),
        (
            &logged["probabilities"]["malignant"],
            &logged["probabilities"]["benign"]
        )
    );
    let (status, code, error) = error_of(server.get("/v2/models/diabetes/ready").await);
    assert_eq!(
        (status, code.as_str()),
        (503, "model_unavailable"),
        "{error}"
    );
    assert!(
        error.contains("ONNX Runtime cannot load the model"),
        "{error}"
    );
    assert_eq!(
        sample(
            &server,
            r#"ferrum_model_load_failures_total{model="diabetes",reason="refused",version="1"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn with_every_model_failed_the_server_is_live_but_not_ready() {
    let repo = RepoCopy::new();
    repo.truncate_model(BAD);
    repo.truncate_model(GOOD);
    let server = repo.serve_lenient(&[]);
    eventually(&server, "both failures in the index", || async {
        let answer = client()
            .post(server.url("/v2/repository/index"))
            .body("{}")
            .send()
            .await
            .unwrap();
        if answer.status() != 200 {
            return false;
        }
        let states: Vec<Value> = answer.json().await.unwrap();
        states.len() == 2 && states.iter().all(|s| s["state"] == "UNAVAILABLE")
    })
    .await;
    let (status, live) = server.get("/health/live").await;
    assert_eq!((status, live["status"].as_str()), (200, Some("live")));
    for path in ["/health/ready", "/v2/health/ready"] {
        let (status, code, error) = error_of(server.get(path).await);
        assert_eq!((status, code.as_str()), (503, "not_ready"), "{path}");
        assert!(error.starts_with("no model serves"), "{path}: {error}");
    }
    let (_, health) = server.get("/health").await;
    assert_eq!(health["status"], "not_ready");
    let (status, code, _) = error_of(
        server
            .post(
                "/predict",
                &json!({"instances": [training_log(GOOD)[0]["features"]]}),
            )
            .await,
    );
    assert_eq!((status, code.as_str()), (503, "model_unavailable"));
}
