//! The lean client for plain-HTTP JSON posts: hyper's pooled HTTP/1.1 client with the
//! provider's default headers and timeouts, and none of reqwest's per-request machinery (URL
//! round trips, redirect and timeout layers). A gateway in front of a local or in-cluster
//! inference server (vLLM, Ollama, llama.cpp) spends a tenth of its CPU there.
//!
//! It sets up connections as reqwest does (`TCP_NODELAY`, TCP keep-alive 15 s × 3, a 30 s
//! `TCP_USER_TIMEOUT` on Linux, the connect timeout over DNS and connect, 90 s idle pool) and
//! keeps reqwest's timeout semantics (the request timeout covers the whole body; the read
//! timeout is silence while the body is being waited for). What it does not do is left to
//! reqwest: [`HttpEndpoint`](super::HttpEndpoint) only uses it for `http://` base URLs without
//! credentials, when no proxy is set in the environment, and sends a redirected request again
//! through reqwest, which follows it.

use std::error::Error as _;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration as StdDuration;

use bytes::Bytes;
use futures_util::Stream;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep_until};

use super::{TimeoutConfig, request_timed_out};
use crate::error::{BoxError, LlmError};

/// The environment variables through which reqwest picks up a proxy for `http://` URLs.
const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// Whether the environment (read through `var`) sets a proxy that reqwest would use for plain
/// HTTP. Any non-empty value counts, `NO_PROXY` exceptions included: then reqwest decides.
pub(super) fn proxy_in_env(var: impl Fn(&str) -> Option<OsString>) -> bool {
    PROXY_VARS
        .iter()
        .any(|name| var(name).is_some_and(|value| !value.is_empty()))
}

/// hyper's client with what reqwest would add to each request: the default headers, the
/// timeouts, its socket options.
pub(super) struct Direct {
    client: Client<TimedConnector, Full<Bytes>>,
    headers: HeaderMap,
    timeout: TimeoutConfig,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The headers hold the API key (marked sensitive, which `HeaderMap`'s Debug honours).
        f.debug_struct("Direct")
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// A client sending `headers` with every request, within `timeout`.
    pub(super) fn new(headers: HeaderMap, timeout: TimeoutConfig) -> Self {
        // reqwest's defaults: a dead peer is noticed in under a minute even with no timeout set.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(StdDuration::from_secs(15)));
        connector.set_keepalive_interval(Some(StdDuration::from_secs(15)));
        connector.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        connector.set_tcp_user_timeout(Some(StdDuration::from_secs(30)));
        let connector = TimedConnector {
            inner: connector,
            timeout: timeout.connect.as_std(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(StdDuration::from_secs(90))
            .build(connector);
        Direct {
            client,
            headers,
            timeout,
        }
    }

    /// Posts `body` as JSON to `uri` and waits for the answer's head (any status); the body is
    /// read later, under the same deadline.
    ///
    /// # Errors
    ///
    /// [`LlmError::Timeout`] when the request or read timeout passes first,
    /// [`LlmError::Transport`] when no answer came.
    pub(super) async fn post_json(
        &self,
        uri: Uri,
        body: Bytes,
        accept: &'static str,
        upstream: &Arc<str>,
    ) -> Result<(StatusCode, HeaderMap, DirectBody), LlmError> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static(accept));

        let mut deadline = Deadline::start(&self.timeout);
        let mut pending = pin!(self.client.request(request));
        let head = std::future::poll_fn(|cx| {
            if let Poll::Ready(expired) = deadline.poll_request(cx) {
                return Poll::Ready(Err(expired));
            }
            if let Poll::Ready(answer) = pending.as_mut().poll(cx) {
                return Poll::Ready(Ok(answer));
            }
            deadline.poll_read(cx).map(Err)
        })
        .await;
        let response = match head {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(map_client_error(error, upstream)),
            Err(expired) => return Err(expired.error(upstream)),
        };
        deadline.progressed();
        let (head, body) = response.into_parts();
        let body = DirectBody {
            body,
            deadline,
            upstream: Arc::clone(upstream),
            done: false,
        };
        Ok((head.status, head.headers, body))
    }
}

/// [`HttpConnector`] with the connect timeout over the whole connect, name resolution included
/// (the connector's own timeout covers only the TCP connects), as reqwest does.
#[derive(Clone)]
struct TimedConnector {
    inner: HttpConnector,
    timeout: StdDuration,
}

impl tower_service::Service<Uri> for TimedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        // Once per new connection, not per request: the box is no cost worth avoiding.
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into()),
            }
        })
    }
}

