//! The OpenAPI document: the committed copy `docs/openapi.json` is the model-independent
//! document and has not drifted from it (`make openapi` rewrites it); `/openapi.json` serves
//! that document made concrete for the models serving, each model version with its own routes
//! and the exact request it accepts, following live loads and unloads.

mod common;

use common::{client, repo_root, Server};
use serde_json::{json, Value};

#[test]
fn the_committed_spec_matches_the_generated_one() {
    let committed = std::fs::read_to_string(repo_root().join("docs/openapi.json"))
        .expect("docs/openapi.json exists (make openapi)");
    assert!(
        committed == ferrum_serve::api::openapi::spec_json(),
        "docs/openapi.json is out of date: run `make openapi` and commit it"
    );
}

/// The bundled manifest's models: name → (feature names, class labels).
fn bundled_models() -> Vec<(String, Vec<String>, Vec<String>)> {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("manifest.json")).unwrap())
            .unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                strings(&m["feature_names"]),
                strings(&m["class_labels"]),
            )
        })
        .collect()
}

async fn served_document(server: &Server) -> Value {
    let response = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

fn body_schema<'a>(spec: &'a Value, path: &str) -> &'a Value {
    &spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
}

/// The `instances` branch of a rows body (the only schema, or the first of `oneOf`).
fn instances_branch(body: &Value) -> &Value {
    match body.get("oneOf") {
        Some(branches) => &branches[0],
        None => body,
    }
}

#[tokio::test]
async fn the_served_document_has_each_models_routes_with_its_exact_request() {
    let server = Server::start_ready(&[]).await;
    let spec = served_document(&server).await;
    assert_eq!(spec["info"]["title"], "Ferrum Serve");
    let paths = spec["paths"].as_object().unwrap();
    let mut expected: Vec<(String, &str)> = [
        ("/predict", "post"),
        ("/explain", "post"),
        ("/health", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/manifest", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/", "get"),
        ("/models/{name}/versions/{version}/training-log", "get"),
        ("/v2", "get"),
        ("/v2/health/live", "get"),
        ("/v2/health/ready", "get"),
        ("/v2/repository/index", "post"),
        ("/v2/repository/models/{name}/load", "post"),
        ("/v2/repository/models/{name}/unload", "post"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m))
    .collect();
    let models = bundled_models();
    for (name, _, _) in &models {
        for prefix in [
            format!("/models/{name}"),
            format!("/models/{name}/versions/1"),
        ] {
            expected.push((format!("{prefix}/predict"), "post"));
            expected.push((format!("{prefix}/explain"), "post"));
        }
        for prefix in [
            format!("/v2/models/{name}"),
            format!("/v2/models/{name}/versions/1"),
        ] {
            expected.push((prefix.clone(), "get"));
            expected.push((format!("{prefix}/ready"), "get"));
            expected.push((format!("{prefix}/infer"), "post"));
        }
    }
    for (path, method) in &expected {
        let operation = &paths[path.as_str()][*method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]["200"].is_object(),
            "{path} has no 200"
        );
        assert!(
            operation.get("parameters").is_none() || path.contains('{'),
            "{path} is concrete but has path parameters"
        );
    }
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys());
    let ids: std::collections::BTreeSet<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    // Every operation has its own id, bar the repository index's GET and POST (one handler,
    // so one id; `expected` lists its POST only).
    assert_eq!(ids.len(), expected.len());

    // Every error response of an inference route carries the error body.
    for path in [
        "/predict",
        "/models/diabetes/versions/1/explain",
        "/v2/models/diabetes/infer",
    ] {
        let responses = paths[path]["post"]["responses"].as_object().unwrap();
        let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
        assert_eq!(
            statuses,
            ["200", "400", "401", "404", "408", "413", "415", "422", "500", "502", "503", "504"]
        );
        for (status, response) in responses.iter().filter(|(s, _)| *s != "200") {
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{path} {status}"
            );
        }
    }

    let float32 = json!({"type": "number", "exclusiveMinimum": -3.4028235677973366e38,
                         "exclusiveMaximum": 3.4028235677973366e38});
    for (name, features, labels) in &models {
        for path in [
            format!("/models/{name}/predict"),
            format!("/models/{name}/versions/1/predict"),
        ] {
            let body = body_schema(&spec, &path);
            // The bundled server looks entity ids up in each model's snapshot.
            let branches = body["oneOf"].as_array().unwrap();
            assert_eq!(branches.len(), 2, "{path}");
            let instances = &branches[0];
            assert_eq!(instances["required"], json!(["instances"]));
            assert_eq!(instances["additionalProperties"], false);
            let rows = &instances["properties"]["instances"];
            assert_eq!(
                (&rows["minItems"], &rows["maxItems"]),
                (&json!(1), &json!(1024))
            );
            let by_name = &rows["items"]["anyOf"][0];
            assert_eq!(by_name["required"], json!(features), "{path}");
            assert_eq!(by_name["additionalProperties"], false);
            for feature in features {
                assert_eq!(by_name["properties"][feature], float32, "{path} {feature}");
            }
            let in_order = &rows["items"]["anyOf"][1];
            assert_eq!(
                in_order,
                &json!({"type": "array", "items": float32, "minItems": features.len(),
                        "maxItems": features.len()})
            );
            let ids = &branches[1];
            assert_eq!(ids["required"], json!(["entity_ids"]));
            assert_eq!(ids["properties"].as_object().unwrap().len(), 1);
            assert_eq!(
                ids["properties"]["entity_ids"],
                json!({"type": "array", "items": {"type": "string", "minLength": 1},
                       "minItems": 1, "maxItems": 1024})
            );
        }
        let explain = instances_branch(body_schema(&spec, &format!("/models/{name}/explain")));
        let properties = explain["properties"].as_object().unwrap();
        // The tighter of the row limit (1024) and --explain-max-rows (32); the bundled models'
        // evaluation budgets allow more.
        assert_eq!(properties["instances"]["maxItems"], 32);
        assert_eq!(
            properties["top_k"],
            json!({"type": "integer", "minimum": 1, "maximum": u64::MAX})
        );
        if labels.is_empty() {
            let keys: Vec<&str> = properties.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                ["instances", "top_k"],
                "{name}: a regressor has no class"
            );
        } else {
            assert_eq!(properties["class"]["enum"], json!(labels));
            // breast-cancer is a tree ensemble whose margin is known.
            assert_eq!(
                properties["output"]["enum"],
                json!(["probability", "margin"])
            );
        }
        let infer = body_schema(&spec, &format!("/v2/models/{name}/infer"));
        let tensor = &infer["properties"]["inputs"]["items"];
        assert_eq!(infer["properties"]["inputs"]["maxItems"], 1);
        assert_eq!(tensor["properties"]["name"]["const"], "input");
        assert_eq!(tensor["properties"]["datatype"]["const"], "FP32");
        let lengths = tensor["anyOf"].as_array().unwrap();
        assert_eq!(lengths.len(), 16);
        let width = features.len();
        assert_eq!(
            lengths[2],
            json!({"properties": {"shape": {"const": [3, width]},
                   "data": {"minItems": 3 * width, "maxItems": 3 * width}}})
        );
        let answers = &spec["paths"][format!("/v2/models/{name}/infer")]["post"]["responses"]
            ["200"]["content"];
        assert!(answers["application/octet-stream"].is_object());
    }
    // The default routes take the default model's body.
    assert_eq!(
        body_schema(&spec, "/predict"),
        body_schema(&spec, "/models/breast-cancer/predict")
    );
    assert_eq!(
        body_schema(&spec, "/explain"),
        body_schema(&spec, "/models/breast-cancer/explain")
    );
    // Outside explicit mode every load is refused: no body is documented for it.
    let load = &paths["/v2/repository/models/{name}/load"]["post"];
    assert!(load.get("requestBody").is_none(), "{load}");

    let error = &spec["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["properties"]["error"]["type"], "string");
    assert_eq!(error["properties"]["code"]["type"], "string");
}

