//! Routing and the request pipeline: auth, body, parse, fault decision, latency, render.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, request::Parts};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;

use crate::MockError;
use crate::api::{
    Answer, ApiError, ChatRequest, Dialect, EmbedRequest, Endpoint, Finish, StreamEnd, to_json,
};
use crate::body::{Ending, MockBody};
use crate::config::{FaultKind, Latency, MockConfig, ModelConfig, ModelFault};
use crate::server::ConnControl;
use crate::stats::{Counters, RequestGuard};
use crate::text::{Rng, answer_chunks, embedding, estimate_tokens, unix_now};
use crate::{anthropic, ollama, openai};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest request body accepted.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const SSE: HeaderValue = HeaderValue::from_static("text/event-stream");
const NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");
/// `created` of the listed models.
const MODELS_CREATED: u64 = 1_700_000_000;

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Arc<Counters>,
    runtime: RwLock<Arc<Runtime>>,
    rng: Rng,
    next_id: AtomicU64,
}

/// The configuration in force, with what is derived from it.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) config: MockConfig,
    models: HashMap<String, usize>,
    rule_counts: Vec<AtomicU64>,
    applied_at: Instant,
}

impl Runtime {
    fn new(config: MockConfig) -> Self {
        let models = config
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        let rule_counts = config.faults.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            config,
            models,
            rule_counts,
            applied_at: Instant::now(),
        }
    }

    fn model(&self, dialect: Dialect, name: &str) -> Option<&ModelConfig> {
        let index = self.models.get(name).or_else(|| {
            // Ollama treats `name` and `name:latest` as the same model.
            if dialect != Dialect::Ollama {
                None
            } else if let Some(base) = name.strip_suffix(":latest") {
                self.models.get(base)
            } else if !name.contains(':') {
                self.models.get(&format!("{name}:latest"))
            } else {
                None
            }
        })?;
        self.config.models.get(*index)
    }

    fn model_names(&self) -> impl Iterator<Item = &str> {
        self.config.models.iter().map(|m| m.name.as_str())
    }
}

/// What the mock does with an inference request.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Success,
    Slow,
    Error(ApiError),
    Midstream,
    Truncate,
    Reset,
}

