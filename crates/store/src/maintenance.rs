//! Retention (bounded-batch cleanup) and database statistics.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use quorum_config::Duration;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::clock::Timestamp;
use crate::db::{Backend, RowExt, with_pool};
use crate::error::StoreError;
use crate::jobs::JobState;
use crate::schema::TABLES;

/// How long to keep finished and idle data; `None` (YAML `null`) keeps it forever.
///
/// Ages count from a job's `finished_at`, a session's last message (`updated_at`), a usage
/// record's or decision's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Completed jobs (with their progress and results). Default 7d.
    pub completed_jobs: Option<Duration>,
    /// Failed jobs. Default 30d.
    pub failed_jobs: Option<Duration>,
    /// Cancelled jobs. Default 7d.
    pub cancelled_jobs: Option<Duration>,
    /// Timed-out jobs. Default 30d.
    pub timed_out_jobs: Option<Duration>,
    /// Sessions with no message for this long (with their messages). Default 30d.
    pub idle_sessions: Option<Duration>,
    /// Usage records. Default 90d.
    pub usage_records: Option<Duration>,
    /// Autoscaler decisions. Default 30d.
    pub decisions: Option<Duration>,
    /// Rows deleted per statement (each statement is its own short transaction). Default 500.
    pub batch_size: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        Self {
            completed_jobs: days(7),
            failed_jobs: days(30),
            cancelled_jobs: days(7),
            timed_out_jobs: days(30),
            idle_sessions: days(30),
            usage_records: days(90),
            decisions: days(30),
            batch_size: 500,
        }
    }
}

impl RetentionPolicy {
    /// A policy that keeps everything (a starting point for tests and selective cleanups).
    #[must_use]
    pub fn keep_all() -> Self {
        Self {
            completed_jobs: None,
            failed_jobs: None,
            cancelled_jobs: None,
            timed_out_jobs: None,
            idle_sessions: None,
            usage_records: None,
            decisions: None,
            batch_size: 500,
        }
    }

    fn job_age(&self, state: JobState) -> Option<Duration> {
        match state {
            JobState::Completed => self.completed_jobs,
            JobState::Failed => self.failed_jobs,
            JobState::Cancelled => self.cancelled_jobs,
            JobState::TimedOut => self.timed_out_jobs,
            JobState::Pending | JobState::Running => None,
        }
    }
}

/// What a cleanup removed. The caller logs or exports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Jobs deleted per terminal state (their progress and results went with them).
    pub jobs: BTreeMap<JobState, u64>,
    /// Idle sessions deleted.
    pub sessions: u64,
    /// Messages of those sessions deleted.
    pub messages: u64,
    /// Usage records deleted.
    pub usage_records: u64,
    /// Autoscaler decisions deleted.
    pub decisions: u64,
    /// `DELETE` statements run.
    pub statements: u64,
}

impl CleanupReport {
    /// All rows deleted (jobs, sessions, messages, usage records, decisions).
    #[must_use]
    pub fn total(&self) -> u64 {
        self.jobs.values().sum::<u64>()
            + self.sessions
            + self.messages
            + self.usage_records
            + self.decisions
    }
}

/// Sizes of the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseStats {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Applied schema version.
    pub schema_version: i64,
    /// Rows per table.
    pub rows: BTreeMap<String, u64>,
    /// Bytes on disk: `page_count * page_size` on SQLite (main file, not the WAL);
    /// `pg_database_size` of the current database on PostgreSQL (all schemas).
    pub size_bytes: u64,
}

/// A periodic cleanup started by [`Store::spawn_cleanup`]. Call [`CleanupTask::shutdown`] to
/// stop it and wait for a cleanup in progress to finish; dropping it leaves the task running
/// until the runtime shuts down.
#[derive(Debug)]
#[must_use = "a cleanup task should be shut down explicitly"]
pub struct CleanupTask {
    stop: Arc<Notify>,
    handle: JoinHandle<()>,
}

impl CleanupTask {
    /// Stops the loop (after the cleanup in progress, if any) and waits for it to end.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        // A panic in the report callback ends the task; there is nothing left to stop then.
        let _ = self.handle.await;
    }
}

impl Store {
    /// Runs [`Store::cleanup`] with `policy` every `interval` (first run after one interval)
    /// on the current tokio runtime, handing each outcome to `on_report` (log it, export it
    /// as metrics). A failed run is reported and the loop carries on.
    ///
    /// Must be called within a tokio runtime.
    pub fn spawn_cleanup<F>(
        &self,
        policy: RetentionPolicy,
        interval: std::time::Duration,
        on_report: F,
    ) -> CleanupTask
    where
        F: Fn(Result<CleanupReport, StoreError>) + Send + Sync + 'static,
    {
        let stop = Arc::new(Notify::new());
        let store = self.clone();
        let stopped = Arc::clone(&stop);
        let handle = tokio::spawn(async move {
            loop {
                if tokio::time::timeout(interval, stopped.notified())
                    .await
                    .is_ok()
                {
                    return;
                }
                on_report(store.cleanup(&policy).await);
            }
        });
        CleanupTask { stop, handle }
    }

