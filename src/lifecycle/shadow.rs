//! Shadow traffic: a bounded queue that takes a copy of a request without ever making the
//! primary wait or fail, the comparison of a shadow's answer with the primary's, and the
//! metrics both feed.
//!
//! The queue is offered a job after the primary has answered; when it is full the copy is
//! dropped and counted (`ferrum_shadow_dropped_total`), never awaited. A worker (owned by the
//! serving layer) runs the shadow version and records the [`Comparison`] here. The metrics
//! live in their own struct registered on the service's registry, so they appear on
//! `/metrics` beside the rest with the labels `model`, `primary_version`, `shadow_version`
//! (bounded: versions come from the manifest).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use tokio::sync::mpsc;

use super::LifecycleError;
use crate::model::{ModelEntry, ModelOutput, Task};

const LABELS: &[&str] = &["model", "primary_version", "shadow_version"];

/// |primary − shadow| buckets: probabilities differ by fractions of a point, regressor values
/// by anything, so from 1e-6 up to 1000.
const ABS_DIFF_BUCKETS: &[f64] = &[
    1e-6, 1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 100.0, 1000.0,
];

/// The shadow metrics, registered once on the service's registry.
#[derive(Clone)]
pub struct ShadowMetrics {
    requests: IntCounterVec,
    dropped: IntCounterVec,
    failures: IntCounterVec,
    rows: IntCounterVec,
    disagreements: IntCounterVec,
    abs_diff: HistogramVec,
}

impl ShadowMetrics {
    /// Creates the metrics and registers them on `registry` (the service's, in production;
    /// a fresh one in tests). Fails only if they are registered twice.
    pub fn register(registry: &Registry) -> Result<ShadowMetrics, prometheus::Error> {
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), LABELS);
        let metrics = ShadowMetrics {
            requests: counter(
                "ferrum_shadow_requests_total",
                "Requests whose copy was offered to the shadow version (queued or dropped).",
            )?,
            dropped: counter(
                "ferrum_shadow_dropped_total",
                "Copies dropped because the shadow queue was full or its worker gone; the primary's answer is never affected.",
            )?,
            failures: counter(
                "ferrum_shadow_failures_total",
                "Shadow copies that ran but produced nothing comparable (inference error, or outputs of another shape).",
            )?,
            rows: counter(
                "ferrum_shadow_rows_compared_total",
                "Rows whose primary and shadow outputs were compared: the denominator of the disagreement rate.",
            )?,
            disagreements: counter(
                "ferrum_shadow_label_disagreements_total",
                "Compared classifier rows where the shadow's label differs from the primary's.",
            )?,
            abs_diff: HistogramVec::new(
                HistogramOpts::new(
                    "ferrum_shadow_abs_diff",
                    "|primary − shadow| per score: each class probability of a classifier row, the value of a regressor row.",
                )
                .buckets(ABS_DIFF_BUCKETS.to_vec()),
                LABELS,
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.dropped.clone()))?;
        registry.register(Box::new(metrics.failures.clone()))?;
        registry.register(Box::new(metrics.rows.clone()))?;
        registry.register(Box::new(metrics.disagreements.clone()))?;
        registry.register(Box::new(metrics.abs_diff.clone()))?;
        Ok(metrics)
    }

    /// The series of one (model, primary, shadow) pair, bound once per rollout change so a
    /// request never looks labels up.
    pub fn series(&self, model: &str, primary_version: &str, shadow_version: &str) -> ShadowSeries {
        let labels = [model, primary_version, shadow_version];
        ShadowSeries {
            requests: self.requests.with_label_values(&labels),
            dropped: self.dropped.with_label_values(&labels),
            failures: self.failures.with_label_values(&labels),
            rows: self.rows.with_label_values(&labels),
            disagreements: self.disagreements.with_label_values(&labels),
            abs_diff: self.abs_diff.with_label_values(&labels),
        }
    }
}

