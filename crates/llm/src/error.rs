//! The one error type of the LLM contract, its classes and the shared HTTP classification.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::types::RateLimitInfo;

/// A boxed error kept as a source (a transport library's error, a decode error, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How many bytes of an error response body are kept in [`ApiError::body`].
pub const MAX_ERROR_BODY: usize = 4096;

/// Response headers kept on an [`ApiError`]: the retry hints and request ids (lowercase names).
pub const KEPT_HEADERS: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "x-request-id",
    "request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
];

/// What a provider answered when a call failed: status, the provider's own message, code and type,
/// the retry hints and (truncated) body.
///
/// Also used for errors reported inside a stream (`status` is `None` then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, when the error came with one.
    pub status: Option<u16>,
    /// The provider's message (or a short description when the body had none).
    pub message: String,
    /// The provider's error code (`"insufficient_quota"`, `"model_not_found"`, or a numeric code
    /// as text), if any.
    pub code: Option<String>,
    /// The provider's error type (`"invalid_request_error"`, `"overloaded_error"`...), if any.
    pub error_type: Option<String>,
    /// How long the server asked us to wait, from `retry-after-ms` or `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The server's explicit `x-should-retry` verdict, which overrides the status rules.
    pub should_retry: Option<bool>,
    /// The kept response headers (see [`KEPT_HEADERS`]), lowercase names.
    pub headers: Vec<(String, String)>,
    /// The response body, truncated to [`MAX_ERROR_BODY`] bytes.
    pub body: String,
}

