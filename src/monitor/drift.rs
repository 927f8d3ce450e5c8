//! Live drift monitoring: a sliding window of the rows `/predict` served (and their
//! predictions) per model version, compared with the training baseline by PSI in the
//! background at a fixed cadence, published as gauges.
//!
//! ## Cost on the request path
//! A handler hands its already-parsed rows and the model output over by *moving* them into a
//! bounded channel with `try_send` ([`DriftHandle::observe`]): no copy, no lock held, no wait.
//! When the channel is full (the monitor thread is starved), the rows are dropped and counted
//! in `ferrum_drift_dropped_rows_total`; serving never slows down for monitoring.
//!
//! ## The monitor thread
//! One OS thread (`ferrum-drift`, not a tokio worker) owns every window. Every 10 ms it takes
//! what requests queued (it never parks on the channel, so a request's send never has to wake
//! it) and moves the rows into fixed-size ring buffers (the oldest rows fall out) and, every `interval`, bins each
//! changed window against its baseline and sets `ferrum_feature_drift_psi`,
//! `ferrum_prediction_drift_psi` and `ferrum_drift_window_rows`. PSI is published only once a
//! window holds `min_rows` rows, so a fresh pod does not alert on its first ten requests.
//!
//! ## Hook: explanation drift
//! The nightly-style SHAP check (mean |attribution| per feature over served rows vs. training
//! rows) needs a sample of recently served rows. [`DriftHandle::sample_served_rows`] returns a
//! copy of a model version's window, newest rows last, from any background task; it must not
//! be called on the request path (it waits for the monitor thread's answer).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::baseline::{Baseline, PredictionPoint};
use crate::model::{ModelOutput, Rows};
use crate::telemetry::metrics;

/// How often the monitor thread takes the rows queued by requests. The queue must hold what
/// arrives in this time (`--drift-queue-capacity` requests) for nothing to be dropped.
pub const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// How drift is monitored; from the server flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftConfig {
    /// Rows kept per model version (the most recent ones). 0 turns monitoring off.
    pub window_rows: usize,
    /// How often the PSI gauges are recomputed.
    pub interval: Duration,
    /// PSI is published only once a window holds at least this many rows.
    pub min_rows: usize,
    /// Requests that may wait for the monitor thread before new ones are dropped.
    pub queue_capacity: usize,
}

/// The request path's end of the monitor: cheap to clone, never blocks.
#[derive(Clone)]
pub struct DriftHandle {
    sender: SyncSender<Message>,
    /// Model name → version → window number, so a message carries a number, not names.
    windows: Arc<HashMap<String, HashMap<String, usize>>>,
}

enum Message {
    /// Rows a request served and what the model predicted for them.
    Observe {
        window: usize,
        rows: Rows,
        output: ModelOutput,
    },
    /// A copy of the newest rows of a window, for background checks.
    Sample {
        window: usize,
        max_rows: usize,
        reply: SyncSender<Option<Rows>>,
    },
    /// Recompute every changed window now and answer when done.
    Compute { reply: SyncSender<()> },
}

impl DriftHandle {
    /// Starts the monitor thread for the model versions in `baselines`. `None` when monitoring
    /// is off (`window_rows` 0) or there is nothing to monitor.
    pub fn start(config: DriftConfig, baselines: Vec<Baseline>) -> Option<DriftHandle> {
        if config.window_rows == 0 || baselines.is_empty() {
            return None;
        }
        let (sender, receiver) = mpsc::sync_channel(config.queue_capacity.max(1));
        let mut index: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (i, b) in baselines.iter().enumerate() {
            index
                .entry(b.model.clone())
                .or_default()
                .insert(b.version.clone(), i);
        }
        let windows = baselines
            .into_iter()
            .map(|b| Window::new(b, config.window_rows))
            .collect();
        let monitor = Monitor { config, windows };
        match std::thread::Builder::new()
            .name("ferrum-drift".into())
            .spawn(move || monitor.run(receiver))
        {
            Ok(_) => Some(DriftHandle {
                sender,
                windows: Arc::new(index),
            }),
            Err(error) => {
                tracing::error!(%error, "cannot start the drift monitor thread; drift is not monitored");
                None
            }
        }
    }

