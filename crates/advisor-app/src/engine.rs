//! The job engine: a submitted question becomes a persisted job; a bounded pool claims jobs
//! (priority, then age) and fans each out to its models concurrently; every model's answer is
//! broadcast the moment it arrives and persisted in arrival order; progress is persisted and
//! broadcast; a job ends `completed` (at least one model answered), `failed` (none did),
//! `cancelled` or `timed_out`.
//!
//! **Crashes.** Jobs are claimed under this instance's stable runner id
//! ([`EngineConfig::node_id`]) with a lease renewed while they run. At start-up the engine takes
//! back whatever that id left running, requeues jobs whose lease expired, and fails (with a
//! reason) pending jobs whose deadline passed while it was down; the rest run again, skipping
//! the models whose results were already recorded.
//!
//! **Shutdown.** [`Engine::shutdown`] stops claiming, lets running jobs finish until the grace
//! deadline, then stops the rest and puts them back to pending for the next start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quorum_llm::{ChatRequest, Message};
use quorum_store::{
    Job, JobError, JobState, JobWrite, NewJob, NewModelResult, NewProgress, Store, StoreError,
    Transition, Writer,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{AdvisorSection, EngineConfig};
use crate::error::ApiError;
use crate::events::{EventHub, JobEvent, ProgressView, ResultView, TerminalView};
use crate::gateway::Gateway;
use crate::metrics::AdvisorMetrics;

/// The job kind advisor jobs are stored under.
pub const JOB_KIND: &str = "advise";

/// Priorities a request may ask for.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// What a client asks: `POST /v1/advise`'s body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdviseRequest {
    /// The question.
    pub question: String,
    /// Configured model names (default: `advisor.default_models`).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// A system prompt for every model.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// A system prompt per model (wins over `system_prompt`).
    #[serde(default)]
    pub system_prompts: BTreeMap<String, String>,
    /// Higher runs first (-1000..=1000). Default 0.
    #[serde(default)]
    pub priority: i32,
    /// `max_tokens` for every model.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature for every model.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Wait for the job to finish before answering: `true` (up to `server.max_wait`) or a
    /// number of seconds.
    #[serde(default)]
    pub wait: Option<Wait>,
}

/// `wait`: a flag or seconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Wait {
    /// `true`: the server's longest wait; `false`: no wait.
    Flag(bool),
    /// Seconds.
    Seconds(f64),
}

/// One model of a planned job, with its resolved system prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedModel {
    /// The configured model name.
    pub name: String,
    /// The system prompt, after precedence.
    pub system_prompt: String,
}

/// What is stored as the job's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdvisePayload {
    /// The question.
    pub question: String,
    /// The models, in the order asked.
    pub models: Vec<PlannedModel>,
    /// The job's deadline, in milliseconds since the Unix epoch.
    pub deadline_ms: i64,
    /// `max_tokens` for every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Temperature for every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

/// Why a running job is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Cancelled by a client: the store already says so.
    Cancel,
    /// The service is shutting down: leave the job resumable.
    Release,
}

/// Pool statistics, for the status endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    /// Jobs running in this instance.
    pub running: usize,
    /// The most that may run at once.
    pub max_concurrent_jobs: u32,
    /// Pending jobs (as this instance counts them).
    pub pending: i64,
    /// The most that may wait.
    pub queue_capacity: u32,
    /// Whether the engine still claims jobs.
    pub accepting: bool,
}

/// The job engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    gateway: Arc<Gateway>,
    hub: EventHub,
    metrics: AdvisorMetrics,
    config: EngineConfig,
    advisor: AdvisorSection,
    permits: Arc<Semaphore>,
    wake: Notify,
    pending: AtomicI64,
    running: Mutex<HashMap<String, oneshot::Sender<Stop>>>,
    tasks: Mutex<JoinSet<()>>,
    accepting: AtomicBool,
    stopped: Notify,
}

