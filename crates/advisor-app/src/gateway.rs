//! The model side: provider instances built from the configuration, each wrapped in a
//! [`ResilientProvider`], and a [`Router`] whose logical models are the configured model names
//! (each a chain: the model itself, then its fallbacks).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use quorum_llm::{
    ChatRequest, ChatResponse, ChatStream, LlmError, Provider, ProviderRegistry, ResilientProvider,
    RouteError, RouteStep, Routed, Router, Skipped, StreamItem,
};
use quorum_resilience::{BreakerState, Observers};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{AdvisorConfig, ModelEntry};
use crate::error::AdvisorError;
use crate::metrics::{AdvisorMetrics, CallRecord};

/// The provider kinds this build knows (one per enabled feature).
#[must_use]
pub fn provider_registry() -> ProviderRegistry {
    #[allow(unused_mut, reason = "every provider feature may be off")]
    let mut registry = ProviderRegistry::new();
    #[cfg(feature = "openai")]
    {
        registry = registry.with(quorum_llm_openai::OpenAiFactory);
    }
    #[cfg(feature = "ollama")]
    {
        registry = registry.with(quorum_llm_ollama::OllamaFactory);
    }
    #[cfg(feature = "anthropic")]
    {
        registry = registry.with(quorum_llm_anthropic::AnthropicFactory);
    }
    registry
}

/// A breaker's state, for the status endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    /// The provider instance.
    pub provider: String,
    /// The provider's model id.
    pub model: String,
    /// `closed`, `open`, `half_open`, `forced_open` or `forced_closed`.
    pub state: &'static str,
}

/// A provider's limiter state, for the status endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct LimiterStatus {
    /// The provider instance.
    pub provider: String,
    /// Request tokens available now (`null`: no request limit).
    pub requests_available: Option<u64>,
    /// Token-limit tokens available now (`null`: no token limit).
    pub tokens_available: Option<u64>,
}

/// Providers, the router over them and the model catalogue. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Gateway {
    router: Router,
    providers: BTreeMap<String, Arc<ResilientProvider>>,
    models: BTreeMap<String, ModelEntry>,
    metrics: AdvisorMetrics,
}

/// A complete answer and who gave it.
#[derive(Debug)]
pub struct Answer {
    /// The answer.
    pub response: ChatResponse,
    /// The provider instance that answered.
    pub provider: String,
    /// The provider model id that answered.
    pub model: String,
    /// The configured model that answered, when a fallback stood in.
    pub fallback: Option<FallbackInfo>,
}

/// Which fallback answered and why the models before it did not.
#[derive(Debug, Clone, Serialize)]
pub struct FallbackInfo {
    /// The provider instance that answered.
    pub provider: String,
    /// The provider model id that answered.
    pub model: String,
    /// The steps that did not answer, each `provider/model: reason`.
    pub skipped: Vec<String>,
}

impl Gateway {
    /// Builds every provider (no network calls) and the router.
    ///
    /// # Errors
    ///
    /// [`AdvisorError::Provider`] naming the provider entry whose section is invalid.
    pub fn build(
        config: &AdvisorConfig,
        registry: &ProviderRegistry,
        observers: &Observers,
        metrics: AdvisorMetrics,
    ) -> Result<Gateway, AdvisorError> {
        let mut providers = BTreeMap::new();
        let mut dyn_providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for (index, entry) in config.providers.iter().enumerate() {
            let raw = registry
                .build(
                    &entry.kind,
                    &entry.name,
                    serde_json::Value::Object(entry.settings.clone()),
                )
                .map_err(|source| AdvisorError::Provider {
                    index,
                    name: entry.name.clone(),
                    source,
                })?;
            let resilience = entry.resilience.as_ref().unwrap_or(&config.resilience);
            let resilient = ResilientProvider::builder(raw, resilience)
                .observers(observers.clone())
                .build()
                .map_err(|e| AdvisorError::Provider {
                    index,
                    name: entry.name.clone(),
                    source: LlmError::Config {
                        name: entry.name.clone(),
                        message: format!("resilience: {e}"),
                        source: None,
                    },
                })?;
            let resilient = Arc::new(resilient);
            dyn_providers.insert(
                entry.name.clone(),
                Arc::clone(&resilient) as Arc<dyn Provider>,
            );
            providers.insert(entry.name.clone(), resilient);
        }
        let mut builder = Router::builder("advisor");
        for (name, entry) in &config.models {
            let mut steps = Vec::with_capacity(1 + entry.fallbacks.len());
            for step_name in std::iter::once(name).chain(&entry.fallbacks) {
                let Some(step) = config.models.get(step_name) else {
                    continue; // reported by AdvisorConfig::problems
                };
                let Some(provider) = dyn_providers.get(&step.provider) else {
                    continue;
                };
                let mut s = RouteStep::new(Arc::clone(provider), step.model_id(step_name));
                if let Some(window) = step.context_window {
                    s = s.context_window(window);
                }
                steps.push(s);
            }
            if !steps.is_empty() {
                builder = builder.route(name.clone(), steps);
            }
        }
        let router = builder.build().map_err(|e| {
            AdvisorError::Invalid(vec![crate::error::ConfigIssue {
                field: "models".into(),
                message: e.to_string(),
            }])
        })?;
        Ok(Gateway {
            router,
            providers,
            models: config.models.clone(),
            metrics,
        })
    }

