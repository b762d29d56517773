//! Each dialect's success shapes, listings, auth, admin endpoints and latency, over real HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use common::{Dialect, client, ndjson, sse, start, start_with};
use quorum_config::Secret;
use quorum_mock_llm::{
    CreditsConfig, DEFAULT_MODELS, Latency, MockConfig, ModelConfig, Stats, answer_chunks,
    estimate_tokens, expected_answer,
};
use serde_json::{Value, json};
use tokio::time::Instant;

const PROMPT: &str = "What is the capital of France? Answer in one word please.";

fn content_type(response: &reqwest::Response) -> String {
    response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn openai_plain_answer_has_the_full_shape() {
    let server = start().await;
    let body = json!({
        "model": "mock-gpt",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": PROMPT}
        ]
    });
    let response = Dialect::OpenAi
        .request(&client(), &server, &body)
        .header("authorization", "Bearer anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "mock-gpt");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], expected_answer(PROMPT, 16));
    assert_eq!(choice["finish_reason"], "stop");
    let prompt_tokens = estimate_tokens("Be brief.".len() + PROMPT.len());
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 16);
    server.shutdown().await;
}

#[tokio::test]
async fn openai_stream_sends_chunks_usage_and_done() {
    let server = start().await;
    let body = json!({
        "model": "mock-small",
        "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let response = Dialect::OpenAi
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "text/event-stream");
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let events = sse(&response.text().await.unwrap());
    assert!(events.iter().all(|(name, _)| name.is_none()));
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect();
    // role chunk + 16 content chunks + finish chunk + usage chunk
    assert_eq!(chunks.len(), 19);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..17]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected_answer(PROMPT, 16));
    assert_eq!(chunks[17]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[..18].iter().all(|c| c["usage"].is_null()));
    assert_eq!(chunks[18]["choices"], json!([]));
    assert_eq!(chunks[18]["usage"]["completion_tokens"], 16);
    assert_eq!(
        chunks[18]["usage"]["prompt_tokens"],
        estimate_tokens(PROMPT.len())
    );

    // Without include_usage there is no usage chunk and no usage key.
    let body = Dialect::OpenAi.chat_body("mock-small", "hi", true);
    let response = Dialect::OpenAi
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap();
    let events = sse(&response.text().await.unwrap());
    assert_eq!(events.len(), 19);
    assert!(events.iter().all(|(_, d)| !d.contains("usage")));
    server.shutdown().await;
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_in_every_dialect() {
    let server = start().await;
    let expected: String = answer_chunks(PROMPT, 16)[..3].concat();

    let body = json!({"model": "mock-gpt", "max_tokens": 3, "messages": [{"role": "user", "content": PROMPT}]});
    let v: Value = Dialect::OpenAi
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], expected);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let body = json!({"model": "gemma3:1b", "stream": false, "options": {"num_predict": 3}, "messages": [{"role": "user", "content": PROMPT}]});
    let v: Value = Dialect::Ollama
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["message"]["content"], expected);
    assert_eq!(v["done_reason"], "length");
    assert_eq!(v["eval_count"], 3);

    let body = json!({"model": "mock-large", "max_tokens": 3, "messages": [{"role": "user", "content": PROMPT}]});
    let v: Value = Dialect::Anthropic
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["text"], expected);
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 3);
    server.shutdown().await;
}

#[tokio::test]
async fn ollama_chat_streams_ndjson_by_default() {
    let server = start().await;
    let body = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": PROMPT}]});
    let response = Dialect::Ollama
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/x-ndjson");
    let lines = ndjson(&response.text().await.unwrap());
    assert_eq!(lines.len(), 17);
    let (last, parts) = lines.split_last().unwrap();
    assert!(
        parts
            .iter()
            .all(|l| l["done"] == false && l["model"] == "llama3.2:1b")
    );
    let text: String = parts
        .iter()
        .map(|l| {
            assert_eq!(l["message"]["role"], "assistant");
            l["message"]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, expected_answer(PROMPT, 16));
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["eval_count"], 16);
    assert_eq!(last["prompt_eval_count"], estimate_tokens(PROMPT.len()));
    for field in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[field].as_u64().unwrap() > 0, "{field}");
    }
    let created = last["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 30, "{created}");
    server.shutdown().await;
}