/// Maps a failure of hyper's client as [`map_reqwest`](super::map_reqwest) maps reqwest's: a
/// connect timeout is a [`LlmError::Timeout`], another connect failure or a failed exchange a
/// [`LlmError::Transport`].
fn map_client_error(error: hyper_util::client::legacy::Error, upstream: &str) -> LlmError {
    if !error.is_connect() {
        return LlmError::transport(format!("the request to {upstream} failed"), error);
    }
    let mut cause = error.source();
    while let Some(e) = cause {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return request_timed_out(upstream, "", Some(Box::new(error)));
        }
        cause = e.source();
    }
    LlmError::transport(format!("cannot connect to {upstream}"), error)
}

/// Which limit passed.
#[derive(Debug, Clone, Copy)]
enum Expired {
    /// The whole request (`timeout.request`).
    Request,
    /// Silence between two reads (`timeout.read`).
    Read(StdDuration),
}

impl Expired {
    fn error(self, upstream: &str) -> LlmError {
        match self {
            Expired::Request => request_timed_out(upstream, "", None),
            Expired::Read(read) => {
                let detail = format!(" (no data for {})", quorum_config::Duration::from(read));
                request_timed_out(upstream, &detail, None)
            }
        }
    }
}

/// The request deadline and, when configured, the read deadline: armed when the answer is
/// waited for, disarmed when data arrives (reqwest's semantics).
struct Deadline {
    request: Pin<Box<Sleep>>,
    read: Option<ReadDeadline>,
}

struct ReadDeadline {
    limit: StdDuration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

/// `now + limit`, or a date decades away when that does not fit (a configured `10000000d`).
fn after(now: Instant, limit: StdDuration) -> Instant {
    now.checked_add(limit)
        .unwrap_or_else(|| now + StdDuration::from_secs(30 * 365 * 86_400))
}

impl Deadline {
    fn start(timeout: &TimeoutConfig) -> Self {
        let now = Instant::now();
        Deadline {
            request: Box::pin(sleep_until(after(now, timeout.request.as_std()))),
            read: timeout.read.map(|read| {
                let limit = read.as_std();
                ReadDeadline {
                    limit,
                    sleep: Box::pin(sleep_until(after(now, limit))),
                    armed: true,
                }
            }),
        }
    }

    /// Ready when the request's time is up.
    fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        self.request.as_mut().poll(cx).map(|()| Expired::Request)
    }

    /// Called while waiting for data: arms the read deadline if data came since it was last
    /// armed; ready when it passes.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        let Some(read) = &mut self.read else {
            return Poll::Pending;
        };
        if !read.armed {
            let at = after(Instant::now(), read.limit);
            read.sleep.as_mut().reset(at);
            read.armed = true;
        }
        read.sleep
            .as_mut()
            .poll(cx)
            .map(|()| Expired::Read(read.limit))
    }

    /// Data arrived: the next wait starts the read deadline again.
    fn progressed(&mut self) {
        if let Some(read) = &mut self.read {
            read.armed = false;
        }
    }
}

/// The body of a direct answer, as a stream of chunks under the request's deadlines. After an
/// error it ends.
pub(crate) struct DirectBody {
    body: Incoming,
    deadline: Deadline,
    upstream: Arc<str>,
    done: bool,
}

impl fmt::Debug for DirectBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectBody")
            .field("upstream", &self.upstream)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Stream for DirectBody {
    type Item = Result<Bytes, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        // First, so that a body that never stops still ends at the request timeout.
        if let Poll::Ready(expired) = this.deadline.poll_request(cx) {
            this.done = true;
            return Poll::Ready(Some(Err(expired.error(&this.upstream))));
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.deadline.progressed();
                    match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        _ => {} // an empty chunk or trailers
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(LlmError::transport(
                        "reading the response body failed",
                        error,
                    ))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    return match this.deadline.poll_read(cx) {
                        Poll::Ready(expired) => {
                            this.done = true;
                            Poll::Ready(Some(Err(expired.error(&this.upstream))))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_proxy_variable_leaves_requests_to_reqwest() {
        let none = |_: &str| None;
        assert!(!proxy_in_env(none));
        let empty = |_: &str| Some(OsString::new());
        assert!(!proxy_in_env(empty));
        for name in PROXY_VARS {
            let set = |var: &str| (var == name).then(|| OsString::from("http://proxy:3128"));
            assert!(proxy_in_env(set), "{name}");
        }
        let https_only = |var: &str| (var == "HTTPS_PROXY").then(|| OsString::from("http://p"));
        assert!(!proxy_in_env(https_only));
    }
}
