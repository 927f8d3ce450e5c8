//! Every Prometheus metric the service exposes on `GET /metrics`, in one registry, with one
//! recording function per event. The registry is the process's only global mutable state: code
//! elsewhere never touches metric objects, it calls the functions below, so names, labels and
//! buckets are defined in exactly one place.
//!
//! Conventions: every name starts with `ferrum_`; durations are histograms in seconds
//! (`_seconds`); counters end in `_total`; identity gauges end in `_info` and are always 1.
//! Every label value is bounded: routes are templates (`/models/{name}/predict`, never a raw
//! path), methods outside the standard set are `other`, model names and versions come from the
//! manifest (a request for an unknown model is rejected before any model label is written),
//! and `reason`/`kind`/`method` labels are `&'static str` chosen by the code.
//!
//! The full list with meanings and example queries is in `docs/observability.md`.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use axum::http::Method;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::{ModelEntry, ModelOutput};

/// The content type of the text exposition format `render` writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label value used when a request matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets for HTTP requests (seconds): 0.5 ms to 10 s.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for one inference call and its queue wait (seconds): 25 µs to 2.5 s, since a small
/// tree ensemble answers a single row in about 10 µs.
const INFERENCE_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
];
/// Rows per inference call: powers of two up to well past the default request limit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
/// Explanations (seconds): exact and sampled SHAP range from a millisecond to many seconds.
const EXPLAIN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Feature-store calls (seconds): a remote online store answers in milliseconds.
const FEATURE_STORE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// One drift computation over every window (seconds).
const DRIFT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The registry and every metric in it.
struct Metrics {
    registry: Registry,
    // HTTP
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_in_flight: IntGauge,
    http_panics: IntCounter,
    log_lines_dropped: IntCounter,
    // Inference
    inference_duration: HistogramVec,
    inference_batch_rows: HistogramVec,
    inference_queue_wait: HistogramVec,
    inference_queue_depth: IntGaugeVec,
    inference_success: IntCounterVec,
    inference_failures: IntCounterVec,
    inference_requests: IntCounterVec,
    inference_request_failures: IntCounterVec,
    // Explain and feature store (recorded by those subsystems)
    explain_duration: HistogramVec,
    feature_store_duration: Histogram,
    feature_store_errors: IntCounterVec,
    feature_store_cache_hits: IntCounter,
    feature_store_cache_misses: IntCounter,
    // Remote model repository (src/storage)
    model_store_downloads: IntCounter,
    model_store_downloaded_bytes: IntCounter,
    model_store_cache_hits: IntCounter,
    // Model lifecycle (src/serving/reconcile.rs)
    model_load_failures: IntCounterVec,
    repository_rescans: IntCounterVec,
    // Identity
    build_info: IntGaugeVec,
    model_info: IntGaugeVec,
    // Predictions; the value histogram's buckets come from the regressors' baselines, so it is
    // registered once the models are known.
    predictions: IntCounterVec,
    prediction_value: OnceLock<HistogramVec>,
    // Drift
    feature_psi: GaugeVec,
    explanation_mean_abs: GaugeVec,
    prediction_psi: GaugeVec,
    drift_window_rows: IntGaugeVec,
    drift_dropped_rows: IntCounterVec,
    drift_rows: IntCounterVec,
    drift_updated: GaugeVec,
    drift_computation: Histogram,
}

const MODEL: &[&str] = &["model", "version"];

fn histogram_vec(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid histogram definition")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid histogram definition")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid counter definition")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter definition")
}

fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge definition")
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            http_requests: counter_vec(
                "ferrum_http_requests_total",
                "HTTP requests answered, by route template, method and status code.",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                "ferrum_http_request_duration_seconds",
                "Time from receiving a request to having its response ready, by route template, method and status code.",
                HTTP_BUCKETS,
                &["route", "method", "status"],
            ),
            http_in_flight: IntGauge::new(
                "ferrum_http_requests_in_flight",
                "HTTP requests being processed right now (a scrape counts itself).",
            )
            .expect("valid gauge definition"),
            http_panics: counter(
                "ferrum_http_panics_total",
                "Requests whose handler panicked; each was answered 500 internal_error and logged with the panic message.",
            ),
            log_lines_dropped: counter(
                "ferrum_log_lines_dropped_total",
                "Log lines dropped because the log writer's queue was full (stdout not read fast enough); requests never wait for the log.",
            ),
            inference_duration: histogram_vec(
                "ferrum_inference_duration_seconds",
                "Time of one ONNX Runtime call (one per request without batching, one per merged batch with it), successful or not: from the call starting to its outputs copied out.",
                INFERENCE_BUCKETS,
                MODEL,
            ),
            inference_batch_rows: histogram_vec(
                "ferrum_inference_batch_rows",
                "Rows in one ONNX Runtime call, successful or not: a request's rows without batching, the total rows of every request merged into the call with it.",
                BATCH_BUCKETS,
                MODEL,
            ),
            inference_queue_wait: histogram_vec(
                "ferrum_inference_queue_wait_seconds",
                "Per request: time from submitting its rows to the executor until the ONNX Runtime call computing them started (waiting for a blocking thread, or in the batcher's queue and for its batch).",
                INFERENCE_BUCKETS,
                MODEL,
            ),
            inference_queue_depth: int_gauge_vec(
                "ferrum_inference_queue_depth",
                "Requests submitted to the model's executor and not yet answered by it (queued or being computed).",
                MODEL,
            ),
            inference_success: counter_vec(
                "ferrum_inference_success_total",
                "ONNX Runtime calls that produced outputs (one per merged batch with batching, not one per request).",
                MODEL,
            ),
            inference_failures: counter_vec(
                "ferrum_inference_failures_total",
                "ONNX Runtime calls that failed (one per merged batch with batching), by reason: runtime_error (ONNX Runtime failed or panicked) or output_error (outputs of the wrong shape).",
                &["model", "version", "reason"],
            ),
            inference_requests: counter_vec(
                "ferrum_inference_requests_total",
                "Requests for a model answered with predictions (each counted once, however many requests its ONNX Runtime call merged).",
                MODEL,
            ),
            inference_request_failures: counter_vec(
                "ferrum_inference_request_failures_total",
                "Requests for a model that got no predictions, by reason: an API error code for rejected input (e.g. missing_feature, non_finite_value), overloaded when load was shed, or inference_failed when their ONNX Runtime call failed.",
                &["model", "version", "reason"],
            ),
            explain_duration: histogram_vec(
                "ferrum_explain_duration_seconds",
                "Time to compute the explanations of one request, by model and explanation method.",
                EXPLAIN_BUCKETS,
                &["model", "version", "method"],
            ),
            feature_store_duration: histogram(
                "ferrum_feature_store_request_duration_seconds",
                "Duration of one call to a remote feature store, retries included (successful or not).",
                FEATURE_STORE_BUCKETS,
            ),
            feature_store_errors: counter_vec(
                "ferrum_feature_store_errors_total",
                "Failed calls to a remote feature store, by kind: unavailable, timeout, bad_answer, entity_not_found, feature_missing.",
                &["kind"],
            ),
            feature_store_cache_hits: counter(
                "ferrum_feature_store_cache_hits_total",
                "Entity lookups answered from the feature cache.",
            ),
            feature_store_cache_misses: counter(
                "ferrum_feature_store_cache_misses_total",
                "Entity lookups the feature cache could not answer (sent to the feature store).",
            ),
            model_store_downloads: counter(
                "ferrum_model_store_downloads_total",
                "Files of a remote model repository downloaded into the model cache (not there yet, or changed in the store).",
            ),
            model_store_downloaded_bytes: counter(
                "ferrum_model_store_downloaded_bytes_total",
                "Bytes downloaded from a remote model repository into the model cache.",
            ),
            model_store_cache_hits: counter(
                "ferrum_model_store_cache_hits_total",
                "Files of a remote model repository reused from the model cache because their sha256 still matched (no download).",
            ),
            model_load_failures: counter_vec(
                "ferrum_model_load_failures_total",
                "Model versions not loaded (while the server runs, or at start with --exit-on-error false): reason=refused (the file does not match the manifest's sha256 pin, or cannot be read) or load_failed (bad graph, signature, warm-up). What was serving keeps serving; a rescan retries.",
                &["model", "version", "reason"],
            ),
            repository_rescans: counter_vec(
                "ferrum_repository_rescans_total",
                "Rescans of the manifest and the repository (poll period, SIGHUP, a repository load or unload): outcome=applied, or failed when the manifest or its rollout block could not be read (nothing changed).",
                &["outcome"],
            ),
            build_info: int_gauge_vec(
                "ferrum_build_info",
                "Always 1: which build serves (crate version, git commit, container image tag).",
                &["version", "git_commit", "image_tag"],
            ),
            model_info: int_gauge_vec(
                "ferrum_model_info",
                "Always 1 per loaded model version: the sha256 of its ONNX file, the id of the data it was trained on, and its role in the model's rollout (primary, canary, shadow, versioned).",
                &["model", "version", "sha256", "snapshot_id", "role"],
            ),
            predictions: counter_vec(
                "ferrum_predictions_total",
                "Rows predicted by a classifier, by predicted class.",
                &["model", "version", "class"],
            ),
            prediction_value: OnceLock::new(),
            feature_psi: gauge_vec(
                "ferrum_feature_drift_psi",
                "Population stability index of a feature over the sliding window of served rows, against the training baseline.",
                &["model", "version", "feature"],
            ),
            explanation_mean_abs: gauge_vec(
                "ferrum_explanation_mean_abs_attribution",
                "Mean absolute SHAP attribution of a feature over a sample of rows: population=training (background rows, computed once) or served (recent served rows, recomputed in the background). A feature whose served value moves away from its training value is explanation drift.",
                &["model", "version", "feature", "population"],
            ),
            prediction_psi: gauge_vec(
                "ferrum_prediction_drift_psi",
                "Population stability index of the predictions over the sliding window, against the training baseline: output=class (predicted class shares), probability (positive-class probability) or value (regression).",
                &["model", "version", "output"],
            ),
            drift_window_rows: int_gauge_vec(
                "ferrum_drift_window_rows",
                "Served rows in the drift window the PSI gauges were last computed from.",
                MODEL,
            ),
            drift_dropped_rows: counter_vec(
                "ferrum_drift_dropped_rows_total",
                "Served rows left out of drift monitoring because its queue was full (the request path never waits for it).",
                MODEL,
            ),
            drift_rows: counter_vec(
                "ferrum_drift_rows_total",
                "Served rows taken into drift monitoring, counted when the drift gauges are recomputed (so the gauges reflect exactly this many rows).",
                MODEL,
            ),
            drift_updated: gauge_vec(
                "ferrum_drift_last_update_timestamp_seconds",
                "Unix time of the last PSI computation of a model version's window.",
                MODEL,
            ),
            drift_computation: histogram(
                "ferrum_drift_computation_duration_seconds",
                "Time to recompute the PSI of every changed drift window (in the background).",
                DRIFT_BUCKETS,
            ),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.http_in_flight.clone()),
            Box::new(m.http_panics.clone()),
            Box::new(m.log_lines_dropped.clone()),
            Box::new(m.inference_duration.clone()),
            Box::new(m.inference_batch_rows.clone()),
            Box::new(m.inference_queue_wait.clone()),
            Box::new(m.inference_queue_depth.clone()),
            Box::new(m.inference_success.clone()),
            Box::new(m.inference_failures.clone()),
            Box::new(m.inference_requests.clone()),
            Box::new(m.inference_request_failures.clone()),
            Box::new(m.explain_duration.clone()),
            Box::new(m.feature_store_duration.clone()),
            Box::new(m.feature_store_errors.clone()),
            Box::new(m.feature_store_cache_hits.clone()),
            Box::new(m.feature_store_cache_misses.clone()),
            Box::new(m.model_store_downloads.clone()),
            Box::new(m.model_store_downloaded_bytes.clone()),
            Box::new(m.model_store_cache_hits.clone()),
            Box::new(m.model_load_failures.clone()),
            Box::new(m.repository_rescans.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.model_info.clone()),
            Box::new(m.predictions.clone()),
            Box::new(m.feature_psi.clone()),
            Box::new(m.explanation_mean_abs.clone()),
            Box::new(m.prediction_psi.clone()),
            Box::new(m.drift_window_rows.clone()),
            Box::new(m.drift_dropped_rows.clone()),
            Box::new(m.drift_rows.clone()),
            Box::new(m.drift_updated.clone()),
            Box::new(m.drift_computation.clone()),
        ];
        for collector in collectors {
            m.registry
                .register(collector)
                .expect("metric names are unique");
        }
        m
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn metrics() -> &'static Metrics {
    &METRICS
}

