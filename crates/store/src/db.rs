//! The two backends behind one pool enum: connecting, dispatch, row decoding, migrations.
//!
//! Queries are written once with `$N` placeholders (SQLite accepts them too) and run on either
//! pool through [`with_pool!`]; the few places where the dialects differ pick a snippet with
//! [`Backend::pick`].

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::clock::Timestamp;
use crate::config::StoreConfig;
use crate::error::{StoreError, describe_connect_error};
use crate::schema::{MIGRATIONS, SCHEMA_VERSION};

/// Which database a [`Store`](crate::Store) talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// A SQLite file (or in-memory database): zero set-up, one machine.
    Sqlite,
    /// A PostgreSQL server: shared by many processes.
    Postgres,
}

impl Backend {
    /// Chooses the snippet for this dialect.
    pub(crate) const fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Self::Sqlite => sqlite,
            Self::Postgres => postgres,
        }
    }

    /// The statement that opens a write transaction: `BEGIN IMMEDIATE` on SQLite takes the
    /// write lock up front (so two writers never deadlock on a lock upgrade).
    pub(crate) const fn begin_write(self) -> &'static str {
        self.pick("BEGIN IMMEDIATE", "BEGIN")
    }

    /// The backend's name: `sqlite` or `postgres`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        self.pick("sqlite", "postgres")
    }
}

/// The pool of one of the two backends.
#[derive(Debug, Clone)]
pub(crate) enum DbPool {
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool and `$d` to its [`Backend`].
macro_rules! with_pool {
    ($pool_enum:expr, $pool:ident, $d:ident => $body:expr) => {{
        match $pool_enum {
            $crate::db::DbPool::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $d = $crate::db::Backend::Sqlite;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::db::DbPool::Postgres($pool) => {
                #[allow(unused_variables)]
                let $d = $crate::db::Backend::Postgres;
                $body
            }
        }
    }};
}
pub(crate) use with_pool;

/// Typed column access, the same on both backends' rows.
pub(crate) trait RowExt {
    fn i64(&self, col: &'static str) -> Result<i64, StoreError>;
    fn opt_i64(&self, col: &'static str) -> Result<Option<i64>, StoreError>;
    fn opt_f64(&self, col: &'static str) -> Result<Option<f64>, StoreError>;
    fn string(&self, col: &'static str) -> Result<String, StoreError>;
    fn opt_string(&self, col: &'static str) -> Result<Option<String>, StoreError>;
    fn opt_bytes(&self, col: &'static str) -> Result<Option<Vec<u8>>, StoreError>;

    fn ts(&self, col: &'static str) -> Result<Timestamp, StoreError> {
        self.i64(col).map(Timestamp::from_millis)
    }
    fn opt_ts(&self, col: &'static str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.opt_i64(col)?.map(Timestamp::from_millis))
    }
    fn json(&self, col: &'static str) -> Result<serde_json::Value, StoreError> {
        let text = self.string(col)?;
        serde_json::from_str(&text).map_err(|e| StoreError::corrupt(col, e))
    }
    fn opt_json(&self, col: &'static str) -> Result<Option<serde_json::Value>, StoreError> {
        self.opt_string(col)?
            .map(|t| serde_json::from_str(&t).map_err(|e| StoreError::corrupt(col, e)))
            .transpose()
    }
}

macro_rules! impl_row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn i64(&self, col: &'static str) -> Result<i64, StoreError> {
                self.try_get(col).map_err(StoreError::db("read row"))
            }
            fn opt_i64(&self, col: &'static str) -> Result<Option<i64>, StoreError> {
                self.try_get(col).map_err(StoreError::db("read row"))
            }
            fn opt_f64(&self, col: &'static str) -> Result<Option<f64>, StoreError> {
                self.try_get(col).map_err(StoreError::db("read row"))
            }
            fn string(&self, col: &'static str) -> Result<String, StoreError> {
                self.try_get(col).map_err(StoreError::db("read row"))
            }
            fn opt_string(&self, col: &'static str) -> Result<Option<String>, StoreError> {
                self.try_get(col).map_err(StoreError::db("read row"))
            }
            fn opt_bytes(&self, col: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
                self.try_get(col).map_err(StoreError::db("read row"))
            }
        }
    };
}
impl_row_ext!(sqlx::sqlite::SqliteRow);
#[cfg(feature = "postgres")]
impl_row_ext!(sqlx::postgres::PgRow);

/// Serializes a JSON value for a `TEXT` column.
pub(crate) fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

/// The URL with any password replaced by `***`, for error messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// What `connect` found out about the target.
pub(crate) struct Connected {
    pub(crate) pool: DbPool,
    pub(crate) backend: Backend,
}

pub(crate) async fn connect(url: &str, config: &StoreConfig) -> Result<Connected, StoreError> {
    config.validate()?;
    let url = url.trim();
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    if url.starts_with("sqlite:") {
        let pool = connect_sqlite(url, config).await?;
        Ok(Connected {
            pool: DbPool::Sqlite(pool),
            backend: Backend::Sqlite,
        })
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let pool = connect_postgres(url, config).await?;
            Ok(Connected {
                pool: DbPool::Postgres(pool),
                backend: Backend::Postgres,
            })
        }
        #[cfg(not(feature = "postgres"))]
        {
            Err(invalid(
                "postgres support is not compiled in (enable the `postgres` feature of quorum-store)"
                    .to_owned(),
            ))
        }
    } else if url.is_empty() {
        Err(invalid("empty url".to_owned()))
    } else {
        Err(invalid(
            "expected sqlite://PATH, sqlite::memory: or postgres://HOST/DB".to_owned(),
        ))
    }
}

fn connect_error(action: String, source: sqlx::Error, hint: &str) -> StoreError {
    let mut reason = describe_connect_error(&source);
    if !hint.is_empty() {
        reason.push_str(" (");
        reason.push_str(hint);
        reason.push(')');
    }
    StoreError::Connect {
        action,
        reason,
        source: Box::new(source),
    }
}

async fn connect_sqlite(url: &str, config: &StoreConfig) -> Result<SqlitePool, StoreError> {
    let mut options = SqliteConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
        url: redact_url(url),
        reason: describe_connect_error(&e),
    })?;
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let in_memory = url.contains(":memory:") || query.contains("mode=memory");
    if !query.contains("mode=") {
        // Zero set-up: create the file unless the URL asks for another mode.
        options = options.create_if_missing(true);
    }
    let options = options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(config.sqlite.busy_timeout.as_std())
        .foreign_keys(true);
    let path = options.get_filename().to_path_buf();
    let action = if in_memory {
        "open in-memory sqlite database".to_owned()
    } else {
        format!("open sqlite database {:?}", path.display().to_string())
    };

