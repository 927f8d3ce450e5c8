//! `/metrics` against the real server: exact values after known traffic, a scrape promtool
//! accepts, live drift (PSI) that stays low for rows drawn from the training baseline and rises
//! for a shifted feature, timing headers, and the alert rules in deploy/prometheus/.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{feature_store_command, read_json, repo_root, server_command, training_log, Server};
use serde_json::{json, Value};

/// One sample of a scrape: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (what this server writes: no timestamps).
fn parse_scrape(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => value.push(chars.next().unwrap()),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.insert(key, value);
                }
                (name.to_string(), labels)
            }
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the one sample with exactly these labels, if any.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == wanted)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} appears twice");
    found.first().map(|s| s.value)
}

fn must(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

async fn scrape(server: &Server) -> String {
    let response = common::client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// promtool, which `scripts/install-system-tools.sh` installs (scripts/test.sh runs it first).
fn promtool() -> Command {
    let found = Command::new("promtool").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "promtool is missing: run scripts/install-system-tools.sh (scripts/test.sh does)"
    );
    Command::new("promtool")
}

fn manifest_entry(model: &str) -> Value {
    read_json(&repo_root().join("manifest.json"))["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .unwrap()
        .clone()
}

fn feature_names(model: &str) -> Vec<String> {
    manifest_entry(model)["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// Known traffic, then one scrape: every counter is exactly what was sent, the identity gauges
/// name the build and the model files, and promtool finds nothing to complain about.
#[tokio::test]
async fn a_scrape_after_known_traffic_counts_exactly_and_passes_promtool() {
    let mut command = server_command(&["--drift-window-rows", "0"]);
    command.env("IMAGE_TAG", "registry.example/ferrum:test");
    let server = Server::spawn(command);
    server.wait_ready(Duration::from_secs(60)).await;

    let bc = training_log("breast-cancer");
    let diabetes = training_log("diabetes");
    let rows = |log: &[Value], from: usize, n: usize| -> Value {
        Value::Array(
            log[from..from + n]
                .iter()
                .map(|r| r["features"].clone())
                .collect(),
        )
    };
    let mut expected_classes: BTreeMap<String, f64> = BTreeMap::new();
    // breast-cancer by name: three calls of 1, 2 and 5 rows (rows 0..8 of the log).
    let mut next = 0;
    for n in [1, 2, 5] {
        let (status, body) = server
            .post(
                "/models/breast-cancer/predict",
                &json!({"instances": rows(&bc, next, n)}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        next += n;
    }
    // The default route twice, one row each (rows 8 and 9).
    for _ in 0..2 {
        let (status, body) = server
            .post("/predict", &json!({"instances": rows(&bc, next, 1)}))
            .await;
        assert_eq!(status, 200, "{body}");
        next += 1;
    }
    for row in &bc[..next] {
        *expected_classes
            .entry(row["prediction"]["label"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    // diabetes, one exact version, 4 rows.
    let (status, body) = server
        .post(
            "/models/diabetes/versions/1/predict",
            &json!({"instances": rows(&diabetes, 0, 4)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let diabetes_sum: f64 = diabetes[..4]
        .iter()
        .map(|r| r["prediction"]["value"].as_f64().unwrap())
        .sum();
    // Rejected: a short row for diabetes (422), an unknown model (404), an unknown path (404).
    let (status, _) = server
        .post("/models/diabetes/predict", &json!({"instances": [[1, 2]]}))
        .await;
    assert_eq!(status, 422);
    let (status, _) = server
        .post(
            "/models/no-such-model/predict",
            &json!({"instances": [[1]]}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server.get("/no/such/path/42").await;
    assert_eq!(status, 404);
    for _ in 0..2 {
        assert_eq!(server.get("/health/live").await.0, 200);
    }

    let text = scrape(&server).await;
    let s = parse_scrape(&text);
    let http = |route: &str, method: &str, status: &str| {
        must(
            &s,
            "ferrum_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(http("/models/{name}/predict", "POST", "200"), 3.0);
    assert_eq!(http("/predict", "POST", "200"), 2.0);
    assert_eq!(
        http("/models/{name}/versions/{version}/predict", "POST", "200"),
        1.0
    );
    assert_eq!(http("/models/{name}/predict", "POST", "422"), 1.0);
    assert_eq!(http("/models/{name}/predict", "POST", "404"), 1.0);
    assert_eq!(http("unmatched", "GET", "404"), 1.0);
    assert_eq!(http("/health/live", "GET", "200"), 2.0);
    // No raw path ever becomes a label.
    assert!(!text.contains("no-such-model") && !text.contains("/no/such/path"));
    assert_eq!(
        must(
            &s,
            "ferrum_http_request_duration_seconds_count",
            &[("route", "/predict"), ("method", "POST"), ("status", "200")]
        ),
        2.0
    );
    // The scrape itself is the one request in flight.
    assert_eq!(must(&s, "ferrum_http_requests_in_flight", &[]), 1.0);

    let bc1 = [("model", "breast-cancer"), ("version", "1")];
    let d1 = [("model", "diabetes"), ("version", "1")];
    assert_eq!(must(&s, "ferrum_inference_success_total", &bc1), 5.0);
    assert_eq!(must(&s, "ferrum_inference_batch_rows_count", &bc1), 5.0);
    assert_eq!(must(&s, "ferrum_inference_batch_rows_sum", &bc1), 10.0);
    assert_eq!(
        must(
            &s,
            "ferrum_inference_batch_rows_bucket",
            &[("model", "breast-cancer"), ("version", "1"), ("le", "4")]
        ),
        4.0
    );
    assert_eq!(
        must(&s, "ferrum_inference_duration_seconds_count", &bc1),
        5.0
    );
    assert_eq!(
        must(&s, "ferrum_inference_queue_wait_seconds_count", &bc1),
        5.0
    );
    assert_eq!(must(&s, "ferrum_inference_queue_depth", &bc1), 0.0);
    assert_eq!(must(&s, "ferrum_inference_success_total", &d1), 1.0);
    assert_eq!(must(&s, "ferrum_inference_batch_rows_sum", &d1), 4.0);
    // Sequential requests: one ONNX Runtime call each, so calls and requests agree.
    assert_eq!(must(&s, "ferrum_inference_requests_total", &bc1), 5.0);
    assert_eq!(must(&s, "ferrum_inference_requests_total", &d1), 1.0);
    assert_eq!(
        must(
            &s,
            "ferrum_inference_request_failures_total",
            &[
                ("model", "diabetes"),
                ("version", "1"),
                ("reason", "wrong_row_length")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.iter()
            .filter(|x| x.name == "ferrum_inference_request_failures_total")
            .count(),
        1
    );
    // Rejected input never reached ONNX Runtime: no call failed.
    assert!(!s
        .iter()
        .any(|x| x.name == "ferrum_inference_failures_total"));

    // Predictions: class counts as the training log predicts them; regression values.
    for (class, count) in &expected_classes {
        assert_eq!(
            must(
                &s,
                "ferrum_predictions_total",
                &[
                    ("model", "breast-cancer"),
                    ("version", "1"),
                    ("class", class.as_str())
                ]
            ),
            *count,
            "class {class}"
        );
    }
    assert_eq!(must(&s, "ferrum_prediction_value_count", &d1), 4.0);
    let sum = must(&s, "ferrum_prediction_value_sum", &d1);
    assert!((sum - diabetes_sum).abs() < 1e-3, "{sum} vs {diabetes_sum}");

    // Identity.
    let (_, manifest) = server.get("/manifest").await;
    let commit = manifest["build"]["git_commit"].as_str().unwrap();
    assert_eq!(
        must(
            &s,
            "ferrum_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("git_commit", commit),
                ("image_tag", "registry.example/ferrum:test")
            ]
        ),
        1.0
    );
    for model in ["breast-cancer", "diabetes"] {
        let entry = manifest_entry(model);
        assert_eq!(
            must(
                &s,
                "ferrum_model_info",
                &[
                    ("model", model),
                    ("version", "1"),
                    ("sha256", entry["onnx"]["sha256"].as_str().unwrap()),
                    (
                        "snapshot_id",
                        entry["dataset"]["snapshot_id"].as_str().unwrap()
                    ),
                    // The only version of each model takes all its traffic.
                    ("role", "primary"),
                ]
            ),
            1.0
        );
    }
    // Drift monitoring is off here: no drift series at all.
    assert!(!text.contains("ferrum_feature_drift_psi{"));

    // Every family has help text and promtool's linter accepts the scrape.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: no help");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.txt");
    std::fs::write(&path, &text).unwrap();
    let checked = promtool()
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Sends `n` concurrent requests of `rows_each` diabetes rows and scrapes: returns the samples.
async fn concurrent_diabetes_traffic(server: &Server, n: usize, rows_each: usize) -> Vec<Sample> {
    let log = std::sync::Arc::new(training_log("diabetes"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (url, log) = (server.url("/models/diabetes/predict"), log.clone());
        tasks.spawn(async move {
            let instances: Vec<Value> = (0..rows_each)
                .map(|k| log[(i * rows_each + k) % log.len()]["features"].clone())
                .collect();
            let response = common::client()
                .post(url)
                .json(&json!({ "instances": instances }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    parse_scrape(&scrape(server).await)
}

/// Without batching every request is its own ONNX Runtime call: 24 concurrent requests of 3
/// rows are 24 observations of 3 rows, 24 successes and 24 queue waits.
#[tokio::test]
async fn without_batching_each_request_is_one_recorded_call() {
    let server = Server::start_ready(&["--batching", "off", "--drift-window-rows", "0"]).await;
    let s = concurrent_diabetes_traffic(&server, 24, 3).await;
    let d1 = [("model", "diabetes"), ("version", "1")];
    assert_eq!(
        must(&s, "ferrum_inference_duration_seconds_count", &d1),
        24.0
    );
    assert_eq!(must(&s, "ferrum_inference_batch_rows_count", &d1), 24.0);
    assert_eq!(must(&s, "ferrum_inference_batch_rows_sum", &d1), 72.0);
    fn le(bound: &str) -> [(&str, &str); 3] {
        [("model", "diabetes"), ("version", "1"), ("le", bound)]
    }
    assert_eq!(
        must(&s, "ferrum_inference_batch_rows_bucket", &le("2")),
        0.0
    );
    assert_eq!(
        must(&s, "ferrum_inference_batch_rows_bucket", &le("4")),
        24.0
    );
    assert_eq!(must(&s, "ferrum_inference_success_total", &d1), 24.0);
    assert_eq!(must(&s, "ferrum_inference_requests_total", &d1), 24.0);
    assert_eq!(
        must(&s, "ferrum_inference_queue_wait_seconds_count", &d1),
        24.0
    );
}

/// With batching, concurrent requests merge into fewer calls (how many depends on timing), but
/// the call metrics stay consistent and exact where they can be: one duration, one row-count
/// observation and one success per call, every request's rows counted exactly once, and the
/// request-level counters one per request. (Exact merges are checked deterministically in
/// tests/batching.rs: `a_merged_batch_is_recorded_as_one_call`.)
#[tokio::test]
async fn with_batching_calls_are_recorded_once_and_requests_once() {
    let server = Server::start_ready(&[
        "--batching",
        "on",
        "--sessions-per-model",
        "1",
        "--drift-window-rows",
        "0",
    ])
    .await;
    let s = concurrent_diabetes_traffic(&server, 48, 2).await;
    let d1 = [("model", "diabetes"), ("version", "1")];
    let calls = must(&s, "ferrum_inference_success_total", &d1);
    assert!((1.0..=48.0).contains(&calls), "{calls} calls");
    assert_eq!(
        must(&s, "ferrum_inference_duration_seconds_count", &d1),
        calls
    );
    assert_eq!(must(&s, "ferrum_inference_batch_rows_count", &d1), calls);
    assert_eq!(must(&s, "ferrum_inference_batch_rows_sum", &d1), 96.0);
    assert_eq!(must(&s, "ferrum_inference_requests_total", &d1), 48.0);
    assert_eq!(
        must(&s, "ferrum_inference_queue_wait_seconds_count", &d1),
        48.0
    );
}

/// Every inference route's answers (`/predict`, `/explain`, V2 `infer`) carry TEI's timing
/// headers, in milliseconds, beside the version that answered.
#[tokio::test]
async fn inference_responses_carry_queue_and_inference_time() {
    let server = Server::start_ready(&[]).await;
    let row = &training_log("diabetes")[0];
    let rows = json!({"instances": [row["features"]]});
    let tensor = json!({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32",
                                    "data": vec![0.0; 10]}]});
    for (path, body) in [
        ("/models/diabetes/predict", &rows),
        ("/models/diabetes/explain", &rows),
        ("/v2/models/diabetes/infer", &tensor),
    ] {
        let response = common::client()
            .post(server.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["x-ferrum-version"], "1", "{path}");
        for header in ["x-queue-time", "x-inference-time"] {
            let text = response.headers()[header].to_str().unwrap();
            let ms: f64 = text.parse().unwrap();
            // Generous: a one-row inference takes microseconds; the bound only catches units.
            assert!((0.0..10_000.0).contains(&ms), "{path} {header}: {text}");
            assert_eq!(text.split('.').nth(1).map(str::len), Some(3), "{text}");
        }
    }
    // A rejected request has no timing (nothing ran).
    let response = common::client()
        .post(server.url("/models/diabetes/predict"))
        .json(&json!({"instances": [[1]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(response.headers().get("x-inference-time").is_none());
}

/// A tiny deterministic generator (xorshift64*), so the drift test needs no crate and always
/// sends the same rows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// The searchsorted-left bin of `x`.
fn bin_of(edges: &[f64], x: f64) -> usize {
    edges.iter().filter(|&&e| e < x).count()
}

/// `n` values of one feature drawn from its baseline: as many per bin as the training fractions
/// say (largest remainders), each value inside its bin, in random order.
fn draw_feature(distribution: &Value, n: usize, rng: &mut Rng) -> Vec<f32> {
    let edges: Vec<f64> = distribution["bin_edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    let fractions: Vec<f64> = distribution["fractions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_f64().unwrap())
        .collect();
    let (min, max) = (
        distribution["min"].as_f64().unwrap(),
        distribution["max"].as_f64().unwrap(),
    );
    let exact: Vec<f64> = fractions.iter().map(|f| f * n as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let short = n - counts.iter().sum::<usize>();
    for &bin in order.iter().take(short) {
        counts[bin] += 1;
    }
    let mut values = Vec::with_capacity(n);
    for (bin, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let x = if bin == 0 {
            min
        } else if bin == edges.len() {
            max
        } else {
            (edges[bin - 1] + edges[bin]) / 2.0
        } as f32;
        assert_eq!(bin_of(&edges, f64::from(x)), bin, "value {x} left its bin");
        values.extend(std::iter::repeat_n(x, count));
    }
    rng.shuffle(&mut values);
    values
}

/// `n` rows (arrays in model feature order) drawn feature by feature from the baseline;
/// `shift` adds `(feature, amount)` to one feature.
fn rows_from_baseline(model: &str, n: usize, seed: u64, shift: Option<(&str, f64)>) -> Vec<Value> {
    let baseline = read_json(&repo_root().join(format!("models/{model}/1/baseline.json")));
    let names = feature_names(model);
    let mut rng = Rng(seed);
    let columns: Vec<Vec<f32>> = names
        .iter()
        .map(|name| {
            let mut column = draw_feature(&baseline["features"][name], n, &mut rng);
            if let Some((shifted, amount)) = shift {
                if shifted == name {
                    column.iter_mut().for_each(|x| *x += amount as f32);
                }
            }
            column
        })
        .collect();
    (0..n)
        .map(|i| json!(columns.iter().map(|c| c[i]).collect::<Vec<f32>>()))
        .collect()
}

/// Polls the scrape until `done` holds, up to a generous deadline.
async fn scrape_until(
    server: &Server,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = parse_scrape(&scrape(server).await);
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows drawn from the training baseline keep every feature's PSI low; the same rows with one
/// feature shifted by two training standard deviations push that feature's PSI far above 0.25
/// while the others stay low.
#[tokio::test]
async fn live_drift_stays_low_for_baseline_rows_and_flags_a_shifted_feature() {
    const MODEL: &str = "breast-cancer";
    const WINDOW: usize = 500;
    let server = Server::start_ready(&[
        "--drift-window-rows",
        "500",
        "--drift-min-rows",
        "500",
        "--drift-interval-ms",
        "100",
    ])
    .await;
    let names = feature_names(MODEL);
    fn labels(feature: &str) -> [(&str, &str); 3] {
        [("model", MODEL), ("version", "1"), ("feature", feature)]
    }
    let window = [("model", MODEL), ("version", "1")];
    let send = |rows: Vec<Value>| {
        let server = &server;
        async move {
            for batch in rows.chunks(50) {
                let (status, body) = server
                    .post(
                        &format!("/models/{MODEL}/predict"),
                        &json!({"instances": batch}),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        }
    };

    send(rows_from_baseline(MODEL, WINDOW, 7, None)).await;
    let s = scrape_until(&server, "the first window", |s| {
        value(s, "ferrum_drift_rows_total", &window) == Some(WINDOW as f64)
    })
    .await;
    assert_eq!(must(&s, "ferrum_drift_window_rows", &window), WINDOW as f64);
    for name in &names {
        let psi = must(&s, "ferrum_feature_drift_psi", &labels(name));
        assert!(
            psi < 0.01,
            "{name}: PSI {psi} for rows drawn from the baseline"
        );
    }
    for output in ["class", "probability"] {
        let psi = must(
            &s,
            "ferrum_prediction_drift_psi",
            &[("model", MODEL), ("version", "1"), ("output", output)],
        );
        assert!(psi.is_finite() && psi >= 0.0, "{output}: {psi}");
    }

    let baseline = read_json(&repo_root().join(format!("models/{MODEL}/1/baseline.json")));
    let std = baseline["features"]["mean_radius"]["std"].as_f64().unwrap();
    send(rows_from_baseline(
        MODEL,
        WINDOW,
        8,
        Some(("mean_radius", 2.0 * std)),
    ))
    .await;
    let s = scrape_until(&server, "the shifted window", |s| {
        value(s, "ferrum_drift_rows_total", &window) == Some(2.0 * WINDOW as f64)
    })
    .await;
    let shifted = must(&s, "ferrum_feature_drift_psi", &labels("mean_radius"));
    assert!(
        shifted > 0.25,
        "mean_radius PSI {shifted} after a 2-sigma shift"
    );
    for name in names.iter().filter(|n| *n != "mean_radius") {
        let psi = must(&s, "ferrum_feature_drift_psi", &labels(name));
        assert!(
            psi < 0.01,
            "{name}: PSI {psi} although only mean_radius moved"
        );
    }
    // Nothing was dropped on the way.
    assert_eq!(
        value(&s, "ferrum_drift_dropped_rows_total", &window).unwrap_or(0.0),
        0.0
    );
}

/// The example alert rules are valid, and their unit tests (a drifted feature fires, a
/// healthy one does not; a small window does not alert) pass.
#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let root = repo_root();
    for args in [
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["test", "rules", "deploy/prometheus/alerts.test.yml"],
    ] {
        let out = promtool().args(&args).current_dir(&root).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Remote feature-store lookups through the mock store with a row cache: calls, their
/// failures by kind, and cache hits and misses are counted exactly.
#[tokio::test]
async fn feature_store_calls_and_cache_are_counted_exactly() {
    let store = Server::spawn(feature_store_command(&[]));
    let server = Server::start_ready(&[
        "--feature-store-uri",
        &store.base,
        "--feature-store-cache-ttl-ms",
        "600000",
    ])
    .await;
    let log = training_log("diabetes");
    let id = |i: usize| log[i]["entity_id"].as_str().unwrap().to_string();
    let (a, b, c) = (id(0), id(1), id(2));
    let lookups: [(Vec<&str>, u16); 3] = [
        // Two misses: one call.
        (vec![&a, &b], 200),
        // Two hits, one miss: one call, for c only.
        (vec![&a, &b, &c], 200),
        // An unknown entity: one call, which fails.
        (vec!["diabetes-no-such-entity"], 404),
    ];
    for (ids, expected) in lookups {
        let (status, body) = server
            .post("/models/diabetes/predict", &json!({ "entity_ids": ids }))
            .await;
        assert_eq!(status, expected, "{body}");
    }
    let s = parse_scrape(&scrape(&server).await);
    assert_eq!(must(&s, "ferrum_feature_store_cache_hits_total", &[]), 2.0);
    assert_eq!(
        must(&s, "ferrum_feature_store_cache_misses_total", &[]),
        4.0
    );
    assert_eq!(
        must(
            &s,
            "ferrum_feature_store_request_duration_seconds_count",
            &[]
        ),
        3.0
    );
    assert_eq!(
        must(
            &s,
            "ferrum_feature_store_errors_total",
            &[("kind", "entity_not_found")]
        ),
        1.0
    );
    // Rows looked up by id are inferred like inline rows: 2 then 3.
    let d1 = [("model", "diabetes"), ("version", "1")];
    assert_eq!(must(&s, "ferrum_inference_batch_rows_sum", &d1), 5.0);
}

/// Explanation drift: the `served` gauge is the mean |attribution| of the served rows (here
/// exactly the rows this test sent, so /explain on the same rows must give the same numbers),
/// and the `training` gauge is published beside it.
#[tokio::test]
async fn explanation_drift_gauges_are_mean_absolute_attributions() {
    let server = common::Server::start_ready(&[
        "--explain-drift-interval-ms",
        "200",
        "--explain-drift-rows",
        "32",
    ])
    .await;
    let rows: Vec<serde_json::Value> = common::training_log("diabetes")[..5]
        .iter()
        .map(|r| r["features"].clone())
        .collect();
    let body = serde_json::json!({ "instances": rows });
    let (status, _) = server.post("/models/diabetes/predict", &body).await;
    assert_eq!(status, 200);
    let (status, explained) = server.post("/models/diabetes/explain", &body).await;
    assert_eq!(status, 200, "{explained}");
    let explanations = explained["explanations"].as_array().unwrap();
    let expected_bmi = explanations
        .iter()
        .map(|e| e["attributions"]["bmi"].as_f64().unwrap().abs())
        .sum::<f64>()
        / explanations.len() as f64;

    let gauge = |scrape: &str, population: &str| -> Option<f64> {
        scrape
            .lines()
            .find(|l| {
                l.starts_with("ferrum_explanation_mean_abs_attribution{")
                    && l.contains(r#"model="diabetes""#)
                    && l.contains(r#"feature="bmi""#)
                    && l.contains(&format!(r#"population="{population}""#))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let scrape = server.scrape().await;
        if let (Some(served), Some(training)) =
            (gauge(&scrape, "served"), gauge(&scrape, "training"))
        {
            assert!(
                (served - expected_bmi).abs() < 1e-9,
                "served {served} vs /explain {expected_bmi}"
            );
            assert!(training > 0.0, "training reference {training}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no explanation drift gauges:\n{scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