impl Inner {
    /// One job left the queue. The count is corrected from the store whenever the queue looks
    /// empty, and such a correction can race a submission: it never goes below zero.
    fn leave_queue(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some((n - 1).max(0))
            });
    }
}

impl Engine {
    /// An engine over `store` and `gateway`. Call [`Engine::recover`] and then
    /// [`Engine::start`].
    #[must_use]
    pub fn new(
        store: Store,
        gateway: Arc<Gateway>,
        hub: EventHub,
        config: EngineConfig,
        advisor: AdvisorSection,
    ) -> Engine {
        let metrics = gateway.metrics().clone();
        let permits = Arc::new(Semaphore::new(config.max_concurrent_jobs as usize));
        Engine {
            inner: Arc::new(Inner {
                store,
                gateway,
                hub,
                metrics,
                config,
                advisor,
                permits,
                wake: Notify::new(),
                pending: AtomicI64::new(0),
                running: Mutex::new(HashMap::new()),
                tasks: Mutex::new(JoinSet::new()),
                accepting: AtomicBool::new(true),
                stopped: Notify::new(),
            }),
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The event hub.
    #[must_use]
    pub fn hub(&self) -> &EventHub {
        &self.inner.hub
    }

    /// The gateway.
    #[must_use]
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.inner.gateway
    }

    /// Start-up recovery (see the [module docs](self)); returns how many jobs will run again.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let s = &self.inner.store;
        let released = s.release_runner_jobs(&self.inner.config.node_id).await?;
        if !released.is_empty() {
            tracing::warn!(
                jobs = released.len(),
                node_id = %self.inner.config.node_id,
                "took back jobs a previous run of this instance left running"
            );
        }
        let now = s.now().as_millis();
        let mut resumed = 0;
        loop {
            let batch = s.recoverable_jobs(1000).await?;
            let mut changed = 0;
            for job in &batch {
                if job.kind != JOB_KIND {
                    continue;
                }
                if job.state == JobState::Running {
                    if s.requeue_expired_job(&job.id).await?.is_applied() {
                        changed += 1;
                    }
                    continue;
                }
                let deadline = deadline_of(job);
                if deadline.is_some_and(|d| d <= now) {
                    let error = JobError::new(
                        "deadline_passed",
                        "the job's deadline passed before it could finish (the advisor was down)",
                    );
                    if let Transition::Applied(j) =
                        s.fail_job(&job.id, Writer::Controller, &error).await?
                    {
                        changed += 1;
                        tracing::warn!(job = %j.id, "failed a recovered job: deadline passed");
                    }
                } else {
                    resumed += 1;
                }
            }
            // Requeued jobs show up as pending in the next batch; stop once nothing changed.
            if changed == 0 || batch.len() < 1000 {
                break;
            }
        }
        let pending = s.count_jobs(JobState::Pending, Some(JOB_KIND)).await?;
        self.inner.pending.store(
            i64::try_from(pending).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        self.inner.metrics.queue_depth().set(self.pending());
        if resumed > 0 {
            tracing::info!(jobs = resumed, "resuming pending jobs");
        }
        Ok(resumed)
    }

    /// Starts the dispatcher.
    pub fn start(&self) {
        let inner = Arc::clone(&self.inner);
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tasks.spawn(async move { dispatch(inner).await });
    }

    /// Pending jobs, as this instance counts them.
    #[must_use]
    pub fn pending(&self) -> i64 {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// Pool statistics.
    #[must_use]
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            running: self
                .inner
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            max_concurrent_jobs: self.inner.config.max_concurrent_jobs,
            pending: self.pending(),
            queue_capacity: self.inner.config.queue_capacity,
            accepting: self.inner.accepting.load(Ordering::Relaxed),
        }
    }

