//! Where every inference goes: [`infer`] is the one entry point `/predict`, `/v2/.../infer` (and
//! later `/explain`) call. Per model version it either runs each request on its own (`direct`)
//! or merges concurrent requests into one ONNX Runtime call (`batched`, the dynamic batcher in
//! [`scheduler`]). Both modes bound the number of waiting requests and answer overflow at once
//! with `overloaded` (503 + `Retry-After`), so a burst never builds an unbounded backlog.
//!
//! Model work never runs on the async workers: `direct` uses tokio's blocking pool, `batched`
//! its own OS threads (one per session, so every core works).
//!
//! The executors record the per-call inference metrics (duration, rows, success or failure)
//! through [`record_call`], once per ONNX Runtime call: here, not in the API, is the only
//! place that knows how many requests one call merged.
//!
//! May import `model` and `telemetry`; never `serving` or `api` (errors are its own
//! [`InferError`] / [`SubmitError`], mapped to statuses above).

pub mod scheduler;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::infer::NamedTensor;
use crate::model::tensor::TypedTensor;
use crate::model::{InferenceError, LoadedModel, ModelOutput, Rows};
use crate::telemetry::metrics::InferenceCalls;
pub use scheduler::{Scheduler, SchedulerConfig, SubmitError};

/// Whether concurrent requests for a model are merged into one ONNX Runtime call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchingChoice {
    /// Each model gets the mode measured faster for it (see docs/benchmarks.md).
    Auto,
    /// The dynamic batcher for every model.
    On,
    /// One ONNX Runtime call per request for every model.
    Off,
}

/// Why a request got no inference from its executor. The API maps each to a status: a full
/// queue and a shutdown are load shed with 503, the rest is a server error.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The model's queue (direct or batched) holds `max_queue_depth` requests already.
    #[error("the model's inference queue is full (MAX_QUEUE_DEPTH); retry shortly")]
    QueueFull,
    /// The batcher no longer takes requests: the server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// ONNX Runtime failed on the rows.
    #[error(transparent)]
    Model(#[from] InferenceError),
    /// The call was lost before it answered (its thread or the batcher went away).
    #[error("{0}")]
    Lost(&'static str),
}

impl From<SubmitError> for InferError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Full => InferError::QueueFull,
            SubmitError::Closed => InferError::ShuttingDown,
        }
    }
}

/// How a model version runs its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One ONNX Runtime call per request, on the blocking pool.
    Direct,
    /// Concurrent requests merged by the dynamic batcher.
    Batched,
}

/// The batching settings from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingConfig {
    /// Most rows merged into one ONNX Runtime call (a larger single request still runs alone).
    pub max_batch_rows: usize,
    /// How long a batch may wait for more requests, and only while another batch is running.
    pub max_queue_delay: Duration,
    /// Most requests waiting per model version; more are refused with `overloaded`.
    pub max_queue_depth: usize,
    /// Scheduler threads per model version (one per ONNX Runtime session).
    pub threads: usize,
}

/// What one inference produced, with where its time went (for metrics and timing headers):
/// a [`ModelOutput`] for the rows form, every output tensor for a tensors model.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred<O = ModelOutput> {
    /// This request's rows of the model output, in request order.
    pub output: O,
    /// From submission until its ONNX Runtime call started.
    pub queue_time: Duration,
    /// The ONNX Runtime call that computed it (shared with the rest of its batch).
    pub inference_time: Duration,
    /// Rows in that call: this request's alone in `direct` mode, the whole batch in `batched`.
    pub batch_rows: usize,
}

/// How one model version executes; built once at load time (see [`executor_for`]) and held
/// beside the model by the serving layer.
pub enum Executor {
    /// Per-request inference on the blocking pool, at most `max_queue_depth` waiting or running.
    Direct {
        in_flight: AtomicUsize,
        max_queue_depth: usize,
        calls: InferenceCalls,
    },
    /// The dynamic batcher, over the rows form's row matrices.
    Batched(Scheduler<Rows>),
    /// The dynamic batcher, over a tensors model's named inputs.
    BatchedTensors(Scheduler<Vec<NamedTensor>>),
}