    // One connection first: its error is clearer than a pool timeout.
    let conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| {
            let hint = sqlite_hint(&e, &path);
            connect_error(action.clone(), e, hint)
        })?;
    conn.close()
        .await
        .map_err(|e| connect_error(action.clone(), e, ""))?;

    let max = if in_memory {
        // Each in-memory connection shares one database only while one stays open, and shared
        // cache locks tables: one connection.
        1
    } else {
        config.pool.max_connections.unwrap_or(4)
    };
    let min = config.pool.min_connections.unwrap_or(1).min(max);
    let idle = (!in_memory).then(|| config.pool.idle_timeout.as_std());
    let mut pool_options = SqlitePoolOptions::new()
        .max_connections(max)
        .min_connections(if in_memory { 1 } else { min })
        .acquire_timeout(config.pool.acquire_timeout.as_std())
        .idle_timeout(idle);
    if in_memory {
        pool_options = pool_options.max_lifetime(None);
    }
    pool_options.connect_with(options).await.map_err(|e| {
        let hint = sqlite_hint(&e, &path);
        connect_error(action, e, hint)
    })
}

fn sqlite_hint(error: &sqlx::Error, path: &std::path::Path) -> &'static str {
    let sqlx::Error::Database(db) = error else {
        return "";
    };
    let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
    match code {
        // SQLITE_CANTOPEN
        14 => match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
                "directory does not exist?"
            }
            _ => "read-only directory?",
        },
        // SQLITE_READONLY
        8 => "read-only file or directory?",
        // SQLITE_NOTADB
        26 => "not a sqlite database?",
        _ => "",
    }
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, config: &StoreConfig) -> Result<sqlx::PgPool, StoreError> {
    use std::sync::Arc;

    use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

    let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
        url: redact_url(url),
        reason: describe_connect_error(&e),
    })?;
    let action = format!(
        "connect to postgres at {}:{}",
        options.get_host(),
        options.get_port()
    );
    let timeout = config.pool.acquire_timeout.as_std();

    // One connection first: its error is clearer than a pool timeout, and it creates the schema.
    let mut conn = match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(connect_error(action, e, "")),
        Err(_) => {
            return Err(StoreError::Connect {
                action,
                reason: format!("timed out after {}", config.pool.acquire_timeout),
                source: Box::new(sqlx::Error::PoolTimedOut),
            });
        }
    };
    let search_path: Option<Arc<str>> = match &config.schema {
        Some(schema) => {
            let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
            if let Err(e) = sqlx::query(AssertSqlSafe(create)).execute(&mut conn).await {
                // Two processes creating it at once: the loser sees a duplicate.
                let duplicate = matches!(&e, sqlx::Error::Database(db)
                    if matches!(db.code().as_deref(), Some("23505" | "42P06")));
                if !duplicate {
                    return Err(connect_error(
                        format!("create postgres schema {schema:?}"),
                        e,
                        "",
                    ));
                }
            }
            Some(Arc::from(format!("SET search_path TO \"{schema}\"")))
        }
        None => None,
    };
    conn.close()
        .await
        .map_err(|e| connect_error(action.clone(), e, ""))?;

    let max = config.pool.max_connections.unwrap_or(10);
    let min = config.pool.min_connections.unwrap_or(0).min(max);
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(min)
        .acquire_timeout(timeout)
        .idle_timeout(Some(config.pool.idle_timeout.as_std()))
        .after_connect(move |conn, _meta| {
            let search_path = search_path.clone();
            Box::pin(async move {
                if let Some(sql) = search_path {
                    sqlx::query(AssertSqlSafe(sql)).execute(conn).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(|e| connect_error(action, e, ""))
}

/// Applies pending migrations in one write transaction; returns the schema version.
///
/// PostgreSQL: a transaction-scoped advisory lock keyed on the schema serializes processes
/// starting at once. SQLite: `BEGIN IMMEDIATE` does the same.
pub(crate) async fn migrate(pool: &DbPool, now: Timestamp) -> Result<i64, StoreError> {
    let op = "run migrations";
    with_pool!(pool, p, d => {
        let mut tx = p.begin_with(d.begin_write()).await.map_err(StoreError::db(op))?;
        if d == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7243001, hashtext(current_schema()))")
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(op))?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS quorum_schema_migrations (\
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(op))?;
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM quorum_schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db(op))?;
        let current = row.i64("v")?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        for m in MIGRATIONS.iter().filter(|m| m.version > current) {
            for statement in m.statements {
                let sql = render_ddl(d, statement);
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db(op))?;
            }
            sqlx::query(
                "INSERT INTO quorum_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(op))?;
            tracing::info!(version = m.version, name = m.name, backend = d.as_str(), "applied store migration");
        }
        tx.commit().await.map_err(StoreError::db(op))?;
        Ok(SCHEMA_VERSION.max(current))
    })
}

/// Replaces the dialect tokens in shared DDL: `{id}` (auto-increment key), `{blob}`, `{float}`.
pub(crate) fn render_ddl(d: Backend, ddl: &str) -> String {
    ddl.replace(
        "{id}",
        d.pick("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"),
    )
    .replace("{blob}", d.pick("BLOB", "BYTEA"))
    .replace("{float}", d.pick("REAL", "DOUBLE PRECISION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[test]
    fn ddl_tokens_render_per_dialect() {
        let ddl = "CREATE TABLE t (id {id}, b {blob}, f {float})";
        assert_eq!(
            render_ddl(Backend::Sqlite, ddl),
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, b BLOB, f REAL)"
        );
        assert_eq!(
            render_ddl(Backend::Postgres, ddl),
            "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, b BYTEA, f DOUBLE PRECISION)"
        );
    }

    #[tokio::test]
    async fn unknown_scheme_is_a_clear_error() {
        let e = connect("mysql://root:pw@x/db", &StoreConfig::default())
            .await
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "invalid database url \"mysql://root:***@x/db\": expected sqlite://PATH, sqlite::memory: or postgres://HOST/DB"
        );
        let e = connect("", &StoreConfig::default()).await.err().unwrap();
        assert!(e.to_string().contains("empty url"), "{e}");
    }
}
