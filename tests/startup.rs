//! Start-up: a server that is not serving the manifest's models exactly must not start, and
//! one that is still warming up must say so on its readiness probe.

mod common;

use std::time::Duration;

use common::{copy_dir, run_to_exit, server_command, training_log, RepoCopy, Server};
use serde_json::{json, Value};

impl RepoCopy {
    fn args(&self) -> Vec<String> {
        vec![
            "--models-dir".into(),
            self.path("models").display().to_string(),
            "--manifest".into(),
            self.path("manifest.json").display().to_string(),
        ]
    }

    /// Runs the server on this copy; it must exit non-zero. Returns its output.
    fn start_and_fail(&self) -> String {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, output) = run_to_exit(server_command(&args), Duration::from_secs(30));
        assert!(
            !status.success(),
            "the server should refuse to start; output:\n{output}"
        );
        output
    }
}

fn model_index(manifest: &Value, name: &str) -> usize {
    manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| m["name"] == name)
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_corrupted_model_file_is_refused_by_its_sha256() {
    let repo = RepoCopy::new();
    let file = repo.path("models/diabetes/1/model.onnx");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let output = repo.start_and_fail();
    assert!(
        output.contains("error: model 'diabetes' version '1'"),
        "{output}"
    );
    assert!(
        output.contains("has sha256") && output.contains("but the manifest says"),
        "{output}"
    );
}

#[test]
fn a_garbage_model_whose_hash_was_updated_is_refused_by_onnx_runtime() {
    let repo = RepoCopy::new();
    let garbage = b"this is not an ONNX model".to_vec();
    std::fs::write(repo.path("models/diabetes/1/model.onnx"), &garbage).unwrap();
    let mut manifest = repo.manifest();
    let i = model_index(&manifest, "diabetes");
    manifest["models"][i]["onnx"]["sha256"] = json!(sha256_hex(&garbage));
    repo.write_manifest(&manifest);
    let output = repo.start_and_fail();
    assert!(
        output.contains("ONNX Runtime cannot load the model"),
        "{output}"
    );
}

#[test]
fn a_manifest_that_disagrees_with_the_model_is_refused() {
    let repo = RepoCopy::new();
    let mut manifest = repo.manifest();
    let i = model_index(&manifest, "breast-cancer");
    manifest["models"][i]["feature_names"]
        .as_array_mut()
        .unwrap()
        .pop();
    repo.write_manifest(&manifest);
    let output = repo.start_and_fail();
    assert!(
        output.contains("the ONNX input takes 30 features, the manifest lists 29"),
        "{output}"
    );

    let mut manifest = repo.manifest();
    manifest["models"][i]["feature_names"]
        .as_array_mut()
        .unwrap()
        .push(json!("worst_fractal_dimension"));
    manifest["models"][i]["onnx"]["outputs"]["probabilities"] = json!("scores");
    repo.write_manifest(&manifest);
    let output = repo.start_and_fail();
    assert!(
        output.contains("output 'scores' (probabilities) is not in the ONNX model"),
        "{output}"
    );
}

#[test]
fn missing_files_and_a_taken_port_are_one_line_errors() {
    let repo = RepoCopy::new();
    std::fs::remove_file(repo.path("models/diabetes/1/model.onnx")).unwrap();
    let output = repo.start_and_fail();
    assert!(
        output.contains("error: cannot read") && output.contains("model.onnx"),
        "{output}"
    );

    let mut command = server_command(&[]);
    command.env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so");
    let (status, output) = run_to_exit(command, Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        output.contains("error: ONNX Runtime library not found at /nonexistent"),
        "{output}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, output) = run_to_exit(server_command(&["--port", &port]), Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        output.contains(&format!("error: cannot listen on 127.0.0.1:{port}")),
        "{output}"
    );
}

/// Readiness is 503 (with liveness 200 and predictions refused) until warm-up completes.
#[tokio::test]
async fn not_ready_until_warm_up_completes() {
    // Enough warm-up runs to take a few seconds, so the first probes land during it.
    let server = Server::start(&["--warmup-runs", "150000"]);
    let (status, body) = server.get("/health/ready").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("not_ready")),
        "{body}"
    );
    let (status, _) = server.get("/health/live").await;
    assert_eq!(status, 200);
    let (_, health) = server.get("/health").await;
    assert_eq!(health["status"], "loading");
    let row = &training_log("diabetes")[0];
    let (status, body) = server
        .post(
            "/models/diabetes/predict",
            &json!({"instances": [row["features"]]}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (503, Some("not_ready")));

    server.wait_ready(Duration::from_secs(120)).await;
    let (status, body) = server
        .post(
            "/models/diabetes/predict",
            &json!({"instances": [row["features"]]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["predictions"][0], row["prediction"]);
}

/// Every version is served; the highest is the default; an exact version can be addressed.
#[tokio::test]
async fn every_version_is_served_and_the_highest_is_the_default() {
    let repo = RepoCopy::new();
    copy_dir(
        &repo.path("models/breast-cancer/1"),
        &repo.path("models/breast-cancer/2"),
    );
    let mut manifest = repo.manifest();
    let i = model_index(&manifest, "breast-cancer");
    let mut v2 = manifest["models"][i].clone();
    v2["version"] = json!("2");
    v2["path"] = json!("breast-cancer/2");
    manifest["models"].as_array_mut().unwrap().push(v2);
    repo.write_manifest(&manifest);

    let args = repo.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_ready(&args).await;
    let row = &training_log("breast-cancer")[3];
    let body = json!({"instances": [row["features"]]});
    for (path, version) in [
        ("/models/breast-cancer/predict", "2"),
        ("/predict", "2"),
        ("/models/breast-cancer/versions/1/predict", "1"),
        ("/models/breast-cancer/versions/2/predict", "2"),
    ] {
        let (status, got) = server.post(path, &body).await;
        assert_eq!(status, 200, "{path}: {got}");
        assert_eq!(got["model"]["version"], version, "{path}");
        assert_eq!(got["predictions"][0], row["prediction"], "{path}");
    }
    let (_, health) = server.get("/health").await;
    let versions: Vec<(String, bool)> = health["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "breast-cancer")
        .map(|m| {
            (
                m["version"].as_str().unwrap().to_string(),
                m["default"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![("1".to_string(), false), ("2".to_string(), true)]
    );
}

/// SIGTERM: readiness fails, the process exits 0.
#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let mut server = Server::start_ready(&[]).await;
    server.signal(15);
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(20));
        (status, server.log_text())
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit {:?}; logs:\n{}",
        status.0,
        status.1
    );
    assert!(
        status.1.contains("shutdown signal received"),
        "{}",
        status.1
    );
}
