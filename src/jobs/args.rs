//! The offline jobs' command lines: which model a job runs and how it is loaded (the same flags
//! as the server's), and each job's own files and options. Owned by the jobs, like the mock
//! feature store owns its flags; `config` only mounts them as subcommands.

use std::path::PathBuf;

use serde::Serialize;

use super::DataFormat;
use crate::model::runtime::ExecutionProviderChoice;
use crate::monitor::baseline::DEFAULT_PSI_THRESHOLD;
use crate::telemetry::LogFormat;

/// Which model an offline job runs, and how to load it (the same flags as the server's).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct JobModelArgs {
    /// The model to run (default: the manifest's default model).
    #[arg(long)]
    pub model: Option<String>,

    /// The model version (default: the model's highest).
    #[arg(long = "model-version")]
    pub model_version: Option<String>,

    /// The model repository: `<name>/<version>/model.onnx` and its artifacts.
    #[arg(long, env = "MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,

    /// The manifest that names every model version, its features and its sha256; `none` (or
    /// no file at the default path) reads every `<name>/<version>/model.onnx` of --models-dir
    /// with the signature its file declares (docs/your-models.md).
    #[arg(long, env = "MANIFEST_PATH", default_value = "manifest.json")]
    pub manifest: PathBuf,

    /// ONNX Runtime's shared library (from the pinned wheel; see scripts/fetch-onnxruntime.sh).
    #[arg(long, env = "ORT_DYLIB_PATH", default_value = ".ort/libonnxruntime.so")]
    pub ort_dylib_path: PathBuf,

    /// Threads ONNX Runtime may use inside one inference call.
    #[arg(long, env = "INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Execution provider: auto (CUDA if usable, else CPU), cpu, or cuda (fail without a GPU).
    #[arg(long, env = "EXECUTION_PROVIDER", value_enum, default_value = "auto")]
    pub execution_provider: ExecutionProviderChoice,

    /// Rows read, validated and inferred at a time: memory stays flat whatever the file size.
    #[arg(long, env = "CHUNK_ROWS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub chunk_rows: u64,

    /// Log format (logs go to stderr): json (default) or text.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// The rows a job reads, the same for every job.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct JobInputArgs {
    /// Rows to read: a CSV file with a header (feature columns by name; `predict` copies any
    /// other columns to its output) or JSON lines (one row per line); `-` reads stdin.
    #[arg(long, short = 'i')]
    pub input: PathBuf,

    /// Input format (default: from the file extension: .csv, else JSON lines).
    #[arg(long, value_enum)]
    pub input_format: Option<DataFormat>,
}

/// `ferrum-serve predict`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: JobModelArgs,

    #[command(flatten)]
    pub rows: JobInputArgs,

    /// Where predictions go (written to `<output>.partial`, renamed when complete); `-` writes
    /// stdout.
    #[arg(long, short = 'o')]
    pub output: PathBuf,

    /// Output format (default: from the file extension: .csv, else JSON lines).
    #[arg(long, value_enum)]
    pub output_format: Option<DataFormat>,
}

/// `ferrum-serve drift-report`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct DriftReportArgs {
    #[command(flatten)]
    pub model: JobModelArgs,

    #[command(flatten)]
    pub rows: JobInputArgs,

    /// Where the JSON report goes; `-` (default) writes stdout.
    #[arg(long, short = 'o', default_value = "-")]
    pub output: PathBuf,

    /// A feature or prediction whose PSI exceeds this is drifted (exit status 3).
    #[arg(long, env = "DRIFT_THRESHOLD", default_value_t = DEFAULT_PSI_THRESHOLD)]
    pub threshold: f64,
}

/// `ferrum-serve models`: the model repository, as the server reads it.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// What `ferrum-serve models` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelsCommand {
    /// Copy an ONNX file into the repository as `<name>/<version>/model.onnx` and record it in
    /// the manifest: sha256, signature, feature names, class labels, artifacts. With
    /// `--reference`, run it on those rows and store them as the training log the server
    /// re-checks at load.
    Add(ModelsAddArgs),
    /// Print every model version the server would serve, with its signature.
    List(RepositoryArgs),
    /// Load every model version as the server does (sha256, signature, warm-up, training log)
    /// and say which pass; exit status 1 when any fails.
    Check(RepositoryArgs),
}

impl ModelsCommand {
    /// The repository the command works on.
    pub fn repository(&self) -> &RepositoryArgs {
        match self {
            ModelsCommand::Add(add) => &add.repository,
            ModelsCommand::List(r) | ModelsCommand::Check(r) => r,
        }
    }
}

/// The repository and manifest, as the server's flags name them.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct RepositoryArgs {
    /// The model repository: `<name>/<version>/model.onnx` (Triton's layout) and artifacts.
    #[arg(long, env = "MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,

    /// The manifest; `none` (or no file at the default path) means the repository's files
    /// alone, as the server reads them.
    #[arg(long, env = "MANIFEST_PATH", default_value = crate::model::discover::DEFAULT_MANIFEST)]
    pub manifest: PathBuf,

    /// ONNX Runtime's shared library (from the pinned wheel; see scripts/fetch-onnxruntime.sh).
    #[arg(long, env = "ORT_DYLIB_PATH", default_value = ".ort/libonnxruntime.so")]
    pub ort_dylib_path: PathBuf,

    /// Log format (logs go to stderr): json (default) or text.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// `ferrum-serve models add`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ModelsAddArgs {
    /// The ONNX model file to add.
    pub file: PathBuf,

    #[command(flatten)]
    pub repository: RepositoryArgs,

    /// The model's name in the repository (its folder, and the name requests use).
    #[arg(long)]
    pub name: String,

    /// The version (default: one above the highest the model has, or 1).
    #[arg(long)]
    pub version: Option<u64>,

    /// The input columns' names, in order (default: f0, f1, ...).
    #[arg(long, value_delimiter = ',')]
    pub feature_names: Vec<String>,

    /// Names for the classes, in the order of the graph's class labels (default: the graph's
    /// labels).
    #[arg(long, value_delimiter = ',')]
    pub class_labels: Vec<String>,

    /// Background rows for /explain: a CSV whose header is the feature names in order.
    #[arg(long)]
    pub background: Option<PathBuf>,

    /// Rows to record as the training log: a CSV with a column per feature; optional `label`,
    /// `value` or `probability_<class>` columns are expected outputs the model must give.
    #[arg(long)]
    pub reference: Option<PathBuf>,
}
