//! The Prometheus observer: events in, encoded samples out.
#![cfg(feature = "prometheus")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use quorum_resilience::prometheus::ResilienceMetrics;
use quorum_resilience::{
    AnyErrorRetryable, BreakerState, Bulkhead, BulkheadConfig, Event, Jitter, Observer, Observers,
    Retry, RetryPolicy,
};

fn encoded(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

fn assert_sample(text: &str, sample: &str) {
    assert!(
        text.lines().any(|line| line == sample),
        "missing sample `{sample}` in:\n{text}"
    );
}

#[test]
fn events_become_samples() {
    let mut registry = Registry::with_prefix("quorum");
    let metrics = ResilienceMetrics::register(&mut registry);
    let obs: &dyn Observer = &metrics;
    let d = Duration::from_millis(1);
    obs.on_event(&Event::Retry {
        name: "llm",
        attempt: 1,
        delay: d,
    });
    obs.on_event(&Event::Retry {
        name: "llm",
        attempt: 2,
        delay: d,
    });
    obs.on_event(&Event::RetryBudgetExhausted { name: "llm" });
    obs.on_event(&Event::RetryGaveUp {
        name: "llm",
        attempts: 3,
    });
    obs.on_event(&Event::BreakerTransition {
        name: "llm",
        from: BreakerState::Closed,
        to: BreakerState::Open,
    });
    obs.on_event(&Event::BreakerTransition {
        name: "llm",
        from: BreakerState::Open,
        to: BreakerState::HalfOpen,
    });
    obs.on_event(&Event::BreakerRejected {
        name: "llm",
        state: BreakerState::Open,
    });
    obs.on_event(&Event::RateLimited {
        name: "api",
        tokens: 5,
    });
    obs.on_event(&Event::BulkheadRejected { name: "db" });
    obs.on_event(&Event::BulkheadRejected { name: "db" });
    obs.on_event(&Event::BulkheadTimedOut { name: "db" });
    obs.on_event(&Event::TimedOut {
        name: "db",
        after: d,
    });

    let text = encoded(&registry);
    assert_sample(&text, r#"quorum_resilience_retries_total{name="llm"} 2"#);
    assert_sample(
        &text,
        r#"quorum_resilience_retry_budget_exhausted_total{name="llm"} 1"#,
    );
    assert_sample(
        &text,
        r#"quorum_resilience_retry_gave_up_total{name="llm"} 1"#,
    );
    assert_sample(&text, r#"quorum_resilience_breaker_state{name="llm"} 1"#);
    assert_sample(
        &text,
        r#"quorum_resilience_breaker_transitions_total{name="llm",from="closed",to="open"} 1"#,
    );
    assert_sample(
        &text,
        r#"quorum_resilience_breaker_transitions_total{name="llm",from="open",to="half_open"} 1"#,
    );
    assert_sample(
        &text,
        r#"quorum_resilience_breaker_rejected_total{name="llm"} 1"#,
    );
    assert_sample(
        &text,
        r#"quorum_resilience_rate_limited_total{name="api"} 1"#,
    );
    assert_sample(
        &text,
        r#"quorum_resilience_bulkhead_rejected_total{name="db",reason="full"} 2"#,
    );
    assert_sample(
        &text,
        r#"quorum_resilience_bulkhead_rejected_total{name="db",reason="timeout"} 1"#,
    );
    assert_sample(&text, r#"quorum_resilience_timeouts_total{name="db"} 1"#);
    assert!(text.contains("# TYPE quorum_resilience_breaker_state gauge"));
    assert!(text.contains("# TYPE quorum_resilience_retries counter"));
}

#[test]
fn forced_states_map_to_the_state_they_behave_like() {
    let mut registry = Registry::default();
    let metrics = ResilienceMetrics::register(&mut registry);
    metrics.on_event(&Event::BreakerTransition {
        name: "b",
        from: BreakerState::Closed,
        to: BreakerState::ForcedOpen,
    });
    assert_sample(
        &encoded(&registry),
        r#"resilience_breaker_state{name="b"} 2"#,
    );
    metrics.on_event(&Event::BreakerTransition {
        name: "b",
        from: BreakerState::ForcedOpen,
        to: BreakerState::ForcedClosed,
    });
    assert_sample(
        &encoded(&registry),
        r#"resilience_breaker_state{name="b"} 0"#,
    );
}

#[tokio::test(start_paused = true)]
async fn mechanisms_feed_the_metrics_through_observers() {
    let mut registry = Registry::with_prefix("quorum");
    let metrics = ResilienceMetrics::register(&mut registry);
    let observers = Observers::new(Arc::new(metrics.clone()));
    let retry = Retry::builder(
        "openai",
        RetryPolicy {
            max_attempts: 3,
            jitter: Jitter::None,
            ..RetryPolicy::default()
        },
    )
    .observers(observers.clone())
    .build()
    .unwrap();
    let _ = retry
        .run(|_| async { Err::<(), _>("boom") }, &AnyErrorRetryable)
        .await;
    let bulkhead = Bulkhead::new(
        "pool",
        BulkheadConfig {
            max_concurrent: 1,
            max_waiting: 0,
            wait_timeout: None,
        },
    )
    .unwrap()
    .with_observers(observers);
    let _held = bulkhead.acquire().await.unwrap();
    assert!(bulkhead.acquire().await.is_err());

    let text = encoded(&registry);
    assert_sample(&text, r#"quorum_resilience_retries_total{name="openai"} 2"#);
    assert_sample(
        &text,
        r#"quorum_resilience_retry_gave_up_total{name="openai"} 1"#,
    );
    assert_sample(
        &text,
        r#"quorum_resilience_bulkhead_rejected_total{name="pool",reason="full"} 1"#,
    );
}
