//! The Ollama native wire format: request bodies and response parsing.

use std::time::Duration;

use quorum_llm::{
    ChatRequest, EmbeddingRequest, ErrorHint, FinishReason, LlmError, ModelInfo, ProviderTimings,
    Role, Usage,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::{KeepAlive, OllamaConfig};

/// The `extra` key that picks the endpoint of one request: `"chat"` or `"generate"`. It is not
/// sent.
pub const ENDPOINT_KEY: &str = "endpoint";

/// `extra` keys that are top-level fields of `/api/chat` and `/api/generate`; every other
/// `extra` key is a model option and goes into `options`.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "format",
    "keep_alive",
    "think",
    "tools",
    "raw",
    "template",
    "context",
    "images",
    "suffix",
    "truncate",
    "shift",
    "logprobs",
    "top_logprobs",
];

/// `extra` keys this crate sets from the request itself: ignored in `extra`.
const RESERVED_KEYS: &[&str] = &["model", "messages", "prompt", "system", "stream", "input"];

/// `extra` keys that are top-level fields of `/api/embed`.
const EMBED_TOP_LEVEL_KEYS: &[&str] = &["keep_alive", "truncate"];

/// Which inference endpoint a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST api/chat`: messages.
    Chat,
    /// `POST api/generate`: a prompt and a system prompt.
    Generate,
}

impl Endpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "api/chat",
            Endpoint::Generate => "api/generate",
        }
    }
}

/// The endpoint of a request: `extra.endpoint` if given, else the config's `generate_models`.
pub(crate) fn select_endpoint(
    request: &ChatRequest,
    config: &OllamaConfig,
) -> Result<Endpoint, LlmError> {
    match request.extra.get(ENDPOINT_KEY) {
        None | Some(Value::Null) => Ok(if config.uses_generate(&request.model) {
            Endpoint::Generate
        } else {
            Endpoint::Chat
        }),
        Some(Value::String(s)) if s == "chat" => Ok(Endpoint::Chat),
        Some(Value::String(s)) if s == "generate" => Ok(Endpoint::Generate),
        Some(other) => Err(LlmError::InvalidRequest {
            message: format!(
                "extra.{ENDPOINT_KEY}: expected \"chat\" or \"generate\", got {other}"
            ),
        }),
    }
}

/// A temperature as the decimal the caller wrote (0.7f32 is sent as 0.7, not 0.699999988...).
fn decimal(value: f32) -> Value {
    let wide = value.to_string().parse::<f64>().unwrap_or(f64::from(value));
    json!(wide)
}

/// A JSON object.
type Object = Map<String, Value>;

/// Splits `extra` into top-level fields and model options (`extra.options` merged in).
fn split_extra(extra: &Object, top_level: &[&str]) -> Result<(Object, Object), LlmError> {
    let mut body = Map::new();
    let mut options = Map::new();
    for (key, value) in extra {
        if key == ENDPOINT_KEY || RESERVED_KEYS.contains(&key.as_str()) {
            continue;
        }
        if key == "options" {
            match value {
                Value::Object(map) => options.extend(map.clone()),
                Value::Null => {}
                other => {
                    return Err(LlmError::InvalidRequest {
                        message: format!("extra.options: expected an object, got {other}"),
                    });
                }
            }
        } else if top_level.contains(&key.as_str()) {
            body.insert(key.clone(), value.clone());
        } else {
            options.insert(key.clone(), value.clone());
        }
    }
    Ok((body, options))
}

