//! OpenAI Chat Completions, embeddings and models: request parsing and response rendering.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::api::{
    Answer, ApiError, ChatRequest, Content, EmbedInput, EmbedRequest, Finish, Segments, StreamEnd,
    parse_json, to_json, write_json,
};
use crate::config::CreditsConfig;

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];
const FINGERPRINT: &str = "fp_mock";

#[derive(Deserialize)]
struct RawChat {
    model: Option<String>,
    messages: Option<Vec<RawMessage>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

pub(crate) fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let raw: RawChat = parse_json(body)?;
    let model = match raw.model {
        Some(model) if !model.is_empty() => model,
        _ => return Err(invalid("you must provide a model parameter")),
    };
    let messages = raw
        .messages
        .ok_or_else(|| invalid("missing required parameter: 'messages'"))?;
    if messages.is_empty() {
        return Err(invalid(
            "invalid 'messages': empty array, expected an array with minimum length 1",
        ));
    }
    let max_tokens = raw.max_completion_tokens.or(raw.max_tokens);
    if max_tokens == Some(0) {
        return Err(invalid(
            "invalid 'max_tokens': integer below minimum value, expected a value >= 1, but got 0",
        ));
    }
    let stream = raw.stream.unwrap_or(false);
    if raw.stream_options.is_some() && !stream {
        return Err(invalid(
            "invalid value for 'stream_options': only allowed when 'stream' is true",
        ));
    }
    let mut prompt_chars = 0;
    let mut last_user = None;
    for (i, message) in messages.into_iter().enumerate() {
        if !ROLES.contains(&message.role.as_str()) {
            return Err(invalid(&format!(
                "invalid value for 'messages[{i}].role': \"{}\", supported values are {ROLES:?}",
                message.role
            )));
        }
        if let Some(content) = message.content {
            prompt_chars += content.char_count();
            if message.role == "user" {
                last_user = Some(content);
            }
        }
    }
    Ok(ChatRequest {
        model,
        stream,
        include_usage: raw.stream_options.is_some_and(|o| o.include_usage),
        prompt_chars,
        last_user: last_user.map(Content::into_text).unwrap_or_default(),
        max_tokens,
    })
}

#[derive(Deserialize)]
struct RawEmbed {
    model: Option<String>,
    input: Option<EmbedInput>,
    encoding_format: Option<String>,
}

pub(crate) fn parse_embed(body: &[u8]) -> Result<EmbedRequest, ApiError> {
    let raw: RawEmbed = parse_json(body)?;
    let model = match raw.model {
        Some(model) if !model.is_empty() => model,
        _ => return Err(invalid("you must provide a model parameter")),
    };
    let inputs = raw
        .input
        .ok_or_else(|| invalid("missing required parameter: 'input'"))?
        .into_texts();
    if inputs.is_empty() || inputs.iter().any(String::is_empty) {
        return Err(invalid("'$.input' is invalid: it must not be empty"));
    }
    let base64 = match raw.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(&format!(
                "invalid value for 'encoding_format': \"{other}\", supported values are float and base64"
            )));
        }
    };
    Ok(EmbedRequest {
        model,
        inputs,
        base64,
    })
}