impl ApiError {
    /// The value of a kept header (`name` in lowercase).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The server's rate-limit state from the kept headers, parsed like a successful response's
    /// ([`RateLimitInfo::from_headers`]); `None` when there is none.
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimitInfo> {
        RateLimitInfo::from_lookup(|name| self.header(name), SystemTime::now())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "status {status}")?,
            None => f.write_str("in-stream error")?,
        }
        if let Some(code) = &self.code {
            write!(f, " (code {code})")?;
        } else if let Some(kind) = &self.error_type {
            write!(f, " (type {kind})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to an LLM provider, already classified.
///
/// The variant *is* the class: callers decide with [`LlmError::is_retryable`],
/// [`LlmError::retry_after`], [`LlmError::kind`] and helpers such as
/// [`LlmError::is_context_length`] rather than by matching status codes. HTTP errors are built by
/// [`classify_http`]; errors reported inside a stream by [`classify_stream_error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// 429 (or an in-stream rate-limit error): slow down; retryable, honouring `retry_after`.
    #[error("rate limited: {0}")]
    RateLimited(Box<ApiError>),
    /// A 429 (or other status) saying the account's quota or credit is used up: not retryable.
    #[error("quota exhausted: {0}")]
    QuotaExhausted(Box<ApiError>),
    /// The prompt does not fit the model's context window: not retryable on the same model.
    #[error("context length exceeded: {0}")]
    ContextLengthExceeded(Box<ApiError>),
    /// 401: the API key is missing or wrong.
    #[error("authentication failed: {0}")]
    Auth(Box<ApiError>),
    /// 402: the account has to pay (OpenRouter: out of credits).
    #[error("payment required: {0}")]
    PaymentRequired(Box<ApiError>),
    /// 403: not allowed, or the input was moderated / flagged.
    #[error("forbidden: {0}")]
    Forbidden(Box<ApiError>),
    /// The model does not exist on this provider (404 naming a model).
    #[error("model not found: {0}")]
    ModelNotFound(Box<ApiError>),
    /// 400 / 422: the request is invalid for this provider.
    #[error("bad request: {0}")]
    BadRequest(Box<ApiError>),
    /// 503 / 529 or an `overloaded` error: the provider is busy; retryable.
    #[error("provider overloaded: {0}")]
    Overloaded(Box<ApiError>),
    /// Any other 5xx (or an unspecific in-stream error): retryable.
    #[error("provider server error: {0}")]
    Server(Box<ApiError>),
    /// Any other HTTP error status (404 without a model, 409, 413...): retryable when the status
    /// is 408, 409, 429 or 5xx, or when the server said `x-should-retry: true`.
    #[error("provider error: {0}")]
    Api(Box<ApiError>),
    /// The request or a read took too long (a client timeout, or a 408).
    #[error("timed out: {message}")]
    Timeout {
        /// What timed out.
        message: String,
        /// The HTTP status when the server reported it (408).
        status: Option<u16>,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The connection failed, was reset, or the body could not be read.
    #[error("transport error: {message}")]
    Transport {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A stream ended (EOF) before its end marker (`[DONE]`, `done: true`, `message_stop`).
    #[error("stream truncated: {message}")]
    StreamTruncated {
        /// What was missing.
        message: String,
    },
    /// The caller cancelled the call.
    #[error("cancelled")]
    Cancelled,
    /// The provider answered 2xx with something that is not its documented format.
    #[error("invalid response: {message}")]
    InvalidResponse {
        /// What was wrong.
        message: String,
        /// The decode error.
        #[source]
        source: Option<BoxError>,
    },
    /// The request cannot be expressed for this provider (checked before sending).
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What was wrong, naming the field.
        message: String,
    },
    /// The provider does not support this operation or capability.
    #[error("unsupported by provider {provider:?}: {what}")]
    Unsupported {
        /// The provider's name.
        provider: String,
        /// The operation.
        what: String,
    },
    /// A provider's configuration section is invalid.
    #[error("invalid config for provider {name:?}: {message}")]
    Config {
        /// The provider instance's name.
        name: String,
        /// What is wrong, naming the field (`timeout.connect: invalid duration "x"`).
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// No factory is registered for this provider kind.
    #[error("unknown provider kind {kind:?} (known kinds: {})", known.join(", "))]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The registered kinds.
        known: Vec<String>,
    },
}

/// The class of an [`LlmError`], as a small copyable value (for metrics labels, tests, routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`LlmError::RateLimited`].
    RateLimited,
    /// [`LlmError::QuotaExhausted`].
    QuotaExhausted,
    /// [`LlmError::ContextLengthExceeded`].
    ContextLengthExceeded,
    /// [`LlmError::Auth`].
    Auth,
    /// [`LlmError::PaymentRequired`].
    PaymentRequired,
    /// [`LlmError::Forbidden`].
    Forbidden,
    /// [`LlmError::ModelNotFound`].
    ModelNotFound,
    /// [`LlmError::BadRequest`].
    BadRequest,
    /// [`LlmError::Overloaded`].
    Overloaded,
    /// [`LlmError::Server`].
    Server,
    /// [`LlmError::Api`].
    Api,
    /// [`LlmError::Timeout`].
    Timeout,
    /// [`LlmError::Transport`].
    Transport,
    /// [`LlmError::StreamTruncated`].
    StreamTruncated,
    /// [`LlmError::Cancelled`].
    Cancelled,
    /// [`LlmError::InvalidResponse`].
    InvalidResponse,
    /// [`LlmError::InvalidRequest`].
    InvalidRequest,
    /// [`LlmError::Unsupported`].
    Unsupported,
    /// [`LlmError::Config`].
    Config,
    /// [`LlmError::UnknownKind`].
    UnknownKind,
}

impl ErrorKind {
    /// A stable snake_case name, for metric labels and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExhausted => "quota_exhausted",
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::Auth => "auth",
            ErrorKind::PaymentRequired => "payment_required",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Server => "server",
            ErrorKind::Api => "api",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Transport => "transport",
            ErrorKind::StreamTruncated => "stream_truncated",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Config => "config",
            ErrorKind::UnknownKind => "unknown_kind",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LlmError {
    /// The class of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            LlmError::RateLimited(_) => ErrorKind::RateLimited,
            LlmError::QuotaExhausted(_) => ErrorKind::QuotaExhausted,
            LlmError::ContextLengthExceeded(_) => ErrorKind::ContextLengthExceeded,
            LlmError::Auth(_) => ErrorKind::Auth,
            LlmError::PaymentRequired(_) => ErrorKind::PaymentRequired,
            LlmError::Forbidden(_) => ErrorKind::Forbidden,
            LlmError::ModelNotFound(_) => ErrorKind::ModelNotFound,
            LlmError::BadRequest(_) => ErrorKind::BadRequest,
            LlmError::Overloaded(_) => ErrorKind::Overloaded,
            LlmError::Server(_) => ErrorKind::Server,
            LlmError::Api(_) => ErrorKind::Api,
            LlmError::Timeout { .. } => ErrorKind::Timeout,
            LlmError::Transport { .. } => ErrorKind::Transport,
            LlmError::StreamTruncated { .. } => ErrorKind::StreamTruncated,
            LlmError::Cancelled => ErrorKind::Cancelled,
            LlmError::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            LlmError::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            LlmError::Unsupported { .. } => ErrorKind::Unsupported,
            LlmError::Config { .. } => ErrorKind::Config,
            LlmError::UnknownKind { .. } => ErrorKind::UnknownKind,
        }
    }

    /// The provider's answer, for the classes that come from one.
    #[must_use]
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            LlmError::RateLimited(e)
            | LlmError::QuotaExhausted(e)
            | LlmError::ContextLengthExceeded(e)
            | LlmError::Auth(e)
            | LlmError::PaymentRequired(e)
            | LlmError::Forbidden(e)
            | LlmError::ModelNotFound(e)
            | LlmError::BadRequest(e)
            | LlmError::Overloaded(e)
            | LlmError::Server(e)
            | LlmError::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status the provider answered with, if any.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            LlmError::Timeout { status, .. } => *status,
            other => other.api().and_then(|api| api.status),
        }
    }

    /// Whether trying the same call again may help.
    ///
    /// Follows the official OpenAI / Anthropic SDKs: an explicit `x-should-retry` header wins;
    /// otherwise 408, 409, 429 and every 5xx are retryable, as are timeouts, transport errors and
    /// truncated streams — except a quota-exhausted 429, which waiting cannot fix.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        if let LlmError::QuotaExhausted(_) = self {
            return false;
        }
        if let Some(should) = self.api().and_then(|api| api.should_retry) {
            return should;
        }
        match self {
            LlmError::RateLimited(_)
            | LlmError::Overloaded(_)
            | LlmError::Server(_)
            | LlmError::Timeout { .. }
            | LlmError::Transport { .. }
            | LlmError::StreamTruncated { .. } => true,
            LlmError::Api(api) => api
                .status
                .is_some_and(|s| s == 408 || s == 409 || s == 429 || s >= 500),
            _ => false,
        }
    }

    /// How long the server asked us to wait before trying again (`retry-after-ms` or
    /// `Retry-After`), for retryable errors.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        if !self.is_retryable() {
            return None;
        }
        self.api().and_then(|api| api.retry_after)
    }

    /// Whether the prompt was too long for the model (a fallback chain may try a larger model).
    #[must_use]
    pub fn is_context_length(&self) -> bool {
        matches!(self, LlmError::ContextLengthExceeded(_))
    }

    /// Whether the call failed because of this provider account or deployment (auth, payment,
    /// quota, unknown model) rather than the request: a fallback chain should try another
    /// provider, and a breaker need not open.
    #[must_use]
    pub fn is_provider_unavailable(&self) -> bool {
        matches!(
            self,
            LlmError::Auth(_)
                | LlmError::PaymentRequired(_)
                | LlmError::QuotaExhausted(_)
                | LlmError::ModelNotFound(_)
        )
    }

    /// A transport error with its source kept.
    pub fn transport(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        LlmError::Transport {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A client-side timeout with its source kept.
    pub fn timeout(message: impl Into<String>, source: Option<BoxError>) -> Self {
        LlmError::Timeout {
            message: message.into(),
            status: None,
            source,
        }
    }

    /// An invalid 2xx response, with the decode error kept.
    pub fn invalid_response(message: impl Into<String>, source: Option<BoxError>) -> Self {
        LlmError::InvalidResponse {
            message: message.into(),
            source,
        }
    }

    /// A truncated stream.
    pub fn stream_truncated(message: impl Into<String>) -> Self {
        LlmError::StreamTruncated {
            message: message.into(),
        }
    }
}

impl quorum_resilience::Retryable for LlmError {
    fn is_retryable(&self) -> bool {
        LlmError::is_retryable(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        LlmError::retry_after(self)
    }
}

/// What a provider crate read from its own dialect's error body, passed to [`classify_http`] and
/// [`classify_stream_error`].
///
/// Every field is optional: with an empty hint classification uses the status and the raw body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorHint {
    /// The error message.
    pub message: Option<String>,
    /// The error code (OpenAI `error.code`; a numeric code as text, e.g. OpenRouter's `"402"`).
    pub code: Option<String>,
    /// The error type (OpenAI `error.type`, Anthropic `error.type`).
    pub error_type: Option<String>,
}

impl ErrorHint {
    /// A hint with just a message.
    #[must_use]
    pub fn message(message: impl Into<String>) -> Self {
        ErrorHint {
            message: Some(message.into()),
            ..ErrorHint::default()
        }
    }

    /// The hint of an error object `{"message", "code", "type"}` as most dialects nest it under
    /// `"error"`; numbers (OpenRouter's numeric codes) are kept as text, other values ignored.
    #[must_use]
    pub fn from_error_object(error: &serde_json::Map<String, serde_json::Value>) -> Self {
        let text = |key: &str| match error.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        ErrorHint {
            message: text("message"),
            code: text("code"),
            error_type: text("type"),
        }
    }

    /// Reads an error response body with a dialect's `read` function; an empty hint when the
    /// body is not JSON or `read` finds no error in it (the status alone still classifies).
    #[must_use]
    pub fn from_json_body(body: &str, read: impl Fn(&serde_json::Value) -> Option<Self>) -> Self {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .as_ref()
            .and_then(read)
            .unwrap_or_default()
    }

    fn mentions(&self, body: &str, needles: &[&str]) -> bool {
        let fields = [
            self.code.as_deref(),
            self.error_type.as_deref(),
            self.message.as_deref(),
            Some(body),
        ];
        fields.into_iter().flatten().any(|text| {
            let lower = text.to_ascii_lowercase();
            needles.iter().any(|needle| lower.contains(needle))
        })
    }

    fn code_or_type_is(&self, values: &[&str]) -> bool {
        [self.code.as_deref(), self.error_type.as_deref()]
            .into_iter()
            .flatten()
            .any(|v| values.iter().any(|want| v.eq_ignore_ascii_case(want)))
    }
}

const QUOTA_NEEDLES: &[&str] = &[
    "insufficient_quota",
    "exceeded your current quota",
    "credit balance is too low",
];
const CONTEXT_NEEDLES: &[&str] = &[
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "too many tokens",
];
const MODEL_NOT_FOUND_CODES: &[&str] = &["model_not_found", "not_found_error"];

/// Truncates `body` to at most `max` bytes on a char boundary.
fn truncate(body: &str, max: usize) -> String {
    if body.len() <= max {
        return body.to_owned();
    }
    let mut end = max;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_owned()
}

/// Reads the server's retry hint: `retry-after-ms` (milliseconds, may be fractional) wins over
/// `Retry-After` (seconds, may be fractional, or an HTTP-date relative to `now`).
///
/// Negative, unparsable or past values give `None`.
#[must_use]
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(now).ok()
}

