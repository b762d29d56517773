//! The `quorum-llm` provider conformance suite, over real HTTP against an in-process mock LLM
//! server speaking the Anthropic Messages API, plus Anthropic-specific behaviour the suite does
//! not cover.

use std::sync::Arc;

use futures_util::StreamExt;
use quorum_llm::testing::{ConformanceConfig, run_conformance};
use quorum_llm::{ChatRequest, ErrorKind, FinishReason, Message, Provider, StreamItem};
use quorum_llm_anthropic::{AnthropicConfig, AnthropicProvider};
use quorum_mock_llm::{MockConfig, MockServer, expected_answer};

const KEY: &str = "sk-ant-test";

#[expect(
    clippy::unwrap_used,
    reason = "test helper: a bad mock URL must fail the test"
)]
fn provider_with(base_url: &str, edit: impl FnOnce(&mut AnthropicConfig)) -> AnthropicProvider {
    let mut config = AnthropicConfig::new(base_url).unwrap();
    config.api_key = Some(quorum_config::Secret::new(KEY));
    edit(&mut config);
    AnthropicProvider::new("mock-anthropic", &config).unwrap()
}

fn provider(base_url: &str) -> AnthropicProvider {
    provider_with(base_url, |_| {})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_provider_conformance_suite() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let report = run_conformance(
        |base| Arc::new(provider(base)) as Arc<dyn Provider>,
        &server.base_url(),
        &ConformanceConfig::default(),
    )
    .await;
    println!("{report}");
    report.assert_passed();
    // Anthropic has no embeddings endpoint: that check is the only one skipped.
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(skipped, ["embeddings"], "{report}");
    server.shutdown().await;
}

#[tokio::test]
async fn answers_match_the_mock_contract() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let p = provider(&server.base_url());
    let mut request = ChatRequest::new(
        "mock-large",
        vec![
            Message::system("from a system message"),
            Message::user("hello there"),
        ],
    );
    request.system = Some("be brief".into());
    request.seed = Some(7); // not sent: the API has no seed
    let answer = p.chat(&request).await.unwrap();
    assert_eq!(answer.content, expected_answer("hello there", 16));
    assert_eq!(answer.model, "mock-large");
    assert_eq!(answer.provider, "mock-anthropic");
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let usage = answer.usage.unwrap();
    assert_eq!(usage.completion_tokens, 16);
    assert!(usage.prompt_tokens > 0);
    // The rate-limit headers of the 200 answer are read.
    let limits = answer.rate_limit.unwrap();
    assert_eq!(limits.remaining_requests, Some(9999));
    assert_eq!(limits.remaining_tokens, Some(9_999_000));

    // max_tokens is sent as is: fewer chunks and a `max_tokens` (length) finish.
    request.max_tokens = Some(3);
    let mut stream = p.chat_stream(&request).await.unwrap();
    let mut deltas = 0;
    let done = loop {
        match stream.next().await.unwrap().unwrap() {
            StreamItem::Delta(_) => deltas += 1,
            StreamItem::Done(done) => break done,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(deltas, 3);
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!(done.usage.unwrap().completion_tokens, 3);
    assert_eq!(done.usage.unwrap().prompt_tokens, usage.prompt_tokens);
    assert_eq!(done.rate_limit.unwrap().remaining_requests, Some(9999));
    assert!(stream.next().await.is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn the_default_max_tokens_is_sent_when_the_request_has_none() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    // A default below the mock's 16 chunks shows it was sent.
    let p = provider_with(&server.base_url(), |c| c.default_max_tokens = 2);
    let answer = p.chat(&ChatRequest::user("mock-small", "q")).await.unwrap();
    assert_eq!(answer.usage.unwrap().completion_tokens, 2);
    assert_eq!(answer.finish_reason, FinishReason::Length);
    server.shutdown().await;
}

#[tokio::test]
async fn the_api_key_is_sent_and_required() {
    let mut config = MockConfig::ephemeral();
    config.require_api_key = Some(quorum_config::Secret::new(KEY));
    let server = MockServer::start(config).await.unwrap();

    let good = provider(&server.base_url());
    good.chat(&ChatRequest::user("mock-small", "q"))
        .await
        .unwrap();

    let anonymous = provider_with(&server.base_url(), |c| c.api_key = None);
    let err = anonymous
        .chat(&ChatRequest::user("mock-small", "q"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert_eq!(
        err.api().unwrap().error_type.as_deref(),
        Some("authentication_error")
    );

    let wrong = provider_with(&server.base_url(), |c| {
        c.api_key = Some(quorum_config::Secret::new("sk-ant-wrong"));
    });
    let err = wrong.list_models().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_keep_the_anthropic_type_and_retry_hint() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let p = provider(&server.base_url());
    let err = p
        .chat(&ChatRequest::user("fault-429", "q"))
        .await
        .unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.error_type.as_deref(), Some("rate_limit_error"));
    assert_eq!(api.status, Some(429));
    assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(1)));

    let err = p
        .chat(&ChatRequest::user("fault-context", "q"))
        .await
        .unwrap_err();
    assert!(err.is_context_length(), "{err}");
    assert!(err.api().unwrap().message.contains("prompt is too long"));

    let err = p
        .chat(&ChatRequest::user("fault-529", "q"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert_eq!(
        err.api().unwrap().error_type.as_deref(),
        Some("overloaded_error")
    );

    // Checked before sending.
    let err = p
        .chat(&ChatRequest::new("mock-small", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    server.shutdown().await;
}

#[tokio::test]
async fn models_are_listed_in_anthropic_shape() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let models = provider(&server.base_url()).list_models().await.unwrap();
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert!(ids.contains(&"mock-large"), "{ids:?}");
    assert!(
        models
            .iter()
            .all(|m| m.owned_by.as_deref() == Some("anthropic"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn request_timeout_is_a_typed_timeout() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let p = provider_with(&server.base_url(), |c| {
        c.timeout.request = quorum_config::Duration::from_millis(300);
    });
    let err = p
        .chat_stream(&ChatRequest::user("fault-slow", "q"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    server.shutdown().await;
}
