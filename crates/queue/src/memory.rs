//! The in-memory queue: the embedded default backend.
//!
//! Priorities (higher first, FIFO within a priority), publish delays, leases with a visibility
//! timeout and redelivery, `in_progress`, nack with delay, `max_deliveries` → dead letter, replay,
//! dedup by id within a window, live statistics and graceful close, all in one process. Nothing
//! survives the process: use a broker backend when jobs must outlive it.
//!
//! All state sits behind one mutex; each call (a whole batch for `lease`, `publish_many` and
//! `ack_many`) takes it once, for a short critical section that never awaits. Plain publishes (no
//! delay, no dedup id) only append to a separate inbox under their own lock, so producers do not
//! contend with consumers; the next `lease` or stats call moves the inbox in. Nothing spawns a
//! task. Payloads are [`Bytes`] and are never copied. Time is `tokio::time`, so tests run on the
//! paused clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::rate::RateWindow;
use crate::{
    Capabilities, DeadLetter, DeadLetterReason, DeadLetters, Delivery, Headers, Lease, MessageId,
    NewMessage, Queue, QueueError, QueueStats, StatsSnapshot,
};

/// The longest duration a config field accepts (keeps deadline arithmetic far from overflow).
const MAX_CONFIG_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Configuration of a [`MemoryQueue`] (YAML / JSON via serde; durations as `"30s"`, `"2m"`).
///
/// ```
/// let config: quorum_queue::memory::MemoryQueueConfig =
///     serde_json::from_str(r#"{ "visibility_timeout": "10s", "max_deliveries": 3 }"#).unwrap();
/// assert_eq!(config.visibility_timeout, std::time::Duration::from_secs(10));
/// assert_eq!(config.capacity, 100_000); // default
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryQueueConfig {
    /// The queue's name, used in errors.
    pub name: String,
    /// How long a lease lasts before the message is redelivered (default 30s).
    #[serde(with = "crate::duration")]
    pub visibility_timeout: Duration,
    /// Deliveries after which an unacked message is dead-lettered instead of redelivered
    /// (default 5).
    pub max_deliveries: u32,
    /// How long a `dedup_id` is remembered (default 2m). At most `capacity` ids are remembered;
    /// beyond that the oldest are forgotten early.
    #[serde(with = "crate::duration")]
    pub dedup_window: Duration,
    /// The most messages held at once, ready, delayed, in flight and dead-lettered together
    /// (default 100,000); publishing beyond it fails with [`QueueError::QueueFull`].
    pub capacity: usize,
    /// The window over which `rate_in` / `rate_out` are computed (default 1m).
    #[serde(with = "crate::duration")]
    pub rate_window: Duration,
}

impl Default for MemoryQueueConfig {
    fn default() -> Self {
        MemoryQueueConfig {
            name: "memory".into(),
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            dedup_window: Duration::from_secs(120),
            capacity: 100_000,
            rate_window: Duration::from_secs(60),
        }
    }
}