#[tokio::test]
async fn ollama_plain_chat_and_generate() {
    let server = start().await;
    let body = json!({"model": "gemma3:1b", "stream": false, "messages": [{"role": "user", "content": PROMPT}]});
    let response = Dialect::Ollama
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(content_type(&response), "application/json");
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["message"]["content"], expected_answer(PROMPT, 16));
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    assert_eq!(v["eval_count"], 16);

    // `name` and `name:latest` are the same model in Ollama.
    let url = format!("{}/api/generate", server.base_url());
    let text = client()
        .post(&url)
        .json(&json!({"model": "mock-small:latest", "prompt": "hello"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = ndjson(&text);
    let joined: String = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect();
    assert_eq!(joined, expected_answer("hello", 16));
    assert!(lines[..16].iter().all(|l| l["message"].is_null()));
    assert_eq!(lines[16]["done"], true);

    let v: Value = client()
        .post(&url)
        .json(&json!({"model": "mock-small", "prompt": "hello", "stream": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["response"], expected_answer("hello", 16));
    server.shutdown().await;
}

#[tokio::test]
async fn anthropic_plain_message() {
    let server = start().await;
    let body = json!({
        "model": "mock-large",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": PROMPT}]
    });
    let response = Dialect::Anthropic
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("request-id"));
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["model"], "mock-large");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": expected_answer(PROMPT, 16)}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    assert_eq!(
        v["usage"]["input_tokens"],
        estimate_tokens("Be brief.".len() + PROMPT.len())
    );
    assert_eq!(v["usage"]["output_tokens"], 16);
    server.shutdown().await;
}

#[tokio::test]
async fn anthropic_stream_has_named_events() {
    let server = start().await;
    let response = Dialect::Anthropic
        .chat(&server, "mock-large", PROMPT, true)
        .await;
    assert_eq!(content_type(&response), "text/event-stream");
    let events = sse(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", 16));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (name, value) in names.iter().zip(&data) {
        assert_eq!(value["type"], *name);
    }
    assert_eq!(
        data[0]["message"]["usage"]["input_tokens"],
        estimate_tokens(PROMPT.len())
    );
    let text: String = data[3..19]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, expected_answer(PROMPT, 16));
    assert_eq!(data[20]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[20]["usage"]["output_tokens"], 16);
    server.shutdown().await;
}

