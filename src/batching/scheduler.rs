//! The dynamic batcher: a bounded queue per model version and scheduler threads that each take
//! every waiting request that fits (up to `max_batch_rows` rows), run them as one call, and send
//! each request its own rows of the output, in order, on its own oneshot channel.
//!
//! - A lone request is never held back: a thread that finds the other threads idle runs what it
//!   has at once. Only while another batch is running (so more requests are likely on the way),
//!   and only for a small batch, does it wait up to `max_queue_delay` for more rows.
//! - The queue holds at most `max_queue_depth` requests; [`Scheduler::submit`] refuses more at
//!   once with [`SubmitError::Full`] instead of letting latency grow without bound.
//! - A request whose client went away (its reply receiver dropped) is skipped before inference.
//! - Threads sleep on a condition variable. A sleeping thread is woken when no thread is awake,
//!   or when the waiting or running work is large enough to be worth a second core; small
//!   requests arriving while a thread computes are left for that thread's next batch (one call
//!   of a few microseconds away), which merges them instead of paying a wake-up each.
//!
//! - Every runner call is recorded once in the per-call inference metrics ([`InferenceCalls`]):
//!   a batch that merged N requests is one observation of its total rows, not N.
//!
//! The batcher carries any [`Batch`]: the rows form's row matrices (one buffer reused per
//! thread) and a tensors model's named inputs (concatenated along their batch dimension). The
//! runner is a plain function over one merged batch, so the batcher is tested without a model.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{record_call, Batch, Inferred};
use crate::model::InferenceError;
use crate::telemetry::metrics::InferenceCalls;

/// The batcher's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most rows merged into one call; a single larger request still runs, alone.
    pub max_batch_rows: usize,
    /// Longest a thread waits for more rows, and only while another batch is running.
    pub max_queue_delay: Duration,
    /// Most requests waiting; beyond it `submit` fails with [`SubmitError::Full`].
    pub max_queue_depth: usize,
    /// Scheduler threads (each runs one batch at a time).
    pub threads: usize,
}

/// Below this many rows a batch waits (up to the queue delay) for company; at or above it, the
/// per-call overhead that merging saves is already small next to the rows' own compute, so
/// waiting would only add latency: an eighth of `max_batch_rows`, at least one row.
fn small_batch_rows(max_batch_rows: usize) -> usize {
    (max_batch_rows / 8).max(1)
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is at `max_queue_depth`: answer `overloaded` now, let the client retry.
    Full,
    /// The scheduler is stopping.
    Closed,
}

/// The result a request receives.
pub type Reply<W> = oneshot::Receiver<Result<Inferred<<W as super::Work>::Output>, InferenceError>>;

type Runner<W> = dyn Fn(&W) -> Result<<W as super::Work>::Output, InferenceError> + Send + Sync;

/// A dynamic batcher with its threads. Dropping it lets the threads finish the queue and exit.
pub struct Scheduler<W: Batch> {
    shared: Arc<Shared<W>>,
}

struct Shared<W: Batch> {
    state: Mutex<State<W>>,
    /// Signalled when work arrives for a sleeping thread, and on close.
    work: Condvar,
    config: SchedulerConfig,
    runner: Box<Runner<W>>,
    /// Where each call of `runner` is recorded.
    calls: InferenceCalls,
    /// Rows in ONNX Runtime calls underway: a thread waits for company only when some are, and
    /// a long call underway is a reason to wake a second thread.
    running_rows: AtomicUsize,
    /// Threads started.
    threads: usize,
}

struct State<W: Batch> {
    queue: VecDeque<Job<W>>,
    /// Rows in `queue`.
    queued_rows: usize,
    /// Threads waiting on `work`.
    sleeping: usize,
    /// Of those, how many were notified and have not woken yet (so one arrival is not
    /// answered with a second, useless notification).
    waking: usize,
    closed: bool,
}

impl<W: Batch> State<W> {
    /// Whether to notify a sleeping thread now that `queue` has grown or a batch has started.
    fn should_wake(&self, threads: usize, running_rows: usize, big: usize) -> bool {
        if self.sleeping <= self.waking || self.queue.is_empty() {
            return false;
        }
        let awake = threads - (self.sleeping - self.waking);
        awake == 0 || self.queued_rows >= big || running_rows >= big
    }
}

