//! The resilient provider and the router over real HTTP, against the mock LLM server with its
//! fault injection: an OpenAI-compatible provider pointed at a mock started per test.
//!
//! Real sockets cannot use the paused clock, so timings are kept short and checked with loose
//! lower bounds; the counts come from the mock's own statistics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures_util::StreamExt;
use quorum_config::Duration;
use quorum_llm::resilient::{BreakerSettings, BudgetSettings, RetrySettings};
use quorum_llm::{
    ChatRequest, ErrorKind, Message, Provider, ResilienceConfig, ResilientProvider, RouteStep,
    Router, SkipReason, StreamItem, collect_stream, is_breaker_open,
};
use quorum_llm_openai::{OpenAiConfig, OpenAiProvider};
use quorum_mock_llm::{FaultKind, FaultRule, MockConfig, MockServer, ModelConfig};
use tokio::time::Instant;

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("mock server starts")
}

fn openai(server: &MockServer, name: &str) -> Arc<dyn Provider> {
    let config = OpenAiConfig::new(&format!("{}/v1", server.base_url())).unwrap();
    Arc::new(OpenAiProvider::new(name, &config).unwrap())
}

/// Fast retries; a breaker that does not trip on a 30 % failure rate.
fn config() -> ResilienceConfig {
    ResilienceConfig {
        retry: RetrySettings {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(5),
            ..RetrySettings::default()
        },
        timeout: Duration::from_secs(5),
        time_to_first_token: Some(Duration::from_secs(2)),
        ..ResilienceConfig::default()
    }
}

fn resilient(provider: &Arc<dyn Provider>, config: &ResilienceConfig) -> Arc<dyn Provider> {
    Arc::new(ResilientProvider::new(provider.clone(), config).unwrap())
}

fn count(server: &MockServer, model: &str) -> u64 {
    server.stats().by_model.get(model).copied().unwrap_or(0)
}

