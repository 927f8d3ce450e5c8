//! The compute floor for `make bench`: in-process ONNX Runtime rows/s on one model, through the
//! same loading code and session settings as the server (one intra-op thread per session, one
//! session per thread), at batch 1 and batch 256, with 1 thread and with N threads side by
//! side. Prints one JSON object per measurement.
//!
//! `cargo run --release --example compute_floor -- [model] [seconds] [threads] [bare-repository]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrum_serve::config::ExecutionProviderChoice;
use ferrum_serve::model::{
    discover, LoadOptions, LoadedModel, Manifest, Repository, Rows, Runtime,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_name = args.next().unwrap_or_else(|| "breast-cancer".into());
    let seconds: f64 = args.next().map_or(Ok(3.0), |s| s.parse())?;
    let threads: usize = args.next().map_or(Ok(2), |s| s.parse())?;
    // A bare repository (served with --manifest none) instead of the bundled one.
    let bare = args.next().map(PathBuf::from);
    let dylib = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| ".ort/libonnxruntime.so".into());
    let runtime = Runtime::load(Path::new(&dylib))?;
    let (manifest, models_dir) = match &bare {
        Some(dir) => (discover::discover(dir, &runtime)?, dir.clone()),
        None => (
            Manifest::read(Path::new("manifest.json"))?,
            PathBuf::from("models"),
        ),
    };
    let repository = Repository::load(
        manifest,
        &models_dir,
        &runtime,
        LoadOptions {
            sessions_per_model: threads,
            intra_op_threads: 1,
            execution_provider: ExecutionProviderChoice::Cpu,
            warmup_runs: 10,
        },
    )?;
    let model = repository.get(Some(&model_name), None)?.clone();
    for batch in [1usize, 256] {
        let call = one_call(&model, &models_dir, batch)?;
        for n_threads in [1, threads] {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let started = Instant::now();
            let handles: Vec<_> = (0..n_threads)
                .map(|_| {
                    let call = call.clone();
                    std::thread::spawn(move || {
                        let mut calls = 0u64;
                        while Instant::now() < deadline {
                            call();
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

/// One inference of `batch` rows, as the server would make it: the training log's rows for a
/// rows-form model, zeros for a tensors model (the bench sends the server the same zeros).
fn one_call(
    model: &Arc<LoadedModel>,
    models_dir: &Path,
    batch: usize,
) -> anyhow::Result<Arc<dyn Fn() + Send + Sync>> {
    let model = model.clone();
    if model.is_tensors() {
        let inputs = model.zero_inputs(batch);
        return Ok(Arc::new(move || {
            model.infer_tensors(&inputs, || {}).expect("inference");
        }));
    }
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(
        models_dir.join(&model.entry.path).join("training_log.json"),
    )?)?;
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
    let data: Vec<f32> = log_rows
        .iter()
        .cycle()
        .take(batch)
        .flatten()
        .copied()
        .collect();
    let rows = Rows::new(data, model.n_features());
    Ok(Arc::new(move || {
        model.infer(&rows).expect("inference");
    }))
}
