//! The OpenAPI document: `/openapi.json` serves exactly the generated document, and the
//! committed copy `docs/openapi.json` has not drifted from it (`make openapi` rewrites it).

mod common;

use common::{client, repo_root, Server};
use serde_json::Value;

#[test]
fn the_committed_spec_matches_the_generated_one() {
    let committed = std::fs::read_to_string(repo_root().join("docs/openapi.json"))
        .expect("docs/openapi.json exists (make openapi)");
    assert!(
        committed == ferrum_serve::api::openapi::spec_json(),
        "docs/openapi.json is out of date: run `make openapi` and commit it"
    );
}

#[tokio::test]
async fn the_server_serves_the_spec_and_it_documents_every_route_and_error() {
    let server = Server::start(&[]);
    let response = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = response.text().await.unwrap();
    assert_eq!(served, ferrum_serve::api::openapi::spec_json());
    let spec: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(spec["info"]["title"], "Ferrum Serve");
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/predict", "post"),
        ("/models/{name}/predict", "post"),
        ("/models/{name}/versions/{version}/predict", "post"),
        ("/explain", "post"),
        ("/models/{name}/explain", "post"),
        ("/models/{name}/versions/{version}/explain", "post"),
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
        ("/v2/models/{name}", "get"),
        ("/v2/models/{name}/versions/{version}", "get"),
        ("/v2/models/{name}/ready", "get"),
        ("/v2/models/{name}/versions/{version}/ready", "get"),
        ("/v2/models/{name}/infer", "post"),
        ("/v2/models/{name}/versions/{version}/infer", "post"),
        ("/v2/repository/index", "post"),
        ("/v2/repository/models/{name}/load", "post"),
        ("/v2/repository/models/{name}/unload", "post"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]["200"].is_object(),
            "{path} has no 200"
        );
    }
    // Every error response of an inference route carries the error body.
    assert_eq!(paths.len(), 26, "a route is documented twice or not at all");
    for path in [
        "/predict",
        "/models/{name}/versions/{version}/explain",
        "/v2/models/{name}/infer",
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
    let error = &spec["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["properties"]["error"]["type"], "string");
    assert_eq!(error["properties"]["code"]["type"], "string");
}
