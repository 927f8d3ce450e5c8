//! Shadow traffic at run time: after the primary version has answered an unversioned request,
//! a copy of its rows and the primary's output is offered to a bounded queue
//! ([`crate::lifecycle::ShadowQueue`]: dropped and counted when full, never waited for), and
//! one worker task runs each copy through the shadow version's executor and records how its
//! answer compares ([`crate::lifecycle::ShadowComparator`]). The primary's response never
//! waits for, or fails with, the shadow.

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use super::{pipeline, ServedModel};
use crate::lifecycle::{
    LifecycleError, Offer, ShadowComparator, ShadowMetrics, ShadowQueue, ShadowSeries,
};
use crate::model::{ModelOutput, Rows};
use crate::telemetry::metrics;

/// Most copies waiting for the shadow worker; more are dropped (and counted). A burst the
/// shadow cannot keep up with costs comparisons, never primary latency.
pub const SHADOW_QUEUE_CAPACITY: usize = 1024;

/// The shadow metrics, registered once on the service's registry (they are metrics, the one
/// global the service keeps).
fn shadow_metrics() -> &'static ShadowMetrics {
    static METRICS: OnceLock<ShadowMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        ShadowMetrics::register(metrics::registry()).expect("shadow metrics registered once")
    })
}

/// One primary version and the shadow version its requests are copied to: the comparator and
/// the column order are worked out once, when the rollout is set, not per request.
pub struct ShadowPair {
    shadow: Arc<ServedModel>,
    comparator: ShadowComparator,
    /// Per shadow input column, the primary's column holding the same feature; `None` when
    /// both versions take their features in the same order.
    columns: Option<Vec<usize>>,
    series: ShadowSeries,
    queue: ShadowQueue<ShadowJob>,
}

/// One copy waiting for the shadow worker.
pub struct ShadowJob {
    pair: Arc<ShadowPair>,
    rows: Rows,
    primary: ModelOutput,
}

impl ShadowPair {
    /// The pair of `primary` and `shadow`; refused when their answers cannot be compared
    /// (another task or set of classes) or the shadow needs a feature the primary's rows lack.
    pub fn new(
        primary: &ServedModel,
        shadow: Arc<ServedModel>,
        queue: ShadowQueue<ShadowJob>,
    ) -> Result<ShadowPair, LifecycleError> {
        let comparator = ShadowComparator::new(&primary.entry, &shadow.entry)?;
        let columns = shadow
            .entry
            .feature_names
            .iter()
            .map(|name| {
                primary.feature_index.get(name).copied().ok_or_else(|| {
                    LifecycleError::Incomparable(format!(
                        "feature '{name}' of version {} is not among version {}'s features",
                        shadow.entry.version, primary.entry.version
                    ))
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let in_order = columns.len() == primary.n_features()
            && columns.iter().enumerate().all(|(i, &c)| i == c);
        let series = shadow_metrics().series(
            &primary.entry.name,
            &primary.entry.version,
            &shadow.entry.version,
        );
        Ok(ShadowPair {
            shadow,
            comparator,
            columns: (!in_order).then_some(columns),
            series,
            queue,
        })
    }

    /// The shadow version's number, as the manifest writes it.
    pub fn shadow_version(&self) -> &str {
        &self.shadow.entry.version
    }

    /// Offers a copy of a request the primary answered: its rows, in the primary's column
    /// order, and the primary's output. Never waits.
    pub fn offer(self: &Arc<Self>, rows: Rows, primary: ModelOutput) -> Offer {
        let job = ShadowJob {
            pair: self.clone(),
            rows,
            primary,
        };
        self.queue.offer(job, &self.series)
    }

    /// The rows in the shadow's column order.
    fn shadow_rows(&self, rows: Rows) -> Rows {
        let Some(columns) = &self.columns else {
            return rows;
        };
        let mut data = Vec::with_capacity(rows.n_rows * columns.len());
        for row in rows.data.chunks_exact(rows.n_cols) {
            data.extend(columns.iter().map(|&c| row[c]));
        }
        Rows::new(data, columns.len())
    }
}

/// A new shadow queue and the receiver [`run_worker`] drains.
pub fn shadow_queue() -> (ShadowQueue<ShadowJob>, mpsc::Receiver<ShadowJob>) {
    ShadowQueue::new(SHADOW_QUEUE_CAPACITY)
}

/// The shadow worker: runs each copy on the shadow version (through its executor, so the
/// shadow's own inference metrics count it) and records the comparison; returns when every
/// queue sender is gone.
pub async fn run_worker(mut jobs: mpsc::Receiver<ShadowJob>) {
    while let Some(job) = jobs.recv().await {
        let ShadowJob {
            pair,
            rows,
            primary,
        } = job;
        let rows = pair.shadow_rows(rows);
        let compared = match pipeline::infer(&pair.shadow, rows, false).await {
            Ok(inferred) => pair
                .comparator
                .compare(&primary, &inferred.output)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match compared {
            Ok(comparison) => pair.series.record(&comparison),
            Err(reason) => {
                tracing::debug!(
                    model = %pair.shadow.entry.name,
                    shadow_version = %pair.shadow.entry.version,
                    %reason,
                    "shadow copy not compared"
                );
                pair.series.record_failure();
            }
        }
    }
}
