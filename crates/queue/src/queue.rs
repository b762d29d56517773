//! The core [`Queue`] trait and the capability traits reached through its accessors:
//! [`QueueStats`] and [`DeadLetters`].
//!
//! # Implementing a backend
//!
//! A backend crate implements [`Queue`] (and, where the broker can, [`QueueStats`] and
//! [`DeadLetters`], returned from the accessors), rejects options it lacks with
//! [`Capabilities::check`], wraps broker errors with [`QueueError::transport`] (retryable) or
//! [`QueueError::backend`], and runs `quorum_queue::testing::run_conformance` from its `tests/`.
//! How the contract maps onto the two planned brokers:
//!
//! | contract | NATS JetStream | Redis Streams |
//! | --- | --- | --- |
//! | `lease(max, wait)` | pull consumer fetch, `max_messages = max`, `expires = wait` | `XREADGROUP … COUNT max BLOCK wait >`, plus `XAUTOCLAIM` for expired leases |
//! | visibility timeout | `AckWait` | `XAUTOCLAIM` min idle time |
//! | `ack` | `+ACK` (double ack to confirm) | `XACK` (+ `XDEL`) |
//! | `nack(delay)` | `-NAK` with delay | re-add after the delay (e.g. a sorted set of due ids), then `XACK` |
//! | `in_progress` | `+WPI` (AckProgress) | `XCLAIM … JUSTID` by the same consumer (resets idle time) |
//! | `term(reason)` | `+TERM`, copy to a DLQ stream | `XADD` to a dead-letter stream, `XACK` |
//! | `max_deliveries` | `MaxDeliver` | delivery count from `XPENDING` / `XAUTOCLAIM` |
//! | `close` | `-NAK` every held lease | `XCLAIM … IDLE <huge>` so others claim them at once |
//! | stats | stream / consumer info: `num_pending`, `num_ack_pending` | `XINFO GROUPS` lag, `XPENDING` |
//!
//! [`QueueError::StaleLease`] needs care: JetStream acks by stream sequence whichever delivery the
//! reply subject belongs to, and `XACK` succeeds for an entry another consumer has claimed. A
//! backend can check ownership atomically (a Redis script comparing the `XPENDING` owner and
//! delivery count before `XACK`) or conservatively (reject locally once the lease's own deadline,
//! measured from receipt minus a safety margin, has passed; `in_progress` moves it).

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Capabilities, Delivery, Headers, Lease, MessageId, NewMessage, QueueError};

/// A durable work queue with at-least-once delivery, used as `Arc<dyn Queue>`.
///
/// A consumer [`lease`](Queue::lease)s deliveries and settles each one exactly once:
/// [`ack`](Queue::ack) (done), [`nack`](Queue::nack) (retry later), or [`term`](Queue::term)
/// (dead-letter now); [`in_progress`](Queue::in_progress) extends the lease while work goes on.
/// A lease not settled within the visibility timeout expires and the message is delivered again,
/// with its delivery count incremented; after `max_deliveries` deliveries it goes to the
/// dead-letter destination instead. Settling with a lease that is no longer current fails with
/// [`QueueError::StaleLease`], so two consumers never both settle the same delivery.
///
/// One value is one *handle* (one connection / consumer); [`close`](Queue::close) returns the
/// leases this handle holds and makes it unusable.
#[async_trait]
pub trait Queue: Send + Sync + fmt::Debug {
    /// What this backend supports beyond the core contract.
    fn capabilities(&self) -> Capabilities;

    /// Publishes one message and returns its id (the first message's id for a duplicate
    /// `dedup_id`).
    ///
    /// # Errors
    ///
    /// [`QueueError::Unsupported`] for an option the backend lacks, [`QueueError::QueueFull`],
    /// [`QueueError::Closed`], or a transport / backend error.
    async fn publish(&self, message: NewMessage) -> Result<MessageId, QueueError>;