impl Executor {
    /// An executor for `model` in `mode`. The batcher's threads hold only a weak reference, so
    /// dropping the model stops them.
    pub fn new(model: &Arc<LoadedModel>, mode: Mode, config: BatchingConfig) -> Executor {
        let calls = model_calls(model);
        match mode {
            Mode::Direct => Executor::Direct {
                in_flight: AtomicUsize::new(0),
                max_queue_depth: config.max_queue_depth,
                calls,
            },
            Mode::Batched => {
                let weak: Weak<LoadedModel> = Arc::downgrade(model);
                let name = format!("{}-v{}", model.entry.name, model.entry.version);
                let config = SchedulerConfig {
                    max_batch_rows: config.max_batch_rows,
                    max_queue_delay: config.max_queue_delay,
                    max_queue_depth: config.max_queue_depth,
                    threads: config.threads,
                };
                if model.is_tensors() {
                    Executor::BatchedTensors(Scheduler::start(&name, config, calls, runner(weak)))
                } else {
                    Executor::Batched(Scheduler::start(&name, config, calls, runner(weak)))
                }
            }
        }
    }

    /// Which mode this is.
    pub fn mode(&self) -> Mode {
        match self {
            Executor::Direct { .. } => Mode::Direct,
            Executor::Batched(_) | Executor::BatchedTensors(_) => Mode::Batched,
        }
    }
}

/// A batcher's runner: `work` on the model while it is loaded (the batcher holds it weakly).
fn runner<W: Work>(
    weak: Weak<LoadedModel>,
) -> impl Fn(&W) -> Result<W::Output, InferenceError> + Send + Sync + 'static {
    move |work| match weak.upgrade() {
        Some(model) => work.run(&model),
        None => Err(InferenceError::Runtime("the model was unloaded".into())),
    }
}

/// Runs `model` on `work` (rows for the rows form, named inputs checked against the signature
/// for a tensors model) through `executor`, the one built for it: per request on the blocking
/// pool, or merged with concurrent requests by the batcher. Returns this request's outputs, in
/// its row order, with queue and inference times.
pub async fn infer<W: Batch>(
    executor: &Executor,
    model: &Arc<LoadedModel>,
    work: W,
) -> Result<Inferred<W::Output>, InferError> {
    let submitted = Instant::now();
    match executor {
        Executor::Direct {
            in_flight,
            max_queue_depth,
            calls,
        } => {
            let _slot = Slot::take(in_flight, *max_queue_depth).ok_or(InferError::QueueFull)?;
            run_blocking(model.clone(), work, submitted, calls.clone()).await
        }
        batching => match W::scheduler(batching) {
            Some(scheduler) => batched(scheduler, work).await,
            None => Err(InferError::Lost(
                "a request of one form was sent to a batcher of the other",
            )),
        },
    }
}

/// Queues `work` on the batcher and waits for its share of the batch's output.
async fn batched<W: Batch>(
    scheduler: &Scheduler<W>,
    work: W,
) -> Result<Inferred<W::Output>, InferError> {
    match scheduler.submit(work)?.await {
        Ok(result) => Ok(result?),
        Err(_) => Err(InferError::Lost("the batcher stopped")),
    }
}

/// What one ONNX Runtime call carries: rows-form rows or a tensors model's named inputs.
pub trait Work: Send + 'static {
    /// What the call gives back.
    type Output: Send + 'static;
    /// Rows in the call (its batch dimension), for the metrics.
    fn rows(&self) -> usize;
    /// Rows in an output, when they must equal the call's (to be split among requests).
    fn output_rows(output: &Self::Output) -> Option<usize>;
    /// Makes the call. Blocking.
    fn run(&self, model: &LoadedModel) -> Result<Self::Output, InferenceError>;
}

