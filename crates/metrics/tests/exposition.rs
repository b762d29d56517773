//! The registry's own output must parse with the strict exposition reader.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a panic is the failure report"
)]

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use quorum_metrics::{FAST_LATENCY_BUCKETS, MetricsRegistry, exposition};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    outcome: String,
}

#[test]
fn encoded_registry_parses_and_reads_back() {
    let mut registry = MetricsRegistry::new();
    registry.register_build_info("test", "1.2.3");
    let calls = Family::<CallLabels, Counter>::default();
    let inflight = Gauge::<i64>::default();
    let latency = Histogram::new(FAST_LATENCY_BUCKETS.iter().copied());
    let llm = registry.sub_registry("llm");
    llm.register("calls", "LLM calls by outcome", calls.clone());
    llm.register("in_flight", "Calls in flight", inflight.clone());
    llm.register("overhead_seconds", "Added latency", latency.clone());
    let shared = registry.into_shared();

    calls
        .get_or_create(&CallLabels {
            provider: "mock \"one\"".into(),
            outcome: "ok".into(),
        })
        .inc_by(7);
    inflight.set(-2);
    latency.observe(0.000_3);
    latency.observe(0.7);

    let text = shared.encode().unwrap();
    let samples = exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let v = |name, labels: &[(&str, &str)]| exposition::value(&samples, name, labels);
    assert_eq!(
        v(
            "quorum_llm_calls_total",
            &[("provider", "mock \"one\""), ("outcome", "ok")]
        ),
        Some(7.0)
    );
    assert_eq!(v("quorum_llm_in_flight", &[]), Some(-2.0));
    assert_eq!(v("quorum_llm_overhead_seconds_count", &[]), Some(2.0));
    assert_eq!(
        v("quorum_llm_overhead_seconds_bucket", &[("le", "0.0005")]),
        Some(1.0)
    );
    assert_eq!(
        v("quorum_llm_overhead_seconds_bucket", &[("le", "+Inf")]),
        Some(2.0)
    );
    assert_eq!(
        v(
            "quorum_build_info",
            &[("component", "test"), ("version", "1.2.3")]
        ),
        Some(1.0)
    );
}
