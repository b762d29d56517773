//! Errors of this backend and how they map into [`QueueError`] and [`TopicError`].

use quorum_queue::{QueueError, TopicError};

/// What went wrong talking to Redis, kept as the source of a [`QueueError`] or [`TopicError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisQueueError {
    /// A Redis command failed.
    #[error("redis {command} failed")]
    Command {
        /// The command or script, e.g. `XADD` or `lease script`.
        command: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// Connecting to the server failed or timed out.
    #[error("cannot connect to redis at {address}")]
    Connect {
        /// Host and port (never the password).
        address: String,
        /// The client's error, if it gave one (none on a timeout).
        #[source]
        source: Option<redis::RedisError>,
    },
    /// The server answered something this backend does not understand.
    #[error("unexpected reply to {command}: {detail}")]
    UnexpectedReply {
        /// The command or script.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The server is too old for a command this backend needs.
    #[error("redis {version} is too old: {needed}")]
    ServerTooOld {
        /// The server's `redis_version`.
        version: String,
        /// What needs a newer server.
        needed: &'static str,
    },
}

/// Whether a client error is about the connection (retrying may help) rather than the command.
pub(crate) fn is_transport(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// Maps a failed command: connection problems are retryable transport errors, everything else a
/// backend error; the client error is kept as the source.
pub(crate) fn command(command: &'static str, source: redis::RedisError) -> QueueError {
    let transport = is_transport(&source);
    let e = RedisQueueError::Command { command, source };
    if transport {
        QueueError::transport(e)
    } else {
        QueueError::backend(e)
    }
}

/// A reply this backend cannot parse.
pub(crate) fn unexpected(command: &'static str, detail: impl Into<String>) -> QueueError {
    QueueError::backend(RedisQueueError::UnexpectedReply {
        command,
        detail: detail.into(),
    })
}

/// Maps a failed pub/sub command.
pub(crate) fn topic(command: &'static str, source: redis::RedisError) -> TopicError {
    let transport = is_transport(&source);
    let e = RedisQueueError::Command { command, source };
    if transport {
        TopicError::Transport { source: e.into() }
    } else {
        TopicError::Backend { source: e.into() }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn io_errors_are_retryable_and_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = command("XADD", redis::RedisError::from(io));
        assert!(e.is_retryable(), "{e:?}");
        let source = e.source().unwrap();
        assert_eq!(source.to_string(), "redis XADD failed");
        assert!(source.source().is_some(), "client error kept");
    }

    #[test]
    fn server_errors_are_backend_errors() {
        let server = redis::RedisError::from((redis::ErrorKind::Client, "WRONGTYPE"));
        let e = command("XADD", server);
        assert!(!e.is_retryable());
        assert!(matches!(e, QueueError::Backend { .. }));
        let t = topic(
            "PUBLISH",
            redis::RedisError::from((redis::ErrorKind::Client, "x")),
        );
        assert!(!t.is_retryable());
        let u = unexpected("XREADGROUP", "not an array");
        assert_eq!(
            u.source().unwrap().to_string(),
            "unexpected reply to XREADGROUP: not an array"
        );
    }
}
