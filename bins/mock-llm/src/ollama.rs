//! Ollama `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings` and `/api/tags`.

use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::api::{
    Answer, ApiError, ChatRequest, Content, EmbedInput, EmbedRequest, Endpoint, Finish, Segments,
    StreamEnd, parse_json, to_json, write_json,
};
use crate::text::rfc3339;

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];
/// The smallest duration reported, so that clients computing tokens per second never divide by
/// zero.
const MIN_NANOS: u64 = 1_000;

#[derive(Deserialize)]
struct RawRequest {
    model: Option<String>,
    messages: Option<Vec<RawMessage>>,
    prompt: Option<String>,
    system: Option<String>,
    stream: Option<bool>,
    options: Option<Options>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
struct Options {
    num_predict: Option<i64>,
}

pub(crate) fn parse(body: &[u8], endpoint: Endpoint) -> Result<ChatRequest, ApiError> {
    let raw: RawRequest = parse_json(body)?;
    let model = match raw.model {
        Some(model) if !model.is_empty() => model,
        _ => return Err(ApiError::InvalidRequest("model is required".into())),
    };
    let mut prompt_chars = raw.system.as_deref().map_or(0, |s| s.chars().count());
    let mut last_user = String::new();
    match endpoint {
        Endpoint::Chat => {
            for (i, message) in raw.messages.unwrap_or_default().into_iter().enumerate() {
                if !ROLES.contains(&message.role.as_str()) {
                    return Err(ApiError::InvalidRequest(format!(
                        "messages[{i}].role: invalid role \"{}\", expected one of {ROLES:?}",
                        message.role
                    )));
                }
                if let Some(content) = message.content {
                    prompt_chars += content.char_count();
                    if message.role == "user" {
                        last_user = content.into_text();
                    }
                }
            }
        }
        Endpoint::Generate => {
            let prompt = raw.prompt.unwrap_or_default();
            prompt_chars += prompt.chars().count();
            last_user = prompt;
        }
    }
    // `num_predict` of -1 (or -2) means "no limit".
    let max_tokens = match raw.options.and_then(|o| o.num_predict) {
        Some(n) if n >= 0 => Some(u64::try_from(n).unwrap_or(u64::MAX).max(1)),
        _ => None,
    };
    Ok(ChatRequest {
        model,
        // Ollama streams unless told otherwise.
        stream: raw.stream.unwrap_or(true),
        include_usage: false,
        prompt_chars,
        last_user,
        max_tokens,
    })
}

#[derive(Deserialize)]
struct RawEmbed {
    model: Option<String>,
    input: Option<EmbedInput>,
    /// The legacy `/api/embeddings` field.
    prompt: Option<String>,
}

pub(crate) fn parse_embed(body: &[u8]) -> Result<EmbedRequest, ApiError> {
    let raw: RawEmbed = parse_json(body)?;
    let model = match raw.model {
        Some(model) if !model.is_empty() => model,
        _ => return Err(ApiError::InvalidRequest("model is required".into())),
    };
    let inputs = match (raw.input, raw.prompt) {
        (Some(input), _) => input.into_texts(),
        (None, Some(prompt)) => vec![prompt],
        (None, None) => Vec::new(),
    };
    if inputs.is_empty() {
        return Err(ApiError::InvalidRequest("input is required".into()));
    }
    Ok(EmbedRequest {
        model,
        inputs,
        base64: false,
    })
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// `{"error":"message"}`.
pub(crate) fn error_body(err: &ApiError) -> Bytes {
    let message = match err {
        ApiError::ModelNotFound(model) => {
            format!("model \"{model}\" not found, try pulling it first")
        }
        ApiError::Context { .. } => format!("input exceeds the context length: {}", err.message()),
        ApiError::Quota => "insufficient_quota: you exceeded your current quota".to_owned(),
        ApiError::RouteNotFound(_) => "404 page not found".to_owned(),
        other => other.message(),
    };
    to_json(&ErrorBody { error: &message })
}

/// The timing fields of a final object, in nanoseconds (planned delays, at least 1 µs each).
#[derive(Serialize)]
struct Timings {
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: u64,
    prompt_eval_duration: u64,
    eval_count: u64,
    eval_duration: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .max(MIN_NANOS)
}

fn timings(answer: &Answer<'_>) -> Timings {
    let steps = u32::try_from(answer.pieces.len().saturating_sub(1)).unwrap_or(u32::MAX);
    let load = nanos(answer.latency);
    let prompt_eval = nanos(answer.ttft);
    let eval = nanos(answer.chunk_delay.saturating_mul(steps))
        .max(answer.completion_tokens().saturating_mul(MIN_NANOS));
    Timings {
        total_duration: load + prompt_eval + eval,
        load_duration: load,
        prompt_eval_count: answer.prompt_tokens,
        prompt_eval_duration: prompt_eval,
        eval_count: answer.completion_tokens(),
        eval_duration: eval,
    }
}

fn done_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// Writes `{"model":..,"created_at":..,` (the start of every object).
fn head(buf: &mut BytesMut, model: &str, created_at: &str) {
    buf.put_slice(b"{\"model\":");
    write_json(buf, model);
    buf.put_slice(b",\"created_at\":\"");
    buf.put_slice(created_at.as_bytes());
    buf.put_slice(b"\",");
}

/// Writes the content field: `"message":{"role":"assistant","content":..}` or `"response":..`.
fn content(buf: &mut BytesMut, endpoint: Endpoint, text: &str) {
    match endpoint {
        Endpoint::Chat => {
            buf.put_slice(b"\"message\":{\"role\":\"assistant\",\"content\":");
            write_json(buf, text);
            buf.put_slice(b"},");
        }
        Endpoint::Generate => {
            buf.put_slice(b"\"response\":");
            write_json(buf, text);
            buf.put_slice(b",");
        }
    }
}

/// Writes the final object (`done: true` with the counts and durations), newline included
/// when `ndjson`.
fn final_object(buf: &mut BytesMut, answer: &Answer<'_>, created_at: &str, text: &str) {
    head(buf, answer.model, created_at);
    content(buf, answer.endpoint, text);
    buf.put_slice(b"\"done_reason\":\"");
    buf.put_slice(done_reason(answer.finish).as_bytes());
    buf.put_slice(b"\",\"done\":true,");
    // Splice the timings object's fields in: `{"total_duration":..}` without its braces.
    let timings = serde_json::to_vec(&timings(answer)).unwrap_or_default();
    if let Some(inner) = timings.get(1..timings.len().saturating_sub(1)) {
        buf.put_slice(inner);
    }
    buf.put_slice(b"}");
}

pub(crate) fn render_json(answer: &Answer<'_>) -> Bytes {
    let mut buf = BytesMut::with_capacity(512);
    final_object(
        &mut buf,
        answer,
        &rfc3339(SystemTime::now()),
        &answer.text(),
    );
    buf.freeze()
}

/// NDJSON: one object per piece (`done: false`), then the final object; a fault ends with an
/// `{"error":..}` line or with nothing.
pub(crate) fn render_stream(answer: &Answer<'_>) -> Vec<(Duration, Bytes)> {
    let created_at = rfc3339(SystemTime::now());
    let mut out = Segments::default();
    for (i, piece) in answer.streamed_pieces().iter().enumerate() {
        let buf = out.frame(answer.delay_before(i));
        head(buf, answer.model, &created_at);
        content(buf, answer.endpoint, piece);
        buf.put_slice(b"\"done\":false}\n");
    }
    match answer.end {
        StreamEnd::Complete => {
            let buf = out.frame(Duration::ZERO);
            final_object(buf, answer, &created_at, "");
            buf.put_slice(b"\n");
        }
        StreamEnd::Midstream => {
            let buf = out.frame(Duration::ZERO);
            write_json(
                buf,
                &ErrorBody {
                    error: "an error was encountered while running the model (injected by the mock)",
                },
            );
            buf.put_slice(b"\n");
        }
        StreamEnd::Truncate => {}
    }
    out.finish()
}

#[derive(Serialize)]
struct EmbedResponse<'a> {
    model: &'a str,
    embeddings: Vec<Vec<f32>>,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: u64,
}

pub(crate) fn render_embed(model: &str, vectors: Vec<Vec<f32>>, prompt_tokens: u64) -> Bytes {
    to_json(&EmbedResponse {
        model,
        embeddings: vectors,
        total_duration: MIN_NANOS * 2,
        load_duration: MIN_NANOS,
        prompt_eval_count: prompt_tokens,
    })
}

#[derive(Serialize)]
struct LegacyEmbedResponse {
    embedding: Vec<f32>,
}

pub(crate) fn render_legacy_embed(vector: Vec<f32>) -> Bytes {
    to_json(&LegacyEmbedResponse { embedding: vector })
}

#[derive(Serialize)]
struct Tags<'a> {
    models: Vec<Tag<'a>>,
}

