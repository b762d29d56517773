//! What the three dialects share: the parsed request, the answer to render, the errors, and
//! the segment builder that coalesces frames sent at the same moment.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

/// Which wire format a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Ollama,
    Anthropic,
}

/// Which inference endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/v1/chat/completions`, `/api/chat`, `/v1/messages`.
    Chat,
    /// `/api/generate`.
    Generate,
}

/// An inference request reduced to what the mock needs.
#[derive(Debug)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    pub(crate) prompt_chars: usize,
    pub(crate) last_user: String,
    pub(crate) max_tokens: Option<u64>,
}

/// An embedding request.
#[derive(Debug)]
pub(crate) struct EmbedRequest {
    pub(crate) model: String,
    pub(crate) inputs: Vec<String>,
    /// OpenAI `encoding_format: "base64"`.
    pub(crate) base64: bool,
}

/// Why a request fails; each dialect renders it in its own error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// 400 with a message naming the bad field.
    InvalidRequest(String),
    /// 401.
    Unauthorized(String),
    /// 404 for a model name.
    ModelNotFound(String),
    /// 404 for a path.
    RouteNotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 413.
    PayloadTooLarge,
    /// 400 context length exceeded.
    Context { tokens: u64, window: Option<u64> },
    /// 429 with retry-after headers.
    RateLimited,
    /// 429 insufficient quota (no retry-after).
    Quota,
    /// Any injected status.
    Status(u16),
}

impl ApiError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest(_) | Self::Context { .. } => 400,
            Self::Unauthorized(_) => 401,
            Self::ModelNotFound(_) | Self::RouteNotFound(_) => 404,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge => 413,
            Self::RateLimited | Self::Quota => 429,
            Self::Status(status) => *status,
        }
    }

    /// A human message for the generic cases (dialects override the ones they word differently).
    pub(crate) fn message(&self) -> String {
        match self {
            Self::InvalidRequest(msg) | Self::Unauthorized(msg) => msg.clone(),
            Self::ModelNotFound(model) => format!("model \"{model}\" not found"),
            Self::RouteNotFound(path) => format!("no route for {path}"),
            Self::MethodNotAllowed => "method not allowed".into(),
            Self::PayloadTooLarge => "request body too large".into(),
            Self::Context { tokens, window } => match window {
                Some(window) => format!(
                    "this model's maximum context length is {window} tokens, however you requested {tokens} tokens"
                ),
                None => format!("context length exceeded: the prompt has {tokens} tokens"),
            },
            Self::RateLimited => "rate limit reached, please try again in 1s".into(),
            Self::Quota => {
                "You exceeded your current quota, please check your plan and billing details".into()
            }
            Self::Status(status) => status_text(*status).into(),
        }
    }
}

/// The message an injected status carries.
pub(crate) fn status_text(status: u16) -> &'static str {
    match status {
        400 => "bad request (injected by the mock)",
        401 => "invalid authentication (injected by the mock)",
        402 => "payment required (injected by the mock)",
        403 => "permission denied (injected by the mock)",
        404 => "not found (injected by the mock)",
        408 => "request timeout (injected by the mock)",
        409 => "conflict (injected by the mock)",
        413 => "request too large (injected by the mock)",
        422 => "unprocessable entity (injected by the mock)",
        429 => "rate limited (injected by the mock)",
        500 => "the server had an error while processing your request (injected by the mock)",
        502 => "bad gateway (injected by the mock)",
        503 => "the server is overloaded or not ready yet (injected by the mock)",
        504 => "gateway timeout (injected by the mock)",
        529 => "overloaded (injected by the mock)",
        _ => "error injected by the mock",
    }
}

/// Why the answer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    /// `max_tokens` cut it.
    Length,
}

/// How a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// With the dialect's end marker.
    Complete,
    /// After two content chunks, with an in-stream error.
    Midstream,
    /// After two content chunks, without the end marker.
    Truncate,
}

/// Content chunks sent before a mid-stream error or a truncation.
pub(crate) const CHUNKS_BEFORE_FAULT: usize = 2;

/// Everything needed to render a successful (or deliberately broken) answer.
#[derive(Debug)]
pub(crate) struct Answer<'a> {
    pub(crate) id: u64,
    pub(crate) model: &'a str,
    pub(crate) created: u64,
    pub(crate) pieces: &'a [String],
    pub(crate) prompt_tokens: u64,
    pub(crate) finish: Finish,
    pub(crate) include_usage: bool,
    pub(crate) end: StreamEnd,
    pub(crate) endpoint: Endpoint,
    pub(crate) latency: Duration,
    pub(crate) ttft: Duration,
    pub(crate) chunk_delay: Duration,
}