/// The service's registry, for metric families another layer defines and registers once (the
/// shadow comparison metrics of `lifecycle::shadow`), so they appear on `/metrics` beside these.
pub fn registry() -> &'static Registry {
    &metrics().registry
}

/// The whole registry in the Prometheus text exposition format.
pub fn render() -> String {
    let families = metrics().registry.gather();
    let mut out = Vec::with_capacity(16 * 1024);
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding into memory cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

// ------------------------------------------------------------------------------------ HTTP

/// Counts a request whose handler panicked (answered 500 `internal_error`).
pub fn record_panic() {
    metrics().http_panics.inc();
}

/// Counts a log line the log writer dropped because its queue was full.
pub fn record_log_line_dropped() {
    metrics().log_lines_dropped.inc();
}

/// The `method` label: standard methods by name, anything else `other` (bounded).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts a request as in flight until the returned guard is dropped (also when the client
/// goes away and the request future is cancelled).
pub fn http_request_started() -> InFlight {
    metrics().http_in_flight.inc();
    InFlight(())
}

/// Decrements the in-flight gauge on drop.
pub struct InFlight(());

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().http_in_flight.dec();
    }
}

/// Records one answered request. `route` is the matched route template, or
/// [`UNMATCHED_ROUTE`].
pub fn record_http_request(route: &str, method: &Method, status: u16, elapsed: Duration) {
    let m = metrics();
    let code = axum::http::StatusCode::from_u16(status).ok();
    let status = code.as_ref().map_or("other", |c| c.as_str());
    let labels = [route, method_label(method), status];
    m.http_requests.with_label_values(&labels).inc();
    m.http_duration
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
}