#[derive(Serialize)]
struct Tag<'a> {
    name: &'a str,
    model: &'a str,
    modified_at: &'a str,
    size: u64,
    digest: String,
    details: Details,
}

#[derive(Serialize)]
struct Details {
    parent_model: &'static str,
    format: &'static str,
    family: &'static str,
    families: [&'static str; 1],
    parameter_size: &'static str,
    quantization_level: &'static str,
}

pub(crate) fn render_tags<'a>(names: impl Iterator<Item = &'a str>) -> Bytes {
    let modified_at = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let models = names
        .map(|name| Tag {
            name,
            model: name,
            modified_at: &modified_at,
            size: 1_000_000,
            digest: format!("{:064x}", name.len()),
            details: Details {
                parent_model: "",
                format: "gguf",
                family: "mock",
                families: ["mock"],
                parameter_size: "1B",
                quantization_level: "Q4_0",
            },
        })
        .collect();
    to_json(&Tags { models })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(segments: &[(Duration, Bytes)]) -> Vec<serde_json::Value> {
        let all: Vec<u8> = segments.iter().flat_map(|(_, b)| b.to_vec()).collect();
        String::from_utf8(all)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn answer(pieces: &[String], endpoint: Endpoint, end: StreamEnd) -> Answer<'_> {
        Answer {
            id: 1,
            model: "gemma3:1b",
            created: 1,
            pieces,
            prompt_tokens: 4,
            finish: Finish::Length,
            include_usage: false,
            end,
            endpoint,
            latency: Duration::from_millis(2),
            ttft: Duration::ZERO,
            chunk_delay: Duration::from_millis(1),
        }
    }

    #[test]
    fn chat_stream_ends_with_done_and_durations() {
        let pieces = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let lines = lines(&render_stream(&answer(
            &pieces,
            Endpoint::Chat,
            StreamEnd::Complete,
        )));
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["message"]["content"], "a");
        assert_eq!(lines[0]["done"], false);
        let last = &lines[3];
        assert_eq!(last["done"], true);
        assert_eq!(last["done_reason"], "length");
        assert_eq!(last["eval_count"], 3);
        assert_eq!(last["prompt_eval_count"], 4);
        assert_eq!(last["load_duration"], 2_000_000);
        assert_eq!(last["prompt_eval_duration"], MIN_NANOS);
        assert_eq!(last["eval_duration"], 2_000_000);
        assert_eq!(last["total_duration"], 4_001_000);
    }

    #[test]
    fn generate_uses_response_and_faults_end_early() {
        let pieces: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let mid = lines(&render_stream(&answer(
            &pieces,
            Endpoint::Generate,
            StreamEnd::Midstream,
        )));
        assert_eq!(mid.len(), 3);
        assert_eq!(mid[1]["response"], "1");
        assert!(mid[2]["error"].is_string());
        let cut = lines(&render_stream(&answer(
            &pieces,
            Endpoint::Generate,
            StreamEnd::Truncate,
        )));
        assert_eq!(cut.len(), 2);
        assert!(cut.iter().all(|l| l["done"] == false));
        let whole: serde_json::Value = serde_json::from_slice(&render_json(&answer(
            &pieces,
            Endpoint::Generate,
            StreamEnd::Complete,
        )))
        .unwrap();
        assert_eq!(whole["response"], "01234");
        assert_eq!(whole["done"], true);
    }

    #[test]
    fn requests_default_to_streaming_and_read_num_predict() {
        let req = parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":2}}"#,
            Endpoint::Chat,
        )
        .unwrap();
        assert!(req.stream);
        assert_eq!(req.max_tokens, Some(2));
        let req = parse(
            br#"{"model":"m","prompt":"abc","system":"s","stream":false,"options":{"num_predict":-1}}"#,
            Endpoint::Generate,
        )
        .unwrap();
        assert_eq!(
            (req.stream, req.max_tokens, req.prompt_chars),
            (false, None, 4)
        );
        assert!(parse(br#"{"messages":[]}"#, Endpoint::Chat).is_err());
        assert!(
            parse(
                br#"{"model":"m","messages":[{"role":"bot","content":"x"}]}"#,
                Endpoint::Chat
            )
            .is_err()
        );
        assert!(parse_embed(br#"{"model":"m"}"#).is_err());
        assert_eq!(
            parse_embed(br#"{"model":"m","prompt":"x"}"#)
                .unwrap()
                .inputs,
            ["x"]
        );
    }
}
