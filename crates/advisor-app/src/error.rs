//! Errors: [`AdvisorError`] for start-up and the service's life, [`ApiError`] for HTTP answers.

use std::fmt;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quorum_llm::{ErrorKind, LlmError};
use serde_json::{Value, json};

/// One configuration problem, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The key path (`engine.max_concurrent_jobs`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why the advisor could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdvisorError {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Load(#[from] quorum_config::ConfigError),
    /// The configuration is invalid; every problem is listed.
    #[error("invalid configuration:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<ConfigIssue>),
    /// A provider could not be built from its section.
    #[error("providers[{index}] ({name}): {source}")]
    Provider {
        /// Position in `providers`.
        index: usize,
        /// The provider's name.
        name: String,
        /// The factory's error.
        #[source]
        source: LlmError,
    },
    /// The store could not be opened.
    #[error("store.url: {0}")]
    Store(#[from] quorum_store::StoreError),
    /// The listening socket could not be bound.
    #[error("server.bind: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
}

/// An HTTP error answer: `{"error": {"type", "message", "field"?, ...}}` with its status.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// A stable snake_case class (`invalid_request`, `not_found`, `rate_limited`, …).
    pub kind: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The request field at fault, if any (`models[2]`).
    pub field: Option<String>,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<Duration>,
    /// More members of the error object (`known_models`, …).
    pub extra: Option<Value>,
}

impl ApiError {
    /// An error with `status`, `kind` and `message`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            field: None,
            retry_after: None,
            extra: None,
        }
    }

    /// 400 `invalid_request` about `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message).field(field)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 `unavailable` with `Retry-After`.
    pub fn unavailable(kind: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, kind, message);
        e.retry_after = Some(Duration::from_secs(retry_after));
        e
    }

    /// 500 `internal` for a store failure (logged; the message names the operation).
    pub fn store(what: &str, error: &quorum_store::StoreError) -> Self {
        tracing::error!(error = %error, "store error while trying to {what}");
        if error.is_retryable() {
            return ApiError::unavailable(
                "store_unavailable",
                format!("could not {what}: the database is unavailable ({error})"),
                1,
            );
        }
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("could not {what}: {error}"),
        )
    }

    /// Sets the field.
    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds members to the error object.
    #[must_use]
    pub fn extra(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// The error an upstream model failure maps to: its class as the type, 429 / 502 / 503 /
    /// 504 / 400 as fits, `Retry-After` when the provider gave one.
    pub fn from_llm(error: &LlmError) -> Self {
        let kind = error.kind();
        let status = match kind {
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::ContextLengthExceeded
            | ErrorKind::BadRequest
            | ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            _ => StatusCode::BAD_GATEWAY,
        };
        let mut e = ApiError::new(status, kind.as_str(), error.to_string());
        if quorum_llm::is_breaker_open(error) {
            e.status = StatusCode::SERVICE_UNAVAILABLE;
            e.kind = "breaker_open";
        }
        e.retry_after = error.retry_after();
        e
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> Value {
        let mut obj = json!({"type": self.kind, "message": self.message});
        if let Some(field) = &self.field {
            obj["field"] = Value::String(field.clone());
            // OpenAI clients read `param`.
            obj["param"] = Value::String(field.clone());
        }
        if let Some(Value::Object(extra)) = &self.extra {
            for (k, v) in extra {
                obj[k] = v.clone();
            }
        }
        json!({ "error": obj })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.kind,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
