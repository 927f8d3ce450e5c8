//! Latency of `/predict` as a client sees it: N requests over C keep-alive connections, then
//! mean, p50, p90, p99 and throughput. Used by `scripts/bench-drift-overhead.sh` to compare a
//! server with drift monitoring on and off.
//!
//! `cargo run --release --example predict_latency -- URL [REQUESTS] [CONCURRENCY] [ROWS]`
//! (defaults 2000 requests, concurrency 1, 1 row of the breast-cancer training log per request).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let n: usize = args.get(2).map_or(2000, |a| a.parse().unwrap());
    let concurrency: usize = args.get(3).map_or(1, |a| a.parse().unwrap());
    let rows: usize = args.get(4).map_or(1, |a| a.parse().unwrap());

    let log: Value = serde_json::from_slice(
        &std::fs::read("models/breast-cancer/1/training_log.json").expect("run from the repo root"),
    )
    .unwrap();
    let instances: Vec<Value> = log["rows"].as_array().unwrap()[..rows]
        .iter()
        .map(|r| r["features"].clone())
        .collect();
    let body = serde_json::to_vec(&json!({ "instances": instances })).unwrap();
    let client = reqwest::Client::new();
    let target = format!("{url}/models/breast-cancer/predict");

    // Warm-up: connections and the server's first requests.
    for _ in 0..200 {
        send(&client, &target, &body).await;
    }
    let started = Instant::now();
    let per_worker = n / concurrency;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, target, body) = (client.clone(), target.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let t = Instant::now();
                send(&client, &target, &body).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all: Vec<Duration> = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let wall = started.elapsed();
    all.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pct = |p: f64| us(all[((all.len() as f64 * p) as usize).min(all.len() - 1)]);
    let mean = all.iter().map(|d| us(*d)).sum::<f64>() / all.len() as f64;
    println!(
        "requests={} concurrency={concurrency} rows={rows} mean_us={mean:.1} p50_us={:.1} p90_us={:.1} p99_us={:.1} req_per_s={:.0}",
        all.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all.len() as f64 / wall.as_secs_f64()
    );
}

async fn send(client: &reqwest::Client, url: &str, body: &[u8]) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
}
