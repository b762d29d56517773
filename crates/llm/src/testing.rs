//! The provider conformance suite (feature `test-util`): every provider crate runs it from its
//! `tests/` over real HTTP against the mock LLM server (`quorum-mock-llm`).
//!
//! The suite needs two things from the caller:
//!
//! - a **builder** `Fn(&str) -> Arc<dyn Provider>` that builds the provider under test pointed at
//!   the mock's base URL (`http://127.0.0.1:PORT`; the builder appends a path such as `/v1` if
//!   its dialect needs one);
//! - the mock's **base URL**, from which the suite reads `GET {base}/admin/stats` with a tiny
//!   HTTP/1.0 client over a tokio `TcpStream` (plain `http://` only), to see the mock's
//!   `cancelled` counter. No dependency on the mock crate is needed.
//!
//! Each mock should serve one suite run at a time (the cancellation checks compare counters).
//!
//! ```no_run
//! # async fn run(provider_for: impl Fn(&str) -> std::sync::Arc<dyn quorum_llm::Provider>) {
//! use quorum_llm::testing::{ConformanceConfig, run_conformance};
//!
//! let base_url = "http://127.0.0.1:9100"; // MockServer::base_url() in a real test
//! let report = run_conformance(provider_for, base_url, &ConformanceConfig::default()).await;
//! report.assert_passed(); // panics listing every failed check by name
//! # }
//! ```
//!
//! Checks (names as reported): `chat`, `chat_stream`, `list_models`, `health`, `embeddings`
//! (skipped when the provider has no embeddings capability), `error/<model>` and
//! `stream_error/<model>` for every fault model of the mock contract (`fault-429` →
//! [`ErrorKind::RateLimited`] with `retry_after` 1 s, `fault-quota` → not retryable
//! [`ErrorKind::QuotaExhausted`], ..., an unknown model → [`ErrorKind::ModelNotFound`]),
//! `stream_midstream_error`, `stream_truncated`, `chat_truncated`, `chat_reset`,
//! `stream_reset`, `cancel_chat` and `cancel_stream` (drop a `fault-slow` call after 200 ms and
//! see the mock count a cancelled request within 2 s).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{ErrorKind, LlmError};
use crate::provider::{ChatStream, Provider};
use crate::types::{ChatRequest, EmbeddingRequest, FinishReason, StreamFinal, StreamItem};

/// What the suite asks for and how patient it is.
#[derive(Debug, Clone)]
pub struct ConformanceConfig {
    /// A model the mock answers successfully (default `mock-small`).
    pub model: String,
    /// The model used for embeddings (default `mock-small`).
    pub embedding_model: String,
    /// A model the mock does not know (default `no-such-model-xyz`).
    pub unknown_model: String,
    /// The longest any single check may take (default 15 s).
    pub check_timeout: Duration,
    /// How long a `fault-slow` call runs before it is dropped (default 200 ms).
    pub cancel_after: Duration,
    /// How soon the mock must count the cancellation (default 2 s).
    pub cancel_deadline: Duration,
    /// Check names to skip (reported as skipped), for dialect gaps a provider documents.
    pub skip: Vec<String>,
}

impl Default for ConformanceConfig {
    fn default() -> Self {
        ConformanceConfig {
            model: "mock-small".to_owned(),
            embedding_model: "mock-small".to_owned(),
            unknown_model: "no-such-model-xyz".to_owned(),
            check_timeout: Duration::from_secs(15),
            cancel_after: Duration::from_millis(200),
            cancel_deadline: Duration::from_secs(2),
            skip: Vec::new(),
        }
    }
}

/// The outcome of a suite run: which checks passed, were skipped, or failed (with why).
#[derive(Debug, Clone, Default)]
pub struct ConformanceReport {
    /// Names of passed checks.
    pub passed: Vec<String>,
    /// Names of skipped checks, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Names of failed checks, with the reason.
    pub failed: Vec<(String, String)>,
}

impl ConformanceReport {
    /// Whether every check that ran passed.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Panics with every failed check's name and reason, if any failed.
    ///
    /// # Panics
    ///
    /// When a check failed (this is a test helper).
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.is_ok(), "provider conformance failed:\n{self}");
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} passed, {} skipped, {} failed",
            self.passed.len(),
            self.skipped.len(),
            self.failed.len()
        )?;
        for (name, why) in &self.failed {
            writeln!(f, "  FAILED {name}: {why}")?;
        }
        for (name, why) in &self.skipped {
            writeln!(f, "  skipped {name}: {why}")?;
        }
        Ok(())
    }
}