impl Outcome {
    fn of(kind: FaultKind, prompt_tokens: u64, window: Option<u64>) -> Self {
        match kind {
            FaultKind::RateLimit => Self::Error(ApiError::RateLimited),
            FaultKind::Quota => Self::Error(ApiError::Quota),
            FaultKind::Context => Self::Error(ApiError::Context {
                tokens: prompt_tokens,
                window,
            }),
            FaultKind::Midstream => Self::Midstream,
            FaultKind::Truncate => Self::Truncate,
            FaultKind::Reset => Self::Reset,
            FaultKind::Slow => Self::Slow,
            FaultKind::Status(status) => Self::Error(ApiError::Status(status)),
        }
    }
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Self {
            counters: Arc::new(Counters::default()),
            rng: Rng::new(config.seed),
            runtime: RwLock::new(Arc::new(Runtime::new(config))),
            next_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(&self.runtime.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the configuration (the listening address stays), reseeds the generator and
    /// restarts fault schedules.
    pub(crate) fn set_config(&self, mut config: MockConfig) -> Result<(), MockError> {
        config.validate()?;
        let mut slot = self.runtime.write().unwrap_or_else(PoisonError::into_inner);
        config.bind = slot.config.bind;
        self.rng.reseed(config.seed);
        *slot = Arc::new(Runtime::new(config));
        Ok(())
    }

    /// Records the address actually bound (port 0 resolved).
    pub(crate) fn set_bound(&self, addr: std::net::SocketAddr) {
        let mut slot = self.runtime.write().unwrap_or_else(PoisonError::into_inner);
        let mut config = slot.config.clone();
        config.bind = addr;
        *slot = Arc::new(Runtime::new(config));
    }

    fn sample(&self, latency: &Latency) -> Duration {
        match latency {
            Latency::Fixed(d) => d.as_std(),
            other => other.sample(self.rng.next_f64(), self.rng.next_f64()),
        }
    }

    /// The first configured fault rule that fires for this request, if any. Every rule sees
    /// every request, so `every: N` counts exactly.
    fn fire_rules(&self, runtime: &Runtime) -> Option<FaultKind> {
        let elapsed = runtime.applied_at.elapsed();
        let mut fired = None;
        for (rule, count) in runtime.config.faults.iter().zip(&runtime.rule_counts) {
            let hit = if let Some(rate) = rule.rate {
                self.rng.next_f64() < rate
            } else if let Some(every) = rule.every {
                (count.fetch_add(1, Ordering::Relaxed) + 1) % every == 0
            } else if let Some(window) = rule.window {
                elapsed >= window.from.as_std() && elapsed < window.to.as_std()
            } else {
                false
            };
            if hit && fired.is_none() {
                fired = Some(rule.kind);
            }
        }
        fired
    }

    /// Decides the outcome and the latency distribution for a request to `model`.
    fn decide<'r>(
        &self,
        runtime: &'r Runtime,
        dialect: Dialect,
        model: &str,
        prompt_tokens: u64,
    ) -> (Outcome, &'r Latency) {
        let global = &runtime.config.latency;
        match ModelFault::parse(model) {
            Some(ModelFault::Fault(kind)) => (Outcome::of(kind, prompt_tokens, None), global),
            Some(ModelFault::Flaky(percent)) => {
                let outcome = if self.rng.next_f64() * 100.0 < f64::from(percent) {
                    Outcome::Error(ApiError::Status(503))
                } else {
                    Outcome::Success
                };
                (outcome, global)
            }
            None => {
                let Some(config) = runtime.model(dialect, model) else {
                    return (
                        Outcome::Error(ApiError::ModelNotFound(model.to_owned())),
                        global,
                    );
                };
                let latency = config.latency.as_ref().unwrap_or(global);
                if let Some(window) = config.context_window
                    && prompt_tokens > window
                {
                    let err = ApiError::Context {
                        tokens: prompt_tokens,
                        window: Some(window),
                    };
                    return (Outcome::Error(err), latency);
                }
                let outcome = self.fire_rules(runtime).map_or(Outcome::Success, |kind| {
                    Outcome::of(kind, prompt_tokens, None)
                });
                (outcome, latency)
            }
        }
    }
}

/// Serves one request.
pub(crate) async fn handle<B>(
    shared: Arc<Shared>,
    conn: Arc<ConnControl>,
    req: Request<B>,
) -> Result<Response<MockBody>, Infallible>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let response = match (&parts.method, parts.uri.path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => plain(StatusCode::OK, "ok"),
        (&Method::GET | &Method::HEAD, "/") => plain(StatusCode::OK, "Ollama is running"),
        (&Method::GET, "/admin/stats") => {
            json(StatusCode::OK, to_json(&shared.counters.snapshot()))
        }
        (&Method::POST, "/admin/reset") => {
            shared.counters.reset();
            json(StatusCode::OK, Bytes::from_static(b"{\"reset\":true}"))
        }
        (&Method::GET, "/admin/config") => json(StatusCode::OK, to_json(&shared.runtime().config)),
        (&Method::POST, "/admin/config") => admin_config(&shared, body).await,
        (_, path) if path.starts_with("/admin/") || path == "/healthz" => json(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"{\"error\":\"no such admin endpoint or method\"}"),
        ),
        _ => {
            let guard = RequestGuard::new(Arc::clone(&shared.counters));
            api(&shared, &conn, parts, body, guard).await
        }
    };
    Ok(response)
}

async fn admin_config<B>(shared: &Shared, body: B) -> Response<MockBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let result = match read_body(body).await {
        Ok(bytes) => serde_json::from_slice::<MockConfig>(&bytes)
            .map_err(|e| format!("invalid config: {e}"))
            .and_then(|config| shared.set_config(config).map_err(|e| e.to_string())),
        Err(err) => Err(err.message()),
    };
    match result {
        Ok(()) => json(StatusCode::OK, to_json(&shared.runtime().config)),
        Err(message) => {
            #[derive(serde::Serialize)]
            struct Error<'a> {
                error: &'a str,
            }
            json(StatusCode::BAD_REQUEST, to_json(&Error { error: &message }))
        }
    }
}

