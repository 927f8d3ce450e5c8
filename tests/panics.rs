//! A handler that panics is answered with a JSON 500 `internal_error`, logged, counted in
//! `ferrum_http_panics_total`, and the server goes on serving: the test-only fault route
//! (`--enable-fault-routes`, hidden) panics on purpose, with a single admission slot so a
//! permit not released by the unwinding would starve the next request.

mod common;

use common::{client, training_log, Server};
use serde_json::{json, Value};

const PANICS: usize = 3;

/// The value of the unlabelled sample `name` in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_panicking_handler_gets_a_json_500_is_counted_and_the_server_goes_on() {
    let server = Server::start_ready(&[
        "--enable-fault-routes",
        "--max-concurrent-requests",
        "1",
        "--max-queued-requests",
        "0",
    ])
    .await;
    let before = server.scrape().await;
    assert!(
        before.contains("# HELP ferrum_http_panics_total Requests whose handler panicked; each was answered 500 internal_error and logged with the panic message.\n"),
        "{before}"
    );
    assert_eq!(sample(&before, "ferrum_http_panics_total"), Some(0.0));

    let row = &training_log("breast-cancer")[0];
    let body = json!({ "instances": [row["features"]] });
    for _ in 0..PANICS {
        let response = client()
            .get(server.url("/_fault/panic"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["connection"], "close");
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            error,
            json!({
                "error": "internal error: the server failed while handling this request",
                "code": "internal_error"
            })
        );
        // The one admission slot was given back: the next inference request is served.
        let (status, prediction) = server.post("/predict", &body).await;
        assert_eq!(status, 200, "{prediction}");
        assert_eq!(prediction["predictions"][0], row["prediction"]);
    }

    let after = server.scrape().await;
    assert_eq!(
        sample(&after, "ferrum_http_panics_total"),
        Some(PANICS as f64)
    );
    assert!(
        after.contains(&format!(
            "ferrum_http_requests_total{{method=\"GET\",route=\"/_fault/panic\",status=\"500\"}} {PANICS}\n"
        )),
        "{after}"
    );
    // Each panic logs its ERROR line and then its request line.
    let logs = server
        .log_text_once(|logs| logs.matches("\"path\":\"/_fault/panic\"").count() >= PANICS)
        .await;
    let events: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let panic_lines = events
        .iter()
        .filter(|e| {
            e["message"] == "request handler panicked; answered 500"
                && e["level"] == "ERROR"
                && e["panic"] == ferrum_serve::api::panics::FAULT_PANIC_MESSAGE
        })
        .count();
    assert_eq!(panic_lines, PANICS, "{logs}");
    let request_lines = events
        .iter()
        .filter(|e| e["path"] == "/_fault/panic" && e["status"] == 500)
        .count();
    assert_eq!(request_lines, PANICS, "{logs}");
    assert!(logs.contains("fault routes enabled"), "{logs}");
}

#[tokio::test]
async fn without_the_flag_there_is_no_fault_route() {
    let server = Server::start_ready(&[]).await;
    let (status, error) = server.get("/_fault/panic").await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_ferrum-serve"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--header-read-timeout-ms"), "{help}");
    assert!(!help.contains("fault-routes"), "{help}");
}
