//! An OpenAI-compatible Chat Completions provider for [`quorum_llm`]: one crate for OpenAI,
//! OpenRouter, vLLM, llama.cpp's server, LM Studio, Docker Model Runner and Ollama's `/v1`.
//!
//! - [`OpenAiProvider`] implements [`quorum_llm::Provider`] over `POST chat/completions` (JSON,
//!   or Server-Sent Events with `stream_options.include_usage` and `data: [DONE]`),
//!   `GET models` and `POST embeddings` (the [`quorum_llm::Embeddings`] capability). Errors in
//!   every shape these servers use (`{"error":{...}}` with string or numeric codes,
//!   `{"error":"..."}`, vLLM's top-level error object, errors inside the stream) are classified
//!   with [`quorum_llm::classify_http`]. A stream that ends without `[DONE]` yields
//!   [`quorum_llm::LlmError::StreamTruncated`].
//! - OpenRouter extras: the `HTTP-Referer` / `X-Title` attribution headers
//!   ([`OpenRouterConfig`]), 402 "out of credits" as
//!   [`quorum_llm::LlmError::PaymentRequired`], and [`OpenAiProvider::credits`].
//! - [`CreditMonitor`]: polls an OpenRouter key's credits every interval on an owned task,
//!   classifies them against warn/alert thresholds ([`CreditMonitorConfig`], USD left or a
//!   fraction of the limit), logs level changes only, and reports every status to an optional
//!   observer (for a gauge); failed checks are kept, never fatal.
//! - [`OpenAiFactory`] (kind `openai`) builds providers from a raw config section
//!   ([`OpenAiConfig`], `deny_unknown_fields`, errors naming the field).
//! - [`SseParser`]: the incremental event-stream parser the provider uses (re-exported from
//!   [`quorum_llm::sse`]; the HTTP plumbing is shared through `quorum-llm`'s `http` feature).
//!
//! Dropping a call's future or stream closes its HTTP connection, which aborts the request
//! upstream.
//!
//! # Example
//!
//! Building a provider from its config section (what a service does for each configured
//! provider):
//!
//! ```
//! use quorum_llm::{ProviderRegistry, Provider};
//! use quorum_llm_openai::{OpenAiConfig, OpenAiFactory};
//!
//! let registry = ProviderRegistry::new().with(OpenAiFactory);
//! let section = serde_json::json!({
//!     "base_url": "http://localhost:11434/v1",
//!     "timeout": {"connect": "2s", "request": "5m"},
//! });
//! let provider = registry.build("openai", "local-ollama", section)?;
//! assert_eq!((provider.name(), provider.kind()), ("local-ollama", "openai"));
//!
//! // Mistakes name the field.
//! let bad = serde_json::json!({"base_url": "htp:/x"});
//! let err = registry.build("openai", "local-ollama", bad).err().unwrap();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid config for provider \"local-ollama\": base_url: invalid URL \"htp:/x\": \
//!      scheme \"htp\" is not http or https"
//! );
//!
//! // The typed config can also be built directly.
//! let config = OpenAiConfig::new("https://api.openai.com/v1")?;
//! assert!(config.stream_usage);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Calling it (needs a server):
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use quorum_llm::{ChatRequest, Provider, StreamItem};
//! use quorum_llm_openai::{OpenAiConfig, OpenAiProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = OpenAiConfig::new("https://api.openai.com/v1")?;
//! config.api_key = Some(quorum_config::Secret::new("sk-..."));
//! let provider = OpenAiProvider::new("openai", &config)?;
//! let request = ChatRequest::user("gpt-4o-mini", "Say hello");
//! let answer = provider.chat(&request).await?;
//! println!("{} ({:?})", answer.content, answer.usage);
//!
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
mod credits;
mod provider;
mod wire;

pub use config::{OpenAiConfig, OpenRouterConfig, TimeoutConfig};
pub use credits::{
    CreditCheckError, CreditConfigError, CreditLevel, CreditMonitor, CreditMonitorConfig,
    CreditMonitorHandle, CreditStatus, DEFAULT_CREDIT_INTERVAL,
};
pub use provider::{Credits, KIND, OpenAiFactory, OpenAiProvider};
pub use quorum_llm::sse::{SseEvent, SseParser};