// ------------------------------------------------------------------------------- inference

/// A request counted in the queue depth from submission until [`Queued::started`] (or until
/// dropped, if it is never answered).
pub struct Queued {
    gauge: Option<IntGauge>,
}

/// Counts a request for `model`/`version` as submitted to its executor.
pub fn inference_queued(model: &str, version: &str) -> Queued {
    let gauge = metrics()
        .inference_queue_depth
        .with_label_values(&[model, version]);
    gauge.inc();
    Queued { gauge: Some(gauge) }
}

impl Queued {
    /// The executor answered the request: it leaves the queue.
    pub fn started(&mut self) {
        if let Some(gauge) = self.gauge.take() {
            gauge.dec();
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.started();
    }
}

/// Records a request answered with predictions: counts it and observes its queue wait. The
/// ONNX Runtime call that computed it is recorded once, by the executor, through
/// [`InferenceCalls`], so a merged call is not counted once per request.
pub fn record_inference(model: &str, version: &str, queue_wait: Duration) {
    let m = metrics();
    let labels = [model, version];
    m.inference_queue_wait
        .with_label_values(&labels)
        .observe(queue_wait.as_secs_f64());
    m.inference_requests.with_label_values(&labels).inc();
}

/// Records a request for `model`/`version` that got no predictions. `reason` is a bounded code:
/// an [`crate::api::ApiError::code`] (`inference_failed` when its ONNX Runtime call failed).
pub fn record_inference_failure(model: &str, version: &str, reason: &'static str) {
    metrics()
        .inference_request_failures
        .with_label_values(&[model, version, reason])
        .inc();
}

/// The per-call inference metrics of one model version, with its labels resolved once (an
/// executor records every ONNX Runtime call it makes, so the lookup is not paid per call).
#[derive(Clone)]
pub struct InferenceCalls {
    // Shared, not owned: the direct executor clones these per request.
    model: Arc<str>,
    version: Arc<str>,
    duration: Histogram,
    rows: Histogram,
    success: IntCounter,
}

impl InferenceCalls {
    /// The call metrics of `model`/`version`.
    pub fn new(model: &str, version: &str) -> InferenceCalls {
        let m = metrics();
        let labels = [model, version];
        InferenceCalls {
            model: model.into(),
            version: version.into(),
            duration: m.inference_duration.with_label_values(&labels),
            rows: m.inference_batch_rows.with_label_values(&labels),
            success: m.inference_success.with_label_values(&labels),
        }
    }

