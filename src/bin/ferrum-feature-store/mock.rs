//! The mock feature store: Feast's feature-server protocol over the snapshots the training
//! pipeline exports, so the API's remote path runs end to end with no Feast installed (and
//! the same image: the `ferrum-feature-store` binary is a thin main around [`serve`]). It lives in the
//! binary's own module tree, not the library: the API never links a fake of its dependency.
//!
//! It answers as the real feast 0.67 server did (the captures in `../shared/notes/feast-0.67/`
//! are the reference): columns with the join key first, unknown entities as `null` with
//! `NOT_FOUND` under 200, errors as JSON strings with Feast's messages and statuses. Flags
//! shuffle the feature column order (clients must map by name), add latency, and inject
//! error and malformed answers, for fault tests and demos.
//!
//! Each model's `feature_store` block in the manifest defines one feature view (its snapshot's
//! columns) and, if named, one feature service over all of them. `GET /snapshot-id` (not
//! Feast's) says which snapshot file each serves, for the API's data-contract check.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Serialize;
use serde_json::{json, Value};

use ferrum_serve::features::protocol::{
    feast_exception_body, feast_message_body, python_list, python_repr, FeastValue, FeatureColumn,
    FieldStatus, OnlineFeaturesRequest, OnlineFeaturesResponse, ResponseMetadata, SnapshotIds,
    EPOCH_TIMESTAMP,
};
use ferrum_serve::features::snapshot::{self, Snapshot};
use ferrum_serve::model::Manifest;
use ferrum_serve::telemetry::LogFormat;

/// The `ferrum-feature-store` command line. Every flag has an environment fallback, like the
/// API's, so docker-compose can set either.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "ferrum-feature-store",
    version,
    about = "A mock Feast feature server over the exported feature snapshots"
)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on (6566 is `feast serve`'s default; 0 picks a free port, logged).
    #[arg(long, env = "PORT", default_value_t = 6566)]
    pub port: u16,

    /// Where the snapshots are: `<dir>/<model path>/snapshot.csv`, as the manifest lays out.
    #[arg(
        long,
        env = "MODELS_DIR",
        default_value = "models",
        alias = "snapshot-dir"
    )]
    pub models_dir: PathBuf,

    /// The manifest whose `feature_store` blocks define the feature views and services.
    #[arg(long, env = "MANIFEST_PATH", default_value = "manifest.json")]
    pub manifest: PathBuf,

    /// The Feast project name quoted in error messages.
    #[arg(long, env = "FEAST_PROJECT", default_value = "ferrum")]
    pub project: String,

    /// Shuffle the feature columns of every answer (the key stays first), as a real Feast's
    /// order changes between restarts: a client that maps by place breaks at once.
    #[arg(long, env = "SHUFFLE_COLUMNS", value_parser = clap::builder::BoolishValueParser::new())]
    pub shuffle_columns: bool,

    /// Delay added to every /get-online-features answer, in milliseconds.
    #[arg(long, env = "LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Random extra delay, uniform in [0, this], in milliseconds.
    #[arg(long, env = "LATENCY_JITTER_MS", default_value_t = 0)]
    pub latency_jitter_ms: u64,

    /// Fraction of /get-online-features calls answered with `--error-status` (0 to 1).
    #[arg(long, env = "ERROR_RATE", default_value_t = 0.0, value_parser = rate)]
    pub error_rate: f64,

    /// The status of injected errors (500 is Feast's for internal errors; 503 for overload).
    #[arg(long, env = "ERROR_STATUS", default_value_t = 500)]
    pub error_status: u16,

    /// Fraction of /get-online-features calls answered 200 with truncated JSON (0 to 1).
    #[arg(long, env = "MALFORMED_RATE", default_value_t = 0.0, value_parser = rate)]
    pub malformed_rate: f64,

    /// Seed for the shuffles and injected faults, for repeatable runs (random if unset).
    #[arg(long, env = "SEED")]
    pub seed: Option<u64>,

    /// The event timestamp of every stored value (RFC 3339); default: when the store started.
    #[arg(long, env = "EVENT_TIMESTAMP")]
    pub event_timestamp: Option<String>,

    /// Log format: json (default) or text.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("'{text}' is not a fraction between 0 and 1")),
    }
}