/// The mock's counters, as `GET /admin/stats` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MockStats {
    /// Requests received.
    pub requests: u64,
    /// Requests in flight.
    pub active: u64,
    /// Requests answered completely.
    pub completed: u64,
    /// Requests whose client went away before the answer finished.
    pub cancelled: u64,
}

/// Reads `GET {base_url}/admin/stats` with a minimal HTTP/1.0 client.
///
/// # Errors
///
/// A description of what failed (bad URL, connection, status, JSON).
pub async fn mock_stats(base_url: &str) -> Result<MockStats, String> {
    let rest = base_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("mock base url {base_url:?} is not http://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect to mock {authority}: {e}"))?;
    let request = format!(
        "GET /admin/stats HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write to mock: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read from mock: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "mock stats: no header end".to_owned())?;
    let status_ok = head
        .lines()
        .next()
        .is_some_and(|line| line.split_whitespace().nth(1) == Some("200"));
    if !status_ok {
        return Err(format!("mock stats: unexpected answer {head:?}"));
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).map_err(|e| format!("mock stats: bad json {body:?}: {e}"))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Runs every check against the provider `build(mock_base_url)` returns.
///
/// Never panics: failures are collected in the report (call
/// [`ConformanceReport::assert_passed`]).
pub async fn run_conformance<F>(
    build: F,
    mock_base_url: &str,
    config: &ConformanceConfig,
) -> ConformanceReport
where
    F: Fn(&str) -> Arc<dyn Provider>,
{
    let provider = build(mock_base_url);
    let p = provider.as_ref();
    let mut report = ConformanceReport::default();
    let mut checks: Vec<(String, CheckFuture<'_>)> = vec![
        ("chat".into(), Box::pin(check_chat(p, config))),
        ("chat_stream".into(), Box::pin(check_chat_stream(p, config))),
        ("list_models".into(), Box::pin(check_list_models(p, config))),
        (
            "health".into(),
            Box::pin(async move { p.health().await.map_err(|e| format!("health failed: {e}")) }),
        ),
    ];
    if p.embeddings().is_some() {
        checks.push(("embeddings".into(), Box::pin(check_embeddings(p, config))));
    } else {
        report
            .skipped
            .push(("embeddings".into(), "no embeddings capability".into()));
    }
    for (model, want) in fault_table(config) {
        checks.push((
            format!("error/{model}"),
            Box::pin(check_chat_error(p, config, model.clone(), want)),
        ));
        checks.push((
            format!("stream_error/{model}"),
            Box::pin(check_stream_error(p, config, model, want)),
        ));
    }
    checks.push((
        "stream_midstream_error".into(),
        Box::pin(check_midstream(p)),
    ));
    checks.push((
        "stream_truncated".into(),
        Box::pin(check_stream_truncated(p)),
    ));
    checks.push(("chat_truncated".into(), Box::pin(check_chat_truncated(p))));
    checks.push(("chat_reset".into(), Box::pin(check_chat_reset(p))));
    checks.push(("stream_reset".into(), Box::pin(check_stream_reset(p))));
    checks.push((
        "cancel_chat".into(),
        Box::pin(check_cancel(p, mock_base_url, config, false)),
    ));
    checks.push((
        "cancel_stream".into(),
        Box::pin(check_cancel(p, mock_base_url, config, true)),
    ));

    for (name, check) in checks {
        if config.skip.contains(&name) {
            report.skipped.push((name, "skipped by config".into()));
            continue;
        }
        match tokio::time::timeout(config.check_timeout, check).await {
            Ok(Ok(())) => report.passed.push(name),
            Ok(Err(why)) => report.failed.push((name, why)),
            Err(_) => report.failed.push((
                name,
                format!("did not finish within {:?}", config.check_timeout),
            )),
        }
    }
    report
}

/// What an HTTP fault must turn into.
#[derive(Debug, Clone, Copy)]
struct Want {
    kind: ErrorKind,
    retryable: bool,
    retry_after: Option<Option<Duration>>,
}

fn fault_table(config: &ConformanceConfig) -> Vec<(String, Want)> {
    let want = |kind, retryable| Want {
        kind,
        retryable,
        retry_after: None,
    };
    vec![
        (
            "fault-429".to_owned(),
            Want {
                kind: ErrorKind::RateLimited,
                retryable: true,
                retry_after: Some(Some(Duration::from_secs(1))),
            },
        ),
        (
            "fault-quota".to_owned(),
            Want {
                kind: ErrorKind::QuotaExhausted,
                retryable: false,
                retry_after: Some(None),
            },
        ),
        ("fault-401".to_owned(), want(ErrorKind::Auth, false)),
        (
            "fault-402".to_owned(),
            want(ErrorKind::PaymentRequired, false),
        ),
        ("fault-403".to_owned(), want(ErrorKind::Forbidden, false)),
        ("fault-400".to_owned(), want(ErrorKind::BadRequest, false)),
        (
            "fault-context".to_owned(),
            want(ErrorKind::ContextLengthExceeded, false),
        ),
        (
            config.unknown_model.clone(),
            want(ErrorKind::ModelNotFound, false),
        ),
        ("fault-500".to_owned(), want(ErrorKind::Server, true)),
        ("fault-502".to_owned(), want(ErrorKind::Server, true)),
        ("fault-503".to_owned(), want(ErrorKind::Overloaded, true)),
        ("fault-529".to_owned(), want(ErrorKind::Overloaded, true)),
    ]
}

fn question(model: &str) -> ChatRequest {
    let mut request = ChatRequest::user(model, "What is the capital of France?");
    request.system = Some("Answer briefly.".to_owned());
    request.max_tokens = Some(64);
    request
}

fn check_error(err: &LlmError, want: Want) -> Result<(), String> {
    if err.kind() != want.kind {
        return Err(format!(
            "expected {}, got {} ({err})",
            want.kind,
            err.kind()
        ));
    }
    if err.is_retryable() != want.retryable {
        return Err(format!(
            "expected retryable={}, got {} ({err})",
            want.retryable,
            err.is_retryable()
        ));
    }
    if let Some(after) = want.retry_after
        && err.retry_after() != after
    {
        return Err(format!(
            "expected retry_after {after:?}, got {:?} ({err})",
            err.retry_after()
        ));
    }
    Ok(())
}

async fn check_chat(p: &dyn Provider, config: &ConformanceConfig) -> Result<(), String> {
    let response = p
        .chat(&question(&config.model))
        .await
        .map_err(|e| format!("chat failed: {e}"))?;
    if response.content.trim().is_empty() {
        return Err("empty content".into());
    }
    if response.finish_reason != FinishReason::Stop {
        return Err(format!(
            "finish_reason {:?}, expected Stop",
            response.finish_reason
        ));
    }
    let usage = response.usage.ok_or("no usage reported")?;
    if usage.prompt_tokens == 0 || usage.completion_tokens == 0 {
        return Err(format!("usage has zero counts: {usage:?}"));
    }
    if response.provider != p.name() {
        return Err(format!(
            "provider {:?}, expected the instance name {:?}",
            response.provider,
            p.name()
        ));
    }
    if response.model.is_empty() {
        return Err("the answering model is not reported".into());
    }
    if response.timings.total.is_zero() {
        return Err("timings.total is zero".into());
    }
    Ok(())
}

/// Drains a stream: deltas, the terminal item, and whether anything came after it.
struct Drained {
    deltas: Vec<String>,
    terminal: Result<StreamFinal, LlmError>,
}

async fn drain(mut stream: ChatStream) -> Result<Drained, String> {
    let mut deltas = Vec::new();
    let terminal = loop {
        match stream.next().await {
            Some(Ok(StreamItem::Delta(text))) => {
                if text.is_empty() {
                    return Err("an empty delta was yielded".into());
                }
                deltas.push(text);
            }
            Some(Ok(StreamItem::Done(done))) => break Ok(done),
            Some(Err(e)) => break Err(e),
            None => return Err("the stream ended without a terminal item".into()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
        Ok(None) => Ok(Drained { deltas, terminal }),
        Ok(Some(item)) => Err(format!("an item after the terminal one: {item:?}")),
        Err(_) => Err("the stream did not end after its terminal item".into()),
    }
}

async fn check_chat_stream(p: &dyn Provider, config: &ConformanceConfig) -> Result<(), String> {
    let request = question(&config.model);
    let plain = p
        .chat(&request)
        .await
        .map_err(|e| format!("chat failed: {e}"))?;
    let stream = p
        .chat_stream(&request)
        .await
        .map_err(|e| format!("chat_stream failed to start: {e}"))?;
    let drained = drain(stream).await?;
    let done = drained
        .terminal
        .map_err(|e| format!("stream ended with an error: {e}"))?;
    let text: String = drained.deltas.concat();
    if text != plain.content {
        return Err(format!(
            "deltas concatenate to {text:?}, plain chat said {:?}",
            plain.content
        ));
    }
    if done.finish_reason != FinishReason::Stop {
        return Err(format!(
            "finish_reason {:?}, expected Stop",
            done.finish_reason
        ));
    }
    let usage = done.usage.ok_or("no usage in the final item")?;
    if Some(usage) != plain.usage {
        return Err(format!(
            "stream usage {usage:?} differs from chat usage {:?}",
            plain.usage
        ));
    }
    if done.provider != p.name() || done.model.is_empty() {
        return Err(format!(
            "final item names provider {:?} model {:?}",
            done.provider, done.model
        ));
    }
    let ttft = done
        .timings
        .time_to_first_token
        .ok_or("no time_to_first_token")?;
    if ttft > done.timings.total {
        return Err(format!(
            "time_to_first_token {ttft:?} > total {:?}",
            done.timings.total
        ));
    }
    Ok(())
}

async fn check_list_models(p: &dyn Provider, config: &ConformanceConfig) -> Result<(), String> {
    let models = p
        .list_models()
        .await
        .map_err(|e| format!("list_models failed: {e}"))?;
    if !models.iter().any(|m| m.id == config.model) {
        return Err(format!(
            "{:?} not listed in {:?}",
            config.model,
            models.iter().map(|m| &m.id).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

async fn check_embeddings(p: &dyn Provider, config: &ConformanceConfig) -> Result<(), String> {
    let embeddings = p.embeddings().ok_or("no embeddings capability")?;
    let request = EmbeddingRequest::new(
        config.embedding_model.clone(),
        vec!["first text".into(), "second, longer text".into()],
    );
    let response = embeddings
        .embed(&request)
        .await
        .map_err(|e| format!("embed failed: {e}"))?;
    if response.embeddings.len() != 2 {
        return Err(format!(
            "{} vectors for 2 inputs",
            response.embeddings.len()
        ));
    }
    let dims = response.embeddings[0].len();
    if dims == 0 || response.embeddings.iter().any(|v| v.len() != dims) {
        return Err("vectors are empty or of different lengths".into());
    }
    Ok(())
}

async fn check_chat_error(
    p: &dyn Provider,
    _config: &ConformanceConfig,
    model: String,
    want: Want,
) -> Result<(), String> {
    match p.chat(&question(&model)).await {
        Ok(response) => Err(format!("succeeded: {:?}", response.content)),
        Err(err) => check_error(&err, want),
    }
}

async fn check_stream_error(
    p: &dyn Provider,
    _config: &ConformanceConfig,
    model: String,
    want: Want,
) -> Result<(), String> {
    let err = match p.chat_stream(&question(&model)).await {
        Err(err) => err,
        Ok(stream) => {
            let drained = drain(stream).await?;
            if !drained.deltas.is_empty() {
                return Err(format!("deltas before the error: {:?}", drained.deltas));
            }
            match drained.terminal {
                Ok(done) => return Err(format!("succeeded: {done:?}")),
                Err(err) => err,
            }
        }
    };
    check_error(&err, want)
}

async fn open_and_drain(p: &dyn Provider, model: &str) -> Result<Drained, String> {
    let stream = p
        .chat_stream(&question(model))
        .await
        .map_err(|e| format!("the stream failed to start: {e}"))?;
    drain(stream).await
}

async fn check_midstream(p: &dyn Provider) -> Result<(), String> {
    let drained = open_and_drain(p, "fault-midstream").await?;
    if drained.deltas.is_empty() {
        return Err("no deltas before the in-stream error".into());
    }
    match drained.terminal {
        Ok(done) => Err(format!("succeeded: {done:?}")),
        Err(err) => match err.kind() {
            ErrorKind::StreamTruncated | ErrorKind::InvalidResponse | ErrorKind::Transport => Err(
                format!("the in-stream error is not typed from its payload: {err}"),
            ),
            _ if err.api().is_none() => {
                Err(format!("the in-stream error carries no details: {err}"))
            }
            _ => Ok(()),
        },
    }
}

async fn check_stream_truncated(p: &dyn Provider) -> Result<(), String> {
    let drained = open_and_drain(p, "fault-truncate").await?;
    if drained.deltas.is_empty() {
        return Err("no deltas before the truncation".into());
    }
    match drained.terminal {
        Ok(done) => Err(format!("a truncated stream succeeded: {done:?}")),
        Err(err) if err.kind() == ErrorKind::StreamTruncated => Ok(()),
        Err(err) => Err(format!(
            "expected stream_truncated, got {} ({err})",
            err.kind()
        )),
    }
}

async fn check_chat_truncated(p: &dyn Provider) -> Result<(), String> {
    match p.chat(&question("fault-truncate")).await {
        Ok(response) => Err(format!(
            "a truncated body succeeded: {:?}",
            response.content
        )),
        Err(err) => match err.kind() {
            ErrorKind::Transport | ErrorKind::StreamTruncated | ErrorKind::InvalidResponse => {
                Ok(())
            }
            other => Err(format!(
                "expected transport, stream_truncated or invalid_response, got {other} ({err})"
            )),
        },
    }
}

async fn check_chat_reset(p: &dyn Provider) -> Result<(), String> {
    let want = Want {
        kind: ErrorKind::Transport,
        retryable: true,
        retry_after: None,
    };
    match p.chat(&question("fault-reset")).await {
        Ok(response) => Err(format!("succeeded: {:?}", response.content)),
        Err(err) => check_error(&err, want),
    }
}

async fn check_stream_reset(p: &dyn Provider) -> Result<(), String> {
    let want = Want {
        kind: ErrorKind::Transport,
        retryable: true,
        retry_after: None,
    };
    let err = match p.chat_stream(&question("fault-reset")).await {
        Err(err) => err,
        Ok(stream) => match drain(stream).await?.terminal {
            Ok(done) => return Err(format!("succeeded: {done:?}")),
            Err(err) => err,
        },
    };
    check_error(&err, want)
}

async fn check_cancel(
    p: &dyn Provider,
    base_url: &str,
    config: &ConformanceConfig,
    stream: bool,
) -> Result<(), String> {
    let before = mock_stats(base_url).await?.cancelled;
    let request = question("fault-slow");
    if stream {
        match tokio::time::timeout(config.cancel_after, p.chat_stream(&request)).await {
            Err(_) => {} // still waiting for the answer: the future is dropped here
            Ok(Err(err)) => return Err(format!("the slow stream failed: {err}")),
            Ok(Ok(mut s)) => {
                // Headers came early: wait for the rest, then drop the stream.
                if let Ok(item) = tokio::time::timeout(config.cancel_after, s.next()).await {
                    return Err(format!("the slow stream yielded early: {item:?}"));
                }
            }
        }
    } else if let Ok(result) = tokio::time::timeout(config.cancel_after, p.chat(&request)).await {
        return Err(format!("the slow call finished early: {result:?}"));
    }
    let deadline = tokio::time::Instant::now() + config.cancel_deadline;
    loop {
        let now = mock_stats(base_url).await?;
        if now.cancelled > before {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the mock counted no cancelled request within {:?} of dropping the call (cancelled stays {}, active {})",
                config.cancel_deadline, now.cancelled, now.active
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_a_chunked_body() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
        assert_eq!(dechunk("zz\r\n"), "");
    }

    #[test]
    fn report_lists_failures_by_name() {
        let report = ConformanceReport {
            passed: vec!["chat".into()],
            skipped: vec![],
            failed: vec![("error/fault-429".into(), "expected rate_limited".into())],
        };
        assert!(!report.is_ok());
        let text = report.to_string();
        assert!(
            text.contains("FAILED error/fault-429: expected rate_limited"),
            "{text}"
        );
        assert!(std::panic::catch_unwind(|| report.assert_passed()).is_err());
    }

    #[tokio::test]
    async fn stats_reader_parses_a_real_http_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let body =
                r#"{"requests":3,"active":1,"completed":1,"cancelled":1,"by_model":{"m":3}}"#;
            let answer = format!(
                "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            request
        });
        let stats = mock_stats(&format!("http://{addr}")).await.unwrap();
        assert_eq!(
            stats,
            MockStats {
                requests: 3,
                active: 1,
                completed: 1,
                cancelled: 1
            }
        );
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /admin/stats HTTP/1.0\r\n"),
            "{request}"
        );
        assert!(mock_stats("https://x").await.is_err());
    }
}
