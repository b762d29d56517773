//! The Anthropic Messages wire format: request bodies and response parsing.

use quorum_llm::{ChatRequest, ErrorHint, FinishReason, LlmError, ModelInfo, Role, Usage};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A temperature as the decimal the caller wrote (0.7f32 is sent as 0.7, not 0.699999988...).
fn decimal(value: f32) -> Value {
    let wide = value.to_string().parse::<f64>().unwrap_or(f64::from(value));
    json!(wide)
}

/// The JSON body of `POST v1/messages`.
///
/// `extra` (`top_p`, `top_k`, `metadata`, `thinking`, `tools`...) is copied first, so it never
/// overrides a field set from the request. System messages join the request's system prompt in
/// the top-level `system` field; tool results become `tool_result` blocks of a user turn. The
/// request's `seed` is not sent (the Messages API has none).
pub(crate) fn chat_body(
    request: &ChatRequest,
    default_max_tokens: u32,
    stream: bool,
) -> Result<Value, LlmError> {
    let max_tokens = match request.max_tokens {
        Some(0) => {
            return Err(LlmError::InvalidRequest {
                message: "max_tokens: must be at least 1".into(),
            });
        }
        Some(max) => max,
        None => default_max_tokens,
    };
    let mut system: Vec<&str> = request.system.iter().map(String::as_str).collect();
    let mut messages = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        match message.role {
            Role::System => system.push(&message.content),
            Role::User => messages.push(json!({"role": "user", "content": message.content})),
            Role::Assistant => {
                messages.push(json!({"role": "assistant", "content": message.content}));
            }
            Role::Tool => match &message.tool_call_id {
                Some(id) => messages.push(json!({
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": id, "content": message.content}]
                })),
                None => messages.push(json!({"role": "user", "content": message.content})),
            },
        }
    }
    if messages.is_empty() {
        return Err(LlmError::InvalidRequest {
            message: "messages: at least one user or assistant message is required".into(),
        });
    }
    let mut body: Map<String, Value> = request.extra.clone();
    body.insert("model".into(), Value::from(request.model.as_str()));
    body.insert("max_tokens".into(), json!(max_tokens));
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::from(system.join("\n\n")));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), decimal(t));
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    body.insert("stream".into(), Value::Bool(stream));
    Ok(Value::Object(body))
}

/// Anthropic's `usage` object (input counts exclude cached tokens, which come separately).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub(crate) input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) output_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Every prompt token (fresh + cache writes + cache reads).
    pub(crate) fn prompt_tokens(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b))
        })
    }
}

/// A complete `message` object (the non-streamed answer, and `message_start`'s payload).
#[derive(Debug, Deserialize)]
pub(crate) struct WireMessage {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) content: Vec<Block>,
    #[serde(default)]
    pub(crate) stop_reason: Option<String>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
}

impl WireMessage {
    /// The text blocks, concatenated (tool use and thinking blocks are not text).
    pub(crate) fn text(&self) -> String {
        self.content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect()
    }

    pub(crate) fn usage(&self) -> Option<Usage> {
        let usage = self.usage?;
        Some(Usage {
            prompt_tokens: usage.prompt_tokens().unwrap_or(0),
            completion_tokens: usage.output_tokens.unwrap_or(0),
        })
    }
}

/// A content block (or a block delta: `text_delta` carries `text` the same way).
#[derive(Debug, Deserialize)]
pub(crate) struct Block {
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) text: Option<String>,
}

pub(crate) fn finish_reason(reason: Option<&str>) -> FinishReason {
    reason
        .filter(|r| !r.is_empty())
        .map_or(FinishReason::Stop, FinishReason::from_provider)
}

/// One event of a Messages stream, decoded from its `data`.
#[derive(Debug)]
pub(crate) enum Event {
    /// `message_start`: the model and the input usage.
    MessageStart(WireMessage),
    /// `content_block_start` / `content_block_delta` with text.
    Text(String),
    /// `message_delta`: the stop reason and the (cumulative) usage.
    MessageDelta {
        stop_reason: Option<String>,
        usage: Option<WireUsage>,
    },
    /// `message_stop`: the end.
    MessageStop,
    /// `error`: the stream failed.
    Error(ErrorHint),
    /// `ping`, `content_block_stop`, non-text deltas and unknown events.
    Ignored,
}

#[derive(Debug, Deserialize)]
struct StartData {
    message: WireMessage,
}

#[derive(Debug, Deserialize)]
struct BlockStartData {
    content_block: Block,
}

