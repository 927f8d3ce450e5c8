//! Execution providers. There is no GPU here: `auto` must fall back to CPU and say so in a log
//! line, `cuda` must refuse to start, in both the CPU build and the `cuda`-feature build.

mod common;

use std::time::Duration;

use common::{run_to_exit, server_command, training_log, Server};
use serde_json::{json, Value};

#[tokio::test]
async fn auto_falls_back_to_cpu_with_a_log_line_and_serves() {
    let server = Server::start_ready(&["--execution-provider", "auto"]).await;
    let (_, health) = server.get("/health").await;
    for model in health["models"].as_array().unwrap() {
        assert_eq!(model["execution_provider"], "cpu", "{model}");
    }
    let fallback = server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["message"] == "CUDA execution provider not used; falling back to CPU")
        .expect("a fallback log line");
    assert_eq!(fallback["level"], "WARN");
    let reason = fallback["reason"].as_str().unwrap();
    if cfg!(feature = "cuda") {
        assert!(!reason.contains("built without"), "{reason}");
    } else {
        assert_eq!(reason, "built without the `cuda` feature");
    }
    let row = &training_log("breast-cancer")[0];
    let (status, body) = server
        .post("/predict", &json!({"instances": [row["features"]]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["predictions"][0]["label"], row["prediction"]["label"]);
}

#[test]
fn cuda_without_a_usable_gpu_is_a_clear_startup_error() {
    let (status, output) = run_to_exit(
        server_command(&["--execution-provider", "cuda"]),
        Duration::from_secs(30),
    );
    assert!(!status.success(), "{output}");
    let expected = if cfg!(feature = "cuda") {
        "--execution-provider cuda: the CUDA execution provider cannot be used"
    } else {
        "--execution-provider cuda: this binary was built without the `cuda` feature"
    };
    assert!(output.contains(expected), "{output}");
}

#[test]
fn cpu_is_exactly_cpu_without_fallback_noise() {
    let mut command = server_command(&["--execution-provider", "cpu"]);
    command.env("WARMUP_RUNS", "1");
    let server = Server::spawn(command);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server.log_text().contains("all models loaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!server.log_text().contains("falling back"));
}
