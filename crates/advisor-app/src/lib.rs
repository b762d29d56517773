//! The multi-model advisor service behind the `quorum-advisor` binary: ask several models the
//! same question concurrently and see each answer the moment it arrives — reliably, with
//! progress, over restarts — plus an OpenAI-compatible gateway to every configured model.
//!
//! - [`config`]: the YAML configuration, its validation, the redacted dump and the start-up
//!   summary line.
//! - [`gateway`]: providers built from the configuration through the provider registry, each
//!   behind a [`quorum_llm::ResilientProvider`] (retries under a budget, breakers, limits,
//!   timeouts), and a [`quorum_llm::Router`] whose logical models are the configured names
//!   with their fallback chains.
//! - [`engine`]: the durable job engine (persisted jobs, a bounded pool claiming by priority
//!   then age, concurrent fan-out, progress, cancel, timeouts, crash recovery, graceful
//!   shutdown).
//! - [`events`]: job events, the in-process hub carrying them to subscribers, the SSE wire
//!   form and its resume cursor.
//! - [`http`]: the axum API — `/v1/advise`, `/v1/jobs…` with SSE, `/v1/chat/completions`,
//!   `/v1/models`, health, status and `/metrics`.
//! - [`server`]: start-up, serving and shutdown; [`run`] is what the binary calls.
//!
//! # Example
//!
//! Start the advisor on an ephemeral port with an in-memory SQLite store and a provider that
//! no request reaches, then ask it for its models over HTTP:
//!
//! ```no_run
//! use quorum_advisor_app::{AdvisorConfig, server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = AdvisorConfig::default();
//! config.server.bind = "127.0.0.1:0".parse()?;
//! config.store.url = "sqlite::memory:".into();
//! let running = server::start(config, std::future::pending()).await?;
//! let models = reqwest::get(format!("http://{}/v1/models", running.addr()))
//!     .await?
//!     .text()
//!     .await?;
//! assert!(models.contains("gemma3:1b"));
//! running.shutdown().await?;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod engine;
pub mod error;
pub mod events;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod server;

pub use config::AdvisorConfig;
pub use engine::{AdviseRequest, Engine};
pub use error::{AdvisorError, ApiError, ConfigIssue};
pub use server::{Running, check, run, run_blocking, start};
