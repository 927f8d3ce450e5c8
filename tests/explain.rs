//! `/explain` against the real server: every training-log row is explained, additivity holds
//! against ONNX Runtime's own outputs, the value is what `/predict` reports, bad input gets
//! `/predict`'s errors, limits are named, and explanations never stall `/predict`.
//! (The comparison with Python `shap` is in tests/python/test_explain_reference.py.)

mod common;

use std::time::{Duration, Instant};

use common::{read_json, repo_root, training_log, Server};
use serde_json::{json, Value};

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The feature names of a model, in manifest order.
fn feature_names(model: &str) -> Vec<String> {
    read_json(&repo_root().join("manifest.json"))["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .unwrap()["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

fn attributions(e: &Value, names: &[String]) -> Vec<f64> {
    let map = e["attributions"].as_object().unwrap();
    assert_eq!(map.len(), names.len(), "{e}");
    names.iter().map(|n| map[n].as_f64().unwrap()).collect()
}

fn f(e: &Value, key: &str) -> f64 {
    e[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number '{key}' in {e}"))
}

/// Checks the residual is what it claims to be, and returns it.
fn checked_residual(e: &Value, names: &[String]) -> f64 {
    let sum: f64 = attributions(e, names).iter().sum();
    let residual = f(e, "residual");
    assert!(
        (f(e, "value") - f(e, "base_value") - sum - residual).abs() < 1e-9,
        "residual is not value - base_value - sum: {e}"
    );
    residual
}

async fn explain(server: &Server, path: &str, body: Value) -> Vec<Value> {
    let (status, response) = server.post(path, &body).await;
    assert_eq!(status, 200, "{path} {body}: {response}");
    response["explanations"].as_array().unwrap().clone()
}

/// Every training-log row of the tree model, in both output spaces and for both classes: Tree
/// SHAP, the predicted class by default, the value ONNX Runtime reports, and additivity within
/// float32 accumulation error (margins) or 1e-6 (probabilities).
#[tokio::test]
async fn tree_model_explains_every_log_row_in_both_spaces() {
    let server = Server::start_ready(&[]).await;
    let names = feature_names("breast-cancer");
    let rows = training_log("breast-cancer");
    let instances: Vec<Value> = rows.iter().map(|r| r["features"].clone()).collect();
    let path = "/models/breast-cancer/explain";
    let mut worst = (0.0f64, 0.0f64);
    for chunk in instances.chunks(32).zip(rows.chunks(32)) {
        let (instances, logged) = chunk;
        let default = explain(&server, path, json!({ "instances": instances })).await;
        for (e, row) in default.iter().zip(logged) {
            assert_eq!(e["class"], row["prediction"]["label"], "predicted class");
            assert_eq!(
                (e["method"].as_str(), e["output"].as_str()),
                (Some("tree"), Some("margin"))
            );
            let p = row["prediction"]["probabilities"][e["class"].as_str().unwrap()]
                .as_f64()
                .unwrap();
            // ONNX Runtime's margin, through ONNX Runtime's logistic, is /predict's probability.
            assert!((sigmoid(f(e, "value")) - p).abs() < 1e-6, "{e} vs {p}");
            worst.0 = worst.0.max(checked_residual(e, &names).abs());
        }
        for class in ["malignant", "benign"] {
            let margin = explain(
                &server,
                path,
                json!({"instances": instances, "class": class, "output": "margin"}),
            )
            .await;
            let probability = explain(
                &server,
                path,
                json!({"instances": instances, "class": class, "output": "probability"}),
            )
            .await;
            for ((m, p), row) in margin.iter().zip(&probability).zip(logged) {
                assert_eq!(
                    (m["class"].as_str(), p["class"].as_str()),
                    (Some(class), Some(class))
                );
                assert_eq!(p["output"], "probability");
                assert_eq!(p["method"], "tree");
                // The probability explained is exactly the one /predict reports.
                assert_eq!(p["value"], row["prediction"]["probabilities"][class]);
                worst.0 = worst.0.max(checked_residual(m, &names).abs());
                worst.1 = worst.1.max(checked_residual(p, &names).abs());
            }
        }
    }
    assert!(worst.0 < 2e-4, "margin residual {}", worst.0);
    assert!(worst.1 < 1e-6, "probability residual {}", worst.1);
    assert!(
        worst.0 > 0.0,
        "the margin residual is ONNX Runtime's float32 sum, not zero"
    );
}

/// The two classes of the binary tree model mirror each other: margins are negatives, and
/// probabilities are complements (base values add up to one, attributions are negatives).
#[tokio::test]
async fn binary_classes_mirror_each_other() {
    let server = Server::start_ready(&[]).await;
    let names = feature_names("breast-cancer");
    let row = &training_log("breast-cancer")[3]["features"];
    for output in ["margin", "probability"] {
        let get = |class: &'static str| {
            let server = &server;
            async move {
                explain(
                    server,
                    "/explain",
                    json!({"instances": [row], "class": class, "output": output}),
                )
                .await
                .remove(0)
            }
        };
        let (malignant, benign) = (get("malignant").await, get("benign").await);
        for (a, b) in attributions(&malignant, &names)
            .iter()
            .zip(attributions(&benign, &names))
        {
            assert!((a + b).abs() < 1e-12, "{output}: {a} vs {b}");
        }
        let (ba, bb) = (f(&malignant, "base_value"), f(&benign, "base_value"));
        let expected = if output == "margin" { 0.0 } else { 1.0 };
        assert!((ba + bb - expected).abs() < 1e-12, "{output}: {ba} + {bb}");
    }
}

/// The regressor (an MLP, 10 features) gets exact enumeration of every training-log row: the
/// value is /predict's, and the attributions add up to it.
#[tokio::test]
async fn exact_method_explains_every_log_row_of_the_regressor() {
    let server = Server::start_ready(&[]).await;
    let names = feature_names("diabetes");
    let rows = training_log("diabetes");
    let mut base = None;
    for chunk in rows.chunks(16) {
        let instances: Vec<Value> = chunk.iter().map(|r| r["features"].clone()).collect();
        let out = explain(
            &server,
            "/models/diabetes/versions/1/explain",
            json!({ "instances": instances }),
        )
        .await;
        assert_eq!(out.len(), chunk.len());
        for (e, row) in out.iter().zip(chunk) {
            assert_eq!(
                (e["method"].as_str(), e["output"].as_str()),
                (Some("exact"), Some("value"))
            );
            assert!(e.get("class").is_none(), "{e}");
            assert_eq!(e["value"], row["prediction"]["value"]);
            assert!(checked_residual(e, &names).abs() < 1e-9, "{e}");
            // One background set: one base value for every row.
            let b = f(e, "base_value");
            assert_eq!(*base.get_or_insert(b), b);
            assert!(attributions(e, &names).iter().any(|a| a.abs() > 1e-3));
        }
    }
}

/// The three routes address the same model (the default route serves the default model) and
/// answer identically; `top_k` keeps the largest attributions, largest first.
#[tokio::test]
async fn every_route_addresses_the_model_and_top_k_trims() {
    let server = Server::start_ready(&[]).await;
    let manifest = read_json(&repo_root().join("manifest.json"));
    let default = manifest["default_model"].as_str().unwrap();
    let row = &training_log(default)[0]["features"];
    let body = json!({"instances": [row]});
    let mut answers = Vec::new();
    for path in [
        "/explain".to_string(),
        format!("/models/{default}/explain"),
        format!("/models/{default}/versions/1/explain"),
    ] {
        let (status, response) = server.post(&path, &body).await;
        assert_eq!(status, 200, "{path}: {response}");
        assert_eq!(response["model"]["name"], default);
        assert_eq!(response["model"]["version"], "1");
        answers.push(response["explanations"].clone());
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);

    let full = &answers[0][0];
    let trimmed = &explain(&server, "/explain", json!({"instances": [row], "top_k": 3})).await[0];
    let kept = trimmed["attributions"].as_object().unwrap();
    assert_eq!(kept.len(), 3);
    let mut magnitudes: Vec<(String, f64)> = full["attributions"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect();
    magnitudes.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let expected: Vec<&String> = magnitudes.iter().take(3).map(|(k, _)| k).collect();
    let got: Vec<&String> = kept.keys().collect(); // serde_json sorts object keys
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(got, expected_sorted, "top_k keeps the 3 largest");
    // The residual still accounts for every feature.
    assert_eq!(trimmed["residual"], full["residual"]);
}

/// Every malformed body gets exactly the status and code `/predict` gives it.
#[tokio::test]
async fn bad_input_gets_the_same_errors_as_predict() {
    let server = Server::start_ready(&[]).await;
    let row = training_log("diabetes")[0]["features"].clone();
    let mut missing = row.clone();
    missing.as_object_mut().unwrap().remove("bmi");
    let mut unknown = row.clone();
    unknown["height"] = json!(1.0);
    let mut text = row.clone();
    text["bmi"] = json!("high");
    let bodies = [
        json!({"instances": [missing]}),
        json!({"instances": [unknown]}),
        json!({"instances": [text]}),
        json!({"instances": [[1, 2, 3]]}),
        json!({"instances": []}),
        json!({"instances": [row], "extra": 1}),
        json!({}),
        json!({"instances": 5}),
        json!({"entity_ids": ["no-such-entity"]}),
        json!({"instances": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 1e39]]}),
    ];
    let mut codes = Vec::new();
    for body in &bodies {
        let (ps, pb) = server.post("/models/diabetes/predict", body).await;
        let (es, eb) = server.post("/models/diabetes/explain", body).await;
        assert!((400..500).contains(&ps), "{body}: {pb}");
        assert_eq!((es, &eb), (ps, &pb), "{body}");
        codes.push(eb["code"].as_str().unwrap().to_string());
    }
    assert_eq!(
        codes,
        [
            "missing_feature",
            "unknown_feature",
            "non_numeric_value",
            "wrong_row_length",
            "empty_instances",
            "unknown_field",
            "missing_instances",
            "invalid_field",
            "entity_not_found",
            "non_finite_value"
        ]
    );
    for (path, content_type, body) in [
        ("/models/diabetes", "application/json", b"{".to_vec()),
        ("/models/diabetes", "text/plain", b"{}".to_vec()),
        ("/models/nope", "application/json", b"{}".to_vec()),
        (
            "/models/diabetes/versions/9",
            "application/json",
            b"{}".to_vec(),
        ),
    ] {
        let predict = server
            .post_raw(&format!("{path}/predict"), content_type, body.clone())
            .await;
        let explained = server
            .post_raw(&format!("{path}/explain"), content_type, body)
            .await;
        assert!((400..500).contains(&predict.0), "{path}: {predict:?}");
        assert_eq!(explained, predict, "{path} {content_type}");
    }
}

/// Requests only `/explain` refuses: an unknown class, classifier options on a regressor, and
/// anything over the configured limits, with the limit named.
#[tokio::test]
async fn explain_errors_name_the_problem_and_the_limit() {
    let server = Server::start_ready(&[
        "--explain-max-rows",
        "4",
        "--explain-max-evaluations",
        "300000",
    ])
    .await;
    let tree_row = training_log("breast-cancer")[0]["features"].clone();
    let mlp_row = training_log("diabetes")[0]["features"].clone();
    let cases = [
        (
            "/explain",
            json!({"instances": [tree_row], "class": "unknown"}),
            "unknown_class",
            "classes: malignant, benign",
        ),
        (
            "/models/diabetes/explain",
            json!({"instances": [mlp_row], "class": "benign"}),
            "invalid_field",
            "field 'class': applies to classifiers only",
        ),
        (
            "/models/diabetes/explain",
            json!({"instances": [mlp_row], "output": "margin"}),
            "invalid_field",
            "field 'output': applies to classifiers only",
        ),
        (
            "/explain",
            json!({"instances": [tree_row], "output": "logit"}),
            "invalid_field",
            "output",
        ),
        (
            "/explain",
            json!({"instances": [tree_row], "top_k": 0}),
            "invalid_field",
            "top_k",
        ),
        (
            "/explain",
            json!({"instances": [tree_row, tree_row, tree_row, tree_row, tree_row]}),
            "explanation_too_expensive",
            "EXPLAIN_MAX_ROWS",
        ),
        (
            // 3 rows x (1022 coalitions x 100 background rows + 1) = 306,603 > 300,000
            "/models/diabetes/explain",
            json!({"instances": [mlp_row, mlp_row, mlp_row]}),
            "explanation_too_expensive",
            "needs 306603 model evaluations; the server allows 300000 per request (EXPLAIN_MAX_EVALUATIONS",
        ),
    ];
    for (path, body, code, text) in cases {
        let (status, response) = server.post(path, &body).await;
        assert_eq!(status, 422, "{body}: {response}");
        assert_eq!(response["code"], code, "{body}: {response}");
        let message = response["error"].as_str().unwrap();
        assert!(message.contains(text), "'{message}' lacks '{text}'");
    }
    // /predict keeps its own row limit.
    let (status, _) = server
        .post(
            "/models/diabetes/predict",
            &json!({"instances": vec![mlp_row.clone(); 5]}),
        )
        .await;
    assert_eq!(status, 200);
    // Two rows fit the budget.
    let ok = explain(
        &server,
        "/models/diabetes/explain",
        json!({"instances": [mlp_row, mlp_row]}),
    )
    .await;
    assert_eq!(ok[0], ok[1]);
}

/// Forced onto the sampling method (exact enumeration capped at 4 features), the regressor's
/// explanations report their permutation count, add up exactly, repeat exactly (fixed seed),
/// and approach the exact attributions as permutations grow; their standard errors shrink as
/// the square root of the permutations and bound the distance to the exact values.
#[tokio::test]
async fn permutation_sampling_is_seeded_additive_and_converges() {
    let exact_server = Server::start_ready(&[]).await;
    let sampled = Server::start_ready(&["--explain-max-exact-features", "4"]).await;
    let many = Server::start_ready(&[
        "--explain-max-exact-features",
        "4",
        "--explain-permutations",
        "400",
    ])
    .await;
    let names = feature_names("diabetes");
    let path = "/models/diabetes/explain";
    let instances: Vec<Value> = training_log("diabetes")[..4]
        .iter()
        .map(|r| r["features"].clone())
        .collect();
    let body = json!({ "instances": instances });
    let exact = explain(&exact_server, path, body.clone()).await;
    let few = explain(&sampled, path, body.clone()).await;
    assert_eq!(few, explain(&sampled, path, body.clone()).await, "seeded");
    let lots = explain(&many, path, body).await;
    let mut errors = (0.0, 0.0);
    let (mut standard_errors, mut within_two, mut features) = ((0.0, 0.0), 0, 0);
    for ((e, s), l) in exact.iter().zip(&few).zip(&lots) {
        assert_eq!(
            (s["method"].as_str(), s["permutations"].as_u64()),
            (Some("permutation"), Some(10))
        );
        assert_eq!(l["permutations"], 400);
        assert_eq!(s["value"], e["value"]);
        assert!(checked_residual(s, &names).abs() < 1e-9, "{s}");
        assert!(checked_residual(l, &names).abs() < 1e-9, "{l}");
        let exact_phi = attributions(e, &names);
        let l1 =
            |phi: Vec<f64>| -> f64 { phi.iter().zip(&exact_phi).map(|(a, b)| (a - b).abs()).sum() };
        errors.0 += l1(attributions(s, &names));
        errors.1 += l1(attributions(l, &names));
        assert!(e.get("standard_errors").is_none(), "exact: {e}");
        for (name, exact_value) in names.iter().zip(&exact_phi) {
            let (se_few, se_lots) = (
                s["standard_errors"][name].as_f64().unwrap(),
                l["standard_errors"][name].as_f64().unwrap(),
            );
            assert!(
                se_few >= 0.0 && se_lots >= 0.0,
                "{name}: {se_few} {se_lots}"
            );
            standard_errors.0 += se_few;
            standard_errors.1 += se_lots;
            // 200 pairs estimate their spread well (5 do not: 4 degrees of freedom).
            let off = (l["attributions"][name].as_f64().unwrap() - exact_value).abs();
            within_two += usize::from(off <= 2.0 * se_lots);
            features += 1;
        }
    }
    // 40x the permutations: about sqrt(40) = 6.3x smaller errors.
    assert!(
        standard_errors.1 < standard_errors.0 / 3.0,
        "{standard_errors:?}"
    );
    // About 95% of estimates within two standard errors of the exact value.
    assert!(
        within_two * 10 >= features * 9,
        "{within_two} of {features} within 2 standard errors"
    );
    let scale: f64 = exact
        .iter()
        .flat_map(|e| attributions(e, &names))
        .map(f64::abs)
        .sum();
    assert!(errors.1 < errors.0, "more permutations, closer: {errors:?}");
    assert!(
        errors.1 < 0.05 * scale,
        "400 permutations: {errors:?} vs {scale}"
    );
}

/// While explanations run (one computing, one queued), `/predict` and health keep answering
/// promptly: explanations use one blocking thread and one session, never the async workers.
#[tokio::test]
async fn predict_is_not_stalled_by_explanations() {
    let server = Server::start_ready(&[
        "--explain-max-exact-features",
        "4",
        "--explain-permutations",
        "300",
        "--explain-max-evaluations",
        "100000000",
        // The queued explanation finishes after the first: no 504 on a loaded machine.
        "--request-timeout-ms",
        "600000",
    ])
    .await;
    let row = training_log("diabetes")[0]["features"].clone();
    let heavy = json!({"instances": vec![row.clone(); 32]}); // 32 x 300 x 9 x 100 = 8.6M rows
    let started = Instant::now();
    let explanations: Vec<_> = (0..2)
        .map(|_| {
            let client = common::client();
            let url = server.url("/models/diabetes/explain");
            let body = heavy.clone();
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .timeout(Duration::from_secs(300))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slowest = Duration::ZERO;
    let mut predicted_at = started;
    for _ in 0..20 {
        let t = Instant::now();
        let (status, body) = server
            .post("/models/diabetes/predict", &json!({"instances": [row]}))
            .await;
        assert_eq!(status, 200, "{body}");
        let (ready, _) = server.get("/health/ready").await;
        assert_eq!(ready, 200);
        slowest = slowest.max(t.elapsed());
        predicted_at = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut finished = Vec::new();
    for handle in explanations {
        let (status, at) = handle.await.unwrap();
        assert_eq!(status, 200);
        finished.push(at);
    }
    // The predictions all happened while the explanations were still computing...
    assert!(
        finished.iter().all(|&at| at > predicted_at),
        "explanations were too quick to test"
    );
    // ...and none waited behind them.
    assert!(
        slowest < Duration::from_millis(250),
        "slowest /predict: {slowest:?}"
    );
}

/// A client that gives up cancels its explanation between model batches: the server logs it
/// and the next explanation does not wait for the abandoned one.
#[tokio::test]
async fn an_abandoned_explanation_is_cancelled() {
    let server = Server::start_ready(&[
        "--explain-max-exact-features",
        "4",
        "--explain-permutations",
        "2000",
        "--explain-max-evaluations",
        "100000000",
    ])
    .await;
    let row = training_log("diabetes")[0]["features"].clone();
    // 32 x 2000 x 9 x 100 = 57.6M model rows: many seconds of work.
    let result = common::client()
        .post(server.url("/models/diabetes/explain"))
        .timeout(Duration::from_millis(300))
        .json(&json!({"instances": vec![row.clone(); 32]}))
        .send()
        .await;
    assert!(result.is_err(), "the client should have timed out");
    let abandoned = Instant::now();
    let deadline = abandoned + Duration::from_secs(5);
    while !server.log_text().contains("explanation cancelled") {
        assert!(
            Instant::now() < deadline,
            "no cancellation; logs:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slot is free again: a small explanation answers at once.
    let (status, _) = server
        .post("/models/diabetes/explain", &json!({"instances": [row]}))
        .await;
    assert_eq!(status, 200);
    assert!(abandoned.elapsed() < Duration::from_secs(5));
}

/// `entity_ids` are looked up exactly as for `/predict` (the same feature-store function): the
/// explanation of a logged entity is the explanation of its logged features, and the ids are
/// echoed beside the explanations.
#[tokio::test]
async fn entity_ids_explain_like_their_features() {
    let server = Server::start_ready(&[]).await;
    for model in ["breast-cancer", "diabetes"] {
        let rows = &training_log(model)[..3];
        let ids: Vec<Value> = rows.iter().map(|r| r["entity_id"].clone()).collect();
        let instances: Vec<Value> = rows.iter().map(|r| r["features"].clone()).collect();
        let path = format!("/models/{model}/explain");
        let (status, by_id) = server.post(&path, &json!({ "entity_ids": ids })).await;
        assert_eq!(status, 200, "{by_id}");
        assert_eq!(by_id["entity_ids"], Value::Array(ids.clone()));
        let (status, inline) = server.post(&path, &json!({ "instances": instances })).await;
        assert_eq!(status, 200, "{inline}");
        assert!(inline.get("entity_ids").is_none());
        assert_eq!(by_id["explanations"], inline["explanations"], "{model}");
    }
}

/// Past EXPLAIN_CONCURRENCY computing and EXPLAIN_MAX_QUEUED waiting, explanations are shed at
/// once with 503 `overloaded` and `Retry-After` (so waiting explanations cannot fill the
/// admission queue ahead of `/predict`), and `/predict` keeps answering.
#[tokio::test]
async fn explanations_past_the_queue_are_shed() {
    let server = Server::start_ready(&[
        "--explain-max-exact-features",
        "4",
        "--explain-permutations",
        "200",
        "--explain-max-evaluations",
        "100000000",
        "--explain-max-queued",
        "1",
        // On a loaded machine and a debug build the waiting one may take a while.
        "--request-timeout-ms",
        "600000",
    ])
    .await;
    let row = training_log("diabetes")[0]["features"].clone();
    let heavy = json!({"instances": vec![row.clone(); 32]}); // 32 x 200 x 9 x 100 = 5.8M rows
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let request = common::client()
                .post(server.url("/models/diabetes/explain"))
                .timeout(Duration::from_secs(300))
                .json(&heavy);
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").cloned();
                let body: Value = response.json().await.unwrap();
                (status, retry_after, body)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = server
        .post("/models/diabetes/predict", &json!({"instances": [row]}))
        .await;
    assert_eq!(status, 200);
    let mut statuses = Vec::new();
    for request in requests {
        let (status, retry_after, body) = request.await.unwrap();
        if status == 503 {
            assert_eq!(body["code"], "overloaded", "{body}");
            assert!(body["error"]
                .as_str()
                .unwrap()
                .contains("EXPLAIN_MAX_QUEUED"));
            assert_eq!(retry_after.unwrap(), "1");
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 200, 503, 503],
        "one computing, one waiting, two shed"
    );
}

/// Explanations are observable: timing headers on the response, and one observation of the
/// explain duration histogram per request, labelled with the method.
#[tokio::test]
async fn explanations_carry_timing_headers_and_are_counted_by_method() {
    let server = Server::start_ready(&[]).await;
    let row = &training_log("breast-cancer")[0];
    for _ in 0..2 {
        let response = common::client()
            .post(server.url("/models/breast-cancer/explain"))
            .json(&json!({"instances": [row["features"]]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        for header in ["x-inference-time", "x-queue-time"] {
            let ms: f64 = response.headers()[header]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(ms >= 0.0, "{header}: {ms}");
        }
    }
    let scrape = server.scrape().await;
    let line = scrape
        .lines()
        .find(|l| {
            l.starts_with("ferrum_explain_duration_seconds_count")
                && l.contains(r#"method="tree""#)
                && l.contains(r#"model="breast-cancer""#)
        })
        .unwrap_or_else(|| panic!("no explain duration count in:\n{scrape}"));
    assert!(line.ends_with(" 2"), "{line}");
}