/// Work the batcher can merge: several requests joined into one call, and the call's output cut
/// back into each request's rows, in order.
pub trait Batch: Work + Sized {
    /// Room for merged batches that a scheduler thread keeps between calls.
    type Scratch: Default;
    /// Joins `parts` (in order) into one call's work.
    fn merge<'a>(parts: impl Iterator<Item = &'a Self>, scratch: &mut Self::Scratch) -> Self;
    /// Gives the merged work's room back for the next batch.
    fn recycle(self, scratch: &mut Self::Scratch);
    /// Rows `start..end` of a merged call's output.
    fn slice(
        output: &Self::Output,
        start: usize,
        end: usize,
    ) -> Result<Self::Output, InferenceError>;
    /// The batcher of `executor` that takes this work, if it is one.
    fn scheduler(executor: &Executor) -> Option<&Scheduler<Self>>;
    /// True when two outputs are the same to the bit: what merging must not change.
    fn same_bits(a: &Self::Output, b: &Self::Output) -> bool;
}

impl Batch for Rows {
    /// One buffer per thread: merging the rows form's small requests allocates nothing.
    type Scratch = Vec<f32>;
    fn merge<'a>(parts: impl Iterator<Item = &'a Rows>, buffer: &mut Vec<f32>) -> Rows {
        buffer.clear();
        let mut n_cols = 1;
        for rows in parts {
            n_cols = rows.n_cols;
            buffer.extend_from_slice(&rows.data);
        }
        Rows::new(std::mem::take(buffer), n_cols)
    }
    fn recycle(self, buffer: &mut Vec<f32>) {
        *buffer = self.data;
    }
    fn slice(
        output: &ModelOutput,
        start: usize,
        end: usize,
    ) -> Result<ModelOutput, InferenceError> {
        Ok(slice_output(output, start, end))
    }
    fn scheduler(executor: &Executor) -> Option<&Scheduler<Rows>> {
        match executor {
            Executor::Batched(scheduler) => Some(scheduler),
            _ => None,
        }
    }
    fn same_bits(a: &ModelOutput, b: &ModelOutput) -> bool {
        a.same_bits(b)
    }
}

impl Batch for Vec<NamedTensor> {
    type Scratch = ();
    /// Each input concatenated along its batch dimension, by name (requests may list inputs in
    /// any order; each was checked to name every input once).
    fn merge<'a>(
        parts: impl Iterator<Item = &'a Vec<NamedTensor>>,
        _: &mut (),
    ) -> Vec<NamedTensor> {
        let parts: Vec<&Vec<NamedTensor>> = parts.collect();
        parts[0]
            .iter()
            .map(|input| {
                let tensors: Vec<&TypedTensor> = parts
                    .iter()
                    .filter_map(|part| part.iter().find(|t| t.name == input.name))
                    .map(|t| &t.tensor)
                    .collect();
                NamedTensor {
                    name: input.name.clone(),
                    tensor: TypedTensor::concat_batch(&tensors)
                        .expect("inputs checked against one signature concatenate"),
                }
            })
            .collect()
    }
    fn recycle(self, _: &mut ()) {}
    fn slice(
        outputs: &Vec<NamedTensor>,
        start: usize,
        end: usize,
    ) -> Result<Vec<NamedTensor>, InferenceError> {
        outputs
            .iter()
            .map(|output| {
                let tensor = output.tensor.slice_batch(start, end).map_err(|e| {
                    InferenceError::Output(format!("output '{}': {e}", output.name))
                })?;
                Ok(NamedTensor {
                    name: output.name.clone(),
                    tensor,
                })
            })
            .collect()
    }
    fn scheduler(executor: &Executor) -> Option<&Scheduler<Vec<NamedTensor>>> {
        match executor {
            Executor::BatchedTensors(scheduler) => Some(scheduler),
            _ => None,
        }
    }
    fn same_bits(a: &Vec<NamedTensor>, b: &Vec<NamedTensor>) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(a, b)| {
                a.name == b.name
                    && a.tensor.shape() == b.tensor.shape()
                    && a.tensor.element_type() == b.tensor.element_type()
                    && a.tensor.to_le_bytes() == b.tensor.to_le_bytes()
            })
    }
}

impl Work for Rows {
    type Output = ModelOutput;
    fn rows(&self) -> usize {
        self.n_rows
    }
    fn output_rows(output: &ModelOutput) -> Option<usize> {
        Some(output.len())
    }
    fn run(&self, model: &LoadedModel) -> Result<ModelOutput, InferenceError> {
        model.infer(self)
    }
}