/// What the mock injects and how it orders columns.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// The Feast project name in error messages.
    pub project: String,
    /// Shuffle feature columns per answer.
    pub shuffle_columns: bool,
    /// Fixed added latency.
    pub latency: Duration,
    /// Uniform random extra latency, up to this.
    pub latency_jitter: Duration,
    /// Fraction of calls answered with `error_status`.
    pub error_rate: f64,
    /// The injected error's status.
    pub error_status: StatusCode,
    /// Fraction of calls answered with truncated JSON.
    pub malformed_rate: f64,
    /// RNG seed.
    pub seed: Option<u64>,
    /// Event timestamp of stored values.
    pub event_timestamp: String,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            project: "ferrum".into(),
            shuffle_columns: false,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            error_rate: 0.0,
            error_status: StatusCode::INTERNAL_SERVER_ERROR,
            malformed_rate: 0.0,
            seed: None,
            event_timestamp: rfc3339(SystemTime::now()),
        }
    }
}

impl MockArgs {
    /// The options these flags ask for.
    pub fn options(&self) -> Result<MockOptions, String> {
        let error_status = StatusCode::from_u16(self.error_status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .ok_or_else(|| format!("--error-status {} is not a 4xx or 5xx", self.error_status))?;
        Ok(MockOptions {
            project: self.project.clone(),
            shuffle_columns: self.shuffle_columns,
            latency: Duration::from_millis(self.latency_ms),
            latency_jitter: Duration::from_millis(self.latency_jitter_ms),
            error_rate: self.error_rate,
            error_status,
            malformed_rate: self.malformed_rate,
            seed: self.seed,
            event_timestamp: self
                .event_timestamp
                .clone()
                .unwrap_or_else(|| rfc3339(SystemTime::now())),
        })
    }
}

/// One feature view: a join key and the snapshot holding its rows.
struct MockView {
    join_key: String,
    snapshot: Arc<Snapshot>,
}

/// The mock's data and behaviour; shared by every request.
pub struct MockStore {
    options: MockOptions,
    views: BTreeMap<String, MockView>,
    /// Feature service → the view it serves in full.
    services: BTreeMap<String, String>,
    rng: Mutex<fastrand::Rng>,
}

impl MockStore {
    /// Reads every snapshot the manifest's `feature_store` blocks point at. Blocking.
    pub fn from_manifest(
        manifest: &Manifest,
        models_dir: &Path,
        options: MockOptions,
    ) -> Result<MockStore, String> {
        let mut views = BTreeMap::new();
        let mut services = BTreeMap::new();
        for entry in &manifest.models {
            let Some(spec) = &entry.feature_store else {
                continue;
            };
            let view = spec
                .feature_view
                .clone()
                .or_else(|| spec.feature_service.clone())
                .expect("the manifest check requires a view or a service");
            let path = models_dir
                .join(&entry.path)
                .join(snapshot::artifact_name(&manifest.raw, entry));
            let snapshot = Snapshot::load(&path).map_err(|e| e.to_string())?;
            tracing::info!(model = %entry.name, version = %entry.version, feature_view = %view,
                feature_service = spec.feature_service.as_deref().unwrap_or(""),
                entities = snapshot.len(), features = snapshot.columns.len(),
                snapshot_id = %snapshot.id, path = %path.display(), "serving feature snapshot");
            if let Some(service) = &spec.feature_service {
                services.insert(service.clone(), view.clone());
            }
            // A later version of the same model replaces the view: the newest data wins.
            views.insert(
                view,
                MockView {
                    join_key: spec.join_key.clone(),
                    snapshot: Arc::new(snapshot),
                },
            );
        }
        if views.is_empty() {
            return Err(
                "no model in the manifest has a feature_store block: nothing to serve".into(),
            );
        }
        let rng = match options.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Ok(MockStore {
            options,
            views,
            services,
            rng: Mutex::new(rng),
        })
    }