    /// Checks and plans a request (no side effects).
    ///
    /// # Errors
    ///
    /// An [`ApiError`] naming the field: empty or over-long question, unknown model (404 with
    /// the known ones), too many or repeated models, a per-model prompt for a model not asked,
    /// a priority out of range.
    pub fn plan(&self, request: &AdviseRequest) -> Result<AdvisePayload, ApiError> {
        let a = &self.inner.advisor;
        let question = request.question.trim();
        if question.is_empty() {
            return Err(ApiError::invalid("question", "question must not be empty"));
        }
        let chars = question.chars().count();
        if chars > a.max_question_chars {
            return Err(ApiError::invalid(
                "question",
                format!(
                    "question is {chars} characters, more than the {} allowed",
                    a.max_question_chars
                ),
            ));
        }
        let models: Vec<String> = match &request.models {
            Some(m) if m.is_empty() => {
                return Err(ApiError::invalid(
                    "models",
                    "models must name at least one model (or be left out for the default set)",
                ));
            }
            Some(m) => m.clone(),
            None => a.default_models.clone(),
        };
        if models.len() > a.max_models {
            return Err(ApiError::invalid(
                "models",
                format!(
                    "{} models asked, at most {} allowed",
                    models.len(),
                    a.max_models
                ),
            ));
        }
        let mut seen = HashSet::new();
        for (i, m) in models.iter().enumerate() {
            if self.inner.gateway.model(m).is_none() {
                let known: Vec<&str> = self.inner.gateway.model_names().collect();
                return Err(ApiError::not_found(format!(
                    "unknown model \"{m}\" (known: {})",
                    known.join(", ")
                ))
                .field(format!("models[{i}]"))
                .extra(json!({ "known_models": known })));
            }
            if !seen.insert(m.as_str()) {
                return Err(ApiError::invalid(
                    format!("models[{i}]"),
                    format!("model \"{m}\" is listed twice"),
                ));
            }
        }
        for name in request.system_prompts.keys() {
            if !seen.contains(name.as_str()) {
                return Err(ApiError::invalid(
                    format!("system_prompts.{name}"),
                    format!("a system prompt for \"{name}\", which is not among the models asked"),
                ));
            }
        }
        if !PRIORITY_RANGE.contains(&request.priority) {
            return Err(ApiError::invalid(
                "priority",
                format!("priority {} is outside -1000..=1000", request.priority),
            ));
        }
        if let Some(t) = request.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature {t} is outside 0..=2"),
            ));
        }
        if request.max_tokens == Some(0) {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        let planned = models
            .iter()
            .map(|name| {
                // Precedence: per-request per-model, per-request global, configured per-model,
                // built-in.
                let system_prompt = request
                    .system_prompts
                    .get(name)
                    .or(request.system_prompt.as_ref())
                    .cloned()
                    .or_else(|| {
                        self.inner
                            .gateway
                            .model(name)
                            .and_then(|m| m.system_prompt.clone())
                    })
                    .unwrap_or_else(|| a.system_prompt.clone());
                PlannedModel {
                    name: name.clone(),
                    system_prompt,
                }
            })
            .collect();
        let deadline = self
            .inner
            .store
            .now()
            .plus(self.inner.config.job_timeout.as_std());
        Ok(AdvisePayload {
            question: question.to_owned(),
            models: planned,
            deadline_ms: deadline.as_millis(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
        })
    }

    /// Checks, plans and persists a job, then wakes the pool.
    ///
    /// # Errors
    ///
    /// [`Engine::plan`]'s errors; 503 `queue_full` past `engine.queue_capacity` or while
    /// shutting down; a store failure.
    pub async fn submit(
        &self,
        request: &AdviseRequest,
        owner: Option<&str>,
    ) -> Result<Job, ApiError> {
        let payload = self.plan(request)?;
        if !self.inner.accepting.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable(
                "shutting_down",
                "the advisor is shutting down; retry against another instance",
                5,
            ));
        }
        let pending = self.inner.pending.fetch_add(1, Ordering::AcqRel);
        if pending >= i64::from(self.inner.config.queue_capacity) {
            self.inner.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::unavailable(
                "queue_full",
                format!(
                    "{pending} jobs are waiting, the queue holds {}; retry later",
                    self.inner.config.queue_capacity
                ),
                1,
            ));
        }
        let value = serde_json::to_value(&payload).unwrap_or(Value::Null);
        let mut new = NewJob::new(JOB_KIND, value).priority(request.priority);
        if let Some(owner) = owner {
            new = new.owner(owner);
        }
        let job = match self.inner.store.create_job(new).await {
            Ok(job) => job,
            Err(e) => {
                self.inner.leave_queue();
                return Err(ApiError::store("create the job", &e));
            }
        };
        self.inner.metrics.queue_depth().set(self.pending());
        // No channel yet: a subscriber opens one, the runner marks it running (`EventHub::start`).
        self.inner.wake.notify_one();
        Ok(job)
    }

    /// Cancels a pending or running job (aborting its in-flight model calls).
    ///
    /// # Errors
    ///
    /// 404 for an unknown job, 409 for a job already finished, a store failure.
    pub async fn cancel(&self, id: &str) -> Result<Job, ApiError> {
        let before = self
            .inner
            .store
            .get_job(id)
            .await
            .map_err(|e| ApiError::store("read the job", &e))?
            .map(|j| (j.state, j.attempts));
        let reason = JobError::new("cancelled", "cancelled by request");
        let outcome = self
            .inner
            .store
            .cancel_job(id, Some(&reason))
            .await
            .map_err(|e| ApiError::store("cancel the job", &e))?;
        match outcome {
            Transition::Applied(job) => {
                // It leaves the queue unless a runner claimed it in between (a claim counts
                // an attempt).
                if before == Some((JobState::Pending, job.attempts)) {
                    self.inner.leave_queue();
                    self.inner.metrics.queue_depth().set(self.pending().max(0));
                }
                let stop = self
                    .inner
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(id);
                match stop {
                    // The runner ends the job's stream once its calls are stopped.
                    Some(stop) => {
                        let _ = stop.send(Stop::Cancel);
                    }
                    None => {
                        let results = self.results_count(id).await;
                        self.inner
                            .hub
                            .finish(id, terminal_view(&job, results), Some(&job));
                    }
                }
                Ok(job)
            }
            Transition::NotFound => Err(ApiError::not_found(format!("no job \"{id}\""))),
            other => {
                let state = other
                    .job()
                    .map_or("finished".to_owned(), |j| j.state.to_string());
                Err(ApiError::new(
                    http::StatusCode::CONFLICT,
                    "already_finished",
                    format!("job \"{id}\" is already {state}"),
                ))
            }
        }
    }

    async fn results_count(&self, id: &str) -> u32 {
        self.inner
            .store
            .list_results(id)
            .await
            .map_or(0, |r| u32::try_from(r.len()).unwrap_or(u32::MAX))
    }

    /// Stops claiming jobs, lets running ones finish until `grace` has passed, then stops the
    /// rest and puts them back to pending for the next start. Returns how many were released.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.inner.accepting.store(false, Ordering::Relaxed);
        self.inner.stopped.notify_waiters();
        self.inner.wake.notify_waiters();
        let deadline = Instant::now() + grace;
        loop {
            let running = self
                .inner
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stops: Vec<_> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (_, stop) in stops {
            let _ = stop.send(Stop::Release);
        }
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        tasks.join_all().await;
        match self
            .inner
            .store
            .release_runner_jobs(&self.inner.config.node_id)
            .await
        {
            Ok(jobs) => {
                if !jobs.is_empty() {
                    tracing::info!(
                        jobs = jobs.len(),
                        "released unfinished jobs; they resume at the next start"
                    );
                }
                jobs.len()
            }
            Err(e) => {
                tracing::error!(error = %e, "could not release unfinished jobs; they resume once their lease expires");
                0
            }
        }
    }
}

