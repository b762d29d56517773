//! The Ollama provider: HTTP calls, error mapping and the NDJSON stream.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use quorum_llm::http_client::{ClientBuilder, HttpEndpoint, StreamDecoder};
use quorum_llm::{
    ChatRequest, ChatResponse, ChatStream, EmbeddingRequest, EmbeddingResponse, Embeddings,
    ErrorHint, LlmError, ModelInfo, Provider, ProviderFactory, StreamFinal, StreamItem, Timings,
    Usage, classify_stream_error, parse_config,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{KeepAlive, OllamaConfig};
use crate::ndjson::NdjsonSplitter;
use crate::wire::{self, Chunk, Endpoint};

/// The provider kind this crate registers.
pub const KIND: &str = "ollama";

/// An Ollama server, through its native API (`/api/chat`, `/api/generate`, `/api/tags`,
/// `/api/embed`).
///
/// Cheap to clone (the HTTP connection pool is shared). Dropping a call's future or stream
/// closes its connection, which makes Ollama stop generating.
#[derive(Debug, Clone)]
pub struct OllamaProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    endpoint: HttpEndpoint,
    config: OllamaConfig,
}

impl OllamaProvider {
    /// Builds the provider instance `name` from its config.
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] naming the field when a header is invalid or the HTTP client cannot
    /// be built.
    pub fn new(name: &str, config: &OllamaConfig) -> Result<Self, LlmError> {
        let mut headers = ClientBuilder::new(name, &config.headers)?;
        if let Some(key) = config.api_key.as_ref().filter(|k| !k.is_empty()) {
            headers.bearer_auth("api_key", key.expose())?;
        }
        let client = headers.build(&config.timeout)?;
        Ok(OllamaProvider {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                endpoint: HttpEndpoint::new(
                    client,
                    config.base_url_str(),
                    "ollama",
                    wire::error_hint_from_body,
                ),
                config: config.clone(),
            }),
        })
    }

    /// The config this provider was built from.
    #[must_use]
    pub fn config(&self) -> &OllamaConfig {
        &self.inner.config
    }

    /// The URL of an endpoint below the base URL.
    #[cfg(test)]
    fn url(&self, path: &str) -> String {
        self.inner.endpoint.url(path)
    }

    fn keep_alive(&self) -> Option<KeepAlive> {
        self.inner.config.keep_alive
    }
}

/// Decodes one answer object; an `{"error": ...}` object is returned as its classified error.
fn decode_chunk(text: &str, what: &str) -> Result<Chunk, LlmError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| LlmError::invalid_response(format!("{what}: not JSON"), Some(Box::new(e))))?;
    if let Some(hint) = wire::error_hint(&value) {
        return Err(classify_stream_error(&hint, text));
    }
    serde_json::from_value(value).map_err(|e| {
        LlmError::invalid_response(format!("{what}: not an ollama answer"), Some(Box::new(e)))
    })
}

#[async_trait]
impl Provider for OllamaProvider {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let endpoint = wire::select_endpoint(request, &self.inner.config)?;
        let body = wire::chat_body(request, endpoint, false, self.keep_alive())?;
        let bytes = self
            .inner
            .endpoint
            .post_value(endpoint.path(), &body, "application/json")
            .await?
            .bytes()
            .await?;
        let total = started.elapsed();
        let text = String::from_utf8_lossy(&bytes);
        let mut chunk = decode_chunk(text.trim(), endpoint.path())?;
        Ok(ChatResponse {
            content: chunk.take_text(),
            finish_reason: chunk.finish_reason(),
            usage: chunk.usage(),
            timings: Timings {
                total,
                time_to_first_token: None,
                provider: chunk.timings(),
            },
            provider: self.inner.name.clone(),
            model: chunk
                .model
                .take()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| request.model.clone()),
            // Ollama sends no rate-limit headers.
            rate_limit: None,
        })
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let started = Instant::now();
        let endpoint = wire::select_endpoint(request, &self.inner.config)?;
        let body = wire::chat_body(request, endpoint, true, self.keep_alive())?;
        let answer = self
            .inner
            .endpoint
            .post_value(endpoint.path(), &body, "application/x-ndjson")
            .await?;
        let state = StreamState::new(
            endpoint,
            self.inner.name.clone(),
            request.model.clone(),
            started,
        );
        Ok(self.inner.endpoint.chat_stream(answer, state))
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let endpoint = &self.inner.endpoint;
        let bytes = endpoint.send_bytes(endpoint.get("api/tags")).await?;
        wire::parse_tags(&bytes)
    }

    fn embeddings(&self) -> Option<&dyn Embeddings> {
        Some(self)
    }
}

