//! Command-line configuration. Every flag has an environment fallback so the same binary is
//! configured by flags on a laptop and by env vars in a container or a Kubernetes ConfigMap.
//!
//! An edge: may import any module (it names the domain enums each module owns); no layer
//! imports it, so clap types never reach the layers.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

pub use crate::batching::BatchingChoice;
use crate::explain::ExplainLimits;
pub use crate::features::StoreConfig;
pub use crate::jobs::args::{
    DriftReportArgs, JobModelArgs, ModelsArgs, ModelsCommand, PredictArgs,
};
pub use crate::jobs::DataFormat;
use crate::lifecycle::control::DEFAULT_POLL_SECS;
pub use crate::lifecycle::{ModelControl, ModelControlMode};
pub use crate::model::runtime::ExecutionProviderChoice;
use crate::monitor::drift::DriftConfig;
use crate::monitor::explain_drift::ExplainDriftConfig;
pub use crate::telemetry::LogFormat;

/// The `ferrum-serve` command line: no subcommand serves (with the serve flags); `predict` and
/// `drift-report` are offline jobs over files, with the same model code; `models` manages the
/// model repository.
#[derive(Debug, Parser)]
#[command(
    name = "ferrum-serve",
    version,
    about = "Serve ONNX models over HTTP, reproducibly",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// An offline job, or `serve` (the default).
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Probe instead of serving: GET URL (default: this server's /health/ready on --port over
    /// loopback) and exit 0 if it answers 2xx, else 1. For container health checks (no curl).
    #[arg(long, value_name = "URL", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub healthcheck: Option<String>,
}

impl Cli {
    /// The command to run: serving with the top-level flags when no subcommand is given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

/// What the binary does.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // built once at start; boxing would buy nothing
pub enum Command {
    /// Serve the models over HTTP (what `ferrum-serve` does without a subcommand).
    Serve(ServeArgs),
    /// Batch inference from a CSV or JSON-lines file to a CSV or JSON-lines file, streamed in
    /// chunks, with the API's validation.
    Predict(PredictArgs),
    /// Feature and prediction drift (PSI) of a file of rows against the training baseline, as a
    /// JSON report; exits with status 3 when any PSI exceeds the threshold.
    DriftReport(DriftReportArgs),
    /// The model repository: `add` an ONNX file (copied in and recorded in the manifest),
    /// `list` what would be served, `check` every version as the server loads it.
    Models(ModelsArgs),
}

/// Everything the HTTP server needs to start.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free port, logged at start).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Port of the gRPC Open Inference Protocol (KServe V2 `inference.GRPCInferenceService`
    /// and `grpc.health.v1.Health`) on the same host; 0 turns gRPC off.
    #[arg(long, env = "GRPC_PORT", default_value_t = 8081)]
    pub grpc_port: u16,

    /// The model repository: `<name>/<version>/model.onnx` and its artifacts, in a directory
    /// or in object storage (`s3://bucket/prefix`, `gs://`, `az://`, `https://`), which is
    /// mirrored into --model-cache-dir and sha256-checked first (docs/object-storage.md).
    #[arg(long, env = "MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,

    /// The manifest that names every model version, its features and its sha256; `none` (or
    /// no file at the default path) serves every `<name>/<version>/model.onnx` of a local
    /// --models-dir with the signature its file declares (docs/your-models.md). With a
    /// remote --models-dir, a relative path is read inside the repository (the default is
    /// `<prefix>/manifest.json`) and an `s3://`-style URI from its store.
    #[arg(long, env = "MANIFEST_PATH", default_value = "manifest.json")]
    pub manifest: PathBuf,

    /// Where a remote --models-dir is mirrored; files whose hash still matches are reused
    /// across restarts. Default: `ferrum-serve/models` under the temporary directory.
    #[arg(long, env = "MODEL_CACHE_DIR")]
    pub model_cache_dir: Option<PathBuf>,

    /// ONNX Runtime's shared library (from the pinned wheel; see scripts/fetch-onnxruntime.sh).
    #[arg(long, env = "ORT_DYLIB_PATH", default_value = ".ort/libonnxruntime.so")]
    pub ort_dylib_path: PathBuf,