impl Answer<'_> {
    pub(crate) fn completion_tokens(&self) -> u64 {
        self.pieces.len() as u64
    }

    pub(crate) fn text(&self) -> String {
        self.pieces.concat()
    }

    /// The content pieces a stream sends (two when it breaks on purpose).
    pub(crate) fn streamed_pieces(&self) -> &[String] {
        match self.end {
            StreamEnd::Complete => self.pieces,
            StreamEnd::Midstream | StreamEnd::Truncate => {
                &self.pieces[..self.pieces.len().min(CHUNKS_BEFORE_FAULT)]
            }
        }
    }

    /// The delay before content piece `index`.
    pub(crate) fn delay_before(&self, index: usize) -> Duration {
        if index == 0 {
            self.ttft
        } else {
            self.chunk_delay
        }
    }
}

/// Frames grouped into segments: a frame with no delay joins the current segment, one with a
/// delay starts a new segment, so a stream without delays is written in one go.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    done: Vec<(Duration, Bytes)>,
    delay: Duration,
    current: BytesMut,
}

impl Segments {
    /// The buffer to write the next frame into, sent `delay` after the previous one.
    pub(crate) fn frame(&mut self, delay: Duration) -> &mut BytesMut {
        if !delay.is_zero() {
            self.flush();
            self.delay = delay;
        }
        &mut self.current
    }

    fn flush(&mut self) {
        if !self.current.is_empty() || !self.delay.is_zero() {
            let bytes = self.current.split().freeze();
            self.done.push((std::mem::take(&mut self.delay), bytes));
        }
    }

    pub(crate) fn finish(mut self) -> Vec<(Duration, Bytes)> {
        self.flush();
        self.done
    }
}

/// Writes `value` as JSON.
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(buf: &mut BytesMut, value: &T) {
    // Serializing plain structs and strings into memory cannot fail.
    let _ = serde_json::to_writer(buf.writer(), value);
}

/// Renders `value` as JSON bytes.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    write_json(&mut buf, value);
    buf.freeze()
}

/// Message content: a string or a list of parts (only `text` parts count).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One content part; anything but its text is ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Part {
    #[serde(default)]
    pub(crate) text: Option<String>,
}

impl Content {
    pub(crate) fn char_count(&self) -> usize {
        match self {
            Self::Text(text) => text.chars().count(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .map(|t| t.chars().count())
                .sum(),
        }
    }

    pub(crate) fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Parts(parts) => parts.into_iter().filter_map(|p| p.text).collect(),
        }
    }
}

/// Embedding input: one string or many (OpenAI also allows token arrays, which count as text
/// of their numbers).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum EmbedInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl EmbedInput {
    pub(crate) fn into_texts(self) -> Vec<String> {
        let join = |tokens: Vec<u32>| {
            tokens
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
            Self::Tokens(tokens) => vec![join(tokens)],
            Self::TokenLists(lists) => lists.into_iter().map(join).collect(),
        }
    }
}

/// Parses a JSON body into `T`, as a 400 naming the problem on failure.
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_coalesce_frames_without_delay() {
        let mut segments = Segments::default();
        segments.frame(Duration::ZERO).put_slice(b"a");
        segments.frame(Duration::ZERO).put_slice(b"b");
        segments.frame(Duration::from_millis(5)).put_slice(b"c");
        segments.frame(Duration::ZERO).put_slice(b"d");
        segments.frame(Duration::from_millis(7)).put_slice(b"e");
        assert_eq!(
            segments.finish(),
            [
                (Duration::ZERO, Bytes::from_static(b"ab")),
                (Duration::from_millis(5), Bytes::from_static(b"cd")),
                (Duration::from_millis(7), Bytes::from_static(b"e")),
            ]
        );
        assert!(Segments::default().finish().is_empty());
    }

    #[test]
    fn content_counts_text_of_strings_and_parts() {
        let text: Content = serde_json::from_str(r#""héllo""#).unwrap();
        assert_eq!(text.char_count(), 5);
        let parts: Content = serde_json::from_str(
            r#"[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"cd"}]"#,
        )
        .unwrap();
        assert_eq!(parts.char_count(), 4);
        assert_eq!(parts.into_text(), "abcd");
    }

    #[test]
    fn embed_input_accepts_every_form() {
        let texts = |json: &str| {
            serde_json::from_str::<EmbedInput>(json)
                .unwrap()
                .into_texts()
        };
        assert_eq!(texts(r#""a""#), ["a"]);
        assert_eq!(texts(r#"["a","b"]"#), ["a", "b"]);
        assert_eq!(texts("[1,2]"), ["1 2"]);
        assert_eq!(texts("[[1],[2,3]]"), ["1", "2 3"]);
        assert!(serde_json::from_str::<EmbedInput>("{}").is_err());
    }
}
