//! Durable state for Quorum — jobs and their progress and per-model results, conversations,
//! usage records, API keys and autoscaler decisions — behind one typed API over **SQLite**
//! (a file on a laptop, zero set-up) or **PostgreSQL** (shared by many processes).
//!
//! [`Store::connect`] picks the backend from the URL (`sqlite://path.db`, `sqlite::memory:`,
//! `postgres://user@host/db`), runs the versioned migrations (refusing a database migrated by
//! a newer build) and returns a cheap-to-clone [`Store`]. No SQL leaves the crate.
//!
//! - **Jobs** ([`Store::create_job`], [`Store::claim_job`], [`Store::complete_job`], …): ids
//!   are UUIDv7 strings. A claim atomically takes the highest-priority, oldest pending job and
//!   gives it a lease; every later write is guarded so a late writer never overwrites a
//!   finished job, and a runner that lost its lease cannot finish someone else's run — the
//!   returned [`Transition`] says why a write did not apply. Start-up recovery lists pending
//!   and lease-expired jobs ([`Store::recoverable_jobs`]) and requeues them
//!   ([`Store::requeue_expired_job`]).
//! - **Progress** events (append-only, per-job `seq` for SSE resume) and **per-model results**.
//! - **Sessions and messages** with summaries; large bodies optionally LZ4-compressed.
//! - **Usage records** with a by-model aggregate, **API keys** (SHA-256 hash and prefix only),
//!   **autoscaler decisions**.
//! - **Retention** in bounded batches ([`Store::cleanup`], periodically with
//!   [`Store::spawn_cleanup`]), logged and counted ([`StoreMetrics`]: rows deleted per table,
//!   runs by outcome), and [`Store::stats`].
//!
//! Timestamps are UTC milliseconds ([`Timestamp`]) from an injectable [`Clock`]. Errors are one
//! [`StoreError`] with [`StoreError::is_retryable`].
//!
//! ```
//! use quorum_store::{JobState, NewJob, Store, StoreConfig, Writer};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), quorum_store::StoreError> {
//! let store = Store::connect("sqlite::memory:", StoreConfig::default()).await?;
//! let job = store.create_job(NewJob::new("advise", serde_json::json!({"q": "hi"}))).await?;
//!
//! let claimed = store.claim_job("worker-1", Duration::from_secs(30), None).await?.unwrap();
//! assert_eq!(claimed.id, job.id);
//! assert_eq!(claimed.state, JobState::Running);
//!
//! let done = store
//!     .complete_job(&job.id, Writer::Runner("worker-1"), &serde_json::json!({"a": "hello"}))
//!     .await?;
//! assert!(done.is_applied());
//! // A late writer loses: the job is already finished.
//! let late = store.cancel_job(&job.id, None).await?;
//! assert!(!late.is_applied());
//! # Ok(()) }
//! ```
//!
//! **Features:** `postgres` (default) adds the PostgreSQL backend; `tls-rustls` adds TLS to
//! PostgreSQL; `test-util` adds the `test_util` module: fresh isolated stores for tests.

mod clock;
mod config;
mod db;
mod decisions;
mod error;
mod jobs;
mod keys;
mod maintenance;
pub mod metrics;
mod schema;
mod sessions;
#[cfg(feature = "test-util")]
pub mod test_util;
mod usage;

use std::fmt;
use std::sync::Arc;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use config::{CompressionConfig, PoolConfig, SqliteConfig, StoreConfig};
pub use db::Backend;
pub use decisions::{Decision, NewDecision, ScaleAction};
pub use error::StoreError;
pub use jobs::{
    Job, JobCursor, JobError, JobFilter, JobPage, JobState, JobWrite, Lease, ModelResult, NewJob,
    NewModelResult, NewProgress, ProgressEvent, Transition, Writer,
};
pub use keys::{ApiKey, CreatedApiKey, KeyCheck, NewApiKey};
pub use maintenance::{CleanupReport, CleanupTask, DatabaseStats, RetentionPolicy};
pub use metrics::StoreMetrics;
pub use schema::SCHEMA_VERSION;
pub use sessions::{Message, NewMessage, Role, Session, SessionSummaryRow, Summary};
pub use usage::{ModelUsage, NewUsage, UsageOutcome};

use db::{DbPool, RowExt, with_pool};

/// A handle to the database: a connection pool, the clock and settings. Cheap to clone;
/// clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: DbPool,
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    /// SQLite takes one writer at a time, and a second one meets its busy handler, which
    /// sleeps in millisecond steps: this process's writers queue here instead and are handed
    /// the turn the moment it is free. Unused on PostgreSQL.
    write_lock: tokio::sync::Mutex<()>,
    backend: Backend,
    url: String,
    schema: Option<String>,
    compression: CompressionConfig,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.settings.backend)
            .field("url", &self.settings.url)
            .field("schema", &self.settings.schema)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to the database at `url`, creates the PostgreSQL schema if one is configured,
    /// and applies pending migrations.
    ///
    /// SQLite files are created if missing (unless the URL sets `mode=`) and opened in WAL mode
    /// with foreign keys on and the configured busy timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidUrl`] for a URL that is not `sqlite:` or `postgres://` or does not
    /// parse; [`StoreError::Connect`] naming the file or server when it cannot be opened or
    /// reached (`cannot connect to postgres at 127.0.0.1:1: connection refused`);
    /// [`StoreError::SchemaTooNew`] when a newer build migrated the database;
    /// [`StoreError::InvalidConfig`]; a database error during migration.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        Self::connect_with_clock(url, config, Arc::new(SystemClock)).await
    }

    /// [`Store::connect`] with a chosen clock.
    ///
    /// # Errors
    ///
    /// As [`Store::connect`].
    pub async fn connect_with_clock(
        url: &str,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let connected = db::connect(url, &config).await?;
        let store = Self {
            pool: connected.pool,
            clock,
            settings: Arc::new(Settings {
                write_lock: tokio::sync::Mutex::new(()),
                backend: connected.backend,
                url: db::redact_url(url),
                schema: config.schema.clone(),
                compression: config.compression.clone(),
            }),
        };
        if let Err(e) = db::migrate(&store.pool, store.now()).await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// This process's turn to write (SQLite only; see `Settings::write_lock`).
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.settings.backend {
            Backend::Sqlite => Some(self.settings.write_lock.lock().await),
            Backend::Postgres => None,
        }
    }

    /// The same store (sharing the pool) reading time from `clock`.
    #[must_use]
    pub fn with_clock(&self, clock: Arc<dyn Clock>) -> Self {
        Self {
            pool: self.pool.clone(),
            clock,
            settings: Arc::clone(&self.settings),
        }
    }

    /// Which backend this store uses.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.settings.backend
    }

    /// The PostgreSQL schema holding the tables, if one was configured.
    #[must_use]
    pub fn schema(&self) -> Option<&str> {
        self.settings.schema.as_deref()
    }

    /// "Now" according to the store's clock.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The schema version recorded in the database.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        with_pool!(&self.pool, p, d => {
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM quorum_schema_migrations")
                .fetch_one(p)
                .await
                .map_err(StoreError::db("read schema version"))?
                .i64("v")
        })
    }

    /// Closes the pool: waits for checked-out connections to return, then closes them all.
    /// Clones of this store stop working too.
    pub async fn close(&self) {
        with_pool!(&self.pool, p, d => p.close().await);
    }
}
