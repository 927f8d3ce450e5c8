//! OpenTelemetry export against a real OTLP receiver: an axum server inside the test decodes
//! the HTTP/protobuf export requests the server sends, and the test checks span names, parent
//! links, attributes, the resource, the continued W3C trace, the trace id in the log line, and
//! that spans still buffered at SIGTERM are flushed.

mod common;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use common::{feature_store_command, server_command, training_log, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{json, Value};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// One exported span with its resource's attributes.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: i32,
    attributes: Vec<KeyValue>,
    resource: Vec<KeyValue>,
}

impl Exported {
    fn attribute(&self, key: &str) -> Option<AnyValue> {
        find(&self.attributes, key)
    }
}

fn find(attributes: &[KeyValue], key: &str) -> Option<AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

/// An OTLP/HTTP receiver on a free loopback port that keeps every span it is sent.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Exported>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
        let store = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let store = store.clone();
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return (StatusCode::BAD_REQUEST, Vec::new());
                    };
                    let mut store = store.lock().unwrap();
                    for resource_spans in request.resource_spans {
                        let resource = resource_spans
                            .resource
                            .map(|r| r.attributes)
                            .unwrap_or_default();
                        for scope in resource_spans.scope_spans {
                            for span in scope.spans {
                                store.push(Exported {
                                    name: span.name,
                                    trace_id: hex(&span.trace_id),
                                    span_id: hex(&span.span_id),
                                    parent_span_id: hex(&span.parent_span_id),
                                    kind: span.kind,
                                    attributes: span.attributes,
                                    resource: resource.clone(),
                                });
                            }
                        }
                    }
                    // An empty ExportTraceServiceResponse: full success.
                    (StatusCode::OK, Vec::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        Receiver { endpoint, spans }
    }

    /// Waits until `done` holds for the spans received, up to a generous deadline.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Exported]) -> bool) -> Vec<Exported> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server, exporting to `receiver` with the standard variables.
fn traced_server(receiver: &Receiver, schedule_delay_ms: u64, args: &[&str]) -> Server {
    let mut command = server_command(args);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_SERVICE_NAME", "ferrum-trace-test")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", schedule_delay_ms.to_string())
        .env("NO_PROXY", "127.0.0.1,localhost");
    Server::spawn(command)
}

async fn predict(server: &Server, path: &str, rows: Value, traceparent: Option<&str>) {
    let mut request = common::client()
        .post(server.url(path))
        .json(&json!({ "instances": rows }));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
}

fn log_line(server: &Server, path: &str) -> Value {
    server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["message"] == "request" && e["path"] == path)
        .unwrap_or_else(|| panic!("no log line for {path}"))
}

fn rows(model: &str, n: usize) -> Value {
    Value::Array(
        training_log(model)[..n]
            .iter()
            .map(|r| r["features"].clone())
            .collect(),
    )
}

