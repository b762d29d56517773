//! Jobs: creation, atomic claim with a lease, guarded state transitions, listing, recovery.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Store;
use crate::clock::Timestamp;
use crate::db::{RowExt, json_text, with_pool};
use crate::error::StoreError;

/// Where a job is in its life. `completed`, `failed`, `cancelled` and `timed_out` are terminal:
/// once there, no update changes the job again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a runner holding a lease.
    Running,
    /// Finished with a result.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// Gave up after its deadline.
    TimedOut,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    /// The terminal states.
    pub const TERMINAL: [Self; 4] = [
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    /// The name stored in the database (`timed_out`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Whether no further transition is allowed.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| StoreError::invalid("state", format!("unknown job state {s:?}")))
    }
}

/// Why a job failed: a message and a machine-readable class (`rate_limited`, `timeout`,
/// `provider_error`, …; the caller's vocabulary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Human-readable message.
    pub message: String,
    /// Error class.
    pub class: String,
}

impl JobError {
    /// An error with `class` and `message`.
    #[must_use]
    pub fn new(class: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            class: class.into(),
        }
    }
}

/// Who runs a job, and until when the claim holds unless renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The runner's id (as passed to [`Store::claim_job`]).
    pub owner: String,
    /// When the lease lapses; after that the job may be requeued by recovery.
    pub expires_at: Timestamp,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Id: a UUIDv7 (time-ordered, lowercase hyphenated) unless the creator chose one.
    pub id: String,
    /// What kind of work (`advise`, `chat`, …).
    pub kind: String,
    /// Current state.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Input.
    pub payload: Value,
    /// Output, once completed.
    pub result: Option<Value>,
    /// Error, once failed (or timed out / cancelled with a reason).
    pub error: Option<JobError>,
    /// How many times it has been claimed.
    pub attempts: u32,
    /// Who submitted it (API key id or user).
    pub owner: Option<String>,
    /// Conversation it belongs to.
    pub session_id: Option<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last claimed.
    pub started_at: Option<Timestamp>,
    /// Reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// Last changed.
    pub updated_at: Timestamp,
    /// The current claim, while running.
    pub lease: Option<Lease>,
}

/// A job to create. `NewJob::new(kind, payload)` then the optional setters.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Chosen id (for idempotent submission); `None` generates a UUIDv7.
    pub id: Option<String>,
    /// What kind of work.
    pub kind: String,
    /// Higher runs first. Default 0.
    pub priority: i32,
    /// Input.
    pub payload: Value,
    /// Who submits it.
    pub owner: Option<String>,
    /// Conversation it belongs to.
    pub session_id: Option<String>,
}

impl NewJob {
    /// A job of `kind` with `payload`, priority 0, no owner or session.
    #[must_use]
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            id: None,
            kind: kind.into(),
            priority: 0,
            payload,
            owner: None,
            session_id: None,
        }
    }

    /// Sets the id.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the owner.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the session.
    #[must_use]
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }
}

/// Who is writing a transition, which decides the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer<'a> {
    /// The runner that claimed the job: the write applies only while the job is running and
    /// this runner still holds the lease (even if it lapsed, as long as nobody requeued it).
    Runner(&'a str),
    /// A controller (API cancel, supervisor, start-up recovery): the write applies to any
    /// job that is not finished.
    Controller,
}

impl Writer<'_> {
    fn runner(self) -> Option<String> {
        match self {
            Self::Runner(r) => Some(r.to_owned()),
            Self::Controller => None,
        }
    }
}

/// The outcome of a guarded update: applied, or why not.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Transition {
    /// The update applied; the job as it now is.
    Applied(Job),
    /// No job has that id.
    NotFound,
    /// The job had already reached a terminal state; it is unchanged.
    AlreadyFinished(Job),
    /// The writer does not hold the job's lease (it was requeued or claimed by another
    /// runner); the job is unchanged.
    LeaseNotHeld(Job),
    /// The job is not running (requeue or renew of a pending job); it is unchanged.
    NotRunning(Job),
    /// Requeue refused: the lease has not expired yet.
    LeaseStillValid(Job),
}

impl Transition {
    /// Whether the update applied.
    #[must_use]
    pub fn is_applied(&self) -> bool {
        matches!(self, Self::Applied(_))
    }

    /// The updated job, if the update applied.
    #[must_use]
    pub fn applied(self) -> Option<Job> {
        match self {
            Self::Applied(job) => Some(job),
            _ => None,
        }
    }

