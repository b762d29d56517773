//! `quorum-mock-llm`: a fast, realistic stand-in for LLM servers, so that clients are tested
//! over real HTTP without calling a real API. One port speaks three wire dialects:
//!
//! - **OpenAI**: `POST /v1/chat/completions` (JSON, or SSE with `"stream": true`, a usage chunk
//!   with `stream_options.include_usage`, then `data: [DONE]`), `POST /v1/embeddings` (floats or
//!   base64), `GET /v1/models`, `GET /v1/models/{id}`, and OpenRouter's credit endpoint
//!   `GET /v1/auth/key` (`{"data":{"label","usage","limit","limit_remaining","is_free_tier"}}`
//!   from [`MockConfig::credits`]; unlimited by default, changeable at run time). A bearer key
//!   is accepted, and required only when [`MockConfig::require_api_key`] is set.
//! - **Ollama**: `POST /api/chat`, `POST /api/generate` (NDJSON streams unless `"stream": false`;
//!   the last object has `done: true`, `done_reason`, counts and nanosecond durations),
//!   `POST /api/embed` (and the legacy `/api/embeddings`), `GET /api/tags`, `GET /api/version`.
//!   `name` and `name:latest` are the same model.
//! - **Anthropic**: `POST /v1/messages` (JSON, or SSE with named events from `message_start` to
//!   `message_stop`); `x-api-key` and `anthropic-version` are required, as is `max_tokens`.
//!   `GET /v1/models` answers in Anthropic's shape when either header is present.
//!
//! The answer is deterministic: [`expected_answer`] split into [`MockConfig::chunks`] pieces
//! ([`answer_chunks`]), fewer when the request's `max_tokens` / `num_predict` is lower (finish
//! reason `length` / `max_tokens`). Usage: prompt tokens = characters of all messages / 4
//! ([`estimate_tokens`]), completion tokens = pieces sent.
//!
//! **Faults by model name**, in every dialect's own error shape: `fault-429` (with
//! `retry-after: 1` and `retry-after-ms: 1000`), `fault-quota` (429 `insufficient_quota`; in the
//! Anthropic dialect a `rate_limit_error` whose message starts with `insufficient_quota`, in
//! Ollama's an error text starting so; never with retry-after headers), `fault-<status>` for any
//! status 400–599 (`fault-500`, `fault-529`...), `fault-context` (400 context length exceeded;
//! also any model whose `context_window` the prompt exceeds), `fault-midstream` (two chunks then
//! an in-stream error; 500 when not streaming), `fault-truncate` (two chunks then the end of the
//! body without the end marker, with `connection: close`; not streaming: a body shorter than its
//! `content-length`, then the connection closes), `fault-reset` (the connection is reset before
//! any response), `fault-slow` (answers after [`MockConfig::slow_delay`], 30 s by default; a
//! client that leaves is counted as `cancelled`), `fault-flaky-N` (503 with probability N %,
//! seeded). Unknown models get a 404 in the dialect's shape. Random and scheduled faults come
//! from [`MockConfig::faults`].
//!
//! **Admin** on the same port: `GET /admin/stats` ([`Stats`] as JSON), `POST /admin/reset`,
//! `GET`/`POST /admin/config` (a [`MockConfig`] as JSON), and `GET /healthz`.
//!
//! Performance: HTTP/1.1 on hyper with `TCP_NODELAY` on every accepted socket, responses
//! rendered once into a few buffers, atomic counters, tokio timers for every delay.
//!
//! ```
//! use quorum_mock_llm::{MockConfig, MockServer};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = MockServer::start(MockConfig::ephemeral()).await?;
//! assert!(server.base_url().starts_with("http://127.0.0.1:"));
//!
//! let mut socket = tokio::net::TcpStream::connect(server.addr()).await?;
//! socket
//!     .write_all(b"GET /healthz HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\r\n")
//!     .await?;
//! let mut response = String::new();
//! socket.read_to_string(&mut response).await?;
//! assert!(response.starts_with("HTTP/1.1 200 OK"));
//! assert!(response.ends_with("\r\n\r\nok"));
//!
//! assert_eq!(server.stats().requests, 0); // health checks are not API requests
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod anthropic;
mod api;
mod body;
mod config;
mod ollama;
mod openai;
mod server;
mod service;
mod stats;
mod text;

use std::net::SocketAddr;

pub use config::{
    CreditsConfig, DEFAULT_MODELS, FaultKind, FaultKindError, FaultRule, FaultWindow, Latency,
    MockConfig, ModelConfig,
};
pub use server::MockServer;
pub use stats::{OTHER_MODELS, Stats};
pub use text::{answer_chunks, estimate_tokens, expected_answer};

/// Why the mock cannot start or take a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The key path of the value, e.g. `faults[1].rate`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The listening address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}
