//! The NATS JetStream backend of the Quorum job-queue contract: [`NatsQueue`] implements
//! [`quorum_queue::Queue`] (with [`QueueStats`](quorum_queue::QueueStats) and
//! [`DeadLetters`](quorum_queue::DeadLetters)) on a JetStream stream and a durable pull consumer,
//! and [`NatsTopics`] implements [`Topics`](quorum_queue::Topics) on core NATS subjects.
//!
//! # How the contract maps onto JetStream
//!
//! | contract | JetStream |
//! | --- | --- |
//! | queue | work stream `stream` binding `subject` (`work_queue` or `limits` retention, `file` or `memory` storage, `max_age`, `replicas`, `duplicate_window`), created or checked from [`NatsQueueConfig`] |
//! | handle | one connection + the durable pull consumer `consumer` (explicit ack) |
//! | `publish` / `publish_many` | JetStream publish awaiting the stream's ack; `publish_many` sends all, then awaits the acks (pipelined) |
//! | `lease(max, wait)` | one pull request `batch = max, no_wait, expires = wait`: the server answers as soon as it has messages |
//! | visibility timeout | consumer `AckWait` (or `BackOff` per delivery) |
//! | `ack` / `ack_many` | `+ACK` sent as a request: the server confirms it received it ("double ack"); `ack_many` pipelines them |
//! | `nack(0)` | `-NAK` (confirmed) |
//! | `in_progress` | `+WPI` (AckProgress, confirmed) |
//! | `term(reason)` | copy to the dead-letter stream (awaiting its ack), then `+TERM` |
//! | `close` | `-NAK` every lease the handle holds, then refuse further calls |
//! | ids | the stream sequence |
//! | dedup | `Nats-Msg-Id` within the stream's `duplicate_window` |
//! | stats | consumer info (`num_pending` = backlog, `num_ack_pending` = in flight), stream info (`last_seq` = published), dead-letter stream message count, the first undelivered message's timestamp, rates from [`RateWindow`](quorum_queue::rate::RateWindow) |
//!
//! **Capabilities.** Dedup and nack delays. *Priorities* are not supported (a publish with a priority
//! fails with `Unsupported`): JetStream has no per-message priority, and emulating it with one
//! subject and consumer per level would cost a pull round trip per level on every lease.
//! *Delayed publishes* are not supported (JetStream 2.9 has none); *nack delays* are, with
//! JetStream's own `-NAK {"delay": …}`, which holds the redelivery back on the server.
//!
//! # Stale leases
//!
//! JetStream acks by stream sequence: an ack sent for an *old* delivery of a message is
//! accepted by the server even after the message was redelivered to someone else, and the
//! server confirms every ack it receives, stale or not. So [`QueueError::StaleLease`] is decided
//! by the handle that leased the delivery:
//!
//! - it remembers each delivery it holds (stream sequence + delivery count = the lease's key and
//!   generation); a second settle, a settle of an older delivery, or a lease this handle does not
//!   hold is stale;
//! - each lease expires locally at *receipt + AckWait − `lease_margin`* (default a tenth of the
//!   lease, at most 2 s); `in_progress` moves that to *send time + AckWait − margin*. After that
//!   every settle fails with `StaleLease` *before* anything is sent, because the server may
//!   already have redelivered the message.
//!
//! The guarantee: **a stale settle is never sent**, so two consumers never both complete the
//! same delivery, as long as a message's trip from server to client plus the settle's trip back
//! takes less than `lease_margin` (the server's AckWait clock starts when it sends the message,
//! slightly before receipt). A settle rejected locally near the deadline is safe: the message is
//! redelivered. Leases are per handle; a lease cannot be settled through another handle.
//!
//! [`QueueError::StaleLease`]: quorum_queue::QueueError::StaleLease
//!
//! # Dead letters
//!
//! JetStream has no dead-letter queue, so this backend keeps one: the stream
//! `dead_letter_stream` (default `<stream>_DLQ`, limits retention) on `dead_letter_subject`
//! (default `<subject>.dead`). A dead letter carries the original payload and headers plus
//! `Quorum-Id` (the original sequence), `Quorum-Delivery-Count`, `Quorum-Dead-Reason`
//! (`max-deliveries` or `terminated`), `Quorum-Max-Deliveries` / `Quorum-Term-Reason` and
//! `Quorum-Dead-At` (Unix ms). Header names starting with `Quorum-` or `Nats-` are reserved:
//! publishing them fails with `InvalidArgument`.
//!
//! *When `max_deliveries` is reached*, the client dead-letters: the consumer's `MaxDeliver` is
//! unlimited, and a delivery whose count exceeds `max_deliveries` is never handed to the
//! caller: the lease call publishes it to the dead-letter stream (awaiting the stream's ack) and
//! then sends `+TERM`. If that publish fails the delivery is nacked and tried again, so a message
//! is never dropped between the two streams; a crash between publish and `+TERM` cannot produce
//! two letters because the dead-letter publish carries `Nats-Msg-Id = <stream>-<seq>` (within
//! the 2-minute duplicate window). So a message that exhausted its deliveries sits in the
//! backlog until the next `lease` call moves it. (With `backoff`, JetStream requires a finite
//! `MaxDeliver`: it is then `max(max_deliveries, len(backoff)) + 10`, leaving ten dead-letter
//! attempts.) `list` reads the dead-letter stream oldest first, `replay` republishes a letter to
//! the work subject (a new message: new id, delivery count 1) and deletes it from the
//! dead-letter stream, `purge` purges that stream.
//!
//! # Durability: fsync
//!
//! A publish is acknowledged once the server has *written* the message to its store, not once it
//! is on disk: JetStream fsyncs file storage periodically, every **2 minutes** by default (the
//! stream store sets a 2-minute sync interval in 2.9; 2.10+ keeps that default). Acknowledged
//! messages and acks survive a crash of `nats-server` (the OS page cache keeps them), but a
//! machine crash or power loss can lose up to the last sync interval. From nats-server 2.10 on
//! this is configurable in the server config:
//!
//! ```text
//! jetstream {
//!     store_dir: /var/lib/nats
//!     sync_interval: always   # fsync every write: safest, slowest
//!     # or e.g. sync_interval: 10s
//! }
//! ```
//!
//! nats-server 2.9.x (Debian 12 ships 2.9.10) has no such option: run replicas 3 across
//! machines for machine-failure durability. Consumer state (delivered / acked) is written
//! without fsync too; after an unclean restart some acked messages may be delivered again, which
//! at-least-once delivery already allows. `memory` storage loses everything on a server restart.
//!
//! # Reconnection
//!
//! The client reconnects forever in the background. While disconnected, calls fail fast with a
//! retryable [`QueueError::Transport`](quorum_queue::QueueError::Transport) (a pull request is
//! abandoned after `wait + request_timeout`); unacked messages stay with the server and are
//! redelivered after the visibility timeout.
//!
//! # Example
//!
//! Config parsing and field checks need no server:
//!
//! ```
//! use quorum_queue::QueueError;
//! use quorum_queue_nats::NatsQueueConfig;
//!
//! let config: NatsQueueConfig = serde_json::from_str(
//!     r#"{ "stream": "JOBS", "subject": "jobs.llm", "visibility_timeout": "1m" }"#,
//! ).unwrap();
//! config.check().unwrap();
//!
//! let bad = NatsQueueConfig { subject: "jobs.*".into(), ..config };
//! match bad.check() {
//!     Err(QueueError::InvalidConfig { field, reason }) => {
//!         assert_eq!(field, "subject");
//!         assert!(reason.contains("wildcard"));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! A worker against a running server:
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), quorum_queue::QueueError> {
//! use std::time::Duration;
//! use quorum_queue::{NewMessage, Queue};
//! use quorum_queue_nats::{NatsQueue, NatsQueueConfig};
//!
//! let config = NatsQueueConfig { url: "nats://127.0.0.1:4222".into(), ..Default::default() };
//! quorum_queue_nats::validate(&config).await?; // what `config validate` runs
//! let queue = NatsQueue::connect(config).await?;
//! queue.publish(NewMessage::new("summarise doc 1").header("job-id", "1")).await?;
//! for delivery in queue.lease(32, Duration::from_secs(5)).await? {
//!     // ... call the model, calling `queue.in_progress(&delivery.lease)` during long calls ...
//!     queue.ack(&delivery.lease).await?;
//! }
//! queue.close().await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod error;
pub mod queue;
pub mod topics;

mod setup;

pub use config::{NatsQueueConfig, Retention, Storage};
pub use error::NatsError;
pub use queue::NatsQueue;
pub use setup::validate;
pub use topics::NatsTopics;