    /// The job as stored, whatever the outcome (`None` only for [`Transition::NotFound`]).
    #[must_use]
    pub fn job(&self) -> Option<&Job> {
        match self {
            Self::Applied(j)
            | Self::AlreadyFinished(j)
            | Self::LeaseNotHeld(j)
            | Self::NotRunning(j)
            | Self::LeaseStillValid(j) => Some(j),
            Self::NotFound => None,
        }
    }
}

/// Filters for [`Store::list_jobs`]; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this owner.
    pub owner: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
}

/// A keyset position in a newest-first job listing. Displays as `MILLIS_ID` for use in URLs
/// and parses back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCursor {
    /// `created_at` of the last job seen.
    pub created_at: Timestamp,
    /// `id` of the last job seen.
    pub id: String,
}

impl fmt::Display for JobCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.created_at.as_millis(), self.id)
    }
}

impl FromStr for JobCursor {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StoreError::invalid("cursor", format!("{s:?} is not a job cursor"));
        let (ms, id) = s.split_once('_').ok_or_else(bad)?;
        let ms = ms.parse::<i64>().map_err(|_| bad())?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            created_at: Timestamp::from_millis(ms),
            id: id.to_owned(),
        })
    }
}

/// One page of a job listing.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// Jobs, newest first.
    pub jobs: Vec<Job>,
    /// Pass to the next call for the following page; `None` on the last page.
    pub next: Option<JobCursor>,
}

/// A progress update to append.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewProgress {
    /// Percent done, 0–100.
    pub percent: Option<f64>,
    /// What is happening.
    pub message: Option<String>,
    /// Per-model status (`{"gpt": "done", "claude": "streaming"}`).
    pub models: Option<Value>,
}

/// A stored progress event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// The job.
    pub job_id: String,
    /// 1, 2, 3… per job, in append order: the SSE resume cursor.
    pub seq: i64,
    /// Percent done.
    pub percent: Option<f64>,
    /// Message.
    pub message: Option<String>,
    /// Per-model status.
    pub models: Option<Value>,
    /// When appended.
    pub created_at: Timestamp,
}

/// One model's result in a fan-out job, to record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewModelResult {
    /// Model name.
    pub model: String,
    /// Provider that served it.
    pub provider: String,
    /// Answer, on success.
    pub content: Option<String>,
    /// Error, on failure.
    pub error: Option<JobError>,
    /// Token usage as reported.
    pub usage: Option<Value>,
    /// Time to the full answer.
    pub latency: Option<Duration>,
    /// Fallback information (which model stood in, why).
    pub fallback: Option<Value>,
}

/// A stored per-model result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// Row id (arrival order within the job).
    pub id: i64,
    /// The job.
    pub job_id: String,
    /// Model name.
    pub model: String,
    /// Provider.
    pub provider: String,
    /// Answer.
    pub content: Option<String>,
    /// Error.
    pub error: Option<JobError>,
    /// Token usage.
    pub usage: Option<Value>,
    /// Latency.
    pub latency: Option<Duration>,
    /// Fallback information.
    pub fallback: Option<Value>,
    /// When recorded.
    pub created_at: Timestamp,
}

macro_rules! job_cols {
    () => {
        "id, kind, state, priority, payload, result, error, error_class, attempts, owner, \
         session_id, created_at, started_at, finished_at, updated_at, lease_owner, lease_expires_at"
    };
}

/// The claim `UPDATE`, up to where the dialects differ (the subquery's row lock). `started_at`
/// is never before `created_at`: a claim racing an insert may have read the clock first.
macro_rules! claim_head {
    () => {
        "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, \
         attempts = attempts + 1, started_at = CASE WHEN created_at > $3 THEN created_at ELSE $3 END, \
         updated_at = $3 WHERE state = 'pending' AND id = (SELECT id FROM jobs WHERE state = 'pending' \
         AND ($4 IS NULL OR kind = $4) ORDER BY priority DESC, created_at, id LIMIT 1"
    };
}

const MAX_PAGE: u32 = 1000;

/// Inserts one model result (binds: job, model, provider, content, error, class, usage,
/// latency, fallback, time).
const RESULT_INSERT: &str = "INSERT INTO job_results (job_id, model, provider, content, error, \
    error_class, usage, latency_ms, fallback, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Appends a progress event (binds: job, percent, message, models, time). SQLite serializes