/// The shadow metrics of one (model, primary version, shadow version) pair.
#[derive(Clone)]
pub struct ShadowSeries {
    requests: IntCounter,
    dropped: IntCounter,
    failures: IntCounter,
    rows: IntCounter,
    disagreements: IntCounter,
    abs_diff: Histogram,
}

impl ShadowSeries {
    /// Records a shadow run that produced nothing comparable.
    pub fn record_failure(&self) {
        self.failures.inc();
    }

    /// Records one comparison.
    pub fn record(&self, comparison: &Comparison) {
        self.rows.inc_by(comparison.rows as u64);
        self.disagreements.inc_by(comparison.label_disagreements);
        for &diff in &comparison.abs_diffs {
            self.abs_diff.observe(diff);
        }
    }
}

/// What happened to a copy offered to the shadow queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the shadow worker.
    Queued,
    /// Dropped (queue full or worker gone) and counted.
    Dropped,
}

/// The sending side of a bounded shadow queue: `offer` never waits.
pub struct ShadowQueue<T> {
    sender: mpsc::Sender<T>,
}

impl<T> Clone for ShadowQueue<T> {
    fn clone(&self) -> Self {
        ShadowQueue {
            sender: self.sender.clone(),
        }
    }
}

impl<T> ShadowQueue<T> {
    /// A queue holding at most `capacity` (at least 1) copies, and the receiver its worker
    /// reads.
    pub fn new(capacity: usize) -> (ShadowQueue<T>, mpsc::Receiver<T>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (ShadowQueue { sender }, receiver)
    }

    /// Offers a copy: queued if there is room, else dropped. Counted either way in `series`.
    pub fn offer(&self, job: T, series: &ShadowSeries) -> Offer {
        series.requests.inc();
        match self.sender.try_send(job) {
            Ok(()) => Offer::Queued,
            Err(_) => {
                series.dropped.inc();
                Offer::Dropped
            }
        }
    }
}

/// The comparison of one request's primary and shadow outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Rows compared.
    pub rows: usize,
    /// Classifier rows whose labels differ (0 for regressors).
    pub label_disagreements: u64,
    /// |primary − shadow| per score: `rows × classes` probabilities, or `rows` values.
    pub abs_diffs: Vec<f64>,
}

/// Compares a primary version's outputs with a shadow version's: built once per pair, it
/// checks they can be compared and aligns classes by label name (two versions may order
/// their classes differently).
#[derive(Debug, Clone)]
pub struct ShadowComparator {
    /// Per primary class index, the shadow's index of the same label (empty for regressors).
    class_map: Vec<usize>,
}

impl ShadowComparator {
    /// Refuses a pair of another task or another set of class labels: their answers have
    /// no meaningful difference.
    pub fn new(
        primary: &ModelEntry,
        shadow: &ModelEntry,
    ) -> Result<ShadowComparator, LifecycleError> {
        if primary.task != shadow.task {
            return Err(LifecycleError::Incomparable(format!(
                "version {} is a {} model and version {} a {} model",
                primary.version,
                primary.task_name(),
                shadow.version,
                shadow.task_name()
            )));
        }
        if primary.task == Task::Regression {
            return Ok(ShadowComparator {
                class_map: Vec::new(),
            });
        }
        let same_set = primary.class_labels.len() == shadow.class_labels.len();
        let class_map: Option<Vec<usize>> = primary
            .class_labels
            .iter()
            .map(|label| shadow.class_labels.iter().position(|l| l == label))
            .collect();
        match class_map {
            Some(class_map) if same_set => Ok(ShadowComparator { class_map }),
            _ => Err(LifecycleError::Incomparable(format!(
                "class labels differ: [{}] and [{}]",
                primary.class_labels.join(", "),
                shadow.class_labels.join(", ")
            ))),
        }
    }

