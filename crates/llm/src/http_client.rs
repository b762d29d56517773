//! HTTP plumbing shared by provider crates (feature `http`): building a provider's
//! [`HttpClient`] from its config, joining endpoint paths to its base URL, sending a request and
//! turning a non-2xx answer into its classified [`LlmError`], mapping transport failures, and
//! driving a streamed body through a dialect's decoder.
//!
//! JSON posts ([`HttpEndpoint::post_json`], what every chat call is) to a plain `http://` base URL
//! go through hyper's pooled client directly when no proxy is set in the environment; everything
//! else (HTTPS, proxies, credentials in the URL, redirects, `GET`s) through reqwest. To the
//! caller both send the same headers under the same timeouts and fail with the same error
//! classes.
//!
//! What stays in each provider crate is its dialect: the wire types, how its error bodies read
//! (the `error_hint` function an [`HttpEndpoint`] is given), extra base-URL rules, and the
//! stream decoder ([`crate::sse::SseParser`] for event streams, a line splitter for
//! newline-delimited JSON).
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use quorum_llm::ErrorHint;
//! use quorum_llm::http_client::{ClientBuilder, HttpEndpoint, TimeoutConfig, parse_base_url};
//!
//! let base = parse_base_url("http://localhost:8080/v1")?;
//! let mut builder = ClientBuilder::new("local", &BTreeMap::new())?;
//! builder.sensitive_header("authorization", "api_key", "Bearer sk-...")?;
//! let client = builder.build(&TimeoutConfig::default())?;
//! let endpoint = HttpEndpoint::new(client, base.as_str(), "the provider", |_| ErrorHint::default());
//! assert_eq!(endpoint.url("chat/completions"), "http://localhost:8080/v1/chat/completions");
//!
//! // Bad values name the field.
//! let mut builder = ClientBuilder::new("local", &BTreeMap::new())?;
//! let err = builder.header("x-title", "openrouter.title", "a\nb").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid config for provider \"local\": openrouter.title: invalid header value"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod direct;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, IntoHeaderName,
};
use http::{StatusCode, Uri};
use quorum_config::Duration;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{BoxError, ErrorHint, LlmError, classify_http};
use crate::provider::{ChatStream, guard_stream};
use crate::types::{RateLimitInfo, StreamItem};
use direct::{Direct, DirectBody};

/// Timeouts of one endpoint, the `timeout` section of a provider's config.
///
/// ```yaml
/// timeout: { connect: 5s, request: 10m, read: 1m }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Establishing a connection (name resolution, TCP, TLS). Default `10s`.
    pub connect: Duration,
    /// The whole request, including reading a streamed body (and, for a local server, loading
    /// the model). Default `10m` (what the official SDKs use).
    pub request: Duration,
    /// The longest silence between two reads of the body (no default: off; some servers send
    /// keep-alive events in long streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<Duration>,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(600),
            read: None,
        }
    }
}

impl TimeoutConfig {
    /// Sets these timeouts on a client builder.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let builder = builder
            .connect_timeout(self.connect.as_std())
            .timeout(self.request.as_std());
        match self.read {
            Some(read) => builder.read_timeout(read.as_std()),
            None => builder,
        }
    }
}

/// Parses and checks a provider's base URL: it must parse, be `http` or `https`, have a host,
/// and carry no query or fragment. Provider crates add their own path rules on top (refusing
/// a version path their endpoints already include...).
///
/// ```
/// use quorum_llm::http_client::parse_base_url;
///
/// assert_eq!(parse_base_url("https://api.openai.com/v1")?.path(), "/v1");
/// assert_eq!(
///     parse_base_url("htp:/x").unwrap_err().to_string(),
///     "invalid URL \"htp:/x\": scheme \"htp\" is not http or https"
/// );
/// # Ok::<(), quorum_llm::http_client::BaseUrlError>(())
/// ```
///
/// # Errors
///
/// [`BaseUrlError`] naming the URL and what is wrong with it.
pub fn parse_base_url(text: &str) -> Result<Url, BaseUrlError> {
    let url = Url::parse(text).map_err(|reason| BaseUrlError::Unparsable {
        url: text.to_owned(),
        reason,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BaseUrlError::Scheme {
            url: text.to_owned(),
            scheme: url.scheme().to_owned(),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BaseUrlError::NoHost {
            url: text.to_owned(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BaseUrlError::QueryOrFragment {
            url: text.to_owned(),
        });
    }
    Ok(url)
}

/// Why [`parse_base_url`] refused a base URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BaseUrlError {
    /// The text is not a URL.
    #[error("invalid URL {url:?}: {reason}")]
    Unparsable {
        /// The text given.
        url: String,
        /// What the URL parser said.
        reason: url::ParseError,
    },
    /// The scheme is not `http` or `https`.
    #[error("invalid URL {url:?}: scheme {scheme:?} is not http or https")]
    Scheme {
        /// The text given.
        url: String,
        /// The scheme it has.
        scheme: String,
    },
    /// The URL has no host.
    #[error("invalid URL {url:?}: no host")]
    NoHost {
        /// The text given.
        url: String,
    },
    /// The URL has a query or a fragment.
    #[error("invalid URL {url:?}: a base URL takes no query or fragment")]
    QueryOrFragment {
        /// The text given.
        url: String,
    },
}

/// A serde `serialize_with` helper: a [`Url`] as its text.
///
/// # Errors
///
/// Whatever the serializer returns.
pub fn serialize_url<S: serde::Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(url.as_str())
}

/// A serde `serialize_with` helper: an optional [`Url`] as its text, or none.
///
/// # Errors
///
/// Whatever the serializer returns.
pub fn serialize_optional_url<S: serde::Serializer>(
    url: &Option<Url>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(url.as_str()),
        None => serializer.serialize_none(),
    }
}

