//! Command-line configuration. Every flag has an environment fallback so the same binary is
//! configured by flags on a laptop and by env vars in a container or a Kubernetes ConfigMap.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// The `ferrum-serve` command line.
#[derive(Debug, Parser)]
#[command(
    name = "ferrum-serve",
    version,
    about = "Serve ONNX models over HTTP, reproducibly"
)]
pub struct Cli {
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Which ONNX Runtime execution provider serves the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderChoice {
    /// CUDA when it can be registered, otherwise CPU (with a log line saying so).
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or refuse to start: for deployments that must not silently run on CPU.
    Cuda,
}

/// Whether concurrent requests for a model are merged into one ONNX Runtime call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchingChoice {
    /// Each model gets the mode measured faster for it (see docs/benchmarks.md).
    Auto,
    /// The dynamic batcher for every model.
    On,
    /// One ONNX Runtime call per request for every model.
    Off,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Text,
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

    /// The model repository: `<name>/<version>/model.onnx` and its artifacts.
    #[arg(long, env = "MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,

    /// The manifest that names every model version, its features and its sha256.
    #[arg(long, env = "MANIFEST_PATH", default_value = "manifest.json")]
    pub manifest: PathBuf,

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

    /// Warm-up inferences per model before the server reports ready.
    #[arg(long, env = "WARMUP_RUNS", default_value_t = 10)]
    pub warmup_runs: usize,

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
}

impl ServeArgs {
    /// Sessions per model version, resolving the default from the machine's cores.
    pub fn sessions_per_model(&self) -> usize {
        self.sessions_per_model
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
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
        assert!(cli.serve.sessions_per_model() >= 1);
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