    /// Which snapshot each view and service serves.
    pub fn snapshot_ids(&self) -> SnapshotIds {
        SnapshotIds {
            project: self.options.project.clone(),
            feature_views: self
                .views
                .iter()
                .map(|(name, v)| (name.clone(), v.snapshot.id.clone()))
                .collect(),
            feature_services: self
                .services
                .iter()
                .map(|(service, view)| (service.clone(), self.views[view].snapshot.id.clone()))
                .collect(),
        }
    }

    fn chance(&self, rate: f64) -> bool {
        rate > 0.0 && self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64() < rate
    }

    /// Answers one `/get-online-features` body, as Feast would (no faults injected here).
    pub fn answer(&self, body: &[u8]) -> (StatusCode, Vec<u8>) {
        match self.try_answer(body) {
            Ok(response) => (
                StatusCode::OK,
                serde_json::to_vec(&response).expect("a response serializes"),
            ),
            Err(error) => error,
        }
    }

    fn try_answer(&self, body: &[u8]) -> Result<OnlineFeaturesResponse, (StatusCode, Vec<u8>)> {
        let request = parse_request(body)?;
        let project = &self.options.project;
        let internal = |message: String| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                feast_message_body(&message),
            )
        };
        // Feature references: (view, column in its snapshot), in the order asked.
        let mut refs: Vec<(&str, &MockView, usize)> = Vec::new();
        if let Some(service) = &request.feature_service {
            let Some(view_name) = self.services.get(service) else {
                return Err((
                    StatusCode::NOT_FOUND,
                    feast_exception_body(
                        "FeatureServiceNotFoundException",
                        &format!("Feature service {service} does not exist in project {project}"),
                    ),
                ));
            };
            let view = &self.views[view_name];
            refs.extend((0..view.snapshot.columns.len()).map(|c| (view_name.as_str(), view, c)));
        } else if let Some(features) = request.features.as_ref().filter(|f| !f.is_empty()) {
            let mut split = Vec::with_capacity(features.len());
            for reference in features {
                let Some((view, feature)) = reference.split_once(':') else {
                    // Python's tuple unpacking of `reference.split(":")`, as Feast does it.
                    return Err(internal(
                        "not enough values to unpack (expected 2, got 1)".into(),
                    ));
                };
                split.push((view, feature));
            }
            for (view, _) in &split {
                if !self.views.contains_key(*view) {
                    return Err((
                        StatusCode::NOT_FOUND,
                        feast_exception_body(
                            "FeatureViewNotFoundException",
                            &format!("Feature view {view} does not exist in project {project}"),
                        ),
                    ));
                }
            }
            for (view_name, feature) in split {
                let (name, view) = self.views.get_key_value(view_name).expect("checked");
                let Some(column) = view.snapshot.column(feature) else {
                    return Err(internal(python_repr(&format!(
                        "Feature {feature} not found in projection {view_name}"
                    ))));
                };
                refs.push((name.as_str(), view, column));
            }
        } else {
            return Err(internal("No features specified for retrieval".into()));
        }