/// A request with a `traceparent` becomes a server span in the caller's trace, a child of the
/// caller's span, with an `inference` child carrying the batch size; a request without one
/// starts a new trace; both trace ids are in the log lines; the resource names the service.
#[tokio::test]
async fn spans_reach_an_otlp_receiver_with_names_parents_and_the_callers_trace() {
    let receiver = Receiver::start().await;
    let server = traced_server(&receiver, 100, &[]);
    server.wait_ready(Duration::from_secs(60)).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    predict(
        &server,
        "/predict",
        rows("breast-cancer", 2),
        Some(&traceparent),
    )
    .await;
    predict(
        &server,
        "/models/diabetes/predict",
        rows("diabetes", 3),
        None,
    )
    .await;

    let spans = receiver
        .wait_for("both request spans and their inference spans", |spans| {
            spans.iter().filter(|s| s.name == "inference").count() >= 2
                && spans.iter().any(|s| s.name == "POST /predict")
                && spans
                    .iter()
                    .any(|s| s.name == "POST /models/{name}/predict")
        })
        .await;

    // The continued trace.
    let request = spans.iter().find(|s| s.name == "POST /predict").unwrap();
    assert_eq!(request.trace_id, TRACE_ID);
    assert_eq!(request.parent_span_id, PARENT_ID);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(
        request.attribute("http.route"),
        Some(AnyValue::StringValue("/predict".into()))
    );
    assert_eq!(
        request.attribute("http.response.status_code"),
        Some(AnyValue::IntValue(200))
    );
    let inference = spans
        .iter()
        .find(|s| s.name == "inference" && s.trace_id == TRACE_ID)
        .expect("an inference span in the caller's trace");
    assert_eq!(inference.parent_span_id, request.span_id);
    assert_eq!(
        inference.attribute("batch_size"),
        Some(AnyValue::IntValue(2))
    );
    assert_eq!(
        inference.attribute("model"),
        Some(AnyValue::StringValue("breast-cancer".into()))
    );

    // A new trace for the request without traceparent: a root span with its own child.
    let other = spans
        .iter()
        .find(|s| s.name == "POST /models/{name}/predict")
        .unwrap();
    assert_ne!(other.trace_id, TRACE_ID);
    assert_eq!(other.parent_span_id, "");
    let other_inference = spans
        .iter()
        .find(|s| s.name == "inference" && s.trace_id == other.trace_id)
        .expect("an inference span in the new trace");
    assert_eq!(other_inference.parent_span_id, other.span_id);
    assert_eq!(
        other_inference.attribute("batch_size"),
        Some(AnyValue::IntValue(3))
    );

    // The resource, from the standard variables.
    assert_eq!(
        find(&request.resource, "service.name"),
        Some(AnyValue::StringValue("ferrum-trace-test".into()))
    );
    assert_eq!(
        find(&request.resource, "deployment.environment.name"),
        Some(AnyValue::StringValue("test".into()))
    );

    // The trace ids are in the requests' log lines.
    assert_eq!(log_line(&server, "/predict")["trace_id"], TRACE_ID);
    assert_eq!(
        log_line(&server, "/models/diabetes/predict")["trace_id"],
        other.trace_id.as_str()
    );
}

/// Spans still buffered when SIGTERM arrives are exported before the process exits.
#[tokio::test]
async fn buffered_spans_are_flushed_on_shutdown() {
    let receiver = Receiver::start().await;
    // A schedule delay of ten minutes: nothing is exported unless the shutdown flushes it.
    let mut server = traced_server(&receiver, 600_000, &[]);
    server.wait_ready(Duration::from_secs(60)).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    predict(
        &server,
        "/predict",
        rows("breast-cancer", 1),
        Some(&traceparent),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.spans.lock().unwrap().is_empty());
    server.signal(15);
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(30));
        (status, server)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "{status:?}");
    let spans = receiver
        .wait_for("the flushed spans", |spans| {
            spans.iter().any(|s| s.name == "POST /predict")
                && spans.iter().any(|s| s.name == "inference")
        })
        .await;
    let request = spans.iter().find(|s| s.name == "POST /predict").unwrap();
    assert_eq!(request.trace_id, TRACE_ID);
}

