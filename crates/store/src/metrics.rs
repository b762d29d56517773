//! Prometheus metrics for retention: what each cleanup run removed, per table, and how runs
//! ended. Register once with the binary's registry and hand every [`Store::cleanup`] outcome to
//! [`StoreMetrics::observe_cleanup`] (for example as [`Store::spawn_cleanup`]'s callback).
//!
//! [`Store::cleanup`]: crate::Store::cleanup
//! [`Store::spawn_cleanup`]: crate::Store::spawn_cleanup

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::{CleanupReport, StoreError};

/// Metric names, without the registry's `quorum_` prefix (counters get `_total` on export).
pub mod names {
    /// Rows deleted by retention, label [`TABLE`](super::labels::TABLE).
    pub const CLEANUP_DELETED_ROWS: &str = "store_cleanup_deleted_rows";
    /// Cleanup runs, label [`OUTCOME`](super::labels::OUTCOME) (`ok` or `error`).
    pub const CLEANUP_RUNS: &str = "store_cleanup_runs";
}

/// Label keys.
pub mod labels {
    /// The table rows were deleted from (`jobs_completed`, `messages`, `usage_records`, …).
    pub const TABLE: &str = "table";
    /// How a run ended.
    pub const OUTCOME: &str = "outcome";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The store's metric families; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct StoreMetrics {
    deleted: Family<TableLabels, Counter>,
    runs: Family<OutcomeLabels, Counter>,
}

impl StoreMetrics {
    /// Registers the families in `registry` (the binary's, which adds the `quorum_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = StoreMetrics::default();
        registry.register(
            names::CLEANUP_DELETED_ROWS,
            "Rows deleted by retention cleanup",
            metrics.deleted.clone(),
        );
        registry.register(
            names::CLEANUP_RUNS,
            "Retention cleanup runs by outcome",
            metrics.runs.clone(),
        );
        metrics
    }

    /// Counts one cleanup run and what it deleted.
    pub fn observe_cleanup(&self, outcome: &Result<CleanupReport, StoreError>) {
        let report = match outcome {
            Ok(report) => report,
            Err(_) => {
                self.runs
                    .get_or_create(&OutcomeLabels { outcome: "error" })
                    .inc();
                return;
            }
        };
        self.runs
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .inc();
        let add = |table: String, rows: u64| {
            if rows > 0 {
                self.deleted
                    .get_or_create(&TableLabels { table })
                    .inc_by(rows);
            }
        };
        for (state, rows) in &report.jobs {
            add(format!("jobs_{}", state.as_str()), *rows);
        }
        add("sessions".into(), report.sessions);
        add("messages".into(), report.messages);
        add("usage_records".into(), report.usage_records);
        add("decisions".into(), report.decisions);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::JobState;

    #[test]
    fn cleanup_outcomes_become_counters() {
        let mut registry = Registry::with_prefix("quorum");
        let metrics = StoreMetrics::register(&mut registry);
        let report = CleanupReport {
            jobs: BTreeMap::from([(JobState::Completed, 3), (JobState::Failed, 0)]),
            messages: 7,
            ..CleanupReport::default()
        };
        metrics.observe_cleanup(&Ok(report.clone()));
        metrics.observe_cleanup(&Ok(report));
        metrics.observe_cleanup(&Err(StoreError::invalid(
            "batch_size",
            "must be at least 1",
        )));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            r#"quorum_store_cleanup_deleted_rows_total{table="jobs_completed"} 6"#,
            r#"quorum_store_cleanup_deleted_rows_total{table="messages"} 14"#,
            r#"quorum_store_cleanup_runs_total{outcome="ok"} 2"#,
            r#"quorum_store_cleanup_runs_total{outcome="error"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Tables with nothing deleted get no series.
        assert!(!text.contains("jobs_failed"), "{text}");
        assert!(!text.contains(r#"table="sessions""#), "{text}");
    }
}