    /// Threads ONNX Runtime may use inside one inference call.
    #[arg(long, env = "INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// ONNX Runtime sessions per model version: how many inferences of one model run at once.
    /// Defaults to the number of CPU cores.
    #[arg(long, env = "SESSIONS_PER_MODEL")]
    pub sessions_per_model: Option<usize>,

    /// Execution provider: auto (CUDA if usable, else CPU), cpu, or cuda (fail without a GPU).
    #[arg(long, env = "EXECUTION_PROVIDER", value_enum, default_value = "auto")]
    pub execution_provider: ExecutionProviderChoice,

    /// Most rows one request may carry.
    #[arg(long, env = "MAX_REQUEST_ROWS", default_value_t = 1024)]
    pub max_request_rows: usize,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest the server waits for a request body to arrive in full (a client trickling
    /// bytes, slowloris-style) before answering 408 and closing the connection.
    #[arg(long, env = "BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,

    /// Longest an HTTP/1 request head (request line and headers) may take to arrive before the
    /// connection is closed; also how long an idle keep-alive connection stays open.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// Warm-up inferences per model before the server reports ready.
    #[arg(long, env = "WARMUP_RUNS", default_value_t = 10)]
    pub warmup_runs: usize,

    /// API key that inference routes require as `Authorization: Bearer <key>`; unset = open.
    /// Health, metrics and the manifest stay open either way.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub api_key: Option<String>,

    /// File holding the API key (e.g. a mounted Kubernetes Secret), read at start.
    #[arg(long, env = "API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Inference requests handled at once; more wait in the queue.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 64)]
    pub max_concurrent_requests: usize,

    /// Inference requests allowed to wait for a slot; beyond, 503 `overloaded` at once.
    #[arg(long, env = "MAX_QUEUED_REQUESTS", default_value_t = 256)]
    pub max_queued_requests: usize,

    /// Longest an inference request may take, queue wait included, before a 504.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// After SIGTERM, keep accepting connections this long (readiness already fails) so load
    /// balancers stop routing here before connections are refused.
    #[arg(long, env = "SHUTDOWN_DRAIN_MS", default_value_t = 0)]
    pub shutdown_drain_ms: u64,

    /// After the drain, how long in-flight requests get to finish before the process exits.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 30_000)]
    pub shutdown_grace_ms: u64,

    /// Who changes what is loaded while the server runs (Triton's names): none (what loads at
    /// start stays), poll (the manifest and repository are rescanned every
    /// --repository-poll-secs and changes applied), or explicit (only the repository
    /// extension's load/unload routes change it). SIGHUP rescans once in every mode.
    #[arg(long, env = "MODEL_CONTROL_MODE", value_enum, default_value = "none")]
    pub model_control_mode: ModelControlMode,

    /// The rescan period in poll mode, in seconds (at least 1 there).
    #[arg(long, env = "REPOSITORY_POLL_SECS", default_value_t = DEFAULT_POLL_SECS)]
    pub repository_poll_secs: u64,

    /// Whether a model version that cannot be served at start (a bad graph, a signature that
    /// disagrees with its manifest entry, a sha256 pin mismatch, a failed warm-up, a refused
    /// remote object) stops the start (true, Triton's default: a pod that cannot serve what it
    /// was deployed with should crash-loop visibly), or is reported unavailable while the
    /// other models serve (false; a rescan retries it).
    #[arg(long, env = "EXIT_ON_ERROR", default_value_t = true, action = clap::ArgAction::Set)]
    pub exit_on_error: bool,

    /// Serve the repository's model under this name (KServe's `--model-name={{.Name}}`, the
    /// InferenceService's name, so that `/v2/models/<name>` is the model): a repository of one
    /// model is served as `name`; one with several must have a model of that name (it is an
    /// error otherwise: which one was meant cannot be guessed).
    #[arg(long, env = "MODEL_NAME")]
    pub model_name: Option<String>,

    /// Dynamic batching: on (merge concurrent requests for a model into one ONNX Runtime call),
    /// off (one call per request), or auto (per model, the mode measured faster for it).
    #[arg(long, env = "BATCHING", value_enum, default_value = "auto")]
    pub batching: BatchingChoice,

    /// Most rows the batcher merges into one ONNX Runtime call (a larger request runs alone).
    #[arg(long, env = "MAX_BATCH_ROWS", default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_batch_rows: usize,

    /// Longest a batch waits for more requests, in microseconds. Only while another batch of the
    /// model is running: a request arriving at an idle batcher is never held back.
    #[arg(long, env = "MAX_QUEUE_DELAY_US", default_value_t = 100)]
    pub max_queue_delay_us: u64,

    /// Most requests waiting per model version; more are refused at once with 503
    /// `overloaded` and a Retry-After header.
    #[arg(long, env = "MAX_QUEUE_DEPTH", default_value_t = 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_queue_depth: usize,

    /// Log format: json (default) or text.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Served rows kept per model version for live drift monitoring (PSI of each feature and
    /// of the predictions against the training baseline); 0 turns drift monitoring off.
    #[arg(long, env = "DRIFT_WINDOW_ROWS", default_value_t = 2000)]
    pub drift_window_rows: usize,

    /// How often the drift gauges are recomputed, in milliseconds (in a background thread).
    #[arg(long, env = "DRIFT_INTERVAL_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub drift_interval_ms: u64,

    /// Drift gauges are published once a window holds this many rows (PSI over few rows is
    /// mostly sampling noise: about (bins - 1) / rows).
    #[arg(long, env = "DRIFT_MIN_ROWS", default_value_t = 200)]
    pub drift_min_rows: usize,

    /// Served requests that may wait for the drift monitor, which takes them every 10 ms; when
    /// full, newer rows are left out of monitoring (and counted) rather than slowing requests.
    #[arg(long, env = "DRIFT_QUEUE_CAPACITY", default_value_t = 1024)]
    pub drift_queue_capacity: usize,
    /// /explain: the widest non-tree model explained exactly (2^M coalitions through the
    /// model); wider models are explained by permutation sampling. At most 30.
    #[arg(long, env = "EXPLAIN_MAX_EXACT_FEATURES", default_value_t = 16, value_parser = exact_features)]
    pub explain_max_exact_features: usize,

    /// /explain: most rows one request may carry.
    #[arg(long, env = "EXPLAIN_MAX_ROWS", default_value_t = 32, value_parser = at_least_one)]
    pub explain_max_rows: usize,

    /// /explain: permutations per row for the sampling method, an even number (each random
    /// order is paired with its reverse). Reported in each sampled explanation.
    #[arg(long, env = "EXPLAIN_PERMUTATIONS", default_value_t = 10, value_parser = even_permutations)]
    pub explain_permutations: usize,

    /// /explain: most model evaluations one request may cost (rows through the model, or
    /// background rows through the trees). A request above it is refused before any work,
    /// so no explanation can hold the server for long.
    #[arg(long, env = "EXPLAIN_MAX_EVALUATIONS", default_value_t = 10_000_000)]
    pub explain_max_evaluations: u64,

    /// /explain: rows per ONNX Runtime call when evaluating coalitions.
    #[arg(long, env = "EXPLAIN_BATCH_ROWS", default_value_t = 4096, value_parser = at_least_one)]
    pub explain_batch_rows: usize,

    /// /explain: explanations computed at once (each on one blocking thread and one session);
    /// further requests wait without holding a thread. Keep it below the cores so /predict
    /// always finds a free core and session.
    #[arg(long, env = "EXPLAIN_CONCURRENCY", default_value_t = 1, value_parser = at_least_one)]
    pub explain_concurrency: usize,

    /// Explanation drift: how often the mean |attribution| of recently served rows is
    /// recomputed in the background (0 turns it off).
    #[arg(long, env = "EXPLAIN_DRIFT_INTERVAL_MS", default_value_t = 60_000)]
    pub explain_drift_interval_ms: u64,

    /// Explanation drift: rows explained per model version for each recomputation (and once
    /// over the background set for the training reference).
    #[arg(long, env = "EXPLAIN_DRIFT_ROWS", default_value_t = 32)]
    pub explain_drift_rows: usize,

    /// /explain: explanations that may wait for their turn; past that, 503 `overloaded` at
    /// once, so waiting explanations never fill the admission queue ahead of /predict.
    #[arg(long, env = "EXPLAIN_MAX_QUEUED", default_value_t = 8)]
    pub explain_max_queued: usize,

    /// Test-only: serve routes that fail on purpose (`GET /_fault/panic` panics), to test how
    /// failures are answered. Hidden from --help; never set it in production.
    #[arg(long, env = "ENABLE_FAULT_ROUTES", hide = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_fault_routes: bool,

    /// Where `entity_ids` are looked up (see [`FeatureStoreArgs`]).
    #[command(flatten)]
    pub feature_store: FeatureStoreArgs,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number >= 1")),
    }
}