async fn api<B>(
    shared: &Shared,
    conn: &ConnControl,
    parts: Parts,
    body: B,
    guard: RequestGuard,
) -> Response<MockBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let post = parts.method == Method::POST;
    let get = parts.method == Method::GET;
    let anthropic_headers =
        parts.headers.contains_key("anthropic-version") || parts.headers.contains_key("x-api-key");
    let listing_dialect = if anthropic_headers {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    let path = parts.uri.path();
    let (dialect, allowed) = match path {
        "/v1/chat/completions" | "/v1/embeddings" => (Dialect::OpenAi, post),
        "/v1/messages" => (Dialect::Anthropic, post),
        "/api/chat" | "/api/generate" | "/api/embed" | "/api/embeddings" => (Dialect::Ollama, post),
        "/api/tags" | "/api/version" => (Dialect::Ollama, get),
        "/v1/auth/key" => (Dialect::OpenAi, get),
        p if p == "/v1/models" || p.starts_with("/v1/models/") => (listing_dialect, get),
        p if p.starts_with("/api/") => {
            let err = ApiError::RouteNotFound(p.to_owned());
            return error_response(Dialect::Ollama, &err, guard);
        }
        p => {
            let err = ApiError::RouteNotFound(p.to_owned());
            return error_response(listing_dialect, &err, guard);
        }
    };
    if !allowed {
        return error_response(dialect, &ApiError::MethodNotAllowed, guard);
    }
    let runtime = shared.runtime();
    if let Err(err) = check_auth(dialect, &parts.headers, &runtime.config) {
        return error_response(dialect, &err, guard);
    }
    match path {
        "/v1/chat/completions" | "/v1/messages" | "/api/chat" | "/api/generate" => {
            let endpoint = if path == "/api/generate" {
                Endpoint::Generate
            } else {
                Endpoint::Chat
            };
            chat(shared, conn, &runtime, dialect, endpoint, body, guard).await
        }
        "/v1/embeddings" | "/api/embed" | "/api/embeddings" => {
            embed(shared, conn, &runtime, dialect, path, body, guard).await
        }
        "/api/tags" => json_guarded(ollama::render_tags(runtime.model_names()), guard),
        "/api/version" => json_guarded(Bytes::from_static(b"{\"version\":\"0.0.0-mock\"}"), guard),
        "/v1/models" => {
            let body = match dialect {
                Dialect::Anthropic => anthropic::render_models(runtime.model_names()),
                _ => openai::render_models(runtime.model_names(), MODELS_CREATED),
            };
            json_guarded(body, guard)
        }
        "/v1/auth/key" => json_guarded(openai::render_key_info(&runtime.config.credits), guard),
        _ => {
            let id = path.trim_start_matches("/v1/models/");
            if runtime.model(dialect, id).is_none() {
                return error_response(dialect, &ApiError::ModelNotFound(id.to_owned()), guard);
            }
            let body = match dialect {
                Dialect::Anthropic => anthropic::render_model(id),
                _ => openai::render_model(id, MODELS_CREATED),
            };
            json_guarded(body, guard)
        }
    }
}

/// OpenAI and Ollama: a bearer token, only when the mock requires a key. Anthropic: `x-api-key`
/// always (it must match when the mock requires a key) and `anthropic-version`.
fn check_auth(dialect: Dialect, headers: &HeaderMap, config: &MockConfig) -> Result<(), ApiError> {
    let required = config.require_api_key.as_ref().map(|k| k.expose());
    match dialect {
        Dialect::OpenAi | Dialect::Ollama => {
            let Some(key) = required else { return Ok(()) };
            let given = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(given) if given == key => Ok(()),
                Some(_) => Err(ApiError::Unauthorized("incorrect API key provided".into())),
                None => Err(ApiError::Unauthorized(
                    "you didn't provide an API key: send it in an Authorization header using Bearer auth".into(),
                )),
            }
        }
        Dialect::Anthropic => {
            let given = headers.get("x-api-key").and_then(|v| v.to_str().ok());
            match (given, required) {
                (None, _) => {
                    return Err(ApiError::Unauthorized(
                        "x-api-key header is required".into(),
                    ));
                }
                (Some(given), Some(key)) if given != key => {
                    return Err(ApiError::Unauthorized("invalid x-api-key".into()));
                }
                _ => {}
            }
            if !headers.contains_key("anthropic-version") {
                return Err(ApiError::InvalidRequest(
                    "anthropic-version: header is required".into(),
                ));
            }
            Ok(())
        }
    }
}

async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge)
        }
        Err(err) => Err(ApiError::InvalidRequest(format!(
            "failed to read the request body: {err}"
        ))),
    }
}

/// Sleeps, then closes the connection abruptly: the client never sees a response.
async fn reset(
    conn: &ConnControl,
    latency: Duration,
    mut guard: RequestGuard,
) -> Response<MockBody> {
    tokio::time::sleep(latency).await;
    guard.finish();
    drop(guard);
    conn.reset();
    std::future::pending().await
}

