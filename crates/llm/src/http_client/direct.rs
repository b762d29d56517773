//! The lean client for plain-HTTP JSON posts: hyper's pooled HTTP/1.1 client with the
//! provider's default headers and timeouts, and none of reqwest's per-request machinery (URL
//! round trips, redirect and timeout layers). A gateway in front of a local or in-cluster
//! inference server (vLLM, Ollama, llama.cpp) spends a tenth of its CPU there.
//!
//! It is only used where it behaves exactly like reqwest would: `http://` base URLs with no
//! proxy set in the environment (reqwest honours `HTTP_PROXY` / `ALL_PROXY`; this client does
//! not, so any proxy setting leaves every request to reqwest).

use std::error::Error as _;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
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
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep, sleep_until};

use super::TimeoutConfig;
use crate::error::LlmError;

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
/// timeouts, `TCP_NODELAY`.
pub(super) struct Direct {
    client: Client<HttpConnector, Full<Bytes>>,
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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.connect.as_std()));
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
        body: Vec<u8>,
        accept: &'static str,
        upstream: &Arc<str>,
    ) -> Result<(StatusCode, HeaderMap, DirectBody), LlmError> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static(accept));

        let mut deadline = Deadline::start(&self.timeout);
        let mut pending = pin!(self.client.request(request));
        let head = std::future::poll_fn(|cx| {
            if let Poll::Ready(answer) = pending.as_mut().poll(cx) {
                return Poll::Ready(Ok(answer));
            }
            deadline.poll_expired(cx).map(Err)
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

/// Maps a failure of hyper's client: a connect timeout is a [`LlmError::Timeout`], another
/// connect failure or a failed exchange a [`LlmError::Transport`] (what reqwest's mapping gives).
fn map_client_error(error: hyper_util::client::legacy::Error, upstream: &str) -> LlmError {
    let mut cause = error.source();
    let mut timed_out = false;
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        cause = e.source();
    }
    if timed_out {
        LlmError::timeout(format!("connecting to {upstream}"), Some(Box::new(error)))
    } else if error.is_connect() {
        LlmError::transport(format!("cannot connect to {upstream}"), error)
    } else {
        LlmError::transport(format!("the request to {upstream} failed"), error)
    }
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
        let message = match self {
            Expired::Request => format!("the request to {upstream}"),
            Expired::Read(read) => format!(
                "the request to {upstream} (no data for {})",
                quorum_config::Duration::from(read)
            ),
        };
        LlmError::timeout(message, None)
    }
}

/// The request deadline and, when configured, the read deadline that each received frame
/// pushes back.
struct Deadline {
    request: Pin<Box<Sleep>>,
    read: Option<(StdDuration, Pin<Box<Sleep>>)>,
}

impl Deadline {
    fn start(timeout: &TimeoutConfig) -> Self {
        let now = Instant::now();
        Deadline {
            request: Box::pin(sleep_until(now + timeout.request.as_std())),
            read: timeout.read.map(|read| {
                let read = read.as_std();
                (read, Box::pin(sleep_until(now + read)))
            }),
        }
    }

    /// Ready with the limit that passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        if self.request.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Expired::Request);
        }
        if let Some((read, sleep)) = &mut self.read
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Expired::Read(*read));
        }
        Poll::Pending
    }

    /// Data arrived: the read deadline starts again.
    fn progressed(&mut self) {
        if let Some((read, sleep)) = &mut self.read {
            sleep.as_mut().reset(Instant::now() + *read);
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
                    return match this.deadline.poll_expired(cx) {
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
