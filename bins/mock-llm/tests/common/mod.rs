//! Helpers shared by the integration tests: start a mock, send requests, parse streams.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use std::time::Duration;

use quorum_mock_llm::{MockConfig, MockServer};
use serde_json::Value;

pub async fn start() -> MockServer {
    start_with(MockConfig::ephemeral()).await
}

pub async fn start_with(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Which dialect a request speaks (with the headers it needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Ollama,
    Anthropic,
}

pub const DIALECTS: [Dialect; 3] = [Dialect::OpenAi, Dialect::Ollama, Dialect::Anthropic];

impl Dialect {
    pub fn chat_path(self) -> &'static str {
        match self {
            Self::OpenAi => "/v1/chat/completions",
            Self::Ollama => "/api/chat",
            Self::Anthropic => "/v1/messages",
        }
    }

    /// A chat request body for `model` asking `prompt`.
    pub fn chat_body(self, model: &str, prompt: &str, stream: bool) -> Value {
        let messages = serde_json::json!([
            {"role": "user", "content": prompt}
        ]);
        match self {
            Self::OpenAi => {
                serde_json::json!({"model": model, "messages": messages, "stream": stream})
            }
            Self::Ollama => {
                serde_json::json!({"model": model, "messages": messages, "stream": stream})
            }
            Self::Anthropic => serde_json::json!({
                "model": model, "messages": messages, "stream": stream, "max_tokens": 1024
            }),
        }
    }

    pub fn request(
        self,
        client: &reqwest::Client,
        server: &MockServer,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        let request = client
            .post(format!("{}{}", server.base_url(), self.chat_path()))
            .json(body);
        match self {
            Self::Anthropic => request
                .header("x-api-key", "sk-ant-test")
                .header("anthropic-version", "2023-06-01"),
            _ => request,
        }
    }

    /// Sends a chat request and returns the response.
    pub async fn chat(
        self,
        server: &MockServer,
        model: &str,
        prompt: &str,
        stream: bool,
    ) -> reqwest::Response {
        self.request(&client(), server, &self.chat_body(model, prompt, stream))
            .send()
            .await
            .unwrap()
    }
}

/// Parses an SSE body into `(event name, data)` pairs.
pub fn sse(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (event, data)
        })
        .collect()
}

/// Parses an NDJSON body.
pub fn ndjson(body: &str) -> Vec<Value> {
    assert!(body.ends_with('\n'), "NDJSON ends with a newline: {body:?}");
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits (up to `limit`) until `check` holds for the server's stats.
pub async fn eventually(
    server: &MockServer,
    limit: Duration,
    check: impl Fn(&quorum_mock_llm::Stats) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check(&server.stats()) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
