//! What drift monitoring adds to one `/predict` call: the time `DriftHandle::observe` takes to
//! hand a request's rows and output to the monitor thread, measured in-process (an end-to-end
//! HTTP comparison on a shared 2-core machine cannot resolve a difference this small).
//!
//! `cargo run --release --example drift_observe_cost` (from the repository root).

use std::path::Path;
use std::time::{Duration, Instant};

use ferrum_serve::model::{Manifest, ModelOutput, Rows};
use ferrum_serve::monitor::baseline::Baseline;
use ferrum_serve::monitor::drift::{DriftConfig, DriftHandle, DRAIN_EVERY};

fn main() {
    let manifest = Manifest::read(Path::new("manifest.json")).expect("run from the repo root");
    let entry = manifest
        .models
        .iter()
        .find(|m| m.name == "breast-cancer")
        .unwrap();
    let baseline = Baseline::read(Path::new("models"), entry, None).unwrap();
    let config = DriftConfig {
        window_rows: 2000,
        interval: Duration::from_secs(15),
        min_rows: 200,
        queue_capacity: 1024,
    };
    let handle = DriftHandle::start(config, vec![baseline]).unwrap();
    let width = entry.feature_names.len();
    for rows_per_request in [1usize, 64] {
        let rows = Rows::new(vec![1.0; rows_per_request * width], width);
        let output = ModelOutput::Classification {
            labels: vec![1; rows_per_request],
            probabilities: vec![0.5; rows_per_request * 2],
            n_classes: 2,
        };
        let (batches, per_batch) = (200, 500);
        let mut spent = Duration::ZERO;
        for _ in 0..batches {
            // The request path builds these anyway (parsing, inference): not part of the cost.
            let inputs: Vec<(Rows, ModelOutput)> = (0..per_batch)
                .map(|_| (rows.clone(), output.clone()))
                .collect();
            let started = Instant::now();
            for (rows, output) in inputs {
                handle.observe("breast-cancer", "1", rows, output);
            }
            spent += started.elapsed();
            // Let the monitor drain, as it would between bursts.
            std::thread::sleep(DRAIN_EVERY * 2);
        }
        let calls = (batches * per_batch) as f64;
        println!(
            "rows_per_request={rows_per_request} observe_ns_per_call={:.0}",
            spent.as_nanos() as f64 / calls
        );
    }
}
