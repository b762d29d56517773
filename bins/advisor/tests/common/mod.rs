//! Helpers for the advisor's end-to-end tests: an in-process mock LLM server, the advisor
//! binary started as a child process on its own configuration and database, JSON over HTTP,
//! and an SSE reader that parses frames from a response's byte stream.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use quorum_mock_llm::{MockConfig, MockServer};
use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};

/// The longest any test waits for something that should happen (the machine may be loaded).
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// How many content chunks (= completion tokens) the mock splits an answer into.
pub(crate) const CHUNKS: usize = 16;

/// Deep-merges `patch` into `base`: objects merge key by key, anything else replaces.
pub(crate) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// Starts an in-process mock LLM server on a free port serving `fast` (20 ms), `mid`
/// (250 ms), `slow` (600 ms) and `slowish` (3 s); `fault-*` models need no listing.
/// `patch` is merged into the mock's configuration (as JSON).
pub(crate) async fn start_mock(patch: Value) -> MockServer {
    let mut config = json!({
        "bind": "127.0.0.1:0",
        "models": [
            {"name": "fast", "latency": {"fixed": "20ms"}},
            {"name": "mid", "latency": {"fixed": "250ms"}},
            {"name": "slow", "latency": {"fixed": "600ms"}},
            {"name": "slowish", "latency": {"fixed": "3s"}},
        ],
        "chunks": CHUNKS,
        "slow_delay": "30s",
        "shutdown_grace": "1s",
    });
    merge(&mut config, patch);
    let config: MockConfig = serde_json::from_value(config).expect("valid mock configuration");
    MockServer::start(config).await.expect("the mock starts")
}

/// Writes the advisor's configuration (JSON, which is YAML) into `dir` and returns its path:
/// a SQLite store in `dir`, one OpenAI-dialect provider `mock` at `mock_url`, the models of the
/// brief, fast retries; `patch` is merged over it.
pub(crate) fn advisor_config(dir: &Path, mock_url: &str, patch: Value) -> PathBuf {
    let mut config = json!({
        "store": {"url": format!("sqlite://{}", dir.join("adv.db").display())},
        "providers": [
            {"name": "mock", "kind": "openai", "base_url": format!("{mock_url}/v1")},
        ],
        "models": {
            "fast": {"provider": "mock"},
            "mid": {"provider": "mock"},
            "slow": {"provider": "mock"},
            "slowish": {"provider": "mock"},
            "broken": {"provider": "mock", "model": "fault-500", "fallbacks": ["fast"]},
            "dead": {"provider": "mock", "model": "fault-500"},
            "flaky": {"provider": "mock", "model": "fault-flaky-50"},
            "sleepy": {"provider": "mock", "model": "fault-slow"},
        },
        "advisor": {"default_models": ["fast", "mid", "slow"]},
        "engine": {"poll_interval": "200ms"},
        "resilience": {
            "retry": {"max_attempts": 4, "initial_delay": "5ms", "max_delay": "20ms"},
            "budget": {"min_retries_per_sec": 1000},
        },
    });
    merge(&mut config, patch);
    let path = dir.join("advisor.yaml");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&config).expect("render the configuration"),
    )
    .expect("write the configuration");
    path
}

/// The advisor binary running as a child process (killed on drop; its log is printed when the
/// test fails).
pub(crate) struct Advisor {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Advisor {
    /// Starts `quorum-advisor serve --config CONFIG --bind 127.0.0.1:0`, reads the bound
    /// address from its log and waits until `/startupz` answers 200.
    pub(crate) async fn start(config: &Path) -> Advisor {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quorum-advisor"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--bind")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn quorum-advisor");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = oneshot::channel::<String>();
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = addr_tx.take()
                {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut advisor = Advisor {
            child,
            base: String::new(),
            log,
        };
        let addr = match timeout(WAIT, addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "the advisor did not log its address:\n{}",
                advisor.log_text()
            ),
        };
        advisor.base = format!("http://{addr}");
        let client = Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = client.get(advisor.url("/startupz")).send().await
                && r.status() == StatusCode::OK
            {
                break;
            }
            if let Ok(Some(status)) = advisor.child.try_wait() {
                panic!("the advisor exited with {status}:\n{}", advisor.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "/startupz not 200 within {WAIT:?}:\n{}",
                advisor.log_text()
            );
            sleep(Duration::from_millis(25)).await;
        }
        advisor
    }

    /// `http://ADDR` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What it logged so far.
    pub(crate) fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// SIGKILL, and wait for the end.
    pub(crate) async fn kill9(&mut self) {
        self.child.start_kill().expect("SIGKILL the advisor");
        let status = timeout(WAIT, self.child.wait())
            .await
            .expect("the advisor dies after SIGKILL")
            .expect("wait for the advisor");
        assert!(!status.success(), "SIGKILL should not look like success");
    }

    /// Sends SIGTERM (through `kill -TERM PID`).
    pub(crate) async fn sigterm(&self) {
        let pid = self.child.id().expect("the advisor is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for the advisor"))
    }
}

