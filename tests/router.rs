//! The API router driven in-process with `tower::ServiceExt::oneshot`: no socket, no child
//! process, so routing, extraction, errors and the predict path are checked in milliseconds.
//! The tests that need a real process (signals, start-up order, the accept loop) start the
//! binary instead (tests/common).

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use ferrum_serve::api::{self, Admission, AppState, Limits};
use ferrum_serve::batching::{BatchingChoice, BatchingConfig};
use ferrum_serve::explain::ExplainLimits;
use ferrum_serve::lifecycle::{ModelControl, ModelControlMode};
use ferrum_serve::model::runtime::ExecutionProviderChoice;
use ferrum_serve::model::{LoadOptions, Manifest, Runtime};
use ferrum_serve::serving;
use ferrum_serve::serving::reconcile::{ModelController, Start};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::{assert_json_close, ort_dylib, repo_root, training_log};

fn state() -> AppState {
    let manifest = Manifest::read(&repo_root().join("manifest.json")).unwrap();
    let limits = Limits {
        max_request_rows: 1000,
        max_body_bytes: 1 << 20,
        body_read_timeout: Duration::from_secs(5),
        explain: ExplainLimits::default(),
    };
    AppState::new(
        manifest,
        limits,
        Admission::new(4, 16, Duration::from_secs(10)),
        None,
    )
}

/// A state with every model loaded as the server loads them (sessions, warm-up, executors).
fn loaded_state() -> AppState {
    let state = state();
    let runtime = Runtime::load(&ort_dylib()).unwrap();
    let options = LoadOptions {
        sessions_per_model: 1,
        intra_op_threads: 1,
        execution_provider: ExecutionProviderChoice::Cpu,
        warmup_runs: 1,
    };
    let config = BatchingConfig {
        max_batch_rows: 64,
        max_queue_delay: Duration::from_micros(200),
        max_queue_depth: 64,
        threads: 1,
    };
    let loader = serving::Loader {
        runtime,
        models_dir: repo_root().join("models"),
        options,
        batching: BatchingChoice::On,
        batching_config: config,
    };
    let control = ModelControl::new(ModelControlMode::None, 15).unwrap();
    // No shadow is configured here: a queue whose worker is gone would drop every copy.
    let (queue, _) = serving::shadow::shadow_queue();
    let (_, handle, live) = ModelController::start(
        loader,
        repo_root().join("manifest.json"),
        state.manifest.clone(),
        control,
        queue,
        Start::default(),
    )
    .unwrap();
    state.set_models(live, handle);
    state
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(path);
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&json).unwrap())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, retry_after, json)
}

#[tokio::test]
async fn before_models_load_inference_is_not_ready_and_probes_answer() {
    let app = api::router(state());
    let (status, _, body) = call(&app, Method::GET, "/health/live", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "live"})));
    let (status, retry_after, body) = call(
        &app,
        Method::POST,
        "/predict",
        Some(json!({"instances": [[1.0]]})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        body,
        json!({"error": "models are still loading", "code": "not_ready"})
    );
    let (status, _, body) = call(&app, Method::GET, "/manifest", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["default_model"], "breast-cancer");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_json_error_body() {
    let app = api::router(state());
    let (status, _, body) = call(&app, Method::GET, "/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "no route for GET /nope", "code": "not_found"})
    );
    let (status, _, body) = call(&app, Method::DELETE, "/health/live", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn draining_fails_readiness() {
    let state = state();
    let app = api::router(state.clone());
    state.begin_shutdown();
    let (status, retry_after, body) = call(&app, Method::GET, "/health/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        body,
        json!({"error": "the server is shutting down", "code": "not_ready"})
    );
}

/// The whole predict path in-process: the training log reproduces through the batcher, and
/// input errors, lookups and the V2 route answer as over a socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaded_models_predict_the_training_log_in_process() {
    let app = api::router(tokio::task::spawn_blocking(loaded_state).await.unwrap());
    for model in ["breast-cancer", "diabetes"] {
        let rows = training_log(model);
        let instances: Vec<Value> = rows.iter().map(|r| r["features"].clone()).collect();
        let (status, _, body) = call(
            &app,
            Method::POST,
            &format!("/models/{model}/predict"),
            Some(json!({"instances": instances})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["model"]["name"], model);
        for (i, row) in rows.iter().enumerate() {
            assert_json_close(
                &body["predictions"][i],
                &row["prediction"],
                1e-6,
                &format!("{model} row {i}"),
            );
        }
    }
    let (status, _, body) = call(
        &app,
        Method::POST,
        "/models/diabetes/predict",
        Some(json!({"instances": [{"age": 1.0}]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "missing_feature");
    let (status, _, body) = call(
        &app,
        Method::POST,
        "/models/nosuch/predict",
        Some(json!({"instances": [[1.0]]})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "model_not_found");
    let (status, _, body) = call(&app, Method::GET, "/v2/models/diabetes/ready", None).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"name": "diabetes", "version": "1", "ready": true})
        )
    );
}