/// Builds the [`ApiError`] of an HTTP error response (hint fields, kept headers, truncated body).
#[must_use]
pub fn api_error(status: u16, headers: &HeaderMap, body: &str, hint: &ErrorHint) -> ApiError {
    let kept = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*name).to_owned(), v.to_owned()))
        })
        .collect();
    let should_retry = match headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let message = hint.message.clone().unwrap_or_else(|| {
        let trimmed = body.trim();
        if trimmed.is_empty() {
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no message")
                .to_ascii_lowercase()
        } else {
            truncate(trimmed, 200)
        }
    });
    ApiError {
        status: Some(status),
        message,
        code: hint.code.clone(),
        error_type: hint.error_type.clone(),
        retry_after: parse_retry_after(headers, SystemTime::now()),
        should_retry,
        headers: kept,
        body: truncate(body, MAX_ERROR_BODY),
    }
}

/// Classifies an HTTP error response into an [`LlmError`]; every provider crate calls this.
///
/// The provider crate parses its own dialect's error body into `hint`; `body` is the raw text
/// (kept, truncated to 4 KiB, and also searched for well-known phrases). Rules:
///
/// | status | class |
/// | --- | --- |
/// | 429 mentioning `insufficient_quota` / "exceeded your current quota" | [`LlmError::QuotaExhausted`] (not retryable) |
/// | 429 | [`LlmError::RateLimited`] (`retry_after` from `retry-after-ms` / `Retry-After`) |
/// | 4xx mentioning `context_length_exceeded`, "context length", "prompt is too long"... | [`LlmError::ContextLengthExceeded`] |
/// | 400 / 403 saying "credit balance is too low" / `insufficient_quota` | [`LlmError::QuotaExhausted`] |
/// | 401 | [`LlmError::Auth`] |
/// | 402 (whatever the body says) | [`LlmError::PaymentRequired`] |
/// | 403 | [`LlmError::Forbidden`] |
/// | 404 with code `model_not_found` / `not_found_error` or a message naming a model | [`LlmError::ModelNotFound`] |
/// | 408 | [`LlmError::Timeout`] |
/// | 400, 422 | [`LlmError::BadRequest`] |
/// | 503, 529, or type `overloaded_error` | [`LlmError::Overloaded`] |
/// | other 5xx | [`LlmError::Server`] |
/// | anything else | [`LlmError::Api`] |
#[must_use]
pub fn classify_http(status: u16, headers: &HeaderMap, body: &str, hint: &ErrorHint) -> LlmError {
    let api = api_error(status, headers, body, hint);
    classify_api(api, hint, body)
}

