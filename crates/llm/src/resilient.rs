//! [`ResilientProvider`]: any [`Provider`] made resilient — retries within a shared budget, a
//! circuit breaker per model, request- and token-per-minute limits, per-call and
//! time-to-first-token timeouts.
//!
//! One call of [`ResilientProvider::chat`] runs a [`Retry`] loop whose every attempt:
//!
//! 1. asks the model's **circuit breaker** for a permit (breakers are created lazily per model, in
//!    a map bounded by `breaker.max_breakers`); an open breaker fails the call at once with an
//!    [`LlmError::Overloaded`] whose code is [`BREAKER_OPEN_CODE`] (see [`is_breaker_open`]) and
//!    whose `retry_after` is the remaining open time — retryable, so a [`Router`](crate::Router)
//!    falls back, but **not retried here** (it would only wait for the same breaker);
//! 2. takes one token from the **requests-per-minute** limiter and the request's estimated tokens
//!    ([`estimate_tokens`]: chars/4 of the prompt plus `max_tokens`) from the
//!    **tokens-per-minute** limiter, waiting up to `rate_limit.max_wait` (FIFO); a longer wait
//!    fails the call with an [`LlmError::RateLimited`] whose code is [`LOCAL_RATE_LIMIT_CODE`]
//!    (also not retried here);
//! 3. calls the inner provider under the per-call `timeout`;
//! 4. records the outcome in the breaker (only retryable failures count against it: a 400 or a
//!    401 says nothing about the provider's health), settles the token estimate with the real
//!    usage, and follows the server's rate-limit headers (`x-ratelimit-remaining-*` /
//!    `x-ratelimit-reset-*`, Anthropic's `anthropic-ratelimit-*`) whether the call succeeded
//!    ([`ChatResponse::rate_limit`], [`StreamFinal::rate_limit`](crate::StreamFinal::rate_limit)) or failed (the error's kept
//!    headers, [`ApiError::rate_limit`]), via [`RateLimiter::observe_remaining`].
//!
//! The loop retries what [`LlmError::is_retryable`] says (server `Retry-After` hints honoured up
//! to `retry.max_retry_after`), while the shared [`RetryBudget`] allows it: a dependency that
//! keeps failing sees at most `(1 + retry_ratio)` times its normal load.
//!
//! **Streams** ([`ResilientProvider::chat_stream`]) must yield their first item within
//! `time_to_first_token` (and within `timeout`), or the attempt fails with
//! [`LlmError::Timeout`] and may be retried. Streams are retried **only before the first item**:
//! once text has been handed to the caller, a later error (or the per-call `timeout` elapsing) is
//! the stream's terminal item.
//!
//! **Cancellation:** dropping the future or the stream drops the inner provider's future or
//! stream, which aborts its HTTP request; nothing is recorded in the breaker then.
//!
//! A stream's rate-limit state is followed when its [`StreamItem::Done`] passes through (providers
//! read the headers when the stream starts); a stream that ends in an error follows the error's.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use futures_util::{Stream, StreamExt};
use quorum_config::Duration;
use quorum_resilience::{
    BreakerConfig, BreakerConfigError, BreakerOpen, BudgetConfigError, CircuitBreaker, Classifier,
    ErrorClassifier, Event, Jitter, Observers, OwnedBreakerPermit, RateLimitConfig, RateLimitError,
    RateLimiter, Retry, RetryBudget, RetryBudgetConfig, RetryConfigError, RetryError, RetryPolicy,
    SlidingWindow, Verdict,
};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Sleep};

use crate::error::{ApiError, LlmError};
use crate::provider::{ChatStream, Embeddings, Provider};
use crate::types::{ChatRequest, ChatResponse, ModelInfo, RateLimitInfo, StreamItem, Usage};

/// The [`ApiError::code`] of the error returned when a model's circuit breaker is open.
pub const BREAKER_OPEN_CODE: &str = "circuit_open";

/// The [`ApiError::code`] of the error returned when the local rate limiter would wait longer
/// than `rate_limit.max_wait`.
pub const LOCAL_RATE_LIMIT_CODE: &str = "local_rate_limit";

/// Whether `error` is the fast failure of an open circuit breaker (see [`BREAKER_OPEN_CODE`]).
#[must_use]
pub fn is_breaker_open(error: &LlmError) -> bool {
    local_code(error) == Some(BREAKER_OPEN_CODE)
}

/// Whether `error` is the local rate limiter refusing to wait (see [`LOCAL_RATE_LIMIT_CODE`]).
#[must_use]
pub fn is_local_rate_limit(error: &LlmError) -> bool {
    local_code(error) == Some(LOCAL_RATE_LIMIT_CODE)
}

/// The code of an error made here (no HTTP status), if any.
fn local_code(error: &LlmError) -> Option<&str> {
    error
        .api()
        .filter(|api| api.status.is_none())
        .and_then(|api| api.code.as_deref())
}

/// Estimates the tokens of `request` for rate limiting: about one token per 4 characters of the
/// system prompt and messages, 4 tokens of overhead per message, plus `max_tokens` (or
/// `default_completion_tokens` when unset).
#[must_use]
pub fn estimate_tokens(request: &ChatRequest, default_completion_tokens: u64) -> u64 {
    let completion = request
        .max_tokens
        .map_or(default_completion_tokens, u64::from);
    estimate_prompt_tokens(request).saturating_add(completion)
}

/// Estimates the prompt tokens of `request`: chars/4 of the system prompt and every message,
/// rounded up, plus 4 per message.
#[must_use]
pub fn estimate_prompt_tokens(request: &ChatRequest) -> u64 {
    let system = request.system.as_deref().map_or(0, str::len);
    let chars = request
        .messages
        .iter()
        .map(|m| m.content.len())
        .fold(system, usize::saturating_add);
    let chars = u64::try_from(chars).unwrap_or(u64::MAX);
    let overhead = u64::try_from(request.messages.len())
        .unwrap_or(u64::MAX)
        .saturating_mul(4);
    chars.div_ceil(4).saturating_add(overhead)
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The configuration of a [`ResilientProvider`] (a YAML section; every field optional).
///
/// ```yaml
/// retry: {max_attempts: 3, initial_delay: 100ms, max_delay: 5s, max_retry_after: 30s}
/// budget: {ttl: 10s, min_retries_per_sec: 10, retry_ratio: 0.2}
/// breaker: {window: 100, minimum_calls: 20, failure_rate_threshold: 50, open_duration: 30s}
/// rate_limit: {requests_per_minute: 500, tokens_per_minute: 90000, max_wait: 30s}
/// timeout: 120s
/// time_to_first_token: 30s
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    /// The retry loop.
    pub retry: RetrySettings,
    /// The retry budget shared by every call of the provider.
    pub budget: BudgetSettings,
    /// The circuit breaker of each model.
    pub breaker: BreakerSettings,
    /// Request and token rate limits.
    pub rate_limit: RateLimitSettings,
    /// The longest one attempt may take (for a stream: the whole stream). Default 120s.
    pub timeout: Duration,
    /// The longest a stream may take to yield its first item (`null`: only `timeout`).
    /// Default 30s.
    pub time_to_first_token: Option<Duration>,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            retry: RetrySettings::default(),
            budget: BudgetSettings::default(),
            breaker: BreakerSettings::default(),
            rate_limit: RateLimitSettings::default(),
            timeout: Duration::from_secs(120),
            time_to_first_token: Some(Duration::from_secs(30)),
        }
    }
}