    /// Deletes what `policy` says is too old, as of the store clock's now, in batches of
    /// `policy.batch_size` rows per statement (looping until a batch comes back short), so no
    /// statement holds locks for long. Messages of idle sessions are deleted in batches before
    /// the sessions themselves (a session that receives a message while its old messages are
    /// being deleted survives, without those old messages).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for a zero batch size; a database error (what was
    /// deleted before it stays deleted).
    pub async fn cleanup(&self, policy: &RetentionPolicy) -> Result<CleanupReport, StoreError> {
        if policy.batch_size == 0 {
            return Err(StoreError::invalid("batch_size", "must be at least 1"));
        }
        let now = self.now();
        let cutoff = |age: Duration| now.minus(age.as_std());
        let mut report = CleanupReport::default();
        for state in JobState::TERMINAL {
            let Some(age) = policy.job_age(state) else {
                continue;
            };
            let n = self
                .delete_batches(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = $3 \
                     AND finished_at < $1 LIMIT $2)",
                    cutoff(age),
                    Some(state.as_str()),
                    policy.batch_size,
                    &mut report.statements,
                )
                .await?;
            report.jobs.insert(state, n);
        }
        if let Some(age) = policy.idle_sessions {
            report.messages = self
                .delete_batches(
                    "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m \
                     JOIN sessions s ON s.id = m.session_id WHERE s.updated_at < $1 LIMIT $2)",
                    cutoff(age),
                    None,
                    policy.batch_size,
                    &mut report.statements,
                )
                .await?;
            report.sessions = self
                .delete_batches(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                     WHERE updated_at < $1 LIMIT $2)",
                    cutoff(age),
                    None,
                    policy.batch_size,
                    &mut report.statements,
                )
                .await?;
        }
        if let Some(age) = policy.usage_records {
            report.usage_records = self
                .delete_batches(
                    "DELETE FROM usage_records WHERE id IN (SELECT id FROM usage_records \
                     WHERE recorded_at < $1 LIMIT $2)",
                    cutoff(age),
                    None,
                    policy.batch_size,
                    &mut report.statements,
                )
                .await?;
        }
        if let Some(age) = policy.decisions {
            report.decisions = self
                .delete_batches(
                    "DELETE FROM autoscaler_decisions WHERE id IN (SELECT id FROM \
                     autoscaler_decisions WHERE decided_at < $1 LIMIT $2)",
                    cutoff(age),
                    None,
                    policy.batch_size,
                    &mut report.statements,
                )
                .await?;
        }
        if report.total() > 0 {
            tracing::info!(
                deleted = report.total(),
                statements = report.statements,
                "store cleanup"
            );
        }
        Ok(report)
    }

    /// Runs `sql` (`$1` cutoff, `$2` batch size, `$3` the optional text) until it deletes fewer
    /// than a batch; returns the rows deleted.
    async fn delete_batches(
        &self,
        sql: &'static str,
        cutoff: Timestamp,
        text: Option<&str>,
        batch: u32,
        statements: &mut u64,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = with_pool!(&self.pool, p, d => {
                let mut query = sqlx::query(sql)
                    .bind(cutoff.as_millis())
                    .bind(i64::from(batch));
                if let Some(text) = text {
                    query = query.bind(text);
                }
                query
                    .execute(p)
                    .await
                    .map_err(StoreError::db("cleanup"))?
                    .rows_affected()
            });
            *statements += 1;
            total += n;
            if n < u64::from(batch) {
                return Ok(total);
            }
            // Let other work (and other writers) in between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Row counts per table, schema version and size on disk.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn stats(&self) -> Result<DatabaseStats, StoreError> {
        let op = "database stats";
        with_pool!(&self.pool, p, d => {
            let mut rows = BTreeMap::new();
            for table in TABLES {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {table}")))
                    .fetch_one(p)
                    .await
                    .map_err(StoreError::db(op))?;
                rows.insert((*table).to_owned(), u64::try_from(row.i64("n")?).unwrap_or(0));
            }
            let version = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM quorum_schema_migrations")
                .fetch_one(p)
                .await
                .map_err(StoreError::db(op))?
                .i64("v")?;
            let size_sql = match d {
                Backend::Sqlite => "SELECT p.page_count * s.page_size AS size FROM pragma_page_count() p, pragma_page_size() s",
                Backend::Postgres => "SELECT pg_database_size(current_database()) AS size",
            };
            let size = sqlx::query(size_sql)
                .fetch_one(p)
                .await
                .map_err(StoreError::db(op))?
                .i64("size")?;
            Ok(DatabaseStats {
                backend: d.as_str().to_owned(),
                schema_version: version,
                rows,
                size_bytes: u64::try_from(size).unwrap_or(0),
            })
        })
    }
}
