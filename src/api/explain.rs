//! `POST /explain` and its per-model forms: SHAP attributions for each row of a `/predict`
//! body. The handler parses and checks the request (errors come back before any work), turns
//! it into rows exactly as `/predict` does (entity ids through the feature store), waits for an
//! explanation slot without holding a thread, and runs the computation on the blocking pool; a
//! client that goes away, or the request timeout, cancels it between model batches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::body::JsonBody;
use super::error::ApiError;
use super::openapi::{ExplainRequest, InferenceErrors};
use super::predict::{json_response, parse_off_runtime, ModelRef};
use super::AppState;
use crate::explain::{self, Cancel, ExplainLimits, ExplainQuery, Explanation, Output};
use crate::features::{rows_for, TraceContext};
use crate::input::{InputError, OutputSpace, RequestInput};
use crate::telemetry::metrics;
use crate::telemetry::otel::explain_span;
use crate::telemetry::timing::InferenceTiming;

/// `POST /explain`: the manifest's default model, its highest version.
#[utoipa::path(
    post,
    path = "/explain",
    tag = "inference",
    request_body(content = ExplainRequest, example = super::openapi::default_model_example),
    responses(
        (status = 200, description = "One explanation per row, from the model version named in `model`", body = ExplainResponse),
        InferenceErrors,
    )
)]
pub async fn explain_default(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    explain(&state, None, None, &headers, body).await
}

/// `POST /models/{name}/explain`: the named model, its highest version.
#[utoipa::path(
    post,
    path = "/models/{name}/explain",
    tag = "inference",
    params(("name" = String, Path, description = "A model in the manifest", example = "diabetes")),
    request_body(content = ExplainRequest, example = super::openapi::named_model_example),
    responses(
        (status = 200, description = "One explanation per row, from the model version named in `model`", body = ExplainResponse),
        InferenceErrors,
    )
)]
pub async fn explain_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    explain(&state, Some(&name), None, &headers, body).await
}

/// `POST /models/{name}/versions/{version}/explain`: one exact version.
#[utoipa::path(
    post,
    path = "/models/{name}/versions/{version}/explain",
    tag = "inference",
    params(
        ("name" = String, Path, description = "A model in the manifest", example = "diabetes"),
        ("version" = String, Path, description = "One of its versions", example = "1"),
    ),
    request_body(content = ExplainRequest, example = super::openapi::named_model_example),
    responses(
        (status = 200, description = "One explanation per row, from the model version named in `model`", body = ExplainResponse),
        InferenceErrors,
    )
)]
pub async fn explain_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    explain(&state, Some(&name), Some(&version), &headers, body).await
}

async fn explain(
    state: &AppState,
    name: Option<&str>,
    version: Option<&str>,
    headers: &HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let model = state.repository()?.get(name, version)?.clone();
    let limits = state.limits.explain;
    let max_request_rows = state.limits.max_request_rows;
    let max_rows = max_request_rows.min(limits.max_rows);
    let request = parse_off_runtime(body, model.clone(), max_rows).await.map_err(
        |e| match e {
            // The explain limit is the tighter one: name it, not MAX_REQUEST_ROWS.
            ApiError::Input(InputError::TooManyRows { limit }) if limit < max_request_rows => {
                ApiError::ExplanationTooExpensive(format!(
                    "'instances' has more than {limit} rows: /explain takes at most {limit} per request (the server's EXPLAIN_MAX_ROWS, --explain-max-rows)"
                ))
            }
            other => other,
        },
    )?;
    let (n_rows, entity_ids) = match &request.input {
        RequestInput::Rows(rows) => (rows.n_rows, None),
        RequestInput::EntityIds(ids) => (ids.len(), Some(ids.clone())),
    };
    let query = ExplainQuery {
        class: request.explain.class,
        output: request.explain.output.map(|o| match o {
            OutputSpace::Probability => Output::Probability,
            OutputSpace::Margin => Output::Margin,
        }),
    };
    // Checked before any lookup: a refused explanation costs the feature store nothing.
    let plan = explain::plan(&model, model.explain.as_deref(), &query, n_rows, &limits)?;
    let admitted = state.explain_slots.admit()?;
    // Entity ids become rows exactly as for /predict (the same function, the same errors).
    let store = state.feature_store();
    let trace = TraceContext::from_headers(headers);
    let rows = rows_for(&store, request.input, &model, &trace).await?;

    let permit = state
        .explain_slots
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::NotReady("the server is shutting down"))?;
    let cancel = Cancel::default();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let task_model = model.clone();
    let method = plan.method.name();
    let span = explain_span(&model.entry.name, &model.entry.version, method, n_rows);
    let queued_at = Instant::now();
    let (explanations, timing) = tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        // The slot lives as long as the work, even if the client has gone.
        let _slot = (permit, admitted);
        let started = Instant::now();
        let assets = task_model.explain.as_deref();
        let result = explain::explain(&task_model, assets, &rows, &plan, &limits, &cancel);
        let timing = InferenceTiming {
            queue: started - queued_at,
            inference: started.elapsed(),
        };
        if let Err(explain::ExplainError::Cancelled) = result {
            tracing::info!(
                model = %task_model.entry.name,
                rows = rows.n_rows,
                "explanation cancelled: the client went away"
            );
        }
        result.map(|explanations| (explanations, timing))
    })
    .await
    .map_err(|e| ApiError::Inference(format!("explanation task failed: {e}")))??;
    metrics::record_explain(
        &model.entry.name,
        &model.entry.version,
        method,
        timing.inference,
    );

    let entry = &model.entry;
    let mut response = json_response(&ExplainResponse {
        model: ModelRef::of(&model),
        entity_ids: entity_ids.as_deref(),
        explanations: explanations
            .iter()
            .map(|explanation| ExplanationJson {
                explanation,
                feature_names: &entry.feature_names,
                class_labels: &entry.class_labels,
                top_k: request.explain.top_k,
            })
            .collect(),
    });
    timing.write_headers(response.headers_mut());
    Ok(response)
}

