//! [`Router`]: fallback chains of `(provider, model)` steps behind one logical model name.
//!
//! A request for logical model `smart` tries the steps of the `smart` chain in order (each step
//! usually a [`ResilientProvider`](crate::ResilientProvider), which retries on its own):
//!
//! - **Success** ends the chain.
//! - **Retryable failures** (after the step's own retries), including an open circuit breaker
//!   ([`is_breaker_open`]) and a local rate limit, fall back to the next step.
//! - **Permanent failures** (auth, bad request, quota, unknown model...) are returned at once:
//!   another model would get the same bad request, and a broken account needs a human. With
//!   [`RouterConfig::fallback_on_provider_unavailable`] the provider-specific ones
//!   ([`LlmError::is_provider_unavailable`]: auth, payment, quota, unknown model) fall back too.
//! - **Context length exceeded**: the chain skips to the next step with a *larger* configured
//!   `context_window` (steps in between are skipped as too small). If there is none, the history
//!   is **trimmed** ([`trim_history`]: oldest non-system messages first, always keeping system
//!   messages and the last user message) and the same step is tried once more.
//! - **Streams** fall back only before their first item: once text reached the caller, a later
//!   error is the stream's terminal item.
//!
//! [`Router::chat_routed`] and [`Router::chat_stream_routed`] return a [`Routed`] value saying
//! which `(provider, model)` answered and why earlier steps were skipped ([`Skipped`]). The
//! [`Provider`] implementation returns the bare answer (whose `provider` and `model` fields still
//! name who answered): the skip record is not added to [`ChatResponse`], because a new field
//! there would break every provider crate that builds one with a struct literal.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, LlmError};
use crate::provider::{ChatStream, Provider};
use crate::resilient::{estimate_prompt_tokens, is_breaker_open};
use crate::types::{ChatRequest, ChatResponse, ModelInfo, Role, StreamItem};

/// The configuration of a [`Router`] (a YAML section).
///
/// ```yaml
/// routes:
///   smart:
///     - {provider: local, model: "gemma3:1b", context_window: 8192}
///     - {provider: local, model: "llama3.2:latest", context_window: 131072}
///     - {provider: openai, model: gpt-4o-mini}
/// trim_history: true
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The chain of each logical model, tried in order.
    pub routes: BTreeMap<String, Vec<RouteStepConfig>>,
    /// Whether to trim the history when no step has a larger context window. Default true.
    pub trim_history: bool,
    /// Whether auth, payment, quota and unknown-model errors fall back to the next step.
    /// Default false (they are returned).
    pub fallback_on_provider_unavailable: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            routes: BTreeMap::new(),
            trim_history: true,
            fallback_on_provider_unavailable: false,
        }
    }
}

/// One step of a chain in a [`RouterConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteStepConfig {
    /// The provider instance's configured name.
    pub provider: String,
    /// The model, as that provider names it.
    pub model: String,
    /// The model's context window in tokens, if known.
    #[serde(default)]
    pub context_window: Option<u64>,
}

/// An invalid router configuration; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterConfigError {
    /// A route has no steps.
    #[error("routes.{route}: a route needs at least one step")]
    EmptyRoute {
        /// The logical model.
        route: String,
    },
    /// A step names a provider that is not configured.
    #[error("routes.{route}[{index}].provider: unknown provider \"{provider}\" (known: {known})")]
    UnknownProvider {
        /// The logical model.
        route: String,
        /// The step's index.
        index: usize,
        /// The provider asked for.
        provider: String,
        /// The known providers, comma-separated.
        known: String,
    },
    /// A step's model is empty.
    #[error("routes.{route}[{index}].model: must not be empty")]
    EmptyModel {
        /// The logical model.
        route: String,
        /// The step's index.
        index: usize,
    },
    /// A step's context window is zero.
    #[error("routes.{route}[{index}].context_window (0) must be at least 1")]
    ZeroContextWindow {
        /// The logical model.
        route: String,
        /// The step's index.
        index: usize,
    },
}

/// One step of a chain: a provider (usually resilient) and the model to ask it for.
#[derive(Clone)]
pub struct RouteStep {
    provider: Arc<dyn Provider>,
    model: String,
    context_window: Option<u64>,
}