    /// Records one ONNX Runtime call of `rows` rows (all the requests it merged) that took
    /// `elapsed`: its duration and rows, and a success, or a failure with `failure` as the
    /// bounded reason (`runtime_error`, `output_error`).
    pub fn record(&self, rows: usize, elapsed: Duration, failure: Option<&'static str>) {
        self.duration.observe(elapsed.as_secs_f64());
        self.rows.observe(rows as f64);
        match failure {
            None => self.success.inc(),
            Some(reason) => metrics()
                .inference_failures
                .with_label_values(&[&*self.model, &*self.version, reason])
                .inc(),
        }
    }
}

// ----------------------------------------------------------------- explain, feature store

/// Records the time `/explain` took to explain one request's rows with `method` (a fixed name
/// such as `exact`, `tree`, `permutation`). For the explain subsystem to call once per request.
pub fn record_explain(model: &str, version: &str, method: &'static str, elapsed: Duration) {
    metrics()
        .explain_duration
        .with_label_values(&[model, version, method])
        .observe(elapsed.as_secs_f64());
}

/// Records one call to a remote feature store: its duration, and on failure a bounded
/// `error_kind` (`FeatureError::kind` in `features`). Called once per remote lookup (not for cache
/// hits, nor for the in-process snapshot store, which makes no call).
pub fn record_feature_store_call(elapsed: Duration, error_kind: Option<&'static str>) {
    let m = metrics();
    m.feature_store_duration.observe(elapsed.as_secs_f64());
    if let Some(kind) = error_kind {
        m.feature_store_errors.with_label_values(&[kind]).inc();
    }
}

/// Records entity lookups answered by the feature cache (`hits`) and sent on to the store
/// (`misses`). For the feature-store client to call once per request.
pub fn record_feature_store_cache(hits: u64, misses: u64) {
    let m = metrics();
    m.feature_store_cache_hits.inc_by(hits);
    m.feature_store_cache_misses.inc_by(misses);
}

/// Records one sync of a remote model repository into the model cache: files downloaded, the
/// bytes they took, and files reused from the cache. For the start-up (and later rescans) to
/// call with what [`crate::storage::SyncReport`] says.
pub fn record_model_store_sync(downloads: u64, downloaded_bytes: u64, cache_hits: u64) {
    let m = metrics();
    m.model_store_downloads.inc_by(downloads);
    m.model_store_downloaded_bytes.inc_by(downloaded_bytes);
    m.model_store_cache_hits.inc_by(cache_hits);
}

// -------------------------------------------------------------------------------- identity

/// Sets `ferrum_build_info` for this binary; `image_tag` is the container image tag, if known.
pub fn set_build_info(image_tag: Option<&str>) {
    metrics()
        .build_info
        .with_label_values(&[
            crate::BUILD_VERSION,
            crate::BUILD_GIT_COMMIT,
            image_tag.filter(|t| !t.is_empty()).unwrap_or("unknown"),
        ])
        .set(1);
}

/// Sets `ferrum_model_info` to exactly the loaded versions, each with its rollout `role`:
/// called whenever what serves changes, so an unloaded version's series disappears and a
/// promoted one's role changes.
pub fn set_model_info<'a>(loaded: impl IntoIterator<Item = (&'a ModelEntry, &'a str)>) {
    let gauge = &metrics().model_info;
    gauge.reset();
    for (entry, role) in loaded {
        gauge
            .with_label_values(&[
                entry.name.as_str(),
                entry.version.as_str(),
                entry.onnx.sha256.as_str(),
                entry.dataset.snapshot_id.as_str(),
                role,
            ])
            .set(1);
    }
}