fn classify_api(api: ApiError, hint: &ErrorHint, body: &str) -> LlmError {
    let status = api.status.unwrap_or(0);
    let api = Box::new(api);
    if hint.mentions(body, QUOTA_NEEDLES) && matches!(status, 0 | 400 | 403 | 429) {
        return LlmError::QuotaExhausted(api);
    }
    if (400..500).contains(&status) && status != 429 && hint.mentions(body, CONTEXT_NEEDLES)
        || status == 0 && hint.code_or_type_is(&["context_length_exceeded"])
    {
        return LlmError::ContextLengthExceeded(api);
    }
    if hint.code_or_type_is(&["overloaded_error", "overloaded"]) {
        return LlmError::Overloaded(api);
    }
    match status {
        429 => LlmError::RateLimited(api),
        401 => LlmError::Auth(api),
        402 => LlmError::PaymentRequired(api),
        403 => LlmError::Forbidden(api),
        404 if hint.code_or_type_is(MODEL_NOT_FOUND_CODES) || hint.mentions("", &["model"]) => {
            LlmError::ModelNotFound(api)
        }
        408 => LlmError::Timeout {
            message: format!("server answered {api}"),
            status: Some(408),
            source: None,
        },
        400 | 422 => LlmError::BadRequest(api),
        503 | 529 => LlmError::Overloaded(api),
        500..=599 => LlmError::Server(api),
        _ => LlmError::Api(api),
    }
}

