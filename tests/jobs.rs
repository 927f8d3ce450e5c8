//! The offline subcommands on the held-out snapshots: `predict` reproduces the training log in
//! CSV and JSON lines (in chunks, in order), refuses invalid rows as the API does, keeps memory
//! flat and draws no progress bar off a terminal; `drift-report` finds little drift on the
//! snapshot and flags a copy with one feature shifted, with the exit status a CronJob needs.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_json_close, ort_dylib, read_json, repo_root, training_log};
use serde_json::{json, Value};

/// Runs `ferrum-serve <args>` from the repository root with JSON logs.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrum-serve"))
        .current_dir(repo_root())
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env("LOG_FORMAT", "json")
        .args(args)
        .output()
        .expect("run ferrum-serve")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn snapshot(model: &str) -> PathBuf {
    repo_root().join(format!("models/{model}/1/snapshot.csv"))
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The training log's predictions by entity id.
fn logged(model: &str) -> HashMap<String, Value> {
    training_log(model)
        .into_iter()
        .map(|r| {
            (
                r["entity_id"].as_str().unwrap().to_string(),
                r["prediction"].clone(),
            )
        })
        .collect()
}

/// The entity ids of a snapshot, in file order.
fn snapshot_ids(model: &str) -> Vec<String> {
    let mut reader = csv::Reader::from_path(snapshot(model)).unwrap();
    reader
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect()
}

/// The last JSON log line with this message.
fn log_event(out: &Output, message: &str) -> Value {
    stderr(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|e| e["message"] == message)
        .unwrap_or_else(|| panic!("no '{message}' log line in:\n{}", stderr(out)))
}

/// CSV in, CSV out: the classifier's snapshot gives exactly the logged predictions, in order,
/// with the id column carried through.
#[test]
fn predict_csv_to_csv_reproduces_the_training_log() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("predictions.csv");
    let out = run(&[
        "predict",
        "--model",
        "breast-cancer",
        "--input",
        s(&snapshot("breast-cancer")),
        "--output",
        s(&output),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut reader = csv::Reader::from_path(&output).unwrap();
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "entity_id",
            "label",
            "probability_malignant",
            "probability_benign"
        ]
    );
    let expected = logged("breast-cancer");
    let mut ids = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        let id = record[0].to_string();
        let got = json!({
            "label": &record[1],
            "probabilities": {
                "malignant": record[2].parse::<f64>().unwrap(),
                "benign": record[3].parse::<f64>().unwrap(),
            }
        });
        assert_json_close(&got, &expected[&id], 1e-6, &id);
        ids.push(id);
    }
    assert_eq!(ids, snapshot_ids("breast-cancer"));
    assert_eq!(log_event(&out, "predictions written")["rows"], 114);
    assert!(!dir.path().join("predictions.csv.partial").exists());
}