impl Work for Vec<NamedTensor> {
    type Output = Vec<NamedTensor>;
    fn rows(&self) -> usize {
        crate::model::infer::batch_rows(self)
    }
    fn output_rows(_: &Vec<NamedTensor>) -> Option<usize> {
        // Outputs are the model's own: some declare no batch dimension, and none is split.
        None
    }
    fn run(&self, model: &LoadedModel) -> Result<Vec<NamedTensor>, InferenceError> {
        Ok(model.infer_tensors(self, || {})?)
    }
}

/// The per-call metrics of `model`'s name and version.
fn model_calls(model: &LoadedModel) -> InferenceCalls {
    InferenceCalls::new(&model.entry.name, &model.entry.version)
}

/// Makes one ONNX Runtime call, `call(work)`, and records it once in `calls`: its time, its
/// rows (every request merged into it) and success or a failure reason. An output with another
/// row count than `work` is a failure (`output_error`): it could not be split among requests.
/// Returns the outcome and the call's time.
pub(crate) fn record_call<W: Work>(
    calls: &InferenceCalls,
    work: &W,
    call: impl FnOnce(&W) -> Result<W::Output, InferenceError>,
) -> (Result<W::Output, InferenceError>, Duration) {
    let started = Instant::now();
    let rows = work.rows();
    let result = call(work).and_then(|output| match W::output_rows(&output) {
        Some(got) if got != rows => Err(InferenceError::Output(format!(
            "a call with {rows} rows gave {got} outputs"
        ))),
        _ => Ok(output),
    });
    let elapsed = started.elapsed();
    let failure = result.as_ref().err().map(|e| match e {
        InferenceError::Runtime(_) => "runtime_error",
        InferenceError::Output(_) => "output_error",
    });
    calls.record(rows, elapsed, failure);
    (result, elapsed)
}

/// A place among a direct-mode model's waiting or running requests, given back on drop (also
/// when the client goes away mid-request).
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(in_flight: &'a AtomicUsize, limit: usize) -> Option<Slot<'a>> {
        in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(in_flight))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request, one ONNX Runtime call, on the blocking pool. A client that went away while the
/// call waited for a thread is not computed for: its reply channel is closed by then.
async fn run_blocking<W: Work>(
    model: Arc<LoadedModel>,
    work: W,
    submitted: Instant,
    calls: InferenceCalls,
) -> Result<Inferred<W::Output>, InferError> {
    let (reply, result) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        if reply.is_closed() {
            return;
        }
        let queue_time = submitted.elapsed();
        let (output, inference_time) = record_call(&calls, &work, |work| {
            scheduler::catch_panic(|| work.run(&model))
        });
        let output = output.map(|output| Inferred {
            output,
            queue_time,
            inference_time,
            batch_rows: work.rows(),
        });
        let _ = reply.send(output);
    });
    match result.await {
        Ok(result) => Ok(result?),
        Err(_) => Err(InferError::Lost("the inference task failed")),
    }
}

/// Rows `start..end` of a model output (a batch's share for one request).
pub fn slice_output(output: &ModelOutput, start: usize, end: usize) -> ModelOutput {
    match output {
        ModelOutput::Classification {
            labels,
            probabilities,
            n_classes,
        } => ModelOutput::Classification {
            labels: labels[start..end].to_vec(),
            probabilities: probabilities[start * n_classes..end * n_classes].to_vec(),
            n_classes: *n_classes,
        },
        ModelOutput::Regression { values } => ModelOutput::Regression {
            values: values[start..end].to_vec(),
        },
    }
}

