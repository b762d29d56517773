//! Resilience mechanisms for calls to unreliable dependencies (LLM providers, brokers, databases).
//!
//! Every mechanism is a plain type that works from ordinary async code, on tokio's clock
//! (`tokio::time`), so tests drive it with `tokio::time::pause()`:
//!
//! - [`Retry`] ([`retry`]): exponential backoff with jitter, per-attempt timeouts, an overall
//!   deadline that is never slept past, server `retry_after` hints up to a cap, and an optional
//!   shared [`RetryBudget`] ([`budget`]) that stops retry storms;
//! - [`Timeout`] ([`timeout`]): a named timeout;
//! - [`Bulkhead`] ([`bulkhead`]): a concurrency limit with a bounded wait queue that sheds excess
//!   load fast;
//! - a circuit breaker ([`breaker`]) and rate limiters ([`rate_limit`], [`keyed`]).
//!
//! What a result means is decided by a [`Classifier`] (success, retryable with an optional
//! `retry_after`, or permanent); errors implementing [`Retryable`] get one for free with
//! [`ErrorClassifier`]. Each instance has a name and reports [`Event`]s to its [`Observers`];
//! everything is cheap to clone and clones share state.
//!
//! Features: `tower` adds a tower `Layer`/`Service` adapter for each mechanism (retry, timeout
//! and bulkhead ones in the `tower` module); `prometheus` adds an observer that exports the
//! events as Prometheus metrics (`prometheus` module).
//!
//! # Example
//!
//! Retry a provider call, each attempt holding a bulkhead slot only while it runs (not while
//! backing off):
//!
//! ```
//! use std::time::Duration;
//!
//! use quorum_resilience::{
//!     Bulkhead, BulkheadConfig, BulkheadError, ErrorClassifier, Retry, RetryPolicy, Retryable,
//! };
//!
//! #[derive(Debug)]
//! enum CallError {
//!     Status(u16),
//!     Busy(BulkheadError),
//! }
//!
//! impl std::fmt::Display for CallError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         match self {
//!             CallError::Status(status) => write!(f, "provider answered {status}"),
//!             CallError::Busy(e) => write!(f, "{e}"),
//!         }
//!     }
//! }
//!
//! impl std::error::Error for CallError {}
//!
//! impl Retryable for CallError {
//!     fn is_retryable(&self) -> bool {
//!         match self {
//!             CallError::Status(status) => *status == 429 || *status >= 500,
//!             CallError::Busy(_) => true,
//!         }
//!     }
//! }
//!
//! /// A provider that is overloaded on the first attempt.
//! async fn complete(attempt: u32) -> Result<String, CallError> {
//!     if attempt == 1 { Err(CallError::Status(503)) } else { Ok("hello".to_owned()) }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! runtime.block_on(async {
//!     let retry = Retry::new(
//!         "openai",
//!         RetryPolicy {
//!             max_attempts: 3,
//!             initial_delay: Duration::from_millis(5),
//!             deadline: Some(Duration::from_secs(30)),
//!             ..RetryPolicy::default()
//!         },
//!     )?;
//!     let bulkhead = Bulkhead::new(
//!         "openai",
//!         BulkheadConfig {
//!             max_concurrent: 8,
//!             max_waiting: 32,
//!             wait_timeout: Some(Duration::from_secs(1)),
//!         },
//!     )?;
//!
//!     let answer = retry
//!         .run(
//!             |attempt| {
//!                 let bulkhead = bulkhead.clone();
//!                 async move {
//!                     match bulkhead.run(complete(attempt)).await {
//!                         Ok(result) => result,
//!                         Err(busy) => Err(CallError::Busy(busy)),
//!                     }
//!                 }
//!             },
//!             &ErrorClassifier,
//!         )
//!         .await?;
//!     assert_eq!(answer, "hello");
//!     assert_eq!(bulkhead.in_flight(), 0);
//!     Ok(())
//! })
//! # }
//! ```

pub mod classify;
pub mod event;

// --- retry, budget, timeout, bulkhead, tower, prometheus (section A) ---
pub mod budget;
pub mod bulkhead;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod retry;
pub mod timeout;
#[cfg(feature = "tower")]
pub mod tower;

pub use budget::{BudgetConfigError, RetryBudget, RetryBudgetConfig};
pub use bulkhead::{Bulkhead, BulkheadConfig, BulkheadConfigError, BulkheadError, BulkheadPermit};
pub use retry::{
    GiveUpReason, Jitter, RandomSource, Retry, RetryBuilder, RetryConfigError, RetryError,
    RetryPolicy, SplitMix64,
};
pub use timeout::{Timeout, TimeoutError};
// --- end of section A ---

// --- circuit breaker, rate limiters (section B) ---
pub mod breaker;
pub mod keyed;
pub mod rate_limit;
#[cfg(feature = "tower")]
mod tower_b;

pub use breaker::{
    BreakerConfig, BreakerConfigError, BreakerError, BreakerMetrics, BreakerOpen, BreakerPermit,
    CircuitBreaker, OwnedBreakerPermit, SlidingWindow, SlowCallConfig,
};
pub use keyed::{KeyedConfig, KeyedRateLimiter, WhenFull};
pub use rate_limit::{Clock, RateLimitConfig, RateLimitError, RateLimiter};
#[cfg(feature = "tower")]
pub use tower_b::{
    BreakerFuture, CircuitBreakerLayer, CircuitBreakerService, OnePerRequest, RateLimitFuture,
    RateLimitLayer, RateLimitService, RateLimitServiceError, Weigher,
};
// --- end of section B ---

pub use classify::{AnyErrorRetryable, Classifier, ErrorClassifier, Retryable, Verdict};
pub use event::{BreakerState, Event, Observer, Observers};
