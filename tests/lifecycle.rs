//! Model lifecycle without restarts, on the real binary over a copy of the bundled repository:
//! a version added in `poll` mode is loaded and served, a split sends its share of keyed
//! traffic to each version (one key, one version), a promotion and a retirement apply live, a
//! model file replaced on disk is refused on its sha256 pin while the old one keeps serving,
//! SIGHUP rescans without ending the process, `explicit` mode's repository routes load and
//! unload behind the API key, and a shadow's disagreements are counted exactly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use common::{client, copy_dir, eventually, index, training_log, RepoCopy, Server};

const MODEL: &str = "breast-cancer";

/// What the lifecycle tests do to a repository copy while a server runs on it.
impl RepoCopy {
    /// Adds `version` of the model as a copy of version 1's folder and entry, the entry
    /// changed by `tweak`; the files first, then the manifest.
    fn add_version(&self, version: &str, tweak: impl FnOnce(&mut Value)) {
        copy_dir(
            &self.models().join(MODEL).join("1"),
            &self.models().join(MODEL).join(version),
        );
        let mut manifest = self.manifest();
        let models = manifest["models"].as_array_mut().unwrap();
        let mut entry = models
            .iter()
            .find(|m| m["name"] == MODEL && m["version"] == "1")
            .unwrap()
            .clone();
        entry["version"] = json!(version);
        entry["path"] = json!(format!("{MODEL}/{version}"));
        tweak(&mut entry);
        models.push(entry);
        self.write_manifest(&manifest);
    }

    fn set_rollout(&self, rollout: Value) {
        let mut manifest = self.manifest();
        manifest["rollout"] = rollout;
        self.write_manifest(&manifest);
    }

    /// The server over this copy, in `mode`, with `extra` flags.
    async fn serve(&self, mode: &str, extra: &[&str]) -> Server {
        let models = self.models();
        let manifest = self.manifest_path();
        let mut args = vec![
            "--models-dir",
            models.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--model-control-mode",
            mode,
            "--repository-poll-secs",
            "1",
            "--warmup-runs",
            "1",
            "--sessions-per-model",
            "1",
        ];
        args.extend_from_slice(extra);
        Server::start_ready(&args).await
    }
}

async fn state_of(server: &Server, version: &str, key: Option<&str>) -> Option<Value> {
    index(server, key)
        .await
        .remove(&(MODEL.to_string(), version.to_string()))
}

