//! The log stream itself: the server's lines are written off the request path (a bounded
//! queue and a writer thread) and still all arrive, the last ones flushed at shutdown; text
//! lines are coloured on a terminal unless `NO_COLOR` is set (a real pseudo-terminal comes
//! from util-linux's `script`).

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, training_log};
use serde_json::{json, Value};

/// Fewer lines than the log queue holds (8192): none is dropped, all are still queued at exit.
const REQUESTS: usize = 3000;

/// The server with nobody reading its stdout until the test says so: stdout's pipe (64 KiB)
/// fills after a couple of hundred lines, and from then on only the log queue takes them.
/// Requests are still answered at once; after SIGTERM, the queue must be written out before
/// the process exits, or the lines still in it are lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_never_wait_for_stdout_and_shutdown_flushes_every_queued_line() {
    let port = common::closed_port();
    let mut command = common::server_command(&["--port", &port.to_string()]);
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client().get(format!("{base}/health/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let row = &training_log("breast-cancer")[0];
    let body = json!({ "instances": [row["features"]] });
    let mut slowest = Duration::ZERO;
    for i in 0..REQUESTS {
        let started = Instant::now();
        let response = client()
            .post(format!("{base}/predict"))
            .header("x-request-id", format!("log-{i}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    // Written synchronously, request ~200 would have blocked on the full pipe for ever.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    let scrape = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scrape.contains("\nferrum_log_lines_dropped_total 0\n"),
        "{scrape}"
    );

    assert!(Command::new("kill")
        .args(["-15", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // Let the server reach its exit path (blocked on writing the queue) before reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stdout = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    })
    .await
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", stderr.join().unwrap());
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = events
        .iter()
        .filter(|e| e["message"] == "request" && e["path"] == "/predict")
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..REQUESTS).map(|i| format!("log-{i}")).collect();
    assert_eq!(ids, expected, "every request line, once, in order");
    let last = events.last().unwrap();
    assert_eq!(last["message"], "stopped", "{last}");
    assert!(events
        .iter()
        .any(|e| e["message"] == "shutdown signal received; readiness now fails"));
}

/// Runs a job that fails at once (its input does not exist) with text logs on a terminal;
/// returns what the terminal showed.
fn failing_job_on_a_terminal(no_color: Option<&str>) -> String {
    let job = format!(
        "{} predict --log-format text --input /nonexistent/rows.csv --output /dev/null",
        env!("CARGO_BIN_EXE_ferrum-serve")
    );
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command", &job, "/dev/null"])
        .current_dir(common::repo_root())
        .env("ORT_DYLIB_PATH", common::ort_dylib())
        .env_remove("NO_COLOR");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = command.output().expect("util-linux `script` runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let shown = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(shown.contains("job failed"), "{shown}");
    shown
}

#[test]
fn text_logs_are_coloured_on_a_terminal_unless_no_color_is_set() {
    const ESCAPE: &str = "\u{1b}[";
    assert!(failing_job_on_a_terminal(None).contains(ESCAPE));
    // https://no-color.org: any non-empty value turns colours off; an empty one does not.
    assert!(!failing_job_on_a_terminal(Some("1")).contains(ESCAPE));
    assert!(failing_job_on_a_terminal(Some("")).contains(ESCAPE));
}