    /// The configured model named `name`.
    #[must_use]
    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    /// Every configured model name, sorted.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The configured models with their entries.
    #[must_use]
    pub fn models(&self) -> &BTreeMap<String, ModelEntry> {
        &self.models
    }

    /// Asks configured model `request.model` (its chain) for a complete answer, recording the
    /// call's metrics.
    ///
    /// # Errors
    ///
    /// The [`CallFailure`] that ended the chain.
    pub async fn chat(&self, request: &ChatRequest) -> Result<Answer, CallFailure> {
        let started = Instant::now();
        let result = match self.router.chat_routed(request).await {
            Ok(r) => Ok(Done {
                response: r.value,
                provider: r.provider,
                model: r.model,
                skipped: r.skipped,
            }),
            Err(e) => Err(CallFailure::from(e)),
        };
        self.finish(&request.model, started, None, result)
    }

    /// Asks for a streamed answer: `on_delta` sees each piece of text as it arrives; the
    /// complete answer is returned at the end. Falls back only before the first item.
    ///
    /// # Errors
    ///
    /// The [`CallFailure`] of the chain, or the stream's terminal error (with the steps
    /// skipped before it).
    pub async fn chat_streamed(
        &self,
        request: &ChatRequest,
        mut on_delta: impl FnMut(&str),
    ) -> Result<Answer, CallFailure> {
        let started = Instant::now();
        let routed = match self.router.chat_stream_routed(request).await {
            Ok(r) => r,
            Err(e) => return self.finish(&request.model, started, None, Err(e.into())),
        };
        let provider = routed.provider;
        let model = routed.model;
        let skipped = routed.skipped;
        let mut stream = routed.value;
        let mut content = String::new();
        let mut first_token = None;
        let end = loop {
            match stream.next().await {
                Some(Ok(StreamItem::Delta(text))) => {
                    if first_token.is_none() {
                        first_token = Some(started.elapsed());
                    }
                    on_delta(&text);
                    content.push_str(&text);
                }
                Some(Ok(StreamItem::Done(done))) => break Ok(done),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e),
                None => {
                    break Err(LlmError::StreamTruncated {
                        message: "the stream ended without a final item".into(),
                    });
                }
            }
        };
        let result = match end {
            Ok(done) => {
                let mut response = ChatResponse {
                    content,
                    finish_reason: done.finish_reason,
                    usage: done.usage,
                    timings: done.timings,
                    provider: provider.clone(),
                    model: model.clone(),
                    ..ChatResponse::default()
                };
                response.timings.total = started.elapsed();
                Ok(Done {
                    response,
                    provider,
                    model,
                    skipped,
                })
            }
            Err(error) => Err(CallFailure { error, skipped }),
        };
        self.finish(&request.model, started, first_token, result)
    }

    /// Opens a stream through the chain of `request.model` (for the OpenAI-compatible
    /// endpoint, which forwards items itself).
    ///
    /// # Errors
    ///
    /// The [`RouteError`] of the chain.
    pub async fn open_stream(
        &self,
        request: &ChatRequest,
    ) -> Result<Routed<ChatStream>, RouteError> {
        let result = self.router.chat_stream_routed(request).await;
        if let Err(e) = &result {
            self.metrics.observe_call(&CallRecord {
                provider: "none",
                model: &request.model,
                outcome: e.error.kind().as_str(),
                latency: None,
                time_to_first_token: None,
                tokens: None,
                fell_back: false,
            });
        }
        result
    }

    /// The metrics handle.
    #[must_use]
    pub fn metrics(&self) -> &AdvisorMetrics {
        &self.metrics
    }

    fn finish(
        &self,
        model: &str,
        started: Instant,
        first_token: Option<Duration>,
        result: Result<Done, CallFailure>,
    ) -> Result<Answer, CallFailure> {
        match result {
            Ok(routed) => {
                let fell_back = !routed.skipped.is_empty();
                let usage = routed.response.usage;
                self.metrics.observe_call(&CallRecord {
                    provider: &routed.provider,
                    model,
                    outcome: "ok",
                    latency: Some(started.elapsed()),
                    time_to_first_token: first_token,
                    tokens: usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
                    fell_back,
                });
                let fallback = fell_back.then(|| FallbackInfo {
                    provider: routed.provider.clone(),
                    model: routed.model.clone(),
                    skipped: routed
                        .skipped
                        .iter()
                        .map(|s| format!("{}/{}: {}", s.provider, s.model, s.reason))
                        .collect(),
                });
                Ok(Answer {
                    response: routed.response,
                    provider: routed.provider,
                    model: routed.model,
                    fallback,
                })
            }
            Err(e) => {
                self.metrics.observe_call(&CallRecord {
                    provider: "none",
                    model,
                    outcome: e.error.kind().as_str(),
                    latency: Some(started.elapsed()),
                    time_to_first_token: first_token,
                    tokens: None,
                    fell_back: false,
                });
                Err(e)
            }
        }
    }

    /// The state of every breaker created so far, per provider and model.
    #[must_use]
    pub fn breakers(&self) -> Vec<BreakerStatus> {
        let mut out = Vec::new();
        for (name, provider) in &self.providers {
            for (model_name, entry) in &self.models {
                if &entry.provider != name {
                    continue;
                }
                let id = entry.model_id(model_name);
                if let Some(breaker) = provider.breaker(id) {
                    out.push(BreakerStatus {
                        provider: name.clone(),
                        model: id.to_owned(),
                        state: breaker_state_name(breaker.state()),
                    });
                }
            }
        }
        out
    }

    /// Each provider's limiter state.
    #[must_use]
    pub fn limiters(&self) -> Vec<LimiterStatus> {
        self.providers
            .iter()
            .map(|(name, p)| LimiterStatus {
                provider: name.clone(),
                requests_available: p.requests_limiter().map(|l| l.available()),
                tokens_available: p.tokens_limiter().map(|l| l.available()),
            })
            .collect()
    }

    /// Checks every provider's health concurrently, each bounded by `timeout`: `ok` or the
    /// error, by provider name.
    pub async fn health(&self, timeout: Duration) -> BTreeMap<String, String> {
        let checks = self.providers.iter().map(|(name, p)| async move {
            let outcome = match tokio::time::timeout(timeout, p.inner().health()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("error: {e}"),
                Err(_) => format!("error: no answer within {timeout:?}"),
            };
            (name.clone(), outcome)
        });
        futures_util::future::join_all(checks)
            .await
            .into_iter()
            .collect()
    }
}

struct Done {
    response: ChatResponse,
    provider: String,
    model: String,
    skipped: Vec<Skipped>,
}

/// A model call that failed: the error that ended it and the steps that did not answer.
#[derive(Debug)]
pub struct CallFailure {
    /// The error.
    pub error: LlmError,
    /// Steps tried or passed over before the end.
    pub skipped: Vec<Skipped>,
}

impl From<RouteError> for CallFailure {
    fn from(e: RouteError) -> Self {
        CallFailure {
            error: e.error,
            skipped: e.skipped,
        }
    }
}

/// The snake_case name of a breaker state.
#[must_use]
pub fn breaker_state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
        BreakerState::ForcedOpen => "forced_open",
        BreakerState::ForcedClosed => "forced_closed",
    }
}