struct Job<W: Batch> {
    work: W,
    reply: oneshot::Sender<Result<Inferred<W::Output>, InferenceError>>,
    submitted: Instant,
}

impl<W: Batch> Job<W> {
    fn cancelled(&self) -> bool {
        self.reply.is_closed()
    }
}

impl<W: Batch> Scheduler<W> {
    /// Starts `config.threads` scheduler threads (at least one) named after `name`, each calling
    /// `runner` on merged batches and recording every call in `calls`.
    pub fn start<F>(
        name: &str,
        config: SchedulerConfig,
        calls: InferenceCalls,
        runner: F,
    ) -> Scheduler<W>
    where
        F: Fn(&W) -> Result<W::Output, InferenceError> + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(config.max_queue_depth.min(4096)),
                queued_rows: 0,
                sleeping: 0,
                waking: 0,
                closed: false,
            }),
            work: Condvar::new(),
            config,
            runner: Box::new(runner),
            calls,
            running_rows: AtomicUsize::new(0),
            threads: config.threads.max(1),
        });
        for i in 0..shared.threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("batch-{name}-{i}"))
                .spawn(move || shared.run())
                .expect("spawn a batcher thread");
        }
        Scheduler { shared }
    }

    /// Queues `work` and returns the channel its result will arrive on, or refuses at once when
    /// the queue is full. Never blocks beyond a short lock.
    pub fn submit(&self, work: W) -> Result<Reply<W>, SubmitError> {
        let (reply, receiver) = oneshot::channel();
        let mut state = self.shared.lock();
        if state.closed {
            return Err(SubmitError::Closed);
        }
        if state.queue.len() >= self.shared.config.max_queue_depth {
            return Err(SubmitError::Full);
        }
        state.queued_rows += work.rows();
        state.queue.push_back(Job {
            work,
            reply,
            submitted: Instant::now(),
        });
        self.shared.wake_if_worth_it(state);
        Ok(receiver)
    }

    /// Requests waiting right now (not counting batches being computed).
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// The limits it runs with.
    pub fn config(&self) -> SchedulerConfig {
        self.shared.config
    }
}

impl<W: Batch> Drop for Scheduler<W> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

impl<W: Batch> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, State<W>> {
        // The lock is never held across user code, so a poisoned lock holds a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rows from which work is worth a second core (see [`small_batch_rows`]).
    fn big(&self) -> usize {
        small_batch_rows(self.config.max_batch_rows)
    }

    /// Notifies one sleeping thread if [`State::should_wake`] says so; releases the lock first.
    fn wake_if_worth_it(&self, mut state: MutexGuard<'_, State<W>>) {
        let running = self.running_rows.load(Ordering::Acquire);
        if state.should_wake(self.threads, running, self.big()) {
            state.waking += 1;
            drop(state);
            self.work.notify_one();
        }
    }

