//! Bad input over HTTP: every problem is a 4xx JSON error with a stable code that names the
//! field or row, never a panic or a 500, and the server keeps serving afterwards.

mod common;

use common::{training_log, Server};
use serde_json::{json, Value};

fn good_row() -> Value {
    training_log("breast-cancer")[0]["features"].clone()
}

fn with_feature(name: &str, value: Value) -> Value {
    let mut row = good_row();
    row[name] = value;
    row
}

fn without_feature(name: &str) -> Value {
    let mut row = good_row();
    row.as_object_mut().unwrap().remove(name);
    row
}

/// (body, status, code, a fragment the message must contain).
fn json_cases() -> Vec<(Value, u16, &'static str, &'static str)> {
    vec![
        (
            json!({"instances": [with_feature("mean_colour", json!(1.0))]}),
            422,
            "unknown_feature",
            "unknown feature 'mean_colour'",
        ),
        (
            json!({"instances": [good_row(), without_feature("worst_area")]}),
            422,
            "missing_feature",
            "instances[1]: missing features: worst_area",
        ),
        (
            json!({"instances": [[1.0, 2.0, 3.0]]}),
            422,
            "wrong_row_length",
            "expected 30 values",
        ),
        (
            json!({"instances": [with_feature("mean_radius", json!("13.5"))]}),
            422,
            "non_numeric_value",
            "instances[0].mean_radius: expected a number, got a string",
        ),
        (
            json!({"instances": [with_feature("mean_radius", Value::Null)]}),
            422,
            "non_numeric_value",
            "got null",
        ),
        (
            json!({"instances": [with_feature("mean_radius", json!(1e300))]}),
            422,
            "non_finite_value",
            "instances[0].mean_radius",
        ),
        (
            json!({"instances": []}),
            422,
            "empty_instances",
            "at least one row",
        ),
        (
            json!({"instances": [good_row(), good_row(), good_row()]}),
            422,
            "too_many_rows",
            "more than 2 rows",
        ),
        (
            json!({"instances": "all of them"}),
            422,
            "invalid_field",
            "list of rows",
        ),
        (
            json!({"instances": [true]}),
            422,
            "invalid_row",
            "instances[0]",
        ),
        (
            json!({"rows": [good_row()]}),
            422,
            "unknown_field",
            "unknown field 'rows'",
        ),
        (
            json!({}),
            422,
            "missing_instances",
            "neither 'instances' nor 'entity_ids'",
        ),
        (
            json!({"instances": [good_row()], "top_k": 3}),
            422,
            "invalid_field",
            "/explain only",
        ),
    ]
}

#[tokio::test]
async fn each_validation_error_has_its_status_code_and_names_the_field() {
    let server =
        Server::start_ready(&["--max-request-rows", "2", "--max-body-bytes", "65536"]).await;
    for (body, status, code, fragment) in json_cases() {
        let (got_status, got) = server.post("/predict", &body).await;
        assert_eq!(
            (got_status, got["code"].as_str()),
            (status, Some(code)),
            "body {body} gave {got}"
        );
        let message = got["error"].as_str().unwrap();
        assert!(
            message.contains(fragment),
            "'{message}' should contain '{fragment}'"
        );
    }

    let raw_cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "application/json",
            b"{\"instances\": [".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "application/json",
            b"{\"instances\": [[NaN]]}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "application/json",
            vec![0xff, 0xfe, b'{'],
            400,
            "invalid_json",
        ),
        ("text/plain", b"{}".to_vec(), 415, "unsupported_media_type"),
        (
            "application/json",
            vec![b' '; 70_000],
            413,
            "payload_too_large",
        ),
    ];
    for (content_type, body, status, code) in raw_cases {
        let (got_status, got) = server.post_raw("/predict", content_type, body).await;
        assert_eq!(
            (got_status, got["code"].as_str()),
            (status, Some(code)),
            "{got}"
        );
    }

    let (status, got) = server
        .post(
            "/models/no-such-model/predict",
            &json!({"instances": [good_row()]}),
        )
        .await;
    assert_eq!(
        (status, got["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert!(
        got["error"]
            .as_str()
            .unwrap()
            .contains("breast-cancer, diabetes"),
        "{got}"
    );
    let (status, got) = server
        .post(
            "/models/breast-cancer/versions/7/predict",
            &json!({"instances": [good_row()]}),
        )
        .await;
    assert_eq!(
        (status, got["code"].as_str()),
        (404, Some("version_not_found"))
    );
    let (status, got) = server.get("/no/such/route").await;
    assert_eq!((status, got["code"].as_str()), (404, Some("not_found")));
    let (status, got) = server.get("/predict").await;
    assert_eq!(
        (status, got["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    // After all that, the server still serves the right answer.
    let row = &training_log("breast-cancer")[0];
    let (status, got) = server
        .post("/predict", &json!({"instances": [row["features"]]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["predictions"][0]["label"], row["prediction"]["label"]);
    assert!(!server.log_text().contains("panicked"));
}

/// A body without a declared length (chunked) is still cut off at the limit.
#[tokio::test]
async fn chunked_bodies_are_bounded_too() {
    use std::io::{Read, Write};
    let server = Server::start_ready(&["--max-body-bytes", "1024"]).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let mut request = b"POST /predict HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..32 {
            request.extend_from_slice(b"40\r\n");
            request.extend_from_slice(&[b' '; 64]);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // The server may answer and close before reading it all; what matters is the answer.
        let _ = stream.write_all(&request);
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#""code":"payload_too_large""#),
        "{response}"
    );
}
