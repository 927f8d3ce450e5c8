//! `/explain`'s pipeline: parse and check the request (errors come back before any work), turn
//! it into rows exactly as `/predict` does (entity ids through the feature store; a tensors
//! model's rows into its input tensors, explained column by column), wait for an
//! explanation slot without holding a thread, and compute on the blocking pool. Dropping the
//! returned future (the client went away, the request timed out) cancels the computation
//! between model batches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::pipeline::{parse_rows_request, parse_tensor_request, rows_of};
use super::{ServedModel, ServingError};
use crate::explain::{self, Cancel, ExplainLimits, ExplainQuery, Explanation, Output};
use crate::features::{FeatureStore, TraceContext};
use crate::input::{ExplainOptions, InputError, OutputSpace, RequestInput};
use crate::model::infer::{batch_rows, NamedTensor};
use crate::model::Rows;
use crate::telemetry::metrics;
use crate::telemetry::otel::explain_span;
use crate::telemetry::timing::InferenceTiming;

/// What an explanation call needs of the server besides the model.
pub struct ExplainContext<'a> {
    /// Where entity ids are looked up.
    pub store: &'a FeatureStore,
    /// The explanation slots (running and waiting, both bounded).
    pub slots: &'a ExplainSlots,
    /// `/explain`'s rows, cost and concurrency limits.
    pub limits: &'a ExplainLimits,
    /// The server's request-row limit (`/explain` takes the tighter of the two).
    pub max_request_rows: usize,
}

/// An explanation answer before it is shaped.
pub struct Explained {
    /// One per row, in request order.
    pub explanations: Vec<Explanation>,
    /// The request's `entity_ids`, when it gave them instead of rows.
    pub entity_ids: Option<Vec<String>>,
    /// The request's options (`top_k` shapes the answer).
    pub options: ExplainOptions,
    /// Wait for a slot, and computing time.
    pub timing: InferenceTiming,
}

/// Explains each row of a `/predict`-shaped body; see the module docs for the steps.
pub async fn explain(
    context: &ExplainContext<'_>,
    model: &Arc<ServedModel>,
    body: Bytes,
    trace: TraceContext,
) -> Result<Explained, ServingError> {
    let limits = context.limits;
    let max_request_rows = context.max_request_rows;
    let max_rows = max_request_rows.min(limits.max_rows);
    let parsed = match model.is_tensors() {
        true => parse_tensor_request(body, model, max_rows)
            .await
            .map(|(inputs, options)| (Subject::Tensors(inputs), options)),
        false => parse_rows_request(body, model, max_rows)
            .await
            .map(|request| (Subject::Request(request.input), request.explain)),
    };
    let (subject, options) = parsed.map_err(|e| match e {
        ServingError::Input(InputError::TooManyRows { limit }) if limit < max_request_rows => {
            ServingError::ExplainTooManyRows { limit }
        }
        other => other,
    })?;
    let (n_rows, entity_ids) = match &subject {
        Subject::Request(RequestInput::Rows(rows)) => (rows.n_rows, None),
        Subject::Request(RequestInput::EntityIds(ids)) => (ids.len(), Some(ids.clone())),
        Subject::Tensors(inputs) => (batch_rows(inputs), None),
    };
    let query = ExplainQuery {
        class: options.class.clone(),
        output: options.output.map(|o| match o {
            OutputSpace::Probability => Output::Probability,
            OutputSpace::Margin => Output::Margin,
        }),
    };
    // Checked before any lookup: a refused explanation costs the feature store nothing.
    let plan = explain::plan(model, model.explain.as_deref(), &query, n_rows, limits)?;
    let admitted = context.slots.admit()?;
    let work = match subject {
        Subject::Request(input) => Work::Rows(rows_of(context.store, input, model, trace).await?),
        Subject::Tensors(inputs) => Work::Tensors(inputs),
    };

    let permit = context
        .slots
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ServingError::ShuttingDown)?;
    let cancel = Cancel::default();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let task_model = model.clone();
    let limits = *limits;
    let method = plan.method.name();
    let span = explain_span(&model.entry.name, &model.entry.version, method, n_rows);
    let queued_at = Instant::now();
    let (explanations, timing) = tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        // The slot lives as long as the work, even if the client has gone.
        let _slot = (permit, admitted);
        let started = Instant::now();
        let assets = task_model.explain.as_deref();
        let result = match &work {
            Work::Rows(rows) => {
                explain::explain(&task_model, assets, rows, &plan, &limits, &cancel)
            }
            Work::Tensors(inputs) => {
                explain::explain_columns(&task_model, assets, inputs, &plan, &limits, &cancel)
            }
        };
        let timing = InferenceTiming {
            queue: started - queued_at,
            inference: started.elapsed(),
        };
        if let Err(explain::ExplainError::Cancelled) = result {
            tracing::info!(
                model = %task_model.entry.name,
                rows = n_rows,
                "explanation cancelled: the client went away"
            );
        }
        result.map(|explanations| (explanations, timing))
    })
    .await
    .map_err(|e| ServingError::TaskFailed(format!("explanation task failed: {e}")))??;
    metrics::record_explain(
        &model.entry.name,
        &model.entry.version,
        method,
        timing.inference,
    );
    Ok(Explained {
        explanations,
        entity_ids,
        options,
        timing,
    })
}

/// What a call asks to explain: the rows or entity ids of a rows-form request, or a tensors
/// model's inputs.
enum Subject {
    Request(RequestInput),
    Tensors(Vec<NamedTensor>),
}

/// What is explained, once entity ids are looked up.
enum Work {
    Rows(Rows),
    Tensors(Vec<NamedTensor>),
}

/// The explanation slots: `concurrency` permits to compute, and a bound on how many
/// explanations may be admitted (computing or waiting) before more are shed.
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
    fn admit(&self) -> Result<Admitted, ServingError> {
        let position = self.admitted.fetch_add(1, Ordering::Relaxed) + 1;
        let admitted = Admitted(self.admitted.clone());
        if position > self.running + self.queued {
            return Err(ServingError::ExplainOverloaded {
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

/// Cancels the computation when the pipeline's future is dropped (the client went away).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