#[tokio::test]
async fn the_document_follows_the_limits_the_store_and_live_unloads() {
    let server = Server::start_ready(&[
        "--max-request-rows",
        "5",
        "--explain-max-rows",
        "3",
        "--feature-store-uri",
        "none",
        "--model-control-mode",
        "explicit",
    ])
    .await;
    let spec = served_document(&server).await;
    // No feature store: only `instances`.
    let predict = body_schema(&spec, "/models/diabetes/predict");
    assert!(predict.get("oneOf").is_none(), "{predict}");
    assert_eq!(predict["properties"]["instances"]["maxItems"], 5);
    let explain = body_schema(&spec, "/models/diabetes/explain");
    assert_eq!(explain["properties"]["instances"]["maxItems"], 3);
    let infer = body_schema(&spec, "/v2/models/diabetes/infer");
    assert_eq!(
        infer["properties"]["inputs"]["items"]["anyOf"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let load = &spec["paths"]["/v2/repository/models/{name}/load"]["post"];
    assert!(load["requestBody"].is_object(), "explicit mode takes loads");

    let (status, _) = server
        .post("/v2/repository/models/diabetes/unload", &json!({}))
        .await;
    assert_eq!(status, 200);
    let spec = served_document(&server).await;
    let paths = spec["paths"].as_object().unwrap();
    assert!(
        !paths.keys().any(|p| p.contains("diabetes")),
        "{:?}",
        paths.keys()
    );
    assert!(paths.contains_key("/models/breast-cancer/predict"));
    assert!(paths.contains_key("/predict"));
}
