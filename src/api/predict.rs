//! `POST /predict` and its per-model forms: select the version, call
//! [`pipeline::predict`], shape the answer.

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use super::answer::{answered_by, counted_against, json_response, ModelRef};
use super::error::ApiError;
use super::openapi::{InferenceErrors, ModelVersionPath, PredictRequest, Prediction};
use super::select::RowsCall;
use super::AppState;
use crate::model::{Predictions, TensorPredictions};
use crate::serving::pipeline;

/// `POST /predict`, `/models/{name}/predict` and `/models/{name}/versions/{version}/predict`:
/// one prediction per row from the version the path selects (the manifest's default model,
/// and the version its split picks, when the path names neither; `x-ferrum-version` says
/// which). The OpenAPI document lists each form (see [`super::openapi`]).
#[utoipa::path(
    post,
    path = "/models/{name}/versions/{version}/predict",
    tag = "inference",
    params(ModelVersionPath),
    request_body(content = PredictRequest, example = super::openapi::named_model_example),
    responses(
        (status = 200, description = "One prediction per row, from the model version named in `model`", body = PredictResponse),
        InferenceErrors,
    )
)]
pub async fn predict(
    State(state): State<AppState>,
    RowsCall {
        routed,
        body,
        trace,
    }: RowsCall,
) -> Result<Response, ApiError> {
    let model = &routed.model;
    if model.is_tensors() {
        let (inferred, rows) =
            pipeline::predict_tensors(model, body, state.limits.max_request_rows)
                .await
                .map_err(counted_against(model))?;
        let mut response = json_response(&TensorPredictResponse {
            model: ModelRef::of(model),
            predictions: TensorPredictions {
                class_names: &model.entry.class_labels,
                outputs: &inferred.output,
                task: &model.signature.task,
                rows,
            },
        });
        answered_by(model, &inferred.timing, &mut response);
        return Ok(response);
    }
    let store = state.feature_store();
    let keep_rows = state.drift().is_some() || routed.shadow.is_some();
    let predicted = pipeline::predict(
        model,
        body,
        &store,
        trace,
        state.limits.max_request_rows,
        keep_rows,
    )
    .await
    .map_err(counted_against(model))?;
    let mut response = json_response(&PredictResponse {
        model: ModelRef::of(model),
        entity_ids: predicted.entity_ids.as_deref(),
        predictions: Predictions {
            output: &predicted.output,
            class_labels: &model.entry.class_labels,
        },
    });
    answered_by(model, &predicted.timing, &mut response);
    predicted.after_response(&routed, state.drift());
    Ok(response)
}

/// A `/predict` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PredictResponse<'a> {
    model: ModelRef<'a>,
    /// Echo of `entity_ids`, parallel to `predictions` (absent for inline `instances`), so
    /// prediction objects stay exactly the training log's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    entity_ids: Option<&'a [String]>,
    /// One per row, in request order.
    #[schema(value_type = Vec<Prediction>)]
    predictions: Predictions<'a>,
}

/// A tensors model's `/predict` answer: one prediction per row (see [`TensorPredictions`]).
#[derive(Serialize)]
struct TensorPredictResponse<'a> {
    model: ModelRef<'a>,
    predictions: TensorPredictions<'a>,
}