/// writers, so the next seq is simply MAX + 1; PostgreSQL bumps a counter on the job row, whose
/// lock orders concurrent appenders to one job (and their commits), so seqs are gap-free and
/// become visible in order.
const PROGRESS_INSERT_SQLITE: &str = "INSERT INTO job_progress \
    (job_id, seq, percent, message, models, created_at) \
    SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM job_progress \
    WHERE job_id = $1 RETURNING seq";
const PROGRESS_INSERT_POSTGRES: &str = "WITH s AS (UPDATE jobs SET progress_seq = progress_seq + 1 \
    WHERE id = $1 RETURNING progress_seq) \
    INSERT INTO job_progress (job_id, seq, percent, message, models, created_at) \
    SELECT $1, s.progress_seq, $2, $3, $4, $5 FROM s RETURNING seq";

/// One write of a [`Store::record_batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum JobWrite {
    /// A model's result.
    Result(NewModelResult),
    /// A progress event.
    Progress(NewProgress),
}

fn job_from_row<R: RowExt>(row: &R) -> Result<Job, StoreError> {
    let state_text = row.string("state")?;
    let state = JobState::from_str(&state_text)
        .map_err(|_| StoreError::corrupt("jobs.state", format!("unknown state {state_text:?}")))?;
    let error = match row.opt_string("error")? {
        Some(message) => Some(JobError {
            message,
            class: row.opt_string("error_class")?.unwrap_or_default(),
        }),
        None => None,
    };
    let lease = match (
        row.opt_string("lease_owner")?,
        row.opt_ts("lease_expires_at")?,
    ) {
        (Some(owner), Some(expires_at)) => Some(Lease { owner, expires_at }),
        _ => None,
    };
    Ok(Job {
        id: row.string("id")?,
        kind: row.string("kind")?,
        state,
        priority: i32::try_from(row.i64("priority")?)
            .map_err(|e| StoreError::corrupt("jobs.priority", e))?,
        payload: row.json("payload")?,
        result: row.opt_json("result")?,
        error,
        attempts: u32::try_from(row.i64("attempts")?).unwrap_or(u32::MAX),
        owner: row.opt_string("owner")?,
        session_id: row.opt_string("session_id")?,
        created_at: row.ts("created_at")?,
        started_at: row.opt_ts("started_at")?,
        finished_at: row.opt_ts("finished_at")?,
        updated_at: row.ts("updated_at")?,
        lease,
    })
}

fn progress_from_row<R: RowExt>(row: &R) -> Result<ProgressEvent, StoreError> {
    Ok(ProgressEvent {
        job_id: row.string("job_id")?,
        seq: row.i64("seq")?,
        percent: row.opt_f64("percent")?,
        message: row.opt_string("message")?,
        models: row.opt_json("models")?,
        created_at: row.ts("created_at")?,
    })
}

fn result_from_row<R: RowExt>(row: &R) -> Result<ModelResult, StoreError> {
    let error = match row.opt_string("error")? {
        Some(message) => Some(JobError {
            message,
            class: row.opt_string("error_class")?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(ModelResult {
        id: row.i64("id")?,
        job_id: row.string("job_id")?,
        model: row.string("model")?,
        provider: row.string("provider")?,
        content: row.opt_string("content")?,
        error,
        usage: row.opt_json("usage")?,
        latency: row
            .opt_i64("latency_ms")?
            .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        fallback: row.opt_json("fallback")?,
        created_at: row.ts("created_at")?,
    })
}

/// Counter state for UUIDv7 ids: ids made by this process in the same millisecond still
/// increase, so "then oldest" claim order holds within a millisecond too.
static ID_CONTEXT: std::sync::Mutex<uuid::ContextV7> =
    std::sync::Mutex::new(uuid::ContextV7::new());

/// A new UUIDv7 id stamped with `now` (the store clock's time).
pub(crate) fn new_id(now: Timestamp) -> String {
    let millis = u64::try_from(now.as_millis()).unwrap_or(0);
    let nanos = u32::try_from((millis % 1000) * 1_000_000).unwrap_or(0);
    let ts = {
        let context = ID_CONTEXT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        uuid::Timestamp::from_unix(&*context, millis / 1000, nanos)
    };
    uuid::Uuid::new_v7(ts).to_string()
}

pub(crate) fn check_id(name: &'static str, id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::invalid(name, "must not be empty"));
    }
    if id.len() > 200 {
        return Err(StoreError::invalid(name, "longer than 200 bytes"));
    }
    Ok(())
}

fn check_result(result: &NewModelResult) -> Result<(), StoreError> {
    if result.model.is_empty() {
        return Err(StoreError::invalid("model", "must not be empty"));
    }
    if result.provider.is_empty() {
        return Err(StoreError::invalid("provider", "must not be empty"));
    }
    Ok(())
}

fn check_progress(progress: &NewProgress) -> Result<(), StoreError> {
    if let Some(pct) = progress.percent
        && !(0.0..=100.0).contains(&pct)
    {
        return Err(StoreError::invalid(
            "percent",
            format!("{pct} is outside 0..=100"),
        ));
    }
    Ok(())
}

pub(crate) fn check_limit(limit: u32) -> Result<i64, StoreError> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(StoreError::invalid(
            "limit",
            format!("{limit} is outside 1..={MAX_PAGE}"),
        ));
    }
    Ok(i64::from(limit))
}