    /// The comparison of two outputs for the same rows.
    pub fn compare(
        &self,
        primary: &ModelOutput,
        shadow: &ModelOutput,
    ) -> Result<Comparison, LifecycleError> {
        if primary.len() != shadow.len() {
            return Err(LifecycleError::Incomparable(format!(
                "{} primary rows, {} shadow rows",
                primary.len(),
                shadow.len()
            )));
        }
        match (primary, shadow) {
            (ModelOutput::Regression { values: p }, ModelOutput::Regression { values: s }) => {
                Ok(Comparison {
                    rows: p.len(),
                    label_disagreements: 0,
                    abs_diffs: p
                        .iter()
                        .zip(s)
                        .map(|(p, s)| (f64::from(*p) - f64::from(*s)).abs())
                        .collect(),
                })
            }
            (
                ModelOutput::Classification {
                    labels: p_labels,
                    probabilities: p_probs,
                    n_classes: p_n,
                },
                ModelOutput::Classification {
                    labels: s_labels,
                    probabilities: s_probs,
                    n_classes: s_n,
                },
            ) if *p_n == self.class_map.len() && *s_n == self.class_map.len() => {
                let n = *p_n;
                let mut disagreements = 0;
                let mut abs_diffs = Vec::with_capacity(p_probs.len());
                for row in 0..p_labels.len() {
                    let same = usize::try_from(p_labels[row])
                        .ok()
                        .and_then(|p| self.class_map.get(p))
                        .is_some_and(|p| i64::try_from(*p) == Ok(s_labels[row]));
                    disagreements += u64::from(!same);
                    let (p_row, s_row) = (&p_probs[row * n..][..n], &s_probs[row * n..][..n]);
                    for (class, p) in p_row.iter().enumerate() {
                        let s = s_row[self.class_map[class]];
                        abs_diffs.push((f64::from(*p) - f64::from(s)).abs());
                    }
                }
                Ok(Comparison {
                    rows: p_labels.len(),
                    label_disagreements: disagreements,
                    abs_diffs,
                })
            }
            _ => Err(LifecycleError::Incomparable(
                "the outputs are of different shapes".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Manifest;

    fn entry(version: &str, task: &str, labels: &[&str]) -> ModelEntry {
        let (outputs, class_labels) = if task == "classification" {
            (
                r#"{"label": "l", "probabilities": "p"}"#,
                format!("{labels:?}"),
            )
        } else {
            (r#"{"value": "v"}"#, "[]".to_string())
        };
        let text = format!(
            r#"{{"models": [{{"name": "m", "version": "{version}", "task": "{task}", "path": "m",
            "feature_names": ["a"], "class_labels": {class_labels}, "onnx": {{"file": "f",
            "sha256": "00", "input": "i", "outputs": {outputs}}}}}]}}"#
        );
        Manifest::parse(&text).unwrap().models.remove(0)
    }

