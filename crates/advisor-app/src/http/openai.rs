//! `POST /v1/chat/completions` and `GET /v1/models`: the OpenAI-compatible gateway. Any
//! configured model name works as `model`; retries, breakers, limits and fallbacks apply.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use quorum_llm::{ChatRequest, FinishReason, Message, Role, StreamItem, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{AppState, UpstreamTime, json_response, read_json};
use crate::error::ApiError;
use crate::metrics::CallRecord;

/// The request body: what maps onto every provider, plus OpenAI's common sampling and tool
/// options, which pass through to the provider as extras. Other members are ignored (no
/// `flatten`: it would buffer every body through serde's generic content first).
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    top_p: Option<Value>,
    #[serde(default)]
    frequency_penalty: Option<Value>,
    #[serde(default)]
    presence_penalty: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    logit_bias: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<Value>,
    #[serde(default)]
    reasoning_effort: Option<Value>,
}

impl CompletionRequest {
    /// The pass-through options that were given.
    fn extras(&mut self) -> Map<String, Value> {
        let mut extra = Map::new();
        for (key, value) in [
            ("top_p", self.top_p.take()),
            ("frequency_penalty", self.frequency_penalty.take()),
            ("presence_penalty", self.presence_penalty.take()),
            ("response_format", self.response_format.take()),
            ("logit_bias", self.logit_bias.take()),
            ("tools", self.tools.take()),
            ("tool_choice", self.tool_choice.take()),
            ("parallel_tool_calls", self.parallel_tool_calls.take()),
            ("reasoning_effort", self.reasoning_effort.take()),
        ] {
            if let Some(value) = value {
                extra.insert(key.to_owned(), value);
            }
        }
        extra
    }
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn completion_id() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("chatcmpl-quorum-{:x}-{n}", unix_secs())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Other(s) => s,
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens(),
    })
}

/// Turns the OpenAI body into a provider-neutral request, naming the field at fault.
fn to_chat_request(state: &AppState, mut body: CompletionRequest) -> Result<ChatRequest, ApiError> {
    let gateway = &state.inner.gateway;
    if gateway.model(&body.model).is_none() {
        let known: Vec<&str> = gateway.model_names().collect();
        return Err(ApiError::not_found(format!(
            "unknown model \"{}\" (known: {})",
            body.model,
            known.join(", ")
        ))
        .field("model")
        .extra(json!({ "code": "model_not_found", "known_models": known })));
    }
    if body.messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is supported"));
    }
    let extra = body.extras();
    let mut messages = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!("unknown role \"{other}\" (system, developer, user, assistant, tool)"),
                ));
            }
        };
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}]"),
                                format!(
                                    "content part of type \"{kind}\" is not supported (text only)"
                                ),
                            ));
                        }
                    }
                }
                text
            }
        };
        let mut message = Message::new(role, content);
        message.name = m.name;
        message.tool_call_id = m.tool_call_id;
        messages.push(message);
    }
    if let Some(t) = body.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature {t} is outside 0..=2"),
        ));
    }
    let mut request = ChatRequest::new(body.model, messages);
    request.temperature = body.temperature;
    request.max_tokens = body.max_completion_tokens.or(body.max_tokens);
    request.seed = body.seed;
    request.stop = match body.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    request.extra = extra;
    request.stream = body.stream;
    Ok(request)
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let body: CompletionRequest = read_json(&state, body).await?;
    let include_usage = body
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let request = to_chat_request(&state, body)?;
    if request.stream {
        return stream(state, request, include_usage).await;
    }
    let started = Instant::now();
    let answer = state.inner.gateway.chat(&request).await;
    let upstream = started.elapsed();
    let answer = answer.map_err(|f| ApiError::from_llm(&f.error))?;
    let r = &answer.response;
    let out = Completion {
        id: completion_id(),
        object: "chat.completion",
        created: unix_secs(),
        model: &request.model,
        choices: [Choice {
            index: 0,
            message: OutMessage {
                role: "assistant",
                content: &r.content,
            },
            finish_reason: finish_reason(&r.finish_reason),
        }],
        usage: r.usage.map(|u| OutUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens(),
        }),
    };
    let mut response = json_response(StatusCode::OK, &out);
    add_route_headers(&mut response, &answer.provider, &answer.model);
    response.extensions_mut().insert(UpstreamTime(upstream));
    Ok(response)
}

/// A non-streamed answer, in OpenAI's shape.
#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: OutMessage<'a>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

fn add_route_headers(response: &mut Response, provider: &str, model: &str) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(provider) {
        h.insert("x-quorum-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(model) {
        h.insert("x-quorum-model", v);
    }
}