    /// Publishes several messages (pipelined where the backend can), one result per message in
    /// order. The default publishes them one by one.
    async fn publish_many(&self, messages: Vec<NewMessage>) -> Vec<Result<MessageId, QueueError>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.publish(message).await);
        }
        results
    }

    /// Leases up to `max` deliveries, waiting up to `wait` for the first one to become available.
    ///
    /// Returns an empty batch when `wait` passes with no work. Higher priorities come first, FIFO
    /// within a priority where the backend has priorities.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidArgument`] for `max == 0`, [`QueueError::Closed`] (also when the
    /// handle is closed while waiting), or a transport / backend error.
    async fn lease(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Marks a delivery done; the message is removed.
    ///
    /// # Errors
    ///
    /// [`QueueError::StaleLease`] if the lease is no longer current, [`QueueError::Closed`], or a
    /// transport / backend error.
    async fn ack(&self, lease: &Lease) -> Result<(), QueueError>;

    /// Acks several deliveries (pipelined where the backend can), one result per lease in order.
    /// The default acks them one by one.
    async fn ack_many(&self, leases: &[Lease]) -> Vec<Result<(), QueueError>> {
        let mut results = Vec::with_capacity(leases.len());
        for lease in leases {
            results.push(self.ack(lease).await);
        }
        results
    }

    /// Gives a delivery back: the message is delivered again after `delay` (zero: at once), or
    /// dead-lettered if it has reached `max_deliveries`.
    ///
    /// # Errors
    ///
    /// [`QueueError::StaleLease`], [`QueueError::Unsupported`] for a non-zero delay on a backend
    /// without delays, [`QueueError::Closed`], or a transport / backend error.
    async fn nack(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError>;

    /// Extends the lease by a full visibility timeout from now (call it periodically during a
    /// long LLM call).
    ///
    /// # Errors
    ///
    /// [`QueueError::StaleLease`] (the lease already expired: stop working on it),
    /// [`QueueError::Closed`], or a transport / backend error.
    async fn in_progress(&self, lease: &Lease) -> Result<(), QueueError>;

    /// Dead-letters a delivery at once (it can never succeed), recording `reason`.
    ///
    /// # Errors
    ///
    /// [`QueueError::StaleLease`], [`QueueError::Closed`], or a transport / backend error.
    async fn term(&self, lease: &Lease, reason: &str) -> Result<(), QueueError>;

    /// Graceful shutdown of this handle: returns every lease it holds to the queue (they are
    /// delivered again at once, to other handles) and makes further calls on it fail with
    /// [`QueueError::Closed`]. Closing twice is fine.
    ///
    /// # Errors
    ///
    /// A transport / backend error while returning the leases (those not returned expire after
    /// the visibility timeout, so nothing is lost).
    async fn close(&self) -> Result<(), QueueError>;

    /// Backlog, in-flight and rate statistics, if the backend can report them.
    fn stats(&self) -> Option<&dyn QueueStats> {
        None
    }

    /// The dead-letter destination, if operators can inspect and replay it through this backend.
    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        None
    }
}

/// Statistics for autoscaling and dashboards.
#[async_trait]
pub trait QueueStats: Send + Sync {
    /// A consistent-as-possible snapshot of the queue.
    ///
    /// # Errors
    ///
    /// [`QueueError::Closed`] or a transport / backend error.
    async fn snapshot(&self) -> Result<StatsSnapshot, QueueError>;
}

/// One reading of a queue's statistics.
///
/// Backends build it with `StatsSnapshot::default()` and set the fields they know.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Messages ready to be delivered now (never delivered, or waiting for redelivery).
    pub backlog: u64,
    /// Messages waiting for a publish delay or nack delay to pass.
    pub delayed: u64,
    /// Deliveries leased and not yet settled.
    pub in_flight: u64,
    /// Messages currently in the dead-letter destination.
    pub dead_lettered: u64,
    /// How long the oldest ready message has been waiting (since it became ready); `None` with no
    /// backlog.
    pub oldest_ready_age: Option<Duration>,
    /// Messages ever published (cumulative counter; may reset when a broker restarts).
    pub published_total: u64,
    /// Messages that ever left the queue, acked or dead-lettered (cumulative counter).
    pub completed_total: u64,
    /// Messages published per second over the rate window, once two samples exist.
    pub rate_in: Option<f64>,
    /// Messages completed (acked or dead-lettered) per second over the rate window.
    pub rate_out: Option<f64>,
}

/// Why a message was dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// It was delivered `max` times without being acked.
    MaxDeliveries {
        /// The configured limit.
        max: u32,
    },
    /// A consumer called `term` with this reason.
    Terminated(String),
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::MaxDeliveries { max } => {
                write!(f, "max deliveries ({max}) reached")
            }
            DeadLetterReason::Terminated(reason) => write!(f, "terminated: {reason}"),
        }
    }
}

/// A message in the dead-letter destination.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the main queue.
    pub id: MessageId,
    /// The payload.
    pub payload: Bytes,
    /// The original headers.
    pub headers: Headers,
    /// The original priority.
    pub priority: u8,
    /// How many times it was delivered.
    pub delivery_count: u32,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// When (wall clock), if the backend records it.
    pub dead_lettered_at: Option<SystemTime>,
}

impl DeadLetter {
    /// A dead letter with no headers, priority 0 and no timestamp.
    pub fn new(
        id: MessageId,
        payload: Bytes,
        delivery_count: u32,
        reason: DeadLetterReason,
    ) -> Self {
        DeadLetter {
            id,
            payload,
            headers: Headers::new(),
            priority: 0,
            delivery_count,
            reason,
            dead_lettered_at: None,
        }
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the timestamp.
    pub fn with_time(mut self, at: SystemTime) -> Self {
        self.dead_lettered_at = Some(at);
        self
    }
}

/// The dead-letter destination: inspect, replay, purge.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to `limit` dead letters, oldest message first.
    ///
    /// # Errors
    ///
    /// A transport / backend error.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Moves one dead letter back to the main queue with its headers and priority and a fresh
    /// delivery count; returns its id there (backends may assign a new one).
    ///
    /// # Errors
    ///
    /// [`QueueError::NotFound`] if no dead letter has this id, or a transport / backend error.
    async fn replay(&self, id: &MessageId) -> Result<MessageId, QueueError>;

    /// Moves every dead letter back to the main queue; returns how many.
    ///
    /// # Errors
    ///
    /// A transport / backend error (some may have been replayed already).
    async fn replay_all(&self) -> Result<u64, QueueError>;

    /// Deletes every dead letter; returns how many.
    ///
    /// # Errors
    ///
    /// A transport / backend error.
    async fn purge(&self) -> Result<u64, QueueError>;
}