/// The JSON body of `POST api/chat` or `POST api/generate`.
///
/// `extra` goes first (top-level keys at the top, the rest into `options`), so it never
/// overrides a field set from the request; `extra` keys naming fields this crate sets
/// (`model`, `messages`, `prompt`, `system`, `stream`) are ignored. The configured
/// `keep_alive` applies unless `extra` has one.
pub(crate) fn chat_body(
    request: &ChatRequest,
    endpoint: Endpoint,
    stream: bool,
    keep_alive: Option<KeepAlive>,
) -> Result<Value, LlmError> {
    let (mut body, mut options) = split_extra(&request.extra, TOP_LEVEL_KEYS)?;
    if let Some(t) = request.temperature {
        options.insert("temperature".into(), decimal(t));
    }
    if let Some(seed) = request.seed {
        options.insert("seed".into(), json!(seed));
    }
    if let Some(max) = request.max_tokens {
        options.insert("num_predict".into(), json!(max));
    }
    if !request.stop.is_empty() {
        options.insert("stop".into(), json!(request.stop));
    }
    body.insert("model".into(), Value::from(request.model.as_str()));
    match endpoint {
        Endpoint::Chat => {
            body.insert("messages".into(), Value::Array(chat_messages(request)));
        }
        Endpoint::Generate => {
            let (system, prompt) = generate_prompt(request);
            body.insert("prompt".into(), Value::from(prompt));
            if let Some(system) = system {
                body.insert("system".into(), Value::from(system));
            }
        }
    }
    body.insert("stream".into(), Value::Bool(stream));
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    if let Some(keep_alive) = keep_alive {
        body.entry("keep_alive")
            .or_insert_with(|| keep_alive.to_wire());
    }
    Ok(Value::Object(body))
}

fn chat_messages(request: &ChatRequest) -> Vec<Value> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        let mut m = Map::new();
        m.insert("role".into(), Value::from(message.role.as_str()));
        m.insert("content".into(), Value::from(message.content.as_str()));
        if message.role == Role::Tool
            && let Some(name) = &message.name
        {
            m.insert("tool_name".into(), Value::from(name.as_str()));
        }
        messages.push(Value::Object(m));
    }
    messages
}