/// Retry settings (backoff with full jitter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts in total, the first included (1: no retries). Default 3.
    pub max_attempts: u32,
    /// The base delay before the first retry. Default 100ms.
    pub initial_delay: Duration,
    /// The largest backoff delay. Default 5s.
    pub max_delay: Duration,
    /// Growth of the delay per attempt (at least 1). Default 2.
    pub multiplier: f64,
    /// The longest server `Retry-After` honoured; a longer hint ends the loop. Default 30s.
    pub max_retry_after: Duration,
    /// A deadline for the whole call, retries included (`null`: none). Default none.
    pub deadline: Option<Duration>,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            max_retry_after: Duration::from_secs(30),
            deadline: None,
        }
    }
}

/// Retry budget settings: over any `ttl`, retries are at most `retry_ratio` × calls plus
/// `min_retries_per_sec` × `ttl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSettings {
    /// The sliding window. Default 10s.
    pub ttl: Duration,
    /// Retries always allowed per second. Default 10.
    pub min_retries_per_sec: u32,
    /// Retries allowed per call. Default 0.2.
    pub retry_ratio: f64,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            ttl: Duration::from_secs(10),
            min_retries_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

/// Circuit breaker settings (one breaker per model, count window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Whether breakers are used at all. Default true.
    pub enabled: bool,
    /// The window: the last N calls. Default 100.
    pub window: u32,
    /// Calls the window must hold before it is judged. Default 20.
    pub minimum_calls: u32,
    /// Failure percentage (0 < x ≤ 100) that opens the breaker. Default 50.
    pub failure_rate_threshold: f64,
    /// How long the breaker stays open the first time. Default 30s.
    pub open_duration: Duration,
    /// Growth of the open duration on each re-open (at least 1). Default 2.
    pub open_duration_multiplier: f64,
    /// The longest open duration. Default 5m.
    pub max_open_duration: Duration,
    /// Probe calls admitted when half-open. Default 3.
    pub half_open_probes: u32,
    /// The most breakers (models) kept; beyond it a closed breaker is evicted. Default 1024.
    pub max_breakers: usize,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            window: 100,
            minimum_calls: 20,
            failure_rate_threshold: 50.0,
            open_duration: Duration::from_secs(30),
            open_duration_multiplier: 2.0,
            max_open_duration: Duration::from_secs(300),
            half_open_probes: 3,
            max_breakers: 1024,
        }
    }
}

/// Rate limit settings (per provider instance, all models together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Requests per minute (`null`: unlimited). Default unlimited.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute, estimated before and settled after each call (`null`: unlimited).
    /// Default unlimited.
    pub tokens_per_minute: Option<u64>,
    /// The longest a call waits for the limiters before failing fast. Default 30s.
    pub max_wait: Duration,
    /// Completion tokens assumed when a request sets no `max_tokens`. Default 512.
    pub default_completion_tokens: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            requests_per_minute: None,
            tokens_per_minute: None,
            max_wait: Duration::from_secs(30),
            default_completion_tokens: 512,
        }
    }
}

