//! The `quorum-llm` provider conformance suite, over real HTTP against an in-process mock LLM
//! server, plus OpenAI-specific behaviour the suite does not cover.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use quorum_llm::testing::{ConformanceConfig, mock_stats, run_conformance};
use quorum_llm::{ChatRequest, ErrorKind, Provider, StreamItem};
use quorum_llm_openai::{OpenAiConfig, OpenAiProvider};
use quorum_mock_llm::{MockConfig, MockServer, expected_answer};

#[expect(
    clippy::unwrap_used,
    reason = "test helper: a bad mock URL must fail the test"
)]
fn provider(base_url: &str) -> OpenAiProvider {
    let config = OpenAiConfig::new(&format!("{base_url}/v1")).unwrap();
    OpenAiProvider::new("mock-openai", &config).unwrap()
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
    assert!(report.skipped.is_empty(), "{report}");
    server.shutdown().await;
}

#[tokio::test]
async fn answers_match_the_mock_contract() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let p = provider(&server.base_url());
    let answer = p
        .chat(&ChatRequest::user("mock-small", "hello there"))
        .await
        .unwrap();
    assert_eq!(answer.content, expected_answer("hello there", 16));
    assert_eq!(answer.model, "mock-small");
    assert_eq!(answer.usage.unwrap().completion_tokens, 16);
    // The rate-limit headers of the 200 answer are read.
    let limits = answer.rate_limit.unwrap();
    assert_eq!(limits.remaining_requests, Some(9999));
    assert_eq!(limits.remaining_tokens, Some(9_999_000));
    assert_eq!(limits.reset_requests, Some(Duration::from_millis(6)));

    // max_tokens is sent: fewer chunks and a `length` finish.
    let mut short = ChatRequest::user("mock-small", "hello there");
    short.max_tokens = Some(3);
    let mut stream = p.chat_stream(&short).await.unwrap();
    let mut deltas = 0;
    let done = loop {
        match stream.next().await.unwrap().unwrap() {
            StreamItem::Delta(_) => deltas += 1,
            StreamItem::Done(done) => break done,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(deltas, 3);
    assert_eq!(done.finish_reason, quorum_llm::FinishReason::Length);
    assert_eq!(done.usage.unwrap().completion_tokens, 3);
    assert_eq!(done.rate_limit.unwrap().remaining_requests, Some(9999));
    assert!(stream.next().await.is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn api_key_is_sent_as_a_bearer_token() {
    let mut config = MockConfig::ephemeral();
    config.require_api_key = Some(quorum_config::Secret::new("sk-test"));
    let server = MockServer::start(config).await.unwrap();
    let base = format!("{}/v1", server.base_url());

    let anonymous = OpenAiProvider::new("p", &OpenAiConfig::new(&base).unwrap()).unwrap();
    let err = anonymous.list_models().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");

    let mut with_key = OpenAiConfig::new(&base).unwrap();
    with_key.api_key = Some(quorum_config::Secret::new("sk-test"));
    let keyed = OpenAiProvider::new("p", &with_key).unwrap();
    assert!(
        keyed
            .list_models()
            .await
            .unwrap()
            .iter()
            .any(|m| m.id == "mock-small")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn request_timeout_is_a_retryable_timeout_and_cancels_upstream() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let mut config = OpenAiConfig::new(&format!("{}/v1", server.base_url())).unwrap();
    config.timeout.request = quorum_config::Duration::from_millis(200);
    let p = OpenAiProvider::new("p", &config).unwrap();
    let err = p
        .chat(&ChatRequest::user("fault-slow", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while mock_stats(&server.base_url()).await.unwrap().cancelled == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timed-out request was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = provider(&format!("http://{addr}"));
    let err = p
        .chat(&ChatRequest::user("mock-small", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.is_retryable());
    assert!(std::error::Error::source(&err).is_some());
}