/// Classifies an error a provider reported *inside* a stream (after a 2xx), by its code and type.
///
/// A numeric code that is an HTTP error status (OpenRouter sends `"code": 502`) is classified as
/// that status; rate-limit, overload, quota, context and invalid-request codes map to their
/// classes; anything else is a [`LlmError::Server`] error (retryable).
#[must_use]
pub fn classify_stream_error(hint: &ErrorHint, raw: &str) -> LlmError {
    let numeric = hint
        .code
        .as_deref()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (400..600).contains(c));
    let api = ApiError {
        status: numeric,
        message: hint
            .message
            .clone()
            .unwrap_or_else(|| truncate(raw.trim(), 200)),
        code: hint.code.clone(),
        error_type: hint.error_type.clone(),
        body: truncate(raw, MAX_ERROR_BODY),
        ..ApiError::default()
    };
    if numeric.is_some() {
        return classify_api(api, hint, raw);
    }
    let boxed = Box::new(api);
    if hint.mentions(raw, QUOTA_NEEDLES) {
        LlmError::QuotaExhausted(boxed)
    } else if hint.code_or_type_is(&["context_length_exceeded"]) {
        LlmError::ContextLengthExceeded(boxed)
    } else if hint.code_or_type_is(&["overloaded_error", "overloaded"]) {
        LlmError::Overloaded(boxed)
    } else if hint.code_or_type_is(&["rate_limit_error", "rate_limit_exceeded", "rate_limited"]) {
        LlmError::RateLimited(boxed)
    } else if hint.code_or_type_is(&["invalid_request_error"]) {
        LlmError::BadRequest(boxed)
    } else {
        LlmError::Server(boxed)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    #[test]
    fn error_hints_read_objects_and_bodies() {
        let object = serde_json::json!({"message": "m", "code": 402, "type": "t", "param": null});
        let hint = ErrorHint::from_error_object(object.as_object().unwrap());
        assert_eq!(
            hint,
            ErrorHint {
                message: Some("m".into()),
                code: Some("402".into()),
                error_type: Some("t".into()),
            }
        );
        let read = |v: &serde_json::Value| v.get("error")?.as_str().map(ErrorHint::message);
        assert_eq!(
            ErrorHint::from_json_body(r#"{"error":"boom"}"#, read),
            ErrorHint::message("boom")
        );
        assert_eq!(
            ErrorHint::from_json_body("<html>", read),
            ErrorHint::default()
        );
        assert_eq!(ErrorHint::from_json_body("{}", read), ErrorHint::default());
    }

    #[test]
    fn api_error_rate_limit_reads_the_kept_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_static("20s"),
        );
        headers.insert(
            "anthropic-ratelimit-tokens-reset",
            HeaderValue::from_static("2999-01-01T00:00:00Z"),
        );
        let api = api_error(429, &headers, "", &ErrorHint::default());
        let info = api.rate_limit().unwrap();
        assert_eq!(info.remaining_requests, Some(0));
        assert_eq!(info.reset_requests, Some(Duration::from_secs(20)));
        assert!(info.reset_tokens.is_some(), "{info:?}");
        assert_eq!(info.remaining_tokens, None);
        let bare = api_error(429, &HeaderMap::new(), "", &ErrorHint::default());
        assert_eq!(bare.rate_limit(), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn hint(code: Option<&str>, kind: Option<&str>, message: Option<&str>) -> ErrorHint {
        ErrorHint {
            message: message.map(str::to_owned),
            code: code.map(str::to_owned),
            error_type: kind.map(str::to_owned),
        }
    }

    /// status, hint, body, headers -> class, retryable, retry_after
    type Case = (
        u16,
        ErrorHint,
        &'static str,
        &'static [(&'static str, &'static str)],
        ErrorKind,
        bool,
        Option<Duration>,
    );

    #[test]
    fn classification_table() {
        let none = ErrorHint::default();
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (429, none.clone(), "", &[("retry-after", "1"), ("retry-after-ms", "1000")], ErrorKind::RateLimited, true, Some(Duration::from_secs(1))),
            (429, none.clone(), "", &[("retry-after", "7")], ErrorKind::RateLimited, true, Some(Duration::from_secs(7))),
            (429, none.clone(), "", &[("retry-after-ms", "250"), ("retry-after", "9")], ErrorKind::RateLimited, true, Some(Duration::from_millis(250))),
            (429, none.clone(), "", &[("retry-after", "0.5")], ErrorKind::RateLimited, true, Some(Duration::from_millis(500))),
            (429, none.clone(), "", &[("retry-after", "soon")], ErrorKind::RateLimited, true, None),
            (429, none.clone(), "", &[("retry-after", "-3")], ErrorKind::RateLimited, true, None),
            (429, hint(Some("insufficient_quota"), Some("insufficient_quota"), Some("You exceeded your current quota")), "", &[("retry-after", "1")], ErrorKind::QuotaExhausted, false, None),
            (429, none.clone(), r#"{"error":{"type":"insufficient_quota"}}"#, &[], ErrorKind::QuotaExhausted, false, None),
            (400, hint(Some("context_length_exceeded"), Some("invalid_request_error"), None), "", &[], ErrorKind::ContextLengthExceeded, false, None),
            (400, hint(None, Some("invalid_request_error"), Some("prompt is too long: 300000 tokens")), "", &[], ErrorKind::ContextLengthExceeded, false, None),
            (400, ErrorHint::message("the input exceeds the context length of 2048"), "", &[], ErrorKind::ContextLengthExceeded, false, None),
            (400, hint(None, Some("invalid_request_error"), Some("Your credit balance is too low")), "", &[], ErrorKind::QuotaExhausted, false, None),
            (400, hint(None, Some("invalid_request_error"), Some("bad temperature")), "", &[], ErrorKind::BadRequest, false, None),
            (422, none.clone(), "unprocessable", &[], ErrorKind::BadRequest, false, None),
            (401, none.clone(), "", &[], ErrorKind::Auth, false, None),
            (402, hint(Some("402"), None, Some("Insufficient credits")), "", &[], ErrorKind::PaymentRequired, false, None),
            (402, hint(Some("payment_required"), Some("insufficient_quota"), None), "", &[], ErrorKind::PaymentRequired, false, None),
            (403, ErrorHint::message("input was flagged by moderation"), "", &[], ErrorKind::Forbidden, false, None),
            (404, hint(Some("model_not_found"), None, None), "", &[], ErrorKind::ModelNotFound, false, None),
            (404, ErrorHint::message("model \"x\" not found, try pulling it first"), "", &[], ErrorKind::ModelNotFound, false, None),
            (404, hint(None, Some("not_found_error"), Some("model: nope")), "", &[], ErrorKind::ModelNotFound, false, None),
            (404, none.clone(), "<html>Not Found</html>", &[], ErrorKind::Api, false, None),
            (408, none.clone(), "", &[], ErrorKind::Timeout, true, None),
            (409, none.clone(), "", &[("retry-after", "2")], ErrorKind::Api, true, Some(Duration::from_secs(2))),
            (413, none.clone(), "", &[], ErrorKind::Api, false, None),
            (500, none.clone(), "", &[], ErrorKind::Server, true, None),
            (502, none.clone(), "", &[], ErrorKind::Server, true, None),
            (503, none.clone(), "", &[("retry-after", "3")], ErrorKind::Overloaded, true, Some(Duration::from_secs(3))),
            (529, hint(None, Some("overloaded_error"), None), "", &[], ErrorKind::Overloaded, true, None),
            (500, hint(None, Some("overloaded_error"), None), "", &[], ErrorKind::Overloaded, true, None),
            (500, none.clone(), "", &[("x-should-retry", "false")], ErrorKind::Server, false, None),
            (400, none.clone(), "", &[("x-should-retry", "true")], ErrorKind::BadRequest, true, None),
            (429, none.clone(), "insufficient_quota", &[("x-should-retry", "true")], ErrorKind::QuotaExhausted, false, None),
        ];
        for (i, (status, hint, body, hs, kind, retryable, after)) in cases.into_iter().enumerate() {
            let err = classify_http(status, &headers(hs), body, &hint);
            assert_eq!(err.kind(), kind, "case {i}: {err}");
            assert_eq!(err.is_retryable(), retryable, "case {i}: {err}");
            assert_eq!(err.retry_after(), after, "case {i}: {err}");
            assert_eq!(err.status(), Some(status), "case {i}");
            assert_eq!(
                quorum_resilience::Retryable::is_retryable(&err),
                retryable,
                "case {i}"
            );
        }
    }

    #[test]
    fn retry_after_http_date_is_relative_to_now() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
        // A date in the past gives no hint.
        let past = headers(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]);
        assert_eq!(parse_retry_after(&past, now), None);
        // The ms header wins over the date.
        let both = headers(&[
            ("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT"),
            ("retry-after-ms", "1500"),
        ]);
        assert_eq!(
            parse_retry_after(&both, now),
            Some(Duration::from_millis(1500))
        );
        // A bad ms header falls back to Retry-After.
        let bad_ms = headers(&[("retry-after", "4"), ("retry-after-ms", "x")]);
        assert_eq!(
            parse_retry_after(&bad_ms, now),
            Some(Duration::from_secs(4))
        );
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn body_is_truncated_on_a_char_boundary_and_headers_kept() {
        let body = "é".repeat(MAX_ERROR_BODY); // 2 bytes each
        let h = headers(&[("x-request-id", "req_1"), ("content-type", "text/plain")]);
        let err = classify_http(500, &h, &body, &ErrorHint::default());
        let api = err.api().unwrap();
        assert_eq!(api.body.len(), MAX_ERROR_BODY);
        assert!(api.message.len() <= 200);
        assert_eq!(api.header("x-request-id"), Some("req_1"));
        assert_eq!(api.header("content-type"), None);
    }

    #[test]
    fn messages_are_lowercase_and_name_the_status() {
        let err = classify_http(
            429,
            &HeaderMap::new(),
            "",
            &hint(Some("rate_limit_exceeded"), None, Some("slow down")),
        );
        assert_eq!(
            err.to_string(),
            "rate limited: status 429 (code rate_limit_exceeded): slow down"
        );
        let empty = classify_http(503, &HeaderMap::new(), "", &ErrorHint::default());
        assert_eq!(
            empty.to_string(),
            "provider overloaded: status 503: service unavailable"
        );
        let unknown = LlmError::UnknownKind {
            kind: "foo".into(),
            known: vec!["ollama".into(), "openai".into()],
        };
        assert_eq!(
            unknown.to_string(),
            "unknown provider kind \"foo\" (known kinds: ollama, openai)"
        );
    }

    #[test]
    fn stream_errors_classify_by_code_and_type() {
        let cases = [
            (
                hint(Some("502"), None, Some("upstream")),
                ErrorKind::Server,
                true,
            ),
            (hint(Some("429"), None, None), ErrorKind::RateLimited, true),
            (
                hint(None, Some("overloaded_error"), None),
                ErrorKind::Overloaded,
                true,
            ),
            (
                hint(Some("insufficient_quota"), None, None),
                ErrorKind::QuotaExhausted,
                false,
            ),
            (
                hint(Some("context_length_exceeded"), None, None),
                ErrorKind::ContextLengthExceeded,
                false,
            ),
            (
                hint(None, Some("invalid_request_error"), None),
                ErrorKind::BadRequest,
                false,
            ),
            (
                hint(None, Some("server_error"), Some("boom")),
                ErrorKind::Server,
                true,
            ),
            (ErrorHint::default(), ErrorKind::Server, true),
        ];
        for (i, (h, kind, retryable)) in cases.into_iter().enumerate() {
            let err = classify_stream_error(&h, "{}");
            assert_eq!(err.kind(), kind, "case {i}: {err}");
            assert_eq!(err.is_retryable(), retryable, "case {i}");
        }
    }

    #[test]
    fn non_api_errors_classify() {
        assert!(LlmError::stream_truncated("no [DONE]").is_retryable());
        assert!(LlmError::transport("reset", "connection reset").is_retryable());
        assert!(LlmError::timeout("request", None).is_retryable());
        assert!(!LlmError::Cancelled.is_retryable());
        assert!(!LlmError::invalid_response("bad json", None).is_retryable());
        assert_eq!(LlmError::Cancelled.retry_after(), None);
        let err = LlmError::transport("connect failed", "refused");
        assert_eq!(
            std::error::Error::source(&err).map(ToString::to_string),
            Some("refused".to_owned())
        );
    }
}
