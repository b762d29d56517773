//! `/v1/advise` and `/v1/jobs…`: submit, wait, list, inspect, cancel, and the SSE event stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use quorum_store::{Job, JobCursor, JobFilter, JobState, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval, Sleep};

use super::{AppState, StreamSlot, json_response, read_json};
use crate::engine::{AdvisePayload, AdviseRequest, JOB_KIND, Wait};
use crate::error::ApiError;
use crate::events::{
    Cursor, EventHub, HEARTBEAT, JobEvent, ProgressView, ResultView, TerminalView, rfc3339,
    sse_frame,
};

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct JobView {
    id: String,
    state: JobState,
    priority: i32,
    question: String,
    models: Vec<String>,
    attempts: u32,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<quorum_store::JobError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<ResultView>>,
    links: Value,
}

fn view(job: &Job) -> JobView {
    let payload: Option<AdvisePayload> = serde_json::from_value(job.payload.clone()).ok();
    JobView {
        id: job.id.clone(),
        state: job.state,
        priority: job.priority,
        question: payload
            .as_ref()
            .map(|p| p.question.clone())
            .unwrap_or_default(),
        models: payload
            .map(|p| p.models.into_iter().map(|m| m.name).collect())
            .unwrap_or_default(),
        attempts: job.attempts,
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
        error: job.error.clone(),
        summary: job.result.clone(),
        progress: None,
        results: None,
        links: json!({
            "self": format!("/v1/jobs/{}", job.id),
            "events": format!("/v1/jobs/{}/events", job.id),
        }),
    }
}

/// The full view: the job, its latest progress and every result.
async fn full_view(store: &Store, job: &Job) -> Result<JobView, ApiError> {
    let mut v = view(job);
    let results = store
        .list_results(&job.id)
        .await
        .map_err(|e| ApiError::store("read the job's results", &e))?;
    v.results = Some(
        results
            .iter()
            .enumerate()
            .map(|(i, r)| ResultView::from_stored(index_of(i), r))
            .collect(),
    );
    let progress = store
        .list_progress(&job.id, 0, 1000)
        .await
        .map_err(|e| ApiError::store("read the job's progress", &e))?;
    v.progress = progress.last().map(ProgressView::from);
    Ok(v)
}

fn index_of(position: usize) -> u32 {
    u32::try_from(position + 1).unwrap_or(u32::MAX)
}

/// `POST /v1/advise`.
pub(crate) async fn advise(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: AdviseRequest = read_json(&state, body).await?;
    let wait = match request.wait {
        None | Some(Wait::Flag(false)) => None,
        Some(Wait::Flag(true)) => Some(state.config().server.max_wait.as_std()),
        Some(Wait::Seconds(s)) if s.is_finite() && s >= 0.0 => Some(
            Duration::from_secs_f64(s.min(86_400.0)).min(state.config().server.max_wait.as_std()),
        ),
        Some(Wait::Seconds(s)) => {
            return Err(ApiError::invalid(
                "wait",
                format!("wait must be true, false or a number of seconds ≥ 0 (got {s})"),
            ));
        }
    };
    let engine = state.engine();
    let job = engine.submit(&request, None).await?;
    let mut job_now = job.clone();
    let mut finished = None;
    if let Some(wait) = wait {
        let started = Instant::now();
        let mut sub = engine.hub().subscribe(&job.id);
        // It may have finished before the subscription.
        if let Ok(Some(j)) = engine.store().get_job(&job.id).await
            && j.state.is_terminal()
        {
            job_now = j;
            drop(sub);
            engine.hub().forget_if_idle(&job.id);
        } else {
            let deadline = started + wait;
            let mut shutdown = state.inner.shutdown.clone();
            loop {
                tokio::select! {
                    event = sub.events.recv() => match event {
                        Ok(event) if matches!(&*event, JobEvent::Terminal(_)) => {
                            if let JobEvent::Terminal(t) = &*event {
                                finished.clone_from(&t.finished);
                            }
                            break;
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    // Answer with the job as it is: it resumes at the next start.
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
            }
            drop(sub);
            engine.hub().forget_if_idle(&job.id);
            if finished.is_none()
                && let Ok(Some(j)) = engine.store().get_job(&job.id).await
            {
                job_now = j;
            }
        }
    }
    let v = match finished {
        // The runner handed over the finished job: no need to read it back.
        Some(f) => {
            job_now = f.job.clone();
            let mut v = view(&f.job);
            v.results = Some(f.results.clone());
            v.progress.clone_from(&f.progress);
            v
        }
        None => full_view(engine.store(), &job_now).await?,
    };
    let status = if job_now.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = json_response(status, &v);
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(response)
}

/// `GET /v1/jobs` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/jobs?state=&limit=&cursor=`: newest first.
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let job_state = match params.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<JobState>().map_err(|_| {
            ApiError::invalid(
                "state",
                format!(
                    "unknown state \"{s}\" (one of: {})",
                    JobState::ALL.map(JobState::as_str).join(", ")
                ),
            )
        })?),
    };
    let limit = params.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit {limit} is outside 1..=1000"),
        ));
    }
    let cursor = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<JobCursor>().map_err(|_| {
            ApiError::invalid("cursor", format!("\"{c}\" is not a cursor from this API"))
        })?),
    };
    let filter = JobFilter {
        state: job_state,
        kind: Some(JOB_KIND.to_owned()),
        ..JobFilter::default()
    };
    let page = state
        .engine()
        .store()
        .list_jobs(&filter, cursor.as_ref(), limit)
        .await
        .map_err(|e| ApiError::store("list jobs", &e))?;
    let jobs: Vec<JobView> = page.jobs.iter().map(view).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "jobs": jobs, "next_cursor": page.next.map(|c| c.to_string()) }),
    ))
}

