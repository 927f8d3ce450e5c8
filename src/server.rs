//! Start-up and shutdown, in the order Kubernetes expects: bind and answer liveness at once,
//! load and warm up every model on a blocking thread, only then report ready (and start the
//! model controller, which changes what serves from then on); on SIGTERM fail readiness first,
//! then let in-flight requests finish. With `--exit-on-error false` a version that cannot be
//! served (found at discovery, refused by the remote sync, or failing its load) is reported
//! unavailable instead of stopping the start.
//!
//! An edge: may import any module; only the binary's `main` calls it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use std::time::Duration;

use crate::api::{self, Admission, ApiKey, AppState, Limits};
use crate::config::ServeArgs;
use crate::features::FeatureStore;
use crate::grpc;
use crate::lifecycle::{Refusal, Version};
use crate::listener::{self, ConnectionLimits};
use crate::model::{discover, LoadError, LoadOptions, Manifest, Runtime};
use crate::serving::reconcile::{Control, ModelController, Refresh, Start};
use crate::serving::{shadow, Loader};
use crate::shutdown::Hangups;
use crate::storage::{self, RefusedVersion, RemoteRepository, StorageError};
use crate::telemetry;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server error: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("in-flight requests did not finish within the {0} ms shutdown grace period")]
    GraceExpired(u64),
    #[error("feature store: {0}")]
    FeatureStore(String),
}

/// Runs the HTTP server until `shutdown` resolves (then drains), or returns the first start-up
/// error. `main` passes [`crate::shutdown::termination`].
pub async fn run(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    tracing::info!(config = %serde_json::to_string(&args).unwrap_or_default(), "effective configuration");
    // First: from here on SIGHUP asks for a rescan instead of ending the process.
    let hangups = Hangups::install();
    telemetry::metrics::set_build_info(std::env::var("IMAGE_TAG").ok().as_deref());
    let (args, mut start) = mirror_remote_repository(args).await?;
    let runtime = Runtime::load(&args.ort_dylib_path)?;
    let manifest = if args.exit_on_error {
        discover::manifest_for(&args.manifest, &args.models_dir, &runtime)?
    } else {
        let (manifest, unservable) =
            discover::manifest_for_each(&args.manifest, &args.models_dir, &runtime)?;
        start
            .refused
            .extend(unservable.into_iter().map(Refusal::from));
        manifest
    };
    let manifest = match &args.model_name {
        Some(name) => manifest.serve_as(name).map_err(ServeError::Config)?,
        None => manifest,
    };
    // Before binding: a bad FEATURE_STORE_URI or unreadable snapshot stops the start with a
    // clear message. A remote store is only checked in the background: being down is not
    // a start-up error, it is a 503 per entity-id request until it is back.
    let feature_store = FeatureStore::open(
        &args.feature_store.store_config(),
        &without_refused(&manifest, &start.refused),
        &args.models_dir,
    )
    .await
    .map(std::sync::Arc::new)
    .map_err(ServeError::FeatureStore)?;
    tracing::info!(uri = %feature_store.uri(), "feature store");

    let address = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "listening");
    let grpc_listener = bind_grpc(&args).await?;

    let limits = Limits {
        max_request_rows: args.max_request_rows,
        max_body_bytes: args.max_body_bytes,
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
        explain: args.explain_limits(),
    };
    let admission = Admission::new(
        args.max_concurrent_requests,
        args.max_queued_requests,
        Duration::from_millis(args.request_timeout_ms),
    );
    let state = AppState::new(manifest.clone(), limits, admission, api_key(&args)?);
    feature_store.spawn_monitor();
    state.set_feature_store(feature_store);
    let load_failed = spawn_model_load(&args, manifest, runtime, state.clone(), hangups, start)?;

    // Set when the listeners stop accepting: the HTTP one (its shutdown future sends it), then
    // the gRPC one, and the grace period's start.
    let (drained_tx, drained) = tokio::sync::watch::channel(false);
    let grpc = serve_grpc(grpc_listener, &args, &state, drained.clone());
    let drain = Duration::from_millis(args.shutdown_drain_ms);
    let connection_limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
    };
    let router = if args.enable_fault_routes {
        tracing::warn!("fault routes enabled (GET /_fault/panic panics): for tests only");
        api::router_with(state.clone(), api::panics::fault_routes())
    } else {
        api::router(state.clone())
    };
    let server = listener::serve(
        listener,
        router,
        connection_limits,
        shutdown_signal(shutdown, state, drain, drained_tx),
    );
    // The grace period starts when connections stop being accepted.
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let mut drained = drained;
    let grace_over = async move {
        if drained.wait_for(|&done| done).await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = async { tokio::try_join!(async { Ok(server.await?) }, grpc) } => served.map(|_| ()),
        Ok(error) = load_failed => Err(error.into()),
        () = grace_over => Err(ServeError::GraceExpired(args.shutdown_grace_ms)),
    }
}

