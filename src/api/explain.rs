//! `POST /explain` and its per-model forms: SHAP attributions for each row of a `/predict`
//! body. The handler selects the version, calls [`explanation::explain`] (parse, check, look
//! up, wait for a slot, compute off the async workers) and shapes the answer: attributions
//! keyed by feature name, the class by label.

use axum::extract::State;
use axum::response::Response;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::answer::{answered_by, json_response, ModelRef};
use super::error::ApiError;
use super::openapi::{ExplainRequest, InferenceErrors, ModelVersionPath};
use super::select::RowsCall;
use super::AppState;
use crate::explain::Explanation;
use crate::serving::explanation::{self, ExplainContext};

/// `POST /explain`, `/models/{name}/explain` and `/models/{name}/versions/{version}/explain`:
/// one explanation per row from the version the path selects. The OpenAPI document lists each
/// form (see [`super::openapi`]).
#[utoipa::path(
    post,
    path = "/models/{name}/versions/{version}/explain",
    tag = "inference",
    params(ModelVersionPath),
    request_body(content = ExplainRequest, example = super::openapi::named_model_example),
    responses(
        (status = 200, description = "One explanation per row, from the model version named in `model`", body = ExplainResponse),
        InferenceErrors,
    )
)]
pub async fn explain(
    State(state): State<AppState>,
    RowsCall {
        routed,
        body,
        trace,
    }: RowsCall,
) -> Result<Response, ApiError> {
    let model = &routed.model;
    let store = state.feature_store();
    let context = ExplainContext {
        store: &store,
        slots: &state.explain_slots,
        limits: &state.limits.explain,
        max_request_rows: state.limits.max_request_rows,
    };
    let explained = explanation::explain(&context, model, body, trace).await?;
    let entry = &model.entry;
    let feature_names = match &model.explain {
        Some(assets) => assets.feature_names(entry),
        None => &entry.feature_names,
    };
    let mut response = json_response(&ExplainResponse {
        model: ModelRef::of(model),
        entity_ids: explained.entity_ids.as_deref(),
        explanations: explained
            .explanations
            .iter()
            .map(|explanation| ExplanationJson {
                explanation,
                feature_names,
                class_labels: &entry.class_labels,
                top_k: explained.options.top_k,
            })
            .collect(),
    });
    answered_by(model, &explained.timing, &mut response);
    Ok(response)
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
        let order = top_k_order(&e.attributions, self.top_k);
        let by_name = |values| ByName {
            values,
            names: self.feature_names,
            order: &order,
        };
        map.serialize_entry("attributions", &by_name(&e.attributions))?;
        map.serialize_entry("method", &e.method)?;
        map.serialize_entry("residual", &e.residual)?;
        if let Some(permutations) = e.permutations {
            map.serialize_entry("permutations", &permutations)?;
        }
        if let Some(errors) = &e.standard_errors {
            map.serialize_entry("standard_errors", &by_name(errors))?;
        }
        map.end()
    }
}

/// Per-feature numbers keyed by feature name, the features in `order` (the attributions'
/// order, so an attribution and its standard error list the same features).
struct ByName<'a> {
    values: &'a [f64],
    names: &'a [String],
    order: &'a [usize],
}

impl Serialize for ByName<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.order.len()))?;
        for &i in self.order {
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
    use crate::explain::{Method, Output};

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
            standard_errors: None,
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
            standard_errors: Some(vec![0.5, 0.125, 0.0]),
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
        assert_eq!(
            json["standard_errors"],
            serde_json::json!({"a": 0.5, "b": 0.125, "c": 0.0})
        );
        // top_k keeps the same features in both maps.
        let json = serde_json::to_value(ExplanationJson {
            explanation: &sampled,
            feature_names: &names,
            class_labels: &[],
            top_k: Some(1),
        })
        .unwrap();
        assert_eq!(json["attributions"], serde_json::json!({"a": 1.0}));
        assert_eq!(json["standard_errors"], serde_json::json!({"a": 0.5}));
    }
}
