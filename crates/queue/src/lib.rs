//! The job-queue contract of Quorum: the [`Queue`] trait every backend implements, the capability
//! traits reached through it ([`QueueStats`], [`DeadLetters`]), pub/sub [`Topics`] for results
//! and progress, the embedded [`MemoryQueue`], and (feature `test-util`) the conformance suite
//! every backend passes. This crate knows nothing about NATS or Redis; `quorum-queue-nats` and
//! `quorum-queue-redis` implement it.
//!
//! # The contract
//!
//! - **At-least-once delivery.** A published message is delivered until a consumer acks it. A
//!   consumer that crashes loses nothing: its leases expire and the messages are delivered again.
//!   Handlers must therefore be idempotent (or dedup on [`MessageId`]).
//! - **Leases.** [`Queue::lease`] hands out a batch of [`Delivery`]s, each under a [`Lease`] that
//!   lasts the queue's *visibility timeout* (JetStream `AckWait`; Redis: the `XAUTOCLAIM` min
//!   idle time). Settle each delivery exactly once: [`ack`](Queue::ack) (done),
//!   [`nack`](Queue::nack) (retry after a delay), [`term`](Queue::term) (dead-letter now), or
//!   keep it alive with [`in_progress`](Queue::in_progress) during a long LLM call. An expired
//!   lease is redelivered with [`Delivery::delivery_count`] incremented; settling a lease that is
//!   no longer current fails with [`QueueError::StaleLease`], so two consumers never both
//!   complete the same delivery. [`Queue::close`] returns a handle's unsettled leases at once
//!   (graceful shutdown).
//! - **Dead letters.** After `max_deliveries` deliveries, or on `term`, a message moves to the
//!   dead-letter destination with its headers, delivery count and [`DeadLetterReason`]; operators
//!   list, replay and purge it through [`Queue::dead_letters`].
//! - **Capabilities.** Priorities, delays and dedup are optional: [`Queue::capabilities`] says
//!   which a backend has, and publishing with an option it lacks fails with
//!   [`QueueError::Unsupported`], never silently. Statistics for autoscaling (backlog, in flight,
//!   dead-lettered, oldest message age, rates in and out) come from [`Queue::stats`];
//!   [`rate::RateWindow`] turns a broker's cumulative counters into rates that survive counter
//!   resets.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), quorum_queue::QueueError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use quorum_queue::{MemoryQueue, MemoryQueueConfig, NewMessage, Queue};
//!
//! let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(MemoryQueueConfig::default())?);
//! queue.publish(NewMessage::new("summarise doc 1").header("job-id", "1")).await?;
//! queue.publish(NewMessage::new("urgent").priority(9)).await?;
//!
//! // A worker: lease a batch (waiting up to 1 s for work), settle every delivery.
//! let batch = queue.lease(32, Duration::from_secs(1)).await?;
//! assert_eq!(batch[0].payload, "urgent"); // higher priority first
//! for delivery in &batch {
//!     assert_eq!(delivery.delivery_count, 1);
//!     if delivery.headers.get("job-id").is_some() {
//!         queue.ack(&delivery.lease).await?;
//!     } else {
//!         queue.term(&delivery.lease, "no job-id header").await?;
//!     }
//! }
//! // Settling twice is refused.
//! assert!(queue.ack(&batch[0].lease).await.unwrap_err().is_stale_lease());
//!
//! let stats = queue.stats().expect("the memory queue has stats").snapshot().await?;
//! assert_eq!((stats.backlog, stats.in_flight, stats.dead_lettered), (0, 0, 1));
//! let dead = queue.dead_letters().expect("and dead letters").list(10).await?;
//! assert_eq!(dead[0].reason.to_string(), "terminated: no job-id header");
//! # Ok(()) }
//! ```

pub mod error;
pub mod memory;
pub mod message;
pub mod queue;
pub mod rate;
pub mod topic;

mod duration;

#[cfg(feature = "test-util")]
pub mod testing;

pub use error::{BoxError, QueueError};
pub use memory::{MemoryQueue, MemoryQueueConfig};
pub use message::{Capabilities, Delivery, Headers, Lease, MessageId, NewMessage};
pub use queue::{DeadLetter, DeadLetterReason, DeadLetters, Queue, QueueStats, StatsSnapshot};
pub use topic::{MemoryTopics, Subscription, TopicError, Topics};
