//! The Anthropic provider: HTTP calls, error mapping and the named-event SSE stream.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use quorum_llm::http_client::{ClientBuilder, HttpEndpoint, StreamDecoder};
use quorum_llm::sse::{SseEvent, SseParser};
use quorum_llm::{
    ChatRequest, ChatResponse, ChatStream, LlmError, ModelInfo, Provider, ProviderFactory,
    RateLimitInfo, StreamFinal, StreamItem, Timings, Usage, classify_stream_error, parse_config,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::AnthropicConfig;
use crate::wire::{self, Event, WireUsage};

/// The provider kind this crate registers.
pub const KIND: &str = "anthropic";

/// How many pages of `GET v1/models` [`Provider::list_models`] reads at most.
const MAX_MODEL_PAGES: usize = 100;

/// The Anthropic Messages API (`POST v1/messages`, `GET v1/models`).
///
/// Cheap to clone (the HTTP connection pool is shared). Dropping a call's future or stream
/// closes its connection, which aborts the request upstream.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    endpoint: HttpEndpoint,
    default_max_tokens: u32,
}

impl AnthropicProvider {
    /// Builds the provider instance `name` from its config.
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] naming the field when a header is invalid or the HTTP client cannot
    /// be built.
    pub fn new(name: &str, config: &AnthropicConfig) -> Result<Self, LlmError> {
        let mut headers = ClientBuilder::new(name, &config.headers)?;
        headers.header("anthropic-version", "version", &config.version)?;
        if !config.beta.is_empty() {
            headers.header("anthropic-beta", "beta", &config.beta.join(","))?;
        }
        if let Some(key) = config.api_key.as_ref().filter(|k| !k.is_empty()) {
            headers.sensitive_header("x-api-key", "api_key", key.expose())?;
        }
        let client = headers.build(&config.timeout)?;
        Ok(AnthropicProvider {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                endpoint: HttpEndpoint::new(
                    client,
                    config.base_url_str(),
                    "anthropic",
                    wire::error_hint_from_body,
                ),
                default_max_tokens: config.default_max_tokens,
            }),
        })
    }

    /// The URL of an endpoint below the base URL.
    #[cfg(test)]
    fn url(&self, path: &str) -> String {
        self.inner.endpoint.url(path)
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let body = wire::chat_body(request, self.inner.default_max_tokens, false)?;
        let endpoint = &self.inner.endpoint;
        let answer = endpoint
            .post_value("v1/messages", &body, "application/json")
            .await?;
        let rate_limit = answer.rate_limit();
        let bytes = answer.bytes().await?;
        let total = started.elapsed();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            LlmError::invalid_response("v1/messages: the body is not JSON", Some(Box::new(e)))
        })?;
        if let Some(hint) = wire::error_hint(&value) {
            return Err(classify_stream_error(
                &hint,
                &String::from_utf8_lossy(&bytes),
            ));
        }
        let message: wire::WireMessage = serde_json::from_value(value).map_err(|e| {
            LlmError::invalid_response("v1/messages: not a message", Some(Box::new(e)))
        })?;
        Ok(ChatResponse {
            content: message.text(),
            finish_reason: wire::finish_reason(message.stop_reason.as_deref()),
            usage: message.usage(),
            timings: Timings {
                total,
                ..Timings::default()
            },
            provider: self.inner.name.clone(),
            model: message
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| request.model.clone()),
            rate_limit: rate_limit.map(Box::new),
        })
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let started = Instant::now();
        let body = wire::chat_body(request, self.inner.default_max_tokens, true)?;
        let endpoint = &self.inner.endpoint;
        let answer = endpoint
            .post_value("v1/messages", &body, "text/event-stream")
            .await?;
        let mut state = StreamState::new(self.inner.name.clone(), request.model.clone(), started);
        state.rate_limit = answer.rate_limit().map(Box::new);
        Ok(endpoint.chat_stream(answer, state))
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let mut models = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_MODEL_PAGES {
            let mut query = vec![("limit", "1000".to_owned())];
            if let Some(id) = after.take() {
                query.push(("after_id", id));
            }
            let endpoint = &self.inner.endpoint;
            let bytes = endpoint
                .send_bytes(endpoint.get("v1/models").query(&query))
                .await?;
            let page = wire::parse_models(&bytes)?;
            models.extend(page.models());
            match page.last_id {
                Some(last) if page.has_more && !page.data.is_empty() => after = Some(last),
                _ => return Ok(models),
            }
        }
        Err(LlmError::invalid_response(
            format!("v1/models: still more pages after {MAX_MODEL_PAGES}"),
            None,
        ))
    }
}