/// The executor for one model version: the mode `choice` asks for, or for `auto` the one
/// [`auto_mode`] picks for the model; direct, whatever the choice, for a model whose answers
/// [`batch_dependent_row`] finds depend on the batch. Blocking (auto measures, the batch
/// check runs the model): call it while loading.
pub fn executor_for(
    model: &Arc<LoadedModel>,
    choice: BatchingChoice,
    config: BatchingConfig,
) -> Executor {
    let (mode, why) = match choice {
        _ if model.is_tensors() && !model.signature.batched => (
            Mode::Direct,
            "a tensors model without a dynamic batch dimension on every input and output"
                .to_string(),
        ),
        BatchingChoice::On => (Mode::Batched, "--batching on".to_string()),
        BatchingChoice::Off => (Mode::Direct, "--batching off".to_string()),
        BatchingChoice::Auto => auto_mode(model),
    };
    let (mode, why) = match mode {
        Mode::Direct => (mode, why),
        Mode::Batched => match batch_dependent_row(model) {
            Ok(None) => (mode, why),
            Ok(Some(row)) => {
                let reason = format!(
                    "answers depend on the batch on this machine: probe row {row} alone differs in its bits from the same row in a {PROBE_ROWS}-row call, so requests are not merged and each gets the bits it gets alone (instead of {why})"
                );
                tracing::warn!(
                    model = %model.entry.name,
                    version = %model.entry.version,
                    row,
                    "model not batched: its answers depend on the batch"
                );
                (Mode::Direct, reason)
            }
            Err(error) => (
                mode,
                format!("{why} (merging not checked for changed bits: the probe inference failed: {error})"),
            ),
        },
    };
    let executor = Executor::new(model, mode, config);
    tracing::info!(
        model = %model.entry.name,
        version = %model.entry.version,
        mode = ?mode,
        why = %why,
        max_batch_rows = config.max_batch_rows,
        max_queue_delay_us = config.max_queue_delay.as_micros() as u64,
        max_queue_depth = config.max_queue_depth,
        threads = config.threads,
        "inference executor attached"
    );
    executor
}

/// Merging pays when an ONNX Runtime call costs much more than the rows in it: then `k`
/// single-row requests merged cost little more than one. `auto` measures this per model on the
/// machine it serves from (median of a few calls of 1 row and of [`PROBE_ROWS`] rows, during
/// start-up) and batches when one row alone costs at least [`AUTO_MIN_GAIN`] times its share of
/// a merged call. On the bundled models (trees and a linear model, ~8 µs a call of which nearly
/// all is per-call overhead) the gain measured ~4x and ~20x and `make bench` shows batching winning or tying
/// at every load (docs/benchmarks.md), so both run batched; a model whose compute grows with its
/// rows (a large network) gains nothing from merging and runs direct.
pub fn auto_mode(model: &LoadedModel) -> (Mode, String) {
    match per_row_gain(model) {
        Some(gain) if gain >= AUTO_MIN_GAIN => (
            Mode::Batched,
            format!("auto: one row alone costs {gain:.1}x its share of a {PROBE_ROWS}-row call"),
        ),
        Some(gain) => (
            Mode::Direct,
            format!("auto: merging saves little (one row alone costs {gain:.1}x its share of a {PROBE_ROWS}-row call)"),
        ),
        None => (Mode::Direct, "auto: the probe inference failed".into()),
    }
}

/// Rows in the merged probe call of [`auto_mode`] and [`batch_dependent_row`].
pub const PROBE_ROWS: usize = 32;

/// The first of [`PROBE_ROWS`] varied probe rows whose answer alone differs in any bit from its
/// share of one merged call, or `None` when merging changes nothing. ONNX Runtime may pick
/// another kernel for another batch size: on an AVX-512 CPU skl2onnx's LogisticRegression
/// gives a row alone class probabilities 1-2 ulp away from the same row in a batch. Merging
/// such a model would make a request's answer depend on which requests ran beside it, and
/// break the training log's bits, which are recorded one row per call. Blocking: it runs the
/// model `PROBE_ROWS + 1` times.
pub fn batch_dependent_row(model: &LoadedModel) -> Result<Option<usize>, InferenceError> {
    if model.is_tensors() {
        let probe = model.probe_inputs(PROBE_ROWS);
        let singles = (0..PROBE_ROWS)
            .map(|r| Vec::<NamedTensor>::slice(&probe, r, r + 1))
            .collect::<Result<Vec<_>, _>>()?;
        first_dependent_row(&singles, |work| work.run(model))
    } else {
        let probe = model.probe_rows(PROBE_ROWS);
        let singles: Vec<Rows> = (0..PROBE_ROWS)
            .map(|r| Rows::new(probe.row(r).to_vec(), probe.n_cols))
            .collect();
        first_dependent_row(&singles, |work| work.run(model))
    }
}