fn invalid(message: &str) -> ApiError {
    ApiError::InvalidRequest(message.to_owned())
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_body(err: &ApiError) -> Bytes {
    let (kind, code) = match err {
        ApiError::InvalidRequest(_) | ApiError::MethodNotAllowed | ApiError::PayloadTooLarge => {
            ("invalid_request_error", None)
        }
        ApiError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
        ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
        ApiError::RouteNotFound(_) => ("invalid_request_error", Some("unknown_url")),
        ApiError::Context { .. } => ("invalid_request_error", Some("context_length_exceeded")),
        ApiError::RateLimited => ("requests", Some("rate_limit_exceeded")),
        ApiError::Quota => ("insufficient_quota", Some("insufficient_quota")),
        ApiError::Status(status) => match status {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            402 => ("insufficient_quota", Some("payment_required")),
            403 => ("permission_error", Some("permission_denied")),
            404 => ("invalid_request_error", Some("not_found")),
            429 => ("requests", Some("rate_limit_exceeded")),
            400..=499 => ("invalid_request_error", None),
            503 => ("server_error", Some("service_unavailable")),
            529 => ("server_error", Some("overloaded")),
            _ => ("server_error", None),
        },
    };
    let message = match err {
        ApiError::ModelNotFound(model) => {
            format!("The model `{model}` does not exist or you do not have access to it.")
        }
        ApiError::Quota => "You exceeded your current quota".to_owned(),
        other => other.message(),
    };
    to_json(&ErrorEnvelope {
        error: ErrorBody {
            message: &message,
            kind,
            param: None,
            code,
        },
    })
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

fn usage(answer: &Answer<'_>) -> Usage {
    Usage {
        prompt_tokens: answer.prompt_tokens,
        completion_tokens: answer.completion_tokens(),
        total_tokens: answer.prompt_tokens + answer.completion_tokens(),
    }
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn completion_id(id: u64) -> String {
    format!("chatcmpl-mock-{id}")
}

pub(crate) fn render_json(answer: &Answer<'_>) -> Bytes {
    let id = completion_id(answer.id);
    let text = answer.text();
    to_json(&Completion {
        id: &id,
        object: "chat.completion",
        created: answer.created,
        model: answer.model,
        system_fingerprint: FINGERPRINT,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: &text,
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish_reason(answer.finish),
        }],
        usage: usage(answer),
    })
}

/// SSE: a role chunk, one chunk per piece, a `finish_reason` chunk, a usage chunk when asked
/// for, then `data: [DONE]` (or an error event / nothing, for the stream faults).
pub(crate) fn render_stream(answer: &Answer<'_>) -> Vec<(Duration, Bytes)> {
    // Every chunk shares this prefix, rendered once: `data: {"id":..,"choices":[{"index":0,`.
    let mut prefix = BytesMut::with_capacity(160);
    prefix.put_slice(b"data: {\"id\":\"");
    prefix.put_slice(completion_id(answer.id).as_bytes());
    prefix.put_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
    prefix.put_slice(answer.created.to_string().as_bytes());
    prefix.put_slice(b",\"model\":");
    write_json(&mut prefix, answer.model);
    prefix.put_slice(b",\"system_fingerprint\":\"");
    prefix.put_slice(FINGERPRINT.as_bytes());
    prefix.put_slice(b"\",\"choices\":[");
    let usage_null: &[u8] = if answer.include_usage {
        b",\"usage\":null"
    } else {
        b""
    };

    let mut out = Segments::default();
    let buf = out.frame(Duration::ZERO);
    buf.put_slice(&prefix);
    buf.put_slice(b"{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]");
    buf.put_slice(usage_null);
    buf.put_slice(b"}\n\n");
    for (i, piece) in answer.streamed_pieces().iter().enumerate() {
        let buf = out.frame(answer.delay_before(i));
        buf.put_slice(&prefix);
        buf.put_slice(b"{\"index\":0,\"delta\":{\"content\":");
        write_json(buf, piece.as_str());
        buf.put_slice(b"},\"logprobs\":null,\"finish_reason\":null}]");
        buf.put_slice(usage_null);
        buf.put_slice(b"}\n\n");
    }
    match answer.end {
        StreamEnd::Complete => {
            let buf = out.frame(Duration::ZERO);
            buf.put_slice(&prefix);
            buf.put_slice(b"{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"");
            buf.put_slice(finish_reason(answer.finish).as_bytes());
            buf.put_slice(b"\"}]");
            buf.put_slice(usage_null);
            buf.put_slice(b"}\n\n");
            if answer.include_usage {
                buf.put_slice(&prefix);
                buf.put_slice(b"],\"usage\":");
                write_json(buf, &usage(answer));
                buf.put_slice(b"}\n\n");
            }
            buf.put_slice(b"data: [DONE]\n\n");
        }
        StreamEnd::Midstream => {
            let buf = out.frame(Duration::ZERO);
            buf.put_slice(b"data: ");
            buf.put_slice(&error_body(&ApiError::Status(500)));
            buf.put_slice(b"\n\n");
        }
        StreamEnd::Truncate => {}
    }
    out.finish()
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

pub(crate) fn render_embeddings(
    model: &str,
    vectors: Vec<Vec<f32>>,
    base64: bool,
    prompt_tokens: u64,
) -> Bytes {
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: if base64 {
                EmbeddingValue::Base64(crate::text::base64_f32(&vector))
            } else {
                EmbeddingValue::Floats(vector)
            },
        })
        .collect();
    to_json(&EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

fn model_entry(id: &str, created: u64) -> ModelEntry<'_> {
    ModelEntry {
        id,
        object: "model",
        created,
        owned_by: "quorum-mock",
    }
}

pub(crate) fn render_models<'a>(names: impl Iterator<Item = &'a str>, created: u64) -> Bytes {
    to_json(&ModelList {
        object: "list",
        data: names.map(|id| model_entry(id, created)).collect(),
    })
}

pub(crate) fn render_model(name: &str, created: u64) -> Bytes {
    to_json(&model_entry(name, created))
}

#[derive(Serialize)]
struct KeyInfo {
    data: KeyData,
}

#[derive(Serialize)]
struct KeyData {
    label: &'static str,
    usage: f64,
    limit: Option<f64>,
    limit_remaining: Option<f64>,
    is_free_tier: bool,
}

/// OpenRouter's `GET /api/v1/auth/key` answer:
/// `{"data":{"label","usage","limit","limit_remaining","is_free_tier"}}`.
pub(crate) fn render_key_info(credits: &CreditsConfig) -> Bytes {
    to_json(&KeyInfo {
        data: KeyData {
            label: "mock",
            usage: credits.usage,
            limit: credits.limit,
            limit_remaining: credits.remaining(),
            is_free_tier: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Endpoint;

    fn answer<'a>(pieces: &'a [String], end: StreamEnd, include_usage: bool) -> Answer<'a> {
        Answer {
            id: 7,
            model: "m\"x",
            created: 1,
            pieces,
            prompt_tokens: 3,
            finish: Finish::Stop,
            include_usage,
            end,
            endpoint: Endpoint::Chat,
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            chunk_delay: Duration::ZERO,
        }
    }

    fn events(segments: &[(Duration, Bytes)]) -> Vec<String> {
        let all: Vec<u8> = segments.iter().flat_map(|(_, b)| b.to_vec()).collect();
        String::from_utf8(all)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }

    #[test]
    fn stream_chunks_are_valid_json_with_escaped_content() {
        let pieces = vec!["a\"b".to_owned(), "\n".to_owned()];
        let events = events(&render_stream(&answer(&pieces, StreamEnd::Complete, true)));
        assert_eq!(events.len(), 6, "{events:?}");
        assert_eq!(events[5], "[DONE]");
        let parsed: Vec<serde_json::Value> = events[..5]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(parsed[0]["model"], "m\"x");
        assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(parsed[1]["choices"][0]["delta"]["content"], "a\"b");
        assert_eq!(parsed[2]["choices"][0]["delta"]["content"], "\n");
        assert_eq!(parsed[3]["choices"][0]["finish_reason"], "stop");
        assert!(parsed[3]["usage"].is_null());
        assert_eq!(parsed[4]["choices"], serde_json::json!([]));
        assert_eq!(parsed[4]["usage"]["total_tokens"], 5);
    }

    #[test]
    fn broken_streams_stop_after_two_pieces() {
        let pieces: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let cut = events(&render_stream(&answer(&pieces, StreamEnd::Truncate, false)));
        assert_eq!(cut.len(), 3);
        assert!(cut.iter().all(|e| e != "[DONE]"));
        let mid = events(&render_stream(&answer(
            &pieces,
            StreamEnd::Midstream,
            false,
        )));
        assert_eq!(mid.len(), 4);
        let error: serde_json::Value = serde_json::from_str(&mid[3]).unwrap();
        assert_eq!(error["error"]["type"], "server_error");
    }

    #[test]
    fn requests_are_validated() {
        let err = |body: &str| match parse_chat(body.as_bytes()) {
            Err(ApiError::InvalidRequest(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert!(err("{").contains("invalid JSON body"));
        assert!(err(r#"{"messages":[]}"#).contains("model"));
        assert!(err(r#"{"model":"m"}"#).contains("'messages'"));
        assert!(err(r#"{"model":"m","messages":[]}"#).contains("empty array"));
        assert!(
            err(r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#)
                .contains("messages[0].role")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#)
                .contains("max_tokens")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#)
                .contains("invalid type")
        );
        let ok = parse_chat(
            br#"{"model":"m","messages":[{"role":"system","content":"abcd"},{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[]}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":3}"#,
        )
        .unwrap();
        assert_eq!(
            (
                ok.prompt_chars,
                ok.last_user.as_str(),
                ok.stream,
                ok.include_usage,
                ok.max_tokens
            ),
            (6, "hi", true, true, Some(3))
        );
    }

    #[test]
    fn embeddings_validate_input_and_format() {
        assert!(parse_embed(br#"{"model":"m","input":""}"#).is_err());
        assert!(parse_embed(br#"{"model":"m","input":[]}"#).is_err());
        assert!(parse_embed(br#"{"model":"m","input":"a","encoding_format":"hex"}"#).is_err());
        let ok =
            parse_embed(br#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#).unwrap();
        assert_eq!((ok.inputs.len(), ok.base64), (2, true));
    }
}