async fn chat<B>(
    shared: &Shared,
    conn: &ConnControl,
    runtime: &Runtime,
    dialect: Dialect,
    endpoint: Endpoint,
    body: B,
    guard: RequestGuard,
) -> Response<MockBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let parsed = match read_body(body).await {
        Ok(bytes) => match dialect {
            Dialect::OpenAi => openai::parse_chat(&bytes),
            Dialect::Ollama => ollama::parse(&bytes, endpoint),
            Dialect::Anthropic => anthropic::parse(&bytes),
        },
        Err(err) => Err(err),
    };
    let req: ChatRequest = match parsed {
        Ok(req) => req,
        Err(err) => return error_response(dialect, &err, guard),
    };
    guard.counters().count_model(&req.model);
    let config = &runtime.config;
    let prompt_tokens = estimate_tokens(req.prompt_chars);
    let (outcome, latency) = shared.decide(runtime, dialect, &req.model, prompt_tokens);
    let mut latency = shared.sample(latency);

    let chunks = config.chunks as usize;
    let emitted = req.max_tokens.map_or(chunks, |max| {
        chunks.min(usize::try_from(max).unwrap_or(usize::MAX))
    });
    let finish = if emitted < chunks {
        Finish::Length
    } else {
        Finish::Stop
    };
    let ttft = config.time_to_first_token.as_std();
    let chunk_delay = config.chunk_delay.as_std();
    let steps = u32::try_from(emitted.saturating_sub(1)).unwrap_or(u32::MAX);
    let generation = ttft.saturating_add(chunk_delay.saturating_mul(steps));

    let end = match outcome {
        Outcome::Error(err) => {
            tokio::time::sleep(latency).await;
            return error_response(dialect, &err, guard);
        }
        Outcome::Reset => return reset(conn, latency, guard).await,
        Outcome::Slow => {
            latency = latency.saturating_add(config.slow_delay.as_std());
            StreamEnd::Complete
        }
        Outcome::Success => StreamEnd::Complete,
        Outcome::Midstream => StreamEnd::Midstream,
        Outcome::Truncate => StreamEnd::Truncate,
    };
    let mut pieces = answer_chunks(&req.last_user, chunks);
    pieces.truncate(emitted);
    let answer = Answer {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        model: &req.model,
        created: unix_now(),
        pieces: &pieces,
        prompt_tokens,
        finish,
        include_usage: req.include_usage,
        end,
        endpoint,
        latency,
        ttft,
        chunk_delay,
    };

    if req.stream {
        tokio::time::sleep(latency).await;
        let segments = match dialect {
            Dialect::OpenAi => openai::render_stream(&answer),
            Dialect::Ollama => ollama::render_stream(&answer),
            Dialect::Anthropic => anthropic::render_stream(&answer),
        };
        let content_type = if dialect == Dialect::Ollama {
            NDJSON
        } else {
            SSE
        };
        let mut response =
            Response::new(MockBody::new(segments, Some(guard), true, Ending::Complete));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if end == StreamEnd::Truncate {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        add_request_id(dialect, headers, answer.id);
        add_rate_limit(dialect, headers);
        return response;
    }
    if end == StreamEnd::Midstream {
        tokio::time::sleep(latency).await;
        return error_response(dialect, &ApiError::Status(500), guard);
    }
    tokio::time::sleep(latency.saturating_add(generation)).await;
    let body = match dialect {
        Dialect::OpenAi => openai::render_json(&answer),
        Dialect::Ollama => ollama::render_json(&answer),
        Dialect::Anthropic => anthropic::render_json(&answer),
    };
    let mut response = if end == StreamEnd::Truncate {
        truncated(body, guard)
    } else {
        json_guarded(body, guard)
    };
    add_request_id(dialect, response.headers_mut(), answer.id);
    add_rate_limit(dialect, response.headers_mut());
    response
}

