//! Fresh, isolated stores for tests (feature `test-util`).
//!
//! - [`sqlite`]: a SQLite database in a new temporary directory, deleted on cleanup or drop.
//! - [`postgres`]: a new schema `quorum_test_<random>` on the server at `DATABASE_URL`, dropped
//!   by [`TestStore::cleanup`]. A test that panics before cleanup leaves its schema behind;
//!   every call of [`postgres`] first drops `quorum_test_*` schemas created more than an hour
//!   ago, so leftovers do not pile up. When `DATABASE_URL` is unset or the server does not
//!   answer it prints a loud `SKIPPED: …` line to stderr and returns `None` — unless
//!   `QUORUM_REQUIRE_SERVICES=1`, in which case it panics (CI must never skip silently).
//!
//! Both stores read time from a [`ManualClock`] starting at [`TEST_EPOCH`], so tests move time
//! explicitly instead of sleeping.
//!
//! ```no_run
//! # async fn demo() {
//! use quorum_store::test_util;
//! let Some(t) = test_util::postgres().await else { return };
//! t.store.create_session(None, None).await.unwrap();
//! t.cleanup().await;
//! # }
//! ```

#![allow(
    clippy::print_stderr,
    clippy::panic,
    reason = "test helpers report skips on stderr and fail loudly"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quorum_config::{EnvSource, ProcessEnv};

use crate::clock::{ManualClock, Timestamp};
use crate::{Store, StoreConfig, StoreError};

/// Where every test store's clock starts: 2023-11-14T22:13:20Z.
pub const TEST_EPOCH: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A store for one test, with its clock and whatever must be removed afterwards.
#[derive(Debug)]
pub struct TestStore {
    /// The store.
    pub store: Store,
    /// The store's clock: advance it to expire leases or age rows.
    pub clock: ManualClock,
    /// The URL it was opened with (connect again to test restarts).
    pub url: String,
    /// The config it was opened with (with the schema set for PostgreSQL).
    pub config: StoreConfig,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(tempfile::TempDir),
    #[cfg(feature = "postgres")]
    Postgres {
        url: String,
        schema: String,
    },
}

impl TestStore {
    /// Opens another store on the same database (a restart, or a second process).
    ///
    /// # Errors
    ///
    /// As [`Store::connect`].
    pub async fn reconnect(&self) -> Result<Store, StoreError> {
        Store::connect_with_clock(&self.url, self.config.clone(), Arc::new(self.clock.clone()))
            .await
    }

    /// Closes the store and removes the database (temporary directory or schema).
    ///
    /// # Panics
    ///
    /// If the schema cannot be dropped.
    pub async fn cleanup(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Sqlite(dir) => drop(dir),
            #[cfg(feature = "postgres")]
            Cleanup::Postgres { url, schema } => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reconnect to drop schema {schema}: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("cannot drop schema {schema}: {e}"));
                let _ = conn.close().await;
            }
        }
    }
}

/// A store on a new SQLite file in a temporary directory.
///
/// # Panics
///
/// If the temporary directory or the database cannot be created.
pub async fn sqlite() -> TestStore {
    sqlite_with(StoreConfig::default()).await
}

/// [`sqlite`] with a chosen config.
///
/// # Panics
///
/// As [`sqlite`].
pub async fn sqlite_with(config: StoreConfig) -> TestStore {
    let dir = tempfile::Builder::new()
        .prefix("quorum-store-test")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let clock = ManualClock::new(TEST_EPOCH);
    let store = Store::connect_with_clock(&url, config.clone(), Arc::new(clock.clone()))
        .await
        .unwrap_or_else(|e| panic!("cannot open test sqlite store: {e}"));
    TestStore {
        store,
        clock,
        url,
        config,
        cleanup: Cleanup::Sqlite(dir),
    }
}

/// A store in a new schema on the PostgreSQL server at `DATABASE_URL`, or `None` (after a
/// loud `SKIPPED:` line) when there is none.
///
/// # Panics
///
/// When the server is missing and `QUORUM_REQUIRE_SERVICES=1`, or when it answers but the
/// store cannot be opened.
pub async fn postgres() -> Option<TestStore> {
    postgres_with(StoreConfig::default(), &ProcessEnv).await
}