/// Builds a provider's HTTP client: its default headers (the config's extra `headers` first,
/// then the provider's own, which win) and its [`TimeoutConfig`].
///
/// Every error is an [`LlmError::Config`] for the provider that names the config field.
#[derive(Debug)]
pub struct ClientBuilder<'a> {
    provider: &'a str,
    headers: HeaderMap,
}

impl<'a> ClientBuilder<'a> {
    /// Starts with the config's extra headers (field `headers.{name}`) for the provider
    /// instance `provider`.
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] naming `headers.{name}` when a name or value is not a valid header.
    pub fn new(provider: &'a str, extra: &BTreeMap<String, String>) -> Result<Self, LlmError> {
        let mut builder = ClientBuilder {
            provider,
            headers: HeaderMap::new(),
        };
        for (key, value) in extra {
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                builder.config_error(format!("headers.{key}: invalid header name {key:?}"))
            })?;
            let value = builder.value(&format!("headers.{key}"), value)?;
            builder.headers.insert(name, value);
        }
        Ok(builder)
    }

    /// Sets a header from the config field `field`, replacing any extra header of that name.
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] naming `field` when `value` is not a valid header value.
    pub fn header(
        &mut self,
        name: impl IntoHeaderName,
        field: &str,
        value: &str,
    ) -> Result<&mut Self, LlmError> {
        let value = self.value(field, value)?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Like [`ClientBuilder::header`] for a secret (an API key): the value is marked sensitive
    /// and never appears in an error.
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] naming `field` when `value` is not a valid header value.
    pub fn sensitive_header(
        &mut self,
        name: impl IntoHeaderName,
        field: &str,
        value: &str,
    ) -> Result<&mut Self, LlmError> {
        let mut value = self.value(field, value)?;
        value.set_sensitive(true);
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Sets `Authorization: Bearer {token}` from the config field `field`, marked sensitive
    /// (the token never appears in an error).
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] naming `field` when the token is not a valid header value.
    pub fn bearer_auth(&mut self, field: &str, token: &str) -> Result<&mut Self, LlmError> {
        self.sensitive_header(AUTHORIZATION, field, &format!("Bearer {token}"))
    }

    /// Builds the client with these default headers and `timeout`.
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] when the HTTP client cannot be built (its TLS backend fails to
    /// load...).
    pub fn build(self, timeout: &TimeoutConfig) -> Result<HttpClient, LlmError> {
        let proxy = direct::proxy_in_env(|name| std::env::var_os(name));
        self.build_with(timeout, proxy)
    }

    /// [`ClientBuilder::build`] with the environment's proxy setting given.
    fn build_with(self, timeout: &TimeoutConfig, proxy: bool) -> Result<HttpClient, LlmError> {
        let direct = (!proxy).then(|| Arc::new(Direct::new(self.headers.clone(), *timeout)));
        let builder = reqwest::Client::builder().default_headers(self.headers);
        let reqwest = timeout
            .apply(builder)
            .build()
            .map_err(|e| LlmError::Config {
                name: self.provider.to_owned(),
                message: "cannot build the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(HttpClient { reqwest, direct })
    }

    fn value(&self, field: &str, value: &str) -> Result<HeaderValue, LlmError> {
        HeaderValue::from_str(value)
            .map_err(|_| self.config_error(format!("{field}: invalid header value")))
    }

    fn config_error(&self, message: String) -> LlmError {
        LlmError::Config {
            name: self.provider.to_owned(),
            message,
            source: None,
        }
    }
}

/// A provider's HTTP client, built by [`ClientBuilder::build`]: reqwest with the provider's
/// default headers and timeouts, and (unless the environment sets a proxy) a lean client with the
/// same headers and timeouts for JSON posts to plain-HTTP endpoints (see
/// [`HttpEndpoint::post_json`]).
///
/// Cheap to clone: the connection pools are shared.
#[derive(Debug, Clone)]
pub struct HttpClient {
    reqwest: reqwest::Client,
    direct: Option<Arc<Direct>>,
}

/// Maps a reqwest failure to its class, keeping it as the source. `upstream` names what was
/// called in the messages (`"the provider"`: "cannot connect to the provider").
///
/// Timeouts become [`LlmError::Timeout`], a bad request (an invalid URL...)
/// [`LlmError::InvalidRequest`], everything else (connect, body, decode...)
/// [`LlmError::Transport`].
#[must_use]
pub fn map_reqwest(error: reqwest::Error, upstream: &str) -> LlmError {
    if error.is_timeout() {
        request_timed_out(upstream, "", Some(Box::new(error)))
    } else if error.is_connect() {
        LlmError::transport(format!("cannot connect to {upstream}"), error)
    } else if error.is_body() || error.is_decode() {
        LlmError::transport("reading the response body failed", error)
    } else if error.is_builder() {
        LlmError::InvalidRequest {
            message: format!("cannot build the HTTP request: {error}"),
        }
    } else {
        LlmError::transport(format!("the request to {upstream} failed"), error)
    }
}

/// The timeout error of a request to `upstream`, with `detail` appended to its message (both
/// clients word it the same).
fn request_timed_out(upstream: &str, detail: &str, source: Option<BoxError>) -> LlmError {
    LlmError::timeout(format!("the request to {upstream}{detail}"), source)
}

/// The body of an answer as a stream of chunks; a failed read is its classified error.
type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, LlmError>> + Send>>;

/// A 2xx answer (from [`HttpEndpoint::post_json`] or [`HttpEndpoint::send`]): its headers
/// now, its body when read ([`Answer::bytes`]) or streamed ([`HttpEndpoint::chat_stream`]).
pub struct Answer {
    inner: AnswerInner,
}

enum AnswerInner {
    /// With the name of what was called, for reqwest's body errors (a direct body has it).
    Reqwest(reqwest::Response, Arc<str>),
    Direct {
        status: StatusCode,
        headers: HeaderMap,
        body: DirectBody,
    },
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status())
            .field("headers", self.headers())
            .finish_non_exhaustive()
    }
}