/// CSV in, JSON lines out, in chunks of 7 rows: the regressor's snapshot, in order.
#[test]
fn predict_csv_to_json_lines_in_small_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("predictions.jsonl");
    let out = run(&[
        "predict",
        "--model",
        "diabetes",
        "--chunk-rows",
        "7",
        "-i",
        s(&snapshot("diabetes")),
        "-o",
        s(&output),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = logged("diabetes");
    let lines: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<String> = lines
        .iter()
        .map(|l| l["entity_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, snapshot_ids("diabetes"));
    for line in &lines {
        let id = line["entity_id"].as_str().unwrap();
        assert_json_close(&line["prediction"], &expected[id], 1e-6, id);
    }
}

/// JSON lines in (objects by name for one model, arrays in model order for the other), JSON
/// lines out; blank lines are skipped; stdout works as the output.
#[test]
fn predict_json_lines_in_gives_one_prediction_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = read_json(&repo_root().join("manifest.json"));
    for (model, as_arrays) in [("breast-cancer", false), ("diabetes", true)] {
        let rows = training_log(model);
        let names: Vec<String> = manifest["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == model)
            .unwrap()["feature_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        let mut text = String::new();
        for (i, row) in rows.iter().enumerate() {
            let line = if as_arrays {
                Value::Array(names.iter().map(|n| row["features"][n].clone()).collect())
            } else {
                row["features"].clone()
            };
            text.push_str(&line.to_string());
            text.push('\n');
            if i == 3 {
                text.push_str("   \n");
            }
        }
        let input = dir.path().join(format!("{model}.jsonl"));
        std::fs::write(&input, text).unwrap();
        let out = run(&["predict", "--model", model, "-i", s(&input), "-o", "-"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let got: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["prediction"].clone())
            .collect();
        let expected: Vec<Value> = rows.iter().map(|r| r["prediction"].clone()).collect();
        assert_json_close(&Value::Array(got), &Value::Array(expected), 1e-6, model);
    }
}

/// Invalid input stops the job with exit status 1, a message naming the line and the feature
/// (the API's rules), and no output file, not even a partial one.
#[test]
fn invalid_rows_stop_the_job_with_their_line_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(snapshot("breast-cancer")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Data row 3 is file line 4: its mean_radius (column 1) becomes text.
    let mut fields: Vec<&str> = lines[3].split(',').collect();
    fields[1] = "twelve";
    lines[3] = fields.join(",");
    let bad_value = dir.path().join("bad_value.csv");
    std::fs::write(&bad_value, lines.join("\n")).unwrap();
    let missing_column = dir.path().join("missing.csv");
    let without: Vec<String> = text
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(1);
            f.join(",")
        })
        .collect();
    std::fs::write(&missing_column, without.join("\n")).unwrap();
    let row = &training_log("breast-cancer")[0]["features"];
    let mut unknown = row.clone();
    unknown["foo"] = json!(1.0);
    let mut too_big = row.clone();
    too_big["worst_area"] = json!(1e39);
    let jsonl = |name: &str, lines: &[Value]| {
        let path = dir.path().join(name);
        let text: Vec<String> = lines.iter().map(Value::to_string).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        path
    };
    let unknown_feature = jsonl("unknown.jsonl", &[row.clone(), unknown]);
    let non_finite = jsonl("non_finite.jsonl", &[row.clone(), row.clone(), too_big]);
    let two_rows = dir.path().join("two.jsonl");
    let ten = "[1,2,3,4,5,6,7,8,9,10]";
    std::fs::write(&two_rows, format!("{ten},{ten}\n")).unwrap();

    let cases: Vec<(&Path, &str, &str)> = vec![
        (&bad_value, "breast-cancer", "line 4: feature 'mean_radius': expected a number, got 'twelve'"),
        (&missing_column, "breast-cancer", "line 1 (header): missing features: mean_radius"),
        (&unknown_feature, "breast-cancer", "line 2: unknown feature 'foo'"),
        (
            &non_finite,
            "breast-cancer",
            "line 3: worst_area: 1000000000000000000000000000000000000000 is not a finite float32 number",
        ),
        (&two_rows, "diabetes", "line 1: a line must hold exactly one row"),
        (&bad_value, "no-such-model", "model 'no-such-model' not found"),
    ];
    for (input, model, message) in cases {
        let output = dir.path().join("out.csv");
        let out = run(&[
            "predict",
            "--model",
            model,
            "-i",
            s(input),
            "-o",
            s(&output),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "want '{message}' in:\n{}",
            stderr(&out)
        );
        assert!(!output.exists(), "{}", input.display());
        assert!(!dir.path().join("out.csv.partial").exists());
    }
}

/// A 40 MB input streams through in chunks: peak memory grows by far less than the file, and
/// with stderr not a terminal there is no progress bar (no carriage returns, no escapes).
#[test]
fn predict_streams_a_large_file_with_flat_memory_and_no_bar_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(snapshot("breast-cancer")).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let big = dir.path().join("big.csv");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        writeln!(file, "{header}").unwrap();
        for _ in 0..1000 {
            file.write_all(body.as_bytes()).unwrap();
            if !body.ends_with('\n') {
                file.write_all(b"\n").unwrap();
            }
        }
    }
    let size = std::fs::metadata(&big).unwrap().len();
    assert!(size > 35_000_000, "{size}");
    let peak = |input: &Path| {
        let output = dir.path().join("out.jsonl");
        let out = run(&[
            "predict",
            "--model",
            "breast-cancer",
            "--chunk-rows",
            "1024",
            "-i",
            s(input),
            "-o",
            s(&output),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!stderr(&out).contains('\r') && !stderr(&out).contains('\x1b'));
        let event = log_event(&out, "predictions written");
        (
            event["rows"].as_u64().unwrap(),
            event["peak_rss_bytes"].as_u64().unwrap(),
        )
    };
    let (small_rows, small_peak) = peak(&snapshot("breast-cancer"));
    let (big_rows, big_peak) = peak(&big);
    assert_eq!((small_rows, big_rows), (114, 114_000));
    // Generous: buffering the input (or the output) would add 40+ MB.
    let growth = big_peak.saturating_sub(small_peak);
    assert!(
        growth < size / 4,
        "peak memory grew by {growth} bytes for a {size}-byte input"
    );
}

/// On a terminal (a pseudo-terminal from `script`), the progress bar is drawn on stderr.
#[test]
fn predict_draws_a_progress_bar_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(snapshot("diabetes")).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let input = dir.path().join("in.csv");
    let mut content = format!("{header}\n");
    for _ in 0..2000 {
        content.push_str(body);
        if !body.ends_with('\n') {
            content.push('\n');
        }
    }
    std::fs::write(&input, content).unwrap();
    let output = dir.path().join("out.csv");
    let command = format!(
        "{} predict --model diabetes --chunk-rows 64 -i {} -o {} 2>&1 >/dev/null",
        env!("CARGO_BIN_EXE_ferrum-serve"),
        s(&input),
        s(&output)
    );
    let out = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(repo_root())
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env("LOG_FORMAT", "json")
        .output()
        .expect("script (util-linux) runs the job on a pseudo-terminal");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    // The bar's own marks: a line clear before each redraw, the byte total, the ETA and the
    // row count (a pseudo-terminal turns every newline into CRLF, so '\r' alone proves nothing).
    assert!(
        screen.contains("\x1b[2K")
            && screen.contains("MiB")
            && screen.contains(" eta ")
            && screen.contains(" rows"),
        "no progress bar drawn:\n{screen}"
    );
    assert_eq!(
        std::fs::read_to_string(&output).unwrap().lines().count(),
        89 * 2000 + 1
    );
}

fn drift_report(args: &[&str]) -> (Option<i32>, Value, Output) {
    let out = run(&[&["drift-report"], args].concat());
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report, out)
}

fn psi_by_name(report: &Value) -> HashMap<String, f64> {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["psi"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The held-out snapshots are within the default threshold (exit 0); a copy with mean_radius
/// shifted by three training standard deviations is flagged (exit 3) on that feature alone,
/// the other features' PSI unchanged.
#[test]
fn drift_report_passes_the_snapshot_and_flags_a_shifted_copy() {
    for model in ["breast-cancer", "diabetes"] {
        let (code, report, out) = drift_report(&["--model", model, "-i", s(&snapshot(model))]);
        assert_eq!(code, Some(0), "{}", stderr(&out));
        assert_eq!(report["status"], "ok");
        assert_eq!(report["drifted"], json!([]));
        assert_eq!(report["bin_rule"], "searchsorted_left");
        assert_eq!(report["threshold"], 0.25);
        assert_eq!(report["model"]["name"], model);
        let rows = report["rows"].as_u64().unwrap();
        assert_eq!(rows, snapshot_ids(model).len() as u64);
        // Explanation drift: every feature, mean |attribution| on training and batch rows.
        let explanations = report["explanations"].as_array().unwrap();
        assert_eq!(
            explanations.len(),
            report["features"].as_array().unwrap().len()
        );
        for e in explanations {
            for key in ["training_mean_abs", "batch_mean_abs"] {
                let v = e[key].as_f64().unwrap();
                assert!(v.is_finite() && v >= 0.0, "{model} {e}");
            }
        }
        assert!(explanations
            .iter()
            .any(|e| e["batch_mean_abs"].as_f64().unwrap() > 0.0));
        for entry in report["features"]
            .as_array()
            .unwrap()
            .iter()
            .chain(report["predictions"].as_array().unwrap())
        {
            let psi = entry["psi"].as_f64().unwrap();
            assert!(
                (0.0..=0.25).contains(&psi),
                "{model} {}: {psi}",
                entry["name"]
            );
            let total: f64 = entry["fractions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_f64().unwrap())
                .sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let baseline = read_json(&repo_root().join("models/breast-cancer/1/baseline.json"));
    let shift = 3.0 * baseline["features"]["mean_radius"]["std"].as_f64().unwrap();
    let mut reader = csv::Reader::from_path(snapshot("breast-cancer")).unwrap();
    let shifted = dir.path().join("shifted.csv");
    let mut writer = csv::Writer::from_path(&shifted).unwrap();
    writer.write_record(reader.headers().unwrap()).unwrap();
    for record in reader.records() {
        let mut fields: Vec<String> = record.unwrap().iter().map(str::to_string).collect();
        let moved = fields[1].parse::<f64>().unwrap() + shift;
        fields[1] = moved.to_string();
        writer.write_record(&fields).unwrap();
    }
    writer.flush().unwrap();
    let report_path = dir.path().join("report.json");
    let (code, _, out) = drift_report(&[
        "--model",
        "breast-cancer",
        "-i",
        s(&shifted),
        "-o",
        s(&report_path),
    ]);
    assert_eq!(code, Some(3), "{}", stderr(&out));
    let drifted = read_json(&report_path);
    assert_eq!(drifted["status"], "drift");
    assert!(drifted["drifted"]
        .as_array()
        .unwrap()
        .contains(&json!("mean_radius")));
    let (_, clean, _) = drift_report(&[
        "--model",
        "breast-cancer",
        "-i",
        s(&snapshot("breast-cancer")),
    ]);
    let (before, after) = (psi_by_name(&clean), psi_by_name(&drifted));
    assert!(after["mean_radius"] > 0.25, "{}", after["mean_radius"]);
    for (name, psi) in &before {
        if name != "mean_radius" {
            assert_eq!(
                after[name], *psi,
                "{name} changed although only mean_radius moved"
            );
        }
    }
    assert!(log_event(&out, "drift report written")["status"] == "drift");

    // A stricter threshold flags the snapshot itself (its largest PSI is about 0.21).
    let (code, report, _) = drift_report(&[
        "--model",
        "breast-cancer",
        "--threshold",
        "0.2",
        "-i",
        s(&snapshot("breast-cancer")),
    ]);
    assert_eq!(code, Some(3));
    assert_eq!(report["drifted"], json!(["worst_concave_points"]));
}