async fn load_job(state: &AppState, id: &str) -> Result<Job, ApiError> {
    match state.engine().store().get_job(id).await {
        Ok(Some(job)) if job.kind == JOB_KIND => Ok(job),
        Ok(_) => Err(ApiError::not_found(format!("no job \"{id}\""))),
        Err(e) => Err(ApiError::store("read the job", &e)),
    }
}

/// `GET /v1/jobs/{id}`.
pub(crate) async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load_job(&state, &id).await?;
    let v = full_view(state.engine().store(), &job).await?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `DELETE /v1/jobs/{id}`: cancel.
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    load_job(&state, &id).await?;
    let job = state.engine().cancel(&id).await?;
    Ok(json_response(StatusCode::OK, &view(&job)))
}

/// `GET /v1/jobs/{id}/events`: the SSE stream.
pub(crate) async fn job_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cursor = match headers.get("last-event-id") {
        None => Cursor::default(),
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::invalid("Last-Event-ID", "not valid text"))?
            .parse::<Cursor>()
            .map_err(|e| ApiError::invalid("Last-Event-ID", e))?,
    };
    let slot = StreamSlot::acquire(&state)?;
    let job = load_job(&state, &id).await?;
    let engine = state.engine();
    let hub = engine.hub().clone();
    let store = engine.store().clone();
    let mut sse = Sse {
        queue: VecDeque::new(),
        events: None,
        cursor,
        job_id: id.clone(),
        store,
        hub: hub.clone(),
        heartbeat: {
            let every = state.config().server.heartbeat.as_std();
            tokio::time::interval_at(Instant::now() + every, every)
        },
        lifetime: Box::pin(tokio::time::sleep(
            state.config().server.stream_lifetime.as_std(),
        )),
        shutdown: state.inner.shutdown.clone(),
        done: false,
        _slot: slot,
    };
    if job.state.is_terminal() {
        sse.replay(&[]).await?;
        sse.terminal_from(&job);
    } else {
        let sub = hub.subscribe(&id);
        // It may have ended between the read and the subscription.
        let job = load_job(&state, &id).await?;
        if job.state.is_terminal() {
            drop(sub);
            hub.forget_if_idle(&id);
            sse.replay(&[]).await?;
            sse.terminal_from(&job);
        } else {
            sse.replay(&sub.results).await?;
            sse.events = Some(sub.events);
        }
    }
    let stream = futures_util::stream::unfold(sse, |mut sse| async move {
        sse.next_frame()
            .await
            .map(|frame| (Ok::<Bytes, Infallible>(frame), sse))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response.into_response())
}

/// One SSE stream's state.
struct Sse {
    queue: VecDeque<Bytes>,
    events: Option<broadcast::Receiver<Arc<JobEvent>>>,
    cursor: Cursor,
    job_id: String,
    store: Store,
    hub: EventHub,
    heartbeat: Interval,
    lifetime: Pin<Box<Sleep>>,
    shutdown: watch::Receiver<bool>,
    done: bool,
    _slot: StreamSlot,
}

impl Drop for Sse {
    fn drop(&mut self) {
        // Free the job's channel if this was its last listener and it is not running here.
        self.events = None;
        self.hub.forget_if_idle(&self.job_id);
    }
}

