//! Anthropic Messages (`/v1/messages`) and models: request parsing and response rendering.

use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

use crate::api::{
    Answer, ApiError, ChatRequest, Content, Finish, Segments, StreamEnd, parse_json, to_json,
    write_json,
};

#[derive(Deserialize)]
struct RawRequest {
    model: Option<String>,
    messages: Option<Vec<RawMessage>>,
    max_tokens: Option<u64>,
    stream: Option<bool>,
    system: Option<Content>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    content: Content,
}

pub(crate) fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let raw: RawRequest = parse_json(body)?;
    let invalid = |message: &str| ApiError::InvalidRequest(message.to_owned());
    let model = match raw.model {
        Some(model) if !model.is_empty() => model,
        _ => return Err(invalid("model: Field required")),
    };
    let max_tokens = raw
        .max_tokens
        .ok_or_else(|| invalid("max_tokens: Field required"))?;
    if max_tokens == 0 {
        return Err(invalid("max_tokens: must be greater than or equal to 1"));
    }
    let messages = raw
        .messages
        .ok_or_else(|| invalid("messages: Field required"))?;
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let mut prompt_chars = raw.system.as_ref().map_or(0, Content::char_count);
    let mut last_user = None;
    for (i, message) in messages.into_iter().enumerate() {
        match message.role.as_str() {
            "user" | "assistant" => {}
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant', got \"{other}\" (a system prompt goes in the top-level `system` field)"
                )));
            }
        }
        prompt_chars += message.content.char_count();
        if message.role == "user" {
            last_user = Some(message.content);
        }
    }
    Ok(ChatRequest {
        model,
        stream: raw.stream.unwrap_or(false),
        include_usage: false,
        prompt_chars,
        last_user: last_user.map(Content::into_text).unwrap_or_default(),
        max_tokens: Some(max_tokens),
    })
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// The error `type` Anthropic uses for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type":..,"message":..}}`.
pub(crate) fn error_body(err: &ApiError) -> Bytes {
    let message = match err {
        ApiError::ModelNotFound(model) => format!("model: {model}"),
        ApiError::Context { tokens, window } => format!(
            "prompt is too long: {tokens} tokens > {} maximum",
            window.unwrap_or(tokens.saturating_sub(1))
        ),
        ApiError::Quota => {
            "insufficient_quota: your credit balance is too low to access the API".to_owned()
        }
        ApiError::RouteNotFound(_) => "Not Found".to_owned(),
        other => other.message(),
    };
    to_json(&ErrorEnvelope {
        kind: "error",
        error: ErrorBody {
            kind: error_type(err.status()),
            message: &message,
        },
    })
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<TextBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: Usage,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
    }
}

fn message_id(id: u64) -> String {
    format!("msg_mock_{id:016x}")
}

pub(crate) fn render_json(answer: &Answer<'_>) -> Bytes {
    let id = message_id(answer.id);
    let text = answer.text();
    to_json(&Message {
        id: &id,
        kind: "message",
        role: "assistant",
        model: answer.model,
        content: vec![TextBlock {
            kind: "text",
            text: &text,
        }],
        stop_reason: Some(stop_reason(answer.finish)),
        stop_sequence: None,
        usage: Usage {
            input_tokens: answer.prompt_tokens,
            output_tokens: answer.completion_tokens(),
        },
    })
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: Message<'a>,
}