impl Store {
    /// Creates a pending job.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for an empty kind or id; a database error (a duplicate
    /// chosen id is a unique violation, reported as [`StoreError::InvalidArgument`]).
    pub async fn create_job(&self, new: NewJob) -> Result<Job, StoreError> {
        let _turn = self.write_turn().await;
        if new.kind.is_empty() {
            return Err(StoreError::invalid("kind", "must not be empty"));
        }
        let now = self.now();
        let id = match new.id {
            Some(id) => {
                check_id("id", &id)?;
                id
            }
            None => new_id(now),
        };
        let sql = concat!(
            "INSERT INTO jobs (id, kind, state, priority, payload, attempts, owner, session_id, \
             created_at, updated_at) VALUES ($1, $2, 'pending', $3, $4, 0, $5, $6, $7, $7) RETURNING ",
            job_cols!()
        );
        let result = with_pool!(&self.pool, p, d => {
            sqlx::query(sql)
                .bind(&id)
                .bind(&new.kind)
                .bind(i64::from(new.priority))
                .bind(json_text(&new.payload))
                .bind(&new.owner)
                .bind(&new.session_id)
                .bind(now.as_millis())
                .fetch_one(p)
                .await
                .map_err(StoreError::db("create job"))
                .and_then(|row| job_from_row(&row))
        });
        match result {
            Err(e) if e.is_unique_violation() => Err(StoreError::invalid(
                "id",
                format!("a job with id {id:?} already exists"),
            )),
            other => other,
        }
    }