/// Without an endpoint nothing is exported, and the log line still carries the caller's trace
/// id, so logs can be joined with the caller's traces.
#[tokio::test]
async fn without_an_endpoint_the_log_line_still_names_the_callers_trace() {
    let server = Server::start_ready(&[]).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    predict(
        &server,
        "/predict",
        rows("breast-cancer", 1),
        Some(&traceparent),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(log_line(&server, "/predict")["trace_id"], TRACE_ID);
    assert!(!server.log_text().contains("OpenTelemetry"));
}

/// An entity-id request gets a `feature_lookup` span beside `inference`, and the feature store
/// is told that span as its parent, so the store's own spans nest under this request.
#[tokio::test]
async fn entity_lookups_get_a_span_the_feature_store_sees_as_its_parent() {
    let receiver = Receiver::start().await;
    let store = Server::spawn(feature_store_command(&[]));
    let server = traced_server(&receiver, 100, &["--feature-store-uri", &store.base]);
    server.wait_ready(Duration::from_secs(60)).await;
    let id = training_log("diabetes")[0]["entity_id"].clone();
    let response = common::client()
        .post(server.url("/models/diabetes/predict"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(&json!({ "entity_ids": [id] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spans = receiver
        .wait_for("request, feature_lookup and inference spans", |spans| {
            ["POST /models/{name}/predict", "feature_lookup", "inference"]
                .iter()
                .all(|name| {
                    spans
                        .iter()
                        .any(|s| s.name == *name && s.trace_id == TRACE_ID)
                })
        })
        .await;
    let of = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.trace_id == TRACE_ID)
            .unwrap()
    };
    let request = of("POST /models/{name}/predict");
    let lookup = of("feature_lookup");
    assert_eq!(request.parent_span_id, PARENT_ID);
    assert_eq!(lookup.parent_span_id, request.span_id);
    assert_eq!(of("inference").parent_span_id, request.span_id);
    assert_eq!(lookup.attribute("entities"), Some(AnyValue::IntValue(1)));
    let forwarded: Vec<Value> = store
        .log_text_once(|log| log.contains("get-online-features"))
        .await
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "get-online-features")
        .collect();
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert_eq!(
        forwarded[0]["traceparent"],
        format!("00-{TRACE_ID}-{}-01", lookup.span_id)
    );
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` exports; `http/json` exports the same way
/// with a warning saying so; `grpc` (no gRPC client in this build) turns export off with a
/// warning naming the value while the server serves on; the traces-specific variable wins.
#[tokio::test]
async fn the_otlp_protocol_variables_are_honoured() {
    async fn exported_after_one_request(protocol: &[(&str, &str)]) -> (bool, String) {
        let receiver = Receiver::start().await;
        let mut command = server_command(&[]);
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "50")
            .env("NO_PROXY", "127.0.0.1,localhost");
        for (name, value) in protocol {
            command.env(name, value);
        }
        let server = Server::spawn(command);
        server.wait_ready(Duration::from_secs(60)).await;
        predict(&server, "/predict", rows("breast-cancer", 1), None).await;
        // Far longer than the 50 ms schedule delay: whatever is exported has arrived.
        let deadline = Instant::now() + Duration::from_secs(3);
        let exported = || {
            let spans = receiver.spans.lock().unwrap();
            spans.iter().any(|s| s.name == "POST /predict")
        };
        while Instant::now() < deadline && !exported() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (exported(), server.log_text())
    }

    let (exported, logs) =
        exported_after_one_request(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).await;
    assert!(exported, "{logs}");
    assert!(!logs.contains("warning"), "{logs}");

    let (exported, logs) =
        exported_after_one_request(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).await;
    assert!(exported, "{logs}");
    assert!(
        logs.contains("warning: OTEL_EXPORTER_OTLP_PROTOCOL=http/json: this build exports OTLP/HTTP with protobuf bodies only; exporting http/protobuf to the same endpoint"),
        "{logs}"
    );

    let (exported, logs) =
        exported_after_one_request(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).await;
    assert!(!exported, "{logs}");
    let warning = logs
        .lines()
        .find(|l| l.starts_with("warning: OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"))
        .unwrap_or_else(|| panic!("no grpc warning in {logs}"));
    assert!(warning.ends_with("; spans are not exported"), "{warning}");
    // The same warning in the JSON log stream, for a collector.
    assert!(
        logs.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["level"] == "WARN"
                && e["warning"]
                    .as_str()
                    .is_some_and(|w| w.contains("=grpc is not supported"))),
        "{logs}"
    );

    let (exported, logs) = exported_after_one_request(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
    ])
    .await;
    assert!(exported, "{logs}");
}