        // Join keys, in first-use order.
        let mut keys: Vec<&str> = Vec::new();
        for (_, view, _) in &refs {
            if !keys.contains(&view.join_key.as_str()) {
                keys.push(&view.join_key);
            }
        }
        let missing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| !request.entities.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            let provided: Vec<&str> = request
                .entities
                .keys()
                .map(String::as_str)
                .filter(|k| keys.contains(k))
                .collect();
            let missing = python_list(&missing);
            return Err(internal(python_repr(&format!(
                "Missing join key values for keys: {missing}. No values provided for keys: {missing}. Provided join_key_values: {}",
                python_list(&provided)
            ))));
        }
        let n = request.entities[keys[0]].len();
        if keys.iter().any(|k| request.entities[*k].len() != n) {
            return Err(internal(
                "All entity columns must have the same length".into(),
            ));
        }
        if n == 0 {
            return Err(internal(
                "No entity rows given: entity value lists are empty".into(),
            ));
        }

        let epoch = || vec![EPOCH_TIMESTAMP.to_owned(); n];
        let mut names = Vec::with_capacity(keys.len() + refs.len());
        let mut results = Vec::with_capacity(keys.len() + refs.len());
        for key in &keys {
            names.push((*key).to_owned());
            results.push(FeatureColumn {
                values: request.entities[*key]
                    .iter()
                    .map(FeastValue::from_json)
                    .collect(),
                statuses: vec![FieldStatus::Present; n],
                event_timestamps: epoch(),
            });
        }
        let mut features: Vec<(String, FeatureColumn)> = refs
            .iter()
            .map(|(view_name, view, column)| {
                let ids = &request.entities[&view.join_key];
                let mut values = Vec::with_capacity(n);
                let mut statuses = Vec::with_capacity(n);
                let mut timestamps = Vec::with_capacity(n);
                for id in ids {
                    let row = id.as_str().and_then(|id| view.snapshot.row(id));
                    let (value, status, at) = match row.map(|r| r[*column]) {
                        None => (FeastValue::Null, FieldStatus::NotFound, EPOCH_TIMESTAMP),
                        Some(None) => (
                            FeastValue::Null,
                            FieldStatus::NullValue,
                            self.options.event_timestamp.as_str(),
                        ),
                        Some(Some(v)) => (
                            FeastValue::from_f64(v),
                            FieldStatus::Present,
                            self.options.event_timestamp.as_str(),
                        ),
                    };
                    values.push(value);
                    statuses.push(status);
                    timestamps.push(at.to_owned());
                }
                let feature = &view.snapshot.columns[*column];
                let name = if request.full_feature_names {
                    format!("{view_name}__{feature}")
                } else {
                    feature.clone()
                };
                (
                    name,
                    FeatureColumn {
                        values,
                        statuses,
                        event_timestamps: timestamps,
                    },
                )
            })
            .collect();
        if self.options.shuffle_columns {
            self.rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .shuffle(&mut features);
        }
        for (name, column) in features {
            names.push(name);
            results.push(column);
        }
        Ok(OnlineFeaturesResponse {
            results,
            metadata: ResponseMetadata {
                feature_names: names,
            },
        })
    }
}

/// Parses a request body as FastAPI would, answering its 422 shapes for bad JSON and a
/// missing or mistyped field.
fn parse_request(body: &[u8]) -> Result<OnlineFeaturesRequest, (StatusCode, Vec<u8>)> {
    let unprocessable = |detail: Value| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::to_vec(&json!({ "detail": [detail] })).expect("JSON serializes"),
        )
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        unprocessable(json!({
            "type": "json_invalid", "loc": ["body", e.column().saturating_sub(1)],
            "msg": "JSON decode error", "input": {}, "ctx": {"error": e.to_string()},
        }))
    })?;
    let Some(object) = value.as_object() else {
        return Err(unprocessable(json!({
            "type": "model_attributes_type", "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": value,
        })));
    };
    match object.get("entities") {
        None => {
            return Err(unprocessable(json!({
                "type": "missing", "loc": ["body", "entities"], "msg": "Field required",
                "input": value,
            })))
        }
        Some(entities) if !entities.is_object() => {
            return Err(unprocessable(json!({
                "type": "dict_type", "loc": ["body", "entities"],
                "msg": "Input should be a valid dictionary", "input": entities,
            })))
        }
        Some(_) => {}
    }
    serde_json::from_value(value.clone()).map_err(|e| {
        unprocessable(json!({
            "type": "value_error", "loc": ["body"], "msg": e.to_string(), "input": value,
        }))
    })
}

/// A JSON answer with Feast's content type.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

