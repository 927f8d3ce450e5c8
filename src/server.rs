//! Start-up and shutdown, in the order Kubernetes expects: bind and answer liveness at once,
//! load and warm up every model on a blocking thread, only then report ready; on SIGTERM fail
//! readiness first, then let in-flight requests finish.

use std::future::IntoFuture;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api::{self, AppState, Limits};
use crate::config::ServeArgs;
use crate::model::{LoadError, LoadOptions, Manifest, Repository, Runtime};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the HTTP server until a shutdown signal, or returns the first start-up error.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    tracing::info!(config = %serde_json::to_string(&args).unwrap_or_default(), "effective configuration");
    let manifest = Manifest::read(&args.manifest)?;
    let runtime = Runtime::load(&args.ort_dylib_path)?;

    let address = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "listening");

    let limits = Limits {
        max_request_rows: args.max_request_rows,
        max_body_bytes: args.max_body_bytes,
    };
    let state = AppState::new(manifest.clone(), limits);
    let load_failed = spawn_model_load(&args, manifest, runtime, state.clone());

    let server = axum::serve(listener, api::router(state.clone()))
        .with_graceful_shutdown(shutdown_signal(state))
        .into_future();
    tokio::select! {
        served = server => Ok(served?),
        Ok(error) = load_failed => Err(error.into()),
    }
}

/// Loads the models off the async runtime; publishes them when done, or sends the error back.
fn spawn_model_load(
    args: &ServeArgs,
    manifest: Manifest,
    runtime: Runtime,
    state: AppState,
) -> oneshot::Receiver<LoadError> {
    let (failed, load_failed) = oneshot::channel();
    let models_dir = args.models_dir.clone();
    let options = LoadOptions {
        sessions_per_model: args.sessions_per_model(),
        intra_op_threads: args.intra_op_threads,
        execution_provider: args.execution_provider,
        warmup_runs: args.warmup_runs,
    };
    let (batching, batching_config) = (args.batching, args.batching_config());
    tokio::task::spawn_blocking(move || {
        match Repository::load(manifest, &models_dir, &runtime, options) {
            Ok(repository) => {
                crate::batching::attach(&repository, batching, batching_config);
                state.set_repository(repository);
                tracing::info!("all models loaded and warmed up; ready");
            }
            Err(error) => {
                let _ = failed.send(error);
            }
        }
    });
    load_failed
}

/// Resolves on SIGTERM or SIGINT, after marking the server not ready.
async fn shutdown_signal(state: AppState) {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    state.begin_shutdown();
    tracing::info!("shutdown signal received; readiness now fails, finishing in-flight requests");
}