/// Counts a model version that was not loaded (`reason`: `refused` or `load_failed`).
pub fn record_model_load_failure(model: &str, version: &str, reason: &'static str) {
    metrics()
        .model_load_failures
        .with_label_values(&[model, version, reason])
        .inc();
}

/// Counts a rescan of the repository (`outcome`: `applied` or `failed`).
pub fn record_repository_rescan(outcome: &'static str) {
    metrics()
        .repository_rescans
        .with_label_values(&[outcome])
        .inc();
}

// ----------------------------------------------------------------------------- predictions

/// Registers `ferrum_prediction_value` with these bucket bounds (sorted and deduplicated
/// here). The first call wins; later calls change nothing. Until it is called, regression
/// values are not recorded.
pub fn register_prediction_buckets(mut bounds: Vec<f64>) {
    bounds.retain(|b| b.is_finite());
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    if bounds.is_empty() {
        bounds = prometheus::DEFAULT_BUCKETS.to_vec();
    }
    let m = metrics();
    let mut created = false;
    let histogram = m.prediction_value.get_or_init(|| {
        created = true;
        histogram_vec(
            "ferrum_prediction_value",
            "Values predicted by a regressor. Bucket bounds are the training predictions' minimum, deciles and maximum, so each bucket held about a tenth of them in training.",
            &bounds,
            MODEL,
        )
    });
    if created {
        m.registry
            .register(Box::new(histogram.clone()))
            .expect("registered once");
    }
}

