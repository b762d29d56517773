//! The queue error type, shared by the contract, the in-memory queue and every backend.

use std::time::Duration;

/// A boxed backend error kept as a [`QueueError`] source (never flattened to a string).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a [`Queue`](crate::Queue) operation can fail with.
///
/// Classification lives on the error: [`is_retryable`](QueueError::is_retryable) says whether trying
/// the same call again may help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The lease no longer belongs to the caller: it expired (and the message was or will be
    /// redelivered), the delivery was already settled (acked, nacked, terminated), or the lease was
    /// returned by `close`. The message is not affected by the failed call.
    #[error("stale lease for message {id}: it expired, was settled or was returned")]
    StaleLease {
        /// The message the lease was for.
        id: String,
    },
    /// The queue (or this handle to it) was closed.
    #[error("queue {name} is closed")]
    Closed {
        /// The queue's name.
        name: String,
    },
    /// The queue holds as many messages as it may (`capacity`, dead letters included).
    #[error("queue {name} is full: capacity {capacity} messages reached")]
    QueueFull {
        /// The queue's name.
        name: String,
        /// The configured bound.
        capacity: usize,
    },
    /// The backend does not support an option the call asked for (see
    /// [`Capabilities`](crate::Capabilities)); the option is never silently ignored.
    #[error("unsupported by this queue backend: {feature}")]
    Unsupported {
        /// What was asked for, e.g. `priority 5 (max 0)` or `delay 2s`.
        feature: String,
    },
    /// An argument was out of range.
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// The argument's name, e.g. `max`.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value was out of range.
    #[error("invalid queue config: {field}: {reason}")]
    InvalidConfig {
        /// The field's name, e.g. `visibility_timeout`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No message with this id (e.g. replaying a dead letter that is not there).
    #[error("message {id} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The connection to the broker failed or timed out; trying again may help.
    #[error("queue transport error")]
    Transport {
        /// The backend's error.
        #[source]
        source: BoxError,
        /// How long the broker asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The broker rejected the operation or answered something unexpected.
    #[error("queue backend error")]
    Backend {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl QueueError {
    /// A retryable transport error wrapping a backend error.
    pub fn transport(source: impl Into<BoxError>) -> Self {
        QueueError::Transport {
            source: source.into(),
            retry_after: None,
        }
    }

    /// A non-retryable backend error wrapping a backend error.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        QueueError::Backend {
            source: source.into(),
        }
    }

    /// An [`Unsupported`](QueueError::Unsupported) error naming the option.
    pub fn unsupported(feature: impl Into<String>) -> Self {
        QueueError::Unsupported {
            feature: feature.into(),
        }
    }

    /// Whether trying the same call again may help: transport errors, and a full queue (it drains).
    ///
    /// A stale lease, a closed queue, bad input or an unsupported option will fail the same way
    /// again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            QueueError::Transport { .. } | QueueError::QueueFull { .. }
        )
    }

    /// The broker's hint of how long to wait before trying again, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            QueueError::Transport { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this is a [`StaleLease`](QueueError::StaleLease) error.
    pub fn is_stale_lease(&self) -> bool {
        matches!(self, QueueError::StaleLease { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn classification() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let t = QueueError::transport(io);
        assert!(t.is_retryable());
        assert!(t.source().is_some(), "source chain kept");
        assert!(!QueueError::backend("nope").is_retryable());
        let full = QueueError::QueueFull {
            name: "q".into(),
            capacity: 3,
        };
        assert!(full.is_retryable());
        assert_eq!(
            full.to_string(),
            "queue q is full: capacity 3 messages reached"
        );
        let stale = QueueError::StaleLease { id: "7".into() };
        assert!(stale.is_stale_lease());
        assert!(!stale.is_retryable());
        assert!(!QueueError::unsupported("delay 1s").is_retryable());
        let hinted = QueueError::Transport {
            source: "busy".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(hinted.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(full.retry_after(), None);
    }
}