    /// Reads one job.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let sql = concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1");
        with_pool!(&self.pool, p, d => {
            let row = sqlx::query(sql)
                .bind(id)
                .fetch_optional(p)
                .await
                .map_err(StoreError::db("get job"))?;
            row.as_ref().map(job_from_row).transpose()
        })
    }

    /// Atomically claims the next pending job — highest priority first, then oldest — for
    /// `runner`: it becomes running with a lease until now + `lease`, and its attempts go up by
    /// one. `kind` restricts the claim to one kind of job. Two claimers never get the same job.
    ///
    /// PostgreSQL: one `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`, so claimers do
    /// not wait for each other. SQLite: the same single `UPDATE` statement, which takes the
    /// database's one write lock for its whole run (writers are serialized, waiting up to the
    /// busy timeout).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for an empty runner or zero lease; a database error
    /// (retryable when busy).
    pub async fn claim_job(
        &self,
        runner: &str,
        lease: Duration,
        kind: Option<&str>,
    ) -> Result<Option<Job>, StoreError> {
        let _turn = self.write_turn().await;
        check_id("runner", runner)?;
        if lease.is_zero() {
            return Err(StoreError::invalid("lease", "must be more than 0s"));
        }
        let now = self.now();
        let sqlite = concat!(claim_head!(), ") RETURNING ", job_cols!());
        let postgres = concat!(
            claim_head!(),
            " FOR UPDATE SKIP LOCKED) RETURNING ",
            job_cols!()
        );
        with_pool!(&self.pool, p, d => {
            let row = sqlx::query(d.pick(sqlite, postgres))
                .bind(runner)
                .bind(now.plus(lease).as_millis())
                .bind(now.as_millis())
                .bind(kind)
                .fetch_optional(p)
                .await
                .map_err(StoreError::db("claim job"))?;
            row.as_ref().map(job_from_row).transpose()
        })
    }

    /// Extends `runner`'s lease on a running job to now + `lease`.
    ///
    /// # Errors
    ///
    /// A database error. A lost lease is not an error: see the [`Transition`].
    pub async fn renew_lease(
        &self,
        id: &str,
        runner: &str,
        lease: Duration,
    ) -> Result<Transition, StoreError> {
        let _turn = self.write_turn().await;
        let now = self.now();
        let sql = concat!(
            "UPDATE jobs SET lease_expires_at = $3, updated_at = $4 \
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 RETURNING ",
            job_cols!()
        );
        let applied = with_pool!(&self.pool, p, d => {
            let row = sqlx::query(sql)
                .bind(id)
                .bind(runner)
                .bind(now.plus(lease).as_millis())
                .bind(now.as_millis())
                .fetch_optional(p)
                .await
                .map_err(StoreError::db("renew lease"))?;
            row.as_ref().map(job_from_row).transpose()?
        });
        self.explain(id, applied, Writer::Runner(runner)).await
    }

    /// Marks a job completed with `result`.
    ///
    /// # Errors
    ///
    /// A database error. A late write (job already finished, lease lost) is not an error: the
    /// [`Transition`] says why it did not apply.
    pub async fn complete_job(
        &self,
        id: &str,
        by: Writer<'_>,
        result: &Value,
    ) -> Result<Transition, StoreError> {
        self.finish(id, by, JobState::Completed, Some(json_text(result)), None)
            .await
    }

    /// Marks a job failed with `error`.
    ///
    /// # Errors
    ///
    /// As [`Store::complete_job`].
    pub async fn fail_job(
        &self,
        id: &str,
        by: Writer<'_>,
        error: &JobError,
    ) -> Result<Transition, StoreError> {
        self.finish(id, by, JobState::Failed, None, Some(error))
            .await
    }

    /// Cancels a job that has not finished (pending or running), as a controller.
    ///
    /// # Errors
    ///
    /// As [`Store::complete_job`].
    pub async fn cancel_job(
        &self,
        id: &str,
        reason: Option<&JobError>,
    ) -> Result<Transition, StoreError> {
        self.finish(id, Writer::Controller, JobState::Cancelled, None, reason)
            .await
    }

    /// Marks a job timed out.
    ///
    /// # Errors
    ///
    /// As [`Store::complete_job`].
    pub async fn time_out_job(
        &self,
        id: &str,
        by: Writer<'_>,
        error: Option<&JobError>,
    ) -> Result<Transition, StoreError> {
        self.finish(id, by, JobState::TimedOut, None, error).await
    }

    async fn finish(
        &self,
        id: &str,
        by: Writer<'_>,
        state: JobState,
        result: Option<String>,
        error: Option<&JobError>,
    ) -> Result<Transition, StoreError> {
        let _turn = self.write_turn().await;
        let now = self.now();
        let sql = concat!(
            "UPDATE jobs SET state = $2, result = $3, error = $4, error_class = $5, \
             finished_at = $6, updated_at = $6, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND state IN ('pending', 'running') \
             AND ($7 IS NULL OR (state = 'running' AND lease_owner = $7)) RETURNING ",
            job_cols!()
        );
        let applied = with_pool!(&self.pool, p, d => {
            let row = sqlx::query(sql)
                .bind(id)
                .bind(state.as_str())
                .bind(result)
                .bind(error.map(|e| e.message.clone()))
                .bind(error.map(|e| e.class.clone()))
                .bind(now.as_millis())
                .bind(by.runner())
                .fetch_optional(p)
                .await
                .map_err(StoreError::db("finish job"))?;
            row.as_ref().map(job_from_row).transpose()?
        });
        self.explain(id, applied, by).await
    }

    /// Turns "updated or not" into a [`Transition`], reading the job to say why not.
    async fn explain(
        &self,
        id: &str,
        applied: Option<Job>,
        by: Writer<'_>,
    ) -> Result<Transition, StoreError> {
        if let Some(job) = applied {
            return Ok(Transition::Applied(job));
        }
        let Some(job) = self.get_job(id).await? else {
            return Ok(Transition::NotFound);
        };
        Ok(if job.state.is_terminal() {
            Transition::AlreadyFinished(job)
        } else if matches!(by, Writer::Runner(_)) {
            // Claimed by another runner, or requeued after the lease lapsed: this runner's
            // claim is gone.
            Transition::LeaseNotHeld(job)
        } else {
            Transition::NotRunning(job)
        })
    }

    /// Lists jobs newest first, filtered, `limit` (1–1000) at a time; pass the returned
    /// cursor to get the next page.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for a bad limit; a database error.
    pub async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<&JobCursor>,
        limit: u32,
    ) -> Result<JobPage, StoreError> {
        let limit = check_limit(limit)?;
        let sql = concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR owner = $2) \
             AND ($3 IS NULL OR kind = $3) \
             AND ($4 IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5)) \
             ORDER BY created_at DESC, id DESC LIMIT $6"
        );
        let jobs = with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(filter.state.map(JobState::as_str))
                .bind(&filter.owner)
                .bind(&filter.kind)
                .bind(after.map(|c| c.created_at.as_millis()))
                .bind(after.map_or("", |c| c.id.as_str()))
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(StoreError::db("list jobs"))?;
            rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()?
        });
        let next = if i64::try_from(jobs.len()).unwrap_or(i64::MAX) == limit {
            jobs.last().map(|j| JobCursor {
                created_at: j.created_at,
                id: j.id.clone(),
            })
        } else {
            None
        };
        Ok(JobPage { jobs, next })
    }

    /// Counts jobs per state (every state present, zero when none), optionally for one owner.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn count_jobs_by_state(
        &self,
        owner: Option<&str>,
    ) -> Result<BTreeMap<JobState, u64>, StoreError> {
        let mut counts: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        let sql =
            "SELECT state, COUNT(*) AS n FROM jobs WHERE ($1 IS NULL OR owner = $1) GROUP BY state";
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(owner)
                .fetch_all(p)
                .await
                .map_err(StoreError::db("count jobs"))?;
            for row in &rows {
                let state = JobState::from_str(&row.string("state")?)
                    .map_err(|e| StoreError::corrupt("jobs.state", e))?;
                counts.insert(state, u64::try_from(row.i64("n")?).unwrap_or(0));
            }
        });
        Ok(counts)
    }

    /// How many jobs are in `state` (of `kind`, if given): one index range count, cheap on a
    /// large table, unlike [`Store::count_jobs_by_state`].
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn count_jobs(&self, state: JobState, kind: Option<&str>) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM jobs WHERE state = $1 AND ($2 IS NULL OR kind = $2)";
        with_pool!(&self.pool, p, d => {
            let row = sqlx::query(sql)
                .bind(state.as_str())
                .bind(kind)
                .fetch_one(p)
                .await
                .map_err(StoreError::db("count jobs"))?;
            Ok(u64::try_from(row.i64("n")?).unwrap_or(0))
        })
    }

    /// Start-up recovery: jobs that are pending, or running with a lease that expired before
    /// now — oldest first, at most `limit` (1–1000). The caller resumes them (requeue with
    /// [`Store::requeue_expired_job`]) or fails them explicitly.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for a bad limit; a database error.
    pub async fn recoverable_jobs(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        let limit = check_limit(limit)?;
        let now = self.now();
        let sql = concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE state = 'pending' OR (state = 'running' AND lease_expires_at < $1) \
             ORDER BY created_at, id LIMIT $2"
        );
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(now.as_millis())
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(StoreError::db("list recoverable jobs"))?;
            rows.iter().map(job_from_row).collect()
        })
    }

    /// Puts a running job whose lease has expired back to pending (lease cleared, attempts
    /// kept), so another runner can claim it. Guarded: a job whose lease is still valid, or
    /// that is not running, is left alone.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn requeue_expired_job(&self, id: &str) -> Result<Transition, StoreError> {
        let _turn = self.write_turn().await;
        let now = self.now();
        let sql = concat!(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = $2 WHERE id = $1 AND state = 'running' AND lease_expires_at < $2 \
             RETURNING ",
            job_cols!()
        );
        let applied = with_pool!(&self.pool, p, d => {
            let row = sqlx::query(sql)
                .bind(id)
                .bind(now.as_millis())
                .fetch_optional(p)
                .await
                .map_err(StoreError::db("requeue job"))?;
            row.as_ref().map(job_from_row).transpose()?
        });
        if let Some(job) = applied {
            return Ok(Transition::Applied(job));
        }
        let Some(job) = self.get_job(id).await? else {
            return Ok(Transition::NotFound);
        };
        Ok(match job.state {
            s if s.is_terminal() => Transition::AlreadyFinished(job),
            JobState::Running => Transition::LeaseStillValid(job),
            _ => Transition::NotRunning(job),
        })
    }

    /// Puts every job that `runner` holds back to pending (lease cleared, attempts kept),
    /// whether or not its lease has expired, and returns them. A runner calls this for itself:
    /// at start-up with a stable runner id, to take back what a crashed predecessor of the same
    /// id left running, and at shutdown, for the jobs it will not finish.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for an empty runner id; a database error.
    pub async fn release_runner_jobs(&self, runner: &str) -> Result<Vec<Job>, StoreError> {
        let _turn = self.write_turn().await;
        check_id("runner", runner)?;
        let now = self.now();
        let sql = concat!(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = $2 WHERE state = 'running' AND lease_owner = $1 RETURNING ",
            job_cols!()
        );
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(runner)
                .bind(now.as_millis())
                .fetch_all(p)
                .await
                .map_err(StoreError::db("release jobs"))?;
            rows.iter().map(job_from_row).collect()
        })
    }

    /// Appends a progress event to a job; its `seq` is the previous one + 1.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if the job does not exist; [`StoreError::InvalidArgument`] for
    /// a percent outside 0–100; a database error.
    pub async fn append_progress(
        &self,
        job_id: &str,
        progress: &NewProgress,
    ) -> Result<ProgressEvent, StoreError> {
        let _turn = self.write_turn().await;
        check_progress(progress)?;
        let now = self.now();
        let models = progress.models.as_ref().map(json_text);
        let result = with_pool!(&self.pool, p, d => {
            sqlx::query(d.pick(PROGRESS_INSERT_SQLITE, PROGRESS_INSERT_POSTGRES))
                .bind(job_id)
                .bind(progress.percent)
                .bind(&progress.message)
                .bind(&models)
                .bind(now.as_millis())
                .fetch_optional(p)
                .await
                .map_err(StoreError::db("append progress"))
                .and_then(|row| row.map(|r| r.i64("seq")).transpose())
        });
        let not_found = || StoreError::NotFound {
            entity: "job",
            id: job_id.to_owned(),
        };
        match result {
            Ok(Some(seq)) => Ok(ProgressEvent {
                job_id: job_id.to_owned(),
                seq,
                percent: progress.percent,
                message: progress.message.clone(),
                models: progress.models.clone(),
                created_at: now,
            }),
            Ok(None) => Err(not_found()),
            Err(e) if e.is_foreign_key_violation() => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    /// Progress events of a job with `seq` greater than `after_seq` (0 for all), in order, at
    /// most `limit` (1–1000).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for a bad limit; a database error.
    pub async fn list_progress(
        &self,
        job_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ProgressEvent>, StoreError> {
        let limit = check_limit(limit)?;
        let sql = "SELECT job_id, seq, percent, message, models, created_at FROM job_progress \
                   WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(job_id)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(StoreError::db("list progress"))?;
            rows.iter().map(progress_from_row).collect()
        })
    }

    /// Records results and progress events of one job in one transaction, in the order given,
    /// and returns the stored progress events. A runner that has several writes queued (answers
    /// arriving together) pays for one commit instead of one per write.
    ///
    /// # Errors
    ///
    /// As [`Store::record_result`] and [`Store::append_progress`]; on any error nothing of the
    /// batch is stored.
    pub async fn record_batch(
        &self,
        job_id: &str,
        writes: &[JobWrite],
    ) -> Result<Vec<ProgressEvent>, StoreError> {
        let _turn = self.write_turn().await;
        for w in writes {
            match w {
                JobWrite::Result(r) => check_result(r)?,
                JobWrite::Progress(p) => check_progress(p)?,
            }
        }
        let now = self.now();
        let mut events = Vec::new();
        let out: Result<(), StoreError> = with_pool!(&self.pool, p, d => {
            async {
                let mut tx = p
                    .begin_with(d.begin_write())
                    .await
                    .map_err(StoreError::db("begin a batch"))?;
                for w in writes {
                    match w {
                        JobWrite::Result(r) => {
                            let latency =
                                r.latency.map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX));
                            sqlx::query(RESULT_INSERT)
                                .bind(job_id)
                                .bind(&r.model)
                                .bind(&r.provider)
                                .bind(&r.content)
                                .bind(r.error.as_ref().map(|e| e.message.clone()))
                                .bind(r.error.as_ref().map(|e| e.class.clone()))
                                .bind(r.usage.as_ref().map(json_text))
                                .bind(latency)
                                .bind(r.fallback.as_ref().map(json_text))
                                .bind(now.as_millis())
                                .execute(&mut *tx)
                                .await
                                .map_err(StoreError::db("record result"))?;
                        }
                        JobWrite::Progress(pr) => {
                            let row = sqlx::query(d.pick(PROGRESS_INSERT_SQLITE, PROGRESS_INSERT_POSTGRES))
                                .bind(job_id)
                                .bind(pr.percent)
                                .bind(&pr.message)
                                .bind(pr.models.as_ref().map(json_text))
                                .bind(now.as_millis())
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(StoreError::db("append progress"))?;
                            let Some(row) = row else {
                                return Err(StoreError::NotFound {
                                    entity: "job",
                                    id: job_id.to_owned(),
                                });
                            };
                            events.push(ProgressEvent {
                                job_id: job_id.to_owned(),
                                seq: row.i64("seq")?,
                                percent: pr.percent,
                                message: pr.message.clone(),
                                models: pr.models.clone(),
                                created_at: now,
                            });
                        }
                    }
                }
                tx.commit().await.map_err(StoreError::db("commit a batch"))
            }
            .await
        });
        match out {
            Ok(()) => Ok(events),
            Err(e) if e.is_foreign_key_violation() => Err(StoreError::NotFound {
                entity: "job",
                id: job_id.to_owned(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Records one model's result of a fan-out job as it arrives.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if the job does not exist; [`StoreError::InvalidArgument`]
    /// for an empty model or provider; a database error.
    pub async fn record_result(
        &self,
        job_id: &str,
        result: &NewModelResult,
    ) -> Result<ModelResult, StoreError> {
        let _turn = self.write_turn().await;
        check_result(result)?;
        let now = self.now();
        let sql = "INSERT INTO job_results (job_id, model, provider, content, error, error_class, \
                   usage, latency_ms, fallback, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id, job_id, model, \
                   provider, content, error, error_class, usage, latency_ms, fallback, created_at";
        let latency = result
            .latency
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let out = with_pool!(&self.pool, p, d => {
            sqlx::query(sql)
                .bind(job_id)
                .bind(&result.model)
                .bind(&result.provider)
                .bind(&result.content)
                .bind(result.error.as_ref().map(|e| e.message.clone()))
                .bind(result.error.as_ref().map(|e| e.class.clone()))
                .bind(result.usage.as_ref().map(json_text))
                .bind(latency)
                .bind(result.fallback.as_ref().map(json_text))
                .bind(now.as_millis())
                .fetch_one(p)
                .await
                .map_err(StoreError::db("record result"))
                .and_then(|row| result_from_row(&row))
        });
        match out {
            Err(e) if e.is_foreign_key_violation() => Err(StoreError::NotFound {
                entity: "job",
                id: job_id.to_owned(),
            }),
            other => other,
        }
    }

    /// The per-model results of a job, in arrival order.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn list_results(&self, job_id: &str) -> Result<Vec<ModelResult>, StoreError> {
        let sql = "SELECT id, job_id, model, provider, content, error, error_class, usage, \
                   latency_ms, fallback, created_at FROM job_results WHERE job_id = $1 ORDER BY id";
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(job_id)
                .fetch_all(p)
                .await
                .map_err(StoreError::db("list results"))?;
            rows.iter().map(result_from_row).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_terminality() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("done".parse::<JobState>().is_err());
        assert_eq!(
            JobState::ALL.iter().filter(|s| s.is_terminal()).count(),
            JobState::TERMINAL.len()
        );
        assert!(!JobState::Running.is_terminal());
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = JobCursor {
            created_at: Timestamp::from_millis(1700),
            id: "a_b".to_owned(),
        };
        assert_eq!(c.to_string().parse::<JobCursor>().unwrap(), c);
        for bad in ["", "x_1", "12", "12_"] {
            assert!(bad.parse::<JobCursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_uuid_v7_and_time_ordered() {
        let a = new_id(Timestamp::from_millis(1_000));
        let b = new_id(Timestamp::from_millis(2_000));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(a < b);
        // Within one millisecond, ids still increase.
        let same: Vec<String> = (0..100)
            .map(|_| new_id(Timestamp::from_millis(5_000)))
            .collect();
        assert!(same.windows(2).all(|w| w[0] < w[1]), "{same:?}");
    }

    #[test]
    fn limits_are_checked() {
        assert!(check_limit(0).is_err());
        assert!(check_limit(1001).is_err());
        assert_eq!(check_limit(10).unwrap(), 10);
    }
}