async fn embed<B>(
    shared: &Shared,
    conn: &ConnControl,
    runtime: &Runtime,
    dialect: Dialect,
    path: &str,
    body: B,
    guard: RequestGuard,
) -> Response<MockBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let parsed = match read_body(body).await {
        Ok(bytes) => match dialect {
            Dialect::Ollama => ollama::parse_embed(&bytes),
            _ => openai::parse_embed(&bytes),
        },
        Err(err) => Err(err),
    };
    let req: EmbedRequest = match parsed {
        Ok(req) => req,
        Err(err) => return error_response(dialect, &err, guard),
    };
    guard.counters().count_model(&req.model);
    let chars = req.inputs.iter().map(|t| t.chars().count()).sum();
    let prompt_tokens = estimate_tokens(chars);
    let (outcome, latency) = shared.decide(runtime, dialect, &req.model, prompt_tokens);
    let mut latency = shared.sample(latency);
    match outcome {
        Outcome::Error(err) => {
            tokio::time::sleep(latency).await;
            return error_response(dialect, &err, guard);
        }
        Outcome::Midstream => {
            tokio::time::sleep(latency).await;
            return error_response(dialect, &ApiError::Status(500), guard);
        }
        Outcome::Reset => return reset(conn, latency, guard).await,
        Outcome::Slow => latency = latency.saturating_add(runtime.config.slow_delay.as_std()),
        Outcome::Success | Outcome::Truncate => {}
    }
    tokio::time::sleep(latency).await;
    let dim = runtime.config.embedding_dim as usize;
    let vectors: Vec<Vec<f32>> = req.inputs.iter().map(|t| embedding(t, dim)).collect();
    let body = match dialect {
        Dialect::Ollama if path == "/api/embeddings" => {
            ollama::render_legacy_embed(vectors.into_iter().next().unwrap_or_default())
        }
        Dialect::Ollama => ollama::render_embed(&req.model, vectors, prompt_tokens),
        _ => openai::render_embeddings(&req.model, vectors, req.base64, prompt_tokens),
    };
    if outcome == Outcome::Truncate {
        truncated(body, guard)
    } else {
        json_guarded(body, guard)
    }
}

/// Declares the whole length, sends half of it, then aborts the connection.
fn truncated(body: Bytes, guard: RequestGuard) -> Response<MockBody> {
    let full = body.len();
    let part = body.slice(..full / 2);
    let mut response = Response::new(MockBody::new(
        vec![(Duration::ZERO, part)],
        Some(guard),
        false,
        Ending::Abort,
    ));
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(full));
    response
}

fn add_request_id(dialect: Dialect, headers: &mut HeaderMap, id: u64) {
    let name = match dialect {
        Dialect::OpenAi => "x-request-id",
        Dialect::Anthropic => "request-id",
        Dialect::Ollama => return,
    };
    if let Ok(value) = HeaderValue::from_str(&format!("req_mock_{id}")) {
        headers.insert(name, value);
    }
}

/// The rate-limit headers real providers send on successful chat answers, with generous
/// constant values (Ollama sends none).
fn add_rate_limit(dialect: Dialect, headers: &mut HeaderMap) {
    let pairs: &[(&'static str, &'static str)] = match dialect {
        Dialect::OpenAi => &[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-limit-tokens", "10000000"),
            ("x-ratelimit-remaining-tokens", "9999000"),
            ("x-ratelimit-reset-tokens", "6ms"),
        ],
        Dialect::Anthropic => &[
            ("anthropic-ratelimit-requests-remaining", "9999"),
            ("anthropic-ratelimit-tokens-remaining", "9999000"),
        ],
        Dialect::Ollama => return,
    };
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_static(value));
    }
}

fn error_response(dialect: Dialect, err: &ApiError, guard: RequestGuard) -> Response<MockBody> {
    let body = match dialect {
        Dialect::OpenAi => openai::error_body(err),
        Dialect::Ollama => ollama::error_body(err),
        Dialect::Anthropic => anthropic::error_body(err),
    };
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(MockBody::full(body, Some(guard)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    if *err == ApiError::RateLimited {
        headers.insert("retry-after", HeaderValue::from_static("1"));
        headers.insert("retry-after-ms", HeaderValue::from_static("1000"));
    }
    if dialect == Dialect::Anthropic {
        headers.insert("request-id", HeaderValue::from_static("req_mock_error"));
    }
    response
}

fn json_guarded(body: Bytes, guard: RequestGuard) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body, Some(guard)));
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