    /// Hands the rows a request served for `model`/`version` and their predictions to the
    /// monitor (moved, not copied). Never waits: if the queue is full, the rows are dropped and
    /// counted. Rows of a model version without a baseline are ignored.
    pub fn observe(&self, model: &str, version: &str, rows: Rows, output: ModelOutput) {
        let Some(&window) = self.windows.get(model).and_then(|v| v.get(version)) else {
            return;
        };
        let message = Message::Observe {
            window,
            rows,
            output,
        };
        match self.sender.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) => {
                if let Message::Observe { rows, .. } = message {
                    metrics::record_drift_dropped(model, version, rows.n_rows);
                }
            }
        }
    }

    /// **Explanation-drift hook.** A copy of up to `max_rows` of the most recently served rows
    /// of a model version (oldest first), or `None` if it is not monitored or the monitor does
    /// not answer within `timeout`. Blocks the caller: call it from a background task
    /// (`spawn_blocking`), never on the request path.
    pub fn sample_served_rows(
        &self,
        model: &str,
        version: &str,
        max_rows: usize,
        timeout: Duration,
    ) -> Option<Rows> {
        let &window = self.windows.get(model)?.get(version)?;
        let (reply, answer) = mpsc::sync_channel(1);
        let message = Message::Sample {
            window,
            max_rows,
            reply,
        };
        self.sender.send_timeout_compat(message, timeout)?;
        answer.recv_timeout(timeout).ok().flatten()
    }

    /// Recomputes every changed window now, waiting up to `timeout` for it (background use and
    /// tests). True when the computation finished in time.
    pub fn compute_now(&self, timeout: Duration) -> bool {
        let (reply, done) = mpsc::sync_channel(1);
        if self
            .sender
            .send_timeout_compat(Message::Compute { reply }, timeout)
            .is_none()
        {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }
}

/// `SyncSender` has no `send_timeout`: retry `try_send` until the deadline (background use
/// only, where a short wait is fine).
trait SendTimeout {
    fn send_timeout_compat(&self, message: Message, timeout: Duration) -> Option<()>;
}