/// A `--models-dir` in object storage is mirrored into the model cache first (the manifest
/// fetched, every model file sha256-checked against it); the rest of start-up then reads the
/// local copy as it would any directory. Before binding, like the manifest check: the feature
/// store reads its snapshots from the models directory at open. Returns what the start-up
/// load takes: the refused versions (with `--exit-on-error false`; else the first stops the
/// start, as a local sha256 mismatch does) and the re-sync every rescan runs first.
async fn mirror_remote_repository(mut args: ServeArgs) -> Result<(ServeArgs, Start), ServeError> {
    let mut start = Start {
        exit_on_error: args.exit_on_error,
        model_name: args.model_name.clone(),
        ..Start::default()
    };
    let uri = args.models_dir.to_string_lossy().into_owned();
    if !storage::is_remote(&uri) {
        return Ok((args, start));
    }
    let cache = args
        .model_cache_dir
        .clone()
        .unwrap_or_else(storage::default_cache_dir);
    // The default manifest path is read inside the repository (not checked locally).
    if args.manifest == std::path::Path::new(discover::NO_MANIFEST) {
        return Err(ServeError::Config(format!(
            "a remote --models-dir ({uri}) needs a manifest; serve without one from a local directory"
        )));
    }
    let repository = Arc::new(RemoteRepository::open(&uri, &cache)?);
    let source = args.manifest.clone();
    let (manifest, refused) = sync_remote(&repository, &source).await?;
    if args.exit_on_error {
        if let Some(refused) = refused.into_iter().next() {
            return Err(refused.error.into());
        }
    } else {
        start.refused = refusals(&repository, refused);
    }
    args.manifest = manifest;
    args.models_dir = repository.local_dir().to_path_buf();
    start.refresh = Some(remote_refresh(repository, source));
    Ok((args, start))
}

/// Fetches the manifest (`source` as `--manifest` gave it) and mirrors what it lists; returns
/// the local manifest and the refused versions. The manifest is read on the blocking pool.
async fn sync_remote(
    repository: &RemoteRepository,
    source: &Path,
) -> Result<(PathBuf, Vec<RefusedVersion>), ServeError> {
    let local = repository.resolve_manifest(source).await?;
    let path = local.clone();
    let manifest = tokio::task::spawn_blocking(move || Manifest::read(&path))
        .await
        .map_err(|e| ServeError::Config(format!("manifest read task failed: {e}")))??;
    let report = repository.sync(&manifest).await?;
    telemetry::metrics::record_model_store_sync(
        report.downloaded.len() as u64,
        report.downloaded_bytes,
        report.reused.len() as u64,
    );
    Ok((local, report.refused))
}

/// The re-sync each rescan runs first: the manifest fetched again and new or changed objects
/// mirrored (sha256-checked, cached files reused); refused versions are not loaded.
fn remote_refresh(repository: Arc<RemoteRepository>, source: PathBuf) -> Refresh {
    Arc::new(move || {
        let (repository, source) = (repository.clone(), source.clone());
        Box::pin(async move {
            let (_, refused) = sync_remote(&repository, &source)
                .await
                .map_err(|e| format!("{}: {e}", repository.uri()))?;
            Ok(refusals(&repository, refused))
        })
    })
}

/// The versions the sync refused, as the controller refuses them.
fn refusals(repository: &RemoteRepository, refused: Vec<RefusedVersion>) -> Vec<Refusal> {
    refused
        .into_iter()
        .filter_map(|r| {
            Some(Refusal {
                version: Version(r.version.parse().ok()?),
                file: repository.local_dir().join(&r.file),
                reason: r.error.to_string(),
                name: r.name,
            })
        })
        .collect()
}

/// `manifest` without the versions refused before loading: what the feature store opens
/// with, since a refused remote version's files (its snapshot) were not mirrored.
fn without_refused(manifest: &Manifest, refused: &[Refusal]) -> Manifest {
    let mut kept = manifest.clone();
    kept.models.retain(|entry| {
        !refused
            .iter()
            .any(|r| r.name == entry.name && entry.version.parse() == Ok(r.version.0))
    });
    kept
}