/// The explanation slots: `concurrency` permits to compute, and a bound on how many
/// explanations may be admitted (computing or waiting) before more are shed with 503.
pub struct ExplainSlots {
    permits: Arc<tokio::sync::Semaphore>,
    admitted: Arc<AtomicUsize>,
    running: usize,
    queued: usize,
}

impl ExplainSlots {
    /// Slots for the configured limits.
    pub fn new(limits: &ExplainLimits) -> ExplainSlots {
        ExplainSlots {
            permits: Arc::new(tokio::sync::Semaphore::new(limits.concurrency)),
            admitted: Arc::new(AtomicUsize::new(0)),
            running: limits.concurrency,
            queued: limits.max_queued,
        }
    }

    /// Counts one more explanation in, or refuses it when all slots and the queue are taken.
    fn admit(&self) -> Result<Admitted, ApiError> {
        let position = self.admitted.fetch_add(1, Ordering::Relaxed) + 1;
        let admitted = Admitted(self.admitted.clone());
        if position > self.running + self.queued {
            return Err(ApiError::ExplainOverloaded {
                running: self.running,
                queued: self.queued,
            });
        }
        Ok(admitted)
    }
}

/// One admitted explanation; counted out when dropped, however it ends.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cancels the computation when the handler's future is dropped (the client went away).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// An `/explain` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExplainResponse<'a> {
    model: ModelRef<'a>,
    /// Echo of `entity_ids`, parallel to `explanations` (absent for inline `instances`), as
    /// `/predict` answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    entity_ids: Option<&'a [String]>,
    /// One per row, in request order.
    #[schema(value_type = Vec<super::openapi::Explanation>)]
    explanations: Vec<ExplanationJson<'a>>,
}

/// One explanation as JSON: the class by name, attributions keyed by feature name (all, in
/// model order; or the `top_k` largest by magnitude, largest first).
struct ExplanationJson<'a> {
    explanation: &'a Explanation,
    feature_names: &'a [String],
    class_labels: &'a [String],
    top_k: Option<usize>,
}

impl Serialize for ExplanationJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.explanation;
        let mut map = s.serialize_map(None)?;
        if let Some(class) = e.class {
            map.serialize_entry("class", &self.class_labels[class])?;
        }
        map.serialize_entry("output", &e.output)?;
        map.serialize_entry("value", &e.value)?;
        map.serialize_entry("base_value", &e.base_value)?;
        map.serialize_entry(
            "attributions",
            &Attributions {
                values: &e.attributions,
                names: self.feature_names,
                top_k: self.top_k,
            },
        )?;
        map.serialize_entry("method", &e.method)?;
        map.serialize_entry("residual", &e.residual)?;
        if let Some(permutations) = e.permutations {
            map.serialize_entry("permutations", &permutations)?;
        }
        map.end()
    }
}

struct Attributions<'a> {
    values: &'a [f64],
    names: &'a [String],
    top_k: Option<usize>,
}

impl Serialize for Attributions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let order = top_k_order(self.values, self.top_k);
        let mut map = s.serialize_map(Some(order.len()))?;
        for i in order {
            map.serialize_entry(&self.names[i], &self.values[i])?;
        }
        map.end()
    }
}

/// Feature indices to report: all in model order, or the `k` largest by magnitude, largest
/// first (ties in model order).
fn top_k_order(values: &[f64], top_k: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    if let Some(k) = top_k {
        order.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()));
        order.truncate(k);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::Method;

    #[test]
    fn top_k_keeps_the_largest_magnitudes_first() {
        let values = [0.1, -0.5, 0.3, 0.5, 0.0];
        assert_eq!(top_k_order(&values, None), vec![0, 1, 2, 3, 4]);
        assert_eq!(top_k_order(&values, Some(3)), vec![1, 3, 2]);
        assert_eq!(top_k_order(&values, Some(10)).len(), 5);
    }

    #[test]
    fn explanations_serialize_with_names() {
        let e = Explanation {
            class: Some(1),
            output: Output::Margin,
            value: 2.0,
            base_value: 0.5,
            attributions: vec![1.0, 0.25, 0.25],
            method: Method::Tree,
            residual: 0.0,
            permutations: None,
        };
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let labels: Vec<String> = ["no", "yes"].iter().map(|s| s.to_string()).collect();
        let json = serde_json::to_value(ExplanationJson {
            explanation: &e,
            feature_names: &names,
            class_labels: &labels,
            top_k: Some(2),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"class": "yes", "output": "margin", "value": 2.0,
                "base_value": 0.5, "attributions": {"a": 1.0, "b": 0.25}, "method": "tree",
                "residual": 0.0})
        );
        let sampled = Explanation {
            class: None,
            output: Output::Value,
            method: Method::Permutation,
            permutations: Some(10),
            ..e
        };
        let json = serde_json::to_value(ExplanationJson {
            explanation: &sampled,
            feature_names: &names,
            class_labels: &[],
            top_k: None,
        })
        .unwrap();
        assert_eq!(json["permutations"], 10);
        assert_eq!(json["output"], "value");
        assert!(json.get("class").is_none());
        assert_eq!(json["attributions"].as_object().unwrap().len(), 3);
    }
}
