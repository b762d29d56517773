//! [`NatsQueue`]: the [`Queue`] contract on a JetStream stream and durable pull consumer.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use quorum_queue::rate::RateWindow;
use quorum_queue::{
    Capabilities, DeadLetter, DeadLetterReason, DeadLetters, Delivery, Headers, Lease, MessageId,
    NewMessage, Queue, QueueError, QueueStats, StatsSnapshot,
};
use tokio::time::Instant;

use crate::config::NatsQueueConfig;
use crate::error::{NatsError, nats};
use crate::setup;

/// Header carrying a dead letter's id in the work stream.
pub(crate) const H_ID: &str = "Quorum-Id";
/// Header carrying how many times a dead letter was delivered.
pub(crate) const H_COUNT: &str = "Quorum-Delivery-Count";
/// Header: `max-deliveries` or `terminated`.
pub(crate) const H_REASON: &str = "Quorum-Dead-Reason";
/// Header: the limit that was reached (with `max-deliveries`).
pub(crate) const H_MAX: &str = "Quorum-Max-Deliveries";
/// Header: the reason given to `term` (with `terminated`).
pub(crate) const H_DETAIL: &str = "Quorum-Term-Reason";
/// Header: when it was dead-lettered, Unix milliseconds.
pub(crate) const H_AT: &str = "Quorum-Dead-At";
/// The JetStream dedup header.
const H_MSG_ID: &str = "Nats-Msg-Id";

const REASON_MAX: &str = "max-deliveries";
const REASON_TERM: &str = "terminated";

/// A handle on a JetStream-backed queue: one connection, one instance of the durable pull
/// consumer. Open several (in one process or many) to share the work; see the
/// [crate docs](crate) for how the contract maps onto JetStream.
///
/// Cloning is cheap and shares the handle (and its leases).
#[derive(Clone)]
pub struct NatsQueue {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsQueueConfig,
    client: async_nats::Client,
    js: Context,
    stream: stream::Stream,
    dead: stream::Stream,
    consumer: PullConsumer,
    dead_subject: String,
    margin: Duration,
    closed: AtomicBool,
    held: Mutex<HashMap<u64, Held>>,
    rates: Mutex<Rates>,
}

/// What this handle knows about one delivery it holds.
struct Held {
    /// The delivery count: the lease's generation.
    generation: u64,
    /// The `$JS.ACK...` reply subject of this delivery.
    reply: async_nats::Subject,
    /// After this the lease is treated as expired (server deadline minus the margin).
    deadline: Instant,
    /// Kept for dead-lettering with `term`.
    payload: Bytes,
    headers: Option<HeaderMap>,
}

struct Rates {
    rate_in: RateWindow,
    rate_out: RateWindow,
}

impl fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsQueue")
            .field("stream", &self.inner.config.stream)
            .field("consumer", &self.inner.config.consumer)
            .field("held", &lock(&self.inner.held).len())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Header values travel on one line: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// When this client stops trusting a lease that started at `from`: the server's deadline
/// (`from + lease`) minus the safety margin, never before `from`.
fn local_deadline(from: Instant, lease: Duration, margin: Duration) -> Instant {
    from + lease.saturating_sub(margin)
}

fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("quorum-") || lower.starts_with("nats-")
}

/// The contract's headers from a message's NATS headers, without this backend's own.
fn user_headers(headers: Option<&HeaderMap>) -> Headers {
    let mut out = Headers::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if is_reserved(name) {
                continue;
            }
            if let Some(value) = values.last() {
                out.insert(name, value.as_str());
            }
        }
    }
    out
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