/// The first of `singles` whose output from `run` alone differs from its share of `run` on all
/// of them merged, as the batcher merges and splits.
fn first_dependent_row<W: Batch>(
    singles: &[W],
    run: impl Fn(&W) -> Result<W::Output, InferenceError>,
) -> Result<Option<usize>, InferenceError> {
    let merged = W::merge(singles.iter(), &mut W::Scratch::default());
    let together = run(&merged)?;
    for (r, single) in singles.iter().enumerate() {
        let share = W::slice(&together, r, r + 1)?;
        if !W::same_bits(&run(single)?, &share) {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// The least gain per row for which `auto` batches.
pub const AUTO_MIN_GAIN: f64 = 2.0;

/// Time of a 1-row call divided by the per-row time of a [`PROBE_ROWS`]-row call.
fn per_row_gain(model: &LoadedModel) -> Option<f64> {
    let width = model.n_features();
    let time = |n: usize| -> Option<f64> {
        let call: Box<dyn Fn() -> bool> = if model.is_tensors() {
            let inputs = model.zero_inputs(n);
            Box::new(move || model.infer_tensors(&inputs, || {}).is_ok())
        } else {
            let rows = Rows::new(vec![0.0; n * width], width);
            Box::new(move || model.infer(&rows).is_ok())
        };
        let mut samples = Vec::with_capacity(15);
        for _ in 0..15 {
            let started = Instant::now();
            call().then_some(())?;
            samples.push(started.elapsed().as_secs_f64());
        }
        samples.sort_by(f64::total_cmp);
        Some(samples[samples.len() / 2])
    };
    let one = time(1)?;
    let merged = time(PROBE_ROWS)? / PROBE_ROWS as f64;
    Some(one / merged.max(f64::MIN_POSITIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight one-row regressor requests of two features each.
    fn singles() -> Vec<Rows> {
        (0..8).map(|r| Rows::new(vec![r as f32, 0.5], 2)).collect()
    }

    /// A regressor summing each row's features, as a kernel that sums in another order for
    /// a one-row call would: `one_row_offset` added to the answer when the call has one row.
    fn summing(one_row_offset: f32) -> impl Fn(&Rows) -> Result<ModelOutput, InferenceError> {
        move |rows: &Rows| {
            let offset = if rows.n_rows == 1 {
                one_row_offset
            } else {
                0.0
            };
            let values = rows
                .data
                .chunks_exact(rows.n_cols)
                .map(|row| row.iter().sum::<f32>() + offset)
                .collect();
            Ok(ModelOutput::Regression { values })
        }
    }

    #[test]
    fn merging_that_changes_no_bit_is_found_batch_independent() {
        assert_eq!(first_dependent_row(&singles(), summing(0.0)).unwrap(), None);
    }

    #[test]
    fn an_answer_one_ulp_away_alone_makes_the_model_batch_dependent() {
        let one_ulp_of_half = 0.5 * f32::EPSILON;
        // 4, 8 and 2 absorb it (their ulp is larger); 0.5 shows it.
        let singles: Vec<Rows> = [4.0, 8.0, 0.5, 2.0]
            .into_iter()
            .map(|x| Rows::new(vec![x, 0.0], 2))
            .collect();
        assert_eq!(
            first_dependent_row(&singles, summing(one_ulp_of_half)).unwrap(),
            Some(2)
        );
    }

    #[test]
    fn minus_zero_is_not_zero_to_the_bit() {
        let zero = ModelOutput::Regression { values: vec![0.0] };
        let minus_zero = ModelOutput::Regression { values: vec![-0.0] };
        assert_eq!(zero, minus_zero);
        assert!(!Rows::same_bits(&zero, &minus_zero));
        let nan = ModelOutput::Regression {
            values: vec![f32::NAN],
        };
        assert!(Rows::same_bits(&nan, &nan.clone()));
    }

    #[test]
    fn a_failing_probe_is_an_error_not_a_verdict() {
        let failing = |_: &Rows| Err(InferenceError::Runtime("invalid input".into()));
        assert!(first_dependent_row(&singles(), failing).is_err());
    }
}
