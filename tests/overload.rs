//! Overload: past the concurrency limit and queue bound, requests are shed at once with 503 and
//! `Retry-After`, and probes keep answering quickly. Alone in its own test binary so no other
//! test's servers compete for the two cores while it measures probe latency.

mod common;

use std::time::{Duration, Instant};

use common::{client, training_log, Server};
use serde_json::{json, Value};

/// 512 rows: slow enough (parsing and inference) to keep a slot busy for a while.
fn big_body() -> Value {
    let rows: Vec<Value> = training_log("breast-cancer")
        .iter()
        .cycle()
        .take(512)
        .map(|r| r["features"].clone())
        .collect();
    json!({ "instances": rows })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_with_retry_after_while_probes_answer_quickly() {
    let server = Server::start_ready(&[
        "--max-concurrent-requests",
        "1",
        "--max-queued-requests",
        "2",
        "--sessions-per-model",
        "1",
    ])
    .await;
    // Serialized once: the test's own JSON encoding must not delay its probes.
    let body = bytes::Bytes::from(serde_json::to_vec(&big_body()).unwrap());
    let flood: Vec<_> = (0..32)
        .map(|_| {
            let request = client()
                .post(server.url("/predict"))
                .header("content-type", "application/json")
                .body(body.clone());
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").cloned();
                let body: Value = response.json().await.unwrap();
                (status, retry_after, body)
            })
        })
        .collect();
    // Probes during the flood.
    let mut slowest_probe = Duration::ZERO;
    for _ in 0..10 {
        for path in ["/health/live", "/health"] {
            let started = Instant::now();
            assert_eq!(server.get(path).await.0, 200);
            slowest_probe = slowest_probe.max(started.elapsed());
        }
    }
    let mut ok = 0;
    let mut shed = 0;
    for task in flood {
        let (status, retry_after, body) = task.await.unwrap();
        match status {
            200 => {
                ok += 1;
                assert_eq!(body["predictions"].as_array().unwrap().len(), 512);
            }
            503 => {
                shed += 1;
                assert_eq!(body["code"], "overloaded", "{body}");
                assert_eq!(retry_after.unwrap(), "1");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
    assert_eq!(ok + shed, 32);
    assert!(
        slowest_probe < Duration::from_millis(100),
        "a probe took {slowest_probe:?}"
    );
}