    fn value(registry: &Registry, name: &str) -> f64 {
        let family = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("{name} not registered"));
        let metric = &family.get_metric()[0];
        let labels: Vec<(&str, &str)> = metric
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect();
        assert_eq!(
            labels,
            [
                ("model", "m"),
                ("primary_version", "1"),
                ("shadow_version", "2")
            ]
        );
        if family.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
            metric.get_histogram().get_sample_count() as f64
        } else {
            metric.get_counter().get_value()
        }
    }

    #[test]
    fn classifiers_disagree_by_label_name_and_differ_per_probability() {
        let primary = entry("1", "classification", &["no", "yes"]);
        // The shadow orders its classes the other way round.
        let shadow = entry("2", "classification", &["yes", "no"]);
        let comparator = ShadowComparator::new(&primary, &shadow).unwrap();
        let p = ModelOutput::Classification {
            labels: vec![0, 1, 1],
            probabilities: vec![0.9, 0.1, 0.25, 0.75, 0.4, 0.6],
            n_classes: 2,
        };
        // Row 0: "no" both. Row 1: "yes" vs "no". Row 2: "yes" both.
        let s = ModelOutput::Classification {
            labels: vec![1, 1, 0],
            probabilities: vec![0.2, 0.8, 0.25, 0.75, 0.5, 0.5],
            n_classes: 2,
        };
        let c = comparator.compare(&p, &s).unwrap();
        assert_eq!(c.rows, 3);
        assert_eq!(c.label_disagreements, 1);
        let expected = [0.1, 0.1, 0.5, 0.5, 0.1, 0.1];
        assert_eq!(c.abs_diffs.len(), expected.len());
        for (got, want) in c.abs_diffs.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?}", c.abs_diffs);
        }
    }

    #[test]
    fn regressors_differ_by_value() {
        let comparator = ShadowComparator::new(
            &entry("1", "regression", &[]),
            &entry("2", "regression", &[]),
        )
        .unwrap();
        let c = comparator
            .compare(
                &ModelOutput::Regression {
                    values: vec![1.0, -2.0],
                },
                &ModelOutput::Regression {
                    values: vec![1.5, 2.0],
                },
            )
            .unwrap();
        assert_eq!(
            c,
            Comparison {
                rows: 2,
                label_disagreements: 0,
                abs_diffs: vec![0.5, 4.0]
            }
        );
    }

    #[test]
    fn refuses_pairs_without_a_meaningful_difference() {
        let classifier = entry("1", "classification", &["a", "b"]);
        let regressor = entry("2", "regression", &[]);
        let error = ShadowComparator::new(&classifier, &regressor).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("classification model and version 2 a regression"),
            "{error}"
        );
        let other_classes = entry("2", "classification", &["a", "c"]);
        assert!(ShadowComparator::new(&classifier, &other_classes)
            .unwrap_err()
            .to_string()
            .contains("class labels differ"));
        let comparator = ShadowComparator::new(&regressor, &regressor).unwrap();
        let error = comparator
            .compare(
                &ModelOutput::Regression { values: vec![1.0] },
                &ModelOutput::Regression {
                    values: vec![1.0, 2.0],
                },
            )
            .unwrap_err();
        assert!(error.to_string().contains("1 primary rows, 2 shadow rows"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let registry = Registry::new();
        let metrics = ShadowMetrics::register(&registry).unwrap();
        let series = metrics.series("m", "1", "2");
        let (queue, mut worker) = ShadowQueue::new(2);
        assert_eq!(queue.offer(1, &series), Offer::Queued);
        assert_eq!(queue.offer(2, &series), Offer::Queued);
        assert_eq!(queue.offer(3, &series), Offer::Dropped);
        assert_eq!(worker.try_recv(), Ok(1));
        assert_eq!(queue.offer(4, &series), Offer::Queued);
        assert_eq!(value(&registry, "ferrum_shadow_requests_total"), 4.0);
        assert_eq!(value(&registry, "ferrum_shadow_dropped_total"), 1.0);
        // A worker that is gone: copies are dropped, the caller still never fails.
        drop(worker);
        assert_eq!(queue.offer(5, &series), Offer::Dropped);
        assert_eq!(value(&registry, "ferrum_shadow_dropped_total"), 2.0);
    }

    #[test]
    fn comparisons_feed_the_metrics() {
        let registry = Registry::new();
        let metrics = ShadowMetrics::register(&registry).unwrap();
        let series = metrics.series("m", "1", "2");
        series.record(&Comparison {
            rows: 3,
            label_disagreements: 2,
            abs_diffs: vec![0.1, 0.2, 0.3, 0.0, 0.5, 0.5],
        });
        series.record_failure();
        assert_eq!(value(&registry, "ferrum_shadow_rows_compared_total"), 3.0);
        assert_eq!(
            value(&registry, "ferrum_shadow_label_disagreements_total"),
            2.0
        );
        assert_eq!(value(&registry, "ferrum_shadow_abs_diff"), 6.0);
        assert_eq!(value(&registry, "ferrum_shadow_failures_total"), 1.0);
        // Registering twice on one registry is refused, not silently duplicated.
        assert!(ShadowMetrics::register(&registry).is_err());
    }
}
