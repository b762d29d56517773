//! The OpenAI-compatible provider: HTTP calls, error mapping and the SSE stream.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use quorum_llm::http_client::{ClientBuilder, HttpEndpoint, StreamDecoder};
use quorum_llm::sse::{SseEvent, SseParser};
use quorum_llm::{
    ChatRequest, ChatResponse, ChatStream, EmbeddingRequest, EmbeddingResponse, Embeddings,
    LlmError, ModelInfo, Provider, ProviderFactory, RateLimitInfo, StreamFinal, StreamItem,
    Timings, Usage, classify_stream_error, parse_config,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::OpenAiConfig;
use crate::wire;

/// The provider kind this crate registers.
pub const KIND: &str = "openai";

/// An OpenAI-compatible Chat Completions endpoint (OpenAI, OpenRouter, vLLM, llama.cpp, LM
/// Studio, Docker Model Runner, Ollama's `/v1`...).
///
/// Cheap to clone (the HTTP connection pool is shared). Dropping a call's future or stream
/// closes its connection, which aborts the request upstream.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    endpoint: HttpEndpoint,
    stream_usage: bool,
}

/// OpenRouter credit status of the configured key (`GET {base}/auth/key`).
#[derive(Debug, Clone, PartialEq)]
pub struct Credits {
    /// The key's credit limit in USD, `None` when unlimited.
    pub limit: Option<f64>,
    /// Credits used so far in USD.
    pub usage: f64,
    /// Credits left in USD, `None` when unlimited.
    pub remaining: Option<f64>,
    /// Whether the key is on the free tier, when reported.
    pub is_free_tier: Option<bool>,
    /// The key's label, when reported.
    pub label: Option<String>,
}

impl OpenAiProvider {
    /// Builds the provider instance `name` from its config.
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] naming the field when a header is invalid or the HTTP client cannot
    /// be built.
    pub fn new(name: &str, config: &OpenAiConfig) -> Result<Self, LlmError> {
        let mut headers = ClientBuilder::new(name, &config.headers)?;
        if let Some(key) = config.api_key.as_ref().filter(|k| !k.is_empty()) {
            headers.bearer_auth("api_key", key.expose())?;
        }
        if let Some(org) = &config.organization {
            headers.header("openai-organization", "organization", org)?;
        }
        if let Some(project) = &config.project {
            headers.header("openai-project", "project", project)?;
        }
        if let Some(openrouter) = &config.openrouter {
            if let Some(referer) = &openrouter.referer {
                headers.header("http-referer", "openrouter.referer", referer)?;
            }
            if let Some(title) = &openrouter.title {
                headers.header("x-title", "openrouter.title", title)?;
            }
        }
        let client = headers.build(&config.timeout)?;
        Ok(OpenAiProvider {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                endpoint: HttpEndpoint::new(
                    client,
                    config.base_url.as_str(),
                    "the provider",
                    wire::error_hint_from_body,
                ),
                stream_usage: config.stream_usage,
            }),
        })
    }

    /// The URL of an endpoint below the base URL.
    #[cfg(test)]
    fn url(&self, path: &str) -> String {
        self.inner.endpoint.url(path)
    }

    async fn get_json(&self, path: &str) -> Result<Bytes, LlmError> {
        let endpoint = &self.inner.endpoint;
        endpoint.send_bytes(endpoint.get(path)).await
    }

    /// OpenRouter only: the credit status of the configured key (`GET {base}/auth/key`).
    ///
    /// # Errors
    ///
    /// Any [`LlmError`]; [`LlmError::InvalidResponse`] when the endpoint is not OpenRouter's.
    pub async fn credits(&self) -> Result<Credits, LlmError> {
        let body = self.get_json("auth/key").await?;
        let info: wire::KeyInfo = serde_json::from_slice(&body).map_err(|e| {
            LlmError::invalid_response("auth/key: not an OpenRouter key answer", Some(Box::new(e)))
        })?;
        let data = info.data;
        let usage = data.usage.unwrap_or(0.0);
        let remaining = data
            .limit_remaining
            .or_else(|| data.limit.map(|limit| (limit - usage).max(0.0)));
        Ok(Credits {
            limit: data.limit,
            usage,
            remaining,
            is_free_tier: data.is_free_tier,
            label: data.label,
        })
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let body = wire::chat_body(request, false, self.inner.stream_usage);
        let endpoint = &self.inner.endpoint;
        let answer = endpoint
            .post_json("chat/completions", body, "application/json")
            .await?;
        let rate_limit = answer.rate_limit();
        let bytes = answer.bytes().await?;
        let total = started.elapsed();
        let completion = read_completion(&bytes)?;
        let choice = completion.choices.into_iter().next().ok_or_else(|| {
            LlmError::invalid_response("chat/completions: no choices in the answer", None)
        })?;
        Ok(ChatResponse {
            content: choice.message.and_then(|m| m.content).unwrap_or_default(),
            finish_reason: wire::finish_reason(choice.finish_reason.as_deref()),
            usage: completion.usage.as_ref().map(wire::WireUsage::to_usage),
            timings: Timings {
                total,
                ..Timings::default()
            },
            provider: self.inner.name.clone(),
            model: completion.model.unwrap_or_else(|| request.model.clone()),
            rate_limit: rate_limit.map(Box::new),
        })
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let started = Instant::now();
        let body = wire::chat_body(request, true, self.inner.stream_usage);
        let endpoint = &self.inner.endpoint;
        let answer = endpoint
            .post_json("chat/completions", body, "text/event-stream")
            .await?;
        let state = StreamState {
            rate_limit: answer.rate_limit().map(Box::new),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            finished: false,
            finish_reason: None,
            usage: None,
            model: request.model.clone(),
            provider: self.inner.name.clone(),
            started,
            first_token: None,
        };
        Ok(endpoint.chat_stream(answer, state))
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let body = self.get_json("models").await?;
        wire::parse_models(&body)
    }

    fn embeddings(&self) -> Option<&dyn Embeddings> {
        Some(self)
    }
}