/// Records the predictions of one inference call: class counts for a classifier, values for a
/// regressor.
pub fn record_predictions(entry: &ModelEntry, output: &ModelOutput) {
    let m = metrics();
    let (model, version) = (entry.name.as_str(), entry.version.as_str());
    match output {
        ModelOutput::Classification {
            labels, n_classes, ..
        } => {
            let mut counts = vec![0u64; *n_classes];
            for &label in labels {
                if let Some(slot) = counts.get_mut(label as usize) {
                    *slot += 1;
                }
            }
            for (class, count) in entry.class_labels.iter().zip(counts) {
                if count > 0 {
                    m.predictions
                        .with_label_values(&[model, version, class.as_str()])
                        .inc_by(count);
                }
            }
        }
        ModelOutput::Regression { values } => {
            if let Some(histogram) = m.prediction_value.get() {
                let histogram = histogram.with_label_values(&[model, version]);
                for &value in values {
                    histogram.observe(f64::from(value));
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------- drift

/// Publishes a feature's mean |attribution| over a `population` (`training` or `served`).
pub fn set_explanation_mean_abs(
    model: &str,
    version: &str,
    feature: &str,
    population: &str,
    value: f64,
) {
    metrics()
        .explanation_mean_abs
        .with_label_values(&[model, version, feature, population])
        .set(value);
}

/// Publishes a feature's PSI for a model version's window.
pub fn set_feature_psi(model: &str, version: &str, feature: &str, psi: f64) {
    metrics()
        .feature_psi
        .with_label_values(&[model, version, feature])
        .set(psi);
}

/// Publishes a prediction series' PSI (`output` = `class`, `probability` or `value`).
pub fn set_prediction_psi(model: &str, version: &str, output: &str, psi: f64) {
    metrics()
        .prediction_psi
        .with_label_values(&[model, version, output])
        .set(psi);
}

/// Publishes the size of the window the PSI gauges were computed from, and when.
pub fn set_drift_window(model: &str, version: &str, rows: usize, unix_seconds: f64) {
    let m = metrics();
    m.drift_window_rows
        .with_label_values(&[model, version])
        .set(rows as i64);
    m.drift_updated
        .with_label_values(&[model, version])
        .set(unix_seconds);
}

/// Counts served rows that drift monitoring had to leave out.
pub fn record_drift_dropped(model: &str, version: &str, rows: usize) {
    metrics()
        .drift_dropped_rows
        .with_label_values(&[model, version])
        .inc_by(rows as u64);
}

/// Counts served rows that reached a drift window, at the recomputation that includes them.
pub fn record_drift_rows(model: &str, version: &str, rows: u64) {
    metrics()
        .drift_rows
        .with_label_values(&[model, version])
        .inc_by(rows);
}

/// Records how long one background PSI computation took.
pub fn record_drift_computation(elapsed: Duration) {
    metrics().drift_computation.observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `prefix` (name and labels).
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn methods_are_bounded() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn recording_functions_write_exact_values() {
        record_http_request("/t/{x}", &Method::GET, 200, Duration::from_millis(3));
        record_http_request("/t/{x}", &Method::GET, 200, Duration::from_millis(30));
        record_inference("unit-m", "7", Duration::ZERO);
        let calls = InferenceCalls::new("unit-m", "7");
        calls.record(5, Duration::from_micros(40), None);
        calls.record(3, Duration::from_micros(40), Some("runtime_error"));
        record_inference_failure("unit-m", "7", "missing_feature");
        record_explain("unit-m", "7", "exact", Duration::from_millis(2));
        record_feature_store_call(Duration::from_millis(4), Some("timeout"));
        record_feature_store_cache(3, 1);
        let text = render();
        let at = |p: &str| sample(&text, p).unwrap_or_else(|| panic!("no {p} in\n{text}"));
        // Exposition lines: series, then the value it must have.
        let expected = r#"
            ferrum_http_requests_total{method="GET",route="/t/{x}",status="200"} 2
            ferrum_http_request_duration_seconds_bucket{method="GET",route="/t/{x}",status="200",le="0.005"} 1
            ferrum_inference_batch_rows_sum{model="unit-m",version="7"} 8
            ferrum_inference_duration_seconds_count{model="unit-m",version="7"} 2
            ferrum_inference_success_total{model="unit-m",version="7"} 1
            ferrum_inference_failures_total{model="unit-m",reason="runtime_error",version="7"} 1
            ferrum_inference_requests_total{model="unit-m",version="7"} 1
            ferrum_inference_queue_wait_seconds_count{model="unit-m",version="7"} 1
            ferrum_inference_request_failures_total{model="unit-m",reason="missing_feature",version="7"} 1
            ferrum_explain_duration_seconds_count{method="exact",model="unit-m",version="7"} 1
            ferrum_feature_store_errors_total{kind="timeout"} 1
        "#;
        for line in expected.trim().lines() {
            let (series, value) = line.trim().rsplit_once(' ').unwrap();
            assert_eq!(at(series), value.parse::<f64>().unwrap(), "{series}");
        }
        assert!(at("ferrum_feature_store_cache_hits_total") >= 3.0);
        // Every family has help text.
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no help"
            );
        }
    }

    #[test]
    fn queue_depth_returns_to_zero_whether_or_not_a_call_starts() {
        let depth = || {
            sample(
                &render(),
                r#"ferrum_inference_queue_depth{model="unit-q",version="1"}"#,
            )
            .unwrap()
        };
        let mut a = inference_queued("unit-q", "1");
        let b = inference_queued("unit-q", "1");
        assert_eq!(depth(), 2.0);
        a.started();
        a.started();
        assert_eq!(depth(), 1.0);
        drop(b);
        drop(a);
        assert_eq!(depth(), 0.0);
    }

    #[test]
    fn in_flight_guard_decrements_on_drop() {
        let before = sample(&render(), "ferrum_http_requests_in_flight ").unwrap_or(0.0);
        let guard = http_request_started();
        // No other unit test serves HTTP, so nothing else moves this gauge here.
        assert_eq!(
            sample(&render(), "ferrum_http_requests_in_flight ").unwrap(),
            before + 1.0
        );
        drop(guard);
        assert_eq!(
            sample(&render(), "ferrum_http_requests_in_flight ").unwrap(),
            before
        );
    }
}
