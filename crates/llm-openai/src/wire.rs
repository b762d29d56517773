//! The OpenAI Chat Completions wire format: request bodies and response parsing.

use quorum_llm::{
    ChatRequest, EmbeddingRequest, ErrorHint, FinishReason, LlmError, Message, ModelInfo, Usage,
};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};

/// The JSON body of `POST chat/completions`, serialized straight from the request (no
/// intermediate `Value` tree).
///
/// `extra` options never override a field this function sets; an extra `stream_options` is
/// dropped from non-streamed bodies.
pub(crate) fn chat_body(request: &ChatRequest, stream: bool, stream_usage: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        256 + request
            .messages
            .iter()
            .map(|m| m.content.len() + 32)
            .sum::<usize>(),
    );
    // Serializing these types cannot fail: every map key is a string.
    let _ = serde_json::to_writer(
        &mut out,
        &ChatBody {
            request,
            stream,
            stream_usage,
        },
    );
    out
}

struct ChatBody<'a> {
    request: &'a ChatRequest,
    stream: bool,
    stream_usage: bool,
}

impl ChatBody<'_> {
    /// Whether this body sets `key` itself (an extra of that name is then left out).
    fn sets(&self, key: &str) -> bool {
        let r = self.request;
        match key {
            "model" | "messages" | "stream" => true,
            "temperature" => r.temperature.is_some(),
            "max_tokens" => r.max_tokens.is_some(),
            "stop" => !r.stop.is_empty(),
            "seed" => r.seed.is_some(),
            // Set when streaming with usage; never sent without streaming.
            "stream_options" => !self.stream || self.stream_usage,
            _ => false,
        }
    }
}

