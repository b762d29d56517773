//! Requests, responses, stream items, models and embeddings: the provider-neutral data.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The server's rate-limit state from the response headers, when it sent any (boxed: it
    /// is rare next to the other fields, and stream items stay small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Box<RateLimitInfo>>,
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
    /// The server's rate-limit state from the response headers (read when the stream started),
    /// when it sent any (boxed so that every [`StreamItem`] stays small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Box<RateLimitInfo>>,
}

/// The server's rate-limit state, read from response headers (successful or not).
///
/// OpenAI-style names (`x-ratelimit-remaining-requests`, `x-ratelimit-remaining-tokens`,
/// `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens`, resets like `"1s"`, `"6m0s"`,
/// `"20ms"`, `"1m30.5s"` or plain seconds) and Anthropic's (`anthropic-ratelimit-requests-remaining`,
/// `anthropic-ratelimit-tokens-remaining`, resets `anthropic-ratelimit-requests-reset` /
/// `anthropic-ratelimit-tokens-reset` as RFC 3339 timestamps, turned into the time from now).
/// Unparsable values are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitInfo {
    /// Requests left in the current window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_requests: Option<u64>,
    /// When the request window resets, from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_requests: Option<Duration>,
    /// Tokens left in the current window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_tokens: Option<u64>,
    /// When the token window resets, from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_tokens: Option<Duration>,
}

impl RateLimitInfo {
    /// Reads the rate-limit headers; `None` when none of them is present and parsable.
    #[must_use]
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        // Most answers carry none: one pass over the names instead of eight lookups.
        let any = headers.keys().any(|name| {
            let name = name.as_str();
            name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-")
        });
        if !any {
            return None;
        }
        Self::from_lookup(
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            SystemTime::now(),
        )
    }

    /// Reads the rate-limit headers through `get` (lowercase names), resets relative to `now`.
    pub(crate) fn from_lookup<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
        now: SystemTime,
    ) -> Option<Self> {
        let count = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|name| get(name).and_then(|v| v.trim().parse::<u64>().ok()))
        };
        let reset = |openai: &str, anthropic: &str| {
            get(openai).and_then(parse_reset).or_else(|| {
                get(anthropic)
                    .and_then(parse_rfc3339)
                    .and_then(|at| at.duration_since(now).ok())
            })
        };
        let info = RateLimitInfo {
            remaining_requests: count([
                "x-ratelimit-remaining-requests",
                "anthropic-ratelimit-requests-remaining",
            ]),
            reset_requests: reset(
                "x-ratelimit-reset-requests",
                "anthropic-ratelimit-requests-reset",
            ),
            remaining_tokens: count([
                "x-ratelimit-remaining-tokens",
                "anthropic-ratelimit-tokens-remaining",
            ]),
            reset_tokens: reset(
                "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-tokens-reset",
            ),
        };
        (info != RateLimitInfo::default()).then_some(info)
    }
}

