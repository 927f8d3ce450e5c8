//! The accept loop (src/listener.rs) over real sockets: a client trickling request headers is
//! cut off at the header-read timeout while other clients are served, an idle keep-alive
//! connection is closed after the same limit, and HTTP/2 over plain TCP with prior knowledge
//! (h2c) answers exactly as HTTP/1.1 does.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{training_log, Server};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

const HEADER_TIMEOUT_MS: u64 = 1500;

/// Writes `chunks` one every `every` until the server closes the connection (read returns 0 or
/// a reset) or `give_up` passes; returns when it was closed (None: still open) and what the
/// server sent.
fn trickle_until_closed(
    address: &str,
    chunks: impl Iterator<Item = Vec<u8>>,
    every: Duration,
    give_up: Duration,
) -> (Option<Duration>, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut chunks = chunks.peekable();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < give_up {
        if let Some(chunk) = chunks.next() {
            if stream.write_all(&chunk).is_err() {
                return (Some(started.elapsed()), received);
            }
        }
        match stream.read(&mut buffer) {
            Ok(0) => return (Some(started.elapsed()), received),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return (Some(started.elapsed()), received),
        }
        std::thread::sleep(every);
    }
    (None, received)
}

/// A request head that never ends: one header line every call, for ever.
fn endless_headers(address: &str) -> impl Iterator<Item = Vec<u8>> {
    let first = format!("GET /health/live HTTP/1.1\r\nHost: {address}\r\n").into_bytes();
    std::iter::once(first).chain((0..).map(|i| format!("x-trickle-{i}: a\r\n").into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut_off_at_the_header_read_timeout_while_others_are_served() {
    let server =
        Server::start_ready(&["--header-read-timeout-ms", &HEADER_TIMEOUT_MS.to_string()]).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let slow = {
        let address = address.clone();
        std::thread::spawn(move || {
            trickle_until_closed(
                &address,
                endless_headers(&address),
                Duration::from_millis(100),
                Duration::from_secs(15),
            )
        })
    };

    // While the head trickles in, other clients are answered at once, again and again.
    let mut answered = 0;
    let row = &training_log("breast-cancer")[0];
    let body = json!({ "instances": [row["features"]] });
    while !slow.is_finished() && answered < 200 {
        let started = Instant::now();
        let (status, prediction) = server.post("/predict", &body).await;
        assert_eq!(status, 200, "{prediction}");
        assert_eq!(prediction["predictions"][0], row["prediction"]);
        assert!(started.elapsed() < Duration::from_secs(1));
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (closed, received) = slow.join().unwrap();
    let closed = closed.expect("the trickling connection was still open after 15 s");
    // The head never completed, so there is no request to answer: the connection just closes.
    assert_eq!(String::from_utf8_lossy(&received), "");
    let limit = Duration::from_millis(HEADER_TIMEOUT_MS);
    assert!(
        closed >= limit && closed < limit + Duration::from_millis(1500),
        "closed after {closed:?}, the limit is {limit:?}"
    );
    assert!(answered >= 5, "only {answered} requests answered meanwhile");
}

#[tokio::test]
async fn a_complete_head_within_the_limit_is_served_and_an_idle_keep_alive_connection_closes_after_it(
) {
    let server =
        Server::start_ready(&["--header-read-timeout-ms", &HEADER_TIMEOUT_MS.to_string()]).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let (closed, received) = tokio::task::spawn_blocking(move || {
        // The same head as above, sent slowly but finished within the limit: answered 200.
        let head = endless_headers(&address)
            .take(5)
            .chain(std::iter::once(b"\r\n".to_vec()));
        trickle_until_closed(
            &address,
            head,
            Duration::from_millis(100),
            Duration::from_secs(15),
        )
    })
    .await
    .unwrap();
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        !received.to_ascii_lowercase().contains("connection: close"),
        "{received}"
    );
    // Then the connection sits idle: closed once the limit passes again (from the answer).
    let closed = closed.expect("the idle keep-alive connection was still open after 15 s");
    let limit = Duration::from_millis(HEADER_TIMEOUT_MS);
    assert!(
        closed >= limit + Duration::from_millis(400) && closed < 2 * limit + Duration::from_secs(1),
        "closed after {closed:?}"
    );
}

/// One HTTP/2 request over plain TCP with prior knowledge: the client starts with the HTTP/2
/// preface, no upgrade.
async fn h2c(server: &Server, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let address = server.base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"));
    let payload = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(body).unwrap())
        }
        None => Bytes::new(),
    };
    let response = sender
        .send_request(request.body(Full::new(payload)).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn h2c_with_prior_knowledge_answers_as_http1_does() {
    let server = Server::start_ready(&[]).await;
    let (status, live) = h2c(&server, "GET", "/health/live", None).await;
    assert_eq!(
        (status, live["status"].as_str()),
        (200, Some("live")),
        "{live}"
    );
    for row in training_log("breast-cancer").iter().take(3) {
        let body = json!({ "instances": [row["features"]] });
        let (status, over_h2) = h2c(&server, "POST", "/predict", Some(&body)).await;
        assert_eq!(status, 200, "{over_h2}");
        assert_eq!(over_h2["predictions"][0], row["prediction"]);
        let (_, over_h1) = server.post("/predict", &body).await;
        assert_eq!(over_h2, over_h1);
    }
    let (status, error) = h2c(&server, "GET", "/nope", None).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
}