async fn get_online_features(
    State(store): State<Arc<MockStore>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let options = &store.options;
    let jitter = if options.latency_jitter.is_zero() {
        Duration::ZERO
    } else {
        let fraction = store.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
        options.latency_jitter.mul_f64(fraction)
    };
    let delay = options.latency + jitter;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, bytes, fault) = if store.chance(options.error_rate) {
        let body = feast_message_body("injected fault (--error-rate)");
        (options.error_status, body, "error")
    } else if store.chance(options.malformed_rate) {
        (
            StatusCode::OK,
            br#"{"results":[{"values":["#.to_vec(),
            "malformed",
        )
    } else {
        let (status, body) = store.answer(&body);
        (status, body, "")
    };
    tracing::info!(
        status = status.as_u16(),
        fault,
        delay_ms = delay.as_millis() as u64,
        traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        "get-online-features"
    );
    json_bytes(status, bytes)
}

/// The mock's routes: Feast's `/get-online-features` and `/health`, plus `/snapshot-id`.
pub fn router(store: Arc<MockStore>) -> Router {
    Router::new()
        .route("/get-online-features", post(get_online_features))
        .route("/health", get(|| async { StatusCode::OK }))
        .route(
            "/snapshot-id",
            get(|State(store): State<Arc<MockStore>>| async move { Json(store.snapshot_ids()) }),
        )
        .fallback(|| async {
            json_bytes(StatusCode::NOT_FOUND, br#"{"detail":"Not Found"}"#.to_vec())
        })
        .with_state(store)
}

/// Runs the mock until SIGTERM or Ctrl-C: read the manifest and snapshots, bind, log
/// "listening" with the address (tests read it), serve.
pub async fn serve(args: MockArgs) -> Result<(), String> {
    tracing::info!(config = %serde_json::to_string(&args).unwrap_or_default(), "effective configuration");
    let options = args.options()?;
    let manifest = Manifest::read(&args.manifest).map_err(|e| e.to_string())?;
    let models_dir = args.models_dir.clone();
    let store = tokio::task::spawn_blocking(move || {
        MockStore::from_manifest(&manifest, &models_dir, options)
    })
    .await
    .map_err(|e| e.to_string())??;
    let address = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, "listening");
    axum::serve(listener, router(Arc::new(store)))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    ferrum_serve::shutdown::termination().await;
    tracing::info!("shutdown signal received");
}

