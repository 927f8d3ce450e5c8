//! Reliability and security over HTTP: API-key auth and the per-request timeout (load shedding
//! is in overload.rs).

mod common;

use std::time::Duration;

use common::{client, server_command, training_log, Server};
use serde_json::{json, Value};

fn one_row() -> Value {
    json!({"instances": [training_log("breast-cancer")[0]["features"]]})
}

/// 1024 rows: parsing and inference take longer than a 1 ms timeout.
fn big_body() -> Value {
    let rows: Vec<Value> = training_log("breast-cancer")
        .iter()
        .cycle()
        .take(1024)
        .map(|r| r["features"].clone())
        .collect();
    json!({ "instances": rows })
}

async fn post_with_auth(server: &Server, auth: Option<&str>) -> (u16, Value, Option<String>) {
    let mut request = client().post(server.url("/predict")).json(&one_row());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (status, response.json().await.unwrap(), challenge)
}

#[tokio::test]
async fn an_api_key_guards_inference_but_not_health() {
    let mut command = server_command(&[]);
    command.env("API_KEY", "k3y-for-tests");
    let server = Server::spawn(command);
    server.wait_ready(Duration::from_secs(60)).await;

    let (status, body, challenge) = post_with_auth(&server, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let (status, body, _) = post_with_auth(&server, Some("Bearer wrong")).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    assert!(body["error"].as_str().unwrap().contains("not valid"));
    let (status, body, _) = post_with_auth(&server, Some("Basic k3y-for-tests")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body, _) = post_with_auth(&server, Some("Bearer k3y-for-tests")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["predictions"][0],
        training_log("breast-cancer")[0]["prediction"]
    );
    // The V2 inference routes are guarded the same way; their metadata and health are not.
    let v2 = json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
        "data": training_log("breast-cancer")[0]["features"].as_object().unwrap().values().collect::<Vec<_>>()}]});
    let response = client()
        .post(server.url("/v2/models/breast-cancer/infer"))
        .json(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client()
        .post(server.url("/v2/models/breast-cancer/infer"))
        .header("authorization", "Bearer k3y-for-tests")
        .json(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for path in [
        "/v2/health/ready",
        "/v2/models/breast-cancer",
        "/openapi.json",
    ] {
        assert_eq!(server.get(path).await.0, 200, "{path} must stay open");
    }
    for path in ["/health/live", "/health/ready", "/health", "/manifest"] {
        assert_eq!(server.get(path).await.0, 200, "{path} must stay open");
    }
    // The key never reaches the logs.
    assert!(!server.log_text().contains("k3y-for-tests"));
}

#[tokio::test]
async fn an_api_key_file_works_like_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-key");
    std::fs::write(&file, "from-a-secret\n").unwrap();
    let server = Server::start_ready(&["--api-key-file", file.to_str().unwrap()]).await;
    assert_eq!(post_with_auth(&server, None).await.0, 401);
    assert_eq!(
        post_with_auth(&server, Some("Bearer from-a-secret"))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_request_over_the_timeout_gets_504() {
    let server = Server::start_ready(&["--request-timeout-ms", "1"]).await;
    let (status, body) = server.post("/predict", &big_body()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (504, Some("request_timeout")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("1 ms"));
    // Health is not subject to it.
    assert_eq!(server.get("/health").await.0, 200);
}