/// Checks and converts a message's headers for publishing.
fn nats_headers(message: &NewMessage) -> Result<Option<HeaderMap>, QueueError> {
    if message.headers.is_empty() && message.dedup_id.is_none() {
        return Ok(None);
    }
    let mut map = HeaderMap::new();
    for (name, value) in message.headers.iter() {
        if name.is_empty()
            || name
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(QueueError::InvalidArgument {
                name: "headers",
                reason: format!("header name {name:?} is empty or contains ':' or whitespace"),
            });
        }
        if is_reserved(name) {
            return Err(QueueError::InvalidArgument {
                name: "headers",
                reason: format!(
                    "header name {name:?} is reserved (Quorum-* and Nats-* belong to the backend)"
                ),
            });
        }
        if value.chars().any(|c| c == '\r' || c == '\n') {
            return Err(QueueError::InvalidArgument {
                name: "headers",
                reason: format!("value of header {name:?} contains a line break"),
            });
        }
        map.insert(name, value);
    }
    if let Some(id) = &message.dedup_id {
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(QueueError::InvalidArgument {
                name: "dedup_id",
                reason: format!("{id:?} is empty or contains control characters"),
            });
        }
        map.insert(H_MSG_ID, id.as_str());
    }
    Ok(Some(map))
}

impl NatsQueue {
    /// Connects and opens the queue: creates the work stream, the dead-letter stream and the
    /// durable consumer when missing (and `auto_create` is on), and checks existing ones match
    /// the config.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] for a bad config or a conflicting / missing stream or
    /// consumer, [`QueueError::Transport`] when the server does not answer,
    /// [`QueueError::Backend`] when it refuses.
    pub async fn connect(config: NatsQueueConfig) -> Result<NatsQueue, QueueError> {
        config.check()?;
        let client = setup::connect(&config).await?;
        Self::with_client(config, client).await
    }

    /// Opens the queue on an existing connection (several queues may share one).
    ///
    /// # Errors
    ///
    /// As [`connect`](NatsQueue::connect), except connecting.
    pub async fn with_client(
        config: NatsQueueConfig,
        client: async_nats::Client,
    ) -> Result<NatsQueue, QueueError> {
        config.check()?;
        let js = setup::context(&config, client.clone());
        let Some(setup) = setup::ensure(&js, &config, setup::Mode::Open).await? else {
            return Err(QueueError::backend(NatsError::SetupIncomplete {
                stream: config.stream.clone(),
                consumer: config.consumer.clone(),
            }));
        };
        let window = config.rate_window.as_std();
        Ok(NatsQueue {
            inner: Arc::new(Inner {
                dead_subject: config.dead_letter_subject(),
                margin: config.effective_lease_margin(),
                config,
                client,
                js,
                stream: setup.stream,
                dead: setup.dead,
                consumer: setup.consumer,
                closed: AtomicBool::new(false),
                held: Mutex::new(HashMap::new()),
                rates: Mutex::new(Rates {
                    rate_in: RateWindow::new(window),
                    rate_out: RateWindow::new(window),
                }),
            }),
        })
    }

    /// The config this handle was opened with.
    pub fn config(&self) -> &NatsQueueConfig {
        &self.inner.config
    }