fn deadline_of(job: &Job) -> Option<i64> {
    job.payload.get("deadline_ms").and_then(Value::as_i64)
}

fn terminal_view(job: &Job, results: u32) -> TerminalView {
    TerminalView {
        job_id: job.id.clone(),
        state: job.state,
        error: job.error.clone(),
        results,
        finished: None,
    }
}

/// Claims jobs while permits are free; sleeps until woken or the poll interval passes.
async fn dispatch(inner: Arc<Inner>) {
    let runner = inner.config.node_id.clone();
    let lease = inner.config.lease.as_std();
    loop {
        if !inner.accepting.load(Ordering::Relaxed) {
            return;
        }
        let permit = tokio::select! {
            p = Arc::clone(&inner.permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = inner.stopped.notified() => return,
        };
        if !inner.accepting.load(Ordering::Relaxed) {
            return;
        }
        match inner.store.claim_job(&runner, lease, Some(JOB_KIND)).await {
            Ok(Some(job)) => {
                inner.leave_queue();
                inner
                    .metrics
                    .queue_depth()
                    .set(inner.pending.load(Ordering::Relaxed).max(0));
                // Under the task lock: shutdown takes the task set after turning `accepting`
                // off, so a job is either spawned into the set it joins or left to it to
                // release.
                let mut tasks = inner.tasks.lock().unwrap_or_else(PoisonError::into_inner);
                if !inner.accepting.load(Ordering::Relaxed) {
                    return;
                }
                let (stop_tx, stop_rx) = oneshot::channel();
                inner
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(job.id.clone(), stop_tx);
                let task_inner = Arc::clone(&inner);
                tasks.spawn(async move { run_job(task_inner, job, stop_rx, permit).await });
                // Reap finished tasks so the set does not grow.
                while tasks.try_join_next().is_some() {}
            }
            Ok(None) => {
                drop(permit);
                // The queue looks empty here: correct the count from the store (other
                // instances may have claimed or added jobs).
                if let Ok(pending) = inner
                    .store
                    .count_jobs(JobState::Pending, Some(JOB_KIND))
                    .await
                {
                    inner.pending.store(
                        i64::try_from(pending).unwrap_or(i64::MAX),
                        Ordering::Relaxed,
                    );
                    inner
                        .metrics
                        .queue_depth()
                        .set(i64::try_from(pending).unwrap_or(i64::MAX));
                }
                tokio::select! {
                    () = inner.wake.notified() => {}
                    () = tokio::time::sleep(inner.config.poll_interval.as_std()) => {}
                    () = inner.stopped.notified() => return,
                }
            }
            Err(e) => {
                drop(permit);
                tracing::error!(error = %e, "could not claim a job; retrying");
                tokio::select! {
                    () = tokio::time::sleep(inner.config.poll_interval.as_std()) => {}
                    () = inner.stopped.notified() => return,
                }
            }
        }
    }
}

/// How the fan-out ended.
enum Ending {
    AllAnswered,
    Stopped(Stop),
    TimedOut,
    LeaseLost,
}

async fn run_job(
    inner: Arc<Inner>,
    job: Job,
    mut stop: oneshot::Receiver<Stop>,
    permit: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let id = job.id.clone();
    // Leaves the pool (slot, running map, gauge) on every path out of this function.
    let _slot = RunSlot::enter(Arc::clone(&inner), id.clone(), permit);
    inner.hub.start(&id);
    let runner = inner.config.node_id.clone();
    let job_runner = JobRunner {
        inner: &inner,
        id: &id,
        node: &runner,
        started,
    };
    let payload: AdvisePayload = match serde_json::from_value(job.payload.clone()) {
        Ok(p) => p,
        Err(e) => {
            let error = JobError::new(
                "invalid_payload",
                format!("the stored job cannot be read: {e}"),
            );
            job_runner.finish(End::Failed(error), 0).await;
            return;
        }
    };
    let now = inner.store.now().as_millis();
    let left = u64::try_from(payload.deadline_ms.saturating_sub(now)).unwrap_or(0);
    // Results recorded before a crash count; their models are not asked again.
    let existing = if job.attempts > 1 {
        inner.store.list_results(&id).await.unwrap_or_default()
    } else {
        Vec::new() // a first run has nothing recorded yet
    };
    let mut states: BTreeMap<String, &'static str> = payload
        .models
        .iter()
        .map(|m| (m.name.clone(), "pending"))
        .collect();
    let mut answered = 0u32;
    let mut failed = 0u32;
    for r in &existing {
        if let Some(s) = states.get_mut(&r.model) {
            *s = if r.error.is_none() { "done" } else { "failed" };
            if r.error.is_none() {
                answered += 1;
            } else {
                failed += 1;
            }
        }
    }
    let mut index = u32::try_from(existing.len()).unwrap_or(u32::MAX);
    let total = u32::try_from(payload.models.len())
        .unwrap_or(u32::MAX)
        .max(1);
    if left == 0 {
        let error = JobError::new("timeout", "the job's deadline passed before it could run");
        job_runner.finish(End::TimedOut(error), index).await;
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(left);

    // Writes happen in arrival order on their own task, so a slow write never delays the
    // broadcast of the next answer.
    let (write_tx, write_rx) = mpsc::unbounded_channel::<JobWrite>();
    let persister = tokio::spawn(persist(
        inner.store.clone(),
        inner.hub.clone(),
        id.clone(),
        write_rx,
    ));

    let todo: Vec<&PlannedModel> = payload
        .models
        .iter()
        .filter(|m| states.get(&m.name) == Some(&"pending"))
        .collect();
    for m in &todo {
        states.insert(m.name.clone(), "running");
    }
    let _ = write_tx.send(JobWrite::Progress(NewProgress {
        percent: Some(percent(answered + failed, total)),
        message: Some(if existing.is_empty() {
            format!("asking {} models", todo.len())
        } else {
            format!(
                "resuming: asking the {} models without an answer",
                todo.len()
            )
        }),
        models: Some(json!({ "states": states })),
    }));

    let mut calls = JoinSet::new();
    for m in todo {
        let gateway = Arc::clone(&inner.gateway);
        let hub = inner.hub.clone();
        let job_id = id.clone();
        let request = chat_request(&payload, m, gateway.model(&m.name));
        let stream = inner.advisor.stream_tokens;
        let name = m.name.clone();
        calls.spawn(async move {
            let t0 = Instant::now();
            let result = if stream {
                let sender = hub.sender(&job_id);
                gateway
                    .chat_streamed(&request, |text| {
                        let _ = sender.send(Arc::new(JobEvent::Token {
                            model: request.model.clone(),
                            text: text.to_owned(),
                        }));
                    })
                    .await
            } else {
                gateway.chat(&request).await
            };
            (name, result, t0.elapsed())
        });
    }

    let renew_every = (inner.config.lease.as_std() / 3).max(Duration::from_millis(100));
    // The first renewal is at once: it finds a job cancelled between its claim and now (the
    // cancel could not reach this runner yet), while the calls are starting.
    let mut renew = tokio::time::interval(renew_every);
    let ending = loop {
        tokio::select! {
            joined = calls.join_next() => {
                let Some(joined) = joined else { break Ending::AllAnswered };
                let Ok((name, result, elapsed)) = joined else { continue };
                index += 1;
                let new = match result {
                    Ok(answer) => {
                        answered += 1;
                        states.insert(name.clone(), "done");
                        NewModelResult {
                            model: name.clone(),
                            provider: answer.provider.clone(),
                            content: Some(answer.response.content),
                            error: None,
                            usage: answer.response.usage.map(|u| json!({
                                "prompt_tokens": u.prompt_tokens,
                                "completion_tokens": u.completion_tokens,
                                "total_tokens": u.total_tokens(),
                            })),
                            latency: Some(elapsed),
                            fallback: answer.fallback.map(|f| serde_json::to_value(f).unwrap_or(Value::Null)),
                        }
                    }
                    Err(failure) => {
                        failed += 1;
                        states.insert(name.clone(), "failed");
                        let skipped: Vec<String> = failure
                            .skipped
                            .iter()
                            .map(|s| format!("{}/{}: {}", s.provider, s.model, s.reason))
                            .collect();
                        NewModelResult {
                            model: name.clone(),
                            provider: "none".to_owned(),
                            content: None,
                            error: Some(JobError::new(failure.error.kind().as_str(), failure.error.to_string())),
                            usage: None,
                            latency: Some(elapsed),
                            fallback: (!skipped.is_empty()).then(|| json!({ "skipped": skipped })),
                        }
                    }
                };
                inner.hub.publish(&id, JobEvent::Result(ResultView::from_new(index, &new)));
                let _ = write_tx.send(JobWrite::Result(new));
                let done = answered + failed;
                let spent = started.elapsed();
                let eta_ms = if done < total && done > 0 {
                    let per = spent / done.max(1);
                    u64::try_from((per * (total - done)).as_millis()).unwrap_or(u64::MAX)
                } else {
                    0
                };
                let _ = write_tx.send(JobWrite::Progress(NewProgress {
                    percent: Some(percent(done, total)),
                    message: Some(format!("{name} {} ({done}/{total})", if states.get(&name) == Some(&"done") { "answered" } else { "failed" })),
                    models: Some(json!({ "states": states, "eta_ms": eta_ms })),
                }));
            }
            s = &mut stop => {
                calls.abort_all();
                break Ending::Stopped(s.unwrap_or(Stop::Release));
            }
            () = tokio::time::sleep_until(deadline) => {
                calls.abort_all();
                break Ending::TimedOut;
            }
            _ = renew.tick() => {
                match inner.store.renew_lease(&id, &runner, inner.config.lease.as_std()).await {
                    Ok(Transition::Applied(_)) => {}
                    Ok(Transition::AlreadyFinished(_) | Transition::LeaseNotHeld(_) | Transition::NotRunning(_) | Transition::NotFound) => {
                        calls.abort_all();
                        break Ending::LeaseLost;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(job = %id, error = %e, "could not renew the job's lease; retrying"),
                }
            }
        }
    };
    // In-flight calls are aborted; wait for them to be dropped (closing their connections).
    while calls.join_next().await.is_some() {}
    drop(write_tx);
    let _ = persister.await;
    match ending {
        Ending::AllAnswered => {
            if answered > 0 {
                let result = json!({"models": total, "answered": answered, "failed": failed});
                job_runner.finish(End::Completed(result), index).await;
            } else {
                let error = JobError::new(
                    "all_models_failed",
                    format!("none of the {total} models answered"),
                );
                job_runner.finish(End::Failed(error), index).await;
            }
        }
        Ending::TimedOut => {
            let error = JobError::new(
                "timeout",
                format!(
                    "the job did not finish within its deadline ({answered} of {total} models answered)"
                ),
            );
            job_runner.finish(End::TimedOut(error), index).await;
        }
        Ending::Stopped(Stop::Cancel) | Ending::LeaseLost => {
            // The store already holds the final state (or another runner owns the job).
            match inner.store.get_job(&id).await {
                Ok(Some(job)) if job.state.is_terminal() => {
                    inner.metrics.observe_job(job.state, started.elapsed());
                    inner
                        .hub
                        .finish(&id, terminal_view(&job, index), Some(&job));
                }
                _ => inner.hub.release(&id),
            }
        }
        Ending::Stopped(Stop::Release) => {
            inner.hub.release(&id);
            tracing::info!(job = %id, "job stopped by shutdown; it resumes at the next start");
        }
    }
}

/// A running job's place in the pool: entered when the job starts, left on drop.
struct RunSlot {
    inner: Arc<Inner>,
    id: String,
    _permit: OwnedSemaphorePermit,
}

impl RunSlot {
    fn enter(inner: Arc<Inner>, id: String, permit: OwnedSemaphorePermit) -> RunSlot {
        inner.metrics.jobs_running().inc();
        RunSlot {
            inner,
            id,
            _permit: permit,
        }
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.inner.metrics.jobs_running().dec();
    }
}

/// How a job ends when its runner ends it.
enum End {
    /// With the summary.
    Completed(Value),
    /// With the reason.
    Failed(JobError),
    /// Past its deadline.
    TimedOut(JobError),
}

/// The runner of one job: what every ending needs.
struct JobRunner<'a> {
    inner: &'a Inner,
    id: &'a str,
    node: &'a str,
    started: Instant,
}

impl JobRunner<'_> {
    /// Records the end in the store (guarded by this runner's lease) and ends the job's
    /// stream; `results` is how many results were recorded.
    async fn finish(&self, end: End, results: u32) {
        let (s, id, by) = (&self.inner.store, self.id, Writer::Runner(self.node));
        let mut attempt = 0;
        let outcome = loop {
            let outcome = match &end {
                End::Completed(summary) => s.complete_job(id, by, summary).await,
                End::TimedOut(error) => s.time_out_job(id, by, Some(error)).await,
                End::Failed(error) => s.fail_job(id, by, error).await,
            };
            attempt += 1;
            match outcome {
                Err(e) if e.is_retryable() && attempt < 5 => {
                    tracing::warn!(job = %id, error = %e, "could not record the job's end; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                other => break other,
            }
        };
        match outcome {
            Ok(t) => {
                if let Some(job) = t.job() {
                    self.inner
                        .metrics
                        .observe_job(job.state, self.started.elapsed());
                    self.inner
                        .hub
                        .finish(id, terminal_view(job, results), Some(job));
                }
                if !t.is_applied() {
                    tracing::info!(job = %id, outcome = ?t.job().map(|j| j.state), "job already finished elsewhere");
                }
            }
            Err(e) => {
                // The job stays running until its lease lapses and a start-up recovery runs it
                // again; its subscribers see their stream interrupted.
                tracing::error!(job = %id, error = %e, "could not record the job's end");
                self.inner.hub.release(id);
            }
        }
    }
}

/// Writes results and progress in order, whatever is queued at once in one transaction;
/// broadcasts each progress event once stored (with its sequence number).
async fn persist(
    store: Store,
    hub: EventHub,
    id: String,
    mut rx: mpsc::UnboundedReceiver<JobWrite>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match store.record_batch(&id, &batch).await {
                Ok(events) => {
                    for event in &events {
                        hub.publish(&id, JobEvent::Progress(ProgressView::from(event)));
                    }
                    break;
                }
                // A busy or briefly unreachable database: the same batch again, in order.
                Err(e) if e.is_retryable() && attempt < 8 => {
                    tracing::warn!(job = %id, error = %e, "could not record results or progress; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                }
                Err(e) => {
                    tracing::error!(job = %id, writes = batch.len(), error = %e, "could not record results or progress");
                    break;
                }
            }
        }
    }
}

/// `done` of `total` in percent, to one decimal.
fn percent(done: u32, total: u32) -> f64 {
    (f64::from(done) * 1000.0 / f64::from(total.max(1))).round() / 10.0
}

fn chat_request(
    payload: &AdvisePayload,
    model: &PlannedModel,
    entry: Option<&crate::config::ModelEntry>,
) -> ChatRequest {
    let mut request = ChatRequest::new(
        model.name.clone(),
        vec![
            Message::system(model.system_prompt.clone()),
            Message::user(payload.question.clone()),
        ],
    );
    request.max_tokens = payload.max_tokens.or(entry.and_then(|e| e.max_tokens));
    request.temperature = payload.temperature.or(entry.and_then(|e| e.temperature));
    request
}
