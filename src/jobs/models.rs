//! `ferrum-serve models add | list | check`: the model repository as the server reads it.
//!
//! - `add` copies an ONNX file to `<dir>/<name>/<version>/model.onnx` and records it in the
//!   manifest with its sha256, its signature, feature names and class labels (the graph's,
//!   or the ones given) and its artifacts. Everything is checked before the manifest is
//!   written: the model is loaded exactly as the server loads it, and with `--reference` its
//!   predictions on those rows become the training log the server re-runs at every load.
//! - `list` prints every version the server would serve, with the signature of its file.
//! - `check` loads every version as the server does and says which pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::args::{ModelsAddArgs, ModelsCommand, RepositoryArgs};
use super::input::RowReader;
use super::{DataFormat, JobError};
use crate::explain::{self, columns::ColumnLayout};
use crate::model::discover::{self, FoundVersion, NO_MANIFEST};
use crate::model::repository::sha256_hex;
use crate::model::runtime::ExecutionProviderChoice;
use crate::model::tabular::{self, MODEL_FILE};
use crate::model::{
    training_log, LoadError, LoadOptions, LoadedModel, Manifest, ModelEntry, ModelOutput,
    Repository, Runtime, Task,
};
use crate::serving::column_assets;

/// Where `add` puts the artifacts in the version folder.
const BACKGROUND_FILE: &str = "background.csv";
const TRAINING_LOG_FILE: &str = "training_log.json";

/// How close an expected output in a reference CSV must be: they usually come from the
/// original library in float64, not from ONNX Runtime, so equal to float32 rounding, not bits.
const EXPECTED_TOLERANCE: f64 = 1e-5;

/// Runs a `models` command, writing its report to `out`.
pub fn run(command: &ModelsCommand, out: &mut dyn Write) -> Result<(), JobError> {
    let repository = command.repository();
    let runtime = Runtime::load(&repository.ort_dylib_path)?;
    match command {
        ModelsCommand::Add(args) => add(args, &runtime, out),
        ModelsCommand::List(args) => list(args, &runtime, out),
        ModelsCommand::Check(args) => check(args, &runtime, out),
    }
}

/// One session, one warm-up: enough to check a model, cheap to build.
const CHECK_OPTIONS: LoadOptions = LoadOptions {
    sessions_per_model: 1,
    intra_op_threads: 1,
    execution_provider: ExecutionProviderChoice::Cpu,
    warmup_runs: 1,
};

