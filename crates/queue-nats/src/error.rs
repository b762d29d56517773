//! Errors this crate raises itself (kept as the source of a [`QueueError`]), and the mapping of
//! `async-nats` errors onto [`QueueError`].

use quorum_queue::QueueError;

/// Something the broker answered that this backend cannot use, or a setup conflict found while
/// opening a queue. Always reaches callers as the source of a [`QueueError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// JetStream is not enabled on the server (or for this account).
    #[error("jetstream is not enabled on the server at {url}")]
    JetStreamDisabled {
        /// The server's address.
        url: String,
    },
    /// The connection to the server is down (the client keeps reconnecting in the background).
    #[error("not connected to the nats server (stream {stream}); reconnecting")]
    Disconnected {
        /// The queue's stream.
        stream: String,
    },
    /// A delivered message has no usable JetStream metadata (reply subject).
    #[error("message on {subject} has no jetstream ack subject")]
    NotJetStream {
        /// The subject it arrived on.
        subject: String,
    },
    /// Opening found the stream or consumer missing right after creating it (deleted
    /// concurrently).
    #[error("stream {stream} or consumer {consumer} vanished while opening the queue")]
    SetupIncomplete {
        /// The work stream.
        stream: String,
        /// The consumer.
        consumer: String,
    },
    /// A dead letter in the dead-letter stream lacks a header this backend writes.
    #[error("dead letter at sequence {seq} of stream {stream} has no valid {header} header")]
    BadDeadLetter {
        /// The dead-letter stream.
        stream: String,
        /// Its sequence there.
        seq: u64,
        /// The missing or invalid header.
        header: &'static str,
    },
}

/// Whether an `async-nats` error kind means the server *rejected* the call (a backend error that
/// retrying will not fix) rather than a connection problem (timeout, no responders, I/O).
pub(crate) trait Rejected {
    fn rejected(&self) -> bool;
}

macro_rules! rejected {
    ($($kind:ty => $pattern:pat),* $(,)?) => {
        $(impl Rejected for $kind {
            fn rejected(&self) -> bool {
                matches!(self, $pattern)
            }
        })*
    };
}

use async_nats::jetstream::{consumer::pull, context, stream};

rejected! {
    context::GetStreamErrorKind => context::GetStreamErrorKind::JetStream(_)
        | context::GetStreamErrorKind::InvalidStreamName
        | context::GetStreamErrorKind::EmptyName,
    context::CreateStreamErrorKind => context::CreateStreamErrorKind::JetStream(_)
        | context::CreateStreamErrorKind::InvalidStreamName
        | context::CreateStreamErrorKind::EmptyStreamName
        | context::CreateStreamErrorKind::JetStreamUnavailable
        | context::CreateStreamErrorKind::NotFound,
    context::PublishErrorKind => context::PublishErrorKind::StreamNotFound
        | context::PublishErrorKind::MaxPayloadExceeded
        | context::PublishErrorKind::WrongLastMessageId
        | context::PublishErrorKind::WrongLastSequence,
    context::RequestErrorKind => context::RequestErrorKind::InvalidSubject,
    context::AccountErrorKind => context::AccountErrorKind::JetStream(_),
    context::ConsumerInfoErrorKind => context::ConsumerInfoErrorKind::JetStream(_)
        | context::ConsumerInfoErrorKind::NotFound
        | context::ConsumerInfoErrorKind::StreamNotFound
        | context::ConsumerInfoErrorKind::InvalidName,
    stream::ConsumerErrorKind => stream::ConsumerErrorKind::JetStream(_)
        | stream::ConsumerErrorKind::InvalidConsumerType
        | stream::ConsumerErrorKind::InvalidName,
    stream::LastRawMessageErrorKind => stream::LastRawMessageErrorKind::JetStream(_)
        | stream::LastRawMessageErrorKind::InvalidSubject,
    stream::DeleteMessageErrorKind => stream::DeleteMessageErrorKind::JetStream(_),
    stream::PurgeErrorKind => stream::PurgeErrorKind::JetStream(_),
    pull::BatchErrorKind => pull::BatchErrorKind::Serialize,
    async_nats::RequestErrorKind => async_nats::RequestErrorKind::InvalidSubject,
    async_nats::PublishErrorKind => async_nats::PublishErrorKind::MaxPayloadExceeded
        | async_nats::PublishErrorKind::InvalidSubject,
    async_nats::ConnectErrorKind => async_nats::ConnectErrorKind::ServerParse
        | async_nats::ConnectErrorKind::Dns
        | async_nats::ConnectErrorKind::Authentication
        | async_nats::ConnectErrorKind::AuthorizationViolation
        | async_nats::ConnectErrorKind::Tls,
}

/// Maps an `async-nats` error onto [`QueueError`]: server rejections become
/// [`QueueError::Backend`], connection problems the retryable [`QueueError::Transport`]; the
/// error itself is kept as the source.
pub(crate) fn nats<K>(err: async_nats::error::Error<K>) -> QueueError
where
    K: Rejected + Clone + std::fmt::Debug + std::fmt::Display + PartialEq + Send + Sync + 'static,
{
    if err.kind().rejected() {
        QueueError::backend(err)
    } else {
        QueueError::transport(err)
    }
}
