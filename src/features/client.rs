//! A client for Feast's HTTP feature server (`feast serve`): pooled connections, a hard time
//! budget per lookup, bounded retries with jittered backoff on connection errors and 5xx only,
//! and the caller's W3C trace context forwarded. The answer is mapped to the model's rows by
//! column NAME, never by place: Feast's feature column order changes between restarts.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

use super::assemble::{assemble, Cell};
use super::protocol::{
    describe_error_body, FeastValue, FieldStatus, OnlineFeaturesRequest, OnlineFeaturesResponse,
    SnapshotIds,
};
use super::{FeatureError, TraceContext};
use crate::model::manifest::FeatureStoreSpec;
use crate::model::{ModelEntry, Rows};

/// How patient the client is.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// The whole budget of one lookup, retries included: past it the lookup fails with
    /// `Timeout`, so a slow store costs a request this long at most.
    pub timeout: Duration,
    /// How long to wait for a TCP connection before calling the store unreachable.
    pub connect_timeout: Duration,
    /// Extra attempts after a connection error or a 5xx (never after a timeout: a slow store
    /// would only get slower, and the budget is spent anyway).
    pub retries: u32,
    /// The first retry's backoff; each retry doubles it, with jitter.
    pub backoff: Duration,
}

/// A Feast feature server, reached over plain HTTP.
pub struct FeastClient {
    http: reqwest::Client,
    base: String,
    options: ClientOptions,
}

/// Why one attempt failed in a way worth retrying.
enum Retryable {
    /// The store answered 5xx.
    Status(StatusCode, Bytes),
    /// No answer: refused, reset, closed mid-answer.
    Transport(String),
}

/// How long a pooled connection to the store may stay idle before it is dropped: below the
/// store's own keep-alive (feast 0.67's `feast serve --keep-alive-timeout` is 30 s by default),
/// so a lookup is not sent on a connection the store has just closed for idleness, which fails
/// as a transport error and costs a retry's backoff.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

