//! HTTP plumbing shared by provider crates (feature `http`): building a [`reqwest::Client`] from
//! a provider's config, joining endpoint paths to its base URL, sending a request and turning a
//! non-2xx answer into its classified [`LlmError`], mapping transport failures, and driving a
//! streamed body through a dialect's decoder.
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

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, IntoHeaderName};
use quorum_config::Duration;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{ErrorHint, LlmError, classify_http};
use crate::provider::{ChatStream, guard_stream};
use crate::types::{RateLimitInfo, StreamItem};

/// Timeouts of one endpoint, the `timeout` section of a provider's config.
///
/// ```yaml
/// timeout: { connect: 5s, request: 10m, read: 1m }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Establishing the connection (TCP + TLS). Default `10s`.
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
    pub fn build(self, timeout: &TimeoutConfig) -> Result<reqwest::Client, LlmError> {
        let builder = reqwest::Client::builder().default_headers(self.headers);
        timeout
            .apply(builder)
            .build()
            .map_err(|e| LlmError::Config {
                name: self.provider.to_owned(),
                message: "cannot build the HTTP client".into(),
                source: Some(Box::new(e)),
            })
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

/// Maps a reqwest failure to its class, keeping it as the source. `upstream` names what was
/// called in the messages (`"the provider"`: "cannot connect to the provider").
///
/// Timeouts become [`LlmError::Timeout`], a bad request (an invalid URL...)
/// [`LlmError::InvalidRequest`], everything else (connect, body, decode...)
/// [`LlmError::Transport`].
#[must_use]
pub fn map_reqwest(error: reqwest::Error, upstream: &str) -> LlmError {
    if error.is_timeout() {
        LlmError::timeout(format!("the request to {upstream}"), Some(Box::new(error)))
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

/// The body of a streamed answer, as reqwest delivers it.
pub type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

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
/// Cheap to clone: the connection pool is shared.
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    client: reqwest::Client,
    /// The base URL as text, ending with `/`.
    base: String,
    upstream: String,
    error_hint: fn(&str) -> ErrorHint,
    /// Endpoint URLs parsed once (a provider calls a handful of paths): parsing a URL per
    /// request (IDNA included) is a measurable share of a gateway's CPU.
    parsed: Arc<RwLock<HashMap<String, reqwest::Url>>>,
}

impl HttpEndpoint {
    /// An endpoint below `base_url` (with or without a trailing `/`). `upstream` names what is
    /// called in transport errors (see [`map_reqwest`]); `error_hint` reads the dialect's error
    /// body of a non-2xx answer for [`classify_http`].
    #[must_use]
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        upstream: impl Into<String>,
        error_hint: fn(&str) -> ErrorHint,
    ) -> Self {
        let mut base = base_url.trim_end_matches('/').to_owned();
        base.push('/');
        HttpEndpoint {
            client,
            base,
            upstream: upstream.into(),
            error_hint,
            parsed: Arc::default(),
        }
    }

    /// The parsed URL of `path` below the base URL, from the cache when seen before; `None`
    /// when it does not parse (the request then fails in reqwest with its own error).
    fn parsed_url(&self, path: &str) -> Option<reqwest::Url> {
        if let Some(url) = self
            .parsed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return Some(url.clone());
        }
        let url = reqwest::Url::parse(&self.url(path)).ok()?;
        let mut cache = self.parsed.write().unwrap_or_else(PoisonError::into_inner);
        // Paths come from provider code, not from requests; the bound is a safety net.
        if cache.len() < 64 {
            cache.insert(path.to_owned(), url.clone());
        }
        Some(url)
    }

    /// The HTTP client.
    #[must_use]
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The URL of an endpoint below the base URL (`"v1/messages"` below
    /// `https://api.example.com` is `https://api.example.com/v1/messages`).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A `GET` of `path` below the base URL.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        match self.parsed_url(path) {
            Some(url) => self.client.get(url),
            None => self.client.get(self.url(path)),
        }
    }

    /// A `POST` to `path` below the base URL.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        match self.parsed_url(path) {
            Some(url) => self.client.post(url),
            None => self.client.post(self.url(path)),
        }
    }

    /// A `POST` to `path` below the base URL of a body already serialized as JSON (for
    /// providers that write their bodies straight to bytes).
    pub fn post_json(&self, path: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.post(path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
    }

    /// Maps a reqwest failure of this endpoint (see [`map_reqwest`]).
    #[must_use]
    pub fn map_error(&self, error: reqwest::Error) -> LlmError {
        map_reqwest(error, &self.upstream)
    }

    /// Sends a request; a non-2xx answer becomes its classified error ([`classify_http`] with
    /// the status, the headers, the body and what the dialect's `error_hint` read from it).
    ///
    /// # Errors
    ///
    /// The classified error of a non-2xx answer; a transport error (see [`map_reqwest`]) when
    /// no answer came.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LlmError> {
        let response = request.send().await.map_err(|e| self.map_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = match response.bytes().await {
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
        self.send_bytes_with_rate_limit(request)
            .await
            .map(|(bytes, _)| bytes)
    }

    /// Like [`HttpEndpoint::send_bytes`], also returning the server's rate-limit state read from
    /// the 2xx answer's headers ([`RateLimitInfo::from_headers`]; `None` when it sent none).
    ///
    /// # Errors
    ///
    /// As [`HttpEndpoint::send_bytes`].
    pub async fn send_bytes_with_rate_limit(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(Bytes, Option<RateLimitInfo>), LlmError> {
        let response = self.send(request).await?;
        let rate_limit = RateLimitInfo::from_headers(response.headers());
        let bytes = response.bytes().await.map_err(|e| self.map_error(e))?;
        Ok((bytes, rate_limit))
    }

    /// The chat stream of a streamed answer: its body is fed to `decoder` chunk by chunk, and
    /// the decoder's items are yielded, through [`guard_stream`]. A failed read is the
    /// decoder's terminal error; the end of the body is [`StreamDecoder::end`].
    ///
    /// Dropping the stream drops the body, which closes the connection.
    #[must_use]
    pub fn chat_stream<D: StreamDecoder>(
        &self,
        response: reqwest::Response,
        decoder: D,
    ) -> ChatStream {
        let body: ByteStream = Box::pin(response.bytes_stream());
        let upstream = self.upstream.clone();
        let stream = futures_util::stream::unfold(
            (body, decoder, upstream),
            |(mut body, mut decoder, upstream)| async move {
                loop {
                    if let Some(item) = decoder.next_item() {
                        return Some((item, (body, decoder, upstream)));
                    }
                    if decoder.is_finished() {
                        return None;
                    }
                    match body.next().await {
                        Some(Ok(bytes)) => decoder.feed(&bytes),
                        Some(Err(e)) => decoder.fail(map_reqwest(e, &upstream)),
                        None => decoder.end(),
                    }
                }
            },
        );
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

    fn endpoint(base: &str) -> HttpEndpoint {
        let client = ClientBuilder::new("p", &BTreeMap::new())
            .unwrap()
            .build(&TimeoutConfig::default())
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

        let bad = e.send(e.client().get("not a url")).await.unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidRequest);
        assert!(
            bad.to_string().contains("cannot build the HTTP request"),
            "{bad}"
        );
    }

    /// Over a real loopback socket (tokio's `net` comes with the `test-util` feature).
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

        /// Serves one connection with `answer` (a whole HTTP/1.1 response), then closes it; the
        /// test awaits the returned task.
        async fn serve_once(answer: &'static str) -> (String, JoinHandle<()>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0_u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                socket.write_all(answer.as_bytes()).await.unwrap();
                socket.shutdown().await.unwrap();
            });
            (base, server)
        }

        fn endpoint(base: &str) -> HttpEndpoint {
            let client = ClientBuilder::new("p", &BTreeMap::new())
                .unwrap()
                .build(&TimeoutConfig::default())
                .unwrap();
            HttpEndpoint::new(client, base, "the test server", |body| {
                ErrorHint::message(body.trim().trim_start_matches("error: "))
            })
        }

        #[tokio::test]
        async fn non_2xx_answers_are_classified_with_the_dialect_hint() {
            let (base, server) = serve_once(
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: 17\r\nconnection: close\r\n\r\nerror: slow down\n",
            )
            .await;
            let e = endpoint(&base);
            let err = e.send(e.post("v1/x")).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::RateLimited);
            assert_eq!(err.status(), Some(429));
            assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(3)));
            assert_eq!(err.api().unwrap().message, "slow down");
            server.await.unwrap();
        }

        #[tokio::test]
        async fn a_2xx_body_is_read_whole() {
            let (base, server) = serve_once(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            )
            .await;
            let e = endpoint(&base);
            assert_eq!(e.send_bytes(e.get("m")).await.unwrap(), "hello");
            server.await.unwrap();
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

        async fn collect(answer: &'static str) -> Vec<Result<StreamItem, LlmError>> {
            let (base, server) = serve_once(answer).await;
            let e = endpoint(&base);
            let response = e.send(e.post("stream")).await.unwrap();
            let items = e.chat_stream(response, Lines::default()).collect().await;
            server.await.unwrap();
            items
        }

        #[tokio::test]
        async fn streams_yield_the_decoders_items_and_stop_at_the_terminal_one() {
            let items = collect(
                "HTTP/1.1 200 OK\r\ncontent-length: 20\r\nconnection: close\r\n\r\nHel\nlo\nEND\nlate\nEND\n",
            )
            .await;
            assert_eq!(items.len(), 3, "{items:?}");
            assert!(matches!(&items[0], Ok(StreamItem::Delta(t)) if t == "Hel"));
            assert!(matches!(&items[1], Ok(StreamItem::Delta(t)) if t == "lo"));
            assert!(matches!(&items[2], Ok(StreamItem::Done(_))));
        }

        #[tokio::test]
        async fn a_body_that_ends_early_is_the_decoders_truncation() {
            let items =
                collect("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nab\n")
                    .await;
            assert_eq!(items.len(), 2, "{items:?}");
            assert_eq!(
                items[1].as_ref().unwrap_err().kind(),
                ErrorKind::StreamTruncated
            );
        }

        #[tokio::test]
        async fn a_body_cut_mid_transfer_is_a_transport_error() {
            // Promises 100 bytes, sends 3, closes.
            let items =
                collect("HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\nab\n")
                    .await;
            let last = items.last().unwrap().as_ref().unwrap_err();
            assert_eq!(last.kind(), ErrorKind::Transport, "{last}");
            assert!(items.len() <= 2, "{items:?}");
        }
    }
}
