//! The crate's one error type.

use std::io;

/// Everything that can go wrong talking to the store.
///
/// Database driver errors are kept as boxed sources (`std::error::Error::source`); the message
/// names the operation that failed. [`StoreError::is_retryable`] says whether trying again later
/// may help (busy database, lost connection, pool exhausted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL could not be understood.
    #[error("invalid database url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The database could not be opened or reached at start-up.
    #[error("cannot {action}: {reason}")]
    Connect {
        /// What was attempted, naming the target: `open sqlite database "/x.db"`,
        /// `connect to postgres at 127.0.0.1:5432`.
        action: String,
        /// Why it failed, in a few words (with a hint when one is likely).
        reason: String,
        /// The driver error.
        #[source]
        source: Box<sqlx::Error>,
    },

    /// The database was migrated by a newer build than this one.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}); upgrade quorum"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build knows ([`crate::SCHEMA_VERSION`]).
        supported: i64,
    },

    /// A configuration value is out of range.
    #[error("invalid store config: {field}: {reason}")]
    InvalidConfig {
        /// The offending field (`pool.max_connections`).
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },

    /// An argument to a store call is invalid (empty id, negative limit, …).
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },

    /// A row the call needs does not exist.
    #[error("{entity} {id:?} not found")]
    NotFound {
        /// `job`, `session`, `api key`.
        entity: &'static str,
        /// Its id.
        id: String,
    },

    /// A stored value could not be decoded (bad JSON, unknown state name, corrupt compressed
    /// body): the database holds something this build does not understand.
    #[error("corrupt {what} in the database: {reason}")]
    Corrupt {
        /// Which value (`jobs.state`, `messages.content`).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The operating system gave no randomness for a new API key.
    #[error("cannot generate a random api key: {reason}")]
    Random {
        /// The system's error.
        reason: String,
    },

    /// A database operation failed.
    #[error("database error during {operation}")]
    Database {
        /// The operation (`claim job`, `append message`).
        operation: &'static str,
        /// The driver error.
        #[source]
        source: Box<sqlx::Error>,
    },
}

impl StoreError {
    /// Whether the same call may succeed if retried later: the database was busy or locked,
    /// the connection was lost, or no pooled connection was free in time.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database { source, .. } => sqlx_is_retryable(source),
            Self::Connect { source, .. } => matches!(
                **source,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }

    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database {
            operation,
            source: Box::new(source),
        }
    }

    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, reason: impl ToString) -> Self {
        Self::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }

    /// The driver error underneath, when there is one.
    pub(crate) fn sqlx(&self) -> Option<&sqlx::Error> {
        match self {
            Self::Database { source, .. } | Self::Connect { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether the driver reported a unique-key violation.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self.sqlx(), Some(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// Whether the driver reported a foreign-key violation.
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        matches!(self.sqlx(), Some(sqlx::Error::Database(e)) if e.is_foreign_key_violation())
    }
}

fn sqlx_is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            match code.as_deref() {
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6) and their extended codes.
                Some(c) if c.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)) => true,
                // PostgreSQL: serialization failure, deadlock, lock not available, too many
                // connections, admin shutdown / cannot connect now, and class 08 (connection).
                Some("40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P03") => true,
                Some(c) => c.starts_with("08"),
                None => false,
            }
        }
        _ => false,
    }
}

/// A short human reason for a connection failure: `connection refused`, `unable to open
/// database file`, the server's message.
pub(crate) fn describe_connect_error(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(e) => describe_io(e),
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::PoolTimedOut => "timed out".to_owned(),
        other => other.to_string(),
    }
}

fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        io::ErrorKind::NotFound => format!("not found ({error})"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_too_new_message() {
        let e = StoreError::SchemaTooNew {
            found: 7,
            supported: 5,
        };
        assert_eq!(
            e.to_string(),
            "database schema version 7 is newer than this build supports (5); upgrade quorum"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn io_and_pool_errors_are_retryable() {
        let io = StoreError::db("x")(sqlx::Error::Io(io::Error::from(
            io::ErrorKind::ConnectionReset,
        )));
        assert!(io.is_retryable());
        assert!(StoreError::db("x")(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!StoreError::db("x")(sqlx::Error::RowNotFound).is_retryable());
        assert_eq!(
            StoreError::db("claim job")(sqlx::Error::PoolTimedOut).to_string(),
            "database error during claim job"
        );
    }

    #[test]
    fn connect_reason_for_refused() {
        let e = sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(describe_connect_error(&e), "connection refused");
    }
}
