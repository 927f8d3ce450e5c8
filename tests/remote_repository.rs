//! `--models-dir s3://...` against a real S3-compatible server (moto's standalone server from
//! the hash-locked dev venv, on a loopback port): the bundled models served from a bucket give
//! the training log's predictions, a tampered object is refused on its sha256 before any
//! session is built, and a restart reuses the cache without downloading again. In poll mode
//! each rescan re-syncs: a version uploaded later is served, a tampered one refused with its
//! reason while the others keep serving (and not downloaded again while it is unchanged). A
//! plain HTTP repository (the `https://` code path,
//! over loopback HTTP) is served the same way.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::s3::{repository_files, Helper, BUCKET, MODELS, PREFIX, S3};
use common::{
    assert_json_close, client, eventually, index, repo_root, run_to_exit, server_command,
    training_log, Server,
};
use serde_json::{json, Value};

fn server_for(s3: &S3, cache: &Path) -> Command {
    let uri = format!("s3://{BUCKET}/{PREFIX}");
    let mut command = server_command(&[
        "--models-dir",
        &uri,
        "--model-cache-dir",
        cache.to_str().unwrap(),
        "--warmup-runs",
        "1",
    ]);
    command.envs(s3.env());
    command
}

/// Every training-log row of every model, in one request per model, gives the logged
/// prediction.
async fn assert_training_logs_reproduce(server: &Server) {
    for model in MODELS {
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
}

/// A counter's value on `/metrics`.
async fn counter(server: &Server, name: &str) -> f64 {
    let text = server.scrape().await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not on /metrics"))
        .parse()
        .unwrap()
}

/// The "model repository synced" log event.
async fn sync_event(server: &Server) -> Value {
    let synced = |line: &str| {
        serde_json::from_str::<Value>(line)
            .is_ok_and(|event| event["message"] == "model repository synced")
    };
    let logs = server.log_text_once(|logs| logs.lines().any(synced)).await;
    let line = logs
        .lines()
        .find(|line| synced(line))
        .unwrap_or_else(|| panic!("no sync log line; logs:\n{logs}"));
    serde_json::from_str(line).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn models_served_from_s3_give_the_training_logs_predictions() {
    let s3 = S3::start().await;
    s3.upload_repository(&[]).await;
    // A version folder the manifest does not list: mirrored only once the manifest names it.
    s3.put(
        &format!("/{BUCKET}/{PREFIX}/diabetes/2/model.onnx"),
        b"not listed".to_vec(),
    )
    .await;
    let cache = tempfile::tempdir().unwrap();
    let server = Server::spawn(server_for(&s3, cache.path()));
    server.wait_ready(Duration::from_secs(60)).await;
    assert_training_logs_reproduce(&server).await;

    let files = repository_files().len() - 1; // the manifest is fetched, not counted
    assert_eq!(
        counter(&server, "ferrum_model_store_downloads_total").await,
        files as f64
    );
    assert_eq!(
        counter(&server, "ferrum_model_store_cache_hits_total").await,
        0.0
    );
    let model_bytes: usize = repository_files().iter().skip(1).map(|f| f.1.len()).sum();
    assert_eq!(
        counter(&server, "ferrum_model_store_downloaded_bytes_total").await,
        model_bytes as f64
    );
    let event = sync_event(&server).await;
    assert_eq!(event["repository"], format!("s3://{BUCKET}/{PREFIX}"));
    assert_eq!(event["downloads"], files);
    assert_eq!(event["unlisted_versions"], r#"["diabetes/2"]"#);
    // The mirror is laid out by scheme, bucket and prefix, and holds what the bucket holds.
    let local = cache.path().join("s3").join(BUCKET).join(PREFIX);
    assert_eq!(
        std::fs::read(local.join("diabetes/1/model.onnx")).unwrap(),
        std::fs::read(repo_root().join("models/diabetes/1/model.onnx")).unwrap()
    );
    assert!(!local.join("diabetes/2").exists());
    // /manifest is the manifest from the bucket.
    let (status, body) = server.get("/manifest").await;
    assert_eq!(status, 200);
    assert_eq!(body["default_model"], "breast-cancer");
}

#[tokio::test]
async fn a_restart_reuses_the_cache_without_downloading() {
    let s3 = S3::start().await;
    s3.upload_repository(&[]).await;
    let cache = tempfile::tempdir().unwrap();
    let files = (repository_files().len() - 1) as f64;
    {
        let server = Server::spawn(server_for(&s3, cache.path()));
        server.wait_ready(Duration::from_secs(60)).await;
        assert_eq!(
            counter(&server, "ferrum_model_store_downloads_total").await,
            files
        );
    }
    let server = Server::spawn(server_for(&s3, cache.path()));
    server.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(
        counter(&server, "ferrum_model_store_downloads_total").await,
        0.0
    );
    assert_eq!(
        counter(&server, "ferrum_model_store_cache_hits_total").await,
        files
    );
    let event = sync_event(&server).await;
    assert_eq!(
        (event["downloads"].clone(), event["cache_hits"].clone()),
        (json!(0), json!(files as u64))
    );
    let reused = "model file reused from the cache";
    assert!(server
        .log_text_once(|logs| logs.contains(reused))
        .await
        .contains(reused));
    assert_training_logs_reproduce(&server).await;
}

#[tokio::test]
async fn a_tampered_object_is_refused_on_its_sha256() {
    let s3 = S3::start().await;
    let mut tampered = std::fs::read(repo_root().join("models/diabetes/1/model.onnx")).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    s3.upload_repository(&[("diabetes/1/model.onnx", &tampered)])
        .await;
    let manifest = common::read_json(&repo_root().join("manifest.json"));
    let expected = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "diabetes")
        .unwrap()["onnx"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let cache = tempfile::tempdir().unwrap();
    let (status, output) = run_to_exit(server_for(&s3, cache.path()), Duration::from_secs(60));
    assert!(
        !status.success(),
        "the server should refuse; output:\n{output}"
    );
    let line = format!(
        "error: model 'diabetes' version '1': s3://{BUCKET}/{PREFIX}/diabetes/1/model.onnx has sha256 {}, but the manifest says {expected}",
        sha256_hex(&tampered)
    );
    assert!(
        output.lines().any(|l| l == line),
        "{line}\nnot in:\n{output}"
    );
    // Refused before any session: no model was loaded, and nothing of the bad object is left.
    assert!(!output.contains("model loaded and warmed up"), "{output}");
    let local = cache
        .path()
        .join("s3")
        .join(BUCKET)
        .join(PREFIX)
        .join("diabetes/1");
    let left: Vec<_> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("model.onnx"))
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[tokio::test]
async fn with_exit_on_error_false_a_tampered_object_leaves_the_other_model_serving() {
    let s3 = S3::start().await;
    let mut tampered = std::fs::read(repo_root().join("models/diabetes/1/model.onnx")).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    s3.upload_repository(&[("diabetes/1/model.onnx", &tampered)])
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut command = server_for(&s3, cache.path());
    command.args(["--exit-on-error", "false"]);
    let server = Server::spawn(command);
    server.wait_ready(Duration::from_secs(60)).await;
    let rows = training_log("breast-cancer");
    let (status, body) = server
        .post(
            "/models/breast-cancer/predict",
            &json!({"instances": [rows[0]["features"]]}),
        )
        .await;
    assert_eq!(
        (status, &body["predictions"][0]),
        (200, &rows[0]["prediction"])
    );
    let (status, _, body) = diabetes_predict(&server, "/models/diabetes/predict").await;
    let error = body["error"].as_str().unwrap_or_default();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("model_unavailable")),
        "{body}"
    );
    assert!(
        error.contains(&format!(
            "s3://{BUCKET}/{PREFIX}/diabetes/1/model.onnx has sha256 {}",
            sha256_hex(&tampered)
        )),
        "{error}"
    );
    let state = &index(&server, None).await[&("diabetes".to_string(), "1".to_string())];
    assert_eq!(state["state"], "UNAVAILABLE");
    assert!(
        state["reason"]
            .as_str()
            .unwrap()
            .contains("but the manifest says"),
        "{state}"
    );
}

/// Uploads `diabetes/<version>/` as a copy of version 1's objects (its model file replaced by
/// `model`, if given), then the manifest with that version's entry added (a copy of version
/// 1's, the model's sha256 as version 1's): what a training pipeline publishing a version does.
fn publish_diabetes_version(s3: &S3, manifest: &mut Value, version: &str, model: Option<&[u8]>) {
    for (relative, bytes) in repository_files() {
        let Some(file) = relative.strip_prefix("diabetes/1/") else {
            continue;
        };
        let bytes = match model {
            Some(model) if file == "model.onnx" => model.to_vec(),
            _ => bytes,
        };
        s3.put_signed(&format!("diabetes/{version}/{file}"), &bytes);
    }
    let models = manifest["models"].as_array_mut().unwrap();
    let mut entry = models
        .iter()
        .find(|m| m["name"] == "diabetes" && m["version"] == "1")
        .unwrap()
        .clone();
    entry["version"] = json!(version);
    entry["path"] = json!(format!("diabetes/{version}"));
    models.push(entry);
    s3.put_signed(
        "manifest.json",
        &serde_json::to_vec_pretty(manifest).unwrap(),
    );
}

/// A diabetes prediction from `path` on the first training-log row: status, the answering
/// version (`x-ferrum-version`) and the body.
async fn diabetes_predict(server: &Server, path: &str) -> (u16, Option<String>, Value) {
    let row = &training_log("diabetes")[0]["features"];
    let response = client()
        .post(server.url(path))
        .json(&json!({ "instances": [row] }))
        .send()
        .await
        .unwrap();
    let version = response
        .headers()
        .get("x-ferrum-version")
        .map(|v| v.to_str().unwrap().to_string());
    (
        response.status().as_u16(),
        version,
        response.json().await.unwrap(),
    )
}

#[tokio::test]
async fn poll_mode_resyncs_the_bucket_serving_new_versions_and_refusing_tampered_ones() {
    let s3 = S3::start().await;
    s3.upload_repository(&[]).await;
    let cache = tempfile::tempdir().unwrap();
    let mut command = server_for(&s3, cache.path());
    command.args([
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "1",
    ]);
    let server = Server::spawn(command);
    server.wait_ready(Duration::from_secs(60)).await;
    let logged = &training_log("diabetes")[0]["prediction"];
    let mut manifest = common::read_json(&repo_root().join("manifest.json"));

    // Version 2 published to the bucket: mirrored and served by a poll.
    publish_diabetes_version(&s3, &mut manifest, "2", None);
    eventually(&server, "diabetes 2 served from the bucket", || async {
        diabetes_predict(&server, "/models/diabetes/versions/2/predict")
            .await
            .0
            == 200
    })
    .await;
    let (status, version, body) =
        diabetes_predict(&server, "/models/diabetes/versions/2/predict").await;
    assert_eq!(
        (status, version.as_deref(), &body["predictions"][0]),
        (200, Some("2"), logged)
    );
    let local = cache.path().join("s3").join(BUCKET).join(PREFIX);
    assert_eq!(
        std::fs::read(local.join("diabetes/2/model.onnx")).unwrap(),
        std::fs::read(repo_root().join("models/diabetes/1/model.onnx")).unwrap()
    );

    // Version 3 published with a tampered model object: refused on its sha256, reported,
    // and versions 1 and 2 keep serving.
    let mut tampered = std::fs::read(repo_root().join("models/diabetes/1/model.onnx")).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    publish_diabetes_version(&s3, &mut manifest, "3", Some(&tampered));
    let expected = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "diabetes")
        .unwrap()["onnx"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let reason = format!(
        "model 'diabetes' version '3': s3://{BUCKET}/{PREFIX}/diabetes/3/model.onnx has sha256 {}, but the manifest says {expected}",
        sha256_hex(&tampered)
    );
    eventually(&server, "diabetes 3 refused", || async {
        index(&server, None)
            .await
            .get(&("diabetes".to_string(), "3".to_string()))
            .is_some_and(|state| state["state"] == "UNAVAILABLE" && state["reason"] == reason)
    })
    .await;
    let (status, _, body) = diabetes_predict(&server, "/models/diabetes/versions/3/predict").await;
    assert_eq!(
        (status, body["code"].as_str(), body["error"].as_str()),
        (
            503,
            Some("model_unavailable"),
            Some(
                format!("model 'diabetes' version 3 is unavailable (UNAVAILABLE): {reason}")
                    .as_str()
            )
        )
    );
    let refusals = server
        .scrape()
        .await
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                r#"ferrum_model_load_failures_total{model="diabetes",reason="refused",version="3"} "#,
            )
            .map(|v| v.parse::<f64>().unwrap())
        })
        .unwrap_or(0.0);
    assert!(refusals >= 1.0, "refusals counted: {refusals}");
    for (path, answering) in [
        ("/models/diabetes/versions/1/predict", "1"),
        ("/models/diabetes/versions/2/predict", "2"),
        ("/models/diabetes/predict", "2"),
    ] {
        let (status, version, body) = diabetes_predict(&server, path).await;
        assert_eq!(
            (status, version.as_deref(), &body["predictions"][0]),
            (200, Some(answering), logged),
            "{path}"
        );
    }
    // Nothing of the refused object reached the cache.
    assert!(!local.join("diabetes/3/model.onnx").exists());
    // Nor is it fetched again: later polls refuse the same object without downloading it.
    let object = format!("s3://{BUCKET}/{PREFIX}/diabetes/3/model.onnx");
    let logged = |message: &'static str| {
        let object = object.clone();
        server
            .log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| {
                event["object"] == object.as_str()
                    && event["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message))
            })
            .count()
    };
    eventually(&server, "two polls refusing without a download", || async {
        logged("model file refused again without a download") >= 2
    })
    .await;
    assert_eq!(logged("model file downloaded and refused"), 1);
    assert!(index(&server, None)
        .await
        .get(&("diabetes".to_string(), "3".to_string()))
        .is_some_and(|state| state["reason"] == reason));
}

#[tokio::test]
async fn a_plain_http_repository_is_served_from_the_manifests_file_names() {
    // The https:// code path (object_store's HTTP client: GET and HEAD, no listing), over
    // loopback HTTP: a static file server holding the repository.
    let site = tempfile::tempdir().unwrap();
    for (relative, bytes) in repository_files() {
        let path = site.path().join("repo").join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let mut command = Command::new("python3");
    command
        .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .current_dir(site.path());
    let http = Helper::spawn(command, "port ");
    let cache = tempfile::tempdir().unwrap();
    let uri = format!("{}/repo", http.base());
    let server = Server::start(&[
        "--models-dir",
        &uri,
        "--model-cache-dir",
        cache.path().to_str().unwrap(),
        "--warmup-runs",
        "1",
    ]);
    server.wait_ready(Duration::from_secs(60)).await;
    assert_training_logs_reproduce(&server).await;
    // Without a listing only the files the manifest names are fetched: the model and its
    // artifacts (background, baseline, snapshot, training log) for each of the two models.
    assert_eq!(
        counter(&server, "ferrum_model_store_downloads_total").await,
        10.0
    );
}