#[async_trait]
impl Embeddings for OllamaProvider {
    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingResponse, LlmError> {
        if request.input.is_empty() {
            return Err(LlmError::InvalidRequest {
                message: "input: at least one text is required".into(),
            });
        }
        let body = wire::embed_body(request, self.keep_alive())?;
        let bytes = self
            .inner
            .endpoint
            .post_value("api/embed", &body, "application/json")
            .await?
            .bytes()
            .await?;
        let answer: wire::EmbedAnswer = serde_json::from_slice(&bytes).map_err(|e| {
            LlmError::invalid_response("api/embed: not an embeddings answer", Some(Box::new(e)))
        })?;
        if answer.embeddings.len() != request.input.len() {
            return Err(LlmError::invalid_response(
                format!(
                    "api/embed: {} vectors for {} inputs",
                    answer.embeddings.len(),
                    request.input.len()
                ),
                None,
            ));
        }
        Ok(EmbeddingResponse {
            embeddings: answer.embeddings,
            model: answer
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| request.model.clone()),
            usage: answer.prompt_eval_count.map(|prompt_tokens| Usage {
                prompt_tokens,
                completion_tokens: 0,
            }),
        })
    }
}

/// The state of one NDJSON chat stream.
struct StreamState {
    lines: NdjsonSplitter,
    pending: VecDeque<Result<StreamItem, LlmError>>,
    finished: bool,
    endpoint: Endpoint,
    model: String,
    provider: String,
    started: Instant,
    first_token: Option<std::time::Duration>,
}

impl StreamDecoder for StreamState {
    fn feed(&mut self, chunk: &[u8]) {
        for line in self.lines.feed(chunk) {
            self.handle(&line);
        }
    }