    fn wait<'a>(&self, mut state: MutexGuard<'a, State<W>>) -> MutexGuard<'a, State<W>> {
        state.sleeping += 1;
        let mut state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
        state.sleeping -= 1;
        // Woken by a notification or spuriously: either way one fewer is on its way. (Counting
        // a spurious wake-up as a notified one can only cause an extra notification later.)
        state.waking = state.waking.saturating_sub(1);
        state
    }

    fn wait_until<'a>(
        &self,
        mut state: MutexGuard<'a, State<W>>,
        deadline: Instant,
    ) -> MutexGuard<'a, State<W>> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        state.sleeping += 1;
        let (mut state, _) = self
            .work
            .wait_timeout(state, timeout)
            .unwrap_or_else(|p| p.into_inner());
        state.sleeping -= 1;
        state.waking = state.waking.saturating_sub(1);
        state
    }

    /// A scheduler thread: gather a batch, run it, repeat until closed and drained.
    fn run(&self) {
        let mut batch: Vec<Job<W>> = Vec::new();
        let mut scratch = W::Scratch::default();
        loop {
            let mut state = self.lock();
            let mut rows = 0;
            loop {
                rows = self.take(&mut state, &mut batch, rows);
                if !batch.is_empty() {
                    break;
                }
                if state.closed {
                    return;
                }
                state = self.wait(state);
            }
            let max_rows = self.config.max_batch_rows;
            if !self.config.max_queue_delay.is_zero()
                && rows < small_batch_rows(max_rows)
                && self.running_rows.load(Ordering::Acquire) > 0
            {
                let deadline = Instant::now() + self.config.max_queue_delay;
                while rows < max_rows && Instant::now() < deadline && !state.closed {
                    state = self.wait_until(state, deadline);
                    rows = self.take(&mut state, &mut batch, rows);
                }
            }
            // Work left that this batch could not take goes to a sleeping thread if it is big
            // or this batch is (otherwise this thread takes it right after its call).
            let running = self.running_rows.load(Ordering::Acquire) + rows;
            if state.should_wake(self.threads, running, self.big()) {
                state.waking += 1;
                drop(state);
                self.work.notify_one();
            } else {
                drop(state);
            }
            self.execute(&mut batch, &mut scratch);
        }
    }

    /// Moves queued jobs into `batch` while they fit in `max_batch_rows` (the first always
    /// does), dropping cancelled ones. Returns the batch's row count.
    fn take(&self, state: &mut State<W>, batch: &mut Vec<Job<W>>, mut rows: usize) -> usize {
        while let Some(job) = state.queue.front() {
            let n = job.work.rows();
            if job.cancelled() {
                state.queue.pop_front();
                state.queued_rows -= n;
                continue;
            }
            if !batch.is_empty() && rows + n > self.config.max_batch_rows {
                break;
            }
            rows += n;
            state.queued_rows -= n;
            batch.extend(state.queue.pop_front());
        }
        rows
    }

    /// Runs one batch as one recorded call and answers each job with its own rows, in order.
    fn execute(&self, batch: &mut Vec<Job<W>>, scratch: &mut W::Scratch) {
        // The client may have gone while the batch formed: don't compute for it.
        batch.retain(|job| !job.cancelled());
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        if let [_] = batch.as_slice() {
            let job = batch.pop().expect("one job");
            let n_rows = job.work.rows();
            let (result, inference_time) =
                record_call(&self.calls, &job.work, |work| self.call(work));
            let _ = job.reply.send(result.map(|output| Inferred {
                output,
                queue_time: started - job.submitted,
                inference_time,
                batch_rows: n_rows,
            }));
            return;
        }
        let merged = W::merge(batch.iter().map(|job| &job.work), scratch);
        let total = merged.rows();
        let (result, inference_time) = record_call(&self.calls, &merged, |work| self.call(work));
        merged.recycle(scratch);
        let mut start = 0;
        for job in batch.drain(..) {
            let end = start + job.work.rows();
            let answer = match &result {
                Ok(output) => W::slice(output, start, end).map(|output| Inferred {
                    output,
                    queue_time: started - job.submitted,
                    inference_time,
                    batch_rows: total,
                }),
                Err(e) => Err(InferenceError::Runtime(e.to_string())),
            };
            let _ = job.reply.send(answer);
            start = end;
        }
    }

    /// The runner, with a panic turned into an error so the thread keeps serving. Counts as
    /// busy only during the call itself: a client answered from this batch may send its next
    /// request at once, and that request must find the batcher idle, not wait for company.
    fn call(&self, work: &W) -> Result<W::Output, InferenceError> {
        let rows = work.rows();
        self.running_rows.fetch_add(rows, Ordering::AcqRel);
        let result = catch_panic(|| (self.runner)(work));
        self.running_rows.fetch_sub(rows, Ordering::AcqRel);
        result
    }
}

/// Runs `call`, turning a panic into a runtime error so the thread that ran it goes on serving
/// (and the failed call is counted like any other).
pub(super) fn catch_panic<O>(
    call: impl FnOnce() -> Result<O, InferenceError>,
) -> Result<O, InferenceError> {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(InferenceError::Runtime(format!(
            "inference panicked: {what}"
        )))
    })
}