impl SendTimeout for SyncSender<Message> {
    fn send_timeout_compat(&self, mut message: Message, timeout: Duration) -> Option<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_send(message) {
                Ok(()) => return Some(()),
                Err(TrySendError::Disconnected(_)) => return None,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    message = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

/// The monitor thread's state.
struct Monitor {
    config: DriftConfig,
    windows: Vec<Window>,
}

impl Monitor {
    /// Drains the queue every [`DRAIN_EVERY`] and recomputes every `interval`. It never parks
    /// on the channel: a parked receiver would make every request's send wake it (a futex call
    /// and a context switch per request on a two-core machine), while polling costs the same
    /// few wake-ups a second whatever the traffic.
    fn run(mut self, receiver: Receiver<Message>) {
        let mut next = Instant::now() + self.config.interval;
        loop {
            loop {
                match receiver.try_recv() {
                    Ok(message) => self.handle(message),
                    Err(TryRecvError::Empty) => break,
                    // Every handle is gone: the server is shutting down.
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if now >= next {
                self.compute();
                next = Instant::now() + self.config.interval;
            }
            std::thread::sleep(
                DRAIN_EVERY
                    .min(next.saturating_duration_since(now))
                    .max(Duration::from_millis(1)),
            );
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Observe {
                window,
                rows,
                output,
            } => {
                if let Some(window) = self.windows.get_mut(window) {
                    window.push(&rows, &output);
                }
            }
            Message::Sample {
                window,
                max_rows,
                reply,
            } => {
                let rows = self.windows.get(window).map(|w| w.newest_rows(max_rows));
                let _ = reply.try_send(rows);
            }
            Message::Compute { reply } => {
                self.compute();
                let _ = reply.try_send(());
            }
        }
    }

    /// Recomputes and publishes the PSI of every window that changed since last time.
    fn compute(&mut self) {
        let started = Instant::now();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut any = false;
        for window in self.windows.iter_mut().filter(|w| w.changed) {
            window.changed = false;
            any = true;
            window.publish(self.config.min_rows, now);
            let received = std::mem::take(&mut window.received);
            metrics::record_drift_rows(&window.baseline.model, &window.baseline.version, received);
        }
        if any {
            metrics::record_drift_computation(started.elapsed());
        }
    }
}

/// The most recent served rows of one model version, as ring buffers.
struct Window {
    baseline: Baseline,
    capacity: usize,
    n_features: usize,
    /// `capacity * n_features` values; slot `i` is row `i` of the ring.
    features: Vec<f32>,
    /// One prediction per slot.
    predictions: Vec<PredictionPoint>,
    /// The slot the next row goes to.
    next: usize,
    /// Rows held (at most `capacity`).
    len: usize,
    /// Rows arrived since the last computation.
    changed: bool,
    /// How many.
    received: u64,
}

impl Window {
    fn new(baseline: Baseline, capacity: usize) -> Window {
        let n_features = baseline.features.len();
        Window {
            baseline,
            capacity,
            n_features,
            features: vec![0.0; capacity * n_features],
            predictions: vec![PredictionPoint::Value(0.0); capacity],
            next: 0,
            len: 0,
            changed: false,
            received: 0,
        }
    }

    /// Adds a request's rows (only the newest `capacity` of them matter).
    fn push(&mut self, rows: &Rows, output: &ModelOutput) {
        if rows.n_cols != self.n_features || output.len() != rows.n_rows {
            return;
        }
        let points = PredictionPoint::all(output, &self.baseline);
        if points.len() != rows.n_rows {
            return;
        }
        self.received += rows.n_rows as u64;
        let skip = rows.n_rows.saturating_sub(self.capacity);
        for (i, &point) in points.iter().enumerate().skip(skip) {
            let slot = self.next;
            self.features[slot * self.n_features..(slot + 1) * self.n_features]
                .copy_from_slice(rows.row(i));
            self.predictions[slot] = point;
            self.next = (slot + 1) % self.capacity;
            self.len = (self.len + 1).min(self.capacity);
        }
        self.changed = true;
    }

    /// Slots from oldest to newest.
    fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        let start = (self.next + self.capacity - self.len) % self.capacity;
        (0..self.len).map(move |i| (start + i) % self.capacity)
    }

    /// A copy of the newest `max_rows` rows, oldest first.
    fn newest_rows(&self, max_rows: usize) -> Rows {
        let skip = self.len.saturating_sub(max_rows);
        let mut data = Vec::with_capacity((self.len - skip) * self.n_features);
        for slot in self.slots().skip(skip) {
            data.extend_from_slice(
                &self.features[slot * self.n_features..(slot + 1) * self.n_features],
            );
        }
        Rows {
            n_rows: data.len() / self.n_features.max(1),
            data,
            n_cols: self.n_features,
        }
    }

    /// Bins the window and sets the gauges.
    fn publish(&self, min_rows: usize, unix_seconds: f64) {
        let (model, version) = (&self.baseline.model, &self.baseline.version);
        if self.len < min_rows.max(1) {
            metrics::set_drift_window(model, version, self.len, unix_seconds);
            return;
        }
        let mut counts = self.baseline.counts();
        for slot in self.slots() {
            counts.add_row(
                &self.baseline,
                &self.features[slot * self.n_features..(slot + 1) * self.n_features],
            );
            counts.add_prediction(&self.baseline, self.predictions[slot]);
        }
        for (name, psi) in self
            .baseline
            .feature_names
            .iter()
            .zip(counts.feature_psi(&self.baseline))
        {
            if let Some(psi) = psi {
                metrics::set_feature_psi(model, version, name, psi);
            }
        }
        for (output, psi) in counts.output_psi(&self.baseline) {
            if let Some(psi) = psi {
                metrics::set_prediction_psi(model, version, output, psi);
            }
        }
        metrics::set_drift_window(model, version, self.len, unix_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::baseline::{Distribution, PredictionDrift};

    fn baseline(model: &str) -> Baseline {
        let d = Distribution {
            bin_edges: vec![0.0],
            fractions: vec![0.5, 0.5],
            min: None,
            max: None,
        };
        Baseline {
            model: model.into(),
            version: "1".into(),
            feature_names: vec!["a".into(), "b".into()],
            features: vec![d.clone(), d.clone()],
            prediction: PredictionDrift::Regression { value: d },
        }
    }

    fn regression(values: &[f32]) -> ModelOutput {
        ModelOutput::Regression {
            values: values.to_vec(),
        }
    }

    #[test]
    fn the_window_keeps_the_newest_rows_in_order() {
        let mut w = Window::new(baseline("w"), 3);
        w.push(
            &Rows::new(vec![1.0, 1.0, 2.0, 2.0], 2),
            &regression(&[0.0, 0.0]),
        );
        w.push(
            &Rows::new(vec![3.0, 3.0, 4.0, 4.0], 2),
            &regression(&[0.0, 0.0]),
        );
        assert_eq!(w.len, 3);
        assert_eq!(w.newest_rows(10).data, vec![2.0, 2.0, 3.0, 3.0, 4.0, 4.0]);
        assert_eq!(w.newest_rows(1).data, vec![4.0, 4.0]);
        // A request larger than the window keeps only its newest rows.
        let big: Vec<f32> = (0..10).flat_map(|i| [i as f32, i as f32]).collect();
        w.push(&Rows::new(big, 2), &regression(&[0.0; 10]));
        assert_eq!(w.newest_rows(10).data, vec![7.0, 7.0, 8.0, 8.0, 9.0, 9.0]);
        // A row of the wrong width is ignored rather than misread.
        w.push(&Rows::new(vec![1.0, 2.0, 3.0], 3), &regression(&[0.0]));
        assert_eq!(w.len, 3);
    }

    /// The monitor publishes PSI only once `min_rows` rows arrived, and answers the sampling
    /// hook from its thread.
    #[test]
    fn the_monitor_publishes_after_min_rows_and_serves_samples() {
        let config = DriftConfig {
            window_rows: 100,
            interval: Duration::from_secs(3600),
            min_rows: 4,
            queue_capacity: 8,
        };
        let handle = DriftHandle::start(config, vec![baseline("unit-drift")]).unwrap();
        // Observes two rows (a < 0, b > 0), computes, and renders the metrics.
        let observe_two = || {
            handle.observe(
                "unit-drift",
                "1",
                Rows::new(vec![-1.0, 1.0, -1.0, 1.0], 2),
                regression(&[-1.0, 1.0]),
            );
            assert!(handle.compute_now(Duration::from_secs(5)));
            metrics::render()
        };
        // Two rows: not enough for PSI yet.
        let text = observe_two();
        assert!(text.contains(r#"ferrum_drift_window_rows{model="unit-drift",version="1"} 2"#));
        assert!(text.contains(r#"ferrum_drift_rows_total{model="unit-drift",version="1"} 2"#));
        assert!(!text.contains(r#"ferrum_feature_drift_psi{feature="a",model="unit-drift""#));
        // Two more, all with a < 0: feature a is entirely in bin 0, b in bin 1.
        let text = observe_two();
        let expected = super::super::baseline::psi(&[0.5, 0.5], &[4, 0]).unwrap();
        assert!(text.contains(&format!(
            r#"ferrum_feature_drift_psi{{feature="a",model="unit-drift",version="1"}} {expected}"#
        )));
        assert!(text.contains(
            r#"ferrum_prediction_drift_psi{model="unit-drift",output="value",version="1"} 0"#
        ));
        let sample = handle
            .sample_served_rows("unit-drift", "1", 3, Duration::from_secs(5))
            .unwrap();
        assert_eq!(sample.n_rows, 3);
        assert!(handle
            .sample_served_rows("nope", "1", 3, Duration::from_secs(5))
            .is_none());
    }

    #[test]
    fn monitoring_off_starts_nothing() {
        let config = DriftConfig {
            window_rows: 0,
            interval: Duration::from_secs(1),
            min_rows: 1,
            queue_capacity: 1,
        };
        assert!(DriftHandle::start(config, vec![baseline("off")]).is_none());
    }
}