/// One prediction from `path` with an optional routing key: status, the version header and
/// the body.
async fn predict(
    server: &Server,
    path: &str,
    row: &Value,
    routing_key: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = client()
        .post(server.url(path))
        .json(&json!({"instances": [row]}));
    if let Some(key) = routing_key {
        request = request.header("x-ferrum-routing-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let version = response
        .headers()
        .get("x-ferrum-version")
        .map(|v| v.to_str().unwrap().to_string());
    (
        status,
        version,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Percent of answers per version over `n` requests with distinct routing keys.
async fn shares(server: &Server, row: &Value, n: usize, tag: &str) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        let key = format!("{tag}-client-{i}");
        let (status, version, body) =
            predict(server, &format!("/models/{MODEL}/predict"), row, Some(&key)).await;
        assert_eq!(status, 200, "{body}");
        let version = version.expect("x-ferrum-version on every answer");
        assert_eq!(body["model"]["version"], version.as_str());
        *counts.entry(version).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(v, c)| (v, 100.0 * c as f64 / n as f64))
        .collect()
}

async fn health_share(server: &Server, version: &str) -> Option<f64> {
    let (_, health) = server.get("/health").await;
    health["models"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == MODEL && m["version"] == version)
        .and_then(|m| m["share_percent"].as_f64())
}

#[tokio::test]
async fn poll_mode_adds_a_version_splits_promotes_and_retires_without_a_restart() {
    let repo = RepoCopy::new();
    let server = repo.serve("poll", &[]).await;
    let row = training_log(MODEL)[0].clone();
    let features = row["features"].clone();
    let (status, version, body) = predict(
        &server,
        &format!("/models/{MODEL}/predict"),
        &features,
        None,
    )
    .await;
    assert_eq!((status, version.as_deref()), (200, Some("1")));
    assert_eq!(body["predictions"][0], row["prediction"]);

    // Version 2 appears on disk and in the manifest: loaded, then the newest takes all.
    repo.add_version("2", |_| {});
    eventually(&server, "version 2 READY", || async {
        state_of(&server, "2", None)
            .await
            .is_some_and(|s| s["state"] == "READY")
    })
    .await;
    let (status, version, body) = predict(
        &server,
        &format!("/models/{MODEL}/versions/2/predict"),
        &features,
        None,
    )
    .await;
    assert_eq!((status, version.as_deref()), (200, Some("2")));
    assert_eq!(body["predictions"][0], row["prediction"]);
    let (_, version, _) = predict(
        &server,
        &format!("/models/{MODEL}/predict"),
        &features,
        None,
    )
    .await;
    assert_eq!(version.as_deref(), Some("2"));

    // A 10% canary: keyed shares within 3 points of the weights, one key one version.
    repo.set_rollout(json!({MODEL: {"split": {"1": 90, "2": 10}}}));
    eventually(&server, "the 90/10 split applied", || async {
        health_share(&server, "2").await == Some(10.0)
    })
    .await;
    let split = shares(&server, &features, 1000, "canary").await;
    assert!((split["1"] - 90.0).abs() <= 3.0, "{split:?}");
    assert!((split["2"] - 10.0).abs() <= 3.0, "{split:?}");
    for i in 0..20 {
        let key = format!("sticky-{i}");
        let path = format!("/models/{MODEL}/predict");
        let (_, first, _) = predict(&server, &path, &features, Some(&key)).await;
        for _ in 0..3 {
            assert_eq!(
                predict(&server, &path, &features, Some(&key)).await.1,
                first
            );
        }
    }
    let (_, health) = server.get("/health").await;
    let roles: BTreeMap<String, String> = health["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == MODEL)
        .map(|m| {
            (
                m["version"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(roles["1"], "primary");
    assert_eq!(roles["2"], "canary");
    let scrape = server.scrape().await;
    assert!(
        scrape.lines().any(|l| l.starts_with("ferrum_model_info{")
            && l.contains(r#"model="breast-cancer""#)
            && l.contains(r#"version="2""#)
            && l.contains(r#"role="canary""#)),
        "{scrape}"
    );

    // A repository load is refused outside explicit mode, as Triton refuses it.
    let (status, body) = server
        .post(&format!("/v2/repository/models/{MODEL}/load"), &json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("model_control_disabled"))
    );

    // Promote: everything to version 2.
    repo.set_rollout(json!({MODEL: {"split": {"2": 100}}}));
    eventually(&server, "version 2 promoted", || async {
        health_share(&server, "2").await == Some(100.0)
    })
    .await;
    let promoted = shares(&server, &features, 200, "promoted").await;
    assert_eq!(promoted, BTreeMap::from([("2".to_string(), 100.0)]));

    // Retire version 1: dropped from the manifest, drained, unloaded.
    let mut manifest = repo.manifest();
    manifest["models"]
        .as_array_mut()
        .unwrap()
        .retain(|m| !(m["name"] == MODEL && m["version"] == "1"));
    repo.write_manifest(&manifest);
    eventually(&server, "version 1 unloaded", || async {
        state_of(&server, "1", None).await.is_none()
    })
    .await;
    let (status, body) = server
        .post(
            &format!("/models/{MODEL}/versions/1/predict"),
            &json!({"instances": [features]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("version_not_found"))
    );
    let (status, version, _) = predict(
        &server,
        &format!("/models/{MODEL}/predict"),
        &features,
        None,
    )
    .await;
    assert_eq!((status, version.as_deref()), (200, Some("2")));
    let rollout = "breast-cancer: 1 90.00% primary, 2 10.00% canary";
    let logs = server
        .log_text_once(|logs| logs.contains(r#""message":"unloaded""#) && logs.contains(rollout))
        .await;
    assert!(logs.contains(r#""message":"unloaded""#), "{logs}");
    assert!(logs.contains(rollout), "{logs}");
}

#[tokio::test]
async fn a_model_file_replaced_on_disk_is_refused_and_the_old_one_keeps_serving() {
    let repo = RepoCopy::new();
    let server = repo.serve("poll", &[]).await;
    let other = repo.models().join("diabetes/1/model.onnx");
    let file = repo.models().join(format!("{MODEL}/1/model.onnx"));
    std::fs::copy(&other, &file).unwrap();
    eventually(&server, "the refusal in the index", || async {
        state_of(&server, "1", None).await.is_some_and(|s| {
            s["reason"]
                .as_str()
                .unwrap()
                .starts_with("sha256 pin mismatch")
        })
    })
    .await;
    let state = state_of(&server, "1", None).await.unwrap();
    let pin = repo.manifest()["models"][0]["onnx"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(state["state"], "READY", "{state}");
    let reason = state["reason"].as_str().unwrap();
    assert!(
        reason.ends_with(&format!(
            "the manifest pins {pin}; still serving sha256 {pin}"
        )),
        "{reason}"
    );
    // Still the old file's predictions, for every training-log row.
    for row in training_log(MODEL).iter().take(20) {
        let (status, version, body) = predict(
            &server,
            &format!("/models/{MODEL}/predict"),
            &row["features"],
            None,
        )
        .await;
        assert_eq!((status, version.as_deref()), (200, Some("1")));
        assert_eq!(body["predictions"][0], row["prediction"]);
    }
    let refused =
        |logs: &str| logs.contains("model file refused") && logs.contains("sha256 pin mismatch");
    let logs = server.log_text_once(refused).await;
    assert!(refused(&logs), "{logs}");
    let scrape = server.scrape().await;
    assert!(
        scrape.lines().any(|l| l.starts_with(
            r#"ferrum_model_load_failures_total{model="breast-cancer",reason="refused",version="1"}"#
        )),
        "{scrape}"
    );
    let (_, health) = server.get("/health").await;
    let entry = health["repository"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == MODEL)
        .unwrap();
    assert!(entry["reason"]
        .as_str()
        .unwrap()
        .starts_with("sha256 pin mismatch"));
    assert_eq!(health["model_control"]["mode"], "poll");
}

#[tokio::test]
async fn sighup_rescans_once_and_the_process_stays_up() {
    let repo = RepoCopy::new();
    let mut server = repo.serve("none", &[]).await;
    repo.add_version("2", |_| {});
    // Mode none: nothing changes by itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(state_of(&server, "2", None).await.is_none());
    server.signal(1);
    eventually(&server, "version 2 READY after SIGHUP", || async {
        state_of(&server, "2", None)
            .await
            .is_some_and(|s| s["state"] == "READY")
    })
    .await;
    let scrape = server.scrape().await;
    assert!(
        scrape.contains(r#"ferrum_repository_rescans_total{outcome="applied"} 1"#),
        "{scrape}"
    );
    // A second SIGHUP with a manifest that does not parse: refused, nothing changes.
    std::fs::write(repo.manifest_path(), "{").unwrap();
    server.signal(1);
    eventually(&server, "the failed rescan reported", || async {
        let (_, health) = server.get("/health").await;
        health["model_control"]["last_rescan_error"].is_string()
    })
    .await;
    let (status, version, _) = predict(
        &server,
        &format!("/models/{MODEL}/predict"),
        &training_log(MODEL)[0]["features"],
        None,
    )
    .await;
    assert_eq!((status, version.as_deref()), (200, Some("2")));
    let (status, _) = server.get("/health/ready").await;
    assert_eq!(status, 200);
    server.signal(15);
    assert!(server.wait_exit(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn explicit_mode_loads_and_unloads_through_the_repository_routes() {
    const KEY: &str = "s3cret";
    let repo = RepoCopy::new();
    let server = repo.serve("explicit", &["--api-key", KEY]).await;
    repo.add_version("2", |_| {});
    let features = training_log(MODEL)[0]["features"].clone();
    // A `Null` body is sent empty, as Triton allows.
    let post = |path: String, body: Value, key: Option<&'static str>| {
        let mut request = client().post(server.url(&path));
        if !body.is_null() {
            request = request.json(&body);
        }
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let load = format!("/v2/repository/models/{MODEL}/load");
    let (status, body) = post(load.clone(), json!({}), None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    // Not loaded until asked, whatever the manifest says.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(state_of(&server, "2", Some(KEY)).await.is_none());

    let (status, body) = post(
        load.clone(),
        json!({"parameters": {"config": "{\"split\": {\"1\": 90, \"2\": 10}}"}}),
        Some(KEY),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({})));
    assert_eq!(
        state_of(&server, "2", Some(KEY)).await.unwrap()["state"],
        "READY"
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..1000 {
        let response = client()
            .post(server.url(&format!("/models/{MODEL}/predict")))
            .bearer_auth(KEY)
            .header("x-ferrum-routing-key", format!("explicit-{i}"))
            .json(&json!({"instances": [features]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let version = response.headers()["x-ferrum-version"]
            .to_str()
            .unwrap()
            .to_string();
        *counts.entry(version).or_default() += 1;
    }
    let canary = counts["2"] as f64 / 10.0;
    assert!((canary - 10.0).abs() <= 3.0, "{counts:?}");

    // A typo or a split naming an unknown version is refused by name; nothing changes.
    let (status, body) = post(
        load.clone(),
        json!({"parameters": {"conifg": "{}"}}),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_repository_request");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `conifg`"),
        "{body}"
    );
    let (status, body) = post(
        load.clone(),
        json!({"parameters": {"config": "{\"split\": {\"7\": 1}}"}}),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("parameters.config.split.\"7\": version 7 is not served"),
        "{body}"
    );
    let (status, body) = post(
        "/v2/repository/models/nope/load".into(),
        json!({}),
        Some(KEY),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("model_not_found"))
    );

    // Unload: drained, then gone; the index says so; a load brings it back.
    let (status, body) = post(
        format!("/v2/repository/models/{MODEL}/unload"),
        json!({"parameters": {"unload_dependents": false}}),
        Some(KEY),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({})));
    let response = client()
        .post(server.url(&format!("/models/{MODEL}/predict")))
        .bearer_auth(KEY)
        .json(&json!({"instances": [features]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let states = index(&server, Some(KEY)).await;
    for version in ["1", "2"] {
        let state = &states[&(MODEL.to_string(), version.to_string())];
        assert_eq!(
            (state["state"].as_str(), state["reason"].as_str()),
            (Some("UNAVAILABLE"), Some("unloaded"))
        );
    }
    let ready = client()
        .post(server.url("/v2/repository/index"))
        .bearer_auth(KEY)
        .json(&json!({"ready": true}))
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap();
    assert!(ready.iter().all(|e| e["name"] != MODEL), "{ready:?}");
    let (status, _) = post(load, Value::Null, Some(KEY)).await;
    assert_eq!(status, 200);
    // Without its config the manifest's (none): the newest version takes everything.
    let response = client()
        .post(server.url(&format!("/models/{MODEL}/predict")))
        .bearer_auth(KEY)
        .json(&json!({"instances": [features]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-ferrum-version"], "2");
}

#[tokio::test]
async fn a_shadow_that_disagrees_on_known_rows_is_counted_exactly() {
    // Version 2 is version 1's graph fed two features the other way round: its manifest entry
    // lists them swapped. Where that changes the label is known without it: version 1 on the
    // row with the two values swapped.
    const A: &str = "mean_concave_points";
    const B: &str = "worst_concave_points";
    let repo = RepoCopy::new();
    repo.add_version("2", |entry| {
        let names = entry["feature_names"].as_array_mut().unwrap();
        let a = names.iter().position(|n| n == A).unwrap();
        let b = names.iter().position(|n| n == B).unwrap();
        names.swap(a, b);
        // The shadow has no training artifacts of its own.
        entry.as_object_mut().unwrap().remove("artifacts");
    });
    repo.set_rollout(json!({MODEL: {"split": {"1": 1}, "shadow": "2"}}));
    let server = repo.serve("none", &[]).await;
    let rows = training_log(MODEL);
    let mut expected = 0;
    for row in &rows {
        let mut swapped = row["features"].clone();
        let (a, b) = (swapped[A].clone(), swapped[B].clone());
        swapped[A] = b;
        swapped[B] = a;
        let path = format!("/models/{MODEL}/versions/1/predict");
        let (_, _, original) = predict(&server, &path, &row["features"], None).await;
        let (_, _, other) = predict(&server, &path, &swapped, None).await;
        expected +=
            usize::from(original["predictions"][0]["label"] != other["predictions"][0]["label"]);
    }
    assert!(
        0 < expected && expected < rows.len(),
        "{expected} of {}",
        rows.len()
    );

    for row in &rows {
        let (status, version, body) = predict(
            &server,
            &format!("/models/{MODEL}/predict"),
            &row["features"],
            None,
        )
        .await;
        // The primary answers, unchanged.
        assert_eq!((status, version.as_deref()), (200, Some("1")));
        assert_eq!(body["predictions"][0], row["prediction"]);
    }
    let series = r#"{model="breast-cancer",primary_version="1",shadow_version="2"}"#;
    let metric = |scrape: &str, name: &str| -> Option<f64> {
        let prefix = format!("{name}{series} ");
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
    };
    eventually(&server, "every copy compared", || async {
        let scrape = server.scrape().await;
        metric(&scrape, "ferrum_shadow_rows_compared_total") == Some(rows.len() as f64)
    })
    .await;
    let scrape = server.scrape().await;
    assert_eq!(
        metric(&scrape, "ferrum_shadow_requests_total"),
        Some(rows.len() as f64)
    );
    assert_eq!(metric(&scrape, "ferrum_shadow_dropped_total"), Some(0.0));
    assert_eq!(metric(&scrape, "ferrum_shadow_failures_total"), Some(0.0));
    assert_eq!(
        metric(&scrape, "ferrum_shadow_label_disagreements_total"),
        Some(expected as f64)
    );
    assert_eq!(
        metric(&scrape, "ferrum_shadow_abs_diff_count"),
        Some(2.0 * rows.len() as f64)
    );
    let (_, health) = server.get("/health").await;
    let shadow = health["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == MODEL && m["version"] == "2")
        .unwrap();
    assert_eq!(shadow["role"], "shadow");
    assert_eq!(shadow["share_percent"], 0.0);
}
