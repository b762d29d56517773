//! An Ollama provider for [`quorum_llm`], over Ollama's native API.
//!
//! - [`OllamaProvider`] implements [`quorum_llm::Provider`] over `POST /api/chat` — or the
//!   legacy `POST /api/generate` for the models listed in [`OllamaConfig::generate_models`]
//!   (per request: `extra: {"endpoint": "generate"}`) — streaming newline-delimited JSON until
//!   the `"done": true` object, whose `prompt_eval_count` / `eval_count` become
//!   [`quorum_llm::Usage`] and whose `*_duration` nanoseconds become
//!   [`quorum_llm::ProviderTimings`]. `GET /api/tags` lists models; `POST /api/embed` is the
//!   [`quorum_llm::Embeddings`] capability.
//! - Request mapping: `temperature`, `seed`, `stop` and `max_tokens` (as `num_predict`) go into
//!   `options`, with every other `extra` key except the top-level ones ([`TOP_LEVEL_KEYS`]:
//!   `format`, `keep_alive`, `think`...) and `extra.options` (merged); `extra` never overrides
//!   a field set from the request. [`OllamaConfig::keep_alive`] is sent unless the request sets
//!   its own. Thinking output (`message.thinking`) and tool calls are not surfaced.
//! - Errors: Ollama answers `{"error": "..."}` with an HTTP status, classified with
//!   [`quorum_llm::classify_http`] (404 `model "x" not found` →
//!   [`quorum_llm::LlmError::ModelNotFound`], "context length" →
//!   [`quorum_llm::LlmError::ContextLengthExceeded`], 503 → overloaded...). An `{"error": ...}`
//!   line inside a stream is its typed terminal error; a stream that ends before
//!   `"done": true` yields [`quorum_llm::LlmError::StreamTruncated`].
//! - [`OllamaFactory`] (kind `ollama`) builds providers from a raw config section
//!   ([`OllamaConfig`], `deny_unknown_fields`, errors naming the field; the default base URL is
//!   `http://localhost:11434`).
//! - [`NdjsonSplitter`]: the incremental line splitter the stream uses. The HTTP plumbing
//!   (client, timeouts, send-and-classify, stream driving) is shared through `quorum-llm`'s
//!   `http` feature.
//!
//! Dropping a call's future or stream closes its HTTP connection, which makes Ollama stop
//! generating.
//!
//! # Example
//!
//! Building a provider from its config section (what a service does for each configured
//! provider):
//!
//! ```
//! use quorum_llm::{Provider, ProviderRegistry};
//! use quorum_llm_ollama::{KeepAlive, OllamaConfig, OllamaFactory};
//!
//! let registry = ProviderRegistry::new().with(OllamaFactory);
//! let section = serde_json::json!({
//!     "base_url": "http://gpu-box:11434",
//!     "keep_alive": "30m",
//!     "generate_models": ["*-base"],
//!     "timeout": {"connect": "2s", "request": "10m"},
//! });
//! let provider = registry.build("ollama", "gpu-box", section)?;
//! assert_eq!((provider.name(), provider.kind()), ("gpu-box", "ollama"));
//! assert!(provider.embeddings().is_some());
//!
//! // Mistakes name the field.
//! let bad = serde_json::json!({"base_url": "http://gpu-box:11434/v1"});
//! let err = registry.build("ollama", "gpu-box", bad).err().unwrap();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid config for provider \"gpu-box\": base_url: invalid URL \
//!      \"http://gpu-box:11434/v1\": give the server root (e.g. http://localhost:11434), \
//!      not its /v1 path"
//! );
//! let bad = serde_json::json!({"keep_alive": "a while"});
//! let err = registry.build("ollama", "gpu-box", bad).err().unwrap();
//! assert!(err.to_string().contains("keep_alive: invalid duration \"a while\""));
//!
//! // The typed config can also be built directly; an empty section means a local server.
//! let config = OllamaConfig::default();
//! assert_eq!(config.base_url_str(), "http://localhost:11434");
//! assert_eq!(config.keep_alive, None);
//! let forever: OllamaConfig = serde_json::from_value(serde_json::json!({"keep_alive": "forever"}))?;
//! assert_eq!(forever.keep_alive, Some(KeepAlive::Forever));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Calling it (needs a server):
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use quorum_llm::{ChatRequest, Provider, StreamItem};
//! use quorum_llm_ollama::{OllamaConfig, OllamaProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = OllamaProvider::new("local", &OllamaConfig::default())?;
//! let mut request = ChatRequest::user("llama3.2:1b", "Say hello");
//! request.extra.insert("num_ctx".into(), 8192.into()); // an Ollama option
//! let mut stream = provider.chat_stream(&request).await?;
//! while let Some(item) = stream.next().await {
//!     match item? {
//!         StreamItem::Delta(text) => print!("{text}"),
//!         StreamItem::Done(done) => println!("\n{:?} {:?}", done.usage, done.timings.provider),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod config;
mod ndjson;
mod provider;
mod wire;

pub use config::{DEFAULT_BASE_URL, KeepAlive, ModelPattern, OllamaConfig, TimeoutConfig};
pub use ndjson::NdjsonSplitter;
pub use provider::{KIND, OllamaFactory, OllamaProvider, classify_ollama_error};
pub use wire::{ENDPOINT_KEY, TOP_LEVEL_KEYS};
