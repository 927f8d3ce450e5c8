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
use crate::batching::Batch;
use crate::features::{rows_for, FeatureStore, TraceContext};
use crate::input::typed::parse_tensor_rows;
use crate::input::{
    parse_request, ExplainOptions, InferenceRequest, InputError, RequestInput, INLINE_PARSE_BYTES,
};
use crate::model::infer::{batch_rows, check_inputs, NamedTensor};
use crate::model::{ModelOutput, Rows};
use crate::monitor::drift::DriftHandle;
use crate::telemetry::metrics;
use crate::telemetry::otel::{feature_lookup_span, inference_span, traceparent_of};
use crate::telemetry::timing::InferenceTiming;

/// Runs `parse` over a body of `weight` JSON-equivalent bytes
/// ([`crate::input::parse_weight`]): inline when small, on the blocking pool when large.
pub async fn parse_off_runtime<T, F>(weight: usize, parse: F) -> Result<T, ServingError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, InputError> + Send + 'static,
{
    if weight <= INLINE_PARSE_BYTES {
        return Ok(parse()?);
    }
    tokio::task::spawn_blocking(parse)
        .await
        .map_err(|e| ServingError::TaskFailed(format!("parsing task failed: {e}")))?
        .map_err(ServingError::from)
}

/// Parses a rows-form model's `/predict` or `/explain` body, taking at most `max_rows` rows
/// (a tensors model's goes through [`parse_tensor_request`]).
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

/// What one inference call gives back: a [`ModelOutput`] for the rows form, the output
/// tensors for a tensors model.
pub struct Inferred<O = ModelOutput> {
    /// The model's output.
    pub output: O,
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
    // The batcher takes the rows into its merged buffer; a copy is kept only for drift.
    let kept = keep_rows.then(|| rows.clone());
    let (output, timing) = run_on_executor(model, rows).await?;
    Ok(Inferred {
        output,
        rows: kept,
        timing,
    })
}

/// Runs a tensors model on named `inputs` (a V2 or gRPC request's): checked against the
/// signature first, so a bad input is the client's error with its name, then the model's
/// executor, with the same span, queue and inference metrics as [`infer`].
pub async fn infer_tensors(
    model: &ServedModel,
    inputs: Vec<NamedTensor>,
    max_rows: usize,
) -> Result<Inferred<Vec<NamedTensor>>, ServingError> {
    check_inputs(&model.signature, &inputs)
        .map_err(|e| InputError::InvalidTensor(e.to_string()))?;
    let batched = |name: &str| {
        model
            .signature
            .input(name)
            .and_then(|spec| spec.shape.first())
            .is_some_and(|d| d.fixed().is_none())
    };
    if let Some(rows) = inputs
        .iter()
        .filter(|i| batched(&i.name))
        .filter_map(|i| i.tensor.batch_size())
        .find(|&rows| rows > max_rows)
    {
        return Err(InputError::TooManyTensorRows {
            rows,
            limit: max_rows,
        }
        .into());
    }
    let (output, timing) = run_on_executor(model, inputs).await?;
    Ok(Inferred {
        output,
        rows: None,
        timing,
    })
}

/// A tensors model's `/predict`-shaped body (see [`parse_tensor_rows`]), parsed off the async
/// workers when large.
pub async fn parse_tensor_request(
    body: Bytes,
    model: &Arc<ServedModel>,
    max_rows: usize,
) -> Result<(Vec<NamedTensor>, ExplainOptions), ServingError> {
    let parsing = model.clone();
    parse_off_runtime(body.len(), move || {
        parse_tensor_rows(&body, &parsing.signature, max_rows)
    })
    .await
}

/// `/predict` refuses `/explain`'s options by name rather than ignoring them.
fn only_for_explain(options: &ExplainOptions) -> Result<(), ServingError> {
    match options.first_given() {
        Some(field) => Err(InputError::InvalidField {
            field,
            reason: "applies to /explain only".into(),
        }
        .into()),
        None => Ok(()),
    }
}

/// `/predict`'s pipeline for a tensors model: its rows (objects keyed by input name) parsed
/// into one tensor per input, then [`infer_tensors`]. Returns the outputs and the row count.
pub async fn predict_tensors(
    model: &Arc<ServedModel>,
    body: Bytes,
    max_rows: usize,
) -> Result<(Inferred<Vec<NamedTensor>>, usize), ServingError> {
    let (inputs, explain) = parse_tensor_request(body, model, max_rows).await?;
    only_for_explain(&explain)?;
    let rows = batch_rows(&inputs);
    Ok((infer_tensors(model, inputs, max_rows).await?, rows))
}

/// The one inference step: `work` through the model's executor in an `inference` span (a
/// child of the request's), with the queue metric while it waits and the timing recorded.
async fn run_on_executor<W: Batch>(
    model: &ServedModel,
    work: W,
) -> Result<(W::Output, InferenceTiming), ServingError> {
    let (name, version) = (model.entry.name.as_str(), model.entry.version.as_str());
    let span = inference_span(name, version, work.rows());
    let mut queued = metrics::inference_queued(name, version);
    let result = crate::batching::infer(&model.executor, &model.model, work)
        .instrument(span.clone())
        .await;
    queued.started();
    let inferred = result?;
    let (queue, inference) = (inferred.queue_time, inferred.inference_time);
    metrics::record_inference(name, version, queue);
    span.record("queue_ms", queue.as_secs_f64() * 1000.0);
    span.record("inference_ms", inference.as_secs_f64() * 1000.0);
    Ok((inferred.output, InferenceTiming { queue, inference }))
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
    only_for_explain(&request.explain)?;
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