impl fmt::Debug for RouteStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteStep")
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .field("context_window", &self.context_window)
            .finish()
    }
}

impl RouteStep {
    /// A step asking `provider` for `model`.
    pub fn new(provider: Arc<dyn Provider>, model: impl Into<String>) -> Self {
        RouteStep {
            provider,
            model: model.into(),
            context_window: None,
        }
    }

    /// Sets the model's context window (tokens).
    #[must_use]
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// The step's provider.
    #[must_use]
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// The step's model.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether this step's window is larger than `overflowed` (a window that was too small;
    /// `None`: unknown, then any configured window counts as larger).
    fn larger_than(&self, overflowed: Option<u64>) -> bool {
        match (self.context_window, overflowed) {
            (Some(mine), Some(theirs)) => mine > theirs,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Why a step did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The step failed with a retryable error (after its own retries), or — with
    /// `fallback_on_provider_unavailable` — an auth / payment / quota / unknown-model error.
    Failed {
        /// The error's class.
        kind: ErrorKind,
        /// The error's message.
        message: String,
    },
    /// The step's circuit breaker is open: it was not called.
    BreakerOpen {
        /// The breaker's message (names it and the remaining open time).
        message: String,
    },
    /// The prompt did not fit the step's context window.
    ContextLength {
        /// The error's message.
        message: String,
    },
    /// Not called: its context window is not larger than one the prompt already overflowed.
    ContextWindowTooSmall,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Failed { kind, message } => write!(f, "failed ({kind}): {message}"),
            SkipReason::BreakerOpen { message } => write!(f, "breaker open: {message}"),
            SkipReason::ContextLength { message } => write!(f, "context length: {message}"),
            SkipReason::ContextWindowTooSmall => f.write_str("context window too small"),
        }
    }
}

/// A step that did not answer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The step's provider name.
    pub provider: String,
    /// The step's model.
    pub model: String,
    /// Why it did not answer.
    pub reason: SkipReason,
}

/// An answer and the route that produced it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Routed<T> {
    /// The answer.
    pub value: T,
    /// The provider (configured name) of the step that answered.
    pub provider: String,
    /// The model of the step that answered (as requested from the provider).
    pub model: String,
    /// Steps tried or passed over before it, in order.
    pub skipped: Vec<Skipped>,
    /// Messages dropped from the history to fit a context window (0: none).
    pub trimmed_messages: usize,
}

/// A routed call that failed: the error that ended it and the steps that did not answer.
#[derive(Debug, thiserror::Error)]
#[error("route \"{route}\" failed: {error}")]
#[non_exhaustive]
pub struct RouteError {
    /// The logical model.
    pub route: String,
    /// The error returned (a permanent one, or the last step's).
    #[source]
    pub error: LlmError,
    /// Steps that did not answer before the chain ended (the failing step included when it
    /// was fallen back from).
    pub skipped: Vec<Skipped>,
}

/// Fallback chains behind logical model names (see the [module docs](self)); itself a
/// [`Provider`] whose models are the logical names. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use quorum_llm::{ChatRequest, Provider, RouteStep, Router};
/// # use async_trait::async_trait;
/// # use quorum_llm::{ChatResponse, LlmError, ModelInfo};
/// # struct Echo(&'static str);
/// # #[async_trait]
/// # impl Provider for Echo {
/// #     fn name(&self) -> &str { self.0 }
/// #     fn kind(&self) -> &str { "echo" }
/// #     async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, LlmError> {
/// #         Ok(ChatResponse { provider: self.0.into(), model: r.model.clone(), ..ChatResponse::default() })
/// #     }
/// #     async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> { Ok(vec![]) }
/// # }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let local: Arc<dyn Provider> = Arc::new(Echo("local"));
/// let router = Router::builder("gateway")
///     .route("smart", vec![
///         RouteStep::new(local.clone(), "gemma3:1b").context_window(8192),
///         RouteStep::new(local, "llama3.2:latest").context_window(131_072),
///     ])
///     .build()?;
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
/// let routed = runtime.block_on(router.chat_routed(&ChatRequest::user("smart", "hi")))?;
/// assert_eq!((routed.provider.as_str(), routed.model.as_str()), ("local", "gemma3:1b"));
/// assert!(routed.skipped.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<RouterInner>,
}