    /// The underlying connection (e.g. to share it with [`NatsTopics`](crate::NatsTopics)).
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    fn closed_error(&self) -> QueueError {
        QueueError::Closed {
            name: self.inner.config.stream.clone(),
        }
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(self.closed_error())
        } else {
            Ok(())
        }
    }

    fn stale(lease: &Lease) -> QueueError {
        QueueError::StaleLease {
            id: lease.id().to_string(),
        }
    }

    /// Takes the lease out of the held map if it is current and not expired.
    fn take(&self, lease: &Lease) -> Result<Held, QueueError> {
        self.check_open()?;
        let mut held = lock(&self.inner.held);
        match held.get(&lease.key()) {
            Some(h) if h.generation == lease.generation() => {}
            _ => return Err(Self::stale(lease)),
        }
        let h = held
            .remove(&lease.key())
            .ok_or_else(|| Self::stale(lease))?;
        if Instant::now() >= h.deadline {
            // Expired: the server redelivers (or already did); the lease is gone for good.
            return Err(Self::stale(lease));
        }
        Ok(h)
    }

    /// Puts a lease back after a settle that failed in transport (the caller may retry).
    fn restore(&self, lease: &Lease, held: Held) {
        if !self.inner.closed.load(Ordering::Acquire) {
            lock(&self.inner.held).insert(lease.key(), held);
        }
    }

    /// Sends an ack-protocol body and waits for the server to confirm it received it.
    async fn confirm(
        &self,
        reply: &async_nats::Subject,
        body: &'static [u8],
    ) -> Result<(), QueueError> {
        self.inner
            .client
            .request(reply.clone(), Bytes::from_static(body))
            .await
            .map(|_| ())
            .map_err(nats)
    }

    /// A settle (ack / nack / term body) of a held lease, confirmed by the server.
    async fn settle(&self, lease: &Lease, body: Bytes) -> Result<(), QueueError> {
        let held = self.take(lease)?;
        match self.inner.client.request(held.reply.clone(), body).await {
            Ok(_) => Ok(()),
            Err(err) => {
                let err = nats(err);
                if err.is_retryable() {
                    self.restore(lease, held);
                }
                Err(err)
            }
        }
    }

    async fn publish_ack(&self, future: PublishAckFuture) -> Result<MessageId, QueueError> {
        let ack = future.await.map_err(nats)?;
        Ok(MessageId::from_seq(ack.sequence))
    }

    async fn start_publish(&self, message: NewMessage) -> Result<PublishAckFuture, QueueError> {
        self.check_open()?;
        self.capabilities().check(&message)?;
        let headers = nats_headers(&message)?;
        let subject = self.inner.config.subject.clone();
        let result = match headers {
            Some(headers) => {
                self.inner
                    .js
                    .publish_with_headers(subject, headers, message.payload)
                    .await
            }
            None => self.inner.js.publish(subject, message.payload).await,
        };
        result.map_err(nats)
    }

    /// Publishes a dead letter for this delivery and waits for the dead-letter stream to store it.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per reason; a struct adds nothing"
    )]
    async fn publish_dead(
        &self,
        seq: u64,
        payload: Bytes,
        headers: Option<HeaderMap>,
        delivery_count: u64,
        reason: &str,
        max: Option<u32>,
        detail: Option<&str>,
    ) -> Result<(), QueueError> {
        let mut map = headers.unwrap_or_default();
        map.insert(H_ID, seq.to_string().as_str());
        map.insert(H_COUNT, delivery_count.to_string().as_str());
        map.insert(H_REASON, reason);
        if let Some(max) = max {
            map.insert(H_MAX, max.to_string().as_str());
        }
        if let Some(detail) = detail {
            map.insert(H_DETAIL, one_line(detail).as_str());
        }
        map.insert(H_AT, unix_millis(SystemTime::now()).to_string().as_str());
        // A second dead-lettering of the same message (a crash between the dead-letter publish
        // and the Term) is dropped by the dead-letter stream's duplicate window.
        map.insert(
            H_MSG_ID,
            format!("{}-{}", self.inner.config.stream, seq).as_str(),
        );
        let future = self
            .inner
            .js
            .publish_with_headers(self.inner.dead_subject.clone(), map, payload)
            .await
            .map_err(nats)?;
        future.await.map_err(nats)?;
        Ok(())
    }

    /// Dead-letters a delivery that came back more than `max_deliveries` times, then terms it.
    /// If the dead-letter publish fails, the delivery is nacked (retried later) instead.
    async fn dead_letter_exhausted(&self, msg: &jetstream::Message, seq: u64, delivered: u64) {
        let max = self.inner.config.max_deliveries;
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        let published = self
            .publish_dead(
                seq,
                msg.payload.clone(),
                msg.headers.clone(),
                delivered.saturating_sub(1),
                REASON_MAX,
                Some(max),
                None,
            )
            .await;
        let body: &'static [u8] = match &published {
            Ok(()) => b"+TERM",
            Err(err) => {
                tracing::warn!(
                    stream = %self.inner.config.stream,
                    seq,
                    error = %err,
                    "dead-letter publish failed; the message will be retried"
                );
                b"-NAK"
            }
        };
        if let Err(err) = self.confirm(&reply, body).await {
            tracing::warn!(
                stream = %self.inner.config.stream,
                seq,
                error = %err,
                "settling an exhausted delivery failed; the server will redeliver it"
            );
        }
    }

    /// One pull request: up to `max` messages, waiting up to `wait` for the first.
    async fn fetch(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<jetstream::Message>, QueueError> {
        let builder = self.inner.consumer.fetch().max_messages(max);
        // The server needs a positive expiry; below 1 ms answer at once ("no wait").
        let builder = if wait >= Duration::from_millis(1) {
            builder.expires(wait)
        } else {
            builder
        };
        if self.inner.client.connection_state() != async_nats::connection::State::Connected {
            return Err(QueueError::transport(NatsError::Disconnected {
                stream: self.inner.config.stream.clone(),
            }));
        }
        // The server ends the pull request by `wait`; if the connection drops meanwhile, give up
        // after the request timeout on top (undelivered messages stay with the server, a
        // delivery lost in flight comes back after the visibility timeout).
        let bound = Instant::now() + wait + self.inner.config.request_timeout.as_std();
        let mut batch = tokio::time::timeout_at(bound, builder.messages())
            .await
            .map_err(QueueError::transport)?
            .map_err(nats)?;
        let mut out = Vec::with_capacity(max.min(1024));
        loop {
            let next = match tokio::time::timeout_at(bound, batch.next()).await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(elapsed) if out.is_empty() => return Err(QueueError::transport(elapsed)),
                Err(_) => break,
            };
            match next {
                Ok(msg) => out.push(msg),
                Err(err) => {
                    if out.is_empty() {
                        return Err(QueueError::transport(err));
                    }
                    // Keep what arrived: those deliveries are ours now.
                    tracing::debug!(error = %err, "pull request ended with an error");
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Gives deliveries back at once (used when the handle closed while they arrived).
    async fn nak_all(&self, msgs: Vec<jetstream::Message>) {
        let naks = msgs
            .into_iter()
            .filter_map(|m| m.reply.clone())
            .map(|reply| {
                let client = self.inner.client.clone();
                async move { client.publish(reply, Bytes::from_static(b"-NAK")).await }
            });
        for result in join_all(naks).await {
            if let Err(err) = result {
                tracing::debug!(error = %err, "returning a lease failed; it expires instead");
            }
        }
    }
}

#[async_trait]
impl Queue for NatsQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().with_dedup().with_nack_delay()
    }

    async fn publish(&self, message: NewMessage) -> Result<MessageId, QueueError> {
        let future = self.start_publish(message).await?;
        self.publish_ack(future).await
    }

    async fn publish_many(&self, messages: Vec<NewMessage>) -> Vec<Result<MessageId, QueueError>> {
        // Send everything first (pipelined), then collect the acks in order.
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            pending.push(self.start_publish(message).await);
        }
        let acks = pending.into_iter().map(|started| async move {
            match started {
                Ok(future) => self.publish_ack(future).await,
                Err(err) => Err(err),
            }
        });
        join_all(acks).await
    }

    async fn lease(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Err(QueueError::InvalidArgument {
                name: "max",
                reason: "must be at least 1".into(),
            });
        }
        self.check_open()?;
        let until = Instant::now() + wait;
        let max_deliveries = u64::from(self.inner.config.max_deliveries);
        let mut out = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let msgs = self.fetch(max - out.len(), left).await?;
            if self.inner.closed.load(Ordering::Acquire) {
                self.nak_all(msgs).await;
                return Err(self.closed_error());
            }
            for msg in msgs {
                let received = Instant::now();
                let info = match msg.info() {
                    Ok(info) => (
                        info.stream_sequence,
                        u64::try_from(info.delivered).unwrap_or(1),
                    ),
                    Err(_) => {
                        tracing::warn!(subject = %msg.subject, "{}", NatsError::NotJetStream {
                            subject: msg.subject.to_string(),
                        });
                        continue;
                    }
                };
                let (seq, delivered) = info;
                if delivered > max_deliveries {
                    self.dead_letter_exhausted(&msg, seq, delivered).await;
                    continue;
                }
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                let lease = Lease::new(MessageId::from_seq(seq), seq, delivered)
                    .with_handle(reply.as_str());
                let deadline = local_deadline(
                    received,
                    self.inner.config.lease_for(delivered),
                    self.inner.margin,
                );
                let delivery = Delivery::new(
                    MessageId::from_seq(seq),
                    msg.payload.clone(),
                    u32::try_from(delivered).unwrap_or(u32::MAX),
                    lease,
                )
                .with_headers(user_headers(msg.headers.as_ref()));
                lock(&self.inner.held).insert(
                    seq,
                    Held {
                        generation: delivered,
                        reply,
                        deadline,
                        payload: msg.payload.clone(),
                        headers: msg.headers.clone(),
                    },
                );
                out.push(delivery);
            }
            if !out.is_empty() || Instant::now() >= until {
                return Ok(out);
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        self.settle(lease, Bytes::from_static(b"+ACK")).await
    }

    async fn ack_many(&self, leases: &[Lease]) -> Vec<Result<(), QueueError>> {
        join_all(leases.iter().map(|lease| self.ack(lease))).await
    }

    async fn nack(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError> {
        self.capabilities().check_nack_delay(delay)?;
        let body = if delay.is_zero() {
            Bytes::from_static(b"-NAK")
        } else {
            // JetStream (2.7+) holds the redelivery back by the given nanoseconds.
            let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
            Bytes::from(format!("-NAK {{\"delay\":{nanos}}}"))
        };
        self.settle(lease, body).await
    }

    async fn in_progress(&self, lease: &Lease) -> Result<(), QueueError> {
        let mut held = self.take(lease)?;
        let sent = Instant::now();
        match self.confirm(&held.reply, b"+WPI").await {
            Ok(()) => {
                // The server restarted the timer when it got the request: after `sent`.
                held.deadline = local_deadline(
                    sent,
                    self.inner.config.lease_for(held.generation),
                    self.inner.margin,
                );
                self.restore(lease, held);
                Ok(())
            }
            Err(err) => {
                if err.is_retryable() {
                    self.restore(lease, held);
                }
                Err(err)
            }
        }
    }

    async fn term(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        let held = self.take(lease)?;
        let dead = self
            .publish_dead(
                lease.key(),
                held.payload.clone(),
                held.headers.clone(),
                held.generation,
                REASON_TERM,
                None,
                Some(reason),
            )
            .await;
        if let Err(err) = dead {
            if err.is_retryable() && Instant::now() < held.deadline {
                self.restore(lease, held);
            }
            return Err(err);
        }
        match self.confirm(&held.reply, b"+TERM").await {
            Ok(()) => Ok(()),
            Err(err) => {
                // Already in the dead letters; if the Term was lost the message comes back and
                // its next dead-lettering is dropped as a duplicate.
                if err.is_retryable() {
                    self.restore(lease, held);
                }
                Err(err)
            }
        }
    }

    async fn close(&self) -> Result<(), QueueError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let held: Vec<Held> = lock(&self.inner.held).drain().map(|(_, h)| h).collect();
        let naks = held.iter().map(|h| self.confirm(&h.reply, b"-NAK"));
        let mut first_error = None;
        for result in join_all(naks).await {
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn stats(&self) -> Option<&dyn QueueStats> {
        Some(self)
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }
}

#[async_trait]
impl QueueStats for NatsQueue {
    async fn snapshot(&self) -> Result<StatsSnapshot, QueueError> {
        self.check_open()?;
        let inner = &self.inner;
        let (consumer, work, dead) = tokio::join!(
            inner.stream.consumer_info(&inner.config.consumer),
            inner.stream.get_info(),
            inner.dead.get_info(),
        );
        let consumer = consumer.map_err(nats)?;
        let work = work.map_err(nats)?;
        let dead = dead.map_err(nats)?;
        let mut s = StatsSnapshot::default();
        s.backlog = consumer.num_pending;
        s.in_flight = u64::try_from(consumer.num_ack_pending).unwrap_or(u64::MAX);
        s.dead_lettered = dead.state.messages;
        s.published_total = work.state.last_sequence;
        s.completed_total = s
            .published_total
            .saturating_sub(s.backlog)
            .saturating_sub(s.in_flight);
        if s.backlog > 0 {
            let next = consumer.delivered.stream_sequence.saturating_add(1);
            match inner
                .stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(inner.config.subject.clone())
                .send()
                .await
            {
                Ok(msg) => {
                    let published_ms = msg.time.unix_timestamp_nanos() / 1_000_000;
                    let now_ms = i128::from(unix_millis(SystemTime::now()));
                    let age = u64::try_from((now_ms - published_ms).max(0)).unwrap_or(0);
                    s.oldest_ready_age = Some(Duration::from_millis(age));
                }
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    s.oldest_ready_age = Some(Duration::ZERO);
                }
                Err(err) => return Err(nats(err)),
            }
        }
        let now = Instant::now();
        let mut rates = lock(&inner.rates);
        s.rate_in = rates.rate_in.observe(now, s.published_total);
        s.rate_out = rates.rate_out.observe(now, s.completed_total);
        Ok(s)
    }
}

/// One entry of the dead-letter stream.
struct Letter {
    seq: u64,
    letter: DeadLetter,
    headers: HeaderMap,
    payload: Bytes,
}

impl NatsQueue {
    fn parse_letter(&self, msg: jetstream::message::StreamMessage) -> Result<Letter, QueueError> {
        let bad = |header| {
            QueueError::backend(NatsError::BadDeadLetter {
                stream: self.inner.config.dead_letter_stream(),
                seq: msg.sequence,
                header,
            })
        };
        let h = &msg.headers;
        let id: u64 = header(h, H_ID)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(H_ID))?;
        let count: u32 = header(h, H_COUNT)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(H_COUNT))?;
        let reason = match header(h, H_REASON) {
            Some(REASON_MAX) => DeadLetterReason::MaxDeliveries {
                max: header(h, H_MAX)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad(H_MAX))?,
            },
            Some(REASON_TERM) => {
                DeadLetterReason::Terminated(header(h, H_DETAIL).unwrap_or_default().to_owned())
            }
            _ => return Err(bad(H_REASON)),
        };
        let mut letter =
            DeadLetter::new(MessageId::from_seq(id), msg.payload.clone(), count, reason)
                .with_headers(user_headers(Some(h)));
        if let Some(ms) = header(h, H_AT).and_then(|v| v.parse::<u64>().ok()) {
            letter = letter.with_time(UNIX_EPOCH + Duration::from_millis(ms));
        }
        Ok(Letter {
            seq: msg.sequence,
            letter,
            headers: msg.headers,
            payload: msg.payload,
        })
    }

    /// Up to `limit` dead-letter entries, oldest first.
    async fn letters(&self, limit: usize) -> Result<Vec<Letter>, QueueError> {
        let mut out = Vec::new();
        let mut seq = 1;
        while out.len() < limit {
            match self
                .inner
                .dead
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(self.inner.dead_subject.clone())
                .send()
                .await
            {
                Ok(msg) => {
                    seq = msg.sequence.saturating_add(1);
                    out.push(self.parse_letter(msg)?);
                }
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => break,
                Err(err) => return Err(nats(err)),
            }
        }
        Ok(out)
    }

    /// Publishes a dead letter back to the work subject (fresh delivery count), then deletes it
    /// from the dead-letter stream.
    async fn replay_letter(&self, letter: Letter) -> Result<MessageId, QueueError> {
        let mut headers = HeaderMap::new();
        for (name, values) in letter.headers.iter() {
            let name: &str = name.as_ref();
            if is_reserved(name) {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        let ack = self
            .inner
            .js
            .publish_with_headers(self.inner.config.subject.clone(), headers, letter.payload)
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        self.inner
            .dead
            .delete_message(letter.seq)
            .await
            .map_err(nats)?;
        Ok(MessageId::from_seq(ack.sequence))
    }
}

#[async_trait]
impl DeadLetters for NatsQueue {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.check_open()?;
        Ok(self
            .letters(limit)
            .await?
            .into_iter()
            .map(|l| l.letter)
            .collect())
    }

    async fn replay(&self, id: &MessageId) -> Result<MessageId, QueueError> {
        self.check_open()?;
        let letters = self.letters(usize::MAX).await?;
        let Some(letter) = letters.into_iter().find(|l| l.letter.id == *id) else {
            return Err(QueueError::NotFound { id: id.to_string() });
        };
        self.replay_letter(letter).await
    }

    async fn replay_all(&self) -> Result<u64, QueueError> {
        self.check_open()?;
        let mut replayed = 0;
        for letter in self.letters(usize::MAX).await? {
            self.replay_letter(letter).await?;
            replayed += 1;
        }
        Ok(replayed)
    }

    async fn purge(&self) -> Result<u64, QueueError> {
        self.check_open()?;
        let response = self.inner.dead.purge().await.map_err(nats)?;
        Ok(response.purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_headers_are_rejected_and_hidden() {
        let bad = NewMessage::new("x").header("Quorum-Id", "1");
        assert!(matches!(
            nats_headers(&bad),
            Err(QueueError::InvalidArgument {
                name: "headers",
                ..
            })
        ));
        let bad = NewMessage::new("x").header("nats-msg-id", "1");
        assert!(nats_headers(&bad).is_err());
        let bad = NewMessage::new("x").header("a b", "1");
        assert!(nats_headers(&bad).is_err());
        let bad = NewMessage::new("x").header("a", "line\nbreak");
        let err = nats_headers(&bad).unwrap_err();
        assert!(err.to_string().contains("line break"), "{err}");
        assert!(nats_headers(&NewMessage::new("x")).unwrap().is_none());

        let good = NewMessage::new("x").header("job-id", "7").dedup_id("j7");
        let map = nats_headers(&good).unwrap().unwrap();
        assert_eq!(header(&map, "job-id"), Some("7"));
        assert_eq!(header(&map, H_MSG_ID), Some("j7"));
        let back = user_headers(Some(&map));
        assert_eq!(back.get("job-id"), Some("7"));
        assert_eq!(back.len(), 1, "Nats-Msg-Id is not a user header");
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_locally_a_margin_before_the_server() {
        let start = Instant::now();
        let deadline = local_deadline(start, Duration::from_secs(30), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(27)).await;
        assert!(
            Instant::now() < deadline,
            "still valid 27s into a 30s lease"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            Instant::now() >= deadline,
            "stale 2s before the server's deadline"
        );
        // A margin larger than the lease (config checks forbid it) never goes before the start.
        assert_eq!(
            local_deadline(start, Duration::from_millis(100), Duration::from_secs(1)),
            start
        );
    }

    #[test]
    fn term_reasons_fit_on_one_line() {
        assert_eq!(one_line("bad\r\ninput\t!"), "bad  input !");
    }
}