/// [`postgres`] with a chosen config (its `schema` is replaced) and environment.
///
/// # Panics
///
/// As [`postgres`].
pub async fn postgres_with(config: StoreConfig, env: &(dyn EnvSource + Sync)) -> Option<TestStore> {
    let require = env
        .get("QUORUM_REQUIRE_SERVICES")
        .is_some_and(|v| v.trim() == "1");
    let skip = |problem: String| {
        if require {
            panic!(
                "{problem}, and QUORUM_REQUIRE_SERVICES=1 requires it: start PostgreSQL and set \
                 DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            );
        }
        eprintln!(
            "SKIPPED: {problem} (set DATABASE_URL, e.g. \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres, to run the PostgreSQL tests)"
        );
    };
    let Some(url) = env.get("DATABASE_URL").filter(|u| !u.trim().is_empty()) else {
        skip("DATABASE_URL is not set".to_owned());
        return None;
    };
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (url, config);
        skip("quorum-store was built without the `postgres` feature".to_owned());
        None
    }
    #[cfg(feature = "postgres")]
    {
        if let Err(e) = drop_stale_schemas(&url).await {
            skip(format!("PostgreSQL at DATABASE_URL does not answer: {e}"));
            return None;
        }
        let mut config = config;
        let schema = format!("quorum_test_{}_{:016x}", unix_secs(), random_u64());
        config.schema = Some(schema.clone());
        let clock = ManualClock::new(TEST_EPOCH);
        let store = Store::connect_with_clock(&url, config.clone(), Arc::new(clock.clone()))
            .await
            .unwrap_or_else(|e| panic!("cannot open test postgres store: {e}"));
        Some(TestStore {
            store,
            clock,
            url: url.clone(),
            config,
            cleanup: Cleanup::Postgres { url, schema },
        })
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn random_u64() -> u64 {
    let mut b = [0_u8; 8];
    // Fall back to the clock's nanoseconds if the OS has no randomness (never in practice).
    if getrandom::fill(&mut b).is_err() {
        return u64::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .subsec_nanos(),
        );
    }
    u64::from_le_bytes(b)
}

/// Drops `quorum_test_<secs>_*` schemas whose `<secs>` is more than an hour old.
#[cfg(feature = "postgres")]
async fn drop_stale_schemas(url: &str) -> Result<(), String> {
    use sqlx::{Connection, Row};
    let connect = sqlx::PgConnection::connect(url);
    let mut conn = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("connection timed out after 5s".to_owned()),
    };
    let rows =
        sqlx::query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'quorum\\_test\\_%'")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    let cutoff = unix_secs().saturating_sub(3600);
    for row in rows {
        let name: String = row.try_get("nspname").map_err(|e| e.to_string())?;
        let created = name
            .strip_prefix("quorum_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|c| c < cutoff) {
            // Another test run may drop it at the same moment: ignore failures.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .execute(&mut conn)
            .await;
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Sets the recorded schema version, to test the refusal of a database newer than the build.
///
/// # Errors
///
/// A database error.
pub async fn force_schema_version(store: &Store, version: i64) -> Result<(), StoreError> {
    crate::db::with_pool!(&store.pool, p, d => {
        sqlx::query(
            "INSERT INTO quorum_schema_migrations (version, name, applied_at) VALUES ($1, 'forced by test', 0)",
        )
        .bind(version)
        .execute(p)
        .await
        .map_err(StoreError::db("force schema version"))?;
    });
    Ok(())
}

/// Whether a message's body is stored compressed (to check the compression threshold).
///
/// # Errors
///
/// [`StoreError::NotFound`] for an unknown message id; a database error.
pub async fn stored_compressed(store: &Store, message_id: i64) -> Result<bool, StoreError> {
    use crate::db::RowExt;
    crate::db::with_pool!(&store.pool, p, d => {
        let row = sqlx::query("SELECT content_lz4 FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_optional(p)
            .await
            .map_err(StoreError::db("read message"))?
            .ok_or_else(|| StoreError::NotFound { entity: "message", id: message_id.to_string() })?;
        Ok(row.opt_bytes("content_lz4")?.is_some())
    })
}