impl Sse {
    /// Queues what the client has not seen, in the order it happened: stored progress after
    /// the cursor and stored results after it, then `live` results (broadcast, maybe not
    /// stored yet).
    async fn replay(&mut self, live: &[ResultView]) -> Result<(), ApiError> {
        let progress = self
            .store
            .list_progress(&self.job_id, self.cursor.progress, 1000)
            .await
            .map_err(|e| ApiError::store("read the job's progress", &e))?;
        let stored = self
            .store
            .list_results(&self.job_id)
            .await
            .map_err(|e| ApiError::store("read the job's results", &e))?;
        // A result is written before the progress event that counts it: on equal times the
        // result goes first.
        let mut p = progress.iter().peekable();
        for (i, r) in stored.iter().enumerate() {
            while let Some(e) = p.next_if(|e| e.created_at < r.created_at) {
                self.push_progress(&ProgressView::from(e));
            }
            self.push_result(&ResultView::from_stored(index_of(i), r));
        }
        for e in p {
            self.push_progress(&ProgressView::from(e));
        }
        for r in live {
            self.push_result(r);
        }
        Ok(())
    }

    fn push_progress(&mut self, p: &ProgressView) {
        if p.seq <= self.cursor.progress {
            return;
        }
        self.cursor.progress = p.seq;
        let id = self.cursor.to_string();
        self.queue.push_back(sse_frame("progress", Some(&id), p));
    }

    fn push_result(&mut self, r: &ResultView) {
        if r.index <= self.cursor.results {
            return;
        }
        self.cursor.results = r.index;
        let id = self.cursor.to_string();
        self.queue.push_back(sse_frame("result", Some(&id), r));
    }

    fn push_terminal(&mut self, t: &TerminalView) {
        let event = if t.state == JobState::Completed {
            "done"
        } else {
            "error"
        };
        let id = self.cursor.to_string();
        self.queue.push_back(sse_frame(event, Some(&id), t));
        self.done = true;
        self.events = None;
    }

    /// The final event of a finished job; called after [`Sse::replay`], so the cursor counts
    /// every stored result.
    fn terminal_from(&mut self, job: &Job) {
        self.push_terminal(&TerminalView {
            job_id: job.id.clone(),
            state: job.state,
            error: job.error.clone(),
            results: self.cursor.results,
            finished: None,
        });
    }

    fn push_end(&mut self, kind: &str, message: &str) {
        let id = self.cursor.to_string();
        let data = json!({
            "job_id": self.job_id,
            "type": kind,
            "message": message,
            "resume_with_last_event_id": id,
        });
        self.queue.push_back(sse_frame("error", Some(&id), &data));
        self.done = true;
        self.events = None;
    }

    /// The next frame to send; `None` ends the stream.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Some(frame);
            }
            if self.done {
                return None;
            }
            let events = self.events.as_mut()?;
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => match &*event {
                        JobEvent::Progress(p) => self.push_progress(p),
                        JobEvent::Result(r) => self.push_result(r),
                        JobEvent::Token { model, text } => {
                            self.queue.push_back(sse_frame(
                                "token",
                                None,
                                &json!({ "model": model, "text": text }),
                            ));
                        }
                        JobEvent::Terminal(t) => {
                            // Results broadcast but not yet seen are in the store now.
                            let _ = self.replay(&[]).await;
                            let t = TerminalView { results: t.results.max(self.cursor.results), ..t.clone() };
                            self.push_terminal(&t);
                        }
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow: catch up from the store and the results not stored yet
                        // (tokens in between are lost).
                        let live = self.hub.results(&self.job_id);
                        let _ = self.replay(&live).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.events = None;
                        let _ = self.replay(&[]).await;
                        match self.store.get_job(&self.job_id).await {
                            Ok(Some(job)) if job.state.is_terminal() => self.terminal_from(&job),
                            _ => self.push_end(
                                "stream_interrupted",
                                "the job stopped running in this instance; reconnect to follow it",
                            ),
                        }
                    }
                },
                _ = self.heartbeat.tick() => {
                    self.queue.push_back(Bytes::from_static(HEARTBEAT));
                }
                () = &mut self.lifetime => {
                    self.push_end(
                        "stream_expired",
                        "the stream reached server.stream_lifetime; reconnect with Last-Event-ID to continue",
                    );
                }
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        self.push_end(
                            "shutting_down",
                            "the advisor is shutting down; the job resumes at its next start, reconnect with Last-Event-ID",
                        );
                    }
                }
            }
        }
    }
}
