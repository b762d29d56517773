//! The HTTP API (axum): routes, shared state, request metrics and JSON body reading.

mod advise;
mod openai;
mod ops;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use quorum_metrics::SharedRegistry;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::AdvisorConfig;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::metrics::AdvisorMetrics;

/// Time spent waiting on the provider while handling a request; a handler puts it in the
/// response's extensions so the metrics layer can report the advisor's own overhead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamTime(pub(crate) Duration);

/// Everything the handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    engine: Engine,
    gateway: Arc<Gateway>,
    metrics: AdvisorMetrics,
    registry: SharedRegistry,
    config: Arc<AdvisorConfig>,
    started: Instant,
    ready: AtomicBool,
    streams: AtomicUsize,
    shutdown: watch::Receiver<bool>,
    health: Mutex<Option<(Instant, BTreeMap<String, String>)>>,
}

impl AppState {
    /// State over a running engine. `shutdown` turns `true` when the service stops: open
    /// streams then end with a final event.
    #[must_use]
    pub fn new(
        engine: Engine,
        registry: SharedRegistry,
        config: Arc<AdvisorConfig>,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        let gateway = Arc::clone(engine.gateway());
        let metrics = gateway.metrics().clone();
        AppState {
            inner: Arc::new(StateInner {
                engine,
                gateway,
                metrics,
                registry,
                config,
                started: Instant::now(),
                ready: AtomicBool::new(false),
                streams: AtomicUsize::new(0),
                shutdown,
                health: Mutex::new(None),
            }),
        }
    }

    /// Marks start-up (recovery) as done: `/startupz` and `/readyz` may answer 200.
    pub fn set_started(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// Open SSE streams.
    #[must_use]
    pub fn open_streams(&self) -> usize {
        self.inner.streams.load(Ordering::Relaxed)
    }

    fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    fn config(&self) -> &AdvisorConfig {
        &self.inner.config
    }
}

/// The whole API as an axum router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/advise", post(advise::advise))
        .route("/v1/jobs", get(advise::list_jobs))
        .route(
            "/v1/jobs/{id}",
            get(advise::get_job).delete(advise::cancel_job),
        )
        .route("/v1/jobs/{id}/events", get(advise::job_events))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .route("/livez", get(ops::livez))
        .route("/readyz", get(ops::readyz))
        .route("/startupz", get(ops::startupz))
        .route("/v1/admin/status", get(ops::status))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Request metrics: duration by route, method and status; active requests; the advisor's
/// overhead where the handler reported its upstream time.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let m = &state.inner.metrics;
    // The API waits for start-up recovery; probes, status and metrics answer at once.
    if !state.inner.ready.load(Ordering::Acquire)
        && route.starts_with("/v1/")
        && route != "/v1/admin/status"
    {
        let response = ApiError::unavailable(
            "starting",
            "the advisor is starting (recovering jobs); retry shortly",
            1,
        )
        .into_response();
        m.observe_http(
            &route,
            &method,
            response.status().as_u16(),
            started.elapsed(),
        );
        return response;
    }
    // Dropped with the request too (a client that leaves mid-request).
    let active = ActiveRequest::enter(m);
    let response = next.run(request).await;
    drop(active);
    let elapsed = started.elapsed();
    m.observe_http(&route, &method, response.status().as_u16(), elapsed);
    // Only the gateway reports its upstream time (see `UpstreamTime`).
    if let Some(UpstreamTime(upstream)) = response.extensions().get::<UpstreamTime>() {
        m.observe_overhead("/v1/chat/completions", elapsed.saturating_sub(*upstream));
    }
    response
}

/// One request in the active-requests gauge, until dropped.
struct ActiveRequest<'a>(&'a AdvisorMetrics);

impl<'a> ActiveRequest<'a> {
    fn enter(metrics: &'a AdvisorMetrics) -> Self {
        metrics.http_active().inc();
        ActiveRequest(metrics)
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.http_active().dec();
    }
}

/// Reads a JSON body of at most `server.body_limit` bytes into `T`; errors name the field.
async fn read_json<T: DeserializeOwned>(state: &AppState, body: Body) -> Result<T, ApiError> {
    let limit = usize::try_from(state.config().server.body_limit.bytes()).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is larger than the {} allowed (server.body_limit)",
                    state.config().server.body_limit
                ),
            )
        } else {
            ApiError::invalid("body", format!("could not read the request body: {e}"))
        }
    })?;
    parse_json(&bytes)
}

/// Parses `bytes` as JSON into `T`, naming the field at fault.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "body",
            "the request body is empty; send a JSON object",
        ));
    }
    // The fast path; on failure parse again, tracking the path, to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "malformed JSON"
        } else {
            "invalid value"
        };
        let message = inner.to_string();
        if path.is_empty() || path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::invalid("body", format!("{what}: {message}"))
        } else {
            ApiError::invalid(path.clone(), format!("{path}: {message}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::invalid("body", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// A slot among `server.max_streams` open streams, released on drop.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    state: AppState,
}

impl StreamSlot {
    pub(crate) fn acquire(state: &AppState) -> Result<StreamSlot, ApiError> {
        let max = state.config().server.max_streams;
        let before = state.inner.streams.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            state.inner.streams.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::unavailable(
                "too_many_streams",
                format!("{max} streams are open (server.max_streams); retry shortly"),
                2,
            ));
        }
        state.inner.metrics.streams_active().inc();
        Ok(StreamSlot {
            state: state.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.state.inner.streams.fetch_sub(1, Ordering::AcqRel);
        self.state.inner.metrics.streams_active().dec();
    }
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("could not render the answer: {e}"),
        )
        .into_response(),
    }
}