impl MemoryQueueConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), QueueError> {
        let invalid = |field, reason: &str| {
            Err(QueueError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.name.is_empty() {
            return invalid("name", "must not be empty");
        }
        if self.visibility_timeout.is_zero() {
            return invalid("visibility_timeout", "must be greater than 0s");
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries", "must be at least 1");
        }
        if self.capacity == 0 {
            return invalid("capacity", "must be at least 1");
        }
        if self.rate_window.is_zero() {
            return invalid("rate_window", "must be greater than 0s");
        }
        for (field, value) in [
            ("visibility_timeout", self.visibility_timeout),
            ("dedup_window", self.dedup_window),
            ("rate_window", self.rate_window),
        ] {
            if value > MAX_CONFIG_DURATION {
                return Err(QueueError::InvalidConfig {
                    field,
                    reason: format!(
                        "{} exceeds the maximum of 365d",
                        crate::duration::format(value)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The in-memory queue. Cheap to clone: clones share one handle; [`handle`](MemoryQueue::handle)
/// makes another handle (another "consumer") on the same queue.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), quorum_queue::QueueError> {
/// use std::time::Duration;
/// use quorum_queue::{NewMessage, Queue, memory::{MemoryQueue, MemoryQueueConfig}};
///
/// let queue = MemoryQueue::new(MemoryQueueConfig::default())?;
/// let worker = queue.handle();
/// queue.publish(NewMessage::new("job")).await?;
/// let batch = worker.lease(10, Duration::from_millis(10)).await?;
/// worker.close().await?; // returns the unacked lease: the job is ready again
/// assert_eq!(queue.lease(10, Duration::ZERO).await?[0].delivery_count, 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
    handle: Arc<HandleState>,
}

struct HandleState {
    id: u64,
    closed: AtomicBool,
}

struct Shared {
    config: MemoryQueueConfig,
    state: Mutex<State>,
    /// Plain publishes (no delay, no dedup id) land here under their own short lock, so producers
    /// do not contend with consumers on `state`; whoever locks `state` to read it first moves
    /// them in ([`State::absorb`]).
    inbox: Mutex<Vec<Pending>>,
    counters: Arc<Counters>,
    notify: Notify,
    /// `lease` calls waiting for work.
    waiters: AtomicUsize,
    /// A waiter has been notified and has not yet looked at the queue again: it will see every
    /// message published until then, so publishers need not notify again.
    wake_pending: AtomicBool,
    next_handle: AtomicU64,
}

impl fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("name", &self.shared.config.name)
            .field("handle", &self.handle.id)
            .field("closed", &self.handle.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// A new, empty queue.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] when the config does not validate.
    pub fn new(config: MemoryQueueConfig) -> Result<Self, QueueError> {
        config.validate()?;
        let now = Instant::now();
        let counters = Arc::new(Counters {
            held: AtomicUsize::new(0),
            next_seq: AtomicU64::new(1),
        });
        let state = State::new(&config, now, Arc::clone(&counters));
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            inbox: Mutex::new(Vec::new()),
            counters,
            notify: Notify::new(),
            waiters: AtomicUsize::new(0),
            wake_pending: AtomicBool::new(false),
            next_handle: AtomicU64::new(1),
        });
        Ok(MemoryQueue {
            shared,
            handle: Arc::new(HandleState {
                id: 0,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Another handle on the same queue, with its own leases for [`close`](Queue::close).
    pub fn handle(&self) -> MemoryQueue {
        MemoryQueue {
            shared: Arc::clone(&self.shared),
            handle: Arc::new(HandleState {
                id: self.shared.next_handle.fetch_add(1, Ordering::Relaxed),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The queue's config.
    pub fn config(&self) -> &MemoryQueueConfig {
        &self.shared.config
    }

    fn closed(&self) -> QueueError {
        QueueError::Closed {
            name: self.shared.config.name.clone(),
        }
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.handle.closed.load(Ordering::Acquire) {
            return Err(self.closed());
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; recover the state anyway if one did.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the state after moving the inbox's messages in (for calls that read the backlog).
    fn lock_absorbed(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.absorb(&self.shared.inbox);
        state
    }

    /// Wakes one waiting `lease` call, if there is one and none is already on its way. The woken
    /// one wakes the next if it leaves work behind, so a burst of publishes costs one wake-up,
    /// not one per message.
    fn wake(&self) {
        if self.shared.waiters.load(Ordering::SeqCst) > 0
            && !self.shared.wake_pending.swap(true, Ordering::SeqCst)
        {
            self.shared.notify.notify_one();
        }
    }

    fn deadline_after(
        now: Instant,
        delay: Duration,
        name: &'static str,
    ) -> Result<Instant, QueueError> {
        now.checked_add(delay)
            .filter(|_| delay <= MAX_CONFIG_DURATION)
            .ok_or_else(|| QueueError::InvalidArgument {
                name,
                reason: format!("{delay:?} exceeds the maximum of 365d"),
            })
    }

    fn settle(&self, lease: &Lease, op: Settle<'_>) -> Result<(), QueueError> {
        self.check_open()?;
        let now = Instant::now();
        let until = match op {
            Settle::Nack(delay) if !delay.is_zero() => {
                Some(Self::deadline_after(now, delay, "delay")?)
            }
            _ => None,
        };
        let woke = {
            let mut state = self.lock();
            state.maintain(now, &self.shared.config);
            let result = state.settle(lease, op, until, now, &self.shared.config);
            state.drop_stale_lease_records();
            result?
        };
        if woke {
            self.wake();
        }
        Ok(())
    }

    fn publish_locked(
        &self,
        state: &mut State,
        message: NewMessage,
        now: Instant,
    ) -> Result<MessageId, QueueError> {
        let until = match message.delay {
            Some(delay) if !delay.is_zero() => Some(Self::deadline_after(now, delay, "delay")?),
            _ => None,
        };
        state.publish(message, until, now, &self.shared.config)
    }
}

#[derive(Clone, Copy)]
enum Settle<'a> {
    Ack,
    Nack(Duration),
    Progress,
    Term(&'a str),
}

#[async_trait]
impl Queue for MemoryQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_priorities(u8::MAX)
            .with_delays()
            .with_dedup()
    }

    async fn publish(&self, message: NewMessage) -> Result<MessageId, QueueError> {
        self.check_open()?;
        let now = Instant::now();
        let plain = message.dedup_id.is_none() && message.delay.is_none_or(|d| d.is_zero());
        let id = if plain {
            // Fast path: reserve capacity and a sequence number, then append to the inbox.
            let counters = &self.shared.counters;
            counters.reserve(&self.shared.config)?;
            let seq = counters.next_seq.fetch_add(1, Ordering::Relaxed);
            self.shared
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Pending {
                    seq,
                    payload: message.payload,
                    headers: message.headers,
                    priority: message.priority,
                    at: now,
                });
            MessageId::from_seq(seq)
        } else {
            let mut state = self.lock_absorbed();
            state.maintain(now, &self.shared.config);
            self.publish_locked(&mut state, message, now)?
        };
        self.wake();
        Ok(id)
    }

    async fn publish_many(&self, messages: Vec<NewMessage>) -> Vec<Result<MessageId, QueueError>> {
        if self.check_open().is_err() {
            return messages.iter().map(|_| Err(self.closed())).collect();
        }
        let now = Instant::now();
        let results: Vec<_> = {
            let mut state = self.lock_absorbed();
            state.maintain(now, &self.shared.config);
            messages
                .into_iter()
                .map(|m| self.publish_locked(&mut state, m, now))
                .collect()
        };
        self.wake();
        results
    }

    async fn lease(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Err(QueueError::InvalidArgument {
                name: "max",
                reason: "must be at least 1".into(),
            });
        }
        self.check_open()?;
        let config = &self.shared.config;
        let owner = self.handle.id;
        let start = Instant::now();
        let deadline = start.checked_add(wait);
        // Fast path: work is ready, no need to register as a waiter.
        {
            let mut state = self.lock_absorbed();
            state.maintain(start, config);
            let batch = state.lease(max, start, owner, config);
            if !batch.is_empty() || wait.is_zero() {
                return Ok(batch);
            }
        }
        loop {
            let notified = self.shared.notify.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            // From here on this call sees everything published, so a pending wake-up is served.
            self.shared.wake_pending.store(false, Ordering::SeqCst);
            self.check_open()?;
            let now = Instant::now();
            let (batch, next_due, more_ready) = {
                let mut state = self.lock_absorbed();
                state.maintain(now, config);
                let batch = state.lease(max, now, owner, config);
                if batch.is_empty() {
                    self.shared.waiters.fetch_add(1, Ordering::SeqCst);
                }
                (batch, state.next_due(), state.ready.len > 0)
            };
            if !batch.is_empty() {
                if more_ready {
                    self.wake();
                }
                return Ok(batch);
            }
            let _waiting = WaitGuard(&self.shared.waiters);
            if deadline.is_some_and(|d| now >= d) {
                return Ok(batch);
            }
            let wake_at = match (deadline, next_due) {
                (Some(d), Some(n)) => Some(d.min(n)),
                (d, n) => d.or(n),
            };
            match wake_at {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at, notified).await;
                }
                None => notified.await,
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        self.settle(lease, Settle::Ack)
    }

    async fn ack_many(&self, leases: &[Lease]) -> Vec<Result<(), QueueError>> {
        if self.check_open().is_err() {
            return leases.iter().map(|_| Err(self.closed())).collect();
        }
        let now = Instant::now();
        let config = &self.shared.config;
        let mut state = self.lock();
        state.maintain(now, config);
        let results = leases
            .iter()
            .map(|lease| {
                state
                    .settle(lease, Settle::Ack, None, now, config)
                    .map(|_| ())
            })
            .collect();
        state.drop_stale_lease_records();
        results
    }

    async fn nack(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError> {
        self.settle(lease, Settle::Nack(delay))
    }

    async fn in_progress(&self, lease: &Lease) -> Result<(), QueueError> {
        self.settle(lease, Settle::Progress)
    }

    async fn term(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        self.settle(lease, Settle::Term(reason))
    }

    async fn close(&self) -> Result<(), QueueError> {
        if self.handle.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let now = Instant::now();
        {
            let mut state = self.lock();
            state.maintain(now, &self.shared.config);
            state.return_leases(self.handle.id, now);
            state.drop_stale_lease_records();
        }
        // Wake everyone: other handles may take the returned work, and this handle's waiting
        // `lease` calls must see that it is closed.
        self.shared.notify.notify_waiters();
        Ok(())
    }

    fn stats(&self) -> Option<&dyn QueueStats> {
        Some(self)
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }
}

#[async_trait]
impl QueueStats for MemoryQueue {
    async fn snapshot(&self) -> Result<StatsSnapshot, QueueError> {
        self.check_open()?;
        let now = Instant::now();
        let mut state = self.lock_absorbed();
        state.maintain(now, &self.shared.config);
        Ok(state.snapshot(now))
    }
}

#[async_trait]
impl DeadLetters for MemoryQueue {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.check_open()?;
        let now = Instant::now();
        let mut state = self.lock();
        state.maintain(now, &self.shared.config);
        Ok(state
            .dead
            .iter()
            .take(limit)
            .map(|(&seq, d)| {
                DeadLetter::new(
                    MessageId::from_seq(seq),
                    d.payload.clone(),
                    d.deliveries,
                    d.reason.clone(),
                )
                .with_headers(d.headers.clone())
                .with_priority(d.priority)
                .with_time(d.at)
            })
            .collect())
    }

    async fn replay(&self, id: &MessageId) -> Result<MessageId, QueueError> {
        self.check_open()?;
        let now = Instant::now();
        {
            let mut state = self.lock();
            state.maintain(now, &self.shared.config);
            let found = id.as_seq().filter(|seq| state.dead.contains_key(seq));
            let Some(seq) = found else {
                return Err(QueueError::NotFound { id: id.to_string() });
            };
            state.replay(seq, now);
        }
        self.wake();
        Ok(id.clone())
    }

    async fn replay_all(&self) -> Result<u64, QueueError> {
        self.check_open()?;
        let now = Instant::now();
        let count = {
            let mut state = self.lock();
            state.maintain(now, &self.shared.config);
            let seqs: Vec<u64> = state.dead.keys().copied().collect();
            for &seq in &seqs {
                state.replay(seq, now);
            }
            seqs.len() as u64
        };
        self.wake();
        Ok(count)
    }

    async fn purge(&self) -> Result<u64, QueueError> {
        self.check_open()?;
        let now = Instant::now();
        let mut state = self.lock();
        state.maintain(now, &self.shared.config);
        let count = state.dead.len();
        state.dead.clear();
        state.counters.held.fetch_sub(count, Ordering::SeqCst);
        Ok(count as u64)
    }
}

/// Decrements the waiter count when a waiting `lease` call stops waiting (or is dropped).
struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fast hasher for the queue's `u64` sequence keys (they are not attacker-controlled).
#[derive(Default)]
struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SeqMap<V> = HashMap<u64, V, BuildHasherDefault<SeqHasher>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryState {
    Ready,
    Delayed {
        until: Instant,
    },
    Leased {
        generation: u64,
        deadline: Instant,
        owner: u64,
    },
}

struct Entry {
    payload: Bytes,
    headers: Headers,
    priority: u8,
    deliveries: u32,
    /// When the message last became ready (for `oldest_ready_age`).
    ready_since: Instant,
    state: EntryState,
}

struct Dead {
    payload: Bytes,
    headers: Headers,
    priority: u8,
    deliveries: u32,
    reason: DeadLetterReason,
    at: SystemTime,
}

/// A plain publish waiting in the inbox.
struct Pending {
    seq: u64,
    payload: Bytes,
    headers: Headers,
    priority: u8,
    at: Instant,
}

/// Counters shared by the publish fast path and the state.
struct Counters {
    /// Messages held: in the inbox, ready, delayed, in flight or dead-lettered.
    held: AtomicUsize,
    next_seq: AtomicU64,
}

impl Counters {
    /// Takes one unit of capacity.
    fn reserve(&self, config: &MemoryQueueConfig) -> Result<(), QueueError> {
        if self.held.fetch_add(1, Ordering::SeqCst) >= config.capacity {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return Err(QueueError::QueueFull {
                name: config.name.clone(),
                capacity: config.capacity,
            });
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct LeaseRecord {
    deadline: Instant,
    seq: u64,
    generation: u64,
}

/// Ready messages: one FIFO per priority and a bitmap of the non-empty ones.
struct Ready {
    levels: Vec<VecDeque<u64>>,
    nonempty: [u64; 4],
    len: usize,
}

impl Ready {
    fn new() -> Self {
        Ready {
            levels: (0..256).map(|_| VecDeque::new()).collect(),
            nonempty: [0; 4],
            len: 0,
        }
    }

    fn push(&mut self, priority: u8, seq: u64) {
        let p = usize::from(priority);
        if let Some(level) = self.levels.get_mut(p) {
            level.push_back(seq);
            self.nonempty[p / 64] |= 1 << (p % 64);
            self.len += 1;
        }
    }

    fn highest(&self) -> Option<usize> {
        (0..4).rev().find_map(|word| {
            let bits = self.nonempty[word];
            (bits != 0).then(|| word * 64 + 63 - bits.leading_zeros() as usize)
        })
    }

    fn pop(&mut self) -> Option<u64> {
        let p = self.highest()?;
        let level = self.levels.get_mut(p)?;
        let seq = level.pop_front()?;
        if level.is_empty() {
            self.nonempty[p / 64] &= !(1 << (p % 64));
        }
        self.len -= 1;
        Some(seq)
    }

    /// The head of every non-empty priority level.
    fn heads(&self) -> impl Iterator<Item = u64> + '_ {
        self.levels
            .iter()
            .filter_map(|level| level.front().copied())
    }
}

struct State {
    entries: SeqMap<Entry>,
    ready: Ready,
    /// Delayed messages by due time.
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Lease deadlines in push order; deadlines only grow (constant visibility timeout), so the
    /// front is the next to expire. Records for settled leases are dropped lazily.
    leases: VecDeque<LeaseRecord>,
    in_flight: usize,
    dead: BTreeMap<u64, Dead>,
    dedup: HashMap<Arc<str>, (u64, Instant)>,
    dedup_expiry: VecDeque<(Instant, Arc<str>)>,
    counters: Arc<Counters>,
    /// The inbox's other buffer, swapped with it on [`absorb`](State::absorb).
    spare: Vec<Pending>,
    next_generation: u64,
    published_total: u64,
    completed_total: u64,
    rate_in: RateWindow,
    rate_out: RateWindow,
    next_sample: Instant,
}

impl State {
    fn new(config: &MemoryQueueConfig, now: Instant, counters: Arc<Counters>) -> Self {
        State {
            entries: SeqMap::default(),
            ready: Ready::new(),
            delayed: BinaryHeap::new(),
            leases: VecDeque::new(),
            in_flight: 0,
            dead: BTreeMap::new(),
            dedup: HashMap::new(),
            dedup_expiry: VecDeque::new(),
            counters,
            spare: Vec::new(),
            next_generation: 1,
            published_total: 0,
            completed_total: 0,
            rate_in: RateWindow::new(config.rate_window),
            rate_out: RateWindow::new(config.rate_window),
            next_sample: now,
        }
    }

    /// Moves the inbox's messages in, in publish order.
    fn absorb(&mut self, inbox: &Mutex<Vec<Pending>>) {
        {
            let mut inbox = inbox.lock().unwrap_or_else(PoisonError::into_inner);
            if inbox.is_empty() {
                return;
            }
            std::mem::swap(&mut *inbox, &mut self.spare);
        }
        let mut pending = std::mem::take(&mut self.spare);
        for p in pending.drain(..) {
            self.ready.push(p.priority, p.seq);
            self.entries.insert(
                p.seq,
                Entry {
                    payload: p.payload,
                    headers: p.headers,
                    priority: p.priority,
                    deliveries: 0,
                    ready_since: p.at,
                    state: EntryState::Ready,
                },
            );
            self.published_total += 1;
        }
        // Keep the buffer's capacity for the next swap.
        self.spare = pending;
    }

    /// Promotes due delayed messages, expires due leases, forgets expired dedup ids and samples
    /// the rate counters. Returns whether any message became ready.
    fn maintain(&mut self, now: Instant, config: &MemoryQueueConfig) -> bool {
        let mut woke = false;
        while let Some(&Reverse((until, seq))) = self.delayed.peek() {
            if until > now {
                break;
            }
            self.delayed.pop();
            if let Some(entry) = self.entries.get_mut(&seq)
                && entry.state == (EntryState::Delayed { until })
            {
                entry.state = EntryState::Ready;
                entry.ready_since = until;
                self.ready.push(entry.priority, seq);
                woke = true;
            }
        }
        while let Some(&record) = self.leases.front() {
            if record.deadline > now {
                break;
            }
            self.leases.pop_front();
            if self.is_current(&record) {
                self.in_flight -= 1;
                if let Some(entry) = self.entries.get(&record.seq)
                    && entry.deliveries >= config.max_deliveries
                {
                    self.dead_letter(
                        record.seq,
                        DeadLetterReason::MaxDeliveries {
                            max: config.max_deliveries,
                        },
                    );
                } else if let Some(entry) = self.entries.get_mut(&record.seq) {
                    entry.state = EntryState::Ready;
                    entry.ready_since = record.deadline;
                    self.ready.push(entry.priority, record.seq);
                    woke = true;
                }
            }
        }
        while let Some((at, _)) = self.dedup_expiry.front() {
            if *at > now {
                break;
            }
            if let Some((at, key)) = self.dedup_expiry.pop_front()
                && self.dedup.get(&key).is_some_and(|&(_, exp)| exp == at)
            {
                self.dedup.remove(&key);
            }
        }
        if now >= self.next_sample {
            self.rate_in.observe(now, self.published_total);
            self.rate_out.observe(now, self.completed_total);
            self.next_sample = now + config.rate_window / 60;
        }
        woke
    }

    fn is_current(&self, record: &LeaseRecord) -> bool {
        self.entries.get(&record.seq).is_some_and(|e| {
            matches!(e.state, EntryState::Leased { generation, deadline, .. }
                if generation == record.generation && deadline == record.deadline)
        })
    }

    /// Drops settled lease records at the front, and compacts when too many pile up behind.
    fn drop_stale_lease_records(&mut self) {
        while let Some(record) = self.leases.front() {
            if self.is_current(record) {
                break;
            }
            self.leases.pop_front();
        }
        if self.leases.len() > 2 * self.in_flight + 1024 {
            let mut leases = std::mem::take(&mut self.leases);
            leases.retain(|r| self.is_current(r));
            self.leases = leases;
        }
    }

    /// The next instant at which something becomes ready by itself (a delay or lease ends).
    fn next_due(&self) -> Option<Instant> {
        let delayed = self.delayed.peek().map(|Reverse((at, _))| *at);
        let lease = self.leases.front().map(|r| r.deadline);
        match (delayed, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn publish(
        &mut self,
        message: NewMessage,
        until: Option<Instant>,
        now: Instant,
        config: &MemoryQueueConfig,
    ) -> Result<MessageId, QueueError> {
        if let Some(key) = &message.dedup_id
            && let Some(&(seq, _)) = self.dedup.get(key.as_str())
        {
            return Ok(MessageId::from_seq(seq));
        }
        self.counters.reserve(config)?;
        let seq = self.counters.next_seq.fetch_add(1, Ordering::Relaxed);
        let state = match until {
            Some(until) => {
                self.delayed.push(Reverse((until, seq)));
                EntryState::Delayed { until }
            }
            None => {
                self.ready.push(message.priority, seq);
                EntryState::Ready
            }
        };
        if let Some(key) = message.dedup_id {
            let key: Arc<str> = key.into();
            let expires = now + config.dedup_window;
            self.dedup.insert(Arc::clone(&key), (seq, expires));
            self.dedup_expiry.push_back((expires, key));
            while self.dedup.len() > config.capacity {
                let Some((at, key)) = self.dedup_expiry.pop_front() else {
                    break;
                };
                if self.dedup.get(&key).is_some_and(|&(_, exp)| exp == at) {
                    self.dedup.remove(&key);
                }
            }
        }
        self.entries.insert(
            seq,
            Entry {
                payload: message.payload,
                headers: message.headers,
                priority: message.priority,
                deliveries: 0,
                ready_since: until.unwrap_or(now),
                state,
            },
        );
        self.published_total += 1;
        Ok(MessageId::from_seq(seq))
    }

    fn lease(
        &mut self,
        max: usize,
        now: Instant,
        owner: u64,
        config: &MemoryQueueConfig,
    ) -> Vec<Delivery> {
        let mut batch = Vec::with_capacity(max.min(self.ready.len));
        let deadline = now + config.visibility_timeout;
        while batch.len() < max {
            let Some(seq) = self.ready.pop() else { break };
            let Some(entry) = self.entries.get_mut(&seq) else {
                continue;
            };
            if entry.state != EntryState::Ready {
                continue;
            }
            entry.deliveries = entry.deliveries.saturating_add(1);
            let generation = self.next_generation;
            self.next_generation += 1;
            entry.state = EntryState::Leased {
                generation,
                deadline,
                owner,
            };
            self.leases.push_back(LeaseRecord {
                deadline,
                seq,
                generation,
            });
            self.in_flight += 1;
            let id = MessageId::from_seq(seq);
            batch.push(
                Delivery::new(
                    id.clone(),
                    entry.payload.clone(),
                    entry.deliveries,
                    Lease::new(id, seq, generation),
                )
                .with_headers(entry.headers.clone())
                .with_priority(entry.priority),
            );
        }
        batch
    }

    /// Settles one lease; returns whether a message became ready at once.
    fn settle(
        &mut self,
        lease: &Lease,
        op: Settle<'_>,
        until: Option<Instant>,
        now: Instant,
        config: &MemoryQueueConfig,
    ) -> Result<bool, QueueError> {
        let seq = lease.key();
        let stale = || QueueError::StaleLease {
            id: lease.id().to_string(),
        };
        if lease.id().as_seq() != Some(seq) {
            return Err(stale());
        }
        let entry = self.entries.get_mut(&seq).ok_or_else(stale)?;
        let EntryState::Leased {
            generation, owner, ..
        } = entry.state
        else {
            return Err(stale());
        };
        if generation != lease.generation() {
            return Err(stale());
        }
        match op {
            Settle::Ack => {
                self.entries.remove(&seq);
                self.counters.held.fetch_sub(1, Ordering::SeqCst);
                self.in_flight -= 1;
                self.completed_total += 1;
                Ok(false)
            }
            Settle::Progress => {
                let deadline = now + config.visibility_timeout;
                entry.state = EntryState::Leased {
                    generation,
                    deadline,
                    owner,
                };
                self.leases.push_back(LeaseRecord {
                    deadline,
                    seq,
                    generation,
                });
                Ok(false)
            }
            Settle::Nack(_) if entry.deliveries >= config.max_deliveries => {
                self.in_flight -= 1;
                self.dead_letter(
                    seq,
                    DeadLetterReason::MaxDeliveries {
                        max: config.max_deliveries,
                    },
                );
                Ok(false)
            }
            Settle::Nack(_) => {
                self.in_flight -= 1;
                match until {
                    Some(until) => {
                        entry.state = EntryState::Delayed { until };
                        self.delayed.push(Reverse((until, seq)));
                        Ok(false)
                    }
                    None => {
                        entry.state = EntryState::Ready;
                        entry.ready_since = now;
                        self.ready.push(entry.priority, seq);
                        Ok(true)
                    }
                }
            }
            Settle::Term(reason) => {
                self.in_flight -= 1;
                self.dead_letter(seq, DeadLetterReason::Terminated(reason.to_owned()));
                Ok(false)
            }
        }
    }

    /// Moves a message (no longer ready, delayed or leased) to the dead letters.
    fn dead_letter(&mut self, seq: u64, reason: DeadLetterReason) {
        if let Some(entry) = self.entries.remove(&seq) {
            self.completed_total += 1;
            self.dead.insert(
                seq,
                Dead {
                    payload: entry.payload,
                    headers: entry.headers,
                    priority: entry.priority,
                    deliveries: entry.deliveries,
                    reason,
                    at: SystemTime::now(),
                },
            );
        }
    }

    fn replay(&mut self, seq: u64, now: Instant) {
        if let Some(dead) = self.dead.remove(&seq) {
            self.ready.push(dead.priority, seq);
            self.entries.insert(
                seq,
                Entry {
                    payload: dead.payload,
                    headers: dead.headers,
                    priority: dead.priority,
                    deliveries: 0,
                    ready_since: now,
                    state: EntryState::Ready,
                },
            );
        }
    }

    /// Makes every lease held by `owner` ready again, oldest message first.
    fn return_leases(&mut self, owner: u64, now: Instant) {
        let mut seqs: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, EntryState::Leased { owner: o, .. } if o == owner))
            .map(|(&seq, _)| seq)
            .collect();
        seqs.sort_unstable();
        for seq in seqs {
            if let Some(entry) = self.entries.get_mut(&seq) {
                entry.state = EntryState::Ready;
                entry.ready_since = now;
                self.ready.push(entry.priority, seq);
                self.in_flight -= 1;
            }
        }
    }

    fn snapshot(&mut self, now: Instant) -> StatsSnapshot {
        let oldest = self
            .ready
            .heads()
            .filter_map(|seq| self.entries.get(&seq).map(|e| e.ready_since))
            .min();
        StatsSnapshot {
            backlog: self.ready.len as u64,
            delayed: self.delayed.len() as u64,
            in_flight: self.in_flight as u64,
            dead_lettered: self.dead.len() as u64,
            oldest_ready_age: oldest.map(|at| now.saturating_duration_since(at)),
            published_total: self.published_total,
            completed_total: self.completed_total,
            rate_in: self.rate_in.observe(now, self.published_total),
            rate_out: self.rate_out.observe(now, self.completed_total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VT: Duration = Duration::from_secs(30);

    fn queue(config: MemoryQueueConfig) -> MemoryQueue {
        MemoryQueue::new(config).unwrap()
    }

    fn default_queue() -> MemoryQueue {
        queue(MemoryQueueConfig::default())
    }

    fn msg(text: &'static str) -> NewMessage {
        NewMessage::new(Bytes::from_static(text.as_bytes()))
    }

    async fn lease_one(q: &MemoryQueue) -> Delivery {
        let mut batch = q.lease(1, Duration::ZERO).await.unwrap();
        assert_eq!(batch.len(), 1, "expected a ready message");
        batch.remove(0)
    }

    async fn stats(q: &MemoryQueue) -> StatsSnapshot {
        q.snapshot().await.unwrap()
    }

    async fn advance(d: Duration) {
        tokio::time::advance(d).await;
    }

    #[test]
    fn config_defaults_serde_and_validation() {
        let d = MemoryQueueConfig::default();
        assert_eq!(d.visibility_timeout, Duration::from_secs(30));
        assert_eq!(d.max_deliveries, 5);
        assert_eq!(d.dedup_window, Duration::from_secs(120));
        assert_eq!(d.capacity, 100_000);
        assert!(d.validate().is_ok());

        let c: MemoryQueueConfig = serde_json::from_str(
            r#"{"name":"jobs","visibility_timeout":"1m30s","dedup_window":"500ms"}"#,
        )
        .unwrap();
        assert_eq!(c.name, "jobs");
        assert_eq!(c.visibility_timeout, Duration::from_secs(90));
        assert_eq!(c.dedup_window, Duration::from_millis(500));
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""visibility_timeout":"90s""#), "{json}");
        assert_eq!(serde_json::from_str::<MemoryQueueConfig>(&json).unwrap(), c);

        let unknown =
            serde_json::from_str::<MemoryQueueConfig>(r#"{"visibility":"1s"}"#).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `visibility`"),
            "{unknown}"
        );
        let bad = serde_json::from_str::<MemoryQueueConfig>(r#"{"visibility_timeout":"30"}"#)
            .unwrap_err();
        assert!(bad.to_string().contains("missing unit"), "{bad}");

        for (config, field) in [
            (
                MemoryQueueConfig {
                    visibility_timeout: Duration::ZERO,
                    ..d.clone()
                },
                "visibility_timeout",
            ),
            (
                MemoryQueueConfig {
                    max_deliveries: 0,
                    ..d.clone()
                },
                "max_deliveries",
            ),
            (
                MemoryQueueConfig {
                    capacity: 0,
                    ..d.clone()
                },
                "capacity",
            ),
            (
                MemoryQueueConfig {
                    rate_window: Duration::ZERO,
                    ..d.clone()
                },
                "rate_window",
            ),
            (
                MemoryQueueConfig {
                    name: String::new(),
                    ..d.clone()
                },
                "name",
            ),
            (
                MemoryQueueConfig {
                    dedup_window: Duration::from_secs(400 * 86_400),
                    ..d.clone()
                },
                "dedup_window",
            ),
        ] {
            match MemoryQueue::new(config) {
                Err(QueueError::InvalidConfig { field: f, reason }) => {
                    assert_eq!(f, field, "{reason}");
                }
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
        let err = MemoryQueue::new(MemoryQueueConfig {
            max_deliveries: 0,
            ..d
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid queue config: max_deliveries: must be at least 1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn priorities_first_then_fifo() {
        let q = default_queue();
        for (text, p) in [
            ("a1", 0),
            ("b1", 7),
            ("c1", 255),
            ("b2", 7),
            ("a2", 0),
            ("d1", 64),
        ] {
            q.publish(msg(text).priority(p)).await.unwrap();
        }
        let batch = q.lease(10, Duration::ZERO).await.unwrap();
        let order: Vec<_> = batch.iter().map(|d| d.payload.clone()).collect();
        assert_eq!(order, ["c1", "d1", "b1", "b2", "a1", "a2"]);
        assert_eq!(batch[0].priority, 255);
        // Batches respect `max`, and a nacked message re-enters at its priority.
        let top = &batch[0];
        q.nack(&top.lease, Duration::ZERO).await.unwrap();
        q.publish(msg("b3").priority(7)).await.unwrap();
        let next = q.lease(1, Duration::ZERO).await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].payload, "c1");
        assert_eq!(next[0].delivery_count, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_publish_becomes_ready_at_its_time() {
        let q = default_queue();
        q.publish(msg("later").delay(Duration::from_secs(10)))
            .await
            .unwrap();
        q.publish(msg("zero").delay(Duration::ZERO)).await.unwrap();
        assert_eq!(lease_one(&q).await.payload, "zero");
        assert!(q.lease(1, Duration::ZERO).await.unwrap().is_empty());
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.delayed), (0, 1));
        advance(Duration::from_millis(9_999)).await;
        assert!(q.lease(1, Duration::ZERO).await.unwrap().is_empty());
        advance(Duration::from_millis(1)).await;
        assert_eq!(lease_one(&q).await.payload, "later");
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_redelivers_with_count_then_dead_letters() {
        let q = queue(MemoryQueueConfig {
            max_deliveries: 2,
            ..Default::default()
        });
        let id = q.publish(msg("job").header("k", "v")).await.unwrap();
        let first = lease_one(&q).await;
        assert_eq!((first.id.clone(), first.delivery_count), (id.clone(), 1));
        advance(VT - Duration::from_millis(1)).await;
        assert!(
            q.lease(1, Duration::ZERO).await.unwrap().is_empty(),
            "not yet expired"
        );
        advance(Duration::from_millis(1)).await;
        let second = lease_one(&q).await;
        assert_eq!((second.id.clone(), second.delivery_count), (id.clone(), 2));
        assert_eq!(second.headers.get("k"), Some("v"));
        advance(VT).await;
        assert!(
            q.lease(1, Duration::ZERO).await.unwrap().is_empty(),
            "dead-lettered, not redelivered"
        );
        let dead = q.list(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, id);
        assert_eq!(dead[0].delivery_count, 2);
        assert_eq!(dead[0].reason, DeadLetterReason::MaxDeliveries { max: 2 });
        assert_eq!(dead[0].reason.to_string(), "max deliveries (2) reached");
        assert_eq!(dead[0].headers.get("k"), Some("v"));
        assert!(dead[0].dead_lettered_at.is_some());
        assert!(q.ack(&second.lease).await.unwrap_err().is_stale_lease());
    }

    #[tokio::test(start_paused = true)]
    async fn in_progress_extends_the_lease() {
        let q = default_queue();
        let other = q.handle();
        q.publish(msg("long")).await.unwrap();
        let d = lease_one(&q).await;
        for _ in 0..5 {
            advance(VT - Duration::from_secs(1)).await;
            q.in_progress(&d.lease).await.unwrap();
            assert!(other.lease(1, Duration::ZERO).await.unwrap().is_empty());
        }
        // 145 s after leasing, well past one visibility timeout, the lease still holds.
        let s = stats(&q).await;
        assert_eq!((s.in_flight, s.backlog), (1, 0));
        // It expires one full timeout after the last extension.
        advance(VT).await;
        let again = lease_one(&other).await;
        assert_eq!(again.delivery_count, 2);
        assert!(q.in_progress(&d.lease).await.unwrap_err().is_stale_lease());
        other.ack(&again.lease).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn nack_with_delay_and_at_max_deliveries() {
        let q = queue(MemoryQueueConfig {
            max_deliveries: 3,
            ..Default::default()
        });
        let id = q.publish(msg("flaky")).await.unwrap();
        let d1 = lease_one(&q).await;
        q.nack(&d1.lease, Duration::from_secs(5)).await.unwrap();
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.delayed, s.in_flight), (0, 1, 0));
        advance(Duration::from_millis(4_999)).await;
        assert!(q.lease(1, Duration::ZERO).await.unwrap().is_empty());
        advance(Duration::from_millis(1)).await;
        let d2 = lease_one(&q).await;
        assert_eq!(d2.delivery_count, 2);
        q.nack(&d2.lease, Duration::ZERO).await.unwrap();
        let d3 = lease_one(&q).await;
        assert_eq!(d3.delivery_count, 3);
        // The third delivery was the last: a nack dead-letters it, whatever the delay.
        q.nack(&d3.lease, Duration::from_secs(1)).await.unwrap();
        let s = stats(&q).await;
        assert_eq!(
            (s.backlog, s.delayed, s.in_flight, s.dead_lettered),
            (0, 0, 0, 1)
        );
        assert_eq!(q.list(1).await.unwrap()[0].id, id);
        assert!(
            q.nack(&d3.lease, Duration::ZERO)
                .await
                .unwrap_err()
                .is_stale_lease()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_and_forged_leases_are_rejected() {
        let q = default_queue();
        let b = q.handle();
        let id = q.publish(msg("x")).await.unwrap();
        let old = lease_one(&q).await;
        advance(VT).await;
        let new = lease_one(&b).await;
        assert_ne!(old.lease, new.lease);
        for result in [
            q.ack(&old.lease).await,
            q.nack(&old.lease, Duration::ZERO).await,
            q.in_progress(&old.lease).await,
            q.term(&old.lease, "late").await,
        ] {
            let err = result.unwrap_err();
            assert!(err.is_stale_lease(), "{err}");
            assert_eq!(
                err.to_string(),
                format!("stale lease for message {id}: it expired, was settled or was returned")
            );
        }
        // A lease whose id does not match its key, or from another queue.
        let forged = Lease::new(
            MessageId::from_seq(999),
            new.lease.key(),
            new.lease.generation(),
        );
        assert!(b.ack(&forged).await.unwrap_err().is_stale_lease());
        let text = Lease::new(MessageId::from_text("1-0"), 1, new.lease.generation());
        assert!(b.ack(&text).await.unwrap_err().is_stale_lease());
        let elsewhere = default_queue();
        assert!(
            elsewhere
                .ack(&new.lease)
                .await
                .unwrap_err()
                .is_stale_lease()
        );
        // The current holder settles once; a second ack is stale.
        b.ack(&new.lease).await.unwrap();
        assert!(b.ack(&new.lease).await.unwrap_err().is_stale_lease());
        // An ack after expiry but before anyone re-leased is also stale: the lease is gone.
        q.publish(msg("y")).await.unwrap();
        let y = lease_one(&q).await;
        advance(VT).await;
        assert!(q.ack(&y.lease).await.unwrap_err().is_stale_lease());
        assert_eq!(stats(&q).await.backlog, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_within_the_window_only() {
        let q = queue(MemoryQueueConfig {
            dedup_window: Duration::from_secs(120),
            ..Default::default()
        });
        let a = q.publish(msg("a").dedup_id("job-1")).await.unwrap();
        let dup = q.publish(msg("a-again").dedup_id("job-1")).await.unwrap();
        assert_eq!(a, dup);
        let d = lease_one(&q).await;
        q.ack(&d.lease).await.unwrap();
        // Still a duplicate after the original was acked, within the window.
        advance(Duration::from_secs(119)).await;
        assert_eq!(q.publish(msg("a3").dedup_id("job-1")).await.unwrap(), a);
        assert!(q.lease(1, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(stats(&q).await.published_total, 1);
        advance(Duration::from_secs(1)).await;
        let fresh = q.publish(msg("a4").dedup_id("job-1")).await.unwrap();
        assert_ne!(fresh, a);
        assert_eq!(lease_one(&q).await.payload, "a4");
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_memory_is_bounded_by_capacity() {
        let q = queue(MemoryQueueConfig {
            capacity: 3,
            ..Default::default()
        });
        for i in 0..10 {
            let id = q.publish(msg("m").dedup_id(format!("k{i}"))).await.unwrap();
            let d = lease_one(&q).await;
            assert_eq!(d.id, id);
            q.ack(&d.lease).await.unwrap();
        }
        let state = q.lock();
        assert!(state.dedup.len() <= 3, "{}", state.dedup.len());
        assert!(state.dedup.contains_key("k9"), "the newest ids are kept");
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_counts_dead_letters_and_purge_frees_it() {
        let q = queue(MemoryQueueConfig {
            capacity: 2,
            ..Default::default()
        });
        q.publish(msg("1")).await.unwrap();
        q.publish(msg("2")).await.unwrap();
        let err = q.publish(msg("3")).await.unwrap_err();
        assert!(
            matches!(err, QueueError::QueueFull { capacity: 2, .. }),
            "{err}"
        );
        assert!(err.is_retryable());
        let d = lease_one(&q).await;
        q.term(&d.lease, "bad").await.unwrap();
        assert!(
            q.publish(msg("3")).await.is_err(),
            "dead letters still count"
        );
        assert_eq!(q.purge().await.unwrap(), 1);
        q.publish(msg("3")).await.unwrap();
        // publish_many fills up to the bound and reports the rest, one result per message.
        let d = lease_one(&q).await;
        q.ack(&d.lease).await.unwrap();
        let results = q.publish_many(vec![msg("a"), msg("b"), msg("c")]).await;
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(QueueError::QueueFull { .. })));
        assert!(matches!(results[2], Err(QueueError::QueueFull { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn stats_match_every_step() {
        let q = queue(MemoryQueueConfig {
            rate_window: Duration::from_secs(60),
            ..Default::default()
        });
        let s = stats(&q).await;
        assert_eq!(
            s,
            StatsSnapshot {
                rate_in: None,
                rate_out: None,
                ..StatsSnapshot::default()
            }
        );
        for text in ["a", "b", "c", "d"] {
            q.publish(msg(text)).await.unwrap();
        }
        q.publish(msg("later").delay(Duration::from_secs(100)))
            .await
            .unwrap();
        advance(Duration::from_secs(10)).await;
        let s = stats(&q).await;
        assert_eq!(
            (s.backlog, s.delayed, s.in_flight, s.dead_lettered),
            (4, 1, 0, 0)
        );
        assert_eq!(s.oldest_ready_age, Some(Duration::from_secs(10)));
        assert_eq!(s.published_total, 5);
        assert_eq!(
            s.rate_in,
            Some(0.5),
            "5 published over the 10 s since the first sample"
        );
        let batch = q.lease(3, Duration::ZERO).await.unwrap();
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.in_flight), (1, 3));
        assert_eq!(s.oldest_ready_age, Some(Duration::from_secs(10)));
        q.ack(&batch[0].lease).await.unwrap();
        q.term(&batch[1].lease, "no").await.unwrap();
        q.nack(&batch[2].lease, Duration::ZERO).await.unwrap();
        let s = stats(&q).await;
        assert_eq!(
            (s.backlog, s.in_flight, s.dead_lettered, s.completed_total),
            (2, 0, 1, 2)
        );
        assert_eq!(
            s.oldest_ready_age,
            Some(Duration::from_secs(10)),
            "d is still the oldest"
        );
        let rest = q.lease(10, Duration::ZERO).await.unwrap();
        assert_eq!(rest.len(), 2);
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.in_flight, s.oldest_ready_age), (0, 2, None));
        for d in &rest {
            q.ack(&d.lease).await.unwrap();
        }
        advance(Duration::from_secs(10)).await;
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.in_flight, s.delayed), (0, 0, 1));
        assert_eq!(s.completed_total, 4);
        assert_eq!(s.rate_out, Some(0.2), "4 completed over 20 s");
        // Replaying moves the dead letter back to the backlog.
        assert_eq!(q.replay_all().await.unwrap(), 1);
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.dead_lettered), (1, 0));
        // The delayed message becomes backlog when due; its age counts from then.
        advance(Duration::from_secs(85)).await;
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.delayed), (2, 0));
        assert_eq!(
            s.oldest_ready_age,
            Some(Duration::from_secs(85)),
            "the replayed one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_returns_only_this_handles_leases() {
        let q = default_queue();
        let worker = q.handle();
        for text in ["1", "2", "3", "4"] {
            q.publish(msg(text)).await.unwrap();
        }
        let mine = worker.lease(2, Duration::ZERO).await.unwrap();
        let theirs = q.lease(1, Duration::ZERO).await.unwrap();
        worker.close().await.unwrap();
        worker.close().await.unwrap();
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.in_flight), (3, 1));
        assert!(matches!(
            worker.lease(1, Duration::ZERO).await,
            Err(QueueError::Closed { .. })
        ));
        assert!(matches!(
            worker.publish(msg("x")).await,
            Err(QueueError::Closed { .. })
        ));
        assert!(matches!(
            worker.ack(&mine[0].lease).await,
            Err(QueueError::Closed { .. })
        ));
        assert!(worker.snapshot().await.is_err());
        assert!(worker.list(1).await.is_err());
        assert_eq!(
            worker
                .ack_many(&[mine[0].lease.clone(), mine[1].lease.clone()])
                .await
                .len(),
            2
        );
        assert_eq!(worker.publish_many(vec![msg("a"), msg("b")]).await.len(), 2);
        assert!(worker.ack_many(&[]).await.is_empty());
        // The returned leases are stale; the other handle's lease is untouched.
        assert!(q.ack(&mine[0].lease).await.unwrap_err().is_stale_lease());
        q.ack(&theirs[0].lease).await.unwrap();
        let again = q.lease(10, Duration::ZERO).await.unwrap();
        let payloads: Vec<_> = again
            .iter()
            .map(|d| (d.payload.clone(), d.delivery_count))
            .collect();
        assert_eq!(
            payloads,
            [("4".into(), 1), ("1".into(), 2), ("2".into(), 2)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closing_wakes_a_waiting_lease() {
        let q = default_queue();
        let waiting = q.clone();
        let task = tokio::spawn(async move { waiting.lease(1, Duration::from_secs(3600)).await });
        tokio::task::yield_now().await;
        q.close().await.unwrap();
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(QueueError::Closed { .. })),
            "{result:?}"
        );
        assert_eq!(q.shared.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_waits_for_a_publish() {
        let q = default_queue();
        let consumer = q.handle();
        let start = Instant::now();
        let task = tokio::spawn(async move { consumer.lease(5, Duration::from_secs(60)).await });
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        q.publish(msg("wake")).await.unwrap();
        let batch = task.await.unwrap().unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].payload, "wake");
        assert!(start.elapsed() < Duration::from_secs(60));
        assert_eq!(q.shared.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_wait_ends_empty_at_its_deadline() {
        let q = default_queue();
        let start = Instant::now();
        let batch = q.lease(1, Duration::from_secs(5)).await.unwrap();
        assert!(batch.is_empty());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // A cancelled wait leaves no waiter behind.
        let cancelled =
            tokio::time::timeout(Duration::from_secs(1), q.lease(1, Duration::from_secs(60))).await;
        assert!(cancelled.is_err());
        assert_eq!(q.shared.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_lease_wakes_for_due_delays_and_expiries() {
        let q = default_queue();
        let start = Instant::now();
        q.publish(msg("delayed").delay(Duration::from_secs(3)))
            .await
            .unwrap();
        let batch = q.lease(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(batch[0].payload, "delayed");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // Nobody acks: a waiting consumer gets it when the lease expires.
        let other = q.handle();
        let again = other.lease(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(again[0].delivery_count, 2);
        assert_eq!(start.elapsed(), Duration::from_secs(3) + VT);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_one_all_and_not_found() {
        let q = default_queue();
        for text in ["a", "b", "c"] {
            q.publish(msg(text).priority(3).header("h", text))
                .await
                .unwrap();
        }
        let batch = q.lease(3, Duration::ZERO).await.unwrap();
        for d in &batch {
            q.term(&d.lease, "bad").await.unwrap();
        }
        let dead = q.list(2).await.unwrap();
        assert_eq!(dead.len(), 2, "limit respected");
        assert_eq!(dead[0].reason, DeadLetterReason::Terminated("bad".into()));
        assert_eq!(dead[0].reason.to_string(), "terminated: bad");
        let replayed = q.replay(&dead[0].id).await.unwrap();
        assert_eq!(replayed, dead[0].id);
        let d = lease_one(&q).await;
        assert_eq!(
            (d.id.clone(), d.delivery_count, d.priority),
            (replayed.clone(), 1, 3)
        );
        assert_eq!(d.headers.get("h"), Some("a"));
        assert!(matches!(
            q.replay(&replayed).await,
            Err(QueueError::NotFound { .. })
        ));
        assert!(matches!(
            q.replay(&MessageId::from_text("1-0")).await,
            Err(QueueError::NotFound { .. })
        ));
        assert_eq!(q.replay_all().await.unwrap(), 2);
        assert_eq!(q.replay_all().await.unwrap(), 0);
        assert_eq!(q.purge().await.unwrap(), 0);
        assert_eq!(q.lease(10, Duration::ZERO).await.unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_arguments_give_clear_errors_and_lose_nothing() {
        let q = default_queue();
        let err = q.lease(0, Duration::ZERO).await.unwrap_err();
        assert_eq!(err.to_string(), "invalid argument max: must be at least 1");
        let err = q.publish(msg("x").delay(Duration::MAX)).await.unwrap_err();
        assert!(
            matches!(err, QueueError::InvalidArgument { name: "delay", .. }),
            "{err}"
        );
        q.publish(msg("y")).await.unwrap();
        let d = lease_one(&q).await;
        let err = q.nack(&d.lease, Duration::MAX).await.unwrap_err();
        assert!(
            matches!(err, QueueError::InvalidArgument { name: "delay", .. }),
            "{err}"
        );
        // The lease survived the rejected nack.
        q.ack(&d.lease).await.unwrap();
        // A huge wait is "wait forever", not an overflow panic.
        q.publish(msg("z")).await.unwrap();
        assert_eq!(q.lease(1, Duration::MAX).await.unwrap().len(), 1);
        assert_eq!(stats(&q).await.published_total, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_records_stay_bounded_with_a_long_held_lease() {
        let q = default_queue();
        q.publish(msg("held")).await.unwrap();
        let held = lease_one(&q).await;
        for _ in 0..10_000 {
            q.publish(msg("m")).await.unwrap();
            let d = lease_one(&q).await;
            q.ack(&d.lease).await.unwrap();
        }
        let records = q.lock().leases.len();
        assert!(
            records <= 2 + 1024 + 1,
            "{records} lease records for 1 lease in flight"
        );
        q.ack(&held.lease).await.unwrap();
        assert!(q.lock().leases.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn batch_ack_settles_each_and_reports_each() {
        let q = default_queue();
        let ids: Vec<_> = q
            .publish_many(vec![msg("1"), msg("2"), msg("3")])
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ids.len(), 3);
        let batch = q.lease(3, Duration::ZERO).await.unwrap();
        q.ack(&batch[1].lease).await.unwrap();
        let leases: Vec<_> = batch.iter().map(|d| d.lease.clone()).collect();
        let results = q.ack_many(&leases).await;
        assert!(results[0].is_ok());
        assert!(results[1].as_ref().unwrap_err().is_stale_lease());
        assert!(results[2].is_ok());
        let s = stats(&q).await;
        assert_eq!((s.in_flight, s.completed_total), (0, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_across_the_inbox_and_the_locked_path() {
        let q = default_queue();
        // Plain publishes take the inbox; dedup and delay go through the state lock.
        q.publish(msg("a")).await.unwrap();
        q.publish(msg("b").dedup_id("b")).await.unwrap();
        q.publish(msg("c")).await.unwrap();
        q.publish(msg("d").delay(Duration::ZERO)).await.unwrap();
        q.publish_many(vec![msg("e")]).await.pop().unwrap().unwrap();
        q.publish(msg("f")).await.unwrap();
        let order: Vec<_> = q
            .lease(10, Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.payload)
            .collect();
        assert_eq!(order, ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(stats(&q).await.published_total, 6);
        assert_eq!(q.shared.counters.held.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_producers_respect_capacity_exactly() {
        let q = queue(MemoryQueueConfig {
            capacity: 1000,
            ..Default::default()
        });
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let q = q.handle();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..500 {
                    match q.publish(msg("m")).await {
                        Ok(_) => ok += 1,
                        Err(QueueError::QueueFull { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                ok
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            accepted += t.await.unwrap();
        }
        assert_eq!(accepted, 1000);
        let s = stats(&q).await;
        assert_eq!((s.backlog, s.published_total), (1000, 1000));
        // Acking frees capacity again.
        let batch = q.lease(10, Duration::ZERO).await.unwrap();
        for d in &batch {
            q.ack(&d.lease).await.unwrap();
        }
        for _ in 0..10 {
            q.publish(msg("again")).await.unwrap();
        }
        assert!(q.publish(msg("over")).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn usable_as_dyn_queue_with_capabilities() {
        let q: Arc<dyn Queue> = Arc::new(default_queue());
        let caps = q.capabilities();
        assert_eq!(caps.max_priority, 255);
        assert!(caps.delayed_publish && caps.nack_delay && caps.dedup);
        assert!(q.stats().is_some() && q.dead_letters().is_some());
        assert!(format!("{q:?}").contains("MemoryQueue"));
    }
}