fn exact_features(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=30).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a whole number from 1 to 30")),
    }
}

fn even_permutations(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 2 && n.is_multiple_of(2) => Ok(n),
        _ => Err(format!("'{s}' is not an even number >= 2")),
    }
}

/// The feature store behind `{"entity_ids": [...]}` requests, and how patiently it is asked.
/// Each field is named as its flag, as in [`ServeArgs`], so the effective-configuration log
/// line names every setting the way an operator sets it; [`Self::store_config`] hands the
/// store its plain values.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FeatureStoreArgs {
    /// Where entity ids are looked up: http://host:port (a Feast feature server, plain HTTP),
    /// `file://<dir or snapshot.csv>` (read in-process), or none (entity lookups off). Unset:
    /// each model's own snapshot.csv in the models directory, in-process.
    #[arg(long, env = "FEATURE_STORE_URI")]
    pub feature_store_uri: Option<String>,

    /// Time budget of one lookup, retries included; past it the request fails with 504.
    #[arg(long, env = "FEATURE_STORE_TIMEOUT_MS", default_value_t = 1000)]
    pub feature_store_timeout_ms: u64,

    /// How long to wait for a connection to the store before calling it unreachable.
    #[arg(long, env = "FEATURE_STORE_CONNECT_TIMEOUT_MS", default_value_t = 250)]
    pub feature_store_connect_timeout_ms: u64,

    /// Retries after a connection error or a 5xx answer (never after a timeout).
    #[arg(long, env = "FEATURE_STORE_RETRIES", default_value_t = 2)]
    pub feature_store_retries: u32,

    /// First retry's backoff in milliseconds; doubled per retry, with jitter.
    #[arg(long, env = "FEATURE_STORE_BACKOFF_MS", default_value_t = 25)]
    pub feature_store_backoff_ms: u64,

    /// Keep looked-up rows this many milliseconds (0: no cache, every request asks the store).
    #[arg(long, env = "FEATURE_STORE_CACHE_TTL_MS", default_value_t = 0)]
    pub feature_store_cache_ttl_ms: u64,

    /// Most rows the cache holds.
    #[arg(long, env = "FEATURE_STORE_CACHE_ENTRIES", default_value_t = 100_000)]
    pub feature_store_cache_entries: usize,

    /// How often a remote store's health and snapshot id are re-checked, in milliseconds.
    #[arg(
        long,
        env = "FEATURE_STORE_CHECK_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub feature_store_check_interval_ms: u64,

    /// Report not ready until the store is verified to serve the manifest's feature snapshot
    /// (`dataset.feature_snapshot_id`) for every model that has a feature_store block.
    #[arg(long, env = "REQUIRE_SNAPSHOT_MATCH", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_snapshot_match: bool,
}

