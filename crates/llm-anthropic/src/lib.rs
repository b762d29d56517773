//! An Anthropic Messages API provider for [`quorum_llm`].
//!
//! - [`AnthropicProvider`] implements [`quorum_llm::Provider`] over `POST /v1/messages`
//!   (JSON, or Server-Sent Events with named events: `message_start` carries the input usage,
//!   `content_block_delta` the text deltas, `message_delta` the stop reason and output usage,
//!   `message_stop` ends the stream, `ping` and unknown events are skipped, `error` is the
//!   stream's typed terminal error) and `GET /v1/models` (all pages). It sends `x-api-key`,
//!   `anthropic-version` (default `2023-06-01`) and, if configured, `anthropic-beta`.
//! - Request mapping: the system prompt (and any system messages) goes in the top-level
//!   `system` field; `max_tokens` is required by the API, so requests without one get
//!   [`AnthropicConfig::default_max_tokens`] (default 1024); `stop` becomes `stop_sequences`;
//!   tool results become `tool_result` blocks; `extra` (`top_p`, `top_k`, `metadata`,
//!   `thinking`...) is passed through without overriding those fields. `seed` is not sent (the
//!   API has none).
//! - Errors: bodies `{"type":"error","error":{"type":"overloaded_error",...}}` are classified
//!   with [`quorum_llm::classify_http`]: `rate_limit_error` (429, honouring `retry-after`) →
//!   rate limited, 529 `overloaded_error` → overloaded (retryable), "prompt is too long" →
//!   [`quorum_llm::LlmError::ContextLengthExceeded`], "credit balance is too low" → quota,
//!   `authentication_error` → auth, `not_found_error` → model not found... A stream that ends
//!   before `message_stop` yields [`quorum_llm::LlmError::StreamTruncated`].
//! - [`AnthropicFactory`] (kind `anthropic`) builds providers from a raw config section
//!   ([`AnthropicConfig`], `deny_unknown_fields`, errors naming the field).
//! - [`SseParser`]: the incremental event-stream parser the stream uses (re-exported from
//!   [`quorum_llm::sse`]; the HTTP plumbing is shared through `quorum-llm`'s `http` feature).
//!
//! Anthropic has no embeddings endpoint: [`quorum_llm::Provider::embeddings`] is `None`.
//! Dropping a call's future or stream closes its HTTP connection, which aborts the request
//! upstream.
//!
//! # Example
//!
//! Building a provider from its config section (what a service does for each configured
//! provider):
//!
//! ```
//! use quorum_llm::{Provider, ProviderRegistry};
//! use quorum_llm_anthropic::{AnthropicConfig, AnthropicFactory};
//!
//! let registry = ProviderRegistry::new().with(AnthropicFactory);
//! let section = serde_json::json!({
//!     "api_key": "sk-ant-...",
//!     "default_max_tokens": 2048,
//!     "timeout": {"connect": "5s", "request": "10m"},
//! });
//! let provider = registry.build("anthropic", "claude", section)?;
//! assert_eq!((provider.name(), provider.kind()), ("claude", "anthropic"));
//! assert!(provider.embeddings().is_none());
//!
//! // Mistakes name the field.
//! let bad = serde_json::json!({"version": "latest"});
//! let err = registry.build("anthropic", "claude", bad).err().unwrap();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid config for provider \"claude\": version: invalid version \"latest\": \
//!      expected a date such as \"2023-06-01\""
//! );
//!
//! // The typed config can also be built directly.
//! let config = AnthropicConfig::default();
//! assert_eq!(config.base_url_str(), "https://api.anthropic.com");
//! assert_eq!((config.version.as_str(), config.default_max_tokens), ("2023-06-01", 1024));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Calling it (needs the API and a key):
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use quorum_llm::{ChatRequest, Provider, StreamItem};
//! use quorum_llm_anthropic::{AnthropicConfig, AnthropicProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = AnthropicConfig::default();
//! config.api_key = Some(quorum_config::Secret::new("sk-ant-..."));
//! let provider = AnthropicProvider::new("claude", &config)?;
//! let mut request = ChatRequest::user("claude-sonnet-4-5", "Say hello");
//! request.system = Some("Be brief.".into());
//! let mut stream = provider.chat_stream(&request).await?;
//! while let Some(item) = stream.next().await {
//!     if let StreamItem::Delta(text) = item? {
//!         print!("{text}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod config;
mod provider;
mod wire;

pub use config::{
    AnthropicConfig, DEFAULT_BASE_URL, DEFAULT_MAX_TOKENS, DEFAULT_VERSION, TimeoutConfig,
};
pub use provider::{AnthropicFactory, AnthropicProvider, KIND};
pub use quorum_llm::sse::{SseEvent, SseParser};