impl Drop for Advisor {
    #[allow(
        clippy::print_stderr,
        reason = "a failing test's report: the advisor's log explains the failure"
    )]
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- advisor log ({}) ----\n{}---- end of advisor log ----",
                self.base,
                self.log_text()
            );
        }
    }
}

/// A response: status, headers and the body as JSON (`Value::Null` when it is not JSON).
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Reply {
    pub(crate) async fn from(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read the body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `POST url` with a JSON body.
pub(crate) async fn post(client: &Client, url: &str, body: &Value) -> Reply {
    let response = timeout(WAIT * 2, client.post(url).json(body).send())
        .await
        .unwrap_or_else(|_| panic!("POST {url}: no answer"))
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    Reply::from(response).await
}

/// `GET url`.
pub(crate) async fn get(client: &Client, url: &str) -> Reply {
    let response = timeout(WAIT, client.get(url).send())
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no answer"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Reply::from(response).await
}

/// `DELETE url`.
pub(crate) async fn delete(client: &Client, url: &str) -> Reply {
    let response = timeout(WAIT, client.delete(url).send())
        .await
        .unwrap_or_else(|_| panic!("DELETE {url}: no answer"))
        .unwrap_or_else(|e| panic!("DELETE {url}: {e}"));
    Reply::from(response).await
}

/// Polls `GET /v1/jobs/{id}` every 50 ms until `done(job)`; panics after [`WAIT`] with the last
/// view.
pub(crate) async fn wait_job(
    client: &Client,
    advisor: &Advisor,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let url = advisor.url(&format!("/v1/jobs/{id}"));
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = get(client, &url).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {url}: {}", reply.text);
        if done(&reply.body) {
            return reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "job {id}: {what} not reached within {WAIT:?}; last view: {:#}",
            reply.body
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it returns true, up to `limit`; false if it never did.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The model names of a job's results, in order.
pub(crate) fn result_models(job: &Value) -> Vec<String> {
    job["results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| r["model"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One SSE frame: an event (with its optional id) or a comment (`event` is `":"`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) id: Option<String>,
    pub(crate) event: String,
    pub(crate) data: String,
}

impl Event {
    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event {self:?}: data is not JSON: {e}"))
    }

    /// Whether this is a comment line (`: keep-alive`).
    pub(crate) fn is_comment(&self) -> bool {
        self.event == ":"
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// An SSE stream being read frame by frame.
pub(crate) struct Sse {
    body: ByteStream,
    buf: Vec<u8>,
    ended: bool,
}

impl Sse {
    /// `GET url` (with `Last-Event-ID` when given); asserts a 200 `text/event-stream` answer.
    pub(crate) async fn open(client: &Client, url: &str, last_event_id: Option<&str>) -> Sse {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = timeout(WAIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("GET {url}: no answer"))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {url}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "GET {url}: content-type {content_type}"
        );
        Sse::new(response)
    }

    /// Reads `response`'s body as SSE.
    pub(crate) fn new(response: reqwest::Response) -> Sse {
        Sse {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|b| b.to_vec())),
            ),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The next frame, `None` at the end of the stream; `Err` if nothing came within `limit`.
    pub(crate) async fn next_within(&mut self, limit: Duration) -> Result<Option<Event>, ()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8_lossy(&frame[..pos]).into_owned();
                return Ok(Some(parse_frame(&text)));
            }
            if self.ended {
                assert!(
                    self.buf.iter().all(u8::is_ascii_whitespace),
                    "the stream ended inside a frame: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(()),
                Ok(None) => self.ended = true,
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("the SSE stream failed: {e}"),
            }
        }
    }

    /// The next frame; panics if nothing came within [`WAIT`].
    pub(crate) async fn next(&mut self) -> Option<Event> {
        self.next_within(WAIT)
            .await
            .unwrap_or_else(|()| panic!("no SSE frame within {WAIT:?}"))
    }

    /// Every frame (comments left out) up to and including the first for which `stop` is true.
    pub(crate) async fn until(&mut self, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let Some(event) = self.next().await else {
                panic!("the stream ended before the awaited event; got {out:#?}");
            };
            if event.is_comment() {
                continue;
            }
            let last = stop(&event);
            out.push(event);
            if last {
                return out;
            }
        }
    }

    /// Every frame (comments left out) until the stream ends; panics if it does not end
    /// within [`WAIT`].
    pub(crate) async fn read_to_end(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(event) = self.next().await {
            if !event.is_comment() {
                out.push(event);
            }
        }
        out
    }
}

fn parse_frame(text: &str) -> Event {
    let mut event = Event {
        id: None,
        event: "message".to_owned(),
        data: String::new(),
    };
    let mut data: Vec<&str> = Vec::new();
    let mut comment = true;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix(':') {
            data.push(c.trim());
            continue;
        }
        comment = false;
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    if comment {
        event.event = ":".to_owned();
    }
    event.data = data.join("\n");
    event
}