impl Answer {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match &self.inner {
            AnswerInner::Reqwest(response, _) => response.status(),
            AnswerInner::Direct { status, .. } => *status,
        }
    }

    /// The answer's headers.
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        match &self.inner {
            AnswerInner::Reqwest(response, _) => response.headers(),
            AnswerInner::Direct { headers, .. } => headers,
        }
    }

    /// The server's rate-limit state read from the headers ([`RateLimitInfo::from_headers`];
    /// `None` when it sent none).
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimitInfo> {
        RateLimitInfo::from_headers(self.headers())
    }

    /// Reads the whole body.
    ///
    /// # Errors
    ///
    /// [`LlmError::Transport`] when reading fails, [`LlmError::Timeout`] when a timeout passes.
    pub async fn bytes(self) -> Result<Bytes, LlmError> {
        match self.inner {
            AnswerInner::Reqwest(response, upstream) => response
                .bytes()
                .await
                .map_err(|e| map_reqwest(e, &upstream)),
            AnswerInner::Direct { mut body, .. } => {
                let Some(first) = body.next().await.transpose()? else {
                    return Ok(Bytes::new());
                };
                let Some(second) = body.next().await.transpose()? else {
                    return Ok(first); // the common case: one chunk, no copy
                };
                let mut all = BytesMut::with_capacity(first.len() + second.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&second);
                while let Some(chunk) = body.next().await.transpose()? {
                    all.extend_from_slice(&chunk);
                }
                Ok(all.freeze())
            }
        }
    }

    /// The body as a stream of chunks.
    fn into_stream(self) -> ByteStream {
        match self.inner {
            AnswerInner::Reqwest(response, upstream) => Box::pin(
                response
                    .bytes_stream()
                    .map(move |chunk| chunk.map_err(|e| map_reqwest(e, &upstream))),
            ),
            AnswerInner::Direct { body, .. } => Box::pin(body),
        }
    }
}

/// A dialect's stream decoder: turns the chunks of a streamed body into [`StreamItem`]s, which
/// it queues until [`HttpEndpoint::chat_stream`] takes them.
///
/// Once it has queued a terminal item (the final [`StreamItem::Done`] or an error) it reports
/// [`StreamDecoder::is_finished`] and no more of the body is read.
pub trait StreamDecoder: Send + 'static {
    /// Decodes the next chunk of the body (any split: inside a line, a character...).
    fn feed(&mut self, chunk: &[u8]);

    /// The body ended: decode what is left and, if the stream's terminal marker never came,
    /// queue [`LlmError::StreamTruncated`].
    fn end(&mut self);

    /// Reading the body failed: queue `error` as the terminal item.
    fn fail(&mut self, error: LlmError);

    /// Takes the next queued item.
    fn next_item(&mut self) -> Option<Result<StreamItem, LlmError>>;

    /// Whether a terminal item has been queued.
    fn is_finished(&self) -> bool;
}

/// One provider endpoint: the HTTP client, the base URL that paths are joined to, a name for
/// what is called (in transport error messages) and how to read the dialect's error bodies.
///
/// Cheap to clone: the connection pools are shared.
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    client: reqwest::Client,
    /// The lean client, for JSON posts when the base URL is plain HTTP without credentials and
    /// no proxy is set.
    direct: Option<Arc<Direct>>,
    /// The base URL as text, ending with `/`.
    base: String,
    upstream: Arc<str>,
    error_hint: fn(&str) -> ErrorHint,
    /// Endpoint URLs parsed once (a provider calls a handful of paths): parsing a URL per
    /// request (IDNA included) is a measurable share of a gateway's CPU.
    parsed: Arc<RwLock<HashMap<String, Target>>>,
}

/// An endpoint URL, parsed for each client.
#[derive(Debug, Clone)]
struct Target {
    url: reqwest::Url,
    /// For the lean client; `None` when it has none or the URL is not a valid `Uri`.
    uri: Option<Uri>,
}

impl HttpEndpoint {
    /// An endpoint below `base_url` (with or without a trailing `/`). `upstream` names what is
    /// called in transport errors (see [`map_reqwest`]); `error_hint` reads the dialect's error
    /// body of a non-2xx answer for [`classify_http`].
    #[must_use]
    pub fn new(
        client: HttpClient,
        base_url: &str,
        upstream: impl Into<String>,
        error_hint: fn(&str) -> ErrorHint,
    ) -> Self {
        let mut base = base_url.trim_end_matches('/').to_owned();
        base.push('/');
        // reqwest turns credentials in the URL into a Basic `Authorization` header.
        let plain_http = reqwest::Url::parse(&base).is_ok_and(|url| {
            url.scheme() == "http" && url.username().is_empty() && url.password().is_none()
        });
        HttpEndpoint {
            client: client.reqwest,
            direct: client.direct.filter(|_| plain_http),
            base,
            upstream: Arc::from(upstream.into()),
            error_hint,
            parsed: Arc::default(),
        }
    }