/// `/api/generate` takes one prompt: the system prompt and system messages become `system`; a
/// single user message is the prompt as is; a longer conversation becomes a transcript
/// (`User: ...`, `Assistant: ...`) ending with `Assistant:`.
fn generate_prompt(request: &ChatRequest) -> (Option<String>, String) {
    let mut system: Vec<&str> = request.system.iter().map(String::as_str).collect();
    let mut turns = Vec::new();
    for message in &request.messages {
        if message.role == Role::System {
            system.push(&message.content);
        } else {
            turns.push(message);
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let prompt = match turns.as_slice() {
        [] => String::new(),
        [only] if only.role == Role::User => only.content.clone(),
        many => {
            let mut parts: Vec<String> = many
                .iter()
                .map(|m| {
                    let label = match m.role {
                        Role::Assistant => "Assistant",
                        Role::Tool => "Tool",
                        Role::User | Role::System => "User",
                    };
                    format!("{label}: {}", m.content)
                })
                .collect();
            if many.last().is_some_and(|m| m.role != Role::Assistant) {
                parts.push("Assistant:".to_owned());
            }
            parts.join("\n\n")
        }
    };
    (system, prompt)
}

/// The JSON body of `POST api/embed`.
pub(crate) fn embed_body(
    request: &EmbeddingRequest,
    keep_alive: Option<KeepAlive>,
) -> Result<Value, LlmError> {
    let (mut body, options) = split_extra(&request.extra, EMBED_TOP_LEVEL_KEYS)?;
    body.insert("model".into(), Value::from(request.model.as_str()));
    body.insert("input".into(), json!(request.input));
    if let Some(dims) = request.dimensions {
        body.insert("dimensions".into(), json!(dims));
    }
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    if let Some(keep_alive) = keep_alive {
        body.entry("keep_alive")
            .or_insert_with(|| keep_alive.to_wire());
    }
    Ok(Value::Object(body))
}

/// One object of an `/api/chat` or `/api/generate` answer (a stream line, or the whole
/// non-streamed answer).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Chunk {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    message: Option<ChunkMessage>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    pub(crate) done: bool,
    #[serde(default)]
    pub(crate) done_reason: Option<String>,
    #[serde(default)]
    total_duration: Option<u64>,
    #[serde(default)]
    load_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_duration: Option<u64>,
    #[serde(default)]
    eval_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    content: Option<String>,
}

impl Chunk {
    /// The generated text of this object (`message.content` or `response`).
    pub(crate) fn take_text(&mut self) -> String {
        self.message
            .take()
            .and_then(|m| m.content)
            .or_else(|| self.response.take())
            .unwrap_or_default()
    }

    /// Token counts, when either was reported.
    pub(crate) fn usage(&self) -> Option<Usage> {
        if self.prompt_eval_count.is_none() && self.eval_count.is_none() {
            return None;
        }
        Some(Usage {
            prompt_tokens: self.prompt_eval_count.unwrap_or(0),
            completion_tokens: self.eval_count.unwrap_or(0),
        })
    }

    /// The `*_duration` fields (nanoseconds).
    pub(crate) fn timings(&self) -> ProviderTimings {
        ProviderTimings {
            total: self.total_duration.map(Duration::from_nanos),
            load: self.load_duration.map(Duration::from_nanos),
            prompt_eval: self.prompt_eval_duration.map(Duration::from_nanos),
            eval: self.eval_duration.map(Duration::from_nanos),
        }
    }

    pub(crate) fn finish_reason(&self) -> FinishReason {
        self.done_reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .map_or(FinishReason::Stop, FinishReason::from_provider)
    }
}

#[derive(Debug, Deserialize)]
struct Tags {
    models: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

/// Parses `GET api/tags`.
pub(crate) fn parse_tags(body: &[u8]) -> Result<Vec<ModelInfo>, LlmError> {
    let tags: Tags = serde_json::from_slice(body).map_err(|e| {
        LlmError::invalid_response("api/tags: not an Ollama model list", Some(Box::new(e)))
    })?;
    Ok(tags
        .models
        .into_iter()
        .filter_map(|t| t.name.or(t.model))
        .map(ModelInfo::new)
        .collect())
}

/// The answer of `POST api/embed`.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbedAnswer {
    pub(crate) embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) prompt_eval_count: Option<u64>,
}

/// Reads an Ollama error: `{"error":"message"}` (and, leniently, `{"error":{"message",...}}`).
pub(crate) fn error_hint(value: &Value) -> Option<ErrorHint> {
    match value.as_object()?.get("error")? {
        Value::String(message) => Some(ErrorHint::message(message.clone())),
        Value::Object(error) => Some(ErrorHint::from_error_object(error)),
        _ => None,
    }
}

/// The hint of an error response body (an empty hint when it is not Ollama's JSON).
pub(crate) fn error_hint_from_body(body: &str) -> ErrorHint {
    ErrorHint::from_json_body(body, error_hint)
}

#[cfg(test)]
mod tests {
    use quorum_config::Duration as ConfigDuration;
    use quorum_llm::{ErrorKind, Message};

    use super::*;
    use crate::config::ModelPattern;

