//! Requests, responses, stream items, models and embeddings: the provider-neutral data.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// The model's earlier turn.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    /// The lowercase wire name (`"system"`, `"user"`, `"assistant"`, `"tool"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// An optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For [`Role::Tool`] messages: the tool call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message with a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            name: None,
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }
}

/// A chat request, independent of any provider's wire format.
///
/// Providers map every field they support and pass [`ChatRequest::extra`] through as-is (for
/// OpenAI-style providers: merged into the request body, never overriding the fields above).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatRequest {
    /// The model to ask, as the provider names it.
    pub model: String,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// A system prompt sent before `messages` (as the dialect expects: a system message, or
    /// Anthropic's `system` field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The most tokens to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stop sequences (empty: none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Seed for deterministic sampling, where supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Provider-specific options passed through unchanged (`top_p`, `response_format`, ...).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Whether the caller wants a stream. Informational (a gateway records what its client
    /// asked for): [`Provider::chat`](crate::Provider::chat) and
    /// [`Provider::chat_stream`](crate::Provider::chat_stream) decide the wire mode themselves.
    pub stream: bool,
}

impl ChatRequest {
    /// A request for `model` with these messages.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            ..ChatRequest::default()
        }
    }

    /// A request with a single user message.
    pub fn user(model: impl Into<String>, text: impl Into<String>) -> Self {
        ChatRequest::new(model, vec![Message::user(text)])
    }

    /// The text of the last user message, if any.
    #[must_use]
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
    }
}

/// Why the model stopped generating.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop sequence (`stop`, `end_turn`, `stop_sequence`).
    #[default]
    Stop,
    /// The token limit was reached (`length`, `max_tokens`).
    Length,
    /// Output was filtered (`content_filter`, `refusal`).
    ContentFilter,
    /// The model asked for tools (`tool_calls`, `tool_use`).
    ToolCalls,
    /// Any other reason, as the provider spelled it.
    Other(String),
}

impl FinishReason {
    /// Maps a provider's reason string (OpenAI, Anthropic and Ollama spellings) to a reason.
    #[must_use]
    pub fn from_provider(reason: &str) -> Self {
        match reason {
            "stop" | "end_turn" | "stop_sequence" | "eos" => FinishReason::Stop,
            "length" | "max_tokens" | "model_length" => FinishReason::Length,
            "content_filter" | "refusal" => FinishReason::ContentFilter,
            "tool_calls" | "tool_use" | "function_call" => FinishReason::ToolCalls,
            other => FinishReason::Other(other.to_owned()),
        }
    }
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    #[must_use]
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Durations the provider itself reported (Ollama's `*_duration` fields), where given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderTimings {
    /// The provider's total time.
    pub total: Option<Duration>,
    /// Time spent loading the model.
    pub load: Option<Duration>,
    /// Time spent evaluating the prompt.
    pub prompt_eval: Option<Duration>,
    /// Time spent generating.
    pub eval: Option<Duration>,
}

/// How long a call took, as measured by the client (tokio clock) and reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// From sending the request to the last byte of the answer.
    pub total: Duration,
    /// From sending the request to the first generated text (streams only).
    pub time_to_first_token: Option<Duration>,
    /// What the provider reported.
    pub provider: ProviderTimings,
}

/// A complete chat answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The generated text.
    pub content: String,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Token counts, when the provider reported them.
    pub usage: Option<Usage>,
    /// Timings.
    pub timings: Timings,
    /// The name of the provider instance that answered (its configured name).
    pub provider: String,
    /// The model that actually answered, as the provider reported it (may differ from the
    /// requested one, e.g. a dated snapshot or an OpenRouter route).
    pub model: String,
}

/// The terminal item of a successful stream: everything known once generation ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamFinal {
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Token counts, when the provider reported them.
    pub usage: Option<Usage>,
    /// Timings (`time_to_first_token` set when any text arrived).
    pub timings: Timings,
    /// The name of the provider instance that answered.
    pub provider: String,
    /// The model that actually answered.
    pub model: String,
}

/// One item of a [`ChatStream`](crate::ChatStream).
///
/// **Invariant:** a stream yields any number of [`StreamItem::Delta`]s and then exactly one
/// terminal item — [`StreamItem::Done`] or an `Err(LlmError)` — after which it ends (`None`). A
/// provider whose wire stream ends without its end marker must yield
/// [`LlmError::StreamTruncated`](crate::LlmError::StreamTruncated) rather than end silently;
/// [`guard_stream`](crate::guard_stream) enforces this for any stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StreamItem {
    /// A piece of generated text, in order (never empty).
    Delta(String),
    /// Generation finished.
    Done(StreamFinal),
}

/// A model a provider offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The id to put in [`ChatRequest::model`].
    pub id: String,
    /// Who owns it, when reported.
    pub owned_by: Option<String>,
    /// Its context window in tokens, when reported.
    pub context_window: Option<u64>,
}

impl ModelInfo {
    /// A model with just an id.
    pub fn new(id: impl Into<String>) -> Self {
        ModelInfo {
            id: id.into(),
            ..ModelInfo::default()
        }
    }
}

/// An embeddings request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddingRequest {
    /// The embedding model.
    pub model: String,
    /// The texts to embed.
    pub input: Vec<String>,
    /// Requested dimensions, where supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Provider-specific options passed through unchanged.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl EmbeddingRequest {
    /// A request to embed these texts with `model`.
    pub fn new(model: impl Into<String>, input: Vec<String>) -> Self {
        EmbeddingRequest {
            model: model.into(),
            input,
            ..EmbeddingRequest::default()
        }
    }
}

/// Embedding vectors, one per input, in input order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// The vectors, `embeddings[i]` for `input[i]`.
    pub embeddings: Vec<Vec<f32>>,
    /// The model that answered.
    pub model: String,
    /// Token counts (`prompt_tokens` only), when reported.
    pub usage: Option<Usage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_map_every_dialect() {
        assert_eq!(FinishReason::from_provider("stop"), FinishReason::Stop);
        assert_eq!(FinishReason::from_provider("end_turn"), FinishReason::Stop);
        assert_eq!(
            FinishReason::from_provider("max_tokens"),
            FinishReason::Length
        );
        assert_eq!(FinishReason::from_provider("length"), FinishReason::Length);
        assert_eq!(
            FinishReason::from_provider("tool_use"),
            FinishReason::ToolCalls
        );
        assert_eq!(
            FinishReason::from_provider("content_filter"),
            FinishReason::ContentFilter
        );
        assert_eq!(
            FinishReason::from_provider("pause_turn"),
            FinishReason::Other("pause_turn".into())
        );
    }

    #[test]
    fn request_round_trips_and_skips_empty_fields() {
        let mut req = ChatRequest::user("m", "hi");
        req.temperature = Some(0.5);
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.5,
                "stream": false
            })
        );
        let back: ChatRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.last_user_message(), Some("hi"));
        assert!(serde_json::from_str::<Message>(r#"{"role":"robot","content":""}"#).is_err());
    }

    #[test]
    fn usage_total_saturates() {
        let u = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: 1,
        };
        assert_eq!(u.total_tokens(), u64::MAX);
    }
}
