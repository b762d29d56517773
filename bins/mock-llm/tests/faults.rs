//! Every fault, per dialect, seen from a client over real HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use common::{DIALECTS, Dialect, client, eventually, ndjson, sse, start, start_with};
use quorum_mock_llm::{FaultKind, FaultRule, MockConfig, MockServer, ModelConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The error type/code a dialect puts in its body, and the message.
fn error_of(dialect: Dialect, body: &Value) -> (String, String) {
    match dialect {
        Dialect::OpenAi => {
            let error = &body["error"];
            assert!(error["message"].is_string(), "{body}");
            assert!(error.get("param").is_some(), "{body}");
            let code = error["code"].as_str().unwrap_or("null");
            (
                format!("{}/{code}", error["type"].as_str().unwrap()),
                error["message"].as_str().unwrap().to_owned(),
            )
        }
        Dialect::Ollama => {
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
            (String::new(), body["error"].as_str().unwrap().to_owned())
        }
        Dialect::Anthropic => {
            assert_eq!(body["type"], "error", "{body}");
            (
                body["error"]["type"].as_str().unwrap().to_owned(),
                body["error"]["message"].as_str().unwrap().to_owned(),
            )
        }
    }
}

#[tokio::test]
async fn status_faults_have_each_dialects_error_shape() {
    let server = start().await;
    // (model, status, OpenAI type/code, Anthropic type)
    let cases = [
        (
            "fault-400",
            400,
            "invalid_request_error/null",
            "invalid_request_error",
        ),
        (
            "fault-401",
            401,
            "invalid_request_error/invalid_api_key",
            "authentication_error",
        ),
        (
            "fault-402",
            402,
            "insufficient_quota/payment_required",
            "billing_error",
        ),
        (
            "fault-403",
            403,
            "permission_error/permission_denied",
            "permission_error",
        ),
        ("fault-500", 500, "server_error/null", "api_error"),
        ("fault-502", 502, "server_error/null", "api_error"),
        (
            "fault-503",
            503,
            "server_error/service_unavailable",
            "api_error",
        ),
        (
            "fault-529",
            529,
            "server_error/overloaded",
            "overloaded_error",
        ),
        (
            "nope",
            404,
            "invalid_request_error/model_not_found",
            "not_found_error",
        ),
    ];
    for dialect in DIALECTS {
        for (model, status, openai, anthropic) in cases {
            for stream in [false, true] {
                let response = dialect.chat(&server, model, "hi", stream).await;
                assert_eq!(
                    response.status(),
                    status,
                    "{dialect:?} {model} stream={stream}"
                );
                assert_eq!(response.headers()["content-type"], "application/json");
                assert!(!response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                let (kind, message) = error_of(dialect, &body);
                match dialect {
                    Dialect::OpenAi => assert_eq!(kind, openai, "{model}"),
                    Dialect::Anthropic => assert_eq!(kind, anthropic, "{model}"),
                    Dialect::Ollama => assert!(!message.is_empty()),
                }
                if model == "nope" && dialect == Dialect::Ollama {
                    assert_eq!(message, "model \"nope\" not found, try pulling it first");
                }
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limit_and_quota_differ_in_headers_and_body() {
    let server = start().await;
    for dialect in DIALECTS {
        let response = dialect.chat(&server, "fault-429", "hi", false).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["retry-after-ms"], "1000");
        let (kind, _) = error_of(dialect, &response.json().await.unwrap());
        match dialect {
            Dialect::OpenAi => assert_eq!(kind, "requests/rate_limit_exceeded"),
            Dialect::Anthropic => assert_eq!(kind, "rate_limit_error"),
            Dialect::Ollama => {}
        }

        let response = dialect.chat(&server, "fault-quota", "hi", false).await;
        assert_eq!(response.status(), 429);
        assert!(
            !response.headers().contains_key("retry-after"),
            "quota is not retryable"
        );
        let body: Value = response.json().await.unwrap();
        let (kind, message) = error_of(dialect, &body);
        match dialect {
            Dialect::OpenAi => {
                assert_eq!(
                    body,
                    json!({"error": {"type": "insufficient_quota", "code": "insufficient_quota",
                        "message": "You exceeded your current quota", "param": null}})
                );
            }
            Dialect::Anthropic => {
                assert_eq!(kind, "rate_limit_error");
                assert!(message.starts_with("insufficient_quota"), "{message}");
            }
            Dialect::Ollama => assert!(message.starts_with("insufficient_quota"), "{message}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn context_errors_by_name_and_by_window() {
    let mut config = MockConfig::ephemeral();
    config.models.push(ModelConfig {
        name: "tiny".into(),
        context_window: Some(10),
        latency: None,
    });
    let server = start_with(config).await;
    let long = "x".repeat(200); // 50 tokens
    for dialect in DIALECTS {
        for (model, prompt) in [("fault-context", "hi"), ("tiny", long.as_str())] {
            let response = dialect.chat(&server, model, prompt, false).await;
            assert_eq!(response.status(), 400, "{dialect:?} {model}");
            let (kind, message) = error_of(dialect, &response.json().await.unwrap());
            match dialect {
                Dialect::OpenAi => {
                    assert_eq!(kind, "invalid_request_error/context_length_exceeded")
                }
                Dialect::Anthropic => {
                    assert_eq!(kind, "invalid_request_error");
                    assert!(message.starts_with("prompt is too long"), "{message}");
                }
                Dialect::Ollama => assert!(message.contains("context length"), "{message}"),
            }
        }
        // A short prompt fits the window.
        assert_eq!(
            dialect.chat(&server, "tiny", "hi", false).await.status(),
            200
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn midstream_errors_after_two_chunks() {
    let server = start().await;
    for dialect in DIALECTS {
        let response = dialect
            .chat(&server, "fault-midstream", "hello", true)
            .await;
        assert_eq!(response.status(), 200, "{dialect:?}");
        let text = response.text().await.unwrap();
        match dialect {
            Dialect::OpenAi => {
                let events = sse(&text);
                // role chunk, two content chunks, the error
                assert_eq!(events.len(), 4, "{text}");
                let error: Value = serde_json::from_str(&events[3].1).unwrap();
                assert_eq!(error["error"]["type"], "server_error");
                assert!(!text.contains("[DONE]"));
            }
            Dialect::Ollama => {
                let lines = ndjson(&text);
                assert_eq!(lines.len(), 3);
                assert!(lines[2]["error"].is_string());
                assert!(lines.iter().all(|l| l["done"] != true));
            }
            Dialect::Anthropic => {
                let events = sse(&text);
                let (name, data) = events.last().unwrap();
                assert_eq!(name.as_deref(), Some("error"));
                let data: Value = serde_json::from_str(data).unwrap();
                assert_eq!(data["error"]["type"], "overloaded_error");
                let deltas = events
                    .iter()
                    .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
                    .count();
                assert_eq!(deltas, 2);
                assert!(!text.contains("message_stop"));
            }
        }
        // Not streaming: a plain 500.
        let response = dialect
            .chat(&server, "fault-midstream", "hello", false)
            .await;
        assert_eq!(response.status(), 500, "{dialect:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_streams_end_without_their_marker() {
    let server = start().await;
    for dialect in DIALECTS {
        let response = dialect.chat(&server, "fault-truncate", "hello", true).await;
        assert_eq!(response.status(), 200, "{dialect:?}");
        assert_eq!(response.headers()["connection"], "close");
        // The HTTP body itself ends cleanly: only the protocol's end marker is missing.
        let text = response.text().await.unwrap();
        match dialect {
            Dialect::OpenAi => {
                assert_eq!(sse(&text).len(), 3, "{text}");
                assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"));
            }
            Dialect::Ollama => {
                let lines = ndjson(&text);
                assert_eq!(lines.len(), 2);
                assert!(lines.iter().all(|l| l["done"] == false));
            }
            Dialect::Anthropic => {
                let events = sse(&text);
                assert_eq!(events.len(), 5, "{text}");
                assert!(!text.contains("message_stop") && !text.contains("message_delta"));
            }
        }
    }
    server.shutdown().await;
}

/// Sends a raw HTTP/1.1 request and reads until the server closes.
async fn raw(
    server: &MockServer,
    path: &str,
    body: &str,
    extra: &str,
) -> (Vec<u8>, std::io::Result<()>) {
    let mut socket = TcpStream::connect(server.addr()).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .map(drop);
    (received, result)
}

#[tokio::test]
async fn truncated_plain_bodies_are_shorter_than_their_length() {
    let server = start().await;
    for dialect in DIALECTS {
        let body = dialect
            .chat_body("fault-truncate", "hello", false)
            .to_string();
        let extra = if dialect == Dialect::Anthropic {
            "x-api-key: k\r\nanthropic-version: 2023-06-01\r\n"
        } else {
            ""
        };
        let (received, _) = raw(&server, dialect.chat_path(), &body, extra).await;
        let text = String::from_utf8(received).unwrap();
        let (head, payload) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{dialect:?}: {text:?}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            !payload.is_empty() && payload.len() < length,
            "{} < {length}",
            payload.len()
        );
        assert!(serde_json::from_str::<Value>(payload).is_err());

        // A client sees an error reading the body.
        let response = dialect
            .chat(&server, "fault-truncate", "hello", false)
            .await;
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.is_err(), "{dialect:?}");
    }
    // Embeddings too.
    let response = client()
        .post(format!("{}/v1/embeddings", server.base_url()))
        .json(&json!({"model": "fault-truncate", "input": "a"}))
        .send()
        .await
        .unwrap();
    assert!(response.bytes().await.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn reset_closes_the_connection_before_any_response() {
    let server = start().await;
    for dialect in DIALECTS {
        let body = dialect.chat_body("fault-reset", "hello", true).to_string();
        let extra = if dialect == Dialect::Anthropic {
            "x-api-key: k\r\nanthropic-version: 2023-06-01\r\n"
        } else {
            ""
        };
        let (received, result) = raw(&server, dialect.chat_path(), &body, extra).await;
        assert!(
            received.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&received)
        );
        if let Err(err) = result {
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        }

        let err = dialect
            .request(
                &client(),
                &server,
                &dialect.chat_body("fault-reset", "hi", false),
            )
            .send()
            .await
            .unwrap_err();
        assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    }
    // The server is fine afterwards.
    assert_eq!(
        Dialect::OpenAi
            .chat(&server, "mock-gpt", "hi", false)
            .await
            .status(),
        200
    );
    let stats = server.stats();
    assert_eq!(stats.by_model["fault-reset"], 6);
    assert_eq!(stats.cancelled, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_leaving_a_slow_request_counts_as_cancelled() {
    let server = start().await;
    for dialect in DIALECTS {
        server.reset();
        let slow_client = reqwest::Client::builder()
            .timeout(Duration::from_millis(150))
            .build()
            .unwrap();
        let err = dialect
            .request(
                &slow_client,
                &server,
                &dialect.chat_body("fault-slow", "hi", false),
            )
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        let cancelled = eventually(&server, Duration::from_secs(1), |s| {
            s.cancelled == 1 && s.active == 0
        })
        .await;
        assert!(cancelled, "{dialect:?}: {:?}", server.stats());
        assert_eq!(server.stats().completed, 0);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_leaving_mid_stream_counts_as_cancelled() {
    let mut config = MockConfig::ephemeral();
    config.chunk_delay = quorum_config::Duration::from_millis(100);
    let server = start_with(config).await;
    let mut response = Dialect::OpenAi.chat(&server, "mock-gpt", "hi", true).await;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(server.stats().active, 1);
    drop(response);
    let cancelled = eventually(&server, Duration::from_secs(1), |s| {
        s.cancelled == 1 && s.active == 0
    })
    .await;
    assert!(cancelled, "{:?}", server.stats());

    // fault-slow with a short configured delay answers normally.
    let mut config = MockConfig::ephemeral();
    config.slow_delay = quorum_config::Duration::from_millis(50);
    let quick = start_with(config).await;
    let started = tokio::time::Instant::now();
    let response = Dialect::Ollama
        .chat(&quick, "fault-slow", "hi", false)
        .await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(quick.stats().completed, 1);
    quick.shutdown().await;
    server.shutdown().await;
}

/// Sends `n` requests for `model` over a few connections; returns the statuses.
async fn send_many(server: &MockServer, model: &str, n: usize) -> Vec<u16> {
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = n / 8;
    for _ in 0..8 {
        let request = Dialect::OpenAi.request(
            &client,
            server,
            &Dialect::OpenAi.chat_body(model, "hi", false),
        );
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let response = request.try_clone().unwrap().send().await.unwrap();
                out.push(response.status().as_u16());
                response.bytes().await.unwrap();
            }
            out
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(part) = tasks.join_next().await {
        all.extend(part.unwrap());
    }
    all
}

#[tokio::test]
async fn flaky_models_fail_at_their_rate() {
    let server = start().await;
    let statuses = send_many(&server, "fault-flaky-30", 1000).await;
    let failed = statuses.iter().filter(|s| **s == 503).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503));
    assert!((250..=350).contains(&failed), "{failed} of 1000 failed");
    assert!(
        send_many(&server, "fault-flaky-0", 40)
            .await
            .iter()
            .all(|s| *s == 200)
    );
    assert!(
        send_many(&server, "fault-flaky-100", 40)
            .await
            .iter()
            .all(|s| *s == 503)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn configured_fault_rules_fire_by_schedule_and_rate() {
    let mut config = MockConfig::ephemeral();
    config.faults = vec![FaultRule::every(FaultKind::Status(502), 4)];
    let server = start_with(config).await;
    let statuses = send_many(&server, "mock-gpt", 400).await;
    assert_eq!(statuses.iter().filter(|s| **s == 502).count(), 100);

    let config = MockConfig {
        faults: vec![FaultRule::rate(FaultKind::RateLimit, 0.2)],
        ..MockConfig::default()
    };
    server.set_config(config).unwrap();
    let statuses = send_many(&server, "mock-gpt", 1000).await;
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!((150..=250).contains(&limited), "{limited}");

    // Rules only touch requests that would succeed: unknown models still get 404.
    let config = MockConfig {
        faults: vec![FaultRule::rate(FaultKind::Reset, 1.0)],
        ..MockConfig::default()
    };
    server.set_config(config).unwrap();
    assert_eq!(
        Dialect::OpenAi
            .chat(&server, "nope", "hi", false)
            .await
            .status(),
        404
    );
    let err = Dialect::OpenAi
        .request(
            &client(),
            &server,
            &Dialect::OpenAi.chat_body("mock-gpt", "hi", false),
        )
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status());
    server.shutdown().await;
}
