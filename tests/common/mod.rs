//! Test harness: starts the real `ferrum-serve` binary on a free loopback port and speaks HTTP
//! to it, so integration tests see exactly what a client would.
#![allow(dead_code)] // each test binary uses its own subset

pub mod fixtures;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root: default paths (models/, manifest.json) are relative to it.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// ONNX Runtime's library, fetched by scripts/fetch-onnxruntime.sh (the Makefile runs it).
pub fn ort_dylib() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".ort/libonnxruntime.so"))
}

/// A running server process; killed on drop.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    child: Child,
    /// Every line the process wrote to stdout and stderr so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

/// Builds the command for the server binary with test-friendly defaults (loopback, port 0).
pub fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrum-serve"));
    command
        .current_dir(repo_root())
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env("LOG_FORMAT", "json")
        // gRPC off unless a test asks for it with --grpc-port: its default port (8081) would be
        // shared by every server of a parallel test run.
        .env("GRPC_PORT", "0")
        .args(args);
    for (flag, default) in [("--host", "127.0.0.1"), ("--port", "0")] {
        if !args.contains(&flag) {
            command.args([flag, default]);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Builds the command for the mock feature store (`ferrum-feature-store`) on loopback, port 0;
/// start it with [`Server::spawn`] (it logs the same "listening" line).
pub fn feature_store_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrum-feature-store"));
    command
        .current_dir(repo_root())
        .env("LOG_FORMAT", "json")
        .args(args);
    for (flag, default) in [("--host", "127.0.0.1"), ("--port", "0")] {
        if !args.contains(&flag) {
            command.args([flag, default]);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A loopback port nothing listens on (bound, then released): a feature store that is down.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Server {
    /// Starts the server and waits until it listens (not until it is ready).
    pub fn start(args: &[&str]) -> Server {
        Self::spawn(server_command(args))
    }

    /// Starts the server and waits until `/health/ready` answers 200.
    pub async fn start_ready(args: &[&str]) -> Server {
        let server = Self::start(args);
        server.wait_ready(Duration::from_secs(60)).await;
        server
    }

    /// Spawns a prepared command and waits for its "listening" log line.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command.spawn().expect("start ferrum-serve");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            let address_tx = address_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(event) = serde_json::from_str::<Value>(&line) {
                        if event["message"] == "listening" {
                            let _ = address_tx.send(event["address"].as_str().unwrap().to_string());
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let address = match address_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not listen; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            base: format!("http://{address}"),
            child,
            logs,
        }
    }

    /// Polls readiness until 200 or the deadline.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = client().get(self.url("/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in time; logs:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; returns status and parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = client()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        parse(response).await
    }

    /// POSTs raw bytes with a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let response = client()
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        parse(response).await
    }

    /// GETs a path; returns status and parsed body (Null if not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        parse(client().get(self.url(path)).send().await.unwrap()).await
    }

    /// The `/metrics` scrape, as text.
    pub async fn scrape(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// All log lines so far, joined.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The log text once `complete` says it holds what the test waits for, or after 10 s: the
    /// server writes its log through a background writer and the lines reach this process
    /// through a pipe and a reader thread, so a line logged before a response was sent can
    /// arrive after the response. The caller still asserts on what it gets.
    pub async fn log_text_once(&self, complete: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.log_text();
            if complete(&logs) || Instant::now() > deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Each of `models`' `inference executor attached` log line (the mode it runs in and why),
    /// once all are logged. Panics naming the model whose line never came.
    pub async fn executor_lines<const N: usize>(&self, models: [&str; N]) -> [String; N] {
        let line_of = |log: &str, model: &str| {
            log.lines()
                .find(|l| {
                    l.contains("inference executor attached")
                        && l.contains(&format!("\"model\":\"{model}\""))
                })
                .map(str::to_owned)
        };
        let log = self
            .log_text_once(|log| models.iter().all(|m| line_of(log, m).is_some()))
            .await;
        models
            .map(|m| line_of(&log, m).unwrap_or_else(|| panic!("no executor line for {m}: {log}")))
    }

    /// Sends a signal to the process (SIGTERM = 15).
    pub fn signal(&self, signal: i32) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the server to completion (for start-up failures): exit status and all output.
pub fn run_to_exit(mut command: Command, timeout: Duration) -> (ExitStatus, String) {
    let mut child = command.spawn().expect("start ferrum-serve");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status, text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A shared HTTP client.
///
/// Its pooled connections are dropped after 5 s idle, inside the server's 10 s keep-alive
/// (`--header-read-timeout-ms`): a test that blocks its runtime for longer (a synchronous
/// upload to moto, say) would otherwise send its next request on a connection the server has
/// already closed, before the client's connection task could see the close, and get
/// `IncompleteMessage` instead of an answer.
pub fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap()
        })
        .clone()
}

async fn parse(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A model's training log rows.
pub fn training_log(model: &str) -> Vec<Value> {
    read_json(&repo_root().join(format!("models/{model}/1/training_log.json")))["rows"]
        .as_array()
        .unwrap()
        .clone()
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Asserts two JSON values are equal, numbers within `tolerance`.
pub fn assert_json_close(actual: &Value, expected: &Value, tolerance: f64, context: &str) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (a.as_f64().unwrap(), e.as_f64().unwrap());
            assert!(
                (a - e).abs() <= tolerance,
                "{context}: {a} != {e} (tolerance {tolerance})"
            );
        }
        (Value::Object(a), Value::Object(e)) => {
            let mut a_keys: Vec<_> = a.keys().collect();
            let mut e_keys: Vec<_> = e.keys().collect();
            a_keys.sort();
            e_keys.sort();
            assert_eq!(a_keys, e_keys, "{context}: keys differ");
            for (k, v) in e {
                assert_json_close(&a[k], v, tolerance, &format!("{context}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{context}: lengths differ");
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                assert_json_close(x, y, tolerance, &format!("{context}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{context}"),
    }
}

/// A copy of the bundled models and manifest in a temporary directory, for a test to change or
/// damage freely.
pub struct RepoCopy {
    dir: tempfile::TempDir,
}

impl RepoCopy {
    pub fn new() -> RepoCopy {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo_root().join("models"), &dir.path().join("models"));
        std::fs::copy(
            repo_root().join("manifest.json"),
            dir.path().join("manifest.json"),
        )
        .unwrap();
        RepoCopy { dir }
    }

    /// A path inside the copy.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn models(&self) -> PathBuf {
        self.path("models")
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.path("manifest.json")
    }

    pub fn manifest(&self) -> Value {
        read_json(&self.manifest_path())
    }

    /// Writes the manifest atomically (a rescanning server never reads half of it).
    pub fn write_manifest(&self, manifest: &Value) {
        let tmp = self.path("manifest.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
        std::fs::rename(&tmp, self.manifest_path()).unwrap();
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `POST /v2/models/{model}/infer` with `rows` as the binary FP32 input `input`, `[rows, width]`,
/// and every output asked for as binary data (Triton's binary tensor extension): the
/// answer's JSON header and each output's bytes, in the header's order. Panics unless the
/// server answers 200 and the binary section is exactly the outputs' declared sizes.
pub async fn v2_binary_infer(
    server: &Server,
    model: &str,
    input: &str,
    rows: &[Vec<f32>],
) -> (Value, Vec<Vec<u8>>) {
    let (n, width) = (rows.len(), rows[0].len());
    let header = serde_json::json!({
        "inputs": [{"name": input, "shape": [n, width], "datatype": "FP32",
                    "parameters": {"binary_data_size": n * width * 4}}],
        "parameters": {"binary_data_output": true}
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for v in rows.iter().flatten() {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let response = client()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .header("inference-header-content-length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{model}");
    let json_len: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    let mut binary = &bytes[json_len..];
    let mut outputs = Vec::new();
    for output in head["outputs"].as_array().unwrap() {
        assert!(output.get("data").is_none(), "{output}");
        let size = output["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        let (chunk, rest) = binary.split_at(size);
        outputs.push(chunk.to_vec());
        binary = rest;
    }
    assert!(binary.is_empty(), "every byte is claimed by an output");
    (head, outputs)
}

/// The repository index, keyed by (model, version).
pub async fn index(
    server: &Server,
    key: Option<&str>,
) -> std::collections::BTreeMap<(String, String), Value> {
    let mut request = client().post(server.url("/v2/repository/index")).body("{}");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let entries: Vec<Value> = response.json().await.unwrap();
    entries
        .into_iter()
        .map(|e| {
            let key = (
                e["name"].as_str().unwrap().to_string(),
                e["version"].as_str().unwrap().to_string(),
            );
            (key, e)
        })
        .collect()
}

/// Polls `check` until it holds, or fails with the server's logs after 30 s.
pub async fn eventually<F, Fut>(server: &Server, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; logs:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