    /// The body ended: a last line without a newline still counts; no `done: true` means the
    /// stream was truncated.
    fn end(&mut self) {
        if let Some(line) = self.lines.finish() {
            if serde_json::from_str::<serde::de::IgnoredAny>(&line).is_err() {
                return self.fail(LlmError::stream_truncated(format!(
                    "the {} stream ended in the middle of an object",
                    self.endpoint.path()
                )));
            }
            self.handle(&line);
        }
        if !self.finished {
            self.fail(LlmError::stream_truncated(format!(
                "the {} stream ended before its `\"done\": true` object",
                self.endpoint.path()
            )));
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
    fn new(endpoint: Endpoint, provider: String, model: String, started: Instant) -> Self {
        StreamState {
            lines: NdjsonSplitter::new(),
            pending: VecDeque::new(),
            finished: false,
            endpoint,
            model,
            provider,
            started,
            first_token: None,
        }
    }

    fn handle(&mut self, line: &str) {
        if self.finished {
            return;
        }
        let mut chunk = match decode_chunk(line, self.endpoint.path()) {
            Ok(chunk) => chunk,
            Err(error) => return self.fail(error),
        };
        if let Some(model) = chunk.model.take().filter(|m| !m.is_empty()) {
            self.model = model;
        }
        let text = chunk.take_text();
        if !text.is_empty() {
            if self.first_token.is_none() {
                self.first_token = Some(self.started.elapsed());
            }
            self.pending.push_back(Ok(StreamItem::Delta(text)));
        }
        if chunk.done {
            self.finished = true;
            self.pending.push_back(Ok(StreamItem::Done(StreamFinal {
                finish_reason: chunk.finish_reason(),
                usage: chunk.usage(),
                timings: Timings {
                    total: self.started.elapsed(),
                    time_to_first_token: self.first_token,
                    provider: chunk.timings(),
                },
                provider: self.provider.clone(),
                model: self.model.clone(),
                rate_limit: None,
            })));
        }
    }
}

/// Builds [`OllamaProvider`]s from raw [`OllamaConfig`] sections; kind `ollama`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OllamaFactory;

impl ProviderFactory for OllamaFactory {
    fn kind(&self) -> &str {
        KIND
    }

    fn build(&self, name: &str, config: serde_json::Value) -> Result<Arc<dyn Provider>, LlmError> {
        let config: OllamaConfig = parse_config(name, config)?;
        Ok(Arc::new(OllamaProvider::new(name, &config)?))
    }
}

/// Classifies an in-stream `{"error": "..."}` message the way [`OllamaProvider`] does (for
/// callers that read Ollama streams themselves).
#[must_use]
pub fn classify_ollama_error(message: &str) -> LlmError {
    classify_stream_error(&ErrorHint::message(message), message)
}

#[cfg(test)]
mod tests {
    use quorum_llm::{ErrorKind, FinishReason, classify_http};

    use super::*;

    fn state() -> StreamState {
        StreamState::new(
            Endpoint::Chat,
            "p".into(),
            "requested".into(),
            Instant::now(),
        )
    }

    fn feed(state: &mut StreamState, bytes: &[u8]) {
        for line in state.lines.feed(bytes) {
            state.handle(&line);
        }
    }

    fn items(state: &mut StreamState) -> Vec<Result<StreamItem, LlmError>> {
        state.pending.drain(..).collect()
    }

    const STREAM: &str = concat!(
        "{\"model\":\"gemma3:1b\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n",
        "{\"model\":\"gemma3:1b\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":false}\r\n",
        "\n",
        "{\"model\":\"gemma3:1b\",\"message\":{\"role\":\"assistant\",\"content\":\"lo é\"},\"done\":false}\n",
        "{\"model\":\"gemma3:1b\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,",
        "\"total_duration\":5000,\"load_duration\":1000,\"prompt_eval_count\":7,\"prompt_eval_duration\":2000,\"eval_count\":2,\"eval_duration\":2000}\n",
    );

    fn check_complete(items: &[Result<StreamItem, LlmError>]) {
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(&items[0], Ok(StreamItem::Delta(t)) if t == "Hel"));
        assert!(matches!(&items[1], Ok(StreamItem::Delta(t)) if t == "lo é"));
        let Ok(StreamItem::Done(done)) = &items[2] else {
            panic!("no final item: {items:?}");
        };
        assert_eq!(done.finish_reason, FinishReason::Stop);
        assert_eq!(
            done.usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 2
            })
        );
        assert_eq!(done.model, "gemma3:1b");
        assert_eq!(done.provider, "p");
        assert_eq!(
            done.timings.provider.total,
            Some(std::time::Duration::from_micros(5))
        );
        assert!(done.timings.time_to_first_token.is_some());
    }

    #[tokio::test]
    async fn lines_become_deltas_then_one_final_item_at_every_split() {
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            let mut s = state();
            feed(&mut s, &bytes[..split]);
            feed(&mut s, &bytes[split..]);
            assert!(s.finished, "split at {split}");
            check_complete(&items(&mut s));
        }
        let mut s = state();
        for byte in bytes.chunks(1) {
            feed(&mut s, byte);
        }
        check_complete(&items(&mut s));
    }

    #[tokio::test]
    async fn a_final_line_without_newline_still_finishes() {
        let mut s = state();
        feed(&mut s, STREAM.trim_end().as_bytes());
        assert!(!s.finished);
        s.end();
        check_complete(&items(&mut s));
    }

    #[tokio::test]
    async fn missing_done_is_a_truncation() {
        let mut s = state();
        feed(
            &mut s,
            b"{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"message\":{\"content\":\"b\"},\"do",
        );
        s.end();
        let cut = items(&mut s);
        assert_eq!(cut.len(), 2, "{cut:?}");
        // The connection ended in the middle of an object.
        let err = cut[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StreamTruncated);
        assert!(
            err.to_string()
                .ends_with("ended in the middle of an object")
        );

        let mut clean = state();
        feed(
            &mut clean,
            b"{\"message\":{\"content\":\"a\"},\"done\":false}\n",
        );
        clean.end();
        let items = items(&mut clean);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StreamTruncated);
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "stream truncated: the api/chat stream ended before its `\"done\": true` object"
        );
    }

    #[tokio::test]
    async fn in_stream_errors_are_typed_and_terminal() {
        let mut s = state();
        feed(
            &mut s,
            b"{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":\"an error was encountered while running the model\"}\n{\"done\":true}\n",
        );
        let items = items(&mut s);
        assert_eq!(items.len(), 2);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Server);
        assert!(err.is_retryable());
        assert_eq!(
            err.api().map(|a| a.message.as_str()),
            Some("an error was encountered while running the model")
        );

        let mut ctx = state();
        feed(
            &mut ctx,
            b"{\"error\":{\"message\":\"too long\",\"code\":\"context_length_exceeded\"}}\n",
        );
        let err = ctx.pending.pop_front().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ContextLengthExceeded);
    }

    #[tokio::test]
    async fn generate_lines_use_response() {
        let mut s = StreamState::new(Endpoint::Generate, "p".into(), "m".into(), Instant::now());
        feed(
            &mut s,
            b"{\"response\":\"x\",\"done\":false}\n{\"response\":\"\",\"done\":true,\"done_reason\":\"length\"}\n",
        );
        let items = items(&mut s);
        assert!(matches!(&items[0], Ok(StreamItem::Delta(t)) if t == "x"));
        let Ok(StreamItem::Done(done)) = &items[1] else {
            panic!("{items:?}");
        };
        assert_eq!(done.finish_reason, FinishReason::Length);
        assert_eq!(done.usage, None);
        assert_eq!(done.model, "m");
    }

    #[tokio::test]
    async fn garbage_is_an_invalid_response() {
        let mut s = state();
        feed(&mut s, b"<html>\n");
        let err = s.pending.pop_front().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(s.finished);
        let mut typed = state();
        feed(&mut typed, b"[1,2]\n");
        assert_eq!(
            typed.pending.pop_front().unwrap().unwrap_err().kind(),
            ErrorKind::InvalidResponse
        );
    }

    #[test]
    fn http_errors_map_to_classes() {
        use quorum_llm::http::{HeaderMap, HeaderValue};
        let classify = |status: u16, body: &str, headers: &HeaderMap| {
            classify_http(status, headers, body, &wire::error_hint_from_body(body))
        };
        let none = HeaderMap::new();
        let mut retry = HeaderMap::new();
        retry.insert("retry-after", HeaderValue::from_static("2"));
        let cases: Vec<(u16, &str, &HeaderMap, ErrorKind, bool)> = vec![
            (
                404,
                r#"{"error":"model \"nope\" not found, try pulling it first"}"#,
                &none,
                ErrorKind::ModelNotFound,
                false,
            ),
            (404, "404 page not found", &none, ErrorKind::Api, false),
            (
                400,
                r#"{"error":"input exceeds the context length: 9000 tokens"}"#,
                &none,
                ErrorKind::ContextLengthExceeded,
                false,
            ),
            (
                400,
                r#"{"error":"invalid options: temperature"}"#,
                &none,
                ErrorKind::BadRequest,
                false,
            ),
            (
                401,
                r#"{"error":"unauthorized"}"#,
                &none,
                ErrorKind::Auth,
                false,
            ),
            (
                403,
                r#"{"error":"forbidden"}"#,
                &none,
                ErrorKind::Forbidden,
                false,
            ),
            (
                429,
                r#"{"error":"too many requests"}"#,
                &retry,
                ErrorKind::RateLimited,
                true,
            ),
            (
                429,
                r#"{"error":"insufficient_quota: you exceeded your current quota"}"#,
                &none,
                ErrorKind::QuotaExhausted,
                false,
            ),
            (
                500,
                r#"{"error":"llama runner process has terminated"}"#,
                &none,
                ErrorKind::Server,
                true,
            ),
            (502, "", &none, ErrorKind::Server, true),
            (
                503,
                r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#,
                &retry,
                ErrorKind::Overloaded,
                true,
            ),
        ];
        for (i, (status, body, headers, kind, retryable)) in cases.into_iter().enumerate() {
            let err = classify(status, body, headers);
            assert_eq!(err.kind(), kind, "case {i}: {err}");
            assert_eq!(err.is_retryable(), retryable, "case {i}: {err}");
        }
        let err = classify(429, r#"{"error":"slow down"}"#, &retry);
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(2)));
        assert_eq!(err.api().unwrap().message, "slow down");
    }

    #[test]
    fn classify_ollama_error_is_the_stream_rule() {
        assert_eq!(classify_ollama_error("boom").kind(), ErrorKind::Server);
        assert_eq!(
            classify_ollama_error("insufficient_quota").kind(),
            ErrorKind::QuotaExhausted
        );
    }

    #[test]
    fn urls_join_below_the_base() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/proxy/",
            "http://h:1/proxy",
        ] {
            let p = OllamaProvider::new("p", &OllamaConfig::new(base).unwrap()).unwrap();
            let want = if base.contains("proxy") {
                "http://h:1/proxy/api/chat"
            } else {
                "http://h:1/api/chat"
            };
            assert_eq!(p.url(Endpoint::Chat.path()), want);
        }
        let default = OllamaProvider::new("p", &OllamaConfig::default()).unwrap();
        assert_eq!(default.url("api/tags"), "http://localhost:11434/api/tags");
    }

    #[test]
    fn invalid_headers_name_the_field() {
        let mut config = OllamaConfig::default();
        config.headers.insert("bad header".into(), "x".into());
        let err = OllamaProvider::new("p", &config).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid config for provider \"p\": headers.bad header: invalid header name \"bad header\""
        );
        let config = OllamaConfig {
            api_key: Some(quorum_config::Secret::new("a\nb")),
            ..OllamaConfig::default()
        };
        let err = OllamaProvider::new("p", &config).unwrap_err().to_string();
        assert!(err.ends_with("api_key: invalid header value"), "{err}");
        assert!(!err.contains("a\nb"));
    }

    #[test]
    fn factory_reports_config_errors() {
        let Err(err) = OllamaFactory.build("main", serde_json::json!({"base_url": 5})) else {
            panic!("built from a numeric base_url");
        };
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("base_url"), "{err}");
        let p = OllamaFactory.build("main", serde_json::json!({})).unwrap();
        assert_eq!((p.name(), p.kind()), ("main", "ollama"));
        assert!(p.embeddings().is_some());
    }
}
