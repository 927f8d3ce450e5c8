//! `--models-dir s3://...` against a real S3-compatible server (moto's standalone server from
//! the hash-locked dev venv, on a loopback port): the bundled models served from a bucket give
//! the training log's predictions, a tampered object is refused on its sha256 before any
//! session is built, and a restart reuses the cache without downloading again. A plain HTTP
//! repository (the `https://` code path, over loopback HTTP) is served the same way.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    assert_json_close, client, repo_root, run_to_exit, server_command, training_log, Server,
};
use serde_json::{json, Value};

const MODELS: [&str; 2] = ["breast-cancer", "diabetes"];
const BUCKET: &str = "ferrum-models";
const PREFIX: &str = "prod/repo";

/// A child process killed on drop, with the loopback port it announced.
struct Helper {
    child: Child,
    port: u16,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Helper {
    /// Spawns `command` and waits for the line that announces its port (`marker` followed by
    /// the port number); keeps draining its output so a chatty server never blocks on a pipe.
    fn spawn(mut command: Command, marker: &'static str) -> Helper {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let port_tx = port_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some((_, rest)) = line.split_once(marker) {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        if let Ok(port) = digits.parse::<u16>() {
                            let _ = port_tx.send(port);
                        }
                    }
                }
            });
        }
        let port = port_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{command:?} announced no port"));
        Helper { child, port }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `moto_server` from `MOTO_SERVER`, else from the dev venv scripts/python-env.sh builds (and
/// reuses: scripts/test.sh has built it before the Rust tests run).
fn moto_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(bin);
    }
    let output = Command::new(repo_root().join("scripts/python-env.sh"))
        .arg("requirements/dev.lock")
        .current_dir(repo_root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/python-env.sh");
    assert!(output.status.success(), "scripts/python-env.sh failed");
    let venv = String::from_utf8(output.stdout).unwrap();
    PathBuf::from(venv.trim()).join("bin/moto_server")
}

/// moto's S3 on a free loopback port, with one bucket.
struct S3 {
    server: Helper,
}

impl S3 {
    async fn start() -> S3 {
        let mut command = Command::new(moto_server_bin());
        command.args(["-H", "127.0.0.1", "-p", "0"]);
        let server = Helper::spawn(command, "Running on http://127.0.0.1:");
        let s3 = S3 { server };
        s3.put(&format!("/{BUCKET}"), Vec::new()).await;
        s3
    }

    /// PUTs an object (moto takes unsigned requests; the server under test signs its own).
    async fn put(&self, path: &str, body: Vec<u8>) {
        let response = client()
            .put(format!("{}{path}", self.server.base()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }

    /// Uploads the bundled repository under [`PREFIX`]: manifest.json and every version
    /// folder, with `replaced` files' bytes swapped for the given ones (moto refuses an
    /// unsigned overwrite, so a tampered object is uploaded in place of the original).
    async fn upload_repository(&self, replaced: &[(&str, &[u8])]) {
        for (relative, bytes) in repository_files() {
            let bytes = replaced
                .iter()
                .find(|(name, _)| *name == relative)
                .map_or(bytes, |(_, replacement)| replacement.to_vec());
            self.put(&format!("/{BUCKET}/{PREFIX}/{relative}"), bytes)
                .await;
        }
    }

    /// The variables object_store's S3 builder reads, pointing at this server.
    fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.server.base()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

/// manifest.json and every file below models/, as (path relative to the repository, bytes).
fn repository_files() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "manifest.json".to_string(),
        std::fs::read(repo_root().join("manifest.json")).unwrap(),
    )];
    for model in MODELS {
        let folder = repo_root().join("models").join(model).join("1");
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            files.push((
                format!("{model}/1/{}", entry.file_name().to_string_lossy()),
                std::fs::read(entry.path()).unwrap(),
            ));
        }
    }
    files
}

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
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not on /metrics"))
        .parse()
        .unwrap()
}

/// The "model repository synced" log event.
fn sync_event(server: &Server) -> Value {
    server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["message"] == "model repository synced")
        .unwrap_or_else(|| panic!("no sync log line; logs:\n{}", server.log_text()))
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
    let event = sync_event(&server);
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
    let event = sync_event(&server);
    assert_eq!(
        (event["downloads"].clone(), event["cache_hits"].clone()),
        (json!(0), json!(files as u64))
    );
    assert!(server
        .log_text()
        .contains("model file reused from the cache"));
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