#[async_trait]
impl Embeddings for OpenAiProvider {
    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingResponse, LlmError> {
        let body = wire::embeddings_body(request);
        let endpoint = &self.inner.endpoint;
        let bytes = endpoint
            .post_value("embeddings", &body, "application/json")
            .await?
            .bytes()
            .await?;
        let list: wire::EmbeddingList = serde_json::from_slice(&bytes).map_err(|e| {
            LlmError::invalid_response("embeddings: not an embedding list", Some(Box::new(e)))
        })?;
        let mut items = list.data;
        items.sort_by_key(|item| item.index.unwrap_or(usize::MAX));
        if items.len() != request.input.len() {
            return Err(LlmError::invalid_response(
                format!(
                    "embeddings: {} vectors for {} inputs",
                    items.len(),
                    request.input.len()
                ),
                None,
            ));
        }
        Ok(EmbeddingResponse {
            embeddings: items.into_iter().map(|item| item.embedding).collect(),
            model: list.model.unwrap_or_else(|| request.model.clone()),
            usage: list.usage.as_ref().map(wire::WireUsage::to_usage),
        })
    }
}

/// Reads a chat completion body. The common case parses once, straight into the answer; the
/// rest goes through [`read_odd`].
fn read_completion(bytes: &[u8]) -> Result<wire::Completion, LlmError> {
    if let Ok(completion) = serde_json::from_slice::<wire::Completion>(bytes)
        && !completion.may_be_error()
    {
        return Ok(completion);
    }
    read_odd(
        bytes,
        false,
        "chat/completions: the body is not JSON",
        "chat/completions: not a chat completion",
    )
}