    fn full_request() -> ChatRequest {
        let mut request = ChatRequest::new(
            "llama3.2:1b",
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
        request.extra.insert("top_k".into(), json!(20));
        request.extra.insert("format".into(), json!("json"));
        request
            .extra
            .insert("options".into(), json!({"num_ctx": 8192, "seed": 1}));
        request.extra.insert("model".into(), json!("must-not-win"));
        request.extra.insert("stream".into(), json!(true));
        request
    }

    #[test]
    fn chat_body_is_exact() {
        let keep = Some(KeepAlive::For(ConfigDuration::from_secs(600)));
        let body = chat_body(&full_request(), Endpoint::Chat, false, keep).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "llama3.2:1b",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "again"}
                ],
                "format": "json",
                "stream": false,
                "options": {
                    "temperature": 0.7,
                    "seed": 42,
                    "num_predict": 100,
                    "stop": ["\n\n"],
                    "top_k": 20,
                    "num_ctx": 8192
                },
                "keep_alive": 600
            })
        );
        assert!(
            serde_json::to_string(&body)
                .unwrap()
                .contains("\"temperature\":0.7,")
        );
    }

    #[test]
    fn minimal_bodies_have_no_options() {
        let request = ChatRequest::user("m", "q");
        assert_eq!(
            chat_body(&request, Endpoint::Chat, true, None).unwrap(),
            json!({"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": true})
        );
        assert_eq!(
            chat_body(&request, Endpoint::Generate, true, None).unwrap(),
            json!({"model": "m", "prompt": "q", "stream": true})
        );
    }

    #[test]
    fn request_keep_alive_overrides_the_config() {
        let mut request = ChatRequest::user("m", "q");
        request.extra.insert("keep_alive".into(), json!("1h"));
        let body = chat_body(&request, Endpoint::Chat, true, Some(KeepAlive::Forever)).unwrap();
        assert_eq!(body["keep_alive"], json!("1h"));
        let body = chat_body(
            &ChatRequest::user("m", "q"),
            Endpoint::Chat,
            true,
            Some(KeepAlive::Forever),
        )
        .unwrap();
        assert_eq!(body["keep_alive"], json!(-1));
    }

    #[test]
    fn generate_body_flattens_the_conversation() {
        let mut request = full_request();
        request.extra.clear();
        request.messages.insert(0, Message::system("no emojis"));
        let body = chat_body(&request, Endpoint::Generate, false, None).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "llama3.2:1b",
                "prompt": "User: hi\n\nAssistant: hello\n\nUser: again\n\nAssistant:",
                "system": "be brief\n\nno emojis",
                "stream": false,
                "options": {"temperature": 0.7, "seed": 42, "num_predict": 100, "stop": ["\n\n"]}
            })
        );
        let empty = ChatRequest::new("m", vec![]);
        assert_eq!(
            chat_body(&empty, Endpoint::Generate, false, None).unwrap()["prompt"],
            json!("")
        );
    }

    #[test]
    fn tool_messages_carry_the_tool_name() {
        let mut tool = Message::new(Role::Tool, "42");
        tool.name = Some("calc".into());
        tool.tool_call_id = Some("call_1".into());
        let request = ChatRequest::new("m", vec![Message::user("q"), tool]);
        let body = chat_body(&request, Endpoint::Chat, false, None).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "tool", "content": "42", "tool_name": "calc"})
        );
    }

    #[test]
    fn endpoint_comes_from_extra_then_the_config() {
        let config = OllamaConfig {
            generate_models: vec![ModelPattern::new("*-base").unwrap()],
            ..OllamaConfig::default()
        };
        let mut request = ChatRequest::user("llama-base", "q");
        assert_eq!(
            select_endpoint(&request, &config).unwrap(),
            Endpoint::Generate
        );
        request.extra.insert(ENDPOINT_KEY.into(), json!("chat"));
        assert_eq!(select_endpoint(&request, &config).unwrap(), Endpoint::Chat);
        let mut other = ChatRequest::user("llama", "q");
        assert_eq!(select_endpoint(&other, &config).unwrap(), Endpoint::Chat);
        other.extra.insert(ENDPOINT_KEY.into(), json!("generate"));
        assert_eq!(
            select_endpoint(&other, &config).unwrap(),
            Endpoint::Generate
        );
        // The selector is never sent.
        let body = chat_body(&other, Endpoint::Generate, false, None).unwrap();
        assert!(body.get(ENDPOINT_KEY).is_none() && body.get("options").is_none());
        other
            .extra
            .insert(ENDPOINT_KEY.into(), json!("completions"));
        let err = select_endpoint(&other, &config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert_eq!(
            err.to_string(),
            "invalid request: extra.endpoint: expected \"chat\" or \"generate\", got \"completions\""
        );
    }

    #[test]
    fn bad_extra_options_are_rejected() {
        let mut request = ChatRequest::user("m", "q");
        request.extra.insert("options".into(), json!([1]));
        let err = chat_body(&request, Endpoint::Chat, false, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request: extra.options: expected an object, got [1]"
        );
    }

    #[test]
    fn embed_body_is_exact() {
        let mut request = EmbeddingRequest::new("nomic", vec!["a".into(), "b".into()]);
        request.dimensions = Some(8);
        request.extra.insert("truncate".into(), json!(false));
        request.extra.insert("num_ctx".into(), json!(512));
        assert_eq!(
            embed_body(&request, Some(KeepAlive::Forever)).unwrap(),
            json!({
                "model": "nomic",
                "input": ["a", "b"],
                "dimensions": 8,
                "truncate": false,
                "options": {"num_ctx": 512},
                "keep_alive": -1
            })
        );
    }

    #[test]
    fn final_object_gives_usage_timings_and_reason() {
        let mut chunk: Chunk = serde_json::from_str(
            r#"{"model":"gemma3:1b","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"x"},"done":true,"done_reason":"length","total_duration":4001000,"load_duration":2000000,"prompt_eval_count":4,"prompt_eval_duration":1000,"eval_count":3,"eval_duration":2000000}"#,
        )
        .unwrap();
        assert!(chunk.done);
        assert_eq!(chunk.take_text(), "x");
        assert_eq!(
            chunk.usage(),
            Some(Usage {
                prompt_tokens: 4,
                completion_tokens: 3
            })
        );
        assert_eq!(chunk.finish_reason(), FinishReason::Length);
        let t = chunk.timings();
        assert_eq!(t.total, Some(Duration::from_nanos(4_001_000)));
        assert_eq!(t.load, Some(Duration::from_millis(2)));
        assert_eq!(t.prompt_eval, Some(Duration::from_micros(1)));
        assert_eq!(t.eval, Some(Duration::from_millis(2)));

        let mut generate: Chunk = serde_json::from_str(r#"{"response":"y","done":false}"#).unwrap();
        assert_eq!(generate.take_text(), "y");
        assert_eq!(generate.usage(), None);
        assert_eq!(generate.finish_reason(), FinishReason::Stop);
        assert_eq!(generate.timings(), ProviderTimings::default());
        // A cached prompt reports no prompt_eval_count.
        let cached: Chunk = serde_json::from_str(r#"{"done":true,"eval_count":2}"#).unwrap();
        assert_eq!(
            cached.usage(),
            Some(Usage {
                prompt_tokens: 0,
                completion_tokens: 2
            })
        );
    }

    #[test]
    fn tags_parse() {
        let models = parse_tags(
            br#"{"models":[{"name":"gemma3:1b","model":"gemma3:1b","size":1},{"model":"only-model"},{"size":2}]}"#,
        )
        .unwrap();
        let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["gemma3:1b", "only-model"]);
        assert_eq!(
            parse_tags(b"{\"data\":[]}").unwrap_err().kind(),
            ErrorKind::InvalidResponse
        );
    }

    #[test]
    fn error_hints() {
        let plain =
            error_hint_from_body(r#"{"error":"model \"x\" not found, try pulling it first"}"#);
        assert_eq!(
            plain.message.as_deref(),
            Some("model \"x\" not found, try pulling it first")
        );
        let object = error_hint_from_body(r#"{"error":{"message":"m","code":500}}"#);
        assert_eq!(object.code.as_deref(), Some("500"));
        assert_eq!(
            error_hint_from_body("404 page not found"),
            ErrorHint::default()
        );
        assert_eq!(
            error_hint_from_body(r#"{"done":true}"#),
            ErrorHint::default()
        );
        assert_eq!(error_hint_from_body(r#"{"error":5}"#), ErrorHint::default());
    }
}