/// Binds `--grpc-port` on `--host` (none when it is 0): at start, with the HTTP port, so a port
/// in use stops the start with a clear message.
async fn bind_grpc(args: &ServeArgs) -> Result<Option<TcpListener>, ServeError> {
    if args.grpc_port == 0 {
        tracing::info!("gRPC off (GRPC_PORT=0)");
        return Ok(None);
    }
    let address = SocketAddr::new(args.host, args.grpc_port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    tracing::info!(address = %listener.local_addr()?, "gRPC listening");
    Ok(Some(listener))
}

/// The gRPC server over the HTTP API's state, stopping when the HTTP listener stops accepting
/// (`drained`); done at once when gRPC is off.
fn serve_grpc(
    listener: Option<TcpListener>,
    args: &ServeArgs,
    state: &AppState,
    mut drained: tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = Result<(), ServeError>> {
    let backend = std::sync::Arc::new(grpc::api_backend::ApiBackend::new(state.clone()));
    let limits = grpc::GrpcLimits {
        max_message_bytes: args.max_body_bytes,
    };
    async move {
        let Some(listener) = listener else {
            return Ok(());
        };
        let stop = async move {
            let _ = drained.wait_for(|&done| done).await;
        };
        Ok(grpc::serve(listener, backend, limits, stop).await?)
    }
}

/// The API key from `--api-key` or `--api-key-file` (not both).
fn api_key(args: &ServeArgs) -> Result<Option<ApiKey>, ServeError> {
    let key = match (&args.api_key, &args.api_key_file) {
        (Some(_), Some(_)) => {
            return Err(ServeError::Config(
                "set API_KEY or API_KEY_FILE, not both".into(),
            ))
        }
        (Some(key), None) => key.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            ServeError::Config(format!(
                "cannot read the API key file {}: {e}",
                path.display()
            ))
        })?,
        (None, None) => return Ok(None),
    };
    match ApiKey::new(&key) {
        Some(key) => {
            tracing::info!("API key required on inference routes");
            Ok(Some(key))
        }
        None => Err(ServeError::Config("the API key is empty".into())),
    }
}

/// Loads the models off the async runtime; publishes them when done and starts the model
/// controller (rescans on the poll period and on each of `hangups`, the repository routes), or
/// sends the error back.
fn spawn_model_load(
    args: &ServeArgs,
    manifest: Manifest,
    runtime: Runtime,
    state: AppState,
    hangups: Hangups,
    start: Start,
) -> Result<oneshot::Receiver<LoadError>, ServeError> {
    let control = args.model_control().map_err(ServeError::Config)?;
    let (failed, load_failed) = oneshot::channel();
    let loader = Loader {
        runtime,
        models_dir: args.models_dir.clone(),
        options: LoadOptions {
            sessions_per_model: args.sessions_per_model(),
            intra_op_threads: args.intra_op_threads,
            execution_provider: args.execution_provider,
            warmup_runs: args.warmup_runs,
        },
        batching: args.batching,
        batching_config: args.batching_config(),
    };
    let manifest_path = args.manifest.clone();
    let drift = args.drift_config();
    let (explain_limits, explain_drift) = (args.explain_limits(), args.explain_drift_config());
    let (shadow_queue, shadow_jobs) = shadow::shadow_queue();
    tokio::spawn(shadow::run_worker(shadow_jobs));
    let runtime_handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let models_dir = loader.models_dir.clone();
        match ModelController::start(
            loader,
            manifest_path,
            manifest,
            control,
            shadow_queue,
            start,
        ) {
            Ok((controller, control_handle, live)) => {
                let snapshot = live.current();
                if let Some(drift) =
                    crate::monitor::observe_models(&snapshot.manifest, &models_dir, drift)
                {
                    state.set_drift(drift);
                }
                // Explanation drift compares served rows, which only the rows form keeps.
                let explained = snapshot
                    .versions()
                    .filter(|m| !m.is_tensors())
                    .filter_map(|m| Some((m.model.clone(), m.explain.clone()?)))
                    .collect();
                drop(snapshot);
                runtime_handle.spawn(rescan_on_hangups(hangups, control_handle.clone()));
                state.set_models(live, control_handle);
                if let Some(drift) = state.drift() {
                    crate::monitor::explain_drift::spawn(
                        explained,
                        drift.clone(),
                        explain_limits,
                        explain_drift,
                    );
                }
                runtime_handle.spawn(controller.run());
                tracing::info!(
                    model_control_mode = control.mode.as_str(),
                    "all models loaded and warmed up; ready"
                );
            }
            Err(error) => {
                let _ = failed.send(error);
            }
        }
    });
    Ok(load_failed)
}

/// One rescan per SIGHUP, in every model control mode.
async fn rescan_on_hangups(mut hangups: Hangups, control: Control) {
    loop {
        hangups.next().await;
        tracing::info!("SIGHUP: rescanning the model repository");
        control.rescan();
    }
}

/// Resolves after `shutdown` (SIGTERM or SIGINT): marks the server not ready at once, keeps
/// accepting for the drain delay (so load balancers notice), then lets the accept loop stop
/// accepting and finish in-flight requests.
async fn shutdown_signal(
    shutdown: impl Future<Output = ()>,
    state: AppState,
    drain: Duration,
    drained: tokio::sync::watch::Sender<bool>,
) {
    shutdown.await;
    state.begin_shutdown();
    tracing::info!(
        drain_ms = drain.as_millis() as u64,
        "shutdown signal received; readiness now fails"
    );
    tokio::time::sleep(drain).await;
    tracing::info!(
        in_flight = state.admission.in_flight(),
        "no longer accepting connections; finishing in-flight requests"
    );
    drained.send_replace(true);
}