fn json(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body, None));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(Bytes::from_static(text.as_bytes()), None));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FaultRule;

    #[test]
    fn every_rule_counts_exactly_and_rates_are_seeded() {
        let config = MockConfig {
            faults: vec![
                FaultRule::every(FaultKind::Status(503), 4),
                FaultRule::every(FaultKind::Status(500), 2),
            ],
            ..MockConfig::default()
        };
        let shared = Shared::new(config);
        let runtime = shared.runtime();
        let fired: Vec<Option<FaultKind>> = (0..8).map(|_| shared.fire_rules(&runtime)).collect();
        let (e500, e503) = (Some(FaultKind::Status(500)), Some(FaultKind::Status(503)));
        // The first rule wins when both fire (requests 4 and 8).
        assert_eq!(fired, [None, e500, None, e503, None, e500, None, e503]);

        let config = MockConfig {
            faults: vec![FaultRule::rate(FaultKind::RateLimit, 0.25)],
            ..MockConfig::default()
        };
        let run = |config: MockConfig| {
            let shared = Shared::new(config);
            let runtime = shared.runtime();
            (0..2000)
                .map(|_| shared.fire_rules(&runtime).is_some())
                .collect::<Vec<_>>()
        };
        let first = run(config.clone());
        assert_eq!(first, run(config), "same seed, same sequence");
        let hits = first.iter().filter(|h| **h).count();
        assert!((400..600).contains(&hits), "{hits}");
    }

    #[tokio::test(start_paused = true)]
    async fn window_rules_fire_only_inside_their_window() {
        use crate::config::FaultWindow;
        let config = MockConfig {
            faults: vec![FaultRule {
                kind: FaultKind::Status(500),
                rate: None,
                every: None,
                window: Some(FaultWindow {
                    from: quorum_config::Duration::from_secs(10),
                    to: quorum_config::Duration::from_secs(20),
                }),
            }],
            ..MockConfig::default()
        };
        let shared = Shared::new(config);
        let runtime = shared.runtime();
        assert_eq!(shared.fire_rules(&runtime), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(shared.fire_rules(&runtime), Some(FaultKind::Status(500)));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(shared.fire_rules(&runtime), Some(FaultKind::Status(500)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(shared.fire_rules(&runtime), None);
        // Applying a config restarts the window.
        shared.set_config(runtime.config.clone()).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            shared.fire_rules(&shared.runtime()),
            Some(FaultKind::Status(500))
        );
    }

    #[test]
    fn decisions_follow_model_names_and_context_windows() {
        let mut config = MockConfig::default();
        config.models[0].context_window = Some(10);
        config.models.push(ModelConfig::new("llama:latest"));
        let shared = Shared::new(config);
        let runtime = shared.runtime();
        let decide =
            |dialect, model: &str, tokens| shared.decide(&runtime, dialect, model, tokens).0;
        assert_eq!(decide(Dialect::OpenAi, "mock-small", 10), Outcome::Success);
        assert_eq!(
            decide(Dialect::OpenAi, "mock-small", 11),
            Outcome::Error(ApiError::Context {
                tokens: 11,
                window: Some(10)
            })
        );
        assert_eq!(
            decide(Dialect::Anthropic, "nope", 1),
            Outcome::Error(ApiError::ModelNotFound("nope".into()))
        );
        assert_eq!(decide(Dialect::Ollama, "llama", 1), Outcome::Success);
        assert_eq!(
            decide(Dialect::Ollama, "mock-gpt:latest", 1),
            Outcome::Success
        );
        assert!(matches!(
            decide(Dialect::OpenAi, "llama", 1),
            Outcome::Error(_)
        ));
        assert_eq!(decide(Dialect::OpenAi, "fault-reset", 1), Outcome::Reset);
        assert_eq!(decide(Dialect::OpenAi, "fault-slow", 1), Outcome::Slow);
        assert_eq!(
            decide(Dialect::OpenAi, "fault-quota", 1),
            Outcome::Error(ApiError::Quota)
        );
        assert_eq!(
            decide(Dialect::OpenAi, "fault-flaky-0", 1),
            Outcome::Success
        );
        assert_eq!(
            decide(Dialect::OpenAi, "fault-flaky-100", 1),
            Outcome::Error(ApiError::Status(503))
        );
    }

    #[test]
    fn set_config_keeps_the_bound_address_and_rejects_bad_values() {
        let shared = Shared::new(MockConfig::ephemeral());
        shared.set_bound("127.0.0.1:4242".parse().unwrap());
        let next = MockConfig {
            chunks: 3,
            ..MockConfig::default()
        };
        shared.set_config(next).unwrap();
        let config = &shared.runtime().config;
        assert_eq!((config.chunks, config.bind.port()), (3, 4242));
        let bad = MockConfig {
            chunks: 0,
            ..MockConfig::default()
        };
        assert!(shared.set_config(bad).is_err());
        assert_eq!(shared.runtime().config.chunks, 3);
    }
}