/// Named SSE events: `message_start`, `content_block_start`, `ping`, one `content_block_delta`
/// per piece, `content_block_stop`, `message_delta`, `message_stop` (or `error` / nothing for the
/// stream faults).
pub(crate) fn render_stream(answer: &Answer<'_>) -> Vec<(Duration, Bytes)> {
    let id = message_id(answer.id);
    let mut out = Segments::default();
    let buf = out.frame(Duration::ZERO);
    buf.put_slice(b"event: message_start\ndata: ");
    write_json(
        buf,
        &MessageStart {
            kind: "message_start",
            message: Message {
                id: &id,
                kind: "message",
                role: "assistant",
                model: answer.model,
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: answer.prompt_tokens,
                    output_tokens: 1,
                },
            },
        },
    );
    buf.put_slice(b"\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    buf.put_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    for (i, piece) in answer.streamed_pieces().iter().enumerate() {
        let buf = out.frame(answer.delay_before(i));
        buf.put_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
        write_json(buf, piece.as_str());
        buf.put_slice(b"}}\n\n");
    }
    let buf = out.frame(Duration::ZERO);
    match answer.end {
        StreamEnd::Complete => {
            buf.put_slice(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
            buf.put_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
            buf.put_slice(stop_reason(answer.finish).as_bytes());
            buf.put_slice(b"\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
            buf.put_slice(answer.completion_tokens().to_string().as_bytes());
            buf.put_slice(b"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        }
        StreamEnd::Midstream => {
            buf.put_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        }
        StreamEnd::Truncate => {}
    }
    out.finish()
}

#[derive(Serialize)]
struct ModelList<'a> {
    data: Vec<ModelEntry<'a>>,
    has_more: bool,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    created_at: &'a str,
}

fn created_at() -> String {
    let mut text =
        crate::text::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    // Anthropic gives whole seconds: `2023-11-14T22:13:20Z`.
    text.replace_range(19.., "Z");
    text
}

pub(crate) fn render_models<'a>(names: impl Iterator<Item = &'a str>) -> Bytes {
    let created_at = created_at();
    let data: Vec<ModelEntry<'_>> = names
        .map(|id| ModelEntry {
            kind: "model",
            id,
            display_name: id,
            created_at: &created_at,
        })
        .collect();
    let first_id = data.first().map(|m| m.id);
    let last_id = data.last().map(|m| m.id);
    to_json(&ModelList {
        data,
        has_more: false,
        first_id,
        last_id,
    })
}

pub(crate) fn render_model(name: &str) -> Bytes {
    to_json(&ModelEntry {
        kind: "model",
        id: name,
        display_name: name,
        created_at: &created_at(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Endpoint;

    fn events(segments: &[(Duration, Bytes)]) -> Vec<(String, serde_json::Value)> {
        let all: Vec<u8> = segments.iter().flat_map(|(_, b)| b.to_vec()).collect();
        String::from_utf8(all)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (event, data) = e.split_once('\n').unwrap();
                let name = event.strip_prefix("event: ").unwrap().to_owned();
                let data: serde_json::Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str());
                (name, data)
            })
            .collect()
    }

    fn answer(pieces: &[String], end: StreamEnd) -> Answer<'_> {
        Answer {
            id: 3,
            model: "mock-large",
            created: 1,
            pieces,
            prompt_tokens: 9,
            finish: Finish::Stop,
            include_usage: false,
            end,
            endpoint: Endpoint::Chat,
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            chunk_delay: Duration::ZERO,
        }
    }

    #[test]
    fn stream_has_every_named_event_in_order() {
        let pieces = vec!["x".to_owned(), "y\"".to_owned()];
        let events = events(&render_stream(&answer(&pieces, StreamEnd::Complete)));
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 9);
        assert_eq!(events[4].1["delta"]["text"], "y\"");
        assert_eq!(events[6].1["delta"]["stop_reason"], "end_turn");
        assert_eq!(events[6].1["usage"]["output_tokens"], 2);
    }

    #[test]
    fn faults_end_with_an_error_event_or_nothing() {
        let pieces: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        let mid = events(&render_stream(&answer(&pieces, StreamEnd::Midstream)));
        assert_eq!(mid.last().unwrap().0, "error");
        assert_eq!(mid.last().unwrap().1["error"]["type"], "overloaded_error");
        let cut = events(&render_stream(&answer(&pieces, StreamEnd::Truncate)));
        assert_eq!(cut.len(), 5);
        assert!(cut.iter().all(|(n, _)| n != "message_stop"));
    }

    #[test]
    fn requests_need_max_tokens_and_valid_roles() {
        let err = |body: &str| match parse(body.as_bytes()) {
            Err(ApiError::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
                .contains("max_tokens")
        );
        assert!(
            err(r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#)
                .contains("messages.0.role")
        );
        assert!(err(r#"{"model":"m","max_tokens":5,"messages":[]}"#).contains("at least one"));
        let ok = parse(
            br#"{"model":"m","max_tokens":5,"system":[{"type":"text","text":"abc"}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            (ok.prompt_chars, ok.last_user.as_str(), ok.stream),
            (5, "hi", false)
        );
        assert_eq!(created_at(), "2023-11-14T22:13:20Z");
    }
}