async fn stream(
    state: AppState,
    request: ChatRequest,
    include_usage: bool,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let routed = state
        .inner
        .gateway
        .open_stream(&request)
        .await
        .map_err(|e| ApiError::from_llm(&e.error))?;
    let upstream = started.elapsed();
    let chunks = Chunks::new(&request.model);
    let provider = routed.provider.clone();
    let provider_model = routed.model.clone();
    let fell_back = !routed.skipped.is_empty();
    let metrics = state.inner.metrics.clone();
    let model = request.model;
    let mut first_token: Option<Duration> = None;
    let first =
        futures_util::stream::once(std::future::ready(Ok::<Bytes, Infallible>(chunks.role())));
    // The provider stream ends right after its terminal item; dropping this body (the client
    // left) drops it, which aborts the upstream call.
    let rest = routed.value.filter_map(move |item| {
        let frame = match item {
            Ok(StreamItem::Delta(text)) => {
                if first_token.is_none() {
                    first_token = Some(started.elapsed());
                }
                Some(chunks.delta(&text))
            }
            Ok(StreamItem::Done(done)) => {
                metrics.observe_call(&CallRecord {
                    provider: &provider,
                    model: &model,
                    outcome: "ok",
                    latency: Some(started.elapsed()),
                    time_to_first_token: first_token,
                    tokens: done.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
                    fell_back,
                });
                Some(chunks.end(
                    finish_reason(&done.finish_reason),
                    done.usage.as_ref().filter(|_| include_usage),
                ))
            }
            Ok(_) => None,
            Err(e) => {
                metrics.observe_call(&CallRecord {
                    provider: &provider,
                    model: &model,
                    outcome: e.kind().as_str(),
                    latency: Some(started.elapsed()),
                    time_to_first_token: first_token,
                    tokens: None,
                    fell_back,
                });
                Some(sse_data(&ApiError::from_llm(&e).body()))
            }
        };
        std::future::ready(frame.map(Ok::<Bytes, Infallible>))
    });
    // Frames already available go out in one write (one syscall, one packet) instead of one
    // each; `ready_chunks` never waits for more, so no token is held back.
    let body = first.chain(rest).ready_chunks(64).map(|frames| {
        if frames.len() == 1 {
            return frames
                .into_iter()
                .next()
                .unwrap_or_else(|| Ok(Bytes::new()));
        }
        let mut out = Vec::with_capacity(
            frames
                .iter()
                .map(|f| f.as_ref().map_or(0, Bytes::len))
                .sum(),
        );
        for frame in frames.into_iter().flatten() {
            out.extend_from_slice(&frame);
        }
        Ok(Bytes::from(out))
    });
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    add_route_headers(&mut response, &routed.provider, &provider_model);
    response.extensions_mut().insert(UpstreamTime(upstream));
    Ok(response)
}

/// Renders `chat.completion.chunk` events: the constant head of every chunk is rendered once.
struct Chunks {
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[{"index":0,"delta":`
    head: Vec<u8>,
    /// The same head with `"choices":[]` for the usage chunk, as JSON without the `data: `.
    usage_head: Value,
}

impl Chunks {
    fn new(model: &str) -> Chunks {
        let id = completion_id();
        let created = unix_secs();
        let mut head = b"data: {\"id\":".to_vec();
        let _ = serde_json::to_writer(&mut head, &id);
        head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        head.extend_from_slice(created.to_string().as_bytes());
        head.extend_from_slice(b",\"model\":");
        let _ = serde_json::to_writer(&mut head, model);
        head.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        let usage_head = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
        });
        Chunks { head, usage_head }
    }

    fn frame(&self, delta: &[u8], text: Option<&str>, finish: Option<&str>) -> Bytes {
        let mut out = Vec::with_capacity(self.head.len() + delta.len() + 64);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(delta);
        if let Some(text) = text {
            let _ = serde_json::to_writer(&mut out, text);
            out.push(b'}');
        }
        out.extend_from_slice(b",\"finish_reason\":");
        match finish {
            Some(reason) => {
                let _ = serde_json::to_writer(&mut out, reason);
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
        Bytes::from(out)
    }

    fn role(&self) -> Bytes {
        self.frame(b"{\"role\":\"assistant\",\"content\":\"\"}", None, None)
    }

    fn delta(&self, text: &str) -> Bytes {
        self.frame(b"{\"content\":", Some(text), None)
    }

    /// The finish chunk, the usage chunk if asked for, and `[DONE]`.
    fn end(&self, reason: &str, usage: Option<&Usage>) -> Bytes {
        let mut out = self.frame(b"{}", None, Some(reason)).to_vec();
        if let Some(u) = usage {
            let mut chunk = self.usage_head.clone();
            chunk["usage"] = usage_json(u);
            out.extend_from_slice(&sse_data(&chunk));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }
}

fn sse_data(value: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    // Serializing a Value cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `GET /v1/models`.
pub(crate) async fn list_models(State(state): State<AppState>) -> Response {
    let data: Vec<Value> = state
        .inner
        .gateway
        .models()
        .iter()
        .map(|(name, m)| {
            json!({"id": name, "object": "model", "created": 0, "owned_by": m.provider})
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}
