//! The `quorum-llm` provider conformance suite, over real HTTP against an in-process mock LLM
//! server speaking Ollama's native API, plus Ollama-specific behaviour the suite does not cover.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use quorum_llm::testing::{ConformanceConfig, run_conformance};
use quorum_llm::{
    ChatRequest, EmbeddingRequest, ErrorKind, FinishReason, Provider, StreamItem, collect_stream,
};
use quorum_llm_ollama::{ENDPOINT_KEY, ModelPattern, OllamaConfig, OllamaProvider};
use quorum_mock_llm::{MockConfig, MockServer, expected_answer};

#[expect(
    clippy::unwrap_used,
    reason = "test helper: a bad mock URL must fail the test"
)]
fn provider_with(base_url: &str, edit: impl FnOnce(&mut OllamaConfig)) -> OllamaProvider {
    let mut config = OllamaConfig::new(base_url).unwrap();
    edit(&mut config);
    OllamaProvider::new("mock-ollama", &config).unwrap()
}

fn provider(base_url: &str) -> OllamaProvider {
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
    assert!(report.skipped.is_empty(), "{report}");
    server.shutdown().await;
}

/// The same suite with every model routed to the legacy `/api/generate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_suite_through_api_generate() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let report = run_conformance(
        |base| {
            Arc::new(provider_with(base, |c| {
                c.generate_models = vec![ModelPattern::new("*").unwrap()];
            })) as Arc<dyn Provider>
        },
        &server.base_url(),
        &ConformanceConfig::default(),
    )
    .await;
    println!("{report}");
    report.assert_passed();
    server.shutdown().await;
}

#[tokio::test]
async fn answers_match_the_mock_contract() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let p = provider(&server.base_url());
    let answer = p
        .chat(&ChatRequest::user("gemma3:1b", "hello there"))
        .await
        .unwrap();
    assert_eq!(answer.content, expected_answer("hello there", 16));
    assert_eq!(answer.model, "gemma3:1b");
    assert_eq!(answer.provider, "mock-ollama");
    assert_eq!(
        answer.rate_limit, None,
        "ollama sends no rate-limit headers"
    );
    assert_eq!(answer.usage.unwrap().completion_tokens, 16);
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    // Ollama's nanosecond durations arrive as provider timings.
    let reported = answer.timings.provider;
    assert!(
        reported.total.is_some_and(|t| t > Duration::ZERO),
        "{reported:?}"
    );
    assert!(reported.load.is_some() && reported.prompt_eval.is_some() && reported.eval.is_some());

    // max_tokens is sent as options.num_predict: fewer chunks and a `length` finish.
    let mut short = ChatRequest::user("gemma3:1b", "hello there");
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
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!(done.usage.unwrap().completion_tokens, 3);
    assert!(done.timings.provider.eval.is_some());
    assert!(stream.next().await.is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn generate_is_chosen_by_config_or_per_request() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let p = provider_with(&server.base_url(), |c| {
        c.generate_models = vec![ModelPattern::new("gemma3:*").unwrap()];
    });
    let mut request = ChatRequest::user("gemma3:1b", "via generate");
    request.system = Some("be brief".into());
    let answer = p.chat(&request).await.unwrap();
    assert_eq!(answer.content, expected_answer("via generate", 16));
    let streamed = collect_stream(p.chat_stream(&request).await.unwrap())
        .await
        .unwrap();
    assert_eq!(streamed.content, answer.content);
    assert_eq!(streamed.usage, answer.usage);

    // A chat model asked through /api/generate by the request itself, and the reverse.
    let mut per_request = ChatRequest::user("llama3.2:1b", "per request");
    per_request
        .extra
        .insert(ENDPOINT_KEY.into(), "generate".into());
    assert_eq!(
        p.chat(&per_request).await.unwrap().content,
        expected_answer("per request", 16)
    );
    request.extra.insert(ENDPOINT_KEY.into(), "chat".into());
    assert_eq!(
        p.chat(&request).await.unwrap().content,
        expected_answer("via generate", 16)
    );
    per_request.extra.insert(ENDPOINT_KEY.into(), "nope".into());
    let err = p.chat(&per_request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    server.shutdown().await;
}

#[tokio::test]
async fn embeddings_and_tags() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let p = provider(&server.base_url());
    let embeddings = p.embeddings().unwrap();
    let answer = embeddings
        .embed(&EmbeddingRequest::new(
            "llama3.2:1b",
            vec!["a".into(), "bb".into(), "ccc".into()],
        ))
        .await
        .unwrap();
    assert_eq!(answer.embeddings.len(), 3);
    let dims = MockConfig::ephemeral().embedding_dim as usize;
    assert!(answer.embeddings.iter().all(|v| v.len() == dims));
    assert_eq!(answer.model, "llama3.2:1b");
    assert!(answer.usage.unwrap().prompt_tokens > 0);

    let err = embeddings
        .embed(&EmbeddingRequest::new("no-such-model", vec!["a".into()]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelNotFound, "{err}");
    let empty = embeddings
        .embed(&EmbeddingRequest::new("llama3.2:1b", vec![]))
        .await
        .unwrap_err();
    assert_eq!(empty.kind(), ErrorKind::InvalidRequest);

    let models = p.list_models().await.unwrap();
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert!(
        ids.contains(&"gemma3:1b") && ids.contains(&"mock-small"),
        "{ids:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn api_key_is_sent_as_a_bearer_token() {
    let mut config = MockConfig::ephemeral();
    config.require_api_key = Some(quorum_config::Secret::new("tok"));
    let server = MockServer::start(config).await.unwrap();

    let anonymous = provider(&server.base_url());
    let err = anonymous
        .chat(&ChatRequest::user("mock-small", "q"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");

    let with_key = provider_with(&server.base_url(), |c| {
        c.api_key = Some(quorum_config::Secret::new("tok"));
    });
    with_key
        .chat(&ChatRequest::user("mock-small", "q"))
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn request_timeout_is_a_typed_timeout() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let p = provider_with(&server.base_url(), |c| {
        c.timeout.request = quorum_config::Duration::from_millis(300);
    });
    let err = p
        .chat(&ChatRequest::user("fault-slow", "q"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_is_not_there_is_a_transport_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = provider(&format!("http://{addr}"));
    let err = p.list_models().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(p.health().await.is_err());
}
