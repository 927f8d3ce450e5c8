//! Graceful shutdown under load: 50 slow requests in flight, then SIGTERM. Readiness fails at
//! once, connections are still accepted for the drain delay and refused after it, every one of
//! the 50 completes with 200 and the right answer, and the process exits 0 within the grace
//! period.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, training_log, Server};
use serde_json::{json, Value};

const IN_FLIGHT: usize = 50;
const DRAIN_MS: u64 = 1000;
const GRACE_MS: u64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_50_in_flight_requests_then_exits_0() {
    // One explanation computes at a time and the other 49 wait their turn: all 50 are in
    // flight (admitted, not refused) when the signal arrives.
    let mut server = Server::start_ready(&[
        "--explain-concurrency",
        "1",
        "--explain-max-queued",
        "64",
        // The 50 run one after another: on a busy machine the last may wait a while.
        "--request-timeout-ms",
        "120000",
        "--shutdown-drain-ms",
        &DRAIN_MS.to_string(),
        "--shutdown-grace-ms",
        &GRACE_MS.to_string(),
    ])
    .await;
    // The 50 must still be running when the listener closes, DRAIN_MS after the signal. How
    // long one explanation takes depends on the machine, so each request's rows are sized from
    // a measured one: doubled until the 50 take at least three times that window (at most the
    // server's 32 rows per explanation).
    let log = training_log("diabetes");
    let window = Duration::from_millis(DRAIN_MS + 300);
    let mut rows = 2;
    let (body, expected, one) = loop {
        let instances: Vec<Value> = log
            .iter()
            .take(rows)
            .map(|r| r["features"].clone())
            .collect();
        let body = json!({ "instances": instances });
        let started = Instant::now();
        let (status, expected) = server.post("/models/diabetes/explain", &body).await;
        assert_eq!(status, 200, "{expected}");
        let one = started.elapsed();
        if one * IN_FLIGHT as u32 >= window * 3 || rows >= 32 {
            break (body, expected, one);
        }
        rows = (rows * 2).min(32);
    };
    let url = server.url("/models/diabetes/explain");

    let done = Arc::new(AtomicUsize::new(0));
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (url, body, done) = (url.clone(), body.clone(), done.clone());
            tokio::spawn(async move {
                // Each on its own connection, as 50 separate clients would be.
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let response = client.post(url).json(&body).send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
                (status, body)
            })
        })
        .collect();
    // Let every request reach the server and queue: wait until the server counts them all in
    // flight (less those already answered; a scrape counts itself), not for a fixed time a busy
    // machine may not keep to.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_in_flight(&server).await - 1 + done.load(Ordering::SeqCst) < IN_FLIGHT {
        assert!(
            Instant::now() < deadline,
            "the {IN_FLIGHT} requests never all reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finished_before_signal = done.load(Ordering::SeqCst);
    assert!(
        finished_before_signal < IN_FLIGHT / 2,
        "requests are too quick to test shutdown ({one:?} each): {finished_before_signal} already done"
    );

    server.signal(15);
    let signalled = Instant::now();
    // Readiness fails at once, on a new connection, while connections are still accepted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = fresh.get(server.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(signalled.elapsed() < Duration::from_millis(DRAIN_MS));
    let address = server.base.trim_start_matches("http://").to_string();

    // After the drain delay, new connections are refused.
    tokio::time::sleep(Duration::from_millis(DRAIN_MS + 300).saturating_sub(signalled.elapsed()))
        .await;
    let refused = tokio::net::TcpStream::connect(&address).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "a new connection {:?} after SIGTERM",
        signalled.elapsed()
    );
    let finished_at_refusal = done.load(Ordering::SeqCst);
    assert!(
        finished_at_refusal < IN_FLIGHT,
        "all requests finished before the listener closed: nothing was in flight"
    );

    // Every in-flight request completes with the same answer as before the signal.
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, expected);
    }
    let status = server.wait_exit(Duration::from_millis(GRACE_MS));
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_millis(DRAIN_MS + GRACE_MS));
    let logs = server
        .log_text_once(|logs| logs.contains("shutdown signal received"))
        .await;
    assert!(logs.contains("shutdown signal received"), "{logs}");
    assert!(!logs.contains("shutdown grace period"), "{logs}");
    eprintln!(
        "one request {one:?}; {finished_before_signal} done at SIGTERM, {finished_at_refusal} when connections were refused; exited after {:?}",
        signalled.elapsed()
    );
    let _ = client();
}

/// `ferrum_http_requests_in_flight` as the server reports it now.
async fn http_in_flight(server: &Server) -> usize {
    let scrape = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    scrape
        .lines()
        .find_map(|line| line.strip_prefix("ferrum_http_requests_in_flight "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the in-flight gauge is in every scrape")
}
