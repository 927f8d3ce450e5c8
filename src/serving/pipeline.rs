//! The inference pipeline every route shares: parse (off the async workers when the body is
//! large) → rows (entity ids looked up in a `feature_lookup` span) → the model's executor (in
//! an `inference` span, with the queue and inference metrics) → the answer with its timing.
//! `/predict` calls [`predict`]; `/v2` and gRPC, whose tensors are parsed by their own
//! decoders, call [`parse_off_runtime`] and [`infer`]; `/explain` has its own pipeline in
//! [`super::explanation`] built from the same steps.

use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

use super::live::Routed;
use super::{ServedModel, ServingError};
use crate::features::{rows_for, FeatureStore, TraceContext};
use crate::input::{parse_request, InferenceRequest, InputError, RequestInput};
use crate::model::{ModelOutput, Rows};
use crate::monitor::drift::DriftHandle;
use crate::telemetry::metrics;
use crate::telemetry::otel::{feature_lookup_span, inference_span, traceparent_of};
use crate::telemetry::timing::InferenceTiming;

/// Bodies up to this size are parsed on the async worker (tens of microseconds); larger ones
/// on the blocking pool, so a burst of megabyte bodies cannot starve health probes.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Runs `parse` over a body of `body_len` bytes: inline when small, on the blocking pool when
/// large.
pub async fn parse_off_runtime<T, F>(body_len: usize, parse: F) -> Result<T, ServingError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, InputError> + Send + 'static,
{
    if body_len <= INLINE_PARSE_BYTES {
        return Ok(parse()?);
    }
    tokio::task::spawn_blocking(parse)
        .await
        .map_err(|e| ServingError::TaskFailed(format!("parsing task failed: {e}")))?
        .map_err(ServingError::from)
}

/// Parses a `/predict` or `/explain` body for `model`, taking at most `max_rows` rows.
pub async fn parse_rows_request(
    body: Bytes,
    model: &Arc<ServedModel>,
    max_rows: usize,
) -> Result<InferenceRequest, ServingError> {
    let model = model.clone();
    parse_off_runtime(body.len(), move || parse_request(&body, &model, max_rows)).await
}

/// The request's rows: inline ones as given, entity ids through the feature store inside a
/// `feature_lookup` span. When spans are exported, the store is told that span as its parent,
/// so its own spans nest under this request's.
pub async fn rows_of(
    store: &FeatureStore,
    input: RequestInput,
    model: &ServedModel,
    mut trace: TraceContext,
) -> Result<Rows, ServingError> {
    let lookup = match &input {
        RequestInput::EntityIds(ids) => feature_lookup_span(ids.len()),
        RequestInput::Rows(_) => tracing::Span::none(),
    };
    if let Some(traceparent) = traceparent_of(&lookup) {
        trace.traceparent = Some(traceparent);
    }
    Ok(rows_for(store, input, model, &trace)
        .instrument(lookup)
        .await?)
}

/// What one inference call gives back.
pub struct Inferred {
    /// The model's output.
    pub output: ModelOutput,
    /// The input rows, when asked for (drift monitoring takes them after the response).
    pub rows: Option<Rows>,
    /// Queue wait and inference time, for the timing headers.
    pub timing: InferenceTiming,
}

/// Runs `rows` through the model's executor (per request on the blocking pool, or merged with
/// concurrent requests by the dynamic batcher), so a slow model never stalls the async workers
/// that answer health probes and parse other requests. The one inference step of every route:
/// it records the queue and inference metrics and runs in an `inference` span, a child of the
/// request's. With `keep_rows`, a copy of the rows comes back for drift monitoring.
pub async fn infer(
    model: &ServedModel,
    rows: Rows,
    keep_rows: bool,
) -> Result<Inferred, ServingError> {
    let (name, version) = (model.entry.name.as_str(), model.entry.version.as_str());
    let span = inference_span(name, version, rows.n_rows);
    // The batcher takes the rows into its merged buffer; a copy is kept only for drift.
    let kept = keep_rows.then(|| rows.clone());
    let mut queued = metrics::inference_queued(name, version);
    let result = crate::batching::infer(&model.executor, &model.model, rows)
        .instrument(span.clone())
        .await;
    queued.started();
    let inferred = result?;
    let timing = InferenceTiming {
        queue: inferred.queue_time,
        inference: inferred.inference_time,
    };
    metrics::record_inference(name, version, timing.queue);
    span.record("queue_ms", timing.queue.as_secs_f64() * 1000.0);
    span.record("inference_ms", timing.inference.as_secs_f64() * 1000.0);
    Ok(Inferred {
        output: inferred.output,
        rows: kept,
        timing,
    })
}

/// A `/predict` answer before it is shaped: the output, the entity ids it echoes and where the
/// time went.
pub struct Predicted {
    /// One prediction per row, in request order.
    pub output: ModelOutput,
    /// The request's `entity_ids`, when it gave them instead of rows.
    pub entity_ids: Option<Vec<String>>,
    /// Queue wait and inference time.
    pub timing: InferenceTiming,
    /// The rows, kept when drift monitoring runs or a shadow takes a copy.
    rows: Option<Rows>,
}

impl Predicted {
    /// Hands a copy to the shadow version, if the request has one, and the rows and output
    /// to drift monitoring (neither waits); call it once the response is shaped.
    pub fn after_response(mut self, routed: &Routed, drift: Option<&DriftHandle>) {
        if routed.shadow.is_some() {
            // Drift needs the rows too: the shadow gets a copy then.
            let rows = match drift {
                Some(_) => self.rows.clone(),
                None => self.rows.take(),
            };
            routed.copy_to_shadow(rows, &self.output);
        }
        if let (Some(drift), Some(rows)) = (drift, self.rows) {
            let entry = &routed.model.entry;
            drift.observe(&entry.name, &entry.version, rows, self.output);
        }
    }
}

/// `/predict`'s pipeline: parse the body, refuse `/explain`'s options, turn entity ids into
/// rows, infer, and count the predictions. Rows are kept with `keep_rows` (for drift
/// monitoring, or a shadow's copy).
pub async fn predict(
    model: &Arc<ServedModel>,
    body: Bytes,
    store: &FeatureStore,
    trace: TraceContext,
    max_rows: usize,
    keep_rows: bool,
) -> Result<Predicted, ServingError> {
    let request = parse_rows_request(body, model, max_rows).await?;
    if let Some(field) = request.explain.first_given() {
        return Err(InputError::InvalidField {
            field,
            reason: "applies to /explain only".into(),
        }
        .into());
    }
    let entity_ids = match &request.input {
        RequestInput::EntityIds(ids) => Some(ids.clone()),
        RequestInput::Rows(_) => None,
    };
    let rows = rows_of(store, request.input, model, trace).await?;
    let Inferred {
        output,
        rows,
        timing,
    } = infer(model, rows, keep_rows).await?;
    metrics::record_predictions(&model.entry, &output);
    Ok(Predicted {
        output,
        entity_ids,
        timing,
        rows,
    })
}