impl Serialize for ChatBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.request;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in &r.extra {
            if !self.sets(key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("model", &r.model)?;
        map.serialize_entry(
            "messages",
            &Messages {
                system: r.system.as_deref(),
                messages: &r.messages,
            },
        )?;
        if let Some(t) = r.temperature {
            // Through f64 via the decimal text, so 0.7f32 is sent as 0.7, not 0.699999988079071.
            let t = t.to_string().parse::<f64>().unwrap_or(f64::from(t));
            map.serialize_entry("temperature", &t)?;
        }
        if let Some(max) = r.max_tokens {
            map.serialize_entry("max_tokens", &max)?;
        }
        if !r.stop.is_empty() {
            map.serialize_entry("stop", &r.stop)?;
        }
        if let Some(seed) = r.seed {
            map.serialize_entry("seed", &seed)?;
        }
        map.serialize_entry("stream", &self.stream)?;
        if self.stream && self.stream_usage {
            map.serialize_entry(
                "stream_options",
                &IncludeUsage {
                    include_usage: true,
                },
            )?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct IncludeUsage {
    include_usage: bool,
}

/// The system prompt (if any) followed by the conversation.
struct Messages<'a> {
    system: Option<&'a str>,
    messages: &'a [Message],
}

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(
            self.messages.len() + usize::from(self.system.is_some()),
        ))?;
        if let Some(system) = self.system {
            seq.serialize_element(&WireMessage {
                role: "system",
                content: system,
                name: None,
                tool_call_id: None,
            })?;
        }
        for m in self.messages {
            seq.serialize_element(&WireMessage {
                role: m.role.as_str(),
                content: &m.content,
                name: m.name.as_deref(),
                tool_call_id: m.tool_call_id.as_deref(),
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

/// The JSON body of `POST embeddings`.
pub(crate) fn embeddings_body(request: &EmbeddingRequest) -> Value {
    let mut body = request.extra.clone();
    body.insert("model".into(), Value::from(request.model.as_str()));
    body.insert("input".into(), json!(request.input));
    if let Some(dims) = request.dimensions {
        body.insert("dimensions".into(), json!(dims));
    }
    Value::Object(body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl WireUsage {
    pub(crate) fn to_usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Completion {
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// Present when a router answered 200 with an error body (OpenRouter does).
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    /// vLLM's error bodies say `"object": "error"` (any other value is ignored).
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    pub(crate) choices: Vec<CompletionChoice>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
}

impl Completion {
    /// Whether the body may be an error in one of the shapes [`error_hint`] reads.
    pub(crate) fn may_be_error(&self) -> bool {
        self.error.is_some() || self.object.as_ref().and_then(Value::as_str) == Some("error")
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CompletionChoice {
    #[serde(default)]
    pub(crate) message: Option<CompletionMessage>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CompletionMessage {
    #[serde(default)]
    pub(crate) content: Option<String>,
}

/// One `data:` chunk of a stream.
#[derive(Debug, Deserialize)]
pub(crate) struct Chunk {
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// As in [`Completion`]: an error sent inside the stream.
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    pub(crate) choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
}

impl Chunk {
    /// Whether the chunk may be an error in one of the shapes [`error_hint`] reads.
    pub(crate) fn may_be_error(&self) -> bool {
        self.error.is_some() || self.object.as_ref().and_then(Value::as_str) == Some("error")
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChunkChoice {
    #[serde(default)]
    pub(crate) delta: Option<ChunkDelta>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChunkDelta {
    #[serde(default)]
    pub(crate) content: Option<String>,
}

pub(crate) fn finish_reason(reason: Option<&str>) -> FinishReason {
    reason.map_or(FinishReason::Stop, FinishReason::from_provider)
}

#[derive(Debug, Deserialize)]
struct ModelList {
    data: Vec<WireModel>,
}

#[derive(Debug, Deserialize)]
struct WireModel {
    id: String,
    #[serde(default)]
    owned_by: Option<String>,
    /// OpenRouter's field.
    #[serde(default)]
    context_length: Option<u64>,
    /// vLLM's field.
    #[serde(default)]
    max_model_len: Option<u64>,
}

pub(crate) fn parse_models(body: &[u8]) -> Result<Vec<ModelInfo>, LlmError> {
    let list: ModelList = serde_json::from_slice(body).map_err(|e| {
        LlmError::invalid_response("models: not an OpenAI model list", Some(Box::new(e)))
    })?;
    Ok(list
        .data
        .into_iter()
        .map(|m| ModelInfo {
            id: m.id,
            owned_by: m.owned_by,
            context_window: m.context_length.or(m.max_model_len),
        })
        .collect())
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingList {
    pub(crate) data: Vec<EmbeddingItem>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingItem {
    #[serde(default)]
    pub(crate) index: Option<usize>,
    pub(crate) embedding: Vec<f32>,
}

/// Reads an error body in any of the shapes OpenAI-compatible servers use:
/// `{"error":{"message","type","code"}}` (OpenAI, OpenRouter with a numeric code, llama.cpp),
/// `{"error":"message"}`, and vLLM's top-level `{"object":"error","message","type","code"}`.
pub(crate) fn error_hint(value: &Value) -> Option<ErrorHint> {
    let object = value.as_object()?;
    match object.get("error") {
        Some(Value::Object(error)) => Some(ErrorHint::from_error_object(error)),
        Some(Value::String(message)) => Some(ErrorHint::message(message.clone())),
        _ if object.get("object").and_then(Value::as_str) == Some("error") => {
            Some(ErrorHint::from_error_object(object))
        }
        _ => None,
    }
}

/// The hint of an error response body (an empty hint when it is not JSON).
pub(crate) fn error_hint_from_body(body: &str) -> ErrorHint {
    ErrorHint::from_json_body(body, error_hint)
}

/// OpenRouter's `GET /auth/key` answer.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyInfo {
    pub(crate) data: KeyData,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeyData {
    #[serde(default)]
    pub(crate) limit: Option<f64>,
    #[serde(default)]
    pub(crate) usage: Option<f64>,
    #[serde(default)]
    pub(crate) limit_remaining: Option<f64>,
    #[serde(default)]
    pub(crate) is_free_tier: Option<bool>,
    #[serde(default)]
    pub(crate) label: Option<String>,
}

#[cfg(test)]
mod tests {
    use quorum_llm::Message;

    use super::*;

    #[test]
    fn chat_body_is_exact() {
        let mut request = ChatRequest::new(
            "gpt-4o-mini",
            vec![
                Message::user("hi"),
                Message::assistant("hello"),
                Message::user("again"),
            ],
        );
        request.system = Some("be brief".into());
        request.temperature = Some(0.7);
        request.max_tokens = Some(100);
        request.stop = vec!["\n\n".into()];
        request.seed = Some(42);
        request.extra.insert("top_p".into(), json!(0.9));
        request.extra.insert("model".into(), json!("must-not-win"));
        request.extra.insert("stream".into(), json!(true));
        let text = String::from_utf8(chat_body(&request, false, true)).unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "again"}
                ],
                "temperature": 0.7,
                "max_tokens": 100,
                "stop": ["\n\n"],
                "seed": 42,
                "top_p": 0.9,
                "stream": false
            })
        );
        // The exact text, not just the value: 0.7 stays 0.7; no key twice.
        assert!(text.contains("\"temperature\":0.7,"), "{text}");
        assert_eq!(text.matches("\"model\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"stream\"").count(), 1, "{text}");
    }

    #[test]
    fn stream_body_asks_for_usage_unless_disabled() {
        let mut request = ChatRequest::user("m", "q");
        let mut tool = Message::new(quorum_llm::Role::Tool, "42");
        tool.tool_call_id = Some("call_1".into());
        tool.name = Some("calc".into());
        request.messages.push(tool);
        let parse = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();
        assert_eq!(
            parse(chat_body(&request, true, true)),
            json!({
                "model": "m",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "tool", "content": "42", "name": "calc", "tool_call_id": "call_1"}
                ],
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
        let without = parse(chat_body(&request, true, false));
        assert!(without.get("stream_options").is_none());
        // A caller's own stream_options go through when the provider does not ask for usage,
        // and never into a non-streamed body; other extras go through unless set here.
        request
            .extra
            .insert("stream_options".into(), json!({"include_usage": false}));
        request.extra.insert("temperature".into(), json!(1.5));
        let own = parse(chat_body(&request, true, false));
        assert_eq!(own["stream_options"], json!({"include_usage": false}));
        assert_eq!(own["temperature"], json!(1.5));
        assert!(
            parse(chat_body(&request, false, false))
                .get("stream_options")
                .is_none()
        );
        request.temperature = Some(0.2);
        assert_eq!(
            parse(chat_body(&request, true, false))["temperature"],
            json!(0.2)
        );
    }

    #[test]
    fn embeddings_body_is_exact() {
        let mut request = EmbeddingRequest::new("emb", vec!["a".into(), "b".into()]);
        request.dimensions = Some(8);
        assert_eq!(
            embeddings_body(&request),
            json!({"model": "emb", "input": ["a", "b"], "dimensions": 8})
        );
    }

    #[test]
    fn error_hints_in_every_shape() {
        let openai = error_hint_from_body(
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota","param":null}}"#,
        );
        assert_eq!(openai.code.as_deref(), Some("insufficient_quota"));
        assert_eq!(openai.error_type.as_deref(), Some("insufficient_quota"));
        let openrouter =
            error_hint_from_body(r#"{"error":{"code":402,"message":"Insufficient credits"}}"#);
        assert_eq!(openrouter.code.as_deref(), Some("402"));
        let plain = error_hint_from_body(r#"{"error":"model not loaded"}"#);
        assert_eq!(plain.message.as_deref(), Some("model not loaded"));
        let vllm = error_hint_from_body(
            r#"{"object":"error","message":"maximum context length is 4096","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(
            vllm.message.as_deref(),
            Some("maximum context length is 4096")
        );
        assert_eq!(
            error_hint_from_body("<html>502</html>"),
            ErrorHint::default()
        );
        assert_eq!(error_hint_from_body(r#"{"ok":true}"#), ErrorHint::default());
    }

    #[test]
    fn models_parse_with_optional_fields() {
        let models = parse_models(
            br#"{"object":"list","data":[{"id":"a","object":"model","owned_by":"me"},{"id":"b","context_length":8192}]}"#,
        )
        .unwrap();
        assert_eq!(models[0].owned_by.as_deref(), Some("me"));
        assert_eq!(models[1].context_window, Some(8192));
        assert_eq!(
            parse_models(b"[]").unwrap_err().kind(),
            quorum_llm::ErrorKind::InvalidResponse
        );
    }
}
