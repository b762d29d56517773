//! Health, status and metrics endpoints.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use super::{AppState, json_response};
use crate::error::ApiError;

/// How long provider health results are reused.
const HEALTH_TTL: Duration = Duration::from_secs(10);

/// `GET /livez`: the process answers.
pub(crate) async fn livez() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// `GET /startupz`: start-up recovery is done.
pub(crate) async fn startupz(State(state): State<AppState>) -> Response {
    if state.inner.ready.load(Ordering::Acquire) {
        json_response(StatusCode::OK, &json!({"status": "started"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "starting"}),
        )
    }
}

async fn provider_health(state: &AppState) -> std::collections::BTreeMap<String, String> {
    {
        let cached = state
            .inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, map)) = cached.as_ref()
            && at.elapsed() < HEALTH_TTL
        {
            return map.clone();
        }
    }
    let map = state.inner.gateway.health(Duration::from_secs(2)).await;
    *state
        .inner
        .health
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), map.clone()));
    map
}

/// `GET /readyz`: started and the store answers (503 otherwise); provider health is reported
/// but does not make the advisor unready.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if !state.inner.ready.load(Ordering::Acquire) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "starting"}),
        );
    }
    let store = match tokio::time::timeout(
        Duration::from_secs(2),
        state.engine().store().schema_version(),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2s".to_owned()),
    };
    let providers = provider_health(&state).await;
    match store {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "store": "ok", "providers": providers}),
        ),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unready", "store": format!("error: {e}"), "providers": providers}),
        ),
    }
}

/// `GET /v1/admin/status`.
pub(crate) async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine();
    let jobs = engine
        .store()
        .count_jobs_by_state(None)
        .await
        .map_err(|e| ApiError::store("count jobs", &e))?;
    let jobs: serde_json::Map<String, serde_json::Value> = jobs
        .iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    let database = engine
        .store()
        .stats()
        .await
        .map_err(|e| ApiError::store("read database statistics", &e))?;
    let uptime = state.inner.started.elapsed();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": uptime.as_secs_f64(),
            "jobs": jobs,
            "pool": engine.pool_stats(),
            "streams": {
                "open": state.open_streams(),
                "max": state.config().server.max_streams,
            },
            "breakers": state.inner.gateway.breakers(),
            "limiters": state.inner.gateway.limiters(),
            "database": database,
            "providers": provider_health(&state).await,
        }),
    ))
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(counts) = state.engine().store().count_jobs_by_state(None).await {
        state.inner.metrics.set_job_counts(&counts);
    }
    match state.inner.registry.encode() {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(quorum_metrics::CONTENT_TYPE),
            );
            response
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("could not render metrics: {e}"),
        )
        .into_response(),
    }
}