/// The state of one Messages event stream.
struct StreamState {
    parser: SseParser,
    pending: VecDeque<Result<StreamItem, LlmError>>,
    finished: bool,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
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
            self.handle(&event);
        }
    }

    /// The body ended: a last event without its blank line still counts; no `message_stop`
    /// means the stream was truncated.
    fn end(&mut self) {
        if let Some(event) = self.parser.finish() {
            self.handle(&event);
        }
        if !self.finished {
            self.fail(LlmError::stream_truncated(
                "the v1/messages event stream ended before `message_stop`",
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
    fn new(provider: String, model: String, started: Instant) -> Self {
        StreamState {
            parser: SseParser::new(),
            pending: VecDeque::new(),
            finished: false,
            stop_reason: None,
            usage: None,
            model,
            provider,
            started,
            first_token: None,
            rate_limit: None,
        }
    }

    /// Merges a (cumulative) usage report into what is known.
    fn merge_usage(&mut self, update: WireUsage) {
        let usage = self.usage.get_or_insert_with(WireUsage::default);
        usage.input_tokens = update.input_tokens.or(usage.input_tokens);
        usage.output_tokens = update.output_tokens.or(usage.output_tokens);
        usage.cache_creation_input_tokens = update
            .cache_creation_input_tokens
            .or(usage.cache_creation_input_tokens);
        usage.cache_read_input_tokens = update
            .cache_read_input_tokens
            .or(usage.cache_read_input_tokens);
    }

    fn handle(&mut self, event: &SseEvent) {
        if self.finished {
            return;
        }
        let decoded = match wire::decode_event(&event.event, &event.data) {
            Ok(decoded) => decoded,
            Err(error) => return self.fail(error),
        };
        match decoded {
            Event::MessageStart(message) => {
                if let Some(model) = message.model.filter(|m| !m.is_empty()) {
                    self.model = model;
                }
                if let Some(usage) = message.usage {
                    self.merge_usage(usage);
                }
            }
            Event::Text(text) => {
                if self.first_token.is_none() {
                    self.first_token = Some(self.started.elapsed());
                }
                self.pending.push_back(Ok(StreamItem::Delta(text)));
            }
            Event::MessageDelta { stop_reason, usage } => {
                if stop_reason.is_some() {
                    self.stop_reason = stop_reason;
                }
                if let Some(usage) = usage {
                    self.merge_usage(usage);
                }
            }
            Event::MessageStop => {
                self.finished = true;
                let usage = self.usage.map(|u| Usage {
                    prompt_tokens: u.prompt_tokens().unwrap_or(0),
                    completion_tokens: u.output_tokens.unwrap_or(0),
                });
                self.pending.push_back(Ok(StreamItem::Done(StreamFinal {
                    finish_reason: wire::finish_reason(self.stop_reason.as_deref()),
                    usage,
                    timings: Timings {
                        total: self.started.elapsed(),
                        time_to_first_token: self.first_token,
                        ..Timings::default()
                    },
                    provider: self.provider.clone(),
                    model: self.model.clone(),
                    rate_limit: self.rate_limit.clone(),
                })));
            }
            Event::Error(hint) => self.fail(classify_stream_error(&hint, &event.data)),
            Event::Ignored => {}
        }
    }
}

/// Builds [`AnthropicProvider`]s from raw [`AnthropicConfig`] sections; kind `anthropic`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnthropicFactory;

impl ProviderFactory for AnthropicFactory {
    fn kind(&self) -> &str {
        KIND
    }

    fn build(&self, name: &str, config: serde_json::Value) -> Result<Arc<dyn Provider>, LlmError> {
        let config: AnthropicConfig = parse_config(name, config)?;
        Ok(Arc::new(AnthropicProvider::new(name, &config)?))
    }
}

#[cfg(test)]
mod tests {
    use quorum_llm::http::{HeaderMap as HttpHeaders, HeaderValue as HttpValue};
    use quorum_llm::{ErrorKind, FinishReason, classify_http};

    use super::*;

    fn state() -> StreamState {
        StreamState::new("p".into(), "requested".into(), Instant::now())
    }

    fn feed(state: &mut StreamState, bytes: &[u8]) {
        for event in state.parser.feed(bytes) {
            state.handle(&event);
        }
    }

    fn items(state: &mut StreamState) -> Vec<Result<StreamItem, LlmError>> {
        state.pending.drain(..).collect()
    }

    const STREAM: &str = concat!(
        "event: message_start\r\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\r\n\r\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo é\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn check_complete(items: &[Result<StreamItem, LlmError>]) {
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(&items[0], Ok(StreamItem::Delta(t)) if t == "Hel"));
        assert!(matches!(&items[1], Ok(StreamItem::Delta(t)) if t == "lo é"));
        let Ok(StreamItem::Done(done)) = &items[2] else {
            panic!("no final item: {items:?}");
        };
        assert_eq!(done.finish_reason, FinishReason::Length);
        assert_eq!(
            done.usage,
            Some(Usage {
                prompt_tokens: 30,
                completion_tokens: 15
            })
        );
        assert_eq!(done.model, "claude-x");
        assert_eq!(done.provider, "p");
        assert!(done.timings.time_to_first_token.is_some());
    }

    #[tokio::test]
    async fn events_become_deltas_then_one_final_item_at_every_split() {
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
    async fn a_final_event_without_blank_line_still_finishes() {
        let mut s = state();
        feed(&mut s, STREAM.trim_end().as_bytes());
        assert!(!s.finished);
        s.end();
        check_complete(&items(&mut s));
    }

    #[tokio::test]
    async fn missing_message_stop_is_a_truncation() {
        let cut = STREAM.find("event: message_delta").unwrap();
        let mut s = state();
        feed(&mut s, &STREAM.as_bytes()[..cut]);
        s.end();
        let items = items(&mut s);
        assert_eq!(items.len(), 3, "{items:?}");
        let err = items[2].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StreamTruncated);
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "stream truncated: the v1/messages event stream ended before `message_stop`"
        );
    }

    #[tokio::test]
    async fn error_events_are_typed_and_terminal() {
        let cases = [
            ("overloaded_error", ErrorKind::Overloaded, true),
            ("rate_limit_error", ErrorKind::RateLimited, true),
            ("api_error", ErrorKind::Server, true),
            ("invalid_request_error", ErrorKind::BadRequest, false),
        ];
        for (kind, want, retryable) in cases {
            let mut s = state();
            let text = format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"a\"}}}}\n\nevent: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":\"Overloaded\"}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
            );
            feed(&mut s, text.as_bytes());
            let items = items(&mut s);
            assert_eq!(items.len(), 2, "{items:?}");
            let err = items[1].as_ref().unwrap_err();
            assert_eq!(err.kind(), want, "{kind}");
            assert_eq!(err.is_retryable(), retryable, "{kind}");
            assert_eq!(err.api().unwrap().error_type.as_deref(), Some(kind));
        }
    }

    #[tokio::test]
    async fn garbage_data_is_an_invalid_response() {
        let mut s = state();
        feed(&mut s, b"event: content_block_delta\ndata: {nope\n\n");
        let err = s.pending.pop_front().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(s.finished);
    }

    #[tokio::test]
    async fn a_stream_without_usage_reports_none() {
        let mut s = state();
        feed(
            &mut s,
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let items = items(&mut s);
        let Ok(StreamItem::Done(done)) = &items[1] else {
            panic!("{items:?}");
        };
        assert_eq!(done.usage, None);
        assert_eq!(done.model, "requested");
        assert_eq!(done.finish_reason, FinishReason::Stop);
    }

    /// Anthropic's error bodies, by status and type, to classes.
    #[test]
    fn http_errors_map_to_classes() {
        let body = |kind: &str, message: &str| {
            format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}}}}"#)
        };
        let none = HttpHeaders::new();
        let mut retry = HttpHeaders::new();
        retry.insert("retry-after", HttpValue::from_static("7"));
        retry.insert("request-id", HttpValue::from_static("req_1"));
        #[rustfmt::skip]
        let cases: Vec<(u16, String, &HttpHeaders, ErrorKind, bool)> = vec![
            (400, body("invalid_request_error", "temperature: range"), &none, ErrorKind::BadRequest, false),
            (400, body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"), &none, ErrorKind::ContextLengthExceeded, false),
            (400, body("invalid_request_error", "Your credit balance is too low to access the Anthropic API."), &none, ErrorKind::QuotaExhausted, false),
            (401, body("authentication_error", "invalid x-api-key"), &none, ErrorKind::Auth, false),
            (402, body("billing_error", "billing"), &none, ErrorKind::PaymentRequired, false),
            (403, body("permission_error", "no"), &none, ErrorKind::Forbidden, false),
            (404, body("not_found_error", "model: claude-nope"), &none, ErrorKind::ModelNotFound, false),
            (413, body("request_too_large", "too large"), &none, ErrorKind::Api, false),
            (429, body("rate_limit_error", "slow down"), &retry, ErrorKind::RateLimited, true),
            (500, body("api_error", "internal"), &none, ErrorKind::Server, true),
            (529, body("overloaded_error", "Overloaded"), &none, ErrorKind::Overloaded, true),
            (500, body("overloaded_error", "Overloaded"), &none, ErrorKind::Overloaded, true),
            (502, "<html>bad gateway</html>".to_owned(), &none, ErrorKind::Server, true),
        ];
        for (i, (status, text, headers, kind, retryable)) in cases.into_iter().enumerate() {
            let err = classify_http(status, headers, &text, &wire::error_hint_from_body(&text));
            assert_eq!(err.kind(), kind, "case {i}: {err}");
            assert_eq!(err.is_retryable(), retryable, "case {i}: {err}");
        }
        let text = body("rate_limit_error", "slow down");
        let err = classify_http(429, &retry, &text, &wire::error_hint_from_body(&text));
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(7)));
        let api = err.api().unwrap();
        assert_eq!(api.message, "slow down");
        assert_eq!(api.error_type.as_deref(), Some("rate_limit_error"));
        assert_eq!(api.header("request-id"), Some("req_1"));
    }

    #[test]
    fn urls_join_below_the_base() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/gw/",
            "http://h:1/gw",
        ] {
            let p = AnthropicProvider::new("p", &AnthropicConfig::new(base).unwrap()).unwrap();
            let want = if base.contains("gw") {
                "http://h:1/gw/v1/messages"
            } else {
                "http://h:1/v1/messages"
            };
            assert_eq!(p.url("v1/messages"), want);
        }
        let default = AnthropicProvider::new("p", &AnthropicConfig::default()).unwrap();
        assert_eq!(
            default.url("v1/models"),
            "https://api.anthropic.com/v1/models"
        );
    }

    #[test]
    fn invalid_headers_name_the_field() {
        let mut config = AnthropicConfig::default();
        config.headers.insert("bad header".into(), "x".into());
        let err = AnthropicProvider::new("p", &config)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid config for provider \"p\": headers.bad header: invalid header name \"bad header\""
        );
        let config = AnthropicConfig {
            api_key: Some(quorum_config::Secret::new("sk\nx")),
            ..AnthropicConfig::default()
        };
        let err = AnthropicProvider::new("p", &config)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("api_key: invalid header value"), "{err}");
        let config = AnthropicConfig {
            beta: vec!["a\u{7f}".into()],
            ..AnthropicConfig::default()
        };
        let err = AnthropicProvider::new("p", &config)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("beta: invalid header value"), "{err}");
    }

    #[test]
    fn factory_reports_config_errors() {
        let Err(err) = AnthropicFactory.build("main", serde_json::json!({"version": 2023})) else {
            panic!("built from a numeric version");
        };
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("version"), "{err}");
        let p = AnthropicFactory
            .build("main", serde_json::json!({"api_key": "k"}))
            .unwrap();
        assert_eq!((p.name(), p.kind()), ("main", "anthropic"));
        assert!(p.embeddings().is_none());
    }
}
