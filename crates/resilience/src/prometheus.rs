//! Prometheus metrics for resilience [`Event`]s (feature `prometheus`, `prometheus-client`).
//!
//! [`ResilienceMetrics::register`] adds the families to the binary's registry; the metrics value
//! is an [`Observer`], so one clone of it is handed to every mechanism:
//!
//! ```
//! # use std::sync::Arc;
//! use prometheus_client::registry::Registry;
//! use quorum_resilience::{Observers, prometheus::ResilienceMetrics};
//!
//! let mut registry = Registry::with_prefix("quorum");
//! let metrics = ResilienceMetrics::register(&mut registry);
//! let observers = Observers::new(Arc::new(metrics.clone()));
//! # let _ = observers;
//! ```
//!
//! Names carry **no** `quorum_` prefix: the binary's registry adds it with
//! `Registry::with_prefix("quorum")`, so [`names::RETRIES`] is exposed as
//! `quorum_resilience_retries_total` (`prometheus-client` appends `_total` to counters).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::event::{Event, Observer};

/// Metric family names as registered (counters are exposed with a `_total` suffix).
pub mod names {
    /// Gauge: 0 closed, 1 half-open, 2 open (labels: `name`).
    pub const BREAKER_STATE: &str = "resilience_breaker_state";
    /// Counter `resilience_breaker_transitions_total` (labels: `name`, `from`, `to`).
    pub const BREAKER_TRANSITIONS: &str = "resilience_breaker_transitions";
    /// Counter `resilience_breaker_rejected_total` (labels: `name`).
    pub const BREAKER_REJECTED: &str = "resilience_breaker_rejected";
    /// Counter `resilience_retries_total` (labels: `name`).
    pub const RETRIES: &str = "resilience_retries";
    /// Counter `resilience_retry_budget_exhausted_total` (labels: `name`).
    pub const RETRY_BUDGET_EXHAUSTED: &str = "resilience_retry_budget_exhausted";
    /// Counter `resilience_retry_gave_up_total` (labels: `name`).
    pub const RETRY_GAVE_UP: &str = "resilience_retry_gave_up";
    /// Counter `resilience_rate_limited_total` (labels: `name`).
    pub const RATE_LIMITED: &str = "resilience_rate_limited";
    /// Counter `resilience_bulkhead_rejected_total` (labels: `name`, `reason` = `full`|`timeout`).
    pub const BULKHEAD_REJECTED: &str = "resilience_bulkhead_rejected";
    /// Counter `resilience_timeouts_total` (labels: `name`).
    pub const TIMEOUTS: &str = "resilience_timeouts";
}

/// Label keys and fixed label values.
pub mod labels {
    /// The mechanism instance's name.
    pub const NAME: &str = "name";
    /// A breaker transition's previous state.
    pub const FROM: &str = "from";
    /// A breaker transition's new state.
    pub const TO: &str = "to";
    /// Why a bulkhead refused a call.
    pub const REASON: &str = "reason";
    /// `reason` value: the bulkhead and its queue were full.
    pub const REASON_FULL: &str = "full";
    /// `reason` value: the call timed out in the bulkhead's queue.
    pub const REASON_TIMEOUT: &str = "timeout";
}

type NameLabels = [(&'static str, String); 1];
type TransitionLabels = [(&'static str, String); 3];
type ReasonLabels = [(&'static str, String); 2];

/// The resilience metric families; an [`Observer`] that updates them. Cheap to clone (clones
/// update the same families).
#[derive(Debug, Clone)]
pub struct ResilienceMetrics {
    inner: Arc<Families>,
}

#[derive(Debug, Default)]
struct Families {
    breaker_state: Family<NameLabels, Gauge>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    breaker_rejected: Family<NameLabels, Counter>,
    retries: Family<NameLabels, Counter>,
    retry_budget_exhausted: Family<NameLabels, Counter>,
    retry_gave_up: Family<NameLabels, Counter>,
    rate_limited: Family<NameLabels, Counter>,
    bulkhead_rejected: Family<ReasonLabels, Counter>,
    timeouts: Family<NameLabels, Counter>,
}

impl ResilienceMetrics {
    /// Registers every family in `registry` (give it the `quorum` prefix) and returns the handle.
    pub fn register(registry: &mut Registry) -> Self {
        let f = Families::default();
        registry.register(
            names::BREAKER_STATE,
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            f.breaker_state.clone(),
        );
        registry.register(
            names::BREAKER_TRANSITIONS,
            "Circuit breaker state transitions",
            f.breaker_transitions.clone(),
        );
        registry.register(
            names::BREAKER_REJECTED,
            "Calls rejected by an open circuit breaker",
            f.breaker_rejected.clone(),
        );
        registry.register(names::RETRIES, "Retries attempted", f.retries.clone());
        registry.register(
            names::RETRY_BUDGET_EXHAUSTED,
            "Retries refused by the retry budget",
            f.retry_budget_exhausted.clone(),
        );
        registry.register(
            names::RETRY_GAVE_UP,
            "Retry loops that gave up",
            f.retry_gave_up.clone(),
        );
        registry.register(
            names::RATE_LIMITED,
            "Requests refused or delayed by a rate limiter",
            f.rate_limited.clone(),
        );
        registry.register(
            names::BULKHEAD_REJECTED,
            "Calls refused by a bulkhead",
            f.bulkhead_rejected.clone(),
        );
        registry.register(names::TIMEOUTS, "Calls that timed out", f.timeouts.clone());
        ResilienceMetrics { inner: Arc::new(f) }
    }
}

fn name_labels(name: &str) -> NameLabels {
    [(labels::NAME, name.to_owned())]
}

fn inc(family: &Family<NameLabels, Counter>, instance: &str) {
    family.get_or_create(&name_labels(instance)).inc();
}

impl Observer for ResilienceMetrics {
    fn on_event(&self, event: &Event<'_>) {
        let f = &*self.inner;
        match *event {
            Event::Retry { name, .. } => inc(&f.retries, name),
            Event::RetryBudgetExhausted { name } => inc(&f.retry_budget_exhausted, name),
            Event::RetryGaveUp { name, .. } => inc(&f.retry_gave_up, name),
            Event::BreakerTransition { name, from, to } => {
                f.breaker_state
                    .get_or_create(&name_labels(name))
                    .set(to.gauge_value());
                f.breaker_transitions
                    .get_or_create(&[
                        (labels::NAME, name.to_owned()),
                        (labels::FROM, from.as_str().to_owned()),
                        (labels::TO, to.as_str().to_owned()),
                    ])
                    .inc();
            }
            Event::BreakerRejected { name, .. } => inc(&f.breaker_rejected, name),
            Event::RateLimited { name, .. } => inc(&f.rate_limited, name),
            Event::BulkheadRejected { name } => {
                bulkhead(&f.bulkhead_rejected, name, labels::REASON_FULL);
            }
            Event::BulkheadTimedOut { name } => {
                bulkhead(&f.bulkhead_rejected, name, labels::REASON_TIMEOUT);
            }
            Event::TimedOut { name, .. } => inc(&f.timeouts, name),
            // Events added later are not exported until a metric is defined for them.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

fn bulkhead(family: &Family<ReasonLabels, Counter>, name: &str, reason: &str) {
    family
        .get_or_create(&[
            (labels::NAME, name.to_owned()),
            (labels::REASON, reason.to_owned()),
        ])
        .inc();
}