#[derive(Debug)]
struct RouterInner {
    name: String,
    routes: BTreeMap<String, Vec<RouteStep>>,
    trim_history: bool,
    fallback_on_provider_unavailable: bool,
}

/// Builds a [`Router`] in code.
#[derive(Debug)]
#[must_use = "call build() to get the router"]
pub struct RouterBuilder {
    name: String,
    routes: BTreeMap<String, Vec<RouteStep>>,
    trim_history: bool,
    fallback_on_provider_unavailable: bool,
}

impl RouterBuilder {
    /// Adds (or replaces) the chain of logical model `name`.
    pub fn route(mut self, name: impl Into<String>, steps: Vec<RouteStep>) -> Self {
        self.routes.insert(name.into(), steps);
        self
    }

    /// Whether to trim the history on a context-length error (default true).
    pub fn trim_history(mut self, trim: bool) -> Self {
        self.trim_history = trim;
        self
    }

    /// Whether auth, payment, quota and unknown-model errors fall back (default false).
    pub fn fallback_on_provider_unavailable(mut self, fallback: bool) -> Self {
        self.fallback_on_provider_unavailable = fallback;
        self
    }

    /// Checks the chains and builds the router.
    ///
    /// # Errors
    ///
    /// [`RouterConfigError`] for an empty chain, an empty model or a zero context window.
    pub fn build(self) -> Result<Router, RouterConfigError> {
        for (route, steps) in &self.routes {
            if steps.is_empty() {
                return Err(RouterConfigError::EmptyRoute {
                    route: route.clone(),
                });
            }
            for (index, step) in steps.iter().enumerate() {
                if step.model.is_empty() {
                    return Err(RouterConfigError::EmptyModel {
                        route: route.clone(),
                        index,
                    });
                }
                if step.context_window == Some(0) {
                    return Err(RouterConfigError::ZeroContextWindow {
                        route: route.clone(),
                        index,
                    });
                }
            }
        }
        Ok(Router {
            inner: Arc::new(RouterInner {
                name: self.name,
                routes: self.routes,
                trim_history: self.trim_history,
                fallback_on_provider_unavailable: self.fallback_on_provider_unavailable,
            }),
        })
    }
}

/// What one step produced.
enum Answer {
    Chat(Box<ChatResponse>),
    Stream(ChatStream),
}

impl Router {
    /// A builder for a router named `name` (its [`Provider::name`]).
    pub fn builder(name: impl Into<String>) -> RouterBuilder {
        RouterBuilder {
            name: name.into(),
            routes: BTreeMap::new(),
            trim_history: true,
            fallback_on_provider_unavailable: false,
        }
    }

    /// Builds a router from its configuration, resolving provider names in `providers`.
    ///
    /// # Errors
    ///
    /// [`RouterConfigError`] naming the route and step: an unknown provider, an empty chain or
    /// model, a zero context window.
    pub fn from_config(
        name: impl Into<String>,
        config: &RouterConfig,
        providers: &BTreeMap<String, Arc<dyn Provider>>,
    ) -> Result<Router, RouterConfigError> {
        let mut builder = Router::builder(name)
            .trim_history(config.trim_history)
            .fallback_on_provider_unavailable(config.fallback_on_provider_unavailable);
        for (route, steps) in &config.routes {
            let mut resolved = Vec::with_capacity(steps.len());
            for (index, step) in steps.iter().enumerate() {
                let provider = providers.get(&step.provider).ok_or_else(|| {
                    RouterConfigError::UnknownProvider {
                        route: route.clone(),
                        index,
                        provider: step.provider.clone(),
                        known: providers.keys().cloned().collect::<Vec<_>>().join(", "),
                    }
                })?;
                resolved.push(RouteStep {
                    provider: Arc::clone(provider),
                    model: step.model.clone(),
                    context_window: step.context_window,
                });
            }
            builder = builder.route(route.clone(), resolved);
        }
        builder.build()
    }

    /// The chain of logical model `name`.
    #[must_use]
    pub fn route(&self, name: &str) -> Option<&[RouteStep]> {
        self.inner.routes.get(name).map(Vec::as_slice)
    }