impl FeastClient {
    /// A client for the server at `base` (`http://host:port[/prefix]`). Connections are pooled
    /// and reused across requests (Feast's median answer is ~11 ms; a new connection per call
    /// would add to every one), and dropped once idle for [`POOL_IDLE_TIMEOUT`].
    pub fn new(base: &str, options: ClientOptions) -> Result<FeastClient, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(concat!("ferrum-serve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the feature-store client: {e}"))?;
        Ok(FeastClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            options,
        })
    }

    /// The server's base address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Looks up `ids` (distinct) for `model` and returns its rows in `ids` order.
    pub async fn fetch_rows(
        &self,
        model: &ModelEntry,
        spec: &FeatureStoreSpec,
        ids: &[String],
        trace: &TraceContext,
    ) -> Result<Rows, FeatureError> {
        let request = request_for(spec, &model.feature_names, ids);
        let response = self.get_online_features(&request, trace).await?;
        rows_from_response(model, spec, ids, &response)
    }

    /// `POST /get-online-features`, with retries inside the time budget. A non-2xx answer is a
    /// `StoreError` carrying Feast's message (503 is `Unavailable`); a 2xx body that is not a
    /// Feast response is a `StoreError` too.
    pub async fn get_online_features(
        &self,
        request: &OnlineFeaturesRequest,
        trace: &TraceContext,
    ) -> Result<OnlineFeaturesResponse, FeatureError> {
        let body = Bytes::from(
            serde_json::to_vec(request).map_err(|e| FeatureError::StoreError(e.to_string()))?,
        );
        let (status, bytes) = self.post("/get-online-features", body, trace).await?;
        if !status.is_success() {
            return Err(FeatureError::StoreError(format!(
                "{} answered {status}: {}",
                self.base,
                describe_error_body(&bytes)
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            FeatureError::StoreError(format!(
                "{} answered {status} with a body that is not a Feast online-features response: {e}",
                self.base
            ))
        })
    }

    async fn post(
        &self,
        path: &str,
        body: Bytes,
        trace: &TraceContext,
    ) -> Result<(StatusCode, Bytes), FeatureError> {
        let deadline = Instant::now() + self.options.timeout;
        let url = format!("{}{path}", self.base);
        let mut attempt = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timeout());
            }
            let mut request = self
                .http
                .post(&url)
                .timeout(remaining)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(traceparent) = &trace.traceparent {
                request = request.header("traceparent", traceparent);
            }
            if let Some(tracestate) = &trace.tracestate {
                request = request.header("tracestate", tracestate);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|bytes| (status, bytes))
                }
                Err(e) => Err(e),
            };
            let failure = match outcome {
                Ok((status, bytes)) if status.is_server_error() => Retryable::Status(status, bytes),
                Ok(answer) => return Ok(answer),
                Err(e) if e.is_timeout() && !e.is_connect() => return Err(self.timeout()),
                Err(e) => Retryable::Transport(error_chain(&e)),
            };
            let backoff = self.backoff(attempt);
            if attempt >= self.options.retries || Instant::now() + backoff >= deadline {
                return Err(self.give_up(failure));
            }
            tracing::debug!(
                attempt,
                backoff_ms = backoff.as_millis() as u64,
                "retrying the feature store"
            );
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    /// `backoff * 2^attempt`, scaled by a random factor in [0.5, 1): spread out so that many
    /// API replicas retrying at once do not hit a recovering store in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.options.backoff.saturating_mul(1u32 << attempt.min(10));
        base.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    fn timeout(&self) -> FeatureError {
        FeatureError::Timeout {
            uri: self.base.clone(),
            timeout_ms: self.options.timeout.as_millis() as u64,
        }
    }

    fn give_up(&self, failure: Retryable) -> FeatureError {
        match failure {
            Retryable::Status(StatusCode::SERVICE_UNAVAILABLE, bytes) => {
                FeatureError::Unavailable {
                    uri: self.base.clone(),
                    reason: format!("answered 503: {}", describe_error_body(&bytes)),
                }
            }
            Retryable::Status(status, bytes) => FeatureError::StoreError(format!(
                "{} answered {status}: {}",
                self.base,
                describe_error_body(&bytes)
            )),
            Retryable::Transport(reason) => FeatureError::Unavailable {
                uri: self.base.clone(),
                reason,
            },
        }
    }

    /// `GET path` once within the lookup budget (no retries: the callers are periodic checks);
    /// a transport failure is its error chain.
    async fn get(&self, path: &str) -> Result<reqwest::Response, String> {
        self.http
            .get(format!("{}{path}", self.base))
            .timeout(self.options.timeout)
            .send()
            .await
            .map_err(|e| error_chain(&e))
    }

    /// `GET /health`: `Ok` on any 2xx (Feast answers 200 with an empty body).
    pub async fn health(&self) -> Result<(), String> {
        let response = self.get("/health").await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("/health answered {}", response.status()))
        }
    }

    /// `GET /snapshot-id` (the mock store's; a real Feast has none): `Ok(None)` on 404.
    pub async fn snapshot_ids(&self) -> Result<Option<SnapshotIds>, String> {
        let response = self.get("/snapshot-id").await?;
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Ok(None),
            status if status.is_success() => {
                let bytes = response.bytes().await.map_err(|e| error_chain(&e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| format!("/snapshot-id is not the expected JSON: {e}"))
            }
            status => Err(format!("/snapshot-id answered {status}")),
        }
    }
}

/// A reqwest error with its causes ("connection refused" is three levels down).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The request for a model: its feature service when the manifest names one (the set the
/// model was trained on, under one name), else `<view>:<feature>` for each model feature.
/// Short feature names are asked for (`full_feature_names: false`); the answer is also
/// understood with full names.
pub fn request_for(
    spec: &FeatureStoreSpec,
    feature_names: &[String],
    ids: &[String],
) -> OnlineFeaturesRequest {
    let entities = [(
        spec.join_key.clone(),
        ids.iter()
            .map(|id| serde_json::Value::String(id.clone()))
            .collect(),
    )]
    .into();
    match (&spec.feature_service, &spec.feature_view) {
        (Some(service), _) => OnlineFeaturesRequest {
            feature_service: Some(service.clone()),
            features: None,
            entities,
            full_feature_names: false,
        },
        (None, view) => OnlineFeaturesRequest {
            feature_service: None,
            features: Some(
                feature_names
                    .iter()
                    .map(|f| format!("{}:{f}", view.as_deref().unwrap_or_default()))
                    .collect(),
            ),
            entities,
            full_feature_names: false,
        },
    }
}

/// What the store was asked, for messages.
pub fn origin_of(spec: &FeatureStoreSpec) -> String {
    match (&spec.feature_service, &spec.feature_view) {
        (Some(service), _) => format!("feature service '{service}'"),
        (None, Some(view)) => format!("feature view '{view}'"),
        (None, None) => "the feature store".into(),
    }
}

