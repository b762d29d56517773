//! The LLM provider contract: what every provider crate implements and every service calls.
//!
//! - **Data** ([`ChatRequest`], [`ChatResponse`], [`StreamItem`], [`ModelInfo`],
//!   [`EmbeddingRequest`]...): provider-neutral; options a provider understands but this crate
//!   does not model pass through [`ChatRequest::extra`].
//! - **[`Provider`]**: an object-safe trait (`Arc<dyn Provider>`) with `chat`, `chat_stream`
//!   (a [`ChatStream`] of deltas ending in exactly one terminal item), `list_models`, `health`,
//!   and optional capabilities reached through accessors ([`Provider::embeddings`]). Dropping a
//!   future or stream aborts the upstream request.
//! - **[`LlmError`]**: one error type whose variant is the class (rate limited, quota exhausted,
//!   context length, auth, overloaded, truncated stream...), with `is_retryable` /
//!   `retry_after` following the official SDKs, implementing [`quorum_resilience::Retryable`].
//!   Provider crates build HTTP errors with [`classify_http`].
//! - **[`ProviderFactory`] + [`ProviderRegistry`]**: each provider crate exports a factory that
//!   builds instances from a raw config section; services register factories explicitly.
//! - **[`ResilientProvider`]** ([`resilient`]) wraps any provider with retries under a shared
//!   budget, a circuit breaker per model, request/token-per-minute limits and call and
//!   time-to-first-token timeouts; **[`Router`]** ([`router`]) puts fallback chains of
//!   `(provider, model)` steps behind logical model names. Both are providers themselves.
//! - **Shared HTTP plumbing** ([`sse`] always; `http_client`, feature `http`): provider crates
//!   share client building, base-URL checks, timeouts, send-and-classify and the SSE parser
//!   through the `http` feature instead of each keeping a copy.
//! - **Conformance suite** (`testing` module, feature `test-util`): every provider crate runs it
//!   over real HTTP against the mock LLM server.
//!
//! This crate knows no provider: it never names OpenAI, Ollama or Anthropic beyond recognising
//! their error spellings in [`classify_http`].
//!
//! # Example
//!
//! A tiny in-memory provider, used through `Arc<dyn Provider>` (its stream comes from the
//! default [`Provider::chat_stream`]):
//!
//! ```
//! use std::sync::Arc;
//!
//! use async_trait::async_trait;
//! use futures_util::StreamExt;
//! use quorum_llm::{
//!     ChatRequest, ChatResponse, LlmError, ModelInfo, Provider, StreamItem, Usage,
//! };
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl Provider for Echo {
//!     fn name(&self) -> &str {
//!         "echo-1"
//!     }
//!
//!     fn kind(&self) -> &str {
//!         "echo"
//!     }
//!
//!     async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
//!         let text = request.last_user_message().unwrap_or_default();
//!         Ok(ChatResponse {
//!             content: format!("you said: {text}"),
//!             usage: Some(Usage { prompt_tokens: 2, completion_tokens: 3 }),
//!             provider: self.name().to_owned(),
//!             model: request.model.clone(),
//!             ..ChatResponse::default()
//!         })
//!     }
//!
//!     async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
//!         Ok(vec![ModelInfo::new("echo-small")])
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! runtime.block_on(async {
//!     let provider: Arc<dyn Provider> = Arc::new(Echo);
//!     let request = ChatRequest::user("echo-small", "hello");
//!
//!     let answer = provider.chat(&request).await?;
//!     assert_eq!(answer.content, "you said: hello");
//!     assert_eq!(answer.usage.map(|u| u.total_tokens()), Some(5));
//!
//!     let mut stream = provider.chat_stream(&request).await?;
//!     let mut text = String::new();
//!     while let Some(item) = stream.next().await {
//!         match item? {
//!             StreamItem::Delta(delta) => text.push_str(&delta),
//!             StreamItem::Done(done) => assert_eq!(done.provider, "echo-1"),
//!             _ => {}
//!         }
//!     }
//!     assert_eq!(text, answer.content);
//!     assert!(provider.embeddings().is_none());
//!     provider.health().await?;
//!     Ok::<_, LlmError>(())
//! })?;
//! # Ok(())
//! # }
//! ```

mod error;
mod factory;
mod provider;
mod types;

// Resilience and routing over any provider (`ResilientProvider`, `Router`).
pub mod resilient;
pub mod router;

#[cfg(feature = "test-util")]
pub mod testing;

// Shared by provider crates: the SSE parser, and the HTTP plumbing behind the `http` feature.
#[cfg(feature = "http")]
pub mod http_client;
pub mod sse;

pub use error::{
    ApiError, BoxError, ErrorHint, ErrorKind, KEPT_HEADERS, LlmError, MAX_ERROR_BODY, api_error,
    classify_http, classify_stream_error, parse_retry_after,
};
pub use factory::{ProviderFactory, ProviderRegistry, parse_config};
pub use provider::{ChatStream, Embeddings, Provider, collect_stream, guard_stream};
pub use types::{
    ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, FinishReason, Message,
    ModelInfo, ProviderTimings, RateLimitInfo, Role, StreamFinal, StreamItem, Timings, Usage,
};

pub use resilient::{
    BREAKER_OPEN_CODE, LOCAL_RATE_LIMIT_CODE, ResilienceConfig, ResilienceConfigError,
    ResilientBuilder, ResilientProvider, estimate_prompt_tokens, estimate_tokens, is_breaker_open,
    is_local_rate_limit,
};
pub use router::{
    RouteError, RouteStep, RouteStepConfig, Routed, Router, RouterBuilder, RouterConfig,
    RouterConfigError, SkipReason, Skipped, trim_history,
};

/// Re-exported so provider crates and tests name the same `http` types as [`classify_http`].
pub use http;