    /// Asks the chain of `request.model` for a complete answer.
    ///
    /// # Errors
    ///
    /// [`RouteError`] with the permanent error, or the last step's error when every step failed
    /// (an unknown logical model: [`LlmError::InvalidRequest`]).
    pub async fn chat_routed(
        &self,
        request: &ChatRequest,
    ) -> Result<Routed<ChatResponse>, RouteError> {
        let routed = self.run(request, false).await?;
        let value = match routed.value {
            Answer::Chat(value) => *value,
            Answer::Stream(stream) => crate::provider::collect_stream(stream)
                .await
                .map_err(|e| self.failure(request, e, routed.skipped.clone()))?,
        };
        Ok(Routed {
            value,
            provider: routed.provider,
            model: routed.model,
            skipped: routed.skipped,
            trimmed_messages: routed.trimmed_messages,
        })
    }

    /// Asks the chain of `request.model` for a streamed answer, falling back only before the
    /// first item.
    ///
    /// # Errors
    ///
    /// As [`Router::chat_routed`].
    pub async fn chat_stream_routed(
        &self,
        request: &ChatRequest,
    ) -> Result<Routed<ChatStream>, RouteError> {
        let routed = self.run(request, true).await?;
        let value = match routed.value {
            Answer::Stream(stream) => stream,
            Answer::Chat(response) => single_item_stream(*response),
        };
        Ok(Routed {
            value,
            provider: routed.provider,
            model: routed.model,
            skipped: routed.skipped,
            trimmed_messages: routed.trimmed_messages,
        })
    }

    fn failure(&self, request: &ChatRequest, error: LlmError, skipped: Vec<Skipped>) -> RouteError {
        RouteError {
            route: request.model.clone(),
            error,
            skipped,
        }
    }

    async fn run(&self, request: &ChatRequest, stream: bool) -> Result<Routed<Answer>, RouteError> {
        let inner = &*self.inner;
        let Some(steps) = inner.routes.get(&request.model) else {
            let known = inner.routes.keys().cloned().collect::<Vec<_>>().join(", ");
            let error = LlmError::InvalidRequest {
                message: format!(
                    "model: no route named \"{}\" in router \"{}\" (routes: {known})",
                    request.model, inner.name
                ),
            };
            return Err(self.failure(request, error, Vec::new()));
        };
        let mut req = request.clone();
        let mut skipped = Vec::new();
        let mut trimmed_messages = 0;
        // The window the prompt overflowed, while looking for a larger one.
        let mut overflowed: Option<Option<u64>> = None;
        let mut last_error = None;
        let mut index = 0;
        while let Some(step) = steps.get(index) {
            if let Some(window) = overflowed
                && !step.larger_than(window)
            {
                skipped.push(skip(step, SkipReason::ContextWindowTooSmall));
                index += 1;
                continue;
            }
            req.model.clone_from(&step.model);
            let error = match call_step(step, &req, stream).await {
                Ok(value) => {
                    return Ok(Routed {
                        value,
                        provider: step.provider.name().to_owned(),
                        model: step.model.clone(),
                        skipped,
                        trimmed_messages,
                    });
                }
                Err(error) => error,
            };
            if error.is_context_length() {
                skipped.push(skip(
                    step,
                    SkipReason::ContextLength {
                        message: error.to_string(),
                    },
                ));
                if steps[index + 1..]
                    .iter()
                    .any(|s| s.larger_than(step.context_window))
                {
                    overflowed = Some(step.context_window);
                    last_error = Some(error);
                    index += 1;
                    continue;
                }
                if inner.trim_history && trimmed_messages == 0 {
                    let dropped = trim_history(&mut req, step.context_window);
                    if dropped > 0 {
                        // Try the same step once more with the shorter history.
                        trimmed_messages = dropped;
                        overflowed = None;
                        continue;
                    }
                }
                return Err(self.failure(request, error, skipped));
            }
            let falls_back = error.is_retryable()
                || inner.fallback_on_provider_unavailable && error.is_provider_unavailable();
            if !falls_back {
                return Err(self.failure(request, error, skipped));
            }
            let reason = if is_breaker_open(&error) {
                SkipReason::BreakerOpen {
                    message: error.to_string(),
                }
            } else {
                SkipReason::Failed {
                    kind: error.kind(),
                    message: error.to_string(),
                }
            };
            skipped.push(skip(step, reason));
            last_error = Some(error);
            index += 1;
        }
        let error = last_error.unwrap_or_else(|| LlmError::InvalidRequest {
            message: format!(
                "model: no step of route \"{}\" has a context window large enough",
                request.model
            ),
        });
        Err(self.failure(request, error, skipped))
    }
}