/// Maps a Feast answer for `ids` to the model's rows. The answer must have one column per
/// name, one value and status per entity in every column, the join key column echoing `ids`
/// in order, and a column for every model feature, named `<feature>` or `<view>__<feature>`;
/// anything else is a `StoreError` naming what is wrong.
pub fn rows_from_response(
    model: &ModelEntry,
    spec: &FeatureStoreSpec,
    ids: &[String],
    response: &OnlineFeaturesResponse,
) -> Result<Rows, FeatureError> {
    let bad = |reason: String| FeatureError::StoreError(reason);
    let names = &response.metadata.feature_names;
    if names.len() != response.results.len() {
        return Err(bad(format!(
            "{} column names for {} columns",
            names.len(),
            response.results.len()
        )));
    }
    for (name, column) in names.iter().zip(&response.results) {
        if column.values.len() != ids.len() || column.statuses.len() != ids.len() {
            return Err(bad(format!(
                "column '{name}' has {} values and {} statuses for {} entities",
                column.values.len(),
                column.statuses.len(),
                ids.len()
            )));
        }
    }
    let key = names
        .iter()
        .position(|n| *n == spec.join_key)
        .ok_or_else(|| bad(format!("no join key column '{}'", spec.join_key)))?;
    for (j, (sent, got)) in ids.iter().zip(&response.results[key].values).enumerate() {
        if !matches!(got, FeastValue::Text(t) if t == sent) {
            return Err(bad(format!(
                "the join key column does not echo the entities in order (entity {j}: sent '{sent}', got {})",
                serde_json::to_string(got).unwrap_or_default()
            )));
        }
    }
    let full_name = |feature: &str| {
        spec.feature_view
            .as_ref()
            .map(|view| format!("{view}__{feature}"))
    };
    let columns: Vec<usize> = model
        .feature_names
        .iter()
        .map(|feature| {
            let full = full_name(feature);
            names
                .iter()
                .position(|n| n == feature || Some(n) == full.as_ref())
                .filter(|&i| i != key)
                .ok_or_else(|| {
                    bad(format!(
                        "no column for feature '{feature}' from {} (the answer has: {})",
                        origin_of(spec),
                        names.join(", ")
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    assemble(model, &spec.defaults, ids, &origin_of(spec), |j, i| {
        let column = &response.results[columns[i]];
        match (column.statuses[j], &column.values[j]) {
            (FieldStatus::Present, FeastValue::Null) => Cell::Absent(FieldStatus::NullValue),
            (FieldStatus::Present, value) => match value.as_f64() {
                Some(v) => Cell::Value(v),
                None => Cell::Wrong(value.kind()),
            },
            (status, _) => Cell::Absent(status),
        }
    })
}

#[cfg(test)]
mod tests {
    //! The client against every response a real feast 0.67 server gave on this machine
    //! (`../shared/notes/feast-0.67/`, read where CI puts it beside the clone, not copied).

    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::Router;

    use super::super::test_support::{manifest, model_entry, root};
    use super::*;

    fn captures() -> PathBuf {
        root().join("../shared/notes/feast-0.67")
    }

    fn read(name: &str) -> Vec<u8> {
        let path = captures().join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A captured error: `HTTP/1.1 <status> <reason>`, a blank line, the body.
    fn captured_error(name: &str) -> (u16, Vec<u8>) {
        let text = read(name);
        let split = text
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("status line, blank line, body");
        let status_line = std::str::from_utf8(&text[..split]).unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        (status, text[split + 2..].to_vec())
    }

    fn breast_cancer() -> ModelEntry {
        model_entry(&manifest(), "breast-cancer").clone()
    }

    fn two_feature_model(spec: FeatureStoreSpec) -> ModelEntry {
        let mut entry = breast_cancer();
        entry.feature_names = vec!["worst_area".into(), "mean_radius".into()];
        entry.feature_store = Some(spec);
        entry
    }

    fn view_spec() -> FeatureStoreSpec {
        FeatureStoreSpec {
            entity: Some("patient".into()),
            feature_service: None,
            feature_view: Some("breast_cancer_features".into()),
            join_key: "entity_id".into(),
            defaults: BTreeMap::new(),
        }
    }

    fn response(name: &str) -> OnlineFeaturesResponse {
        serde_json::from_slice(&read(name)).unwrap()
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Keeps the first `n` entities of every column, as if only they had been asked.
    fn first_entities(mut r: OnlineFeaturesResponse, n: usize) -> OnlineFeaturesResponse {
        for c in &mut r.results {
            c.values.truncate(n);
            c.statuses.truncate(n);
            c.event_timestamps.truncate(n);
        }
        r
    }

    #[test]
    fn our_requests_are_the_captured_requests() {
        let spec = view_spec();
        let request = request_for(
            &spec,
            &ids(&["worst_area", "mean_radius"]),
            &ids(&["breast-cancer-1", "no-such-id"]),
        );
        let captured: OnlineFeaturesRequest =
            serde_json::from_slice(&read("features-list.request.json")).unwrap();
        assert_eq!(request, captured);
        let entry = breast_cancer();
        let service = entry.feature_store.as_ref().unwrap();
        let request = request_for(
            service,
            &entry.feature_names,
            &ids(&["breast-cancer-1", "breast-cancer-0", "no-such-id"]),
        );
        let captured: OnlineFeaturesRequest =
            serde_json::from_slice(&read("feature-service.request.json")).unwrap();
        assert_eq!(request, captured);
    }

    #[test]
    fn feature_service_answer_maps_by_name_and_names_the_unknown_entity() {
        let entry = breast_cancer();
        let spec = entry.feature_store.clone().unwrap();
        let answer = response("feature-service.response.json");
        // The real server put the columns in neither requested nor defined order.
        assert_eq!(answer.metadata.feature_names[0], "entity_id");
        assert_ne!(answer.metadata.feature_names[1..], entry.feature_names[..]);
        let all = ids(&["breast-cancer-1", "breast-cancer-0", "no-such-id"]);
        assert_eq!(
            rows_from_response(&entry, &spec, &all, &answer).unwrap_err(),
            FeatureError::EntityNotFound {
                ids: ids(&["no-such-id"]),
                origin: "feature service 'breast_cancer_v1'".into()
            }
        );
        let known = first_entities(answer, 2);
        let rows = rows_from_response(&entry, &spec, &all[..2], &known).unwrap();
        assert_eq!((rows.n_rows, rows.n_cols), (2, 30));
        let column = |name: &str| entry.feature_names.iter().position(|n| n == name).unwrap();
        for (row, name, value) in [
            (0, "mean_radius", 13.619999885559082f64),
            (0, "worst_area", 729.7999877929688),
            (1, "mean_radius", 13.869999885559082),
            (1, "mean_concavity", 0.0368800014257431),
        ] {
            assert_eq!(
                rows.row(row)[column(name)],
                value as f32,
                "row {row}, {name}"
            );
        }
        // Any other column order gives the very same rows.
        let mut reversed = known.clone();
        reversed.results[1..].reverse();
        reversed.metadata.feature_names[1..].reverse();
        assert_eq!(
            rows_from_response(&entry, &spec, &all[..2], &reversed).unwrap(),
            rows
        );
    }

    #[test]
    fn features_list_answers_with_short_and_full_names() {
        let model = two_feature_model(view_spec());
        let spec = model.feature_store.clone().unwrap();
        for file in [
            "features-list.response.json",
            "full-feature-names.response.json",
        ] {
            let answer = response(file);
            let both = ids(&["breast-cancer-1", "no-such-id"]);
            assert_eq!(
                rows_from_response(&model, &spec, &both, &answer).unwrap_err(),
                FeatureError::EntityNotFound {
                    ids: ids(&["no-such-id"]),
                    origin: "feature view 'breast_cancer_features'".into()
                },
                "{file}"
            );
            let rows =
                rows_from_response(&model, &spec, &both[..1], &first_entities(answer, 1)).unwrap();
            // Model order (worst_area, mean_radius), not the answer's order.
            assert_eq!(
                rows.data,
                vec![729.7999877929688f64 as f32, 13.619999885559082f64 as f32],
                "{file}"
            );
        }
    }

    #[test]
    fn missing_values_are_named_or_defaulted() {
        let mut model = two_feature_model(view_spec());
        let spec = model.feature_store.clone().unwrap();
        let one = ids(&["breast-cancer-1"]);
        let base = first_entities(response("features-list.response.json"), 1);
        let worst_area = base
            .metadata
            .feature_names
            .iter()
            .position(|n| n == "worst_area")
            .unwrap();
        for (status, value, reason) in [
            (
                FieldStatus::NullValue,
                FeastValue::Null,
                "is NULL (NULL_VALUE)",
            ),
            (
                FieldStatus::Present,
                FeastValue::Null,
                "is NULL (NULL_VALUE)",
            ),
            (
                FieldStatus::OutsideMaxAge,
                FeastValue::Number(1.0),
                "is older than its max age (OUTSIDE_MAX_AGE)",
            ),
            (
                FieldStatus::NotFound,
                FeastValue::Null,
                "has no value (NOT_FOUND)",
            ),
            (
                FieldStatus::Present,
                FeastValue::Text("NaN".into()),
                "is NaN, not a finite float32 number",
            ),
        ] {
            let mut answer = base.clone();
            answer.results[worst_area].statuses[0] = status;
            answer.results[worst_area].values[0] = value;
            let error = rows_from_response(&model, &spec, &one, &answer).unwrap_err();
            assert_eq!(
                error,
                FeatureError::FeatureMissing {
                    entity: "breast-cancer-1".into(),
                    feature: "worst_area".into(),
                    reason: reason.into(),
                    origin: "feature view 'breast_cancer_features'".into()
                }
            );
            // A documented default stands in.
            let mut with_default = spec.clone();
            with_default.defaults.insert("worst_area".into(), 500.0);
            model.feature_store = Some(with_default.clone());
            let rows = rows_from_response(&model, &with_default, &one, &answer).unwrap();
            assert_eq!(rows.data, vec![500.0, 13.619999885559082f64 as f32]);
        }
    }

    #[test]
    fn answers_of_the_wrong_shape_are_store_errors_naming_the_problem() {
        let model = two_feature_model(view_spec());
        let spec = model.feature_store.clone().unwrap();
        let one = ids(&["breast-cancer-1"]);
        let base = first_entities(response("features-list.response.json"), 1);
        type Mutation = Box<dyn Fn(&mut OnlineFeaturesResponse)>;
        let mutations: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.metadata.feature_names[2] = "worst_areas".into()),
                "no column for feature 'worst_area'",
            ),
            (
                Box::new(|r| {
                    r.metadata.feature_names.pop();
                }),
                "2 column names for 3 columns",
            ),
            (
                Box::new(|r| r.results[1].values.clear()),
                "column 'mean_radius' has 0 values",
            ),
            (
                Box::new(|r| r.results[0].values[0] = FeastValue::Text("other".into())),
                "does not echo the entities in order",
            ),
            (
                Box::new(|r| r.metadata.feature_names[0] = "patient_id".into()),
                "no join key column 'entity_id'",
            ),
            (
                Box::new(|r| r.results[1].values[0] = FeastValue::Text("13.6".into())),
                "feature 'mean_radius' of entity 'breast-cancer-1' is a string",
            ),
        ];
        for (mutate, problem) in mutations {
            let mut answer = base.clone();
            mutate(&mut answer);
            let error = rows_from_response(&model, &spec, &one, &answer).unwrap_err();
            assert!(
                matches!(&error, FeatureError::StoreError(m) if m.contains(problem)),
                "{problem}: {error}"
            );
        }
    }

    /// Plays back the captured answers: the captured request's body gets the captured status
    /// and body, byte for byte. Records the trace headers it saw.
    #[derive(Clone, Default)]
    struct Replay {
        pairs: Arc<Vec<(serde_json::Value, u16, Vec<u8>)>>,
        seen_traceparent: Arc<Mutex<Vec<Option<String>>>>,
    }

    async fn replay(
        State(replay): State<Replay>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        replay.seen_traceparent.lock().unwrap().push(
            headers
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
        let mut sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for (request, status, answer) in replay.pairs.iter() {
            let mut request = request.clone();
            // The captured requests leave out full_feature_names when false; we always send it.
            request
                .as_object_mut()
                .unwrap()
                .entry("full_feature_names")
                .or_insert(false.into());
            if request == sent {
                return (
                    StatusCode::from_u16(*status).unwrap(),
                    [(CONTENT_TYPE, "application/json")],
                    answer.clone(),
                )
                    .into_response();
            }
        }
        sent["unmatched"] = true.into();
        (StatusCode::IM_A_TEAPOT, sent.to_string()).into_response()
    }

    async fn replay_server() -> (String, Replay) {
        let mut pairs = Vec::new();
        for name in [
            "feature-service",
            "features-list",
            "full-feature-names",
            "error-c1",
            "error-c2",
            "error-c3",
            "error-c5",
            "error-c7",
        ] {
            let request = serde_json::from_slice(&read(&format!("{name}.request.json"))).unwrap();
            let (status, body) = if name.starts_with("error") {
                captured_error(&format!("{name}.response.txt"))
            } else {
                (200, read(&format!("{name}.response.json")))
            };
            pairs.push((request, status, body));
        }
        let state = Replay {
            pairs: Arc::new(pairs),
            ..Default::default()
        };
        let app = Router::new()
            .route("/get-online-features", post(replay))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}"), state)
    }

    fn options() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(500),
            retries: 2,
            backoff: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn every_captured_exchange_over_http() {
        let (base, replayed) = replay_server().await;
        let client = FeastClient::new(&base, options()).unwrap();
        let trace = TraceContext {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
        };
        // The successful captures parse to exactly the captured JSON.
        for name in ["feature-service", "features-list", "full-feature-names"] {
            let request: OnlineFeaturesRequest =
                serde_json::from_slice(&read(&format!("{name}.request.json"))).unwrap();
            let answer = client.get_online_features(&request, &trace).await.unwrap();
            let expected: serde_json::Value =
                serde_json::from_slice(&read(&format!("{name}.response.json"))).unwrap();
            assert_eq!(serde_json::to_value(&answer).unwrap(), expected, "{name}");
        }
        // Each captured error becomes a store error with Feast's own message; the 500s were
        // retried (a 5xx may be transient) and still give the message.
        for (name, message) in [
            ("error-c1", "answered 404 Not Found: FeatureViewNotFoundException: Feature view no_such_view does not exist in project breast_cancer"),
            ("error-c2", "answered 500 Internal Server Error: 'Feature no_such_feature not found in projection breast_cancer_features'"),
            ("error-c3", "answered 404 Not Found: FeatureServiceNotFoundException: Feature service no_such_service does not exist in project breast_cancer"),
            ("error-c5", "answered 500 Internal Server Error: \"Missing join key values for keys: ['entity_id']. No values provided for keys: ['entity_id']. Provided join_key_values: []\""),
            ("error-c7", "answered 500 Internal Server Error: No features specified for retrieval"),
        ] {
            let request: OnlineFeaturesRequest =
                serde_json::from_slice(&read(&format!("{name}.request.json"))).unwrap();
            let seen_before = replayed.seen_traceparent.lock().unwrap().len();
            let error = client.get_online_features(&request, &trace).await.unwrap_err();
            assert_eq!(
                error,
                FeatureError::StoreError(format!("{base} {message}")),
                "{name}"
            );
            let attempts = replayed.seen_traceparent.lock().unwrap().len() - seen_before;
            let (status, _) = captured_error(&format!("{name}.response.txt"));
            assert_eq!(attempts, if status >= 500 { 3 } else { 1 }, "{name}");
        }
        // The whole path a model takes: service request, rows by name, the unknown id named.
        let entry = breast_cancer();
        let spec = entry.feature_store.clone().unwrap();
        let error = client
            .fetch_rows(
                &entry,
                &spec,
                &ids(&["breast-cancer-1", "breast-cancer-0", "no-such-id"]),
                &trace,
            )
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "entity 'no-such-id' not found in feature service 'breast_cancer_v1'"
        );
        // The caller's trace context went along with every call.
        let seen = replayed.seen_traceparent.lock().unwrap();
        assert!(seen.iter().all(|t| t == &trace.traceparent), "{seen:?}");
    }

    #[tokio::test]
    async fn a_closed_port_is_unavailable_after_bounded_retries() {
        // Bind and drop: nothing listens there any more.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = FeastClient::new(&format!("http://127.0.0.1:{port}"), options()).unwrap();
        let started = Instant::now();
        let error = client
            .get_online_features(&OnlineFeaturesRequest::default(), &TraceContext::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, FeatureError::Unavailable { reason, .. } if reason.contains("refused")),
            "{error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(client.health().await.is_err());
    }

    #[tokio::test]
    async fn a_slow_store_times_out_within_the_budget() {
        let app = Router::new().route(
            "/get-online-features",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = FeastClient::new(
            &format!("http://{address}"),
            ClientOptions {
                timeout: Duration::from_millis(150),
                ..options()
            },
        )
        .unwrap();
        let started = Instant::now();
        let error = client
            .get_online_features(&OnlineFeaturesRequest::default(), &TraceContext::default())
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            error,
            FeatureError::Timeout {
                uri: format!("http://{address}"),
                timeout_ms: 150
            }
        );
        assert!(
            took >= Duration::from_millis(140) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }
}