/// Loads one entry exactly as the server does: sha256, signature, warm-up, training log.
fn load_entry(
    entry: &ModelEntry,
    raw: &Value,
    models_dir: &Path,
    runtime: &Runtime,
) -> Result<Arc<LoadedModel>, LoadError> {
    let one = Manifest {
        default_model: entry.name.clone(),
        models: vec![entry.clone()],
        raw: raw.clone(),
    };
    let repository = Repository::load(one, models_dir, runtime, CHECK_OPTIONS)?;
    Ok(repository
        .get(None, None)
        .expect("the one model loaded")
        .clone())
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> JobError + '_ {
    move |source| JobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn input_error(path: &Path, message: String) -> JobError {
    JobError::Input {
        path: path.to_path_buf(),
        message,
    }
}

/// `models add`.
fn add(args: &ModelsAddArgs, runtime: &Runtime, out: &mut dyn Write) -> Result<(), JobError> {
    let repo = &args.repository;
    let bare = repo.manifest == Path::new(NO_MANIFEST);
    if bare
        && (!args.feature_names.is_empty()
            || !args.class_labels.is_empty()
            || args.background.is_some()
            || args.reference.is_some())
    {
        return Err(input_error(
            &repo.manifest,
            "--manifest none keeps no metadata: --feature-names, --class-labels, --background and --reference need a manifest".into(),
        ));
    }
    let mut manifest = if bare {
        None
    } else {
        Some(manifest_to_extend(repo, runtime)?)
    };
    let version = match args.version {
        Some(v) => v,
        None => next_version(&args.name, &repo.models_dir, manifest.as_ref())?,
    };
    let version_text = version.to_string();
    let bytes = std::fs::read(&args.file).map_err(io_error(&args.file))?;
    let (_, signature) = discover::read_signature(runtime, &bytes, &args.name, &version_text)?;
    let (mut entry, why_tensors) =
        tabular::entry_from_signature(&args.name, &version_text, &sha256_hex(&bytes), &signature);
    let tensors = why_tensors.is_some();
    if let Some(why) = why_tensors {
        if args.reference.is_some() {
            return Err(input_error(
                &args.file,
                format!("--reference needs the rows form, and this model is served as named tensors: {why}"),
            ));
        }
        if !args.feature_names.is_empty() || args.background.is_some() {
            // A tabular tensors model names and explains its columns.
            let layout = ColumnLayout::of(&signature, &args.feature_names).map_err(|reason| {
                input_error(
                    &args.file,
                    format!("--feature-names and --background need the rows form or inputs that are columns, and {reason}; this model is served as named tensors: {why}"),
                )
            })?;
            entry.feature_names = layout.names().to_vec();
        }
    } else {
        name_rows_form_columns(&mut entry, args)?;
    }
    name_classes(&mut entry, args)?;
    if let Some(raw) = &manifest {
        let taken = raw["models"].as_array().is_some_and(|models| {
            models
                .iter()
                .any(|m| m["name"] == args.name.as_str() && m["version"] == version_text.as_str())
        });
        if taken {
            return Err(input_error(
                &repo.manifest,
                format!("already lists model '{}' version {version}", args.name),
            ));
        }
    }
    let dir = repo.models_dir.join(&entry.path);
    if dir.join(MODEL_FILE).exists() {
        return Err(input_error(
            &dir,
            format!("already holds a {MODEL_FILE}: choose another --version"),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    // From here on a failure removes the version folder: no half-added model stays behind.
    let staged = (|| {
        let target = dir.join(MODEL_FILE);
        std::fs::write(&target, &bytes).map_err(io_error(&target))?;
        if let Some(background) = args.background.as_ref().filter(|_| !tensors) {
            explain::read_background(background, &entry.feature_names).map_err(|reason| {
                input_error(
                    background,
                    format!(
                        "{reason} (the model's: {}; set them with --feature-names)",
                        entry.feature_names.join(", ")
                    ),
                )
            })?;
        }
        if let Some(background) = &args.background {
            let target = dir.join(BACKGROUND_FILE);
            std::fs::copy(background, &target).map_err(io_error(&target))?;
        }
        let raw = manifest.clone().unwrap_or(Value::Null);
        let model = load_entry(&entry, &raw, &repo.models_dir, runtime)?;
        if let Some(background) = args.background.as_ref().filter(|_| tensors) {
            // Read and run as the server will: the rows must be the model's.
            column_assets(&model, &dir.join(BACKGROUND_FILE))
                .map_err(|reason| input_error(background, reason))?;
        }
        if let Some(reference) = &args.reference {
            let log = reference_log(&model, reference)?;
            let target = dir.join(TRAINING_LOG_FILE);
            let text = serde_json::to_vec_pretty(&log).expect("JSON serializes");
            std::fs::write(&target, text).map_err(io_error(&target))?;
        }
        entry.artifacts.background = args.background.as_ref().map(|_| BACKGROUND_FILE.into());
        entry.artifacts.training_log = args.reference.as_ref().map(|_| TRAINING_LOG_FILE.into());
        // The whole entry, artifacts and all, as the server will load it.
        load_entry(&entry, &raw, &repo.models_dir, runtime)?;
        if let Some(raw) = &mut manifest {
            let models = raw["models"].as_array_mut().expect("checked when read");
            models.push(discover::entry_json(&entry, &signature));
            write_manifest(&repo.manifest, raw)?;
        }
        Ok(())
    })();
    if let Err(error) = staged {
        let _ = std::fs::remove_dir_all(&dir);
        // The model's folder too, when this was its only version.
        let _ = std::fs::remove_dir(repo.models_dir.join(&entry.name));
        return Err(error);
    }
    let written = if bare {
        "no manifest written (--manifest none)".to_string()
    } else {
        format!("recorded in {}", repo.manifest.display())
    };
    writeln!(
        out,
        "added {} version {} as {}: {}; {written}",
        entry.name,
        entry.version,
        dir.join(MODEL_FILE).display(),
        describe(&entry)
    )
    .map_err(io_error(Path::new("-")))?;
    Ok(())
}

/// The manifest JSON `add` appends to: the file, or when there is none yet, one listing the
/// versions already in the repository (so writing a manifest serves no fewer models).
fn manifest_to_extend(repo: &RepositoryArgs, runtime: &Runtime) -> Result<Value, JobError> {
    if repo.manifest.exists() {
        let text = std::fs::read_to_string(&repo.manifest).map_err(io_error(&repo.manifest))?;
        Manifest::parse(&text).map_err(|reason| LoadError::Manifest {
            path: repo.manifest.clone(),
            reason,
        })?;
        return Ok(serde_json::from_str(&text).expect("parsed above"));
    }
    if discover::find_versions(&repo.models_dir).is_ok_and(|found| !found.is_empty()) {
        let mut raw = discover::discover(&repo.models_dir, runtime)?.raw;
        raw.as_object_mut()
            .expect("a manifest is an object")
            .remove("source");
        return Ok(raw);
    }
    Ok(serde_json::json!({"models": []}))
}

/// One above the highest version of `name` in the manifest or on disk; 1 for a new model.
fn next_version(name: &str, models_dir: &Path, manifest: Option<&Value>) -> Result<u64, JobError> {
    let on_disk = if models_dir.exists() {
        discover::find_versions(models_dir)?
    } else {
        Vec::new()
    };
    let in_manifest = manifest
        .and_then(|m| m["models"].as_array())
        .into_iter()
        .flatten()
        .filter(|m| m["name"] == name)
        .filter_map(|m| m["version"].as_str()?.parse::<u64>().ok());
    let highest = on_disk
        .iter()
        .filter(|v: &&FoundVersion| v.name == name)
        .map(|v| v.version)
        .chain(in_manifest)
        .max();
    Ok(highest.map_or(1, |v| v + 1))
}

/// `--feature-names` for a rows-form model: one name per feature of its input.
fn name_rows_form_columns(entry: &mut ModelEntry, args: &ModelsAddArgs) -> Result<(), JobError> {
    let input = &entry.onnx.input;
    rename(
        &mut entry.feature_names,
        &args.feature_names,
        &args.file,
        |given, features| {
            format!(
                "--feature-names lists {given} names, but input '{input}' takes {} features",
                features.len()
            )
        },
    )
}

/// `--class-labels`: one name per class label of the graph, in its order.
fn name_classes(entry: &mut ModelEntry, args: &ModelsAddArgs) -> Result<(), JobError> {
    if !args.class_labels.is_empty() && entry.class_labels.is_empty() {
        return Err(input_error(
            &args.file,
            "--class-labels is for classifiers, and the graph states no class labels".into(),
        ));
    }
    rename(
        &mut entry.class_labels,
        &args.class_labels,
        &args.file,
        |given, labels| {
            format!(
                "--class-labels lists {given} names, but the graph has {} class labels ({})",
                labels.len(),
                labels.join(", ")
            )
        },
    )
}

/// Puts the names given on the command line (none: the file's stay) in place of the file's
/// `names`, which they must match one for one; else the error says so in `mismatch`'s words
/// (given the number of names given, and the file's).
fn rename(
    names: &mut Vec<String>,
    given: &[String],
    file: &Path,
    mismatch: impl FnOnce(usize, &[String]) -> String,
) -> Result<(), JobError> {
    if given.is_empty() {
        return Ok(());
    }
    if given.len() != names.len() {
        return Err(input_error(file, mismatch(given.len(), names)));
    }
    *names = given.to_vec();
    Ok(())
}

/// The training log of a reference CSV: every row run alone; any expected output columns
/// (`label`, `value`, `probability_<class>`) compared with what the model gives.
fn reference_log(model: &LoadedModel, reference: &Path) -> Result<Value, JobError> {
    let mut reader = RowReader::open(reference, DataFormat::Csv, model, 4096, None)?;
    let columns = reader.passthrough_names().to_vec();
    let mut rows = Vec::new();
    let mut line = 1;
    while let Some(chunk) = reader.next_chunk()? {
        for r in 0..chunk.rows.n_rows {
            line += 1;
            let expected = chunk.passthrough.get(r).map_or(&[][..], Vec::as_slice);
            let values = chunk.rows.row(r).to_vec();
            let output = model.infer(&crate::model::Rows::new(values.clone(), values.len()))?;
            check_expected(model, &output, &columns, expected)
                .map_err(|m| input_error(reference, format!("line {line}: {m}")))?;
            rows.push(values);
        }
    }
    if rows.is_empty() {
        return Err(input_error(reference, "has no rows".into()));
    }
    Ok(training_log::record(model, &rows)?)
}

/// Compares one row's output with the expected columns the reference CSV has.
fn check_expected(
    model: &LoadedModel,
    output: &ModelOutput,
    columns: &[String],
    expected: &[String],
) -> Result<(), String> {
    let class_labels = &model.entry.class_labels;
    for (column, text) in columns.iter().zip(expected) {
        let got = match (column.as_str(), output) {
            ("label", ModelOutput::Classification { labels, .. }) => {
                let got = &class_labels[labels[0] as usize];
                if got != text {
                    return Err(format!(
                        "the model predicts label '{got}', the file expects '{text}'"
                    ));
                }
                continue;
            }
            ("value", ModelOutput::Regression { values }) => values[0],
            (name, ModelOutput::Classification { probabilities, .. }) => match name
                .strip_prefix("probability_")
                .and_then(|class| class_labels.iter().position(|l| l == class))
            {
                Some(column) => probabilities[column],
                None => continue,
            },
            _ => continue,
        };
        let want: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("column '{column}': '{text}' is not a number"))?;
        let got = f64::from(got);
        if (got - want).abs() > EXPECTED_TOLERANCE * want.abs().max(1.0) {
            return Err(format!(
                "column '{column}': the model gives {got}, the file expects {want}"
            ));
        }
    }
    Ok(())
}

/// Writes the manifest next to itself and renames it into place, after checking it parses.
fn write_manifest(path: &Path, raw: &Value) -> Result<(), JobError> {
    let text = serde_json::to_string_pretty(raw).expect("JSON serializes") + "\n";
    Manifest::parse(&text).map_err(|reason| LoadError::Manifest {
        path: path.to_path_buf(),
        reason,
    })?;
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    std::fs::write(&partial, text).map_err(io_error(&partial))?;
    std::fs::rename(&partial, path).map_err(io_error(path))
}

/// One line about an entry: task, features, classes.
fn describe(entry: &ModelEntry) -> String {
    let features = format!(
        "{} features ({})",
        entry.feature_names.len(),
        entry.feature_names.join(", ")
    );
    match entry.task {
        Task::Classification => format!(
            "classification, {features}, classes {}",
            entry.class_labels.join(", ")
        ),
        Task::Regression => format!("regression, {features}"),
        Task::Tensors => "named tensors (V2 and gRPC), see the signature".into(),
    }
}

/// `models list`: a line per version, then its signature.
fn list(args: &RepositoryArgs, runtime: &Runtime, out: &mut dyn Write) -> Result<(), JobError> {
    let manifest = discover::manifest_for(&args.manifest, &args.models_dir, runtime)?;
    let source = if discover::is_bare(&args.manifest) {
        format!("{} (no manifest)", args.models_dir.display())
    } else {
        args.manifest.display().to_string()
    };
    let stdout = io_error(Path::new("-"));
    writeln!(
        out,
        "{} model versions from {source}",
        manifest.models.len()
    )
    .map_err(&stdout)?;
    for entry in &manifest.models {
        let file = args.models_dir.join(&entry.path).join(&entry.onnx.file);
        let bytes = std::fs::read(&file).map_err(io_error(&file))?;
        let (_, signature) =
            discover::read_signature(runtime, &bytes, &entry.name, &entry.version)?;
        let default = if entry.name == manifest.default_model {
            " (default)"
        } else {
            ""
        };
        writeln!(
            out,
            "{} {}{default}: {}; sha256 {}",
            entry.name,
            entry.version,
            describe(entry),
            entry.onnx.sha256
        )
        .map_err(&stdout)?;
        writeln!(out, "  signature {}", signature.describe()).map_err(&stdout)?;
    }
    Ok(())
}

/// `models check`: every version loaded on its own, so one failure does not hide another.
fn check(args: &RepositoryArgs, runtime: &Runtime, out: &mut dyn Write) -> Result<(), JobError> {
    let manifest = discover::manifest_for(&args.manifest, &args.models_dir, runtime)?;
    let stdout = io_error(Path::new("-"));
    let mut failed = 0;
    for entry in &manifest.models {
        match load_entry(entry, &manifest.raw, &args.models_dir, runtime) {
            Ok(model) => {
                let log = training_log::path_of(&model, &args.models_dir)
                    .map_or("no training log".into(), |p| {
                        format!("training log {} reproduced", p.display())
                    });
                writeln!(out, "ok {} {}: {log}", entry.name, entry.version).map_err(&stdout)?;
            }
            Err(error) => {
                failed += 1;
                writeln!(out, "FAILED {} {}: {error}", entry.name, entry.version)
                    .map_err(&stdout)?;
            }
        }
    }
    let listed: Vec<(&str, &str)> = manifest
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.version.as_str()))
        .collect();
    for found in discover::find_versions(&args.models_dir)? {
        let version = found.version.to_string();
        if !listed.contains(&(found.name.as_str(), version.as_str())) {
            writeln!(
                out,
                "not served {} {}: {} is not in the manifest",
                found.name,
                version,
                found.file.display()
            )
            .map_err(&stdout)?;
        }
    }
    if failed > 0 {
        return Err(JobError::CheckFailed {
            failed,
            total: manifest.models.len(),
        });
    }
    Ok(())
}