/// Waits (polling the mock, up to 5 s) until it has counted `n` cancelled requests.
async fn wait_cancelled(server: &MockServer, n: u64) -> u64 {
    let until = Instant::now() + StdDuration::from_secs(5);
    loop {
        let cancelled = server.stats().cancelled;
        if cancelled >= n || Instant::now() >= until {
            return cancelled;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_primary_with_fallback_succeeds_within_the_retry_budget() {
    let server = start(MockConfig::ephemeral()).await;
    let http = openai(&server, "mock");
    let (ratio, floor_per_sec, ttl_secs) = (0.1, 1, 10);
    let mut primary_config = config();
    primary_config.budget = BudgetSettings {
        ttl: Duration::from_secs(ttl_secs),
        min_retries_per_sec: floor_per_sec,
        retry_ratio: ratio,
    };
    let router = Router::builder("gw")
        .route(
            "smart",
            vec![
                RouteStep::new(resilient(&http, &primary_config), "fault-flaky-30"),
                RouteStep::new(resilient(&http, &config()), "mock-small"),
            ],
        )
        .build()
        .unwrap();
    let calls = 1000;
    let results: Vec<_> = futures_util::stream::iter(0..calls)
        .map(|i| {
            let router = router.clone();
            async move {
                let request = ChatRequest::user("smart", format!("question {i}"));
                router.chat_routed(&request).await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let fell_back = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.model == "mock-small"))
        .count();
    assert!(
        ok * 1000 >= calls * 999,
        "only {ok} of {calls} calls succeeded"
    );
    eprintln!(
        "flaky: {ok}/{calls} ok, {fell_back} fell back, upstream {:?}",
        server.stats().by_model
    );

    let primary = count(&server, "fault-flaky-30");
    let fallback = count(&server, "mock-small");
    // The budget caps the extra load on the failing model: without it, 3 attempts at 30 %
    // failure would send about 1000 + 300 + 90 requests.
    let cap = (calls as f64 * (1.0 + ratio)) as u64 + u64::from(floor_per_sec) * ttl_secs;
    assert!(primary <= cap, "{primary} upstream requests > cap {cap}");
    assert!(primary > calls as u64, "no retries at all ({primary})");
    assert!(
        fell_back > 0 && fallback == fell_back as u64,
        "{fallback} vs {fell_back}"
    );
    assert_eq!(server.stats().requests, primary + fallback);
    server.shutdown().await;
}

#[tokio::test]
async fn auth_and_quota_errors_are_never_retried_nor_fallen_back_from() {
    let server = start(MockConfig::ephemeral()).await;
    let http = openai(&server, "mock");
    let mut config = config();
    config.retry.max_attempts = 5;
    let provider = resilient(&http, &config);
    for (model, kind) in [
        ("fault-401", ErrorKind::Auth),
        ("fault-quota", ErrorKind::QuotaExhausted),
    ] {
        let err = provider
            .chat(&ChatRequest::user(model, "hi"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(count(&server, model), 1, "{model} was retried");

        let router = Router::builder("gw")
            .route(
                "smart",
                vec![
                    RouteStep::new(provider.clone(), model),
                    RouteStep::new(provider.clone(), "mock-small"),
                ],
            )
            .build()
            .unwrap();
        let err = router
            .chat_routed(&ChatRequest::user("smart", "hi"))
            .await
            .unwrap_err();
        assert_eq!(err.error.kind(), kind);
        assert_eq!(count(&server, model), 2);
        assert_eq!(count(&server, "mock-small"), 0);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_breaker_opens_on_a_dead_provider_fails_fast_and_closes_after_recovery() {
    let server = start(MockConfig::ephemeral()).await;
    let http = openai(&server, "mock");
    let mut config = config();
    config.retry.max_attempts = 1;
    config.breaker = BreakerSettings {
        window: 4,
        minimum_calls: 4,
        open_duration: Duration::from_millis(300),
        half_open_probes: 1,
        ..BreakerSettings::default()
    };
    let provider = ResilientProvider::new(http.clone(), &config).unwrap();
    let request = ChatRequest::user("mock-small", "hi");

    // The provider dies: every request fails with 503.
    let mut dead = server.config();
    dead.faults = vec![FaultRule::rate(FaultKind::Status(503), 1.0)];
    server.set_config(dead).unwrap();
    for _ in 0..4 {
        let err = provider.chat(&request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
    }
    assert_eq!(server.stats().requests, 4);

    // Open: calls fail fast without reaching the server.
    let start_open = Instant::now();
    let mut hint = StdDuration::ZERO;
    for _ in 0..20 {
        let err = provider.chat(&request).await.unwrap_err();
        assert!(is_breaker_open(&err), "{err}");
        hint = err.retry_after().unwrap();
    }
    assert!(start_open.elapsed() < StdDuration::from_millis(250));
    assert_eq!(server.stats().requests, 4);

    // A router falls back to the next step without calling the open one.
    let fallback = ResilientProvider::new(http.clone(), &config).unwrap();
    let router = Router::builder("gw")
        .route(
            "smart",
            vec![
                RouteStep::new(Arc::new(provider.clone()), "mock-small"),
                RouteStep::new(Arc::new(fallback), "mock-large"),
            ],
        )
        .build()
        .unwrap();
    let mut recovered = server.config();
    recovered.faults.clear();
    server.set_config(recovered).unwrap();
    let routed = router
        .chat_routed(&ChatRequest::user("smart", "hi"))
        .await
        .unwrap();
    assert_eq!(routed.model, "mock-large");
    assert!(matches!(
        routed.skipped[0].reason,
        SkipReason::BreakerOpen { .. }
    ));
    assert_eq!(count(&server, "mock-small"), 4);

    // Recovery: once the open duration passes, a probe succeeds and the breaker closes.
    tokio::time::sleep(hint).await;
    provider.chat(&request).await.unwrap();
    let breaker = provider.breaker("mock-small").unwrap();
    assert_eq!(breaker.state(), quorum_resilience::BreakerState::Closed);
    assert_eq!(count(&server, "mock-small"), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn a_429_retry_after_is_honoured() {
    let server = start(MockConfig::ephemeral()).await;
    let http = openai(&server, "mock");
    let mut config = config();
    config.retry.max_attempts = 2;
    let provider = resilient(&http, &config);
    let started = Instant::now();
    let err = provider
        .chat(&ChatRequest::user("fault-429", "hi"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(StdDuration::from_secs(1)));
    assert_eq!(count(&server, "fault-429"), 2);
    // The retry waited for the server's hint (1 s), not the 1-5 ms backoff.
    assert!(elapsed >= StdDuration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < StdDuration::from_secs(4), "{elapsed:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_a_call_aborts_the_http_request() {
    let server = start(MockConfig::ephemeral()).await;
    let provider = resilient(&openai(&server, "mock"), &config());
    let request = ChatRequest::user("fault-slow", "hi");
    let call = provider.chat(&request);
    assert!(
        tokio::time::timeout(StdDuration::from_millis(200), call)
            .await
            .is_err()
    );
    assert_eq!(wait_cancelled(&server, 1).await, 1);
    assert_eq!(server.stats().active, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_without_a_first_token_in_time_is_retried_then_fails() {
    let mut mock = MockConfig::ephemeral();
    mock.time_to_first_token = Duration::from_secs(3);
    let server = start(mock).await;
    let mut config = config();
    config.retry.max_attempts = 2;
    config.time_to_first_token = Some(Duration::from_millis(200));
    let provider = resilient(&openai(&server, "mock"), &config);
    let started = Instant::now();
    let Err(err) = provider
        .chat_stream(&ChatRequest::user("mock-small", "hi"))
        .await
    else {
        panic!("the stream should time out");
    };
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let elapsed = started.elapsed();
    assert!(elapsed >= StdDuration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < StdDuration::from_secs(2), "{elapsed:?}");
    assert_eq!(count(&server, "mock-small"), 2);
    // Both abandoned attempts were cancelled upstream.
    assert_eq!(wait_cancelled(&server, 2).await, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_fails_over_before_the_first_token_but_not_after() {
    let server = start(MockConfig::ephemeral()).await;
    let http = openai(&server, "mock");
    let mut config = config();
    config.retry.max_attempts = 1;
    let router = |primary: &str| {
        Router::builder("gw")
            .route(
                "smart",
                vec![
                    RouteStep::new(resilient(&http, &config), primary),
                    RouteStep::new(resilient(&http, &config), "mock-small"),
                ],
            )
            .build()
            .unwrap()
    };
    // Before the first token (a 503): the next step answers.
    let routed = router("fault-503")
        .chat_stream_routed(&ChatRequest::user("smart", "hi"))
        .await
        .unwrap();
    assert_eq!(routed.model, "mock-small");
    let answer = collect_stream(routed.value).await.unwrap();
    assert!(
        answer.content.starts_with("mock answer to: hi"),
        "{}",
        answer.content
    );

    // After it (two chunks, then an in-stream error): the error is the terminal item.
    let mut stream = router("fault-midstream")
        .chat_stream(&ChatRequest::user("smart", "hi"))
        .await
        .unwrap();
    let mut deltas = 0;
    let terminal = loop {
        match stream.next().await.expect("a terminal item") {
            Ok(StreamItem::Delta(_)) => deltas += 1,
            other => break other,
        }
    };
    assert_eq!(deltas, 2);
    assert!(terminal.is_err());
    assert!(stream.next().await.is_none());
    assert_eq!(count(&server, "mock-small"), 1);
    server.shutdown().await;
}

fn long_history() -> ChatRequest {
    let mut messages = vec![Message::system("be brief")];
    for i in 0..8 {
        messages.push(Message::user(format!("question {i}: {}", "x".repeat(200))));
        messages.push(Message::assistant(format!(
            "answer {i}: {}",
            "y".repeat(200)
        )));
    }
    messages.push(Message::user("and finally?"));
    ChatRequest::new("smart", messages)
}

#[tokio::test]
async fn context_length_moves_to_a_larger_model_or_trims_the_history() {
    let mut mock = MockConfig::ephemeral();
    let mut tiny = ModelConfig::new("tiny");
    tiny.context_window = Some(200);
    mock.models.push(tiny);
    let server = start(mock).await;
    let http = openai(&server, "mock");
    let provider = resilient(&http, &config());
    let providers: BTreeMap<String, Arc<dyn Provider>> =
        [("mock".to_owned(), provider.clone())].into();
    let config: quorum_llm::RouterConfig = serde_json::from_value(serde_json::json!({
        "routes": {
            "smart": [
                {"provider": "mock", "model": "tiny", "context_window": 200},
                {"provider": "mock", "model": "mock-large", "context_window": 100000},
            ],
            "small-only": [{"provider": "mock", "model": "tiny", "context_window": 200}],
        }
    }))
    .unwrap();
    let router = Router::from_config("gw", &config, &providers).unwrap();

    let routed = router.chat_routed(&long_history()).await.unwrap();
    assert_eq!(routed.model, "mock-large");
    assert!(matches!(
        routed.skipped[0].reason,
        SkipReason::ContextLength { .. }
    ));
    assert_eq!(count(&server, "tiny"), 1);

    let mut request = long_history();
    request.model = "small-only".into();
    let routed = router.chat_routed(&request).await.unwrap();
    assert_eq!(routed.model, "tiny");
    assert!(routed.trimmed_messages > 0);
    assert!(routed.value.content.contains("and finally?"));
    assert_eq!(count(&server, "tiny"), 3);
    server.shutdown().await;
}