/// Parses a rate-limit reset value: Go-style durations (`"1s"`, `"6m0s"`, `"59.5ms"`,
/// `"1m30.5s"`, `"1h2m"`) or plain (fractional) seconds. Negative or unparsable: `None`.
pub(crate) fn parse_reset(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0.0_f64;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:30Z`, fractional seconds and `±HH:MM` offsets
/// allowed). Unparsable or before 1970: `None`.
pub(crate) fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    let b = value.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = value.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &value[19..];
    let mut nanos = 0_u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if len == 0 {
            return None;
        }
        let digits = &frac[..len.min(9)];
        nanos = digits.parse::<u32>().ok()? * 10_u32.pow(9 - digits.len() as u32);
        rest = &frac[len..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
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

    fn lookup(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<&'static str> {
        let pairs = pairs.to_vec();
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn rate_limit_info_reads_openai_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-ratelimit-remaining-requests", "59".parse().unwrap());
        headers.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
        headers.insert("x-ratelimit-remaining-tokens", "149984".parse().unwrap());
        headers.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
        headers.insert("x-request-id", "abc".parse().unwrap());
        assert_eq!(
            RateLimitInfo::from_headers(&headers),
            Some(RateLimitInfo {
                remaining_requests: Some(59),
                reset_requests: Some(Duration::from_secs(1)),
                remaining_tokens: Some(149_984),
                reset_tokens: Some(Duration::from_secs(360)),
            })
        );
    }

    #[test]
    fn rate_limit_info_absent_or_garbage_is_none() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(RateLimitInfo::from_headers(&headers), None);
        headers.insert("content-type", "application/json".parse().unwrap());
        assert_eq!(RateLimitInfo::from_headers(&headers), None);
        headers.insert("x-ratelimit-remaining-requests", "lots".parse().unwrap());
        headers.insert("x-ratelimit-reset-requests", "soon".parse().unwrap());
        headers.insert(
            "anthropic-ratelimit-tokens-reset",
            "tomorrow".parse().unwrap(),
        );
        assert_eq!(RateLimitInfo::from_headers(&headers), None);
        // Garbage in one header does not hide a good one.
        headers.insert("x-ratelimit-remaining-tokens", " 12 ".parse().unwrap());
        assert_eq!(
            RateLimitInfo::from_headers(&headers),
            Some(RateLimitInfo {
                remaining_tokens: Some(12),
                ..RateLimitInfo::default()
            })
        );
    }

    #[test]
    fn rate_limit_info_reads_anthropic_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800); // 2024-05-01T12:00:00Z
        let info = RateLimitInfo::from_lookup(
            lookup(&[
                ("anthropic-ratelimit-requests-remaining", "4"),
                ("anthropic-ratelimit-requests-reset", "2024-05-01T12:00:30Z"),
                ("anthropic-ratelimit-tokens-remaining", "7000"),
                (
                    "anthropic-ratelimit-tokens-reset",
                    "2024-05-01T14:01:00.5+02:00",
                ),
            ]),
            now,
        );
        assert_eq!(
            info,
            Some(RateLimitInfo {
                remaining_requests: Some(4),
                reset_requests: Some(Duration::from_secs(30)),
                remaining_tokens: Some(7000),
                reset_tokens: Some(Duration::from_millis(60_500)),
            })
        );
        // A reset in the past, or unparsable, is ignored.
        let info = RateLimitInfo::from_lookup(
            lookup(&[
                ("anthropic-ratelimit-requests-remaining", "4"),
                ("anthropic-ratelimit-requests-reset", "2024-05-01T11:59:00Z"),
                ("anthropic-ratelimit-tokens-reset", "2024-13-01T00:00:00Z"),
            ]),
            now,
        );
        assert_eq!(
            info,
            Some(RateLimitInfo {
                remaining_requests: Some(4),
                ..RateLimitInfo::default()
            })
        );
    }

    #[test]
    fn reset_values_parse() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("1s", Some(ms(1000))),
            ("6m0s", Some(ms(360_000))),
            ("20ms", Some(ms(20))),
            ("59.5ms", Some(Duration::from_micros(59_500))),
            ("1m30.5s", Some(ms(90_500))),
            ("1h2m", Some(ms(3_720_000))),
            ("2.5", Some(ms(2500))),
            (" 3 ", Some(ms(3000))),
            ("", None),
            ("soon", None),
            ("-1", None),
            ("5x", None),
            ("s", None),
            ("1..2s", None),
        ] {
            assert_eq!(parse_reset(text), want, "{text:?}");
        }
    }

    #[test]
    fn rfc3339_parses_and_rejects() {
        let at = |s| parse_rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(at("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(at("2024-05-01T12:00:00.25Z"), Some(1_714_564_800.25));
        assert_eq!(at("2024-05-01T13:00:00+01:00"), Some(1_714_564_800.0));
        assert_eq!(at("2024-05-01T11:00:00-01:00"), Some(1_714_564_800.0));
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+0100",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2024/05/01T12:00:00Z",
            "+024-05-01T12:00:00Z",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
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