/// A time as RFC 3339 UTC with a `Z`, whole seconds (as Feast writes event timestamps).
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    //! The mock against the real server's captured answers: same statuses, same error bytes,
    //! same column layout.

    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn capture(name: &str) -> Vec<u8> {
        let path = root().join("../shared/notes/feast-0.67").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn store(options: MockOptions) -> MockStore {
        let manifest = Manifest::read(&root().join("manifest.json")).unwrap();
        MockStore::from_manifest(&manifest, &root().join("models"), options).unwrap()
    }

    /// The project of the captures, so error messages match byte for byte.
    fn as_captured() -> MockOptions {
        MockOptions {
            project: "breast_cancer".into(),
            seed: Some(7),
            event_timestamp: "2026-11-23T19:11:40Z".into(),
            ..Default::default()
        }
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn captured_errors_byte_for_byte() {
        let store = store(as_captured());
        for name in ["error-c1", "error-c2", "error-c3", "error-c5", "error-c7"] {
            let request = capture(&format!("{name}.request.json"));
            let captured = capture(&format!("{name}.response.txt"));
            let text = String::from_utf8(captured).unwrap();
            let (status_line, body) = text.split_once("\n\n").unwrap();
            let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
            let (got_status, got_body) = store.answer(&request);
            assert_eq!(got_status.as_u16(), status, "{name}");
            assert_eq!(String::from_utf8(got_body).unwrap(), body, "{name}");
        }
    }

    /// A models directory whose breast-cancer snapshot holds what the captured Feast store
    /// held (rebuilt from the captured answer), so answers can be compared value for value.
    fn captured_store(options: MockOptions) -> (tempfile::TempDir, MockStore) {
        let real: OnlineFeaturesResponse =
            serde_json::from_slice(&capture("feature-service.response.json")).unwrap();
        let names = &real.metadata.feature_names;
        let mut csv = names.join(",") + "\n";
        for j in 0..2 {
            let row: Vec<String> = real
                .results
                .iter()
                .map(|c| match &c.values[j] {
                    FeastValue::Text(t) => t.clone(),
                    FeastValue::Number(v) => format!("{v:?}"),
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            csv += &(row.join(",") + "\n");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("breast-cancer/1")).unwrap();
        std::fs::write(dir.path().join("breast-cancer/1/snapshot.csv"), csv).unwrap();
        std::fs::create_dir_all(dir.path().join("diabetes/1")).unwrap();
        std::fs::copy(
            root().join("models/diabetes/1/snapshot.csv"),
            dir.path().join("diabetes/1/snapshot.csv"),
        )
        .unwrap();
        let manifest = Manifest::read(&root().join("manifest.json")).unwrap();
        let store = MockStore::from_manifest(&manifest, dir.path(), options).unwrap();
        (dir, store)
    }

    #[test]
    fn captured_answers_value_for_value() {
        for shuffle_columns in [false, true] {
            let (_dir, store) = captured_store(MockOptions {
                shuffle_columns,
                ..as_captured()
            });
            for name in ["feature-service", "features-list", "full-feature-names"] {
                let (status, body) = store.answer(&capture(&format!("{name}.request.json")));
                assert_eq!(status, StatusCode::OK, "{name}");
                let ours = json(&body);
                let real = json(&capture(&format!("{name}.response.json")));
                // Same top-level keys in the same order ("results" first).
                let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
                assert_eq!(keys(&ours), keys(&real), "{name}");
                let names = |v: &Value| -> Vec<String> {
                    serde_json::from_value(v["metadata"]["feature_names"].clone()).unwrap()
                };
                let (our_names, real_names) = (names(&ours), names(&real));
                assert_eq!(our_names[0], "entity_id", "{name}: the key comes first");
                assert_eq!(
                    our_names.iter().collect::<BTreeSet<_>>(),
                    real_names.iter().collect::<BTreeSet<_>>(),
                    "{name}"
                );
                // Column by column, by name: the same values, statuses and timestamps.
                for (i, column) in real_names.iter().enumerate() {
                    let j = our_names.iter().position(|n| n == column).unwrap();
                    assert_eq!(ours["results"][j], real["results"][i], "{name} {column}");
                }
            }
        }
    }

    #[test]
    fn answers_hold_the_snapshot_values_and_shuffle_on_request() {
        let plain = store(MockOptions::default());
        let request =
            br#"{"feature_service": "diabetes_v1", "entities": {"entity_id": ["diabetes-0"]}}"#;
        let (_, body) = plain.answer(request);
        let answer: OnlineFeaturesResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            answer.metadata.feature_names,
            [
                "entity_id",
                "age",
                "sex",
                "bmi",
                "bp",
                "s1",
                "s2",
                "s3",
                "s4",
                "s5",
                "s6"
            ]
        );
        // The CSV's text, as Feast would print the same float64.
        assert_eq!(
            answer.results[1].values[0],
            FeastValue::Number(0.03807590529322624)
        );
        let shuffled = store(MockOptions {
            shuffle_columns: true,
            seed: Some(1),
            ..Default::default()
        });
        let orders: BTreeSet<Vec<String>> = (0..5)
            .map(|_| {
                let (_, body) = shuffled.answer(request);
                let answer: OnlineFeaturesResponse = serde_json::from_slice(&body).unwrap();
                assert_eq!(answer.metadata.feature_names[0], "entity_id");
                answer.metadata.feature_names
            })
            .collect();
        assert!(orders.len() > 1, "five answers, one order: {orders:?}");
    }

    #[test]
    fn other_feast_errors() {
        let store = store(MockOptions::default());
        for (body, status, needle) in [
            (&b"{"[..], 422, "json_invalid"),
            (
                br#"{"features": ["diabetes_features:age"]}"#,
                422,
                r#""loc":["body","entities"]"#,
            ),
            (
                br#"{"features": ["age"], "entities": {"entity_id": ["x"]}}"#,
                500,
                "not enough values to unpack",
            ),
            (
                br#"{"features": ["diabetes_features:age"], "entities": {"entity_id": []}}"#,
                500,
                "empty",
            ),
            (
                br#"{"features": [], "entities": {"entity_id": ["x"]}}"#,
                500,
                "No features specified",
            ),
        ] {
            let (got, answer) = store.answer(body);
            let answer = String::from_utf8(answer).unwrap();
            assert_eq!(got.as_u16(), status, "{answer}");
            assert!(answer.contains(needle), "{answer}");
        }
        // A number is not the string key "1": not found, echoed as given.
        let (_, body) = store
            .answer(br#"{"features": ["diabetes_features:age"], "entities": {"entity_id": [1]}}"#);
        let answer: OnlineFeaturesResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer.results[0].values[0], FeastValue::Int(1));
        assert_eq!(answer.results[1].statuses[0], FieldStatus::NotFound);
    }

    async fn call(app: Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn routes_health_snapshot_ids_and_injected_faults() {
        let app = router(Arc::new(store(MockOptions::default())));
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        assert_eq!(
            call(app.clone(), get("/health")).await,
            (StatusCode::OK, vec![])
        );
        let (status, body) = call(app.clone(), get("/snapshot-id")).await;
        assert_eq!(status, StatusCode::OK);
        let ids: SnapshotIds = serde_json::from_slice(&body).unwrap();
        let manifest = Manifest::read(&root().join("manifest.json")).unwrap();
        for entry in &manifest.models {
            let spec = entry.feature_store.as_ref().unwrap();
            let id = &entry.dataset.feature_snapshot_id;
            assert_eq!(
                &ids.feature_services[spec.feature_service.as_ref().unwrap()],
                id
            );
            assert_eq!(&ids.feature_views[spec.feature_view.as_ref().unwrap()], id);
        }
        assert_eq!(call(app, get("/nope")).await.0, StatusCode::NOT_FOUND);

        let post = || {
            Request::post("/get-online-features")
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(
                    r#"{"feature_service": "diabetes_v1", "entities": {"entity_id": ["diabetes-0"]}}"#,
                ))
                .unwrap()
        };
        let failing = router(Arc::new(store(MockOptions {
            error_rate: 1.0,
            ..Default::default()
        })));
        assert_eq!(
            call(failing, post()).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#""injected fault (--error-rate)""#.to_vec()
            )
        );
        let malformed = router(Arc::new(store(MockOptions {
            malformed_rate: 1.0,
            ..Default::default()
        })));
        let (status, body) = call(malformed, post()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(serde_json::from_slice::<Value>(&body).is_err());
        let slow = router(Arc::new(store(MockOptions {
            latency: Duration::from_millis(120),
            ..Default::default()
        })));
        let started = std::time::Instant::now();
        assert_eq!(call(slow, post()).await.0, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn flags_and_timestamps() {
        let args = MockArgs::try_parse_from([
            "ferrum-feature-store",
            "--shuffle-columns",
            "--error-rate",
            "0.25",
            "--latency-ms",
            "30",
            "--snapshot-dir",
            "elsewhere",
        ])
        .unwrap();
        assert!(args.shuffle_columns);
        assert_eq!(args.error_rate, 0.25);
        assert_eq!(args.models_dir, PathBuf::from("elsewhere"));
        assert_eq!(args.port, 6566);
        assert_eq!(args.options().unwrap().latency, Duration::from_millis(30));
        assert!(MockArgs::try_parse_from(["x", "--error-rate", "1.5"]).is_err());
        let bad_status = MockArgs::try_parse_from(["x", "--error-status", "200"]).unwrap();
        assert!(bad_status.options().is_err());
        assert_eq!(rfc3339(UNIX_EPOCH), EPOCH_TIMESTAMP);
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_461_100)),
            "2026-11-23T19:11:40Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}

/// The library's feature-store client against this mock over loopback: the remote path end to
/// end (batching, dedupe, cache, snapshot checks driving readiness).
#[cfg(test)]
mod client_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ferrum_serve::features::{FeatureStore, TraceContext};

    use super::*;
    use ferrum_serve::features::test_support::{
        manifest, model_entry, root, store_config, training_log,
    };

    /// The mock on loopback, counting the lookups it answers.
    async fn counted_mock() -> (String, Arc<AtomicUsize>) {
        let store = MockStore::from_manifest(
            &manifest(),
            &root().join("models"),
            MockOptions {
                shuffle_columns: true,
                seed: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = router(Arc::new(store)).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    if req.uri().path() == "/get-online-features" {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    next.run(req).await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}"), calls)
    }

    #[tokio::test]
    async fn remote_lookups_batch_dedupe_and_cache() {
        let (base, calls) = counted_mock().await;
        let manifest = manifest();
        let mut with_cache = store_config(Some(&base));
        with_cache.cache_ttl_ms = 60_000;
        let store = FeatureStore::open(&with_cache, &manifest, Path::new("unused"))
            .await
            .unwrap();
        let entry = model_entry(&manifest, "diabetes");
        let (ids, expected) = training_log(entry);
        let width = entry.feature_names.len();
        // The whole log in one call, columns shuffled by the store: the training features.
        let rows = store
            .lookup(entry, &ids, &TraceContext::default())
            .await
            .unwrap();
        assert_eq!(rows.data, expected);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Cached now: repeated and known ids cost no call; a new mix asks only for the misses.
        let again = vec![ids[1].clone(), ids[0].clone(), ids[1].clone()];
        let rows = store
            .lookup(entry, &again, &TraceContext::default())
            .await
            .unwrap();
        assert_eq!(rows.row(0), &expected[width..2 * width]);
        assert_eq!(rows.row(1), &expected[..width]);
        assert_eq!(rows.row(2), rows.row(0));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.health()["cache"]["entries"], ids.len());

        // Without a cache, a batch with repeats is still one call for distinct ids.
        let store = FeatureStore::open(&store_config(Some(&base)), &manifest, Path::new("unused"))
            .await
            .unwrap();
        let rows = store
            .lookup(entry, &again, &TraceContext::default())
            .await
            .unwrap();
        assert_eq!(rows.n_rows, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let error = store
            .lookup(entry, &["nobody".into()], &TraceContext::default())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "entity 'nobody' not found in feature service 'diabetes_v1'"
        );
    }

    #[tokio::test]
    async fn snapshot_checks_drive_readiness_only_when_required() {
        let (base, _) = counted_mock().await;
        let mut strict = store_config(Some(&base));
        strict.require_snapshot_match = true;
        let manifest = manifest();
        let store = FeatureStore::open(&strict, &manifest, Path::new("unused"))
            .await
            .unwrap();
        // Not checked yet: unverified, so not ready.
        assert!(store.readiness().is_err());
        assert_eq!(store.health()["state"], "unknown");
        store.check().await;
        assert_eq!(store.readiness(), Ok(()));
        assert_eq!(store.health()["state"], "up");
        assert_eq!(store.health()["snapshot_match"], true);

        // A manifest expecting other data: a mismatch, visible, and not ready when required.
        let mut other = manifest.clone();
        other.models[0].dataset.feature_snapshot_id = "0".repeat(64);
        let store = FeatureStore::open(&strict, &other, Path::new("unused"))
            .await
            .unwrap();
        store.check().await;
        assert!(store.readiness().is_err());
        let health = store.health();
        assert_eq!(health["snapshot_match"], false);
        assert_eq!(health["snapshots"][0]["match"], false);
        assert_eq!(health["snapshots"][1]["match"], true);
        let lenient = FeatureStore::open(&store_config(Some(&base)), &other, Path::new("unused"))
            .await
            .unwrap();
        lenient.check().await;
        assert_eq!(lenient.readiness(), Ok(()));

        // A store that went away: down, and the last verified ids are kept.
        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let store = FeatureStore::open(
            &store_config(Some(&format!("http://127.0.0.1:{gone}"))),
            &manifest,
            Path::new("unused"),
        )
        .await
        .unwrap();
        store.check().await;
        let health = store.health();
        assert_eq!(health["state"], "down");
        assert!(
            health["error"].as_str().unwrap().contains("refused"),
            "{health}"
        );
        assert_eq!(health["snapshot_match"], Value::Null);
    }
}