fn skip(step: &RouteStep, reason: SkipReason) -> Skipped {
    Skipped {
        provider: step.provider.name().to_owned(),
        model: step.model.clone(),
        reason,
    }
}

async fn call_step(
    step: &RouteStep,
    request: &ChatRequest,
    stream: bool,
) -> Result<Answer, LlmError> {
    if !stream {
        return step
            .provider
            .chat(request)
            .await
            .map(|r| Answer::Chat(Box::new(r)));
    }
    let mut inner = step.provider.chat_stream(request).await?;
    match inner.next().await {
        None => Err(LlmError::stream_truncated(
            "the stream ended before its first item",
        )),
        Some(Err(error)) => Err(error),
        Some(Ok(first)) => Ok(Answer::Stream(Box::pin(
            futures_util::stream::once(std::future::ready(Ok(first))).chain(inner),
        ))),
    }
}

fn single_item_stream(response: ChatResponse) -> ChatStream {
    let done = crate::types::StreamFinal {
        finish_reason: response.finish_reason,
        usage: response.usage,
        timings: response.timings,
        provider: response.provider,
        model: response.model,
        rate_limit: response.rate_limit,
    };
    let mut items = Vec::with_capacity(2);
    if !response.content.is_empty() {
        items.push(Ok(StreamItem::Delta(response.content)));
    }
    items.push(Ok(StreamItem::Done(done)));
    Box::pin(futures_util::stream::iter(items))
}

/// Drops the oldest messages of `request` to fit `context_window` tokens (estimated as in
/// [`estimate_prompt_tokens`], plus `max_tokens`), and returns how many were dropped.
///
/// System messages and the last user message are always kept. At least one message is dropped
/// when any can be (the provider said the prompt is too long even if the estimate fits); with
/// an unknown window, half of the droppable messages (rounded up) are dropped.
pub fn trim_history(request: &mut ChatRequest, context_window: Option<u64>) -> usize {
    let last_user = request.messages.iter().rposition(|m| m.role == Role::User);
    let droppable: Vec<usize> = request
        .messages
        .iter()
        .enumerate()
        .filter(|(i, m)| m.role != Role::System && Some(*i) != last_user)
        .map(|(i, _)| i)
        .collect();
    if droppable.is_empty() {
        return 0;
    }
    let budget_of = |r: &ChatRequest| {
        estimate_prompt_tokens(r).saturating_add(r.max_tokens.map_or(0, u64::from))
    };
    let mut to_drop = match context_window {
        None => droppable.len().div_ceil(2),
        Some(window) => {
            // Drop oldest first until the estimate fits.
            let mut total = budget_of(request);
            let mut n = 0;
            for &i in &droppable {
                if n > 0 && total <= window {
                    break;
                }
                let tokens = u64::try_from(request.messages[i].content.len())
                    .unwrap_or(u64::MAX)
                    .div_ceil(4)
                    .saturating_add(4);
                total = total.saturating_sub(tokens);
                n += 1;
            }
            n
        }
    };
    to_drop = to_drop.clamp(1, droppable.len());
    let dropped: std::collections::HashSet<usize> = droppable.into_iter().take(to_drop).collect();
    let mut index = 0;
    request.messages.retain(|_| {
        let keep = !dropped.contains(&index);
        index += 1;
        keep
    });
    to_drop
}

#[async_trait]
impl Provider for Router {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn kind(&self) -> &str {
        "router"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.chat_routed(request)
            .await
            .map(|routed| routed.value)
            .map_err(|e| e.error)
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        self.chat_stream_routed(request)
            .await
            .map(|routed| routed.value)
            .map_err(|e| e.error)
    }