impl FeatureStoreArgs {
    /// The flags as the feature store takes them.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            uri: self.feature_store_uri.clone(),
            timeout_ms: self.feature_store_timeout_ms,
            connect_timeout_ms: self.feature_store_connect_timeout_ms,
            retries: self.feature_store_retries,
            backoff_ms: self.feature_store_backoff_ms,
            cache_ttl_ms: self.feature_store_cache_ttl_ms,
            cache_entries: self.feature_store_cache_entries,
            check_interval_ms: self.feature_store_check_interval_ms,
            require_snapshot_match: self.require_snapshot_match,
        }
    }
}

impl ServeArgs {
    /// Sessions per model version, resolving the default from the machine's cores.
    pub fn sessions_per_model(&self) -> usize {
        self.sessions_per_model
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// How served rows are monitored for drift.
    pub fn drift_config(&self) -> DriftConfig {
        DriftConfig {
            window_rows: self.drift_window_rows,
            interval: Duration::from_millis(self.drift_interval_ms),
            min_rows: self.drift_min_rows,
            queue_capacity: self.drift_queue_capacity,
        }
    }

    /// How explanation drift is sampled.
    pub fn explain_drift_config(&self) -> ExplainDriftConfig {
        ExplainDriftConfig {
            interval: Duration::from_millis(self.explain_drift_interval_ms),
            sample_rows: self.explain_drift_rows,
        }
    }

    /// The `/explain` limits.
    pub fn explain_limits(&self) -> ExplainLimits {
        ExplainLimits {
            max_exact_features: self.explain_max_exact_features,
            max_rows: self.explain_max_rows,
            permutations: self.explain_permutations,
            max_evaluations: self.explain_max_evaluations,
            batch_rows: self.explain_batch_rows,
            concurrency: self.explain_concurrency,
            max_queued: self.explain_max_queued,
        }
    }

    /// The batcher's limits; one scheduler thread per session.
    pub fn batching_config(&self) -> crate::batching::BatchingConfig {
        crate::batching::BatchingConfig {
            max_batch_rows: self.max_batch_rows,
            max_queue_delay: std::time::Duration::from_micros(self.max_queue_delay_us),
            max_queue_depth: self.max_queue_depth,
            threads: self.sessions_per_model(),
        }
    }

    /// The model control settings, checked together (a 0 s poll period is refused in poll
    /// mode).
    pub fn model_control(&self) -> Result<ModelControl, String> {
        ModelControl::new(self.model_control_mode, self.repository_poll_secs)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let cli = Cli::try_parse_from(["ferrum-serve"]).unwrap();
        assert_eq!(cli.serve.port, 8080);
        assert_eq!(cli.serve.execution_provider, ExecutionProviderChoice::Auto);
        assert_eq!(cli.serve.models_dir, PathBuf::from("models"));
        assert_eq!(cli.serve.model_cache_dir, None);
        assert!(cli.serve.sessions_per_model() >= 1);
        assert_eq!(cli.serve.header_read_timeout_ms, 10_000);
        assert!(Cli::try_parse_from(["ferrum-serve", "--header-read-timeout-ms", "0"]).is_err());
        let cli = Cli::try_parse_from([
            "ferrum-serve",
            "--models-dir",
            "s3://bucket/prefix",
            "--model-cache-dir",
            "/var/cache/models",
        ])
        .unwrap();
        assert_eq!(cli.serve.models_dir, PathBuf::from("s3://bucket/prefix"));
        assert_eq!(
            cli.serve.model_cache_dir,
            Some(PathBuf::from("/var/cache/models"))
        );
    }

    #[test]
    fn flags_override_and_bad_values_are_refused() {
        let cli = Cli::try_parse_from([
            "ferrum-serve",
            "--port",
            "9000",
            "--execution-provider",
            "cpu",
        ])
        .unwrap();
        assert_eq!(cli.serve.port, 9000);
        assert_eq!(cli.serve.execution_provider, ExecutionProviderChoice::Cpu);
        assert!(Cli::try_parse_from(["ferrum-serve", "--execution-provider", "tpu"]).is_err());
    }

    #[test]
    fn exit_on_error_defaults_to_true_and_takes_an_explicit_value() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("ferrum-serve").chain(args.iter().copied()))
                .map(|cli| cli.serve.exit_on_error)
        };
        assert!(parse(&[]).unwrap());
        assert!(!parse(&["--exit-on-error", "false"]).unwrap());
        assert!(parse(&["--exit-on-error", "true"]).unwrap());
        assert!(parse(&["--exit-on-error", "maybe"]).is_err());
    }

    #[test]
    fn no_subcommand_serves_and_jobs_take_their_own_flags() {
        use std::path::Path;
        let cli = Cli::try_parse_from(["ferrum-serve", "--drift-window-rows", "50"]).unwrap();
        match cli.into_command() {
            Command::Serve(args) => {
                assert_eq!(args.drift_window_rows, 50);
                assert_eq!(args.drift_config().interval, Duration::from_secs(15));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["ferrum-serve", "serve", "--port", "1"]).unwrap();
        assert!(matches!(cli.into_command(), Command::Serve(a) if a.port == 1));
        let cli = Cli::try_parse_from([
            "ferrum-serve",
            "predict",
            "--model",
            "diabetes",
            "-i",
            "in.csv",
            "-o",
            "out.jsonl",
        ])
        .unwrap();
        match cli.into_command() {
            Command::Predict(args) => {
                assert_eq!(args.model.model.as_deref(), Some("diabetes"));
                assert_eq!(args.model.chunk_rows, 4096);
                assert_eq!(args.output, PathBuf::from("out.jsonl"));
            }
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["ferrum-serve", "drift-report", "--input", "x.csv"]).unwrap();
        assert!(
            matches!(cli.into_command(), Command::DriftReport(a) if a.threshold == 0.25 && a.output == Path::new("-"))
        );
        // Server flags before a subcommand are refused rather than silently ignored.
        assert!(Cli::try_parse_from([
            "ferrum-serve",
            "--port",
            "1",
            "predict",
            "-i",
            "a",
            "-o",
            "b"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["ferrum-serve", "--drift-interval-ms", "0"]).is_err());
    }

    #[test]
    fn explain_limits_default_to_the_library_defaults_and_are_checked() {
        let cli = Cli::try_parse_from(["ferrum-serve"]).unwrap();
        let limits = cli.serve.explain_limits();
        let defaults = ExplainLimits::default();
        assert_eq!(
            serde_json::to_value(limits).unwrap(),
            serde_json::to_value(defaults).unwrap()
        );
        for bad in [
            ["--explain-permutations", "3"],
            ["--explain-permutations", "0"],
            ["--explain-max-exact-features", "31"],
            ["--explain-max-rows", "0"],
            ["--explain-concurrency", "0"],
        ] {
            let args = ["ferrum-serve", bad[0], bad[1]];
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["ferrum-serve", "--explain-permutations", "20"]).unwrap();
        assert_eq!(cli.serve.explain_limits().permutations, 20);
    }

    #[test]
    fn feature_store_flags() {
        let cli = Cli::try_parse_from(["ferrum-serve"]).unwrap();
        let store = cli.serve.feature_store.store_config();
        assert_eq!(store.uri, None);
        assert_eq!(
            (store.timeout_ms, store.retries, store.cache_ttl_ms),
            (1000, 2, 0)
        );
        assert!(!store.require_snapshot_match);
        let cli = Cli::try_parse_from([
            "ferrum-serve",
            "--feature-store-uri",
            "http://feature-store:6566",
            "--feature-store-timeout-ms",
            "200",
            "--require-snapshot-match",
        ])
        .unwrap();
        let store = cli.serve.feature_store.store_config();
        assert_eq!(store.uri.as_deref(), Some("http://feature-store:6566"));
        assert_eq!(store.timeout_ms, 200);
        assert!(store.require_snapshot_match);
    }

    #[test]
    fn healthcheck_flag_takes_an_optional_url() {
        let cli = Cli::try_parse_from(["ferrum-serve"]).unwrap();
        assert_eq!(cli.healthcheck, None);
        let cli = Cli::try_parse_from(["ferrum-serve", "--healthcheck", "--port", "9000"]).unwrap();
        assert_eq!(
            (cli.healthcheck.as_deref(), cli.serve.port),
            (Some(""), 9000)
        );
        let cli =
            Cli::try_parse_from(["ferrum-serve", "--healthcheck=http://fs:6566/health"]).unwrap();
        assert_eq!(cli.healthcheck.as_deref(), Some("http://fs:6566/health"));
    }

    #[test]
    fn batching_flags_have_small_safe_defaults() {
        let cli = Cli::try_parse_from(["ferrum-serve"]).unwrap();
        assert_eq!(cli.serve.batching, BatchingChoice::Auto);
        let config = cli.serve.batching_config();
        assert_eq!(config.max_batch_rows, 256);
        assert_eq!(
            config.max_queue_delay,
            std::time::Duration::from_micros(100)
        );
        assert_eq!(config.max_queue_depth, 1024);
        assert_eq!(config.threads, cli.serve.sessions_per_model());
        let cli = Cli::try_parse_from([
            "ferrum-serve",
            "--batching",
            "on",
            "--max-batch-rows",
            "8",
            "--max-queue-delay-us",
            "0",
        ])
        .unwrap();
        assert_eq!(cli.serve.batching, BatchingChoice::On);
        assert_eq!(cli.serve.batching_config().max_batch_rows, 8);
        for bad in [
            ["--batching", "maybe"],
            ["--max-batch-rows", "0"],
            ["--max-queue-depth", "0"],
        ] {
            assert!(Cli::try_parse_from(["ferrum-serve", bad[0], bad[1]]).is_err());
        }
    }
}
