//! Hostile input over HTTP: deeply nested JSON, huge numbers, huge arrays, invalid UTF-8 and a
//! body trickled in slowly. Each gets a clear 4xx (or the body-read timeout) with the JSON
//! error body, never a panic or a hung connection, and the server keeps serving afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{training_log, Server};
use serde_json::{json, Value};

async fn still_serves(server: &Server) {
    let row = json!({"instances": [training_log("breast-cancer")[0]["features"]]});
    let (status, body) = server.post("/predict", &row).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["predictions"][0],
        training_log("breast-cancer")[0]["prediction"]
    );
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
}

async fn post_bytes(server: &Server, body: Vec<u8>) -> (u16, Value) {
    server.post_raw("/predict", "application/json", body).await
}

#[tokio::test]
async fn hostile_bodies_get_clear_4xx_and_the_server_keeps_serving() {
    let server = Server::start_ready(&[]).await;
    let depth = 100_000;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "deeply nested arrays at the top",
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
            400,
            "invalid_json",
        ),
        (
            "deeply nested arrays inside a row",
            format!(
                "{{\"instances\": [{}{}]}}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into_bytes(),
            422,
            "non_numeric_value",
        ),
        (
            "deeply nested objects in an unknown field",
            format!(
                "{{\"x\": {}1{}}}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            )
            .into_bytes(),
            422,
            "unknown_field",
        ),
        (
            "deeply nested objects in entity_ids",
            format!(
                "{{\"entity_ids\": [{}1{}]}}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            )
            .into_bytes(),
            400,
            "invalid_json",
        ),
        (
            "a 400-digit integer",
            format!("{{\"instances\": [[{}]]}}", "9".repeat(400)).into_bytes(),
            400,
            "invalid_json",
        ),
        (
            "an exponent past f64",
            b"{\"instances\": [[1e400]]}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "a number past float32",
            format!("{{\"instances\": [[1e39{}]]}}", ", 0".repeat(29)).into_bytes(),
            422,
            "non_finite_value",
        ),
        (
            "a row of a million numbers",
            format!("{{\"instances\": [[{}0]]}}", "0,".repeat(1_000_000)).into_bytes(),
            422,
            "wrong_row_length",
        ),
        (
            "50 000 rows, past MAX_REQUEST_ROWS",
            format!(
                "{{\"instances\": [{}]}}",
                vec![format!("[{}]", ["0"; 30].join(",")); 50_000].join(",")
            )
            .into_bytes(),
            422,
            "too_many_rows",
        ),
        (
            "half a million entity ids",
            format!("{{\"entity_ids\": [{}\"x\"]}}", "\"x\",".repeat(499_999)).into_bytes(),
            422,
            "too_many_rows",
        ),
        (
            "invalid UTF-8 in a key",
            b"{\"inst\xff\xfeances\": [[1]]}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "invalid UTF-8 in an entity id",
            b"{\"entity_ids\": [\"\xc3\x28\"]}".to_vec(),
            400,
            "invalid_json",
        ),
        ("an empty body", Vec::new(), 400, "invalid_json"),
        ("NUL bytes", vec![0u8; 1024], 400, "invalid_json"),
    ];
    for (what, body, status, code) in cases {
        let (got, response) = post_bytes(&server, body).await;
        assert_eq!(
            (got, response["code"].as_str()),
            (status, Some(code)),
            "{what}: {response}"
        );
        assert!(
            !response["error"].as_str().unwrap().is_empty(),
            "{what}: {response}"
        );
    }
    // Over the body limit: refused by its declared length, before any of it is read (sent
    // raw: a client still writing 5 MiB would see the early close as a broken pipe).
    let address = server.base.trim_start_matches("http://").to_string();
    let answer = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST /predict HTTP/1.1\r\nHost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            5 * 1024 * 1024
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).to_string()
    })
    .join()
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"code\":\"payload_too_large\""),
        "{answer}"
    );
    still_serves(&server).await;
}

/// Headers, then a body trickled a byte at a time: the body-read timeout answers 408 and
/// closes the connection instead of holding it (and a request slot) forever.
#[tokio::test]
async fn a_trickled_body_times_out_with_408_and_the_connection_closes() {
    let server = Server::start_ready(&["--body-read-timeout-ms", "1000"]).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let started = Instant::now();
        write!(
            stream,
            "POST /predict HTTP/1.1\r\nHost: {address}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
        )
        .unwrap();
        // Keep trickling until the server answers (or 10 s, far past the timeout).
        stream.set_nonblocking(true).unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        while started.elapsed() < Duration::from_secs(10) {
            let _ = stream.write_all(b" ");
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            if !answer.is_empty() && started.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).to_string(),
        )
    });
    // Meanwhile the server answers others at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health_started = Instant::now();
    assert_eq!(server.get("/health/ready").await.0, 200);
    assert!(health_started.elapsed() < Duration::from_secs(1));

    let (elapsed, answer) = slow.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {elapsed:?}: {answer:?}"
    );
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    still_serves(&server).await;
}