    /// The logical models, with the largest context window configured in each chain.
    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        Ok(self
            .inner
            .routes
            .iter()
            .map(|(name, steps)| ModelInfo {
                id: name.clone(),
                owned_by: Some(self.inner.name.clone()),
                context_window: steps.iter().filter_map(|s| s.context_window).max(),
            })
            .collect())
    }

    /// Healthy when at least one provider of any chain is.
    async fn health(&self) -> Result<(), LlmError> {
        let mut seen: Vec<&str> = Vec::new();
        let mut last_error = None;
        for step in self.inner.routes.values().flatten() {
            let name = step.provider.name();
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            match step.provider.health().await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| LlmError::InvalidRequest {
            message: format!("router \"{}\" has no routes", self.inner.name),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resilient::fake::{Fake, Reply, status};
    use crate::resilient::{ResilienceConfig, ResilientProvider};
    use crate::types::Message;

    fn chain(steps: Vec<RouteStep>) -> Router {
        Router::builder("gw").route("smart", steps).build().unwrap()
    }

    fn step(fake: &Arc<Fake>, model: &str) -> RouteStep {
        RouteStep::new(fake.clone(), model)
    }

    fn req() -> ChatRequest {
        ChatRequest::user("smart", "hello")
    }

    #[tokio::test(start_paused = true)]
    async fn falls_back_on_retryable_errors_and_records_why() {
        let (a, b) = (Fake::new("a"), Fake::new("b"));
        a.script("m1", vec![status(503)]);
        let router = chain(vec![step(&a, "m1"), step(&b, "m2")]);
        let routed = router.chat_routed(&req()).await.unwrap();
        assert_eq!(
            (routed.provider.as_str(), routed.model.as_str()),
            ("b", "m2")
        );
        assert_eq!(routed.value.content, "answer from m2");
        assert_eq!(routed.skipped.len(), 1);
        assert_eq!(routed.skipped[0].provider, "a");
        assert!(matches!(
            &routed.skipped[0].reason,
            SkipReason::Failed {
                kind: ErrorKind::Overloaded,
                ..
            }
        ));
        // The step's model replaced the logical one.
        assert_eq!(b.requests()[0].model, "m2");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_returned_without_fallback() {
        for code in [401, 400, 403] {
            let (a, b) = (Fake::new("a"), Fake::new("b"));
            a.script("m1", vec![status(code)]);
            let router = chain(vec![step(&a, "m1"), step(&b, "m2")]);
            let err = router.chat_routed(&req()).await.unwrap_err();
            assert_eq!(err.error.status(), Some(code));
            assert!(err.skipped.is_empty());
            assert_eq!(b.total_calls(), 0, "status {code}");
            assert!(
                err.to_string().starts_with("route \"smart\" failed: "),
                "{err}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn provider_unavailable_errors_fall_back_when_configured() {
        let (a, b) = (Fake::new("a"), Fake::new("b"));
        a.script("m1", vec![status(401)]);
        let router = Router::builder("gw")
            .route("smart", vec![step(&a, "m1"), step(&b, "m2")])
            .fallback_on_provider_unavailable(true)
            .build()
            .unwrap();
        let routed = router.chat_routed(&req()).await.unwrap();
        assert_eq!(routed.model, "m2");
        assert!(matches!(
            &routed.skipped[0].reason,
            SkipReason::Failed {
                kind: ErrorKind::Auth,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_falls_back_without_calling_the_step() {
        let (a, b) = (Fake::new("a"), Fake::new("b"));
        let resilient = ResilientProvider::new(a.clone(), &ResilienceConfig::default()).unwrap();
        resilient.chat(&ChatRequest::user("m1", "x")).await.unwrap();
        resilient.breaker("m1").unwrap().force_open();
        let router = chain(vec![
            RouteStep::new(Arc::new(resilient), "m1"),
            step(&b, "m2"),
        ]);
        let routed = router.chat_routed(&req()).await.unwrap();
        assert_eq!(routed.model, "m2");
        assert!(
            matches!(&routed.skipped[0].reason, SkipReason::BreakerOpen { message } if message.contains("a/m1"))
        );
        assert_eq!(a.calls("m1"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn every_step_failing_returns_the_last_error() {
        let (a, b) = (Fake::new("a"), Fake::new("b"));
        a.script("m1", vec![status(503)]);
        b.script("m2", vec![status(500)]);
        let router = chain(vec![step(&a, "m1"), step(&b, "m2")]);
        let err = router.chat(&req()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Server);
        let err = {
            a.script("m1", vec![status(503)]);
            b.script("m2", vec![status(500)]);
            router.chat_routed(&req()).await.unwrap_err()
        };
        assert_eq!(err.skipped.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn context_length_skips_to_a_larger_window() {
        let (a, b) = (Fake::new("a"), Fake::new("b"));
        a.script("small", vec![Reply::Context]);
        let router = chain(vec![
            step(&a, "small").context_window(4096),
            step(&b, "same").context_window(4096),
            step(&b, "smaller").context_window(2048),
            step(&b, "large").context_window(131_072),
        ]);
        let routed = router.chat_routed(&req()).await.unwrap();
        assert_eq!(routed.model, "large");
        let reasons: Vec<_> = routed.skipped.iter().map(|s| s.reason.clone()).collect();
        assert!(matches!(reasons[0], SkipReason::ContextLength { .. }));
        assert_eq!(
            reasons[1..],
            [
                SkipReason::ContextWindowTooSmall,
                SkipReason::ContextWindowTooSmall
            ]
        );
        assert_eq!(b.calls("same") + b.calls("smaller"), 0);
        assert_eq!(routed.trimmed_messages, 0);
    }

    fn long_conversation() -> ChatRequest {
        let mut messages = vec![Message::system("be brief")];
        for i in 0..6 {
            messages.push(Message::user(format!("question {i} {}", "x".repeat(400))));
            messages.push(Message::assistant(format!(
                "answer {i} {}",
                "y".repeat(400)
            )));
        }
        messages.push(Message::user("the last question"));
        ChatRequest::new("smart", messages)
    }

    #[tokio::test(start_paused = true)]
    async fn context_length_without_a_larger_window_trims_the_history_once() {
        let a = Fake::new("a");
        a.script("only", vec![Reply::Context]);
        let router = chain(vec![step(&a, "only").context_window(800)]);
        let routed = router.chat_routed(&long_conversation()).await.unwrap();
        assert!(routed.trimmed_messages > 0);
        let sent = a.requests();
        assert_eq!(sent.len(), 2);
        let trimmed = &sent[1].messages;
        assert_eq!(trimmed.len(), 14 - routed.trimmed_messages);
        assert_eq!(trimmed[0], Message::system("be brief"));
        assert_eq!(trimmed.last().unwrap(), &Message::user("the last question"));
        // The oldest turns went first.
        assert!(!trimmed.iter().any(|m| m.content.starts_with("question 0")));
        assert!(trimmed.iter().any(|m| m.content.starts_with("answer 5")));
        assert!(estimate_prompt_tokens(&sent[1]) <= 800);

        // A second overflow after trimming is returned.
        a.script("only", vec![Reply::Context, Reply::Context]);
        let err = router.chat_routed(&long_conversation()).await.unwrap_err();
        assert!(err.error.is_context_length());
        assert_eq!(a.calls("only"), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn context_length_with_nothing_to_trim_is_returned() {
        let a = Fake::new("a");
        a.script("only", vec![Reply::Context]);
        let router = chain(vec![step(&a, "only")]);
        let err = router.chat_routed(&req()).await.unwrap_err();
        assert!(err.error.is_context_length());
        assert_eq!(a.calls("only"), 1);

        let disabled = Router::builder("gw")
            .route("smart", vec![step(&a, "only")])
            .trim_history(false)
            .build()
            .unwrap();
        a.script("only", vec![Reply::Context]);
        let err = disabled
            .chat_routed(&long_conversation())
            .await
            .unwrap_err();
        assert!(err.error.is_context_length());
        assert_eq!(a.calls("only"), 2);
    }

    #[test]
    fn trimming_keeps_system_and_last_user_message() {
        let mut request = long_conversation();
        request
            .messages
            .insert(5, Message::system("mid-conversation instruction"));
        let dropped = trim_history(&mut request, None);
        assert_eq!(dropped, 6); // half of 12 droppable
        assert_eq!(request.messages.len(), 9);
        assert_eq!(
            request
                .messages
                .iter()
                .filter(|m| m.role == Role::System)
                .count(),
            2
        );
        assert_eq!(request.last_user_message(), Some("the last question"));

        // Only the kept messages left: nothing to drop.
        let mut tiny = ChatRequest::new("m", vec![Message::system("s"), Message::user("u")]);
        assert_eq!(trim_history(&mut tiny, Some(1)), 0);
        assert_eq!(tiny.messages.len(), 2);

        // A window that already fits still drops one (the provider said it does not fit).
        let mut fits = long_conversation();
        assert_eq!(trim_history(&mut fits, Some(1_000_000)), 1);
        // A window nothing can satisfy drops everything droppable.
        let mut tight = long_conversation();
        assert_eq!(trim_history(&mut tight, Some(1)), 12);
        assert_eq!(tight.messages.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_fall_back_before_the_first_token() {
        let (a, b) = (Fake::new("a"), Fake::new("b"));
        a.script("m1", vec![Reply::Stream(vec![(Duration::ZERO, None)])]);
        let router = chain(vec![step(&a, "m1"), step(&b, "m2")]);
        let routed = router.chat_stream_routed(&req()).await.unwrap();
        assert_eq!(routed.model, "m2");
        let answer = crate::provider::collect_stream(routed.value).await.unwrap();
        assert_eq!(answer.content, "answer from fake");
        assert_eq!(answer.model, "m2");
    }

    #[tokio::test(start_paused = true)]
    async fn stream_errors_after_the_first_token_are_terminal() {
        let (a, b) = (Fake::new("a"), Fake::new("b"));
        a.script(
            "m1",
            vec![Reply::Stream(vec![
                (Duration::ZERO, Some("partial")),
                (Duration::ZERO, None),
            ])],
        );
        let router = chain(vec![step(&a, "m1"), step(&b, "m2")]);
        let mut stream = router.chat_stream(&req()).await.unwrap();
        assert!(matches!(stream.next().await, Some(Ok(StreamItem::Delta(t))) if t == "partial"));
        assert!(stream.next().await.unwrap().is_err());
        assert!(stream.next().await.is_none());
        assert_eq!(b.total_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_routes_are_invalid_requests() {
        let a = Fake::new("a");
        let router = chain(vec![step(&a, "m1")]);
        let err = router
            .chat(&ChatRequest::user("nope", "x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert_eq!(
            err.to_string(),
            "invalid request: model: no route named \"nope\" in router \"gw\" (routes: smart)"
        );
        assert_eq!(a.total_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn lists_routes_as_models_and_checks_health() {
        let a = Fake::new("a");
        let router = chain(vec![
            step(&a, "m1").context_window(10),
            step(&a, "m2").context_window(20),
        ]);
        let models = router.list_models().await.unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(
            (models[0].id.as_str(), models[0].context_window),
            ("smart", Some(20))
        );
        router.health().await.unwrap();
        assert_eq!((router.name(), router.kind()), ("gw", "router"));
        assert_eq!(router.route("smart").unwrap()[1].model(), "m2");
    }

    #[test]
    fn config_builds_and_names_bad_fields() {
        let config: RouterConfig = serde_json::from_value(serde_json::json!({
            "routes": {"smart": [
                {"provider": "local", "model": "gemma3:1b", "context_window": 8192},
                {"provider": "local", "model": "llama3.2:latest"},
            ]},
        }))
        .unwrap();
        assert!(config.trim_history);
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        providers.insert("local".into(), Fake::new("local"));
        let router = Router::from_config("gw", &config, &providers).unwrap();
        assert_eq!(router.route("smart").unwrap().len(), 2);

        let mut bad = config.clone();
        bad.routes.get_mut("smart").unwrap()[1].provider = "remote".into();
        assert_eq!(
            Router::from_config("gw", &bad, &providers)
                .unwrap_err()
                .to_string(),
            "routes.smart[1].provider: unknown provider \"remote\" (known: local)"
        );
        let mut empty = config.clone();
        empty.routes.insert("fast".into(), vec![]);
        assert_eq!(
            Router::from_config("gw", &empty, &providers)
                .unwrap_err()
                .to_string(),
            "routes.fast: a route needs at least one step"
        );
        let mut zero = config;
        zero.routes.get_mut("smart").unwrap()[0].context_window = Some(0);
        assert_eq!(
            Router::from_config("gw", &zero, &providers)
                .unwrap_err()
                .to_string(),
            "routes.smart[0].context_window (0) must be at least 1"
        );
        let unknown = serde_json::from_value::<RouterConfig>(serde_json::json!({"route": {}}));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `route`")
        );
    }
}
