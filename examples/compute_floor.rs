//! The compute floor for `make bench`: in-process ONNX Runtime rows/s on one model, through the
//! same loading code and session settings as the server (one intra-op thread per session, one
//! session per thread), at batch 1 and batch 256, with 1 thread and with N threads side by
//! side. Prints one JSON object per measurement.
//!
//! `cargo run --release --example compute_floor -- [model] [seconds] [threads]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrum_serve::config::ExecutionProviderChoice;
use ferrum_serve::model::{LoadOptions, Manifest, Repository, Rows, Runtime};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_name = args.next().unwrap_or_else(|| "breast-cancer".into());
    let seconds: f64 = args.next().map_or(Ok(3.0), |s| s.parse())?;
    let threads: usize = args.next().map_or(Ok(2), |s| s.parse())?;
    let dylib = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| ".ort/libonnxruntime.so".into());
    let runtime = Runtime::load(Path::new(&dylib))?;
    let manifest = Manifest::read(Path::new("manifest.json"))?;
    let repository = Repository::load(
        manifest,
        Path::new("models"),
        &runtime,
        LoadOptions {
            sessions_per_model: threads,
            intra_op_threads: 1,
            execution_provider: ExecutionProviderChoice::Cpu,
            warmup_runs: 10,
        },
    )?;
    let model = repository.get(Some(&model_name), None)?.clone();
    let width = model.n_features();
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(format!(
        "models/{model_name}/1/training_log.json"
    ))?)?;
    let log_rows: Vec<Vec<f32>> = log["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            model
                .entry
                .feature_names
                .iter()
                .map(|n| r["features"][n].as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    for batch in [1usize, 256] {
        let data: Vec<f32> = log_rows
            .iter()
            .cycle()
            .take(batch)
            .flatten()
            .copied()
            .collect();
        let rows = Arc::new(Rows::new(data, width));
        for n_threads in [1, threads] {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let started = Instant::now();
            let handles: Vec<_> = (0..n_threads)
                .map(|_| {
                    let (model, rows) = (model.clone(), rows.clone());
                    std::thread::spawn(move || {
                        let mut calls = 0u64;
                        while Instant::now() < deadline {
                            model.infer(&rows).expect("inference");
                            calls += 1;
                        }
                        calls
                    })
                })
                .collect();
            let calls: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "model": model_name,
                    "batch": batch,
                    "threads": n_threads,
                    "calls_per_s": calls as f64 / elapsed,
                    "rows_per_s": (calls * batch as u64) as f64 / elapsed,
                    "us_per_call": elapsed * 1e6 * n_threads as f64 / calls as f64,
                })
            );
        }
    }
    Ok(())
}