/// An invalid [`ResilienceConfig`]; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResilienceConfigError {
    /// A `retry` field is invalid.
    #[error("retry: {0}")]
    Retry(#[from] RetryConfigError),
    /// A `budget` field is invalid.
    #[error("budget: {0}")]
    Budget(#[from] BudgetConfigError),
    /// A `breaker` field is invalid.
    #[error("breaker: {0}")]
    Breaker(#[from] BreakerConfigError),
    /// A `rate_limit` field is invalid.
    #[error("rate_limit.{field}: {source}")]
    RateLimit {
        /// The offending field.
        field: &'static str,
        /// What the limiter said.
        #[source]
        source: RateLimitError,
    },
    /// Another field is invalid.
    #[error("{field} ({value}) {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ResilienceConfig {
    /// The retry policy these settings describe (timeouts are applied per attempt by the
    /// provider itself, so the policy has none).
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retry.max_attempts,
            initial_delay: self.retry.initial_delay.as_std(),
            max_delay: self.retry.max_delay.as_std(),
            multiplier: self.retry.multiplier,
            jitter: Jitter::Full,
            attempt_timeout: None,
            deadline: self.retry.deadline.map(Duration::as_std),
            max_retry_after: self.retry.max_retry_after.as_std(),
        }
    }

    fn budget_config(&self) -> RetryBudgetConfig {
        RetryBudgetConfig {
            ttl: self.budget.ttl.as_std(),
            min_retries_per_sec: self.budget.min_retries_per_sec,
            retry_ratio: self.budget.retry_ratio,
        }
    }

    fn breaker_config(&self) -> BreakerConfig {
        let b = &self.breaker;
        BreakerConfig {
            window: SlidingWindow::Count(b.window),
            failure_rate_threshold: b.failure_rate_threshold,
            slow_call: None,
            minimum_calls: b.minimum_calls,
            open_duration: b.open_duration.as_std(),
            open_duration_multiplier: b.open_duration_multiplier,
            max_open_duration: b.max_open_duration.as_std(),
            half_open_probes: b.half_open_probes,
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ResilienceConfigError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ResilienceConfigError> {
        self.retry_policy().validate()?;
        RetryBudget::new(self.budget_config())?;
        if self.breaker.enabled {
            CircuitBreaker::new("validate", self.breaker_config())?;
            if self.breaker.max_breakers == 0 {
                return Err(ResilienceConfigError::Invalid {
                    field: "breaker.max_breakers",
                    value: "0".into(),
                    reason: "must be at least 1",
                });
            }
        }
        if self.timeout.as_std().is_zero() {
            return Err(zero("timeout"));
        }
        if self
            .time_to_first_token
            .is_some_and(|t| t.as_std().is_zero())
        {
            return Err(zero("time_to_first_token"));
        }
        for (field, limit) in [
            ("requests_per_minute", self.rate_limit.requests_per_minute),
            ("tokens_per_minute", self.rate_limit.tokens_per_minute),
        ] {
            if let Some(n) = limit {
                RateLimiter::new("validate", RateLimitConfig::per_minute(n))
                    .map_err(|source| ResilienceConfigError::RateLimit { field, source })?;
            }
        }
        Ok(())
    }
}

fn zero(field: &'static str) -> ResilienceConfigError {
    ResilienceConfigError::Invalid {
        field,
        value: "0s".into(),
        reason: "must be positive",
    }
}

// ---------------------------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------------------------

/// A [`Provider`] wrapping another with retries, a retry budget, per-model circuit breakers,
/// rate limits and timeouts (see the [module docs](self)). Cheap to clone; clones share state.
///
/// ```
/// use std::sync::Arc;
/// use quorum_llm::{Provider, ResilienceConfig, ResilientProvider};
/// # use async_trait::async_trait;
/// # use quorum_llm::{ChatRequest, ChatResponse, LlmError, ModelInfo};
/// # struct Echo;
/// # #[async_trait]
/// # impl Provider for Echo {
/// #     fn name(&self) -> &str { "echo" }
/// #     fn kind(&self) -> &str { "echo" }
/// #     async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, LlmError> {
/// #         Ok(ChatResponse { content: "hi".into(), model: r.model.clone(), ..ChatResponse::default() })
/// #     }
/// #     async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> { Ok(vec![]) }
/// # }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config: ResilienceConfig = serde_json::from_str(
///     r#"{"retry": {"max_attempts": 4}, "rate_limit": {"tokens_per_minute": 90000}}"#,
/// )?;
/// let resilient = ResilientProvider::new(Arc::new(Echo), &config)?;
/// assert_eq!(resilient.name(), "echo");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ResilientProvider {
    shared: Arc<Shared>,
}

struct Shared {
    provider: Arc<dyn Provider>,
    retry: Retry,
    breaker: Option<BreakerConfig>,
    breakers: RwLock<HashMap<String, CircuitBreaker>>,
    max_breakers: usize,
    rpm: Option<RateLimiter>,
    tpm: Option<RateLimiter>,
    max_wait: StdDuration,
    default_completion_tokens: u64,
    timeout: StdDuration,
    ttft: Option<StdDuration>,
    observers: Observers,
}

impl fmt::Debug for ResilientProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &*self.shared;
        f.debug_struct("ResilientProvider")
            .field("provider", &s.provider.name())
            .field("retry", &s.retry)
            .field("breakers", &self.breaker_count())
            .field("rpm", &s.rpm)
            .field("tpm", &s.tpm)
            .field("timeout", &s.timeout)
            .field("ttft", &s.ttft)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ResilientProvider`] with an optional shared budget, observers or seed.
#[must_use = "call build() to get the provider"]
pub struct ResilientBuilder {
    provider: Arc<dyn Provider>,
    config: ResilienceConfig,
    budget: Option<RetryBudget>,
    observers: Observers,
    seed: Option<u64>,
}

impl fmt::Debug for ResilientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientBuilder")
            .field("provider", &self.provider.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ResilientBuilder {
    /// Uses `budget` instead of one built from `config.budget`: share one budget between
    /// providers to cap retries across all of them.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Reports retry, breaker, rate-limit and timeout events to `observers`.
    pub fn observers(mut self, observers: Observers) -> Self {
        self.observers = observers;
        self
    }

    /// Seeds the backoff jitter, for reproducible delays.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the configuration and builds the provider.
    ///
    /// # Errors
    ///
    /// [`ResilienceConfigError`] naming the first bad field.
    pub fn build(self) -> Result<ResilientProvider, ResilienceConfigError> {
        let config = &self.config;
        config.validate()?;
        let name = self.provider.name().to_owned();
        let budget = match self.budget {
            Some(budget) => budget,
            None => RetryBudget::new(config.budget_config())?,
        };
        let mut retry = Retry::builder(name.clone(), config.retry_policy())
            .budget(budget)
            .observers(self.observers.clone());
        if let Some(seed) = self.seed {
            retry = retry.seed(seed);
        }
        let limiter = |suffix: &str, field: &'static str, per_minute: Option<u64>| {
            per_minute
                .map(|n| {
                    RateLimiter::new(format!("{name}/{suffix}"), RateLimitConfig::per_minute(n))
                        .map(|l| l.with_observers(self.observers.clone()))
                        .map_err(|source| ResilienceConfigError::RateLimit { field, source })
                })
                .transpose()
        };
        let rpm = limiter(
            "rpm",
            "requests_per_minute",
            config.rate_limit.requests_per_minute,
        )?;
        let tpm = limiter(
            "tpm",
            "tokens_per_minute",
            config.rate_limit.tokens_per_minute,
        )?;
        Ok(ResilientProvider {
            shared: Arc::new(Shared {
                retry: retry.build()?,
                breaker: config.breaker.enabled.then(|| config.breaker_config()),
                breakers: RwLock::new(HashMap::new()),
                max_breakers: config.breaker.max_breakers.max(1),
                rpm,
                tpm,
                max_wait: config.rate_limit.max_wait.as_std(),
                default_completion_tokens: config.rate_limit.default_completion_tokens,
                timeout: config.timeout.as_std(),
                ttft: config.time_to_first_token.map(Duration::as_std),
                observers: self.observers,
                provider: self.provider,
            }),
        })
    }
}

impl ResilientProvider {
    /// Wraps `provider` with the mechanisms `config` describes (its own retry budget, no
    /// observers).
    ///
    /// # Errors
    ///
    /// [`ResilienceConfigError`] naming the first bad field.
    pub fn new(
        provider: Arc<dyn Provider>,
        config: &ResilienceConfig,
    ) -> Result<Self, ResilienceConfigError> {
        Self::builder(provider, config).build()
    }

    /// A builder, to share a retry budget, add observers or seed the jitter.
    pub fn builder(provider: Arc<dyn Provider>, config: &ResilienceConfig) -> ResilientBuilder {
        ResilientBuilder {
            provider,
            config: config.clone(),
            budget: None,
            observers: Observers::default(),
            seed: None,
        }
    }

    /// The wrapped provider.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Provider> {
        &self.shared.provider
    }

    /// The circuit breaker of `model`, if one was created (by a call for that model).
    #[must_use]
    pub fn breaker(&self, model: &str) -> Option<CircuitBreaker> {
        read(&self.shared.breakers).get(model).cloned()
    }

    /// How many breakers (models) are held.
    #[must_use]
    pub fn breaker_count(&self) -> usize {
        read(&self.shared.breakers).len()
    }

    /// The requests-per-minute limiter, if configured.
    #[must_use]
    pub fn requests_limiter(&self) -> Option<&RateLimiter> {
        self.shared.rpm.as_ref()
    }

    /// The tokens-per-minute limiter, if configured.
    #[must_use]
    pub fn tokens_limiter(&self) -> Option<&RateLimiter> {
        self.shared.tpm.as_ref()
    }

    fn retry_error(&self, model: &str, error: RetryError<LlmError>) -> LlmError {
        match error {
            RetryError::DeadlineExceeded {
                attempts,
                last_error,
            } => LlmError::Timeout {
                message: format!(
                    "{}/{model}: retry deadline exceeded after {attempts} attempt(s)",
                    self.shared.provider.name()
                ),
                status: None,
                source: last_error.map(|e| Box::new(e) as crate::error::BoxError),
            },
            other => {
                let attempts = other.attempts();
                other.into_last_error().unwrap_or_else(|| {
                    LlmError::timeout(
                        format!(
                            "{}/{model}: no answer after {attempts} attempt(s)",
                            self.shared.provider.name()
                        ),
                        None,
                    )
                })
            }
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// What one attempt was admitted with, to settle afterwards.
struct Admission {
    permit: Option<OwnedBreakerPermit>,
    /// Tokens reserved from the tokens-per-minute limiter.
    tokens: u64,
}

/// The retry loop's classifier: [`ErrorClassifier`], except that the fast failures made here
/// (open breaker, local rate limit) are not retried by this loop — they would only wait for
/// the same breaker or limiter; a router falls back instead.
struct AttemptClassifier;

impl<T> Classifier<T, LlmError> for AttemptClassifier {
    fn classify(&self, result: &Result<T, LlmError>) -> Verdict {
        match result {
            Err(e) if local_code(e).is_some() => Verdict::Permanent,
            other => ErrorClassifier.classify(other),
        }
    }
}

impl Shared {
    fn breaker_for(&self, model: &str) -> Option<CircuitBreaker> {
        let config = self.breaker?;
        if let Some(breaker) = read(&self.breakers).get(model) {
            return Some(breaker.clone());
        }
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(breaker) = map.get(model) {
            return Some(breaker.clone());
        }
        if map.len() >= self.max_breakers {
            // Evict a closed breaker (it holds no state worth keeping beyond its window); when
            // every breaker is open or probing, evict any.
            let victim = map
                .iter()
                .find(|(_, b)| b.state() == quorum_resilience::BreakerState::Closed)
                .or_else(|| map.iter().next())
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                map.remove(&victim);
            }
        }
        let name = format!("{}/{model}", self.provider.name());
        // The config was validated when the provider was built.
        let breaker = CircuitBreaker::new(name, config)
            .ok()?
            .with_observers(self.observers.clone());
        map.insert(model.to_owned(), breaker.clone());
        Some(breaker)
    }

    async fn admit(&self, model: &str, estimate: u64) -> Result<Admission, LlmError> {
        let permit = match self.breaker_for(model) {
            Some(breaker) => Some(breaker.try_acquire_owned().map_err(breaker_open_error)?),
            None => None,
        };
        if let Some(rpm) = &self.rpm {
            rpm.acquire_within(1, Some(self.max_wait))
                .await
                .map_err(local_limit_error)?;
        }
        let mut tokens = 0;
        if let Some(tpm) = &self.tpm {
            // A request larger than the bucket waits for a full bucket rather than never running.
            let n = estimate.min(tpm.capacity());
            if let Err(e) = tpm.acquire_within(n, Some(self.max_wait)).await {
                if let Some(rpm) = &self.rpm {
                    rpm.settle(1, 0);
                }
                return Err(local_limit_error(e));
            }
            tokens = n;
        }
        Ok(Admission { permit, tokens })
    }

    /// Records an attempt's outcome: breaker, token settlement, the server's rate-limit state
    /// (`rate_limit` of a success, or the error's headers).
    fn finish(
        &self,
        admission: Admission,
        error: Option<&LlmError>,
        usage: Option<Usage>,
        rate_limit: Option<RateLimitInfo>,
    ) {
        if let Some(permit) = admission.permit {
            match error {
                Some(e) if e.is_retryable() => permit.failure(),
                _ => permit.success(),
            }
        }
        if let Some(tpm) = &self.tpm {
            match (error, usage) {
                (None, Some(usage)) => tpm.settle(admission.tokens, usage.total_tokens()),
                // A failed call is assumed to have cost nothing upstream.
                (Some(_), _) => tpm.settle(admission.tokens, 0),
                (None, None) => {}
            }
        }
        let info = match error {
            Some(e) => e.api().and_then(ApiError::rate_limit),
            None => rate_limit,
        };
        if let Some(info) = info {
            self.observe_rate_limit(&info);
        }
    }

    /// Lowers the limiters to what the server says is left (from a success's
    /// [`ChatResponse::rate_limit`] or an error's headers).
    fn observe_rate_limit(&self, info: &RateLimitInfo) {
        let pairs = [
            (&self.rpm, info.remaining_requests, info.reset_requests),
            (&self.tpm, info.remaining_tokens, info.reset_tokens),
        ];
        for (limiter, remaining, reset) in pairs {
            if let (Some(limiter), Some(remaining)) = (limiter, remaining) {
                limiter.observe_remaining(remaining, reset);
            }
        }
    }

    fn timed_out(&self, model: &str, after: StdDuration, what: &str) -> LlmError {
        let name = format!("{}/{model}", self.provider.name());
        self.observers.emit(Event::TimedOut { name: &name, after });
        LlmError::timeout(format!("{name}: {what} within {after:?}"), None)
    }

    async fn chat_attempt(
        &self,
        request: &ChatRequest,
        estimate: u64,
    ) -> Result<ChatResponse, LlmError> {
        let admission = self.admit(&request.model, estimate).await?;
        let result = match tokio::time::timeout(self.timeout, self.provider.chat(request)).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(&request.model, self.timeout, "no answer")),
        };
        let (usage, rate_limit) = match &result {
            Ok(r) => (r.usage, r.rate_limit.as_deref().cloned()),
            Err(_) => (None, None),
        };
        self.finish(admission, result.as_ref().err(), usage, rate_limit);
        result
    }

    async fn stream_attempt(
        self: &Arc<Self>,
        request: &ChatRequest,
        estimate: u64,
    ) -> Result<ChatStream, LlmError> {
        let admission = self.admit(&request.model, estimate).await?;
        let started = Instant::now();
        let call_deadline = started + self.timeout;
        let (first_deadline, limit, what) = match self.ttft {
            Some(ttft) if ttft < self.timeout => (started + ttft, ttft, "no first token"),
            _ => (call_deadline, self.timeout, "no answer"),
        };
        let opened = tokio::time::timeout_at(first_deadline, async {
            let mut stream = self.provider.chat_stream(request).await?;
            let first = stream.next().await;
            Ok::<_, LlmError>((stream, first))
        })
        .await;
        let outcome = match opened {
            Err(_) => Err(self.timed_out(&request.model, limit, what)),
            Ok(Err(e)) => Err(e),
            Ok(Ok((_, None))) => Err(LlmError::stream_truncated(
                "the stream ended before its first item",
            )),
            Ok(Ok((_, Some(Err(e))))) => Err(e),
            Ok(Ok((stream, Some(Ok(first))))) => Ok((stream, first)),
        };
        let (stream, first) = match outcome {
            Ok(opened) => opened,
            Err(e) => {
                self.finish(admission, Some(&e), None, None);
                return Err(e);
            }
        };
        let mut watched = Watched {
            first: None,
            inner: Some(stream),
            deadline: Box::pin(tokio::time::sleep_until(call_deadline)),
            admission: Some(admission),
            shared: Arc::clone(self),
            model: request.model.clone(),
        };
        watched.first = Some(watched.judge(Ok(first)));
        Ok(Box::pin(watched))
    }
}

fn breaker_open_error(open: BreakerOpen) -> LlmError {
    LlmError::Overloaded(Box::new(ApiError {
        message: open.to_string(),
        code: Some(BREAKER_OPEN_CODE.to_owned()),
        retry_after: open.remaining,
        ..ApiError::default()
    }))
}

fn local_limit_error(error: RateLimitError) -> LlmError {
    LlmError::RateLimited(Box::new(ApiError {
        message: error.to_string(),
        code: Some(LOCAL_RATE_LIMIT_CODE.to_owned()),
        retry_after: error.retry_after(),
        ..ApiError::default()
    }))
}

/// A stream after its first item: enforces the per-call deadline, records the outcome in the
/// breaker and settles tokens when the terminal item passes.
struct Watched {
    first: Option<Result<StreamItem, LlmError>>,
    inner: Option<ChatStream>,
    deadline: Pin<Box<Sleep>>,
    admission: Option<Admission>,
    shared: Arc<Shared>,
    model: String,
}

impl Watched {
    /// Passes an item through, settling the attempt when it is terminal.
    fn judge(&mut self, item: Result<StreamItem, LlmError>) -> Result<StreamItem, LlmError> {
        let terminal = match &item {
            Ok(StreamItem::Delta(_)) => return item,
            Ok(StreamItem::Done(done)) => (None, done.usage, done.rate_limit.as_deref().cloned()),
            Err(e) => (Some(e), None, None),
        };
        self.inner = None;
        if let Some(admission) = self.admission.take() {
            self.shared
                .finish(admission, terminal.0, terminal.1, terminal.2);
        }
        item
    }
}

impl Stream for Watched {
    type Item = Result<StreamItem, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(first));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(this.judge(item))),
            Poll::Ready(None) => {
                let truncated = LlmError::stream_truncated("the stream ended without a final item");
                Poll::Ready(Some(this.judge(Err(truncated))))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let timeout = this.shared.timeout;
                    let err = this
                        .shared
                        .timed_out(&this.model, timeout, "stream not finished");
                    Poll::Ready(Some(this.judge(Err(err))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[async_trait]
impl Provider for ResilientProvider {
    fn name(&self) -> &str {
        self.shared.provider.name()
    }

    fn kind(&self) -> &str {
        self.shared.provider.kind()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let shared = &*self.shared;
        let estimate = estimate_tokens(request, shared.default_completion_tokens);
        shared
            .retry
            .run(
                |_| shared.chat_attempt(request, estimate),
                &AttemptClassifier,
            )
            .await
            .map_err(|e| self.retry_error(&request.model, e))
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let shared = &self.shared;
        let estimate = estimate_tokens(request, shared.default_completion_tokens);
        shared
            .retry
            .run(
                |_| shared.stream_attempt(request, estimate),
                &AttemptClassifier,
            )
            .await
            .map_err(|e| self.retry_error(&request.model, e))
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let shared = &*self.shared;
        tokio::time::timeout(shared.timeout, shared.provider.list_models())
            .await
            .unwrap_or_else(|_| Err(shared.timed_out("models", shared.timeout, "no answer")))
    }

    async fn health(&self) -> Result<(), LlmError> {
        let shared = &*self.shared;
        tokio::time::timeout(shared.timeout, shared.provider.health())
            .await
            .unwrap_or_else(|_| Err(shared.timed_out("health", shared.timeout, "no answer")))
    }

    /// The inner provider's embeddings capability, unwrapped (no retries or limits).
    fn embeddings(&self) -> Option<&dyn Embeddings> {
        self.shared.provider.embeddings()
    }
}

/// An in-memory provider with scripted replies, for the unit tests of this module and the router.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::{ErrorHint, classify_http};
    use crate::types::StreamFinal;

    /// One scripted reply.
    #[derive(Clone, Debug)]
    pub(crate) enum Reply {
        /// `"answer from <model>"`, usage 10 + 5.
        Answer,
        /// An HTTP error status with headers, classified like a provider would.
        Status(u16, Vec<(&'static str, &'static str)>),
        /// A 400 context length error.
        Context,
        /// Waits, then replies.
        Delay(StdDuration, Box<Reply>),
        /// A stream: (delay before, item) pairs; `None` item = an in-stream 503 error.
        Stream(Vec<(StdDuration, Option<&'static str>)>),
        /// Like [`Reply::Answer`] (or the default stream), carrying this server rate-limit state.
        Limited(RateLimitInfo),
    }

    pub(crate) fn status(code: u16) -> Reply {
        Reply::Status(code, Vec::new())
    }

    pub(crate) fn error_of(code: u16, headers: &[(&'static str, &'static str)]) -> LlmError {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        classify_http(code, &map, "", &ErrorHint::message(format!("fake {code}")))
    }

    /// Counts futures dropped before they finished.
    struct DropGuard<'a>(&'a AtomicUsize, bool);

    impl Drop for DropGuard<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[derive(Default)]
    pub(crate) struct Fake {
        pub(crate) name: String,
        scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
        calls: Mutex<Vec<ChatRequest>>,
        pub(crate) cancelled: AtomicUsize,
    }

    impl Fake {
        pub(crate) fn new(name: &str) -> Arc<Fake> {
            Arc::new(Fake {
                name: name.to_owned(),
                ..Fake::default()
            })
        }

        /// Queues replies for `model`; once they run out, it answers.
        pub(crate) fn script(&self, model: &str, replies: Vec<Reply>) {
            self.scripts
                .lock()
                .unwrap()
                .entry(model.to_owned())
                .or_default()
                .extend(replies);
        }

        pub(crate) fn calls(&self, model: &str) -> usize {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.model == model)
                .count()
        }

        pub(crate) fn total_calls(&self) -> usize {
            self.calls.lock().unwrap().len()
        }

        pub(crate) fn requests(&self) -> Vec<ChatRequest> {
            self.calls.lock().unwrap().clone()
        }

        fn next(&self, request: &ChatRequest) -> Reply {
            self.calls.lock().unwrap().push(request.clone());
            self.scripts
                .lock()
                .unwrap()
                .get_mut(&request.model)
                .and_then(VecDeque::pop_front)
                .unwrap_or(Reply::Answer)
        }

        fn answer(&self, model: &str) -> ChatResponse {
            ChatResponse {
                content: format!("answer from {model}"),
                usage: Some(Usage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                }),
                provider: self.name.clone(),
                model: model.to_owned(),
                ..ChatResponse::default()
            }
        }

        async fn reply(&self, model: &str, mut reply: Reply) -> Result<Reply, LlmError> {
            let mut guard = DropGuard(&self.cancelled, false);
            while let Reply::Delay(d, next) = reply {
                tokio::time::sleep(d).await;
                reply = *next;
            }
            guard.1 = true;
            match reply {
                Reply::Status(code, headers) => Err(error_of(code, &headers)),
                Reply::Context => Err(classify_http(
                    400,
                    &http::HeaderMap::new(),
                    "",
                    &ErrorHint {
                        code: Some("context_length_exceeded".into()),
                        message: Some(format!("{model}: context length exceeded")),
                        ..ErrorHint::default()
                    },
                )),
                other => Ok(other),
            }
        }
    }

    #[async_trait]
    impl Provider for Fake {
        fn name(&self) -> &str {
            &self.name
        }

        fn kind(&self) -> &str {
            "fake"
        }

        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
            let reply = self.next(request);
            match self.reply(&request.model, reply).await? {
                Reply::Stream(_) | Reply::Answer => Ok(self.answer(&request.model)),
                Reply::Limited(info) => Ok(ChatResponse {
                    rate_limit: Some(Box::new(info)),
                    ..self.answer(&request.model)
                }),
                _ => Err(LlmError::Cancelled),
            }
        }

        async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
            let reply = self.next(request);
            let reply = self.reply(&request.model, reply).await?;
            let rate_limit = match &reply {
                Reply::Limited(info) => Some(Box::new(info.clone())),
                _ => None,
            };
            let items = match reply {
                Reply::Stream(items) => items,
                _ => vec![
                    (StdDuration::ZERO, Some("answer from ")),
                    (StdDuration::ZERO, Some("fake")),
                ],
            };
            let done = StreamFinal {
                usage: Some(Usage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                }),
                provider: self.name.clone(),
                model: request.model.clone(),
                rate_limit,
                ..StreamFinal::default()
            };
            let queue: VecDeque<_> = items.into_iter().collect();
            let stream = futures_util::stream::unfold(
                (queue, Some(done)),
                |(mut queue, mut done)| async move {
                    match queue.pop_front() {
                        Some((delay, item)) => {
                            tokio::time::sleep(delay).await;
                            let item = match item {
                                Some(text) => Ok(StreamItem::Delta(text.to_owned())),
                                None => Err(error_of(503, &[])),
                            };
                            if item.is_err() {
                                done = None;
                            }
                            Some((item, (queue, done)))
                        }
                        None => done
                            .take()
                            .map(|d| (Ok(StreamItem::Done(d)), (queue, None))),
                    }
                },
            );
            Ok(crate::provider::guard_stream(stream))
        }

        async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
            Ok(vec![ModelInfo::new("fake-model")])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use quorum_resilience::{BreakerState, Observer};

    use super::fake::{Fake, Reply, status};
    use super::*;
    use crate::error::ErrorKind;
    use crate::provider::collect_stream;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Fast retries, a generous budget, a small breaker window.
    fn config() -> ResilienceConfig {
        ResilienceConfig {
            retry: RetrySettings {
                max_attempts: 3,
                initial_delay: ms(10),
                max_delay: ms(100),
                ..RetrySettings::default()
            },
            breaker: BreakerSettings {
                window: 4,
                minimum_calls: 4,
                open_duration: Duration::from_secs(10),
                half_open_probes: 1,
                ..BreakerSettings::default()
            },
            timeout: Duration::from_secs(5),
            time_to_first_token: Some(Duration::from_secs(1)),
            ..ResilienceConfig::default()
        }
    }

    fn wrap(fake: &Arc<Fake>, config: &ResilienceConfig) -> ResilientProvider {
        ResilientProvider::builder(fake.clone(), config)
            .seed(7)
            .build()
            .unwrap()
    }

    fn req(model: &str) -> ChatRequest {
        ChatRequest::user(model, "hello there")
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Observer for Recorder {
        fn on_event(&self, event: &Event<'_>) {
            let text = match event {
                Event::Retry { name, .. } => format!("retry {name}"),
                Event::BreakerTransition { name, to, .. } => {
                    format!("breaker {name} {}", to.as_str())
                }
                Event::TimedOut { name, .. } => format!("timeout {name}"),
                Event::RateLimited { name, .. } => format!("limited {name}"),
                other => format!("{other:?}"),
            };
            self.0.lock().unwrap().push(text);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_until_success() {
        let fake = Fake::new("p");
        fake.script("m", vec![status(503), status(500)]);
        let recorder = Arc::new(Recorder::default());
        let provider = ResilientProvider::builder(fake.clone(), &config())
            .observers(Observers::new(recorder.clone()))
            .build()
            .unwrap();
        let answer = provider.chat(&req("m")).await.unwrap();
        assert_eq!(answer.content, "answer from m");
        assert_eq!(fake.calls("m"), 3);
        let events = recorder.0.lock().unwrap().clone();
        assert_eq!(events, ["retry p", "retry p"]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_the_last_error() {
        let fake = Fake::new("p");
        fake.script("m", vec![status(503), status(503), status(502)]);
        let err = wrap(&fake, &config()).chat(&req("m")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Server);
        assert_eq!(fake.calls("m"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        for (code, kind) in [
            (401, ErrorKind::Auth),
            (400, ErrorKind::BadRequest),
            (403, ErrorKind::Forbidden),
        ] {
            let fake = Fake::new("p");
            fake.script("m", vec![status(code)]);
            let err = wrap(&fake, &config()).chat(&req("m")).await.unwrap_err();
            assert_eq!(err.kind(), kind);
            assert_eq!(fake.calls("m"), 1, "status {code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let fake = Fake::new("p");
        fake.script("m", vec![Reply::Status(429, vec![("retry-after", "7")])]);
        let provider = wrap(&fake, &config());
        let start = Instant::now();
        provider.chat(&req("m")).await.unwrap();
        assert_eq!(start.elapsed(), StdDuration::from_secs(7));
        assert_eq!(fake.calls("m"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_cap_is_not_waited_for() {
        let fake = Fake::new("p");
        fake.script("m", vec![Reply::Status(429, vec![("retry-after", "120")])]);
        let start = Instant::now();
        let err = wrap(&fake, &config()).chat(&req("m")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert_eq!(start.elapsed(), StdDuration::ZERO);
        assert_eq!(fake.calls("m"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries() {
        let fake = Fake::new("p");
        fake.script("m", vec![status(503); 20]);
        let mut config = config();
        config.budget = BudgetSettings {
            ttl: Duration::from_secs(10),
            min_retries_per_sec: 0,
            retry_ratio: 0.0,
        };
        config.breaker.enabled = false;
        let provider = wrap(&fake, &config);
        for _ in 0..5 {
            assert!(provider.chat(&req("m")).await.is_err());
        }
        // No retry was affordable: one upstream request per call.
        assert_eq!(fake.calls("m"), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_budget_is_shared_between_providers() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            ttl: StdDuration::from_secs(10),
            min_retries_per_sec: 0,
            retry_ratio: 1.0,
        })
        .unwrap();
        let (a, b) = (Fake::new("a"), Fake::new("b"));
        let pa = ResilientProvider::builder(a.clone(), &config())
            .budget(budget.clone())
            .build()
            .unwrap();
        let pb = ResilientProvider::builder(b.clone(), &config())
            .budget(budget.clone())
            .build()
            .unwrap();
        // Two successful calls on `a` earn two retries, which `b` then spends.
        pa.chat(&req("m")).await.unwrap();
        pa.chat(&req("m")).await.unwrap();
        b.script("m", vec![status(503); 10]);
        assert!(pb.chat(&req("m")).await.is_err());
        // 1 deposit from b's own call: 3 retries available in all, 2 used by the 3-attempt loop.
        assert_eq!(b.calls("m"), 3);
        assert_eq!(budget.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_fails_fast_and_recovers() {
        let fake = Fake::new("p");
        let mut config = config();
        config.retry.max_attempts = 1;
        let provider = wrap(&fake, &config);
        fake.script("m", vec![status(503); 4]);
        for _ in 0..4 {
            assert!(provider.chat(&req("m")).await.is_err());
        }
        let breaker = provider.breaker("m").unwrap();
        assert_eq!(breaker.state(), BreakerState::Open);
        // Fails fast: no upstream call, a retryable error naming the breaker with a hint.
        let err = provider.chat(&req("m")).await.unwrap_err();
        assert!(is_breaker_open(&err), "{err}");
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(StdDuration::from_secs(10)));
        assert_eq!(fake.calls("m"), 4);
        // Another model has its own breaker.
        provider.chat(&req("other")).await.unwrap();
        assert_eq!(provider.breaker_count(), 2);
        // After the open duration a probe goes through and closes it.
        tokio::time::advance(StdDuration::from_secs(10)).await;
        provider.chat(&req("m")).await.unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(fake.calls("m"), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_breaker_is_not_retried_even_with_attempts_left() {
        let fake = Fake::new("p");
        let provider = wrap(&fake, &config());
        provider.chat(&req("m")).await.unwrap();
        provider.breaker("m").unwrap().force_open();
        let start = Instant::now();
        let err = provider.chat(&req("m")).await.unwrap_err();
        assert!(is_breaker_open(&err));
        assert_eq!(start.elapsed(), StdDuration::ZERO);
        assert_eq!(fake.calls("m"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_do_not_open_the_breaker() {
        let fake = Fake::new("p");
        fake.script("m", vec![status(401); 10]);
        let provider = wrap(&fake, &config());
        for _ in 0..10 {
            assert!(provider.chat(&req("m")).await.is_err());
        }
        assert_eq!(provider.breaker("m").unwrap().state(), BreakerState::Closed);
        assert_eq!(fake.calls("m"), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_map_is_bounded() {
        let fake = Fake::new("p");
        let mut config = config();
        config.breaker.max_breakers = 2;
        let provider = wrap(&fake, &config);
        for model in ["a", "b", "c", "d"] {
            provider.chat(&req(model)).await.unwrap();
        }
        assert_eq!(provider.breaker_count(), 2);
        assert!(provider.breaker("d").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn breakers_can_be_disabled() {
        let fake = Fake::new("p");
        let mut config = config();
        config.breaker.enabled = false;
        config.breaker.max_breakers = 0; // ignored when disabled
        let provider = wrap(&fake, &config);
        provider.chat(&req("m")).await.unwrap();
        assert_eq!(provider.breaker_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_times_out_and_is_retried() {
        let fake = Fake::new("p");
        let slow = Reply::Delay(StdDuration::from_secs(60), Box::new(Reply::Answer));
        fake.script("m", vec![slow.clone(), slow]);
        let mut config = config();
        config.retry.max_attempts = 2;
        let start = Instant::now();
        let err = wrap(&fake, &config).chat(&req("m")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(
            err.to_string().contains("p/m: no answer within 5s"),
            "{err}"
        );
        assert_eq!(fake.calls("m"), 2);
        // Both inner futures were dropped (the HTTP request aborted), not left running.
        assert_eq!(fake.cancelled.load(std::sync::atomic::Ordering::SeqCst), 2);
        let elapsed = start.elapsed();
        assert!(elapsed >= StdDuration::from_secs(10) && elapsed < StdDuration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_the_whole_call() {
        let fake = Fake::new("p");
        fake.script(
            "m",
            vec![Reply::Delay(
                StdDuration::from_secs(60),
                Box::new(Reply::Answer),
            )],
        );
        let mut config = config();
        config.retry.deadline = Some(Duration::from_secs(2));
        let err = wrap(&fake, &config).chat(&req("m")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.to_string().contains("retry deadline exceeded"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_call_drops_the_inner_future() {
        let fake = Fake::new("p");
        fake.script(
            "m",
            vec![Reply::Delay(
                StdDuration::from_secs(60),
                Box::new(Reply::Answer),
            )],
        );
        let provider = wrap(&fake, &config());
        let request = req("m");
        let call = provider.chat(&request);
        assert!(
            tokio::time::timeout(StdDuration::from_millis(100), call)
                .await
                .is_err()
        );
        assert_eq!(fake.cancelled.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Nothing was recorded against the breaker.
        assert_eq!(provider.breaker("m").unwrap().metrics().calls, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_must_start_within_the_time_to_first_token() {
        let fake = Fake::new("p");
        let late = Reply::Stream(vec![(StdDuration::from_secs(3), Some("late"))]);
        fake.script("m", vec![late]);
        let provider = wrap(&fake, &config());
        let start = Instant::now();
        let answer = collect_stream(provider.chat_stream(&req("m")).await.unwrap())
            .await
            .unwrap();
        // First attempt timed out after 1s; the retry answered at once.
        assert_eq!(answer.content, "answer from fake");
        assert_eq!(fake.calls("m"), 2);
        assert!(start.elapsed() >= StdDuration::from_secs(1));
        assert!(start.elapsed() < StdDuration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_never_starts_fails_with_timeout() {
        let fake = Fake::new("p");
        let late = Reply::Stream(vec![(StdDuration::from_secs(3), Some("late"))]);
        fake.script("m", vec![late.clone(), late.clone(), late]);
        let Err(err) = wrap(&fake, &config()).chat_stream(&req("m")).await else {
            panic!("the stream should not start");
        };
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(
            err.to_string().contains("no first token within 1s"),
            "{err}"
        );
        assert_eq!(fake.calls("m"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_error_before_the_first_token_is_retried() {
        let fake = Fake::new("p");
        fake.script("m", vec![Reply::Stream(vec![(StdDuration::ZERO, None)])]);
        let provider = wrap(&fake, &config());
        let answer = collect_stream(provider.chat_stream(&req("m")).await.unwrap())
            .await
            .unwrap();
        assert_eq!(answer.content, "answer from fake");
        assert_eq!(fake.calls("m"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_error_after_the_first_token_is_terminal_and_not_retried() {
        let fake = Fake::new("p");
        fake.script(
            "m",
            vec![Reply::Stream(vec![
                (StdDuration::ZERO, Some("partial")),
                (StdDuration::from_millis(10), None),
            ])],
        );
        let provider = wrap(&fake, &config());
        let mut stream = provider.chat_stream(&req("m")).await.unwrap();
        assert!(matches!(stream.next().await, Some(Ok(StreamItem::Delta(t))) if t == "partial"));
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
        assert!(stream.next().await.is_none());
        assert_eq!(fake.calls("m"), 1);
        // The mid-stream failure counted against the breaker.
        assert_eq!(provider.breaker("m").unwrap().metrics().failed_calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_running_past_the_timeout_ends_with_a_timeout() {
        let fake = Fake::new("p");
        fake.script(
            "m",
            vec![Reply::Stream(vec![
                (StdDuration::ZERO, Some("a")),
                (StdDuration::from_secs(60), Some("b")),
            ])],
        );
        let provider = wrap(&fake, &config());
        let mut stream = provider.chat_stream(&req("m")).await.unwrap();
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamItem::Delta(_)))
        ));
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_estimated_then_settled_with_real_usage() {
        let fake = Fake::new("p");
        let mut config = config();
        config.rate_limit.tokens_per_minute = Some(1000);
        let provider = wrap(&fake, &config);
        let mut request = req("m");
        request.max_tokens = Some(300);
        assert_eq!(estimate_tokens(&request, 512), 3 + 4 + 300);
        provider.chat(&request).await.unwrap();
        // Reserved 307, settled to the real 15.
        assert_eq!(provider.tokens_limiter().unwrap().available(), 1000 - 15);
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_limit_waits_and_then_fails_fast_past_max_wait() {
        let fake = Fake::new("p");
        let mut config = config();
        config.rate_limit.tokens_per_minute = Some(600);
        config.rate_limit.max_wait = Duration::from_secs(5);
        let provider = wrap(&fake, &config);
        let mut request = req("m");
        request.max_tokens = Some(593); // estimate 600: the whole bucket
        provider.tokens_limiter().unwrap().try_acquire(600).unwrap();
        // The next 600 tokens need a minute, more than max_wait: fails fast, no upstream call.
        let err = provider.chat(&request).await.unwrap_err();
        assert!(is_local_rate_limit(&err), "{err}");
        assert_eq!(err.retry_after(), Some(StdDuration::from_secs(60)));
        assert_eq!(fake.total_calls(), 0);
        // A small request waits its turn (a few seconds) and then goes through.
        request.max_tokens = Some(10);
        let start = Instant::now();
        provider.chat(&request).await.unwrap();
        assert!(
            start.elapsed() > StdDuration::ZERO && start.elapsed() <= StdDuration::from_secs(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_request_waits_for_a_full_bucket() {
        let fake = Fake::new("p");
        let mut config = config();
        config.rate_limit.tokens_per_minute = Some(100);
        let provider = wrap(&fake, &config);
        let mut request = req("m");
        request.max_tokens = Some(10_000);
        provider.chat(&request).await.unwrap();
        assert_eq!(fake.calls("m"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_headers_lower_the_buckets() {
        let fake = Fake::new("p");
        fake.script(
            "m",
            vec![Reply::Status(
                429,
                vec![
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "20s"),
                    ("x-ratelimit-remaining-tokens", "100"),
                ],
            )],
        );
        let mut config = config();
        config.retry.max_attempts = 1;
        config.rate_limit.requests_per_minute = Some(60);
        config.rate_limit.tokens_per_minute = Some(10_000);
        config.rate_limit.max_wait = Duration::from_secs(60);
        let provider = wrap(&fake, &config);
        assert!(provider.chat(&req("m")).await.is_err());
        assert_eq!(provider.tokens_limiter().unwrap().available(), 100);
        // The next call waits for the server's reset before being sent.
        let start = Instant::now();
        provider.chat(&req("m")).await.unwrap();
        assert!(
            start.elapsed() >= StdDuration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(fake.calls("m"), 2);
    }

    fn limited(remaining_requests: u64, reset: u64) -> Reply {
        Reply::Limited(RateLimitInfo {
            remaining_requests: Some(remaining_requests),
            reset_requests: Some(StdDuration::from_secs(reset)),
            ..RateLimitInfo::default()
        })
    }

    fn limited_config(max_wait: u64) -> ResilienceConfig {
        let mut config = config();
        config.retry.max_attempts = 1;
        config.rate_limit.requests_per_minute = Some(60);
        config.rate_limit.max_wait = Duration::from_secs(max_wait);
        config
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_of_a_success_lowers_the_buckets() {
        let fake = Fake::new("p");
        fake.script("m", vec![limited(0, 20)]);
        let provider = wrap(&fake, &limited_config(60));
        let answer = provider.chat(&req("m")).await.unwrap();
        assert_eq!(answer.rate_limit.unwrap().remaining_requests, Some(0));
        assert_eq!(provider.requests_limiter().unwrap().available(), 0);
        // The next call waits for the server's reset before being sent.
        let start = Instant::now();
        provider.chat(&req("m")).await.unwrap();
        assert!(
            start.elapsed() >= StdDuration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(fake.calls("m"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_of_a_success_fails_locally_beyond_max_wait() {
        let fake = Fake::new("p");
        fake.script("m", vec![limited(0, 20)]);
        let provider = wrap(&fake, &limited_config(5));
        provider.chat(&req("m")).await.unwrap();
        let err = provider.chat(&req("m")).await.unwrap_err();
        assert!(is_local_rate_limit(&err), "{err}");
        assert_eq!(fake.calls("m"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_of_a_stream_done_lowers_the_buckets() {
        let fake = Fake::new("p");
        fake.script("m", vec![limited(0, 20)]);
        let provider = wrap(&fake, &limited_config(5));
        let stream = provider.chat_stream(&req("m")).await.unwrap();
        let answer = crate::collect_stream(stream).await.unwrap();
        assert_eq!(answer.content, "answer from fake");
        let err = provider.chat(&req("m")).await.unwrap_err();
        assert!(is_local_rate_limit(&err), "{err}");
        assert_eq!(fake.calls("m"), 1);
    }

    #[test]
    fn reset_headers_parse() {
        use crate::types::parse_reset;
        assert_eq!(parse_reset("1s"), Some(StdDuration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(StdDuration::from_secs(360)));
        assert_eq!(
            parse_reset("59.5ms"),
            Some(StdDuration::from_micros(59_500))
        );
        assert_eq!(parse_reset("2.5"), Some(StdDuration::from_millis(2500)));
        assert_eq!(parse_reset("soon"), None);
        assert_eq!(parse_reset("-1"), None);
    }

    #[test]
    fn config_parses_durations_as_strings_and_rejects_unknown_fields() {
        let config: ResilienceConfig = serde_json::from_value(serde_json::json!({
            "retry": {"max_attempts": 5, "initial_delay": "50ms"},
            "breaker": {"open_duration": "1m"},
            "rate_limit": {"tokens_per_minute": 90000},
            "timeout": "30s",
            "time_to_first_token": null,
        }))
        .unwrap();
        assert_eq!(config.retry.max_attempts, 5);
        assert_eq!(config.retry.initial_delay, ms(50));
        assert_eq!(config.retry.max_delay, Duration::from_secs(5));
        assert_eq!(config.breaker.open_duration, Duration::from_secs(60));
        assert_eq!(config.rate_limit.tokens_per_minute, Some(90_000));
        assert_eq!(config.time_to_first_token, None);
        config.validate().unwrap();
        let defaults: ResilienceConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults, ResilienceConfig::default());
        let unknown = serde_json::from_value::<ResilienceConfig>(
            serde_json::json!({"retry": {"attempts": 3}}),
        );
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `attempts`")
        );
        let bare = serde_json::from_value::<ResilienceConfig>(serde_json::json!({"timeout": "30"}));
        assert!(bare.unwrap_err().to_string().contains("missing unit"));
    }

    #[test]
    fn validation_names_the_field() {
        type Edit = Box<dyn Fn(&mut ResilienceConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.retry.max_attempts = 0),
                "retry: invalid retry policy: max_attempts (0) must be at least 1",
            ),
            (
                Box::new(|c| c.budget.retry_ratio = -1.0),
                "budget: invalid retry budget: retry_ratio (-1) must be finite and between 0 and 1000",
            ),
            (
                Box::new(|c| c.breaker.failure_rate_threshold = 0.0),
                "breaker: invalid circuit breaker config: failure_rate_threshold (0) must be a percentage in (0, 100]",
            ),
            (
                Box::new(|c| c.breaker.max_breakers = 0),
                "breaker.max_breakers (0) must be at least 1",
            ),
            (
                Box::new(|c| c.timeout = ms(0)),
                "timeout (0s) must be positive",
            ),
            (
                Box::new(|c| c.time_to_first_token = Some(ms(0))),
                "time_to_first_token (0s) must be positive",
            ),
            (
                Box::new(|c| c.rate_limit.requests_per_minute = Some(0)),
                "rate_limit.requests_per_minute: invalid rate limit config: capacity (0) must be at least 1",
            ),
        ];
        for (edit, want) in cases {
            let mut config = ResilienceConfig::default();
            edit(&mut config);
            assert_eq!(config.validate().unwrap_err().to_string(), want);
            let fake: Arc<dyn Provider> = Fake::new("p");
            assert!(ResilientProvider::new(fake, &config).is_err());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn passes_name_kind_models_and_health_through() {
        let fake = Fake::new("inner");
        let provider = wrap(&fake, &config());
        assert_eq!((provider.name(), provider.kind()), ("inner", "fake"));
        assert_eq!(provider.list_models().await.unwrap()[0].id, "fake-model");
        provider.health().await.unwrap();
        assert!(provider.embeddings().is_none());
        assert!(format!("{provider:?}").contains("ResilientProvider"));
    }
}
