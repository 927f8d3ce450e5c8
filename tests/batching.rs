//! The dynamic batcher. First on its own with a fake model whose calls a test can hold open, so
//! merging, overflow and cancellation are checked deterministically (no sleeps, no timing);
//! then over HTTP: many concurrent mixed-size requests each get exactly their own rows' logged
//! predictions, through `/predict` and V2 alike.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use axum::response::IntoResponse;
use ferrum_serve::api::ApiError;
use ferrum_serve::batching::{InferError, Scheduler, SchedulerConfig, SubmitError};
use ferrum_serve::model::{InferenceError, ModelOutput, Rows};
use ferrum_serve::serving::ServingError;
use ferrum_serve::telemetry::metrics::{self, InferenceCalls};

use common::{assert_json_close, training_log, Server};
use serde_json::{json, Value};

/// A fake model: each row's output is twice its first value. Every call reports the rows it got
/// on `calls` and then waits for one message on `release`. Its calls are recorded under the
/// model name `model` (version 1), one name per test, since tests share the metrics registry.
struct Gate {
    calls: mpsc::Receiver<Vec<f32>>,
    release: mpsc::Sender<()>,
}

fn gated_scheduler(model: &str, config: SchedulerConfig) -> (Scheduler<Rows>, Gate) {
    let (calls_tx, calls) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let calls_tx = Mutex::new(calls_tx);
    let release_rx = Mutex::new(release_rx);
    let recorded = InferenceCalls::new(model, "1");
    let scheduler = Scheduler::start("test", config, recorded, move |rows: &Rows| {
        calls_tx.lock().unwrap().send(rows.data.clone()).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
        if rows.data.contains(&-1.0) {
            panic!("the fake model refuses -1");
        }
        Ok(ModelOutput::Regression {
            values: (0..rows.n_rows).map(|i| rows.row(i)[0] * 2.0).collect(),
        })
    });
    (scheduler, Gate { calls, release })
}

fn config(threads: usize, max_batch_rows: usize, max_queue_depth: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_batch_rows,
        max_queue_delay: std::time::Duration::ZERO,
        max_queue_depth,
        threads,
    }
}