/// Reads what did not parse as a plain answer or chunk, or may be an error (some routers answer
/// 200, or send a stream event, with one): the generic JSON is read to say which. `error_event`:
/// the SSE event was named `error`, which ends the stream whatever its data says.
fn read_odd<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    error_event: bool,
    not_json: &'static str,
    not_shape: &'static str,
) -> Result<T, LlmError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| LlmError::invalid_response(not_json, Some(Box::new(e))))?;
    let raw = String::from_utf8_lossy(bytes);
    if let Some(hint) = wire::error_hint(&value) {
        return Err(classify_stream_error(&hint, &raw));
    }
    if error_event {
        return Err(classify_stream_error(
            &quorum_llm::ErrorHint::message(&*raw),
            &raw,
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| LlmError::invalid_response(not_shape, Some(Box::new(e))))
}

/// The state of one SSE chat stream.
struct StreamState {
    parser: SseParser,
    pending: VecDeque<Result<StreamItem, LlmError>>,
    finished: bool,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model: String,
    provider: String,
    started: Instant,
    first_token: Option<std::time::Duration>,
    /// The server's rate-limit state, read from the response headers when the stream started.
    rate_limit: Option<Box<RateLimitInfo>>,
}

impl StreamDecoder for StreamState {
    fn feed(&mut self, chunk: &[u8]) {
        for event in self.parser.feed(chunk) {
            self.handle(event);
        }
    }

    /// The body ended: a last event without its blank line still counts; no `data: [DONE]`
    /// means the stream was truncated.
    fn end(&mut self) {
        if let Some(event) = self.parser.finish() {
            self.handle(event);
        }
        if !self.finished {
            self.fail(LlmError::stream_truncated(
                "the event stream ended before `data: [DONE]`",
            ));
        }
    }

    fn fail(&mut self, error: LlmError) {
        self.finished = true;
        self.pending.push_back(Err(error));
    }

    fn next_item(&mut self) -> Option<Result<StreamItem, LlmError>> {
        self.pending.pop_front()
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

impl StreamState {
    fn handle(&mut self, event: SseEvent) {
        if self.finished {
            return;
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.finished = true;
            let total = self.started.elapsed();
            self.pending.push_back(Ok(StreamItem::Done(StreamFinal {
                finish_reason: wire::finish_reason(self.finish_reason.as_deref()),
                usage: self.usage,
                timings: Timings {
                    total,
                    time_to_first_token: self.first_token,
                    ..Timings::default()
                },
                provider: self.provider.clone(),
                model: self.model.clone(),
                rate_limit: self.rate_limit.clone(),
            })));
            return;
        }
        // The common case parses once, straight into the chunk; anything else is read again
        // as JSON to say what it is.
        let chunk = match serde_json::from_str::<wire::Chunk>(data) {
            Ok(chunk) if !chunk.may_be_error() && event.event != "error" => chunk,
            _ => match read_odd(
                data.as_bytes(),
                event.event == "error",
                "chat/completions stream: a data line is not JSON",
                "chat/completions stream: not a completion chunk",
            ) {
                Ok(chunk) => chunk,
                Err(e) => return self.fail(e),
            },
        };
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.to_usage());
        }
        for choice in chunk.choices {
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            if let Some(text) = choice
                .delta
                .and_then(|d| d.content)
                .filter(|t| !t.is_empty())
            {
                if self.first_token.is_none() {
                    self.first_token = Some(self.started.elapsed());
                }
                self.pending.push_back(Ok(StreamItem::Delta(text)));
            }
        }
    }
}

/// Builds [`OpenAiProvider`]s from raw [`OpenAiConfig`] sections; kind `openai`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiFactory;

impl ProviderFactory for OpenAiFactory {
    fn kind(&self) -> &str {
        KIND
    }

    fn build(&self, name: &str, config: serde_json::Value) -> Result<Arc<dyn Provider>, LlmError> {
        let config: OpenAiConfig = parse_config(name, config)?;
        Ok(Arc::new(OpenAiProvider::new(name, &config)?))
    }
}

#[cfg(test)]
mod tests {
    use quorum_llm::{ErrorKind, FinishReason};

    use super::*;

    #[test]
    fn completions_parse_once_and_errors_in_200_bodies_are_classified() {
        let ok = read_completion(
            br#"{"id":"x","object":"chat.completion","model":"m1","error":null,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
        )
        .unwrap();
        assert_eq!(ok.model.as_deref(), Some("m1"));
        // An odd `object` is ignored, as every other member the answer does not need.
        let odd =
            read_completion(br#"{"object":{"kind":"x"},"choices":[{"message":{"content":"ok"}}]}"#)
                .unwrap();
        assert_eq!(odd.choices.len(), 1);
        assert_eq!(
            ok.choices[0].message.as_ref().unwrap().content.as_deref(),
            Some("hi")
        );
        // OpenRouter: 200 with an error object whose code is an HTTP status.
        let routed =
            read_completion(br#"{"error":{"code":502,"message":"upstream down"}}"#).unwrap_err();
        assert_eq!(routed.kind(), ErrorKind::Server);
        assert!(routed.to_string().contains("upstream down"), "{routed}");
        let vllm = read_completion(
            br#"{"object":"error","message":"rate limited","type":"RateLimitError","code":429}"#,
        )
        .unwrap_err();
        assert_eq!(vllm.kind(), ErrorKind::RateLimited);
        let plain = read_completion(br#"{"error":"model not loaded"}"#).unwrap_err();
        assert!(plain.to_string().contains("model not loaded"), "{plain}");
        let not_json = read_completion(b"<html>oops</html>").unwrap_err();
        assert_eq!(not_json.kind(), ErrorKind::InvalidResponse);
        assert!(not_json.to_string().contains("not JSON"), "{not_json}");
        let wrong = read_completion(br#"{"choices":5}"#).unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::InvalidResponse);
        assert!(
            wrong.to_string().contains("not a chat completion"),
            "{wrong}"
        );
    }

    fn state() -> StreamState {
        StreamState {
            parser: SseParser::new(),
            pending: VecDeque::new(),
            finished: false,
            finish_reason: None,
            usage: None,
            model: "requested".into(),
            provider: "p".into(),
            started: Instant::now(),
            first_token: None,
            rate_limit: None,
        }
    }

    fn feed(state: &mut StreamState, text: &str) {
        for event in state.parser.feed(text.as_bytes()) {
            state.handle(event);
        }
    }

    #[tokio::test]
    async fn chunks_become_deltas_then_one_final_item() {
        let mut s = state();
        feed(
            &mut s,
            concat!(
                ": OPENROUTER PROCESSING\n\n",
                "data: {\"model\":\"gpt-x\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"length\"}]}\n\n",
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
                "data: [DONE]\n\n",
                "data: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n",
            ),
        );
        let items: Vec<_> = s.pending.drain(..).collect();
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], Ok(StreamItem::Delta(t)) if t == "Hel"));
        assert!(matches!(&items[1], Ok(StreamItem::Delta(t)) if t == "lo"));
        let Ok(StreamItem::Done(done)) = &items[2] else {
            panic!("no final item: {items:?}");
        };
        assert_eq!(done.finish_reason, FinishReason::Length);
        assert_eq!(
            done.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 2
            })
        );
        assert_eq!(done.model, "gpt-x");
        assert!(done.timings.time_to_first_token.is_some());
        assert!(s.finished);
    }

    #[tokio::test]
    async fn in_stream_errors_are_typed_and_terminal() {
        let mut s = state();
        feed(
            &mut s,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\"}}\n\ndata: [DONE]\n\n",
        );
        let items: Vec<_> = s.pending.drain(..).collect();
        assert_eq!(items.len(), 2);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);

        let mut numeric = state();
        feed(
            &mut numeric,
            "data: {\"error\":{\"code\":502,\"message\":\"provider returned error\"}}\n\n",
        );
        let err = numeric.pending.pop_front().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Server);
        assert_eq!(err.status(), Some(502));
    }

    #[tokio::test]
    async fn garbage_data_is_an_invalid_response() {
        let mut s = state();
        feed(&mut s, "data: {not json\n\n");
        let err = s.pending.pop_front().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(s.finished);

        let mut shape = state();
        feed(&mut shape, "data: {\"choices\":5}\n\n");
        let err = shape.pending.pop_front().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(err.to_string().contains("not a completion chunk"), "{err}");

        // An `error` event whose data is JSON but not an error object still ends the stream.
        let mut event = state();
        feed(
            &mut event,
            "event: error\ndata: {\"detail\":\"backend gone\"}\n\n",
        );
        let err = event.pending.pop_front().unwrap().unwrap_err();
        assert!(err.to_string().contains("backend gone"), "{err}");
        assert!(event.finished);
    }

    #[test]
    fn invalid_headers_name_the_field() {
        let mut config = OpenAiConfig::new("http://localhost:1/v1").unwrap();
        config.headers.insert("bad header".into(), "x".into());
        let err = OpenAiProvider::new("p", &config).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid config for provider \"p\": headers.bad header: invalid header name \"bad header\""
        );
        let mut config = OpenAiConfig::new("http://localhost:1/v1").unwrap();
        config.organization = Some("org\nx".into());
        let err = OpenAiProvider::new("p", &config).unwrap_err().to_string();
        assert!(err.ends_with("organization: invalid header value"), "{err}");
    }

    #[test]
    fn urls_join_below_the_base_path() {
        for base in ["http://h:1/api/v1", "http://h:1/api/v1/"] {
            let p = OpenAiProvider::new("p", &OpenAiConfig::new(base).unwrap()).unwrap();
            assert_eq!(
                p.url("chat/completions"),
                "http://h:1/api/v1/chat/completions"
            );
            assert_eq!(p.url("auth/key"), "http://h:1/api/v1/auth/key");
        }
    }

    #[test]
    fn factory_reports_config_errors() {
        let Err(err) = OpenAiFactory.build("main", serde_json::json!({"base_url": 5})) else {
            panic!("built from a numeric base_url");
        };
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("base_url"), "{err}");
        let p = OpenAiFactory
            .build(
                "main",
                serde_json::json!({"base_url": "http://localhost:9/v1"}),
            )
            .unwrap();
        assert_eq!(p.name(), "main");
        assert_eq!(p.kind(), "openai");
        assert!(p.embeddings().is_some());
    }
}
