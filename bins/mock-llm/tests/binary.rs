//! End to end: the real `quorum-mock-llm` binary, started, queried and stopped with SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::process::Stdio;
use std::time::Duration;

use quorum_mock_llm::expected_answer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_quorum-mock-llm");

#[tokio::test]
async fn serves_until_sigterm_and_exits_cleanly() {
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--set", "chunks=3"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the binary prints its address")
        .unwrap()
        .unwrap();
    let base = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"),
        "{base}"
    );

    let client = reqwest::Client::new();
    let v: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        expected_answer("ping", 3)
    );
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the binary exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The port is closed.
    assert!(client.get(format!("{base}/healthz")).send().await.is_err());
}

#[tokio::test]
async fn help_and_bad_arguments() {
    let output = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with("usage: quorum-mock-llm") && text.contains("--bind ADDR"),
        "{text}"
    );

    let output = Command::new(BIN)
        .arg("--frobnicate")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(text.contains("unknown argument \"--frobnicate\""), "{text}");

    let output = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--set", "chunks=0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(text.contains("invalid chunks: 0 is not within"), "{text}");

    let output = Command::new(BIN)
        .args(["--config", "/nonexistent/mock.yaml"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("/nonexistent/mock.yaml")
    );
}

#[tokio::test]
async fn reads_a_yaml_config_file() {
    let dir = std::env::temp_dir().join(format!("quorum-mock-llm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mock.yaml");
    std::fs::write(&path, "bind: 127.0.0.1:0\nmodels: [only-this]\nchunks: 2\n").unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = first.strip_prefix("listening on ").unwrap().to_owned();
    let v: Value = reqwest::get(format!("{base}/api/tags"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["models"][0]["name"], "only-this");
    assert_eq!(v["models"].as_array().unwrap().len(), 1);
    child.kill().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