    /// The parsed URLs of `path` below the base URL, from the cache when seen before; `None`
    /// when it does not parse (the request then fails in reqwest with its own error).
    fn target(&self, path: &str) -> Option<Target> {
        if let Some(target) = self
            .parsed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return Some(target.clone());
        }
        let url = reqwest::Url::parse(&self.url(path)).ok()?;
        let uri = self
            .direct
            .as_ref()
            .and_then(|_| url.as_str().parse::<Uri>().ok());
        let target = Target { url, uri };
        let mut cache = self.parsed.write().unwrap_or_else(PoisonError::into_inner);
        // Paths come from provider code, not from requests; the bound is a safety net.
        if cache.len() < 64 {
            cache.insert(path.to_owned(), target.clone());
        }
        Some(target)
    }

    /// The reqwest client.
    #[must_use]
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Whether JSON posts go through the lean client (a plain-HTTP base URL, no proxy set).
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The URL of an endpoint below the base URL (`"v1/messages"` below
    /// `https://api.example.com` is `https://api.example.com/v1/messages`).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A `GET` of `path` below the base URL, to send with [`HttpEndpoint::send`].
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.reqwest(reqwest::Method::GET, path, self.target(path))
    }

    /// A reqwest request to `path`, at its parsed URL when there is one (else reqwest reports
    /// the bad URL when the request is sent).
    fn reqwest(
        &self,
        method: reqwest::Method,
        path: &str,
        target: Option<Target>,
    ) -> reqwest::RequestBuilder {
        match target {
            Some(target) => self.client.request(method, target.url),
            None => self.client.request(method, self.url(path)),
        }
    }

    /// Maps a reqwest failure of this endpoint (see [`map_reqwest`]).
    #[must_use]
    pub fn map_error(&self, error: reqwest::Error) -> LlmError {
        map_reqwest(error, &self.upstream)
    }

    /// Posts `body`, already serialized as JSON, to `path` below the base URL with
    /// `Accept: {accept}`; a non-2xx answer becomes its classified error.
    ///
    /// Through the lean client when the endpoint [`is_direct`](HttpEndpoint::is_direct), else
    /// through reqwest; the same headers, timeouts and error classes either way. A redirect
    /// answered to the lean client is sent again through reqwest, which follows it.
    ///
    /// # Errors
    ///
    /// As [`HttpEndpoint::send`].
    pub async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
        accept: &'static str,
    ) -> Result<Answer, LlmError> {
        let body = Bytes::from(body);
        let target = self.target(path);
        if let (Some(direct), Some(Target { uri: Some(uri), .. })) = (&self.direct, &target) {
            let (status, headers, answer_body) = direct
                .post_json(uri.clone(), body.clone(), accept, &self.upstream)
                .await?;
            if !status.is_redirection() {
                let answer = Answer {
                    inner: AnswerInner::Direct {
                        status,
                        headers,
                        body: answer_body,
                    },
                };
                return self.successful(answer).await;
            }
        }
        let request = self.reqwest(reqwest::Method::POST, path, target);
        self.send(
            request
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, accept)
                .body(body),
        )
        .await
    }

    /// Serializes `body` as JSON and posts it (see [`HttpEndpoint::post_json`]).
    ///
    /// # Errors
    ///
    /// [`LlmError::InvalidRequest`] when `body` does not serialize; then as
    /// [`HttpEndpoint::post_json`].
    pub async fn post_value<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        accept: &'static str,
    ) -> Result<Answer, LlmError> {
        let body = serde_json::to_vec(body).map_err(|e| LlmError::InvalidRequest {
            message: format!("cannot serialize the request body: {e}"),
        })?;
        self.post_json(path, body, accept).await
    }

    /// Sends a request built on [`HttpEndpoint::get`] (or [`HttpEndpoint::client`]); a non-2xx
    /// answer becomes its classified error ([`classify_http`] with the status, the headers, the
    /// body and what the dialect's `error_hint` read from it).
    ///
    /// # Errors
    ///
    /// The classified error of a non-2xx answer; a transport error (see [`map_reqwest`]) when
    /// no answer came.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, LlmError> {
        let response = request.send().await.map_err(|e| self.map_error(e))?;
        self.successful(Answer {
            inner: AnswerInner::Reqwest(response, Arc::clone(&self.upstream)),
        })
        .await
    }

    /// The answer when it is a 2xx, else its classified error.
    async fn successful(&self, answer: Answer) -> Result<Answer, LlmError> {
        let status = answer.status();
        if status.is_success() {
            return Ok(answer);
        }
        let headers = answer.headers().clone();
        let body = match answer.bytes().await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => String::new(), // the status alone still classifies
        };
        let hint = (self.error_hint)(&body);
        Err(classify_http(status.as_u16(), &headers, &body, &hint))
    }

    /// Sends a request and reads the whole body of its 2xx answer.
    ///
    /// # Errors
    ///
    /// As [`HttpEndpoint::send`]; a transport error when reading the body fails.
    pub async fn send_bytes(&self, request: reqwest::RequestBuilder) -> Result<Bytes, LlmError> {
        self.send(request).await?.bytes().await
    }

    /// The chat stream of a streamed answer: its body is fed to `decoder` chunk by chunk, and
    /// the decoder's items are yielded, through [`guard_stream`]. A failed read is the
    /// decoder's terminal error; the end of the body is [`StreamDecoder::end`].
    ///
    /// Dropping the stream drops the body, which closes the connection.
    #[must_use]
    pub fn chat_stream<D: StreamDecoder>(&self, answer: Answer, decoder: D) -> ChatStream {
        let body = answer.into_stream();
        let stream =
            futures_util::stream::unfold((body, decoder), |(mut body, mut decoder)| async move {
                loop {
                    if let Some(item) = decoder.next_item() {
                        return Some((item, (body, decoder)));
                    }
                    if decoder.is_finished() {
                        return None;
                    }
                    match body.next().await {
                        Some(Ok(bytes)) => decoder.feed(&bytes),
                        Some(Err(e)) => decoder.fail(e),
                        None => decoder.end(),
                    }
                }
            });
        guard_stream(stream)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorKind;

    use super::*;

    fn no_hint(_: &str) -> ErrorHint {
        ErrorHint::default()
    }

    /// An endpoint built as if no proxy were set in the environment.
    fn endpoint(base: &str) -> HttpEndpoint {
        let client = ClientBuilder::new("p", &BTreeMap::new())
            .unwrap()
            .build_with(&TimeoutConfig::default(), false)
            .unwrap();
        HttpEndpoint::new(client, base, "the test server", no_hint)
    }

    #[test]
    fn base_urls_are_checked() {
        let cases = [
            (
                "htp:/x",
                "invalid URL \"htp:/x\": scheme \"htp\" is not http or https",
            ),
            (
                "not a url",
                "invalid URL \"not a url\": relative URL without a base",
            ),
            (
                "http://h/v1?x=1",
                "invalid URL \"http://h/v1?x=1\": a base URL takes no query or fragment",
            ),
            (
                "http://h/#top",
                "invalid URL \"http://h/#top\": a base URL takes no query or fragment",
            ),
            ("file:///tmp", "scheme \"file\" is not http or https"),
            ("http://", "invalid URL \"http://\": empty host"),
            ("", "invalid URL \"\": relative URL without a base"),
        ];
        for (text, want) in cases {
            let err = parse_base_url(text).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{text:?}: {err:?} does not contain {want:?}"
            );
        }
        let url = parse_base_url("https://openrouter.ai/api/v1/").unwrap();
        assert_eq!(url.as_str(), "https://openrouter.ai/api/v1/");
    }

    #[test]
    fn timeouts_default_parse_and_name_bad_fields() {
        let t = TimeoutConfig::default();
        assert_eq!(t.connect, Duration::from_secs(10));
        assert_eq!(t.request, Duration::from_secs(600));
        assert_eq!(t.read, None);
        let parsed: TimeoutConfig =
            crate::parse_config("p", serde_json::json!({"read": "30s"})).unwrap();
        assert_eq!(parsed.read, Some(Duration::from_secs(30)));
        assert_eq!(parsed.connect, Duration::from_secs(10));
        let err = crate::parse_config::<TimeoutConfig>("p", serde_json::json!({"conect": "3s"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `conect`"), "{err}");
        let json = serde_json::to_value(t).unwrap();
        assert!(json.get("read").is_none(), "{json}");
    }

    #[test]
    fn url_serializers_write_text_or_none() {
        let url = parse_base_url("http://h:1/v1").unwrap();
        let text = serialize_url(&url, serde_json::value::Serializer).unwrap();
        assert_eq!(text, serde_json::json!("http://h:1/v1"));
        let some = serialize_optional_url(&Some(url), serde_json::value::Serializer).unwrap();
        assert_eq!(some, serde_json::json!("http://h:1/v1"));
        let none = serialize_optional_url(&None, serde_json::value::Serializer).unwrap();
        assert_eq!(none, serde_json::Value::Null);
    }

    #[test]
    fn header_errors_name_the_field_and_hide_secrets() {
        let mut extra = BTreeMap::new();
        extra.insert("bad header".to_owned(), "x".to_owned());
        let err = ClientBuilder::new("p", &extra).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(
            err.to_string(),
            "invalid config for provider \"p\": headers.bad header: invalid header name \"bad header\""
        );
        let mut extra = BTreeMap::new();
        extra.insert("x-team".to_owned(), "a\nb".to_owned());
        let err = ClientBuilder::new("p", &extra).unwrap_err().to_string();
        assert!(
            err.ends_with("headers.x-team: invalid header value"),
            "{err}"
        );

        let mut builder = ClientBuilder::new("p", &BTreeMap::new()).unwrap();
        let err = builder
            .sensitive_header("x-api-key", "api_key", "sk\nsecret")
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("api_key: invalid header value"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = builder
            .bearer_auth("api_key", "tok\nsecret")
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("api_key: invalid header value"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        builder.bearer_auth("api_key", "sk-2").unwrap();
        assert_eq!(builder.headers[AUTHORIZATION], "Bearer sk-2");
        assert!(builder.headers[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn provider_headers_win_over_extra_ones_and_secrets_are_sensitive() {
        let mut extra = BTreeMap::new();
        extra.insert("x-api-key".to_owned(), "from-extra".to_owned());
        extra.insert("x-team".to_owned(), "core".to_owned());
        let mut builder = ClientBuilder::new("p", &extra).unwrap();
        builder
            .sensitive_header("x-api-key", "api_key", "sk-1")
            .unwrap()
            .header("anthropic-version", "version", "2023-06-01")
            .unwrap();
        assert_eq!(builder.headers["x-api-key"], "sk-1");
        assert!(builder.headers["x-api-key"].is_sensitive());
        assert_eq!(builder.headers["x-team"], "core");
        assert_eq!(builder.headers["anthropic-version"], "2023-06-01");
        assert!(builder.build(&TimeoutConfig::default()).is_ok());
    }

    #[test]
    fn urls_join_below_the_base_path() {
        for base in [
            "http://h:1/api/v1",
            "http://h:1/api/v1/",
            "http://h:1/api/v1//",
        ] {
            let e = endpoint(base);
            assert_eq!(
                e.url("chat/completions"),
                "http://h:1/api/v1/chat/completions"
            );
        }
        assert_eq!(
            endpoint("http://h:1").url("api/tags"),
            "http://h:1/api/tags"
        );
    }

    #[tokio::test]
    async fn transport_failures_are_classified() {
        // A loopback port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = endpoint(&format!("http://127.0.0.1:{port}"));
        let refused = e.send_bytes(e.get("x")).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Transport);
        assert_eq!(
            refused.to_string(),
            "transport error: cannot connect to the test server"
        );
        assert!(refused.is_retryable());
        let refused = e.post_json("x", Vec::new(), "*/*").await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Transport);
        assert_eq!(
            refused.to_string(),
            "transport error: cannot connect to the test server"
        );

        let bad = e.send(e.client().get("not a url")).await.unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidRequest);
        assert!(
            bad.to_string().contains("cannot build the HTTP request"),
            "{bad}"
        );
    }

    #[test]
    fn only_plain_http_endpoints_without_credentials_or_proxy_post_directly() {
        assert!(endpoint("http://127.0.0.1:1/v1").is_direct());
        assert!(endpoint("HTTP://h:1").is_direct());
        assert!(endpoint("http://[::1]:8000/v1").is_direct());
        assert!(!endpoint("https://api.openai.com/v1").is_direct());
        assert!(!endpoint("http://user:pass@h:1/v1").is_direct());
        assert!(!endpoint("http://user@h:1/v1").is_direct());
        let proxied = ClientBuilder::new("p", &BTreeMap::new())
            .unwrap()
            .build_with(&TimeoutConfig::default(), true)
            .unwrap();
        let e = HttpEndpoint::new(proxied, "http://h:1/v1", "the test server", no_hint);
        assert!(!e.is_direct());
    }

    /// Over a real loopback socket (tokio's `net` comes with the `test-util` feature). Each
    /// test runs against both clients: the lean one and reqwest.
    #[cfg(feature = "test-util")]
    mod socket {
        use std::collections::VecDeque;

        use futures_util::StreamExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;
        use tokio::task::JoinHandle;

        use super::super::*;
        use crate::error::ErrorKind;
        use crate::types::{StreamFinal, Usage};

        /// Serves `connections` connections one after the other: on each, reads the request
        /// head and body, writes `answer` (part of or a whole HTTP/1.1 response), then closes
        /// the connection, or with `hold` keeps it open until the client goes. The task returns
        /// the last request as text.
        async fn serve(
            answer: &'static str,
            hold: bool,
            connections: usize,
        ) -> (String, JoinHandle<String>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move {
                let mut last = String::new();
                for _ in 0..connections {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    let mut request = Vec::new();
                    let mut buf = [0_u8; 1024];
                    loop {
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                        let n = socket.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    if hold {
                        // Until the client closes its end.
                        while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                    } else {
                        socket.shutdown().await.unwrap();
                    }
                    last = String::from_utf8(request).unwrap();
                }
                last
            });
            (base, server)
        }

        async fn serve_once(answer: &'static str) -> (String, JoinHandle<String>) {
            serve(answer, false, 1).await
        }

        /// The endpoint on both clients: `[lean, reqwest]`.
        fn endpoints(base: &str, timeout: &TimeoutConfig) -> [HttpEndpoint; 2] {
            let mut builder = ClientBuilder::new("p", &BTreeMap::new()).unwrap();
            builder.bearer_auth("api_key", "sk-test").unwrap();
            let client = builder.build_with(timeout, false).unwrap();
            let direct = HttpEndpoint::new(client, base, "the test server", |body| {
                ErrorHint::message(body.trim().trim_start_matches("error: "))
            });
            assert!(direct.is_direct());
            let mut reqwest = direct.clone();
            reqwest.direct = None;
            [direct, reqwest]
        }

        /// The endpoint on the lean client (`direct`) or on reqwest.
        fn endpoint_on(base: &str, timeout: &TimeoutConfig, direct: bool) -> HttpEndpoint {
            let [lean, reqwest] = endpoints(base, timeout);
            if direct { lean } else { reqwest }
        }

        #[tokio::test]
        async fn non_2xx_answers_are_classified_with_the_dialect_hint() {
            for direct in [true, false] {
                let (base, server) = serve_once(
                    "HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: 17\r\nconnection: close\r\n\r\nerror: slow down\n",
                )
                .await;
                let e = endpoint_on(&base, &TimeoutConfig::default(), direct);
                let err = e
                    .post_json("v1/x", b"{}".to_vec(), "*/*")
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::RateLimited, "direct {direct}");
                assert_eq!(err.status(), Some(429));
                assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(3)));
                assert_eq!(err.api().unwrap().message, "slow down");
                server.await.unwrap();
            }
        }

        #[tokio::test]
        async fn a_2xx_body_is_read_whole_and_the_request_carries_the_headers() {
            for direct in [true, false] {
                let (base, server) = serve_once(
                    "HTTP/1.1 200 OK\r\nx-ratelimit-remaining-requests: 7\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
                )
                .await;
                let e = endpoint_on(&base, &TimeoutConfig::default(), direct);
                let answer = e
                    .post_json("v1/chat", br#"{"q":1}"#.to_vec(), "text/event-stream")
                    .await
                    .unwrap();
                assert_eq!(answer.status(), StatusCode::OK);
                assert_eq!(answer.rate_limit().unwrap().remaining_requests, Some(7));
                assert_eq!(answer.bytes().await.unwrap(), "hello", "direct {direct}");
                let request = server.await.unwrap();
                let lower = request.to_lowercase();
                assert!(
                    request.starts_with("POST /v1/chat HTTP/1.1\r\n"),
                    "{request}"
                );
                for header in [
                    "content-type: application/json",
                    "accept: text/event-stream",
                    "authorization: bearer sk-test",
                    "content-length: 7",
                    &format!("host: {}", base.trim_start_matches("http://")),
                ] {
                    assert!(
                        lower.contains(header),
                        "direct {direct}: {header} in {request}"
                    );
                }
                assert!(request.ends_with("\r\n\r\n{\"q\":1}"), "{request}");
            }
        }

        #[tokio::test]
        async fn get_goes_through_reqwest_with_the_default_headers() {
            let (base, server) = serve_once(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            )
            .await;
            let [e, _] = endpoints(&base, &TimeoutConfig::default());
            assert_eq!(e.send_bytes(e.get("m")).await.unwrap(), "hello");
            let request = server.await.unwrap().to_lowercase();
            assert!(request.starts_with("get /m http/1.1"), "{request}");
            assert!(
                request.contains("authorization: bearer sk-test"),
                "{request}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_silent_server_is_a_timeout() {
            let timeout = TimeoutConfig {
                request: Duration::from_secs(30),
                ..TimeoutConfig::default()
            };
            for direct in [true, false] {
                // Reads the request, never answers.
                let (base, server) = serve("", true, 1).await;
                let e = endpoint_on(&base, &timeout, direct);
                let err = e.post_json("x", b"{}".to_vec(), "*/*").await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Timeout, "direct {direct}: {err}");
                assert!(err.is_retryable());
                assert!(
                    err.to_string().contains("the request to the test server"),
                    "{err}"
                );
                drop(e);
                server.await.unwrap();
            }
        }

        /// Serves one connection: reads the request, then writes each part after its delay
        /// (on the test's clock), then holds the connection until the client goes.
        async fn serve_slowly(parts: Vec<(u64, &'static str)>) -> (String, JoinHandle<()>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0_u8; 4096];
                let mut request = Vec::new();
                while !request.ends_with(b"{}") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before sending its body");
                    request.extend_from_slice(&buf[..n]);
                }
                for (delay_secs, part) in parts {
                    tokio::time::sleep(std::time::Duration::from_secs(delay_secs)).await;
                    if socket.write_all(part.as_bytes()).await.is_err() {
                        return; // the client gave up
                    }
                }
                while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
            (base, server)
        }

        const CHUNKED_HEAD: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";

        #[tokio::test(start_paused = true)]
        async fn the_read_timeout_counts_silence_since_the_last_data() {
            let timeout = TimeoutConfig {
                read: Some(Duration::from_secs(5)),
                ..TimeoutConfig::default()
            };
            for direct in [true, false] {
                // Data at 0 s and at 3 s, then silence: the limit passes at 8 s, not 5 s.
                let (base, server) = serve_slowly(vec![
                    (0, CHUNKED_HEAD),
                    (0, "3\r\nab\n\r\n"),
                    (3, "3\r\ncd\n\r\n"),
                ])
                .await;
                let e = endpoint_on(&base, &timeout, direct);
                let started = tokio::time::Instant::now();
                let answer = e.post_json("x", b"{}".to_vec(), "*/*").await.unwrap();
                let items: Vec<_> = e.chat_stream(answer, Lines::default()).collect().await;
                let waited = started.elapsed();
                assert_eq!(items.len(), 3, "direct {direct}: {items:?}");
                assert!(matches!(&items[0], Ok(StreamItem::Delta(t)) if t == "ab"));
                assert!(matches!(&items[1], Ok(StreamItem::Delta(t)) if t == "cd"));
                let last = items[2].as_ref().unwrap_err();
                assert_eq!(last.kind(), ErrorKind::Timeout, "direct {direct}: {last}");
                assert!(
                    waited >= std::time::Duration::from_secs(8)
                        && waited < std::time::Duration::from_secs(9),
                    "direct {direct}: ended after {waited:?}"
                );
                drop(e);
                server.await.unwrap();
            }
        }

        #[tokio::test(start_paused = true)]
        async fn the_request_timeout_ends_a_body_that_keeps_coming() {
            let timeout = TimeoutConfig {
                request: Duration::from_secs(5),
                read: Some(Duration::from_secs(2)),
                ..TimeoutConfig::default()
            };
            for direct in [true, false] {
                // A line every second for 20 s: never silent for 2 s, over 5 s in all.
                let mut parts = vec![(0, CHUNKED_HEAD)];
                parts.extend(std::iter::repeat_n((1, "2\r\nx\n\r\n"), 20));
                let (base, server) = serve_slowly(parts).await;
                let e = endpoint_on(&base, &timeout, direct);
                let started = tokio::time::Instant::now();
                let answer = e.post_json("x", b"{}".to_vec(), "*/*").await.unwrap();
                let items: Vec<_> = e.chat_stream(answer, Lines::default()).collect().await;
                let waited = started.elapsed();
                let last = items.last().unwrap().as_ref().unwrap_err();
                assert_eq!(last.kind(), ErrorKind::Timeout, "direct {direct}: {last}");
                assert!(
                    (4..=5).contains(&(items.len() - 1)),
                    "direct {direct}: {items:?}"
                );
                assert!(
                    waited >= std::time::Duration::from_secs(5)
                        && waited < std::time::Duration::from_secs(6),
                    "direct {direct}: ended after {waited:?}"
                );
                drop(e);
                server.await.unwrap();
            }
        }

        #[tokio::test]
        async fn a_redirect_is_followed_with_the_body() {
            let (target, target_server) = serve_once(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nmoved",
            )
            .await;
            let redirect: &'static str = Box::leak(
                format!(
                    "HTTP/1.1 308 Permanent Redirect\r\nlocation: {target}/v2/chat\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .into_boxed_str(),
            );
            // Asked twice: by the lean client, then by reqwest, which follows the redirect.
            let (base, server) = serve(redirect, false, 2).await;
            let [e, _] = endpoints(&base, &TimeoutConfig::default());
            let answer = e
                .post_json("v1/chat", br#"{"q":1}"#.to_vec(), "*/*")
                .await
                .unwrap();
            assert_eq!(answer.bytes().await.unwrap(), "moved");
            server.await.unwrap();
            let request = target_server.await.unwrap();
            assert!(
                request.starts_with("POST /v2/chat HTTP/1.1\r\n"),
                "{request}"
            );
            assert!(request.ends_with("{\"q\":1}"), "{request}");
        }

        /// A decoder of lines: each line is a delta, `END` finishes.
        #[derive(Default)]
        struct Lines {
            line: Vec<u8>,
            pending: VecDeque<Result<StreamItem, LlmError>>,
            finished: bool,
        }

        impl StreamDecoder for Lines {
            fn feed(&mut self, chunk: &[u8]) {
                for &b in chunk {
                    if b != b'\n' {
                        self.line.push(b);
                        continue;
                    }
                    let line =
                        String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
                    if self.finished {
                        continue;
                    }
                    if line == "END" {
                        self.finished = true;
                        self.pending.push_back(Ok(StreamItem::Done(StreamFinal {
                            usage: Some(Usage::default()),
                            ..StreamFinal::default()
                        })));
                    } else {
                        self.pending.push_back(Ok(StreamItem::Delta(line)));
                    }
                }
            }

            fn end(&mut self) {
                if !self.finished {
                    self.fail(LlmError::stream_truncated("no END line"));
                }
            }

            fn fail(&mut self, error: LlmError) {
                self.finished = true;
                self.pending.push_back(Err(error));
            }

            fn next_item(&mut self) -> Option<Result<StreamItem, LlmError>> {
                self.pending.pop_front()
            }

            fn is_finished(&self) -> bool {
                self.finished
            }
        }

        /// The items of `answer` streamed through [`Lines`], on the lean client and on reqwest.
        async fn collect(answer: &'static str) -> [Vec<Result<StreamItem, LlmError>>; 2] {
            let mut out = [Vec::new(), Vec::new()];
            for (i, items) in out.iter_mut().enumerate() {
                let (base, server) = serve_once(answer).await;
                let e = endpoints(&base, &TimeoutConfig::default())[i].clone();
                let answer = e.post_json("stream", Vec::new(), "*/*").await.unwrap();
                *items = e.chat_stream(answer, Lines::default()).collect().await;
                server.await.unwrap();
            }
            out
        }

        #[tokio::test]
        async fn streams_yield_the_decoders_items_and_stop_at_the_terminal_one() {
            for items in collect(
                "HTTP/1.1 200 OK\r\ncontent-length: 20\r\nconnection: close\r\n\r\nHel\nlo\nEND\nlate\nEND\n",
            )
            .await
            {
                assert_eq!(items.len(), 3, "{items:?}");
                assert!(matches!(&items[0], Ok(StreamItem::Delta(t)) if t == "Hel"));
                assert!(matches!(&items[1], Ok(StreamItem::Delta(t)) if t == "lo"));
                assert!(matches!(&items[2], Ok(StreamItem::Done(_))));
            }
        }

        #[tokio::test]
        async fn a_body_that_ends_early_is_the_decoders_truncation() {
            for items in
                collect("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nab\n")
                    .await
            {
                assert_eq!(items.len(), 2, "{items:?}");
                assert_eq!(
                    items[1].as_ref().unwrap_err().kind(),
                    ErrorKind::StreamTruncated
                );
            }
        }

        #[tokio::test]
        async fn a_body_cut_mid_transfer_is_a_transport_error() {
            // Promises 100 bytes, sends 3, closes.
            for items in
                collect("HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\nab\n")
                    .await
            {
                let last = items.last().unwrap().as_ref().unwrap_err();
                assert_eq!(last.kind(), ErrorKind::Transport, "{last}");
                assert!(items.len() <= 2, "{items:?}");
            }
        }
    }
}