/// The value of metric `name` for fake model `model` (version 1), with `extra` labels placed in
/// Prometheus's (alphabetical) order; `None` when no such sample exists.
fn recorded(name: &str, model: &str, reason: Option<&str>) -> Option<f64> {
    let labels = match reason {
        Some(reason) => format!(r#"{{model="{model}",reason="{reason}",version="1"}}"#),
        None => format!(r#"{{model="{model}",version="1"}}"#),
    };
    let prefix = format!("{name}{labels} ");
    metrics::render().lines().find_map(|line| {
        line.strip_prefix(prefix.as_str())
            .map(|v| v.parse().unwrap())
    })
}

fn rows(values: &[f32]) -> Rows {
    Rows::new(values.to_vec(), 1)
}

fn values(result: Result<ferrum_serve::batching::Inferred, InferenceError>) -> Vec<f32> {
    match result.unwrap().output {
        ModelOutput::Regression { values } => values,
        other => panic!("unexpected {other:?}"),
    }
}

/// Requests queued while a batch runs are merged into the next call, up to `max_batch_rows`,
/// and each gets exactly its own rows back, in order.
#[test]
fn queued_requests_merge_and_fan_out_in_order() {
    let (scheduler, gate) = gated_scheduler("gate-order", config(1, 5, 100));
    let first = scheduler.submit(rows(&[1.0])).unwrap();
    assert_eq!(gate.calls.recv().unwrap(), vec![1.0]); // the thread is now busy
    let a = scheduler.submit(rows(&[10.0, 11.0])).unwrap();
    let b = scheduler.submit(rows(&[20.0])).unwrap();
    let c = scheduler.submit(rows(&[30.0, 31.0])).unwrap();
    let d = scheduler.submit(rows(&[40.0])).unwrap(); // would make 6 rows: next batch
    assert_eq!(scheduler.queued(), 4);
    gate.release.send(()).unwrap();
    assert_eq!(values(first.blocking_recv().unwrap()), vec![2.0]);
    assert_eq!(
        gate.calls.recv().unwrap(),
        vec![10.0, 11.0, 20.0, 30.0, 31.0],
        "one call for the three requests that fit"
    );
    gate.release.send(()).unwrap();
    let a = a.blocking_recv().unwrap().unwrap();
    assert_eq!(a.batch_rows, 5);
    assert_eq!(
        a.output,
        ModelOutput::Regression {
            values: vec![20.0, 22.0]
        }
    );
    assert_eq!(values(b.blocking_recv().unwrap()), vec![40.0]);
    assert_eq!(values(c.blocking_recv().unwrap()), vec![60.0, 62.0]);
    assert_eq!(gate.calls.recv().unwrap(), vec![40.0]);
    gate.release.send(()).unwrap();
    assert_eq!(values(d.blocking_recv().unwrap()), vec![80.0]);
}

/// A request larger than `max_batch_rows` still runs, alone.
#[test]
fn an_oversized_request_runs_alone() {
    let (scheduler, gate) = gated_scheduler("gate-oversized", config(1, 2, 100));
    let first = scheduler.submit(rows(&[1.0])).unwrap();
    gate.calls.recv().unwrap();
    let big = scheduler.submit(rows(&[5.0, 6.0, 7.0])).unwrap();
    let small = scheduler.submit(rows(&[8.0])).unwrap();
    for _ in 0..3 {
        gate.release.send(()).unwrap();
    }
    first.blocking_recv().unwrap().unwrap();
    assert_eq!(gate.calls.recv().unwrap(), vec![5.0, 6.0, 7.0]);
    assert_eq!(values(big.blocking_recv().unwrap()), vec![10.0, 12.0, 14.0]);
    assert_eq!(gate.calls.recv().unwrap(), vec![8.0]);
    assert_eq!(values(small.blocking_recv().unwrap()), vec![16.0]);
}

/// A full queue refuses at once; once it drains, requests are accepted again. Over HTTP the
/// refusal is a 503 with `Retry-After` and the stable code `overloaded`.
#[test]
fn a_full_queue_refuses_immediately() {
    let (scheduler, gate) = gated_scheduler("gate-full", config(1, 100, 2));
    let running = scheduler.submit(rows(&[1.0])).unwrap();
    gate.calls.recv().unwrap();
    let queued: Vec<_> = (0..2)
        .map(|i| scheduler.submit(rows(&[i as f32])).unwrap())
        .collect();
    assert_eq!(
        scheduler.submit(rows(&[9.0])).unwrap_err(),
        SubmitError::Full
    );
    gate.release.send(()).unwrap();
    running.blocking_recv().unwrap().unwrap();
    gate.calls.recv().unwrap();
    gate.release.send(()).unwrap();
    for reply in queued {
        reply.blocking_recv().unwrap().unwrap();
    }
    let again = scheduler.submit(rows(&[3.0])).unwrap();
    gate.calls.recv().unwrap();
    gate.release.send(()).unwrap();
    assert_eq!(values(again.blocking_recv().unwrap()), vec![6.0]);

    let response =
        ApiError::from(ServingError::from(InferError::from(SubmitError::Full))).into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
}

/// A request whose client went away (reply receiver dropped) is never computed.
#[test]
fn cancelled_requests_are_dropped_before_inference() {
    let (scheduler, gate) = gated_scheduler("gate-cancel", config(1, 100, 100));
    let running = scheduler.submit(rows(&[1.0])).unwrap();
    gate.calls.recv().unwrap();
    let gone = scheduler.submit(rows(&[66.0])).unwrap();
    let kept = scheduler.submit(rows(&[7.0])).unwrap();
    drop(gone);
    gate.release.send(()).unwrap();
    running.blocking_recv().unwrap().unwrap();
    assert_eq!(
        gate.calls.recv().unwrap(),
        vec![7.0],
        "66 was never computed"
    );
    gate.release.send(()).unwrap();
    assert_eq!(values(kept.blocking_recv().unwrap()), vec![14.0]);
    // Everything cancelled: no call at all, and the next request is served.
    let running = scheduler.submit(rows(&[1.0])).unwrap();
    gate.calls.recv().unwrap();
    drop(scheduler.submit(rows(&[5.0])).unwrap());
    gate.release.send(()).unwrap();
    running.blocking_recv().unwrap().unwrap();
    let next = scheduler.submit(rows(&[2.0])).unwrap();
    assert_eq!(gate.calls.recv().unwrap(), vec![2.0]);
    gate.release.send(()).unwrap();
    assert_eq!(values(next.blocking_recv().unwrap()), vec![4.0]);
}

/// A failing batch answers each of its requests with the error; the thread keeps serving.
#[test]
fn a_failed_batch_fails_each_request_and_the_batcher_goes_on() {
    let (scheduler, gate) = gated_scheduler("gate-fail", config(1, 100, 100));
    let running = scheduler.submit(rows(&[1.0])).unwrap();
    gate.calls.recv().unwrap();
    let bad = scheduler.submit(rows(&[-1.0])).unwrap();
    let neighbour = scheduler.submit(rows(&[4.0])).unwrap();
    gate.release.send(()).unwrap();
    running.blocking_recv().unwrap().unwrap();
    gate.calls.recv().unwrap();
    gate.release.send(()).unwrap();
    for reply in [bad, neighbour] {
        let error = reply.blocking_recv().unwrap().unwrap_err();
        assert!(error.to_string().contains("refuses -1"), "{error}");
    }
    let after = scheduler.submit(rows(&[3.0])).unwrap();
    gate.calls.recv().unwrap();
    gate.release.send(()).unwrap();
    assert_eq!(values(after.blocking_recv().unwrap()), vec![6.0]);
    // Three calls: two succeeded, the merged one of two requests failed once (not twice).
    let at = |name: &str, reason: Option<&str>| recorded(name, "gate-fail", reason);
    assert_eq!(at("ferrum_inference_success_total", None), Some(2.0));
    assert_eq!(
        at("ferrum_inference_failures_total", Some("runtime_error")),
        Some(1.0)
    );
    assert_eq!(
        at("ferrum_inference_duration_seconds_count", None),
        Some(3.0)
    );
    assert_eq!(at("ferrum_inference_batch_rows_count", None), Some(3.0));
    assert_eq!(at("ferrum_inference_batch_rows_sum", None), Some(4.0));
}

/// N requests merged into one ONNX Runtime call are one observation of the call's duration,
/// one of its N requests' total rows, and one success; a call of a lone request is one of each
/// too.
#[test]
fn a_merged_batch_is_recorded_as_one_call() {
    let (scheduler, gate) = gated_scheduler("gate-merge", config(1, 100, 100));
    let at = |name: &str| recorded(name, "gate-merge", None);
    let lone = scheduler.submit(rows(&[1.0])).unwrap();
    assert_eq!(gate.calls.recv().unwrap(), vec![1.0]); // the thread is now busy
    let merged: Vec<_> = [&[10.0, 11.0][..], &[20.0], &[30.0, 31.0, 32.0], &[40.0]]
        .iter()
        .map(|values| scheduler.submit(rows(values)).unwrap())
        .collect();
    gate.release.send(()).unwrap();
    lone.blocking_recv().unwrap().unwrap();
    assert_eq!(at("ferrum_inference_duration_seconds_count"), Some(1.0));
    assert_eq!(at("ferrum_inference_batch_rows_sum"), Some(1.0));
    assert_eq!(at("ferrum_inference_success_total"), Some(1.0));
    assert_eq!(
        gate.calls.recv().unwrap(),
        vec![10.0, 11.0, 20.0, 30.0, 31.0, 32.0, 40.0],
        "the four queued requests are one call"
    );
    gate.release.send(()).unwrap();
    for reply in merged {
        assert_eq!(reply.blocking_recv().unwrap().unwrap().batch_rows, 7);
    }
    assert_eq!(at("ferrum_inference_duration_seconds_count"), Some(2.0));
    assert_eq!(at("ferrum_inference_batch_rows_count"), Some(2.0));
    assert_eq!(at("ferrum_inference_batch_rows_sum"), Some(8.0));
    let bucket = |le: &str| {
        let prefix = format!(
            r#"ferrum_inference_batch_rows_bucket{{model="gate-merge",version="1",le="{le}"}} "#
        );
        metrics::render().lines().find_map(|l| {
            l.strip_prefix(prefix.as_str())
                .map(|v| v.parse::<f64>().unwrap())
        })
    };
    assert_eq!(bucket("4"), Some(1.0), "the lone call");
    assert_eq!(bucket("8"), Some(2.0), "and the 7-row merged call");
    assert_eq!(at("ferrum_inference_success_total"), Some(2.0));
    assert_eq!(
        recorded(
            "ferrum_inference_failures_total",
            "gate-merge",
            Some("runtime_error")
        ),
        None
    );
}

/// Many threads submitting mixed sizes to a multi-threaded batcher: every request gets its own.
#[test]
fn concurrent_submitters_each_get_their_own_rows() {
    let scheduler = Arc::new(Scheduler::start(
        "free",
        SchedulerConfig {
            max_queue_delay: std::time::Duration::from_micros(200),
            ..config(2, 16, 10_000)
        },
        InferenceCalls::new("free", "1"),
        |rows: &Rows| {
            Ok(ModelOutput::Regression {
                values: (0..rows.n_rows).map(|i| rows.row(i)[0] * 2.0).collect(),
            })
        },
    ));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let scheduler = scheduler.clone();
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let n = 1 + (i * 7 + t) as usize % 9;
                    let base = (t * 100_000 + i * 10) as f32;
                    let input: Vec<f32> = (0..n).map(|k| base + k as f32).collect();
                    let reply = scheduler.submit(rows(&input)).unwrap();
                    let want: Vec<f32> = input.iter().map(|v| v * 2.0).collect();
                    assert_eq!(values(reply.blocking_recv().unwrap()), want);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

/// Deterministic pseudo-random sizes and offsets into the log.
fn plan(n_requests: usize, log_len: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut state = seed;
    (0..n_requests)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = 1 + (state >> 33) as usize % 12;
            let start = (state >> 45) as usize % (log_len - size);
            (start, size)
        })
        .collect()
}

/// Concurrent mixed-size requests over HTTP, /predict and V2 interleaved, with batching on and
/// a small batch limit so that merges, splits and oversized requests all happen: each response
/// holds exactly the logged predictions of its own rows.
#[tokio::test]
async fn concurrent_http_requests_each_get_their_own_predictions() {
    let server = Server::start_ready(&[
        "--batching",
        "on",
        "--max-batch-rows",
        "8",
        "--max-queue-delay-us",
        "500",
    ])
    .await;
    let server = Arc::new(server);
    let mut tasks = tokio::task::JoinSet::new();
    for (m, model) in ["breast-cancer", "diabetes"].into_iter().enumerate() {
        let log = Arc::new(training_log(model));
        for (i, (start, size)) in plan(150, log.len(), 42 + m as u64).into_iter().enumerate() {
            let (server, log) = (server.clone(), log.clone());
            tasks.spawn(async move {
                let rows = &log[start..start + size];
                let expected: Vec<Value> = rows.iter().map(|r| r["prediction"].clone()).collect();
                let context = format!("{model} request {i} rows {start}..{}", start + size);
                if i % 2 == 0 {
                    let instances: Vec<Value> =
                        rows.iter().map(|r| r["features"].clone()).collect();
                    let (status, body) = server
                        .post(
                            &format!("/models/{model}/predict"),
                            &json!({"instances": instances}),
                        )
                        .await;
                    assert_eq!(status, 200, "{context}: {body}");
                    assert_json_close(
                        &body["predictions"],
                        &Value::Array(expected),
                        1e-6,
                        &context,
                    );
                } else {
                    let (status, meta) = server.get(&format!("/v2/models/{model}")).await;
                    assert_eq!(status, 200);
                    let names = meta["parameters"]["feature_names"]
                        .as_array()
                        .unwrap()
                        .clone();
                    let data: Vec<Vec<Value>> = rows
                        .iter()
                        .map(|r| {
                            names
                                .iter()
                                .map(|n| r["features"][n.as_str().unwrap()].clone())
                                .collect()
                        })
                        .collect();
                    let (status, body) = server
                        .post(
                            &format!("/v2/models/{model}/infer"),
                            &json!({"inputs": [{"name": "input", "shape": [size, names.len()],
                                                "datatype": "FP32", "data": data}]}),
                        )
                        .await;
                    assert_eq!(status, 200, "{context}: {body}");
                    let outputs = &body["outputs"];
                    for (k, want) in expected.iter().enumerate() {
                        if model == "breast-cancer" {
                            let label = outputs[0]["data"][k].as_i64().unwrap() as usize;
                            assert_eq!(
                                ["malignant", "benign"][label],
                                want["label"],
                                "{context} row {k}"
                            );
                            let p = outputs[1]["data"][2 * k].as_f64().unwrap();
                            let w = want["probabilities"]["malignant"].as_f64().unwrap();
                            assert!((p - w).abs() <= 1e-6, "{context} row {k}: {p} != {w}");
                        } else {
                            let v = outputs[0]["data"][k].as_f64().unwrap();
                            let w = want["value"].as_f64().unwrap();
                            assert!(
                                (v - w).abs() <= 1e-6 * w.abs().max(1.0),
                                "{context} row {k}: {v} != {w}"
                            );
                        }
                    }
                }
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    // Both bundled models pass the load-time check that merging changes no bits, so both are
    // batched (not just one of them).
    for line in server.executor_lines(["breast-cancer", "diabetes"]).await {
        assert!(line.contains("\"mode\":\"Batched\""), "{line}");
    }
}

/// A tiny queue under a burst of large requests: every answer is either the right predictions or
/// an immediate 503 `overloaded` with `Retry-After` (whether any overflow happens depends on
/// timing, so only the form of each answer is asserted), and the server serves normally after.
#[tokio::test]
async fn a_burst_over_a_tiny_queue_gets_predictions_or_overloaded() {
    let server = Arc::new(
        Server::start_ready(&[
            "--batching",
            "on",
            "--max-queue-depth",
            "1",
            "--sessions-per-model",
            "1",
            "--max-batch-rows",
            "64",
        ])
        .await,
    );
    let log = Arc::new(training_log("diabetes"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (server, log) = (server.clone(), log.clone());
        tasks.spawn(async move {
            let rows: Vec<&Value> = log.iter().cycle().skip(i).take(500).collect();
            let instances: Vec<Value> = rows.iter().map(|r| r["features"].clone()).collect();
            let response = common::client()
                .post(server.url("/models/diabetes/predict"))
                .json(&json!({"instances": instances}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.unwrap();
            match status {
                200 => {
                    let expected: Vec<Value> =
                        rows.iter().map(|r| r["prediction"].clone()).collect();
                    assert_json_close(
                        &body["predictions"],
                        &Value::Array(expected),
                        1e-6,
                        &format!("request {i}"),
                    );
                }
                503 => {
                    assert_eq!(body["code"], "overloaded", "{body}");
                    assert_eq!(retry_after.unwrap(), "1");
                }
                other => panic!("request {i}: status {other}: {body}"),
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let row = &log[0];
    let (status, body) = server
        .post(
            "/models/diabetes/predict",
            &json!({"instances": [row["features"]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
