//! The conformance suite itself: a provider that ignores the mock must fail the checks it
//! breaks, each reported by name (feature `test-util`).
#![cfg(feature = "test-util")]

use std::sync::Arc;

use async_trait::async_trait;
use quorum_llm::testing::{ConformanceConfig, mock_stats, run_conformance};
use quorum_llm::{ChatRequest, ChatResponse, LlmError, ModelInfo, Provider, Usage};
use quorum_mock_llm::{MockConfig, MockServer};

/// Answers every model, never fails, never talks to the mock.
struct Oblivious;

#[async_trait]
impl Provider for Oblivious {
    fn name(&self) -> &str {
        "oblivious"
    }

    fn kind(&self) -> &str {
        "fake"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        Ok(ChatResponse {
            content: "answer".into(),
            usage: Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 1,
            }),
            timings: quorum_llm::Timings {
                total: std::time::Duration::from_millis(1),
                time_to_first_token: Some(std::time::Duration::from_millis(1)),
                ..Default::default()
            },
            provider: self.name().to_owned(),
            model: request.model.clone(),
            ..ChatResponse::default()
        })
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        Ok(vec![ModelInfo::new("mock-small")])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_ignores_errors_fails_by_check_name() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let config = ConformanceConfig {
        cancel_deadline: std::time::Duration::from_millis(300),
        skip: vec!["stream_reset".into()],
        ..ConformanceConfig::default()
    };
    let report = run_conformance(
        |_| Arc::new(Oblivious) as Arc<dyn Provider>,
        &server.base_url(),
        &config,
    )
    .await;
    let failed: Vec<&str> = report
        .failed
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    for name in [
        "error/fault-429",
        "stream_error/fault-quota",
        "error/no-such-model-xyz",
        "stream_midstream_error",
        "stream_truncated",
        "chat_reset",
        "cancel_chat",
        "cancel_stream",
    ] {
        assert!(failed.contains(&name), "{name} did not fail:\n{report}");
    }
    for name in ["chat", "chat_stream", "list_models", "health"] {
        assert!(
            report.passed.iter().any(|p| p == name),
            "{name} did not pass:\n{report}"
        );
    }
    assert!(report.skipped.iter().any(|(n, _)| n == "stream_reset"));
    assert!(report.skipped.iter().any(|(n, _)| n == "embeddings"));
    assert!(!report.is_ok());
    // The suite's stats reader agrees with the mock's own counters.
    let stats = mock_stats(&server.base_url()).await.unwrap();
    assert_eq!(stats.requests, server.stats().requests);
    server.shutdown().await;
}