#[derive(Debug, Deserialize)]
struct BlockDeltaData {
    delta: Block,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaData {
    #[serde(default)]
    delta: MessageDeltaInner,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct MessageDeltaInner {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Decodes an event by its name (the `event:` field, else the data's `type`).
///
/// # Errors
///
/// [`LlmError::InvalidResponse`] when the data of a known event is not what it should be.
pub(crate) fn decode_event(name: &str, data: &str) -> Result<Event, LlmError> {
    let value: Value = serde_json::from_str(data).map_err(|e| {
        LlmError::invalid_response(
            format!("v1/messages stream: the data of event {name:?} is not JSON"),
            Some(Box::new(e)),
        )
    })?;
    let name = if name.is_empty() {
        value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    } else {
        name.to_owned()
    };
    let bad = |e: serde_json::Error| {
        LlmError::invalid_response(
            format!("v1/messages stream: a malformed {name:?} event"),
            Some(Box::new(e)),
        )
    };
    Ok(match name.as_str() {
        "message_start" => Event::MessageStart(
            serde_json::from_value::<StartData>(value)
                .map_err(bad)?
                .message,
        ),
        "content_block_start" => {
            let block = serde_json::from_value::<BlockStartData>(value)
                .map_err(bad)?
                .content_block;
            text_event(block)
        }
        "content_block_delta" => text_event(
            serde_json::from_value::<BlockDeltaData>(value)
                .map_err(bad)?
                .delta,
        ),
        "message_delta" => {
            let delta: MessageDeltaData = serde_json::from_value(value).map_err(bad)?;
            Event::MessageDelta {
                stop_reason: delta.delta.stop_reason,
                usage: delta.usage,
            }
        }
        "message_stop" => Event::MessageStop,
        "error" => Event::Error(
            error_hint(&value).unwrap_or_else(|| ErrorHint::message(data.trim().to_owned())),
        ),
        _ => Event::Ignored,
    })
}

fn text_event(block: Block) -> Event {
    match block.text {
        Some(text) if matches!(block.kind.as_str(), "text" | "text_delta") && !text.is_empty() => {
            Event::Text(text)
        }
        _ => Event::Ignored,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ModelPage {
    pub(crate) data: Vec<WireModel>,
    #[serde(default)]
    pub(crate) has_more: bool,
    #[serde(default)]
    pub(crate) last_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireModel {
    pub(crate) id: String,
}

/// Parses one page of `GET v1/models`.
pub(crate) fn parse_models(body: &[u8]) -> Result<ModelPage, LlmError> {
    serde_json::from_slice(body).map_err(|e| {
        LlmError::invalid_response("v1/models: not an Anthropic model list", Some(Box::new(e)))
    })
}

impl ModelPage {
    pub(crate) fn models(&self) -> impl Iterator<Item = ModelInfo> + '_ {
        self.data.iter().map(|m| ModelInfo {
            id: m.id.clone(),
            owned_by: Some("anthropic".to_owned()),
            context_window: None,
        })
    }
}

/// Reads an Anthropic error: `{"type":"error","error":{"type","message"}}` (and, leniently, an
/// `error` object without the outer `type`, or `{"error":"message"}` from a gateway).
pub(crate) fn error_hint(value: &Value) -> Option<ErrorHint> {
    match value.as_object()?.get("error")? {
        Value::Object(error) => Some(ErrorHint::from_error_object(error)),
        Value::String(message) => Some(ErrorHint::message(message.clone())),
        _ => None,
    }
}

/// The hint of an error response body (an empty hint when it is not JSON).
pub(crate) fn error_hint_from_body(body: &str) -> ErrorHint {
    ErrorHint::from_json_body(body, error_hint)
}

#[cfg(test)]
mod tests {
    use quorum_llm::{ErrorKind, Message};

    use super::*;

    #[test]
    fn chat_body_is_exact() {
        let mut request = ChatRequest::new(
            "claude-sonnet-4-5",
            vec![
                Message::system("no emojis"),
                Message::user("hi"),
                Message::assistant("hello"),
                Message::user("again"),
            ],
        );
        request.system = Some("be brief".into());
        request.temperature = Some(0.7);
        request.max_tokens = Some(100);
        request.stop = vec!["\n\nHuman:".into()];
        request.seed = Some(42);
        request.extra.insert("top_k".into(), json!(5));
        request
            .extra
            .insert("metadata".into(), json!({"user_id": "u1"}));
        request.extra.insert("model".into(), json!("must-not-win"));
        request.extra.insert("stream".into(), json!(true));
        let body = chat_body(&request, 1024, false).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "system": "be brief\n\nno emojis",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "again"}
                ],
                "temperature": 0.7,
                "stop_sequences": ["\n\nHuman:"],
                "top_k": 5,
                "metadata": {"user_id": "u1"},
                "stream": false
            })
        );
        assert!(
            serde_json::to_string(&body)
                .unwrap()
                .contains("\"temperature\":0.7,")
        );
    }

    #[test]
    fn minimal_body_gets_the_default_max_tokens() {
        let request = ChatRequest::user("m", "q");
        assert_eq!(
            chat_body(&request, 1024, true).unwrap(),
            json!({
                "model": "m",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": "q"}],
                "stream": true
            })
        );
    }

    #[test]
    fn tool_results_become_blocks() {
        let mut tool = Message::new(Role::Tool, "42");
        tool.tool_call_id = Some("toolu_1".into());
        let plain_tool = Message::new(Role::Tool, "43");
        let request = ChatRequest::new("m", vec![Message::user("q"), tool, plain_tool]);
        let body = chat_body(&request, 10, false).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}]})
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": "43"})
        );
    }

    #[test]
    fn invalid_requests_are_rejected_before_sending() {
        let mut zero = ChatRequest::user("m", "q");
        zero.max_tokens = Some(0);
        assert_eq!(
            chat_body(&zero, 10, false).unwrap_err().to_string(),
            "invalid request: max_tokens: must be at least 1"
        );
        let only_system = ChatRequest::new("m", vec![Message::system("s")]);
        let err = chat_body(&only_system, 10, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert!(err.to_string().contains("messages: at least one"), "{err}");
    }

    #[test]
    fn messages_parse_with_cache_usage() {
        let message: WireMessage = serde_json::from_str(
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"Hel"},{"type":"tool_use","id":"t","name":"n","input":{}},{"type":"text","text":"lo"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":7}}"#,
        )
        .unwrap();
        assert_eq!(message.text(), "Hello");
        assert_eq!(
            message.usage(),
            Some(Usage {
                prompt_tokens: 115,
                completion_tokens: 7
            })
        );
        assert_eq!(
            finish_reason(message.stop_reason.as_deref()),
            FinishReason::Length
        );
        assert_eq!(finish_reason(None), FinishReason::Stop);
        assert_eq!(finish_reason(Some("end_turn")), FinishReason::Stop);
        assert_eq!(finish_reason(Some("tool_use")), FinishReason::ToolCalls);
    }

    #[test]
    fn events_decode_by_name_or_type() {
        assert!(matches!(
            decode_event("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#).unwrap(),
            Event::Text(t) if t == "x"
        ));
        assert!(matches!(
            decode_event("", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"y"}}"#).unwrap(),
            Event::Text(t) if t == "y"
        ));
        assert!(matches!(
            decode_event("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\""}}"#).unwrap(),
            Event::Ignored
        ));
        assert!(matches!(
            decode_event("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#).unwrap(),
            Event::Ignored
        ));
        assert!(matches!(
            decode_event("ping", r#"{"type": "ping"}"#).unwrap(),
            Event::Ignored
        ));
        assert!(matches!(
            decode_event("brand_new_event", r#"{"type":"brand_new_event","x":1}"#).unwrap(),
            Event::Ignored
        ));
        let Event::MessageDelta { stop_reason, usage } = decode_event(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        )
        .unwrap() else {
            panic!("not a message delta");
        };
        assert_eq!(stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(usage.unwrap().output_tokens, Some(15));
        let Event::Error(hint) = decode_event(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap() else {
            panic!("not an error");
        };
        assert_eq!(hint.error_type.as_deref(), Some("overloaded_error"));
        assert_eq!(
            decode_event("message_start", r#"{"type":"message_start"}"#)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidResponse
        );
        assert_eq!(
            decode_event("ping", "{nope").unwrap_err().kind(),
            ErrorKind::InvalidResponse
        );
    }

    #[test]
    fn model_pages_parse() {
        let page = parse_models(
            br#"{"data":[{"type":"model","id":"claude-a","display_name":"A","created_at":"2025-01-01T00:00:00Z"}],"has_more":true,"first_id":"claude-a","last_id":"claude-a"}"#,
        )
        .unwrap();
        assert!(page.has_more);
        assert_eq!(page.last_id.as_deref(), Some("claude-a"));
        let models: Vec<_> = page.models().collect();
        assert_eq!(models[0].id, "claude-a");
        assert_eq!(
            parse_models(b"{}").unwrap_err().kind(),
            ErrorKind::InvalidResponse
        );
    }

    #[test]
    fn error_hints() {
        let hint = error_hint_from_body(
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"request_id":"req_1"}"#,
        );
        assert_eq!(hint.error_type.as_deref(), Some("rate_limit_error"));
        assert_eq!(hint.message.as_deref(), Some("slow down"));
        let gateway = error_hint_from_body(r#"{"error":"bad gateway"}"#);
        assert_eq!(gateway.message.as_deref(), Some("bad gateway"));
        assert_eq!(error_hint_from_body("<html>"), ErrorHint::default());
    }
}