#[tokio::test]
async fn anthropic_requires_its_headers_and_fields() {
    let server = start().await;
    let url = format!("{}/v1/messages", server.base_url());
    let body = Dialect::Anthropic.chat_body("mock-large", "hi", false);

    let response = client()
        .post(&url)
        .json(&body)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    let response = client()
        .post(&url)
        .json(&body)
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );

    let no_max = json!({"model": "mock-large", "messages": [{"role": "user", "content": "hi"}]});
    let response = Dialect::Anthropic
        .request(&client(), &server, &no_max)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn model_listings_per_dialect() {
    let server = start().await;
    let base = server.base_url();

    let v: Value = client()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, DEFAULT_MODELS);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model")
    );

    let v: Value = client()
        .get(format!("{base}/v1/models"))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], DEFAULT_MODELS[0]);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["type"] == "model")
    );
    assert_eq!(v["data"].as_array().unwrap().len(), DEFAULT_MODELS.len());

    let v: Value = client()
        .get(format!("{base}/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, DEFAULT_MODELS);
    assert_eq!(v["models"][0]["details"]["format"], "gguf");

    let v: Value = client()
        .get(format!("{base}/v1/models/mock-gpt"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], "mock-gpt");
    let response = client()
        .get(format!("{base}/v1/models/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    server.shutdown().await;
}

#[tokio::test]
async fn embeddings_in_both_dialects() {
    let server = start().await;
    let base = server.base_url();
    let v: Value = client()
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": "mock-small", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 16);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(v["usage"]["prompt_tokens"], 1);

    let v: Value = client()
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": "mock-small", "input": "a", "encoding_format": "base64"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let encoded = v["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(encoded.len(), 88, "16 f32 = 64 bytes = 88 base64 chars");
    assert!(encoded.ends_with("=="));

    let v: Value = client()
        .post(format!("{base}/api/embed"))
        .json(&json!({"model": "gemma3:1b", "input": ["a", "b", "c"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "gemma3:1b");
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 3);
    // The same text gives the same vector in both dialects.
    assert_eq!(v["embeddings"][0], data[0]["embedding"]);
    server.shutdown().await;
}

#[tokio::test]
async fn api_key_is_required_only_when_configured() {
    let mut config = MockConfig::ephemeral();
    config.require_api_key = Some(Secret::new("sk-mock"));
    let server = start_with(config).await;
    let body = Dialect::OpenAi.chat_body("mock-gpt", "hi", false);
    for (auth, status) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Bearer sk-mock"), 200),
    ] {
        let mut request = Dialect::OpenAi.request(&client(), &server, &body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{auth:?}");
        if status == 401 {
            let v: Value = response.json().await.unwrap();
            assert_eq!(v["error"]["code"], "invalid_api_key");
        }
    }
    // Ollama (behind a proxy) uses the bearer key too; Anthropic its x-api-key.
    let body = Dialect::Ollama.chat_body("gemma3:1b", "hi", false);
    let response = Dialect::Ollama
        .request(&client(), &server, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    let response = Dialect::Anthropic
        .chat(&server, "mock-large", "hi", false)
        .await;
    assert_eq!(
        response.status(),
        401,
        "sk-ant-test is not the configured key"
    );
    let body = Dialect::Anthropic.chat_body("mock-large", "hi", false);
    let response = client()
        .post(format!("{}/v1/messages", server.base_url()))
        .header("x-api-key", "sk-mock")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_in_their_dialect() {
    let server = start().await;
    let base = server.base_url();
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON body")
    );

    let response = client()
        .post(format!("{base}/api/chat"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "model is required"})
    );

    let response = client()
        .get(format!("{base}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let response = client()
        .get(format!("{base}/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let response = client()
        .get(format!("{base}/api/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "404 page not found"})
    );

    let huge = "x".repeat(9 * 1024 * 1024);
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    server.shutdown().await;
}

#[tokio::test]
async fn admin_stats_reset_and_config() {
    let server = start().await;
    let base = server.base_url();
    assert_eq!(
        client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for _ in 0..3 {
        Dialect::OpenAi
            .chat(&server, "mock-gpt", "hi", false)
            .await
            .text()
            .await
            .unwrap();
    }
    Dialect::Ollama
        .chat(&server, "gemma3:1b", "hi", true)
        .await
        .text()
        .await
        .unwrap();
    Dialect::OpenAi
        .chat(&server, "nope", "hi", false)
        .await
        .text()
        .await
        .unwrap();

    let stats: Stats = client()
        .get(format!("{base}/admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, server.stats());
    assert_eq!(
        (
            stats.requests,
            stats.completed,
            stats.cancelled,
            stats.active
        ),
        (5, 5, 0, 0)
    );
    assert_eq!(stats.by_model["mock-gpt"], 3);
    assert_eq!(stats.by_model["gemma3:1b"], 1);
    assert_eq!(stats.by_model["nope"], 1);

    let response = client()
        .post(format!("{base}/admin/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.stats(), Stats::default());

    // Replace the runtime config: fewer chunks, one model.
    let config = MockConfig {
        chunks: 2,
        models: vec![ModelConfig::new("only-one")],
        ..MockConfig::default()
    };
    let response = client()
        .post(format!("{base}/admin/config"))
        .json(&config)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let applied: MockConfig = response.json().await.unwrap();
    assert_eq!(applied.chunks, 2);
    assert_eq!(
        applied.bind,
        server.addr(),
        "the listening address does not change"
    );
    let v: Value = Dialect::OpenAi
        .chat(&server, "only-one", "hi", false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        expected_answer("hi", 2)
    );
    assert_eq!(
        Dialect::OpenAi
            .chat(&server, "mock-gpt", "hi", false)
            .await
            .status(),
        404
    );
    let current: MockConfig = client()
        .get(format!("{base}/admin/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current.models, [ModelConfig::new("only-one")]);

    // A bad config is rejected with the field named, and the old one stays.
    let response = client()
        .post(format!("{base}/admin/config"))
        .json(&json!({"chunks": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("invalid chunks"),
        "{v}"
    );
    let response = client()
        .post(format!("{base}/admin/config"))
        .json(&json!({"chunkz": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("chunkz"));
    assert_eq!(server.config().chunks, 2);

    // The library API does the same without HTTP.
    server.reset();
    assert_eq!(server.stats().requests, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn latency_and_chunk_timing_are_respected() {
    let mut config = MockConfig::ephemeral();
    config.latency = Latency::Fixed(quorum_config::Duration::from_millis(80));
    config.time_to_first_token = quorum_config::Duration::from_millis(40);
    config.chunk_delay = quorum_config::Duration::from_millis(10);
    config.chunks = 5;
    let server = start_with(config).await;

    let started = Instant::now();
    let response = Dialect::OpenAi.chat(&server, "mock-gpt", "hi", false).await;
    response.bytes().await.unwrap();
    let plain = started.elapsed();
    // latency + ttft + 4 × chunk_delay
    assert!(plain >= Duration::from_millis(160), "{plain:?}");
    assert!(plain < Duration::from_secs(3), "{plain:?}");

    let started = Instant::now();
    let mut response = Dialect::Ollama.chat(&server, "mock-gpt", "hi", true).await;
    let headers_at = started.elapsed();
    let first = response.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(headers_at >= Duration::from_millis(80), "{headers_at:?}");
    assert!(first_at >= Duration::from_millis(120), "{first_at:?}");
    assert!(String::from_utf8_lossy(&first).contains("\"done\":false"));
    while response.chunk().await.unwrap().is_some() {}
    assert!(started.elapsed() >= Duration::from_millis(160));

    // A per-model latency replaces the global one.
    let mut config = MockConfig::ephemeral();
    config.latency = Latency::Fixed(quorum_config::Duration::from_secs(5));
    config.models = vec![ModelConfig {
        name: "quick".into(),
        context_window: None,
        latency: Some(Latency::Uniform(
            quorum_config::Duration::from_millis(20),
            quorum_config::Duration::from_millis(40),
        )),
    }];
    let fast = start_with(config).await;
    let started = Instant::now();
    Dialect::OpenAi
        .chat(&fast, "quick", "hi", false)
        .await
        .bytes()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(20) && took < Duration::from_secs(2),
        "{took:?}"
    );
    fast.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn http_1_0_clients_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start().await;
    let mut socket = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    socket
        .write_all(b"GET /admin/stats HTTP/1.0\r\nHost: mock\r\nAccept: application/json\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 OK"), "{head}");
    let stats: Stats = serde_json::from_str(body).unwrap();
    assert_eq!(stats, Stats::default());
    server.shutdown().await;
}

#[tokio::test]
async fn openrouter_credits_endpoint_follows_the_config() {
    let server = start().await;
    let url = format!("{}/v1/auth/key", server.base_url());
    let get = || async {
        let response = client().get(&url).send().await.unwrap();
        let status = response.status();
        let v: Value = response.json().await.unwrap();
        (status, v)
    };
    // Default: an unlimited key with nothing used (OpenRouter answers null limits).
    let (status, v) = get().await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"data": {"label": "mock", "usage": 0.0, "limit": null,
                        "limit_remaining": null, "is_free_tier": false}})
    );

    // Changed at run time through the admin API...
    let response = client()
        .post(format!("{}/admin/config", server.base_url()))
        .json(&json!({"credits": {"limit": 10.0, "usage": 9.5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, v) = get().await;
    assert_eq!(v["data"]["limit"], 10.0);
    assert_eq!(v["data"]["usage"], 9.5);
    assert_eq!(v["data"]["limit_remaining"], 0.5);
    // ...and through the library; overspending never reports a negative remainder.
    let mut config = server.config();
    config.credits = CreditsConfig::limited(5.0, 7.0);
    server.set_config(config).unwrap();
    let (_, v) = get().await;
    assert_eq!(v["data"]["limit_remaining"], 0.0);

    // Bad amounts are rejected naming the field; the old credits stay.
    let response = client()
        .post(format!("{}/admin/config", server.base_url()))
        .json(&json!({"credits": {"limit": -1.0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.contains("invalid credits.limit: -1 is not"), "{text}");
    assert_eq!(server.config().credits, CreditsConfig::limited(5.0, 7.0));

    // Only GET; a required key is checked like every OpenAI-dialect route.
    let response = client().post(&url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let mut config = server.config();
    config.require_api_key = Some(Secret::new("sk-or-mock"));
    server.set_config(config).unwrap();
    let (status, v) = get().await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let response = client()
        .get(&url)
        .bearer_auth("sk-or-mock")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.shutdown().await;
}
