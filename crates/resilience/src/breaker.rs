//! A circuit breaker: stop calling a dependency that keeps failing, probe it now and then, resume
//! when it recovers.
//!
//! **Closed**: calls flow and their outcomes go into a sliding window — the last N calls
//! ([`SlidingWindow::Count`]) or the last N seconds in per-second buckets
//! ([`SlidingWindow::Time`]). Once the window holds at least `minimum_calls` outcomes and the
//! failure rate or the slow-call rate reaches its threshold, the breaker opens.
//!
//! **Open**: calls are rejected at once with the remaining open time ([`BreakerOpen`]). After the
//! open duration, the next [`CircuitBreaker::try_acquire`] moves it to half-open (lazily: there is
//! no background task). Each re-open from half-open multiplies the open duration by
//! `open_duration_multiplier` up to `max_open_duration`; a successful close resets it.
//!
//! **Half-open**: exactly `half_open_probes` calls are admitted, concurrent callers beyond them are
//! rejected. A probe whose permit is dropped without a result (cancelled) frees its slot. Once all
//! probes have reported, the breaker closes if both rates are under their thresholds, and
//! re-opens otherwise.
//!
//! **Which failures count** is the classifier's call ([`Classifier::counts_as_failure`]): a failure
//! that does not count — a permanent error such as a 400 caused by bad input — is recorded as a
//! *success for health* (the dependency answered), so it never opens the breaker and lets a probe
//! succeed; it still counts as slow if it took too long.
//!
//! **Late results are ignored**: a permit remembers the breaker's generation, which changes on
//! every transition; a result recorded after the state changed since the permit was handed out
//! (say, a slow call started before the breaker opened) is dropped, so it cannot close, open or
//! skew the new state.
//!
//! The closed-state fast path reads one atomic to acquire and takes a short uncontended mutex to
//! record. Time is read from a [`Clock`]: tokio's by default, so tests use `tokio::time::pause()`;
//! [`Clock::tsc`] makes slow-call timing and time windows cheaper where time is not paused.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use crate::classify::{Classifier, Retryable, Verdict};
use crate::event::{BreakerState, Event, Observers};
use crate::rate_limit::{Clock, TimeBase, nanos, read_observers, set_observers};

/// How the closed state remembers recent outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N calls (a ring buffer).
    Count(u32),
    /// The calls of the last N whole seconds (per-second buckets; the current second counts as one).
    Time(Duration),
}

/// Slow-call detection: calls taking at least `duration` are slow; the breaker opens when the
/// share of slow calls reaches `rate_threshold` percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowCallConfig {
    /// A call taking at least this long is slow.
    pub duration: Duration,
    /// Percentage of slow calls (0 < x ≤ 100) at which the breaker opens.
    pub rate_threshold: f64,
}

/// A circuit breaker's settings, validated by [`CircuitBreaker::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// The closed state's sliding window.
    pub window: SlidingWindow,
    /// Percentage of failed calls (0 < x ≤ 100) at which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Optional slow-call detection.
    pub slow_call: Option<SlowCallConfig>,
    /// Outcomes the window must hold before rates are judged.
    pub minimum_calls: u32,
    /// How long the breaker stays open the first time.
    pub open_duration: Duration,
    /// Factor (≥ 1) applied to the open duration on each re-open from half-open.
    pub open_duration_multiplier: f64,
    /// The longest open duration growth may reach.
    pub max_open_duration: Duration,
    /// Probe calls admitted in half-open; their outcomes decide close or re-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    /// Last 100 calls, opens at 50 % failures after 20 calls, open 30 s (doubling up to 5 min),
    /// 3 probes, no slow-call detection.
    fn default() -> Self {
        BreakerConfig {
            window: SlidingWindow::Count(100),
            failure_rate_threshold: 50.0,
            slow_call: None,
            minimum_calls: 20,
            open_duration: Duration::from_secs(30),
            open_duration_multiplier: 2.0,
            max_open_duration: Duration::from_secs(300),
            half_open_probes: 3,
        }
    }
}

/// A [`BreakerConfig`] value is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerConfigError {
    /// The named field has a bad value.
    #[error("invalid circuit breaker config: {field} ({value}) {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> BreakerConfigError {
    BreakerConfigError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

const MAX_WINDOW_SECS: u64 = 3600;
const MAX_COUNT_WINDOW: u32 = 1 << 20;

impl BreakerConfig {
    fn validate(&self) -> Result<(), BreakerConfigError> {
        let pct = |field, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 100.0 {
                Ok(())
            } else {
                Err(invalid(field, v, "must be a percentage in (0, 100]"))
            }
        };
        match self.window {
            SlidingWindow::Count(0) => {
                return Err(invalid("window", "0 calls", "must be at least 1"));
            }
            SlidingWindow::Count(n) if n > MAX_COUNT_WINDOW => {
                return Err(invalid(
                    "window",
                    format!("{n} calls"),
                    format!("must be at most {MAX_COUNT_WINDOW}"),
                ));
            }
            SlidingWindow::Count(n) if self.minimum_calls > n => {
                return Err(invalid(
                    "minimum_calls",
                    self.minimum_calls,
                    format!(
                        "exceeds the count window ({n} calls), so the breaker could never open"
                    ),
                ));
            }
            SlidingWindow::Time(d) => {
                if d.subsec_nanos() != 0 || d.as_secs() == 0 || d.as_secs() > MAX_WINDOW_SECS {
                    return Err(invalid(
                        "window",
                        format!("{d:?}"),
                        format!("must be a whole number of seconds from 1s to {MAX_WINDOW_SECS}s"),
                    ));
                }
            }
            SlidingWindow::Count(_) => {}
        }
        pct("failure_rate_threshold", self.failure_rate_threshold)?;
        if let Some(slow) = &self.slow_call {
            pct("slow_call.rate_threshold", slow.rate_threshold)?;
            if slow.duration.is_zero() {
                return Err(invalid("slow_call.duration", "0s", "must be positive"));
            }
        }
        if self.minimum_calls == 0 {
            return Err(invalid("minimum_calls", 0, "must be at least 1"));
        }
        if self.open_duration.is_zero() {
            return Err(invalid("open_duration", "0s", "must be positive"));
        }
        if !(self.open_duration_multiplier.is_finite() && self.open_duration_multiplier >= 1.0) {
            return Err(invalid(
                "open_duration_multiplier",
                self.open_duration_multiplier,
                "must be a finite number >= 1",
            ));
        }
        if self.max_open_duration < self.open_duration {
            return Err(invalid(
                "max_open_duration",
                format!("{:?}", self.max_open_duration),
                format!("is less than open_duration ({:?})", self.open_duration),
            ));
        }
        if self.max_open_duration > Duration::from_secs(100 * 365 * 24 * 3600) {
            return Err(invalid(
                "max_open_duration",
                format!("{:?}", self.max_open_duration),
                "is too long",
            ));
        }
        if self.half_open_probes == 0 {
            return Err(invalid("half_open_probes", 0, "must be at least 1"));
        }
        Ok(())
    }
}

/// A call was rejected because the breaker is open (or half-open with all probe slots taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state that rejected the call.
    pub state: BreakerState,
    /// How long the breaker stays open, when known (not for forced-open or half-open).
    pub remaining: Option<Duration>,
}

impl std::fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "circuit breaker {} is {}",
            self.name,
            self.state.as_str()
        )?;
        match self.remaining {
            Some(remaining) => write!(f, " (retry in {remaining:?})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for BreakerOpen {}

impl Retryable for BreakerOpen {
    /// Worth retrying once the breaker may have recovered.
    fn is_retryable(&self) -> bool {
        true
    }

    fn retry_after(&self) -> Option<Duration> {
        self.remaining
    }
}

/// The error of [`CircuitBreaker::call`]: the breaker rejected the call, or the call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker rejected the call without running it.
    #[error(transparent)]
    Open(BreakerOpen),
    /// The call ran and failed.
    #[error(transparent)]
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The call's own error, if it ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            BreakerError::Open(_) => None,
        }
    }
}

impl<E: Retryable> Retryable for BreakerError<E> {
    fn is_retryable(&self) -> bool {
        match self {
            BreakerError::Open(open) => open.is_retryable(),
            BreakerError::Inner(e) => e.is_retryable(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            BreakerError::Open(open) => open.retry_after(),
            BreakerError::Inner(e) => e.retry_after(),
        }
    }
}

/// A point-in-time view of a breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerMetrics {
    /// The current state.
    pub state: BreakerState,
    /// Outcomes in the sliding window (frozen while open or half-open: it shows what opened it).
    pub calls: u64,
    /// Failed calls in the window.
    pub failed_calls: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// `failed_calls / calls` in percent (0 when empty).
    pub failure_rate: f64,
    /// `slow_calls / calls` in percent (0 when empty).
    pub slow_call_rate: f64,
    /// Calls rejected since the breaker was built.
    pub rejected_calls: u64,
    /// Half-open probe slots taken (in flight or reported).
    pub probes_admitted: u32,
    /// Time until an open breaker may half-open, when open.
    pub open_remaining: Option<Duration>,
    /// The duration the next open will last.
    pub open_duration: Duration,
}

// State word: generation << 3 | state code.
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;
const CODE_BITS: u64 = 3;
const CODE_MASK: u64 = (1 << CODE_BITS) - 1;

#[inline]
fn code(word: u64) -> u64 {
    word & CODE_MASK
}

fn state_of(word: u64) -> BreakerState {
    match code(word) {
        CLOSED => BreakerState::Closed,
        OPEN => BreakerState::Open,
        HALF_OPEN => BreakerState::HalfOpen,
        FORCED_OPEN => BreakerState::ForcedOpen,
        _ => BreakerState::ForcedClosed,
    }
}

const OUTCOME_FAILED: u8 = 1;
const OUTCOME_SLOW: u8 = 2;

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    calls: u64,
    failed: u64,
    slow: u64,
}

impl Counts {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failed += u64::from(failed);
        self.slow += u64::from(slow);
    }

    fn sub(&mut self, other: &Counts) {
        self.calls -= other.calls;
        self.failed -= other.failed;
        self.slow -= other.slow;
    }

    fn rate(part: u64, calls: u64) -> f64 {
        if calls == 0 {
            0.0
        } else {
            part as f64 * 100.0 / calls as f64
        }
    }

    fn failure_rate(&self) -> f64 {
        Counts::rate(self.failed, self.calls)
    }

    fn slow_rate(&self) -> f64 {
        Counts::rate(self.slow, self.calls)
    }
}

#[derive(Debug)]
enum Window {
    Count {
        ring: Box<[u8]>,
        next: usize,
        len: usize,
        totals: Counts,
    },
    Time {
        buckets: Box<[(u64, Counts)]>,
        /// The latest second recorded or rolled to.
        last_sec: u64,
        totals: Counts,
    },
}

impl Window {
    fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count(n) => Window::Count {
                ring: vec![0; n as usize].into_boxed_slice(),
                next: 0,
                len: 0,
                totals: Counts::default(),
            },
            SlidingWindow::Time(d) => Window::Time {
                buckets: vec![(0, Counts::default()); d.as_secs() as usize].into_boxed_slice(),
                last_sec: 0,
                totals: Counts::default(),
            },
        }
    }

    fn needs_clock(&self) -> bool {
        matches!(self, Window::Time { .. })
    }

    fn clear(&mut self) {
        match self {
            Window::Count {
                ring,
                next,
                len,
                totals,
            } => {
                ring.fill(0);
                *next = 0;
                *len = 0;
                *totals = Counts::default();
            }
            Window::Time {
                buckets, totals, ..
            } => {
                buckets.fill((0, Counts::default()));
                *totals = Counts::default();
            }
        }
    }

    /// Forgets the buckets older than the window ending at `sec` (time windows only).
    fn roll(&mut self, sec: u64) {
        if let Window::Time {
            buckets,
            last_sec,
            totals,
        } = self
            && sec > *last_sec
        {
            let size = buckets.len() as u64;
            let from = (*last_sec + 1).max(sec.saturating_sub(size - 1));
            for s in from..=sec {
                let bucket = &mut buckets[(s % size) as usize];
                totals.sub(&bucket.1);
                *bucket = (s, Counts::default());
            }
            *last_sec = sec;
        }
    }

    #[inline]
    fn record(&mut self, now_ns: u64, failed: bool, slow: bool) {
        match self {
            Window::Count {
                ring,
                next,
                len,
                totals,
            } => {
                if *len == ring.len() {
                    let old = ring[*next];
                    totals.calls -= 1;
                    totals.failed -= u64::from(old & OUTCOME_FAILED != 0);
                    totals.slow -= u64::from(old & OUTCOME_SLOW != 0);
                } else {
                    *len += 1;
                }
                ring[*next] = (u8::from(failed) * OUTCOME_FAILED) | (u8::from(slow) * OUTCOME_SLOW);
                *next += 1;
                if *next == ring.len() {
                    *next = 0;
                }
                totals.add(failed, slow);
            }
            Window::Time { .. } => {
                let sec = now_ns / 1_000_000_000;
                self.roll(sec);
                if let Window::Time {
                    buckets, totals, ..
                } = self
                {
                    let size = buckets.len() as u64;
                    buckets[(sec % size) as usize].1.add(failed, slow);
                    totals.add(failed, slow);
                }
            }
        }
    }

    fn totals(&self) -> Counts {
        match self {
            Window::Count { totals, .. } | Window::Time { totals, .. } => *totals,
        }
    }
}

#[derive(Debug)]
struct Core {
    window: Window,
    probes_admitted: u32,
    probe_results: Counts,
    /// The duration of the next open.
    open_duration: Duration,
}

#[derive(Debug)]
struct Settings {
    failure_rate_threshold: f64,
    slow: Option<SlowCallConfig>,
    minimum_calls: u64,
    open_duration: Duration,
    multiplier: f64,
    max_open_duration: Duration,
    probes: u32,
}

impl Settings {
    fn trips(&self, c: &Counts) -> bool {
        c.failure_rate() >= self.failure_rate_threshold
            || self.slow.is_some_and(|s| c.slow_rate() >= s.rate_threshold)
    }
}

#[derive(Debug)]
struct Inner {
    state: AtomicU64,
    /// While open: when it may half-open, nanoseconds since `origin`.
    open_until: AtomicU64,
    rejected: AtomicU64,
    time: TimeBase,
    settings: Settings,
    core: Mutex<Core>,
    name: Arc<str>,
    observers: RwLock<Observers>,
}

/// A circuit breaker; cheap to clone, clones share state.
///
/// ```
/// use std::time::Duration;
/// use quorum_resilience::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow};
/// use quorum_resilience::{AnyErrorRetryable, BreakerState};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = BreakerConfig { window: SlidingWindow::Count(4), minimum_calls: 4, ..BreakerConfig::default() };
/// let breaker = CircuitBreaker::new("provider", config)?;
/// for _ in 0..4 {
///     let _ = breaker.call(|| async { Err::<(), _>("503") }, &AnyErrorRetryable).await;
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// let rejected = breaker.try_acquire().unwrap_err();
/// assert_eq!(rejected.remaining, Some(Duration::from_secs(30)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn mul_duration(d: Duration, factor: f64, max: Duration) -> Duration {
    let secs = d.as_secs_f64() * factor;
    if secs >= max.as_secs_f64() {
        max
    } else {
        Duration::from_secs_f64(secs)
    }
}

enum SlowPath {
    Admit(u64),
    Reject(BreakerState, Option<Duration>),
    Retry,
}

impl CircuitBreaker {
    /// Builds a closed breaker named `name` (used in events and errors), observing nothing.
    ///
    /// # Errors
    /// [`BreakerConfigError::Invalid`] naming the field and value: a zero or oversized window, a
    /// threshold outside (0, 100], `minimum_calls` of 0 or above a count window, zero durations,
    /// a multiplier below 1, `max_open_duration < open_duration`, zero probes.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: BreakerConfig,
    ) -> Result<Self, BreakerConfigError> {
        Self::with_clock(name, config, Clock::tokio())
    }

    /// Like [`CircuitBreaker::new`], reading the time (open durations, time windows, call
    /// durations) from `clock`.
    ///
    /// # Errors
    /// As [`CircuitBreaker::new`].
    pub fn with_clock(
        name: impl Into<Arc<str>>,
        config: BreakerConfig,
        clock: Clock,
    ) -> Result<Self, BreakerConfigError> {
        config.validate()?;
        Ok(CircuitBreaker {
            inner: Arc::new(Inner {
                state: AtomicU64::new(CLOSED),
                open_until: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                time: clock.start(),
                settings: Settings {
                    failure_rate_threshold: config.failure_rate_threshold,
                    slow: config.slow_call,
                    minimum_calls: u64::from(config.minimum_calls),
                    open_duration: config.open_duration,
                    multiplier: config.open_duration_multiplier,
                    max_open_duration: config.max_open_duration,
                    probes: config.half_open_probes,
                },
                core: Mutex::new(Core {
                    window: Window::new(config.window),
                    probes_admitted: 0,
                    probe_results: Counts::default(),
                    open_duration: config.open_duration,
                }),
                name: name.into(),
                observers: RwLock::new(Observers::default()),
            }),
        })
    }

    /// Reports events to `observers` (for this breaker and all its clones).
    #[must_use]
    pub fn with_observers(self, observers: Observers) -> Self {
        set_observers(&self.inner.observers, observers);
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current state. An open breaker whose open duration has elapsed still reports
    /// [`BreakerState::Open`] until the next [`CircuitBreaker::try_acquire`].
    pub fn state(&self) -> BreakerState {
        state_of(self.inner.state.load(Ordering::Acquire))
    }

    /// Asks to make one call. Closed (and forced-closed): a permit at once, without locking.
    ///
    /// # Errors
    /// [`BreakerOpen`] when open (with the remaining open time), forced open, or half-open with
    /// every probe slot taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, BreakerOpen> {
        let ticket = self.ticket()?;
        Ok(BreakerPermit {
            inner: &self.inner,
            ticket,
        })
    }

    /// Like [`CircuitBreaker::try_acquire`], but the permit owns a handle to the breaker, so it
    /// can move into a spawned task or a `'static` future.
    ///
    /// # Errors
    /// As [`CircuitBreaker::try_acquire`].
    pub fn try_acquire_owned(&self) -> Result<OwnedBreakerPermit, BreakerOpen> {
        let ticket = self.ticket()?;
        Ok(OwnedBreakerPermit {
            inner: Arc::clone(&self.inner),
            ticket,
        })
    }

    #[inline]
    fn ticket(&self) -> Result<Ticket, BreakerOpen> {
        let word = self.inner.state.load(Ordering::Acquire);
        if code(word) == CLOSED {
            return Ok(self.inner.ticket(word));
        }
        self.acquire_slow(word)
    }

    #[cold]
    fn acquire_slow(&self, mut word: u64) -> Result<Ticket, BreakerOpen> {
        let inner = &*self.inner;
        loop {
            let outcome = match code(word) {
                CLOSED | FORCED_CLOSED => SlowPath::Admit(word),
                FORCED_OPEN => SlowPath::Reject(BreakerState::ForcedOpen, None),
                OPEN => {
                    let now = inner.now();
                    let until = inner.open_until.load(Ordering::Acquire);
                    if now < until {
                        SlowPath::Reject(
                            BreakerState::Open,
                            Some(Duration::from_nanos(until - now)),
                        )
                    } else {
                        inner.enter_half_open(word, now)
                    }
                }
                _ => inner.enter_half_open(word, 0),
            };
            match outcome {
                SlowPath::Admit(w) => return Ok(inner.ticket(w)),
                SlowPath::Reject(state, remaining) => return Err(inner.reject(state, remaining)),
                SlowPath::Retry => word = inner.state.load(Ordering::Acquire),
            }
        }
    }

    /// Runs `f` if the breaker admits it, timing it with the breaker's clock and recording the
    /// outcome as `classifier` judges it (see the module docs for what counts as a failure).
    /// If the returned future is dropped mid-call, nothing is recorded (a probe slot is freed).
    ///
    /// # Errors
    /// [`BreakerError::Open`] without calling `f` when rejected; [`BreakerError::Inner`] with the
    /// call's error.
    pub async fn call<T, E, F, Fut, C>(&self, f: F, classifier: &C) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classifier<T, E> + ?Sized,
    {
        let permit = self.try_acquire().map_err(BreakerError::Open)?;
        let result = f().await;
        let verdict = classifier.classify(&result);
        permit.finish(verdict.is_failure() && classifier.counts_as_failure(&verdict));
        result.map_err(BreakerError::Inner)
    }

    /// Holds the breaker open until [`CircuitBreaker::reset`] or [`CircuitBreaker::force_closed`].
    pub fn force_open(&self) {
        self.inner.force(FORCED_OPEN);
    }

    /// Holds the breaker closed, admitting every call and judging nothing, until
    /// [`CircuitBreaker::reset`] or [`CircuitBreaker::force_open`].
    pub fn force_closed(&self) {
        self.inner.force(FORCED_CLOSED);
    }

    /// Returns to closed with an empty window and the base open duration; results of calls
    /// started before are ignored.
    pub fn reset(&self) {
        self.inner.force(CLOSED);
    }

    /// A snapshot of the state, the window's rates and the rejection count.
    pub fn metrics(&self) -> BreakerMetrics {
        let inner = &*self.inner;
        let mut core = lock(&inner.core);
        let word = inner.state.load(Ordering::Acquire);
        let now = inner.now();
        if code(word) == CLOSED && core.window.needs_clock() {
            core.window.roll(now / 1_000_000_000);
        }
        let totals = core.window.totals();
        let open_remaining = (code(word) == OPEN).then(|| {
            Duration::from_nanos(inner.open_until.load(Ordering::Acquire).saturating_sub(now))
        });
        BreakerMetrics {
            state: state_of(word),
            calls: totals.calls,
            failed_calls: totals.failed,
            slow_calls: totals.slow,
            failure_rate: totals.failure_rate(),
            slow_call_rate: totals.slow_rate(),
            rejected_calls: inner.rejected.load(Ordering::Relaxed),
            probes_admitted: if code(word) == HALF_OPEN {
                core.probes_admitted
            } else {
                0
            },
            open_remaining,
            open_duration: core.open_duration,
        }
    }
}

impl Inner {
    #[inline]
    fn ticket(&self, word: u64) -> Ticket {
        Ticket {
            word,
            start: self.settings.slow.map(|_| self.now()),
            done: false,
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        self.time.now()
    }

    fn reject(&self, state: BreakerState, remaining: Option<Duration>) -> BreakerOpen {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        read_observers(&self.observers).emit(Event::BreakerRejected {
            name: &self.name,
            state,
        });
        BreakerOpen {
            name: Arc::clone(&self.name),
            state,
            remaining,
        }
    }

    /// Moves an expired open breaker to half-open (if still in `seen`), then takes a probe slot.
    fn enter_half_open(&self, seen: u64, now: u64) -> SlowPath {
        let mut core = lock(&self.core);
        let mut word = self.state.load(Ordering::Acquire);
        if code(word) == OPEN && word == seen {
            word = self.transition(&mut core, word, HALF_OPEN, now);
        }
        match code(word) {
            HALF_OPEN if core.probes_admitted < self.settings.probes => {
                core.probes_admitted += 1;
                SlowPath::Admit(word)
            }
            HALF_OPEN => SlowPath::Reject(BreakerState::HalfOpen, None),
            _ => SlowPath::Retry,
        }
    }

    /// Sets the state (new generation) and emits the transition. Call with `core` locked.
    fn transition(&self, core: &mut Core, from: u64, to: u64, now: u64) -> u64 {
        let word = (((from >> CODE_BITS) + 1) << CODE_BITS) | to;
        match to {
            OPEN => {
                self.open_until.store(
                    now.saturating_add(nanos(core.open_duration)),
                    Ordering::Release,
                );
            }
            HALF_OPEN => {
                core.probes_admitted = 0;
                core.probe_results = Counts::default();
            }
            CLOSED => {
                core.window.clear();
                core.open_duration = self.settings.open_duration;
            }
            _ => {}
        }
        self.state.store(word, Ordering::Release);
        // Emitted under the lock so observers see transitions in order; observers must not call
        // back into this breaker's `metrics()`.
        if code(from) != to {
            read_observers(&self.observers).emit(Event::BreakerTransition {
                name: &self.name,
                from: state_of(from),
                to: state_of(word),
            });
        }
        word
    }

    fn force(&self, to: u64) {
        let mut core = lock(&self.core);
        let word = self.state.load(Ordering::Acquire);
        if code(word) != to || to == CLOSED {
            let now = self.now();
            self.transition(&mut core, word, to, now);
        }
    }

    /// Records an outcome; `now` is the current time if the caller already read it.
    #[inline]
    fn record(&self, word: u64, failed: bool, elapsed: Duration, now: Option<u64>) {
        let slow = self.settings.slow.is_some_and(|s| elapsed >= s.duration);
        let mut core = lock(&self.core);
        if self.state.load(Ordering::Relaxed) != word {
            return; // a late result from an earlier generation
        }
        match code(word) {
            CLOSED => {
                let now = match now {
                    Some(now) => Some(now),
                    None if core.window.needs_clock() => Some(self.now()),
                    None => None,
                };
                core.window.record(now.unwrap_or(0), failed, slow);
                let totals = core.window.totals();
                if totals.calls >= self.settings.minimum_calls && self.settings.trips(&totals) {
                    let now = now.unwrap_or_else(|| self.now());
                    self.transition(&mut core, word, OPEN, now);
                }
            }
            HALF_OPEN => {
                core.probe_results.add(failed, slow);
                if core.probe_results.calls >= u64::from(self.settings.probes) {
                    let results = core.probe_results;
                    if self.settings.trips(&results) {
                        core.open_duration = mul_duration(
                            core.open_duration,
                            self.settings.multiplier,
                            self.settings.max_open_duration,
                        );
                        self.transition(&mut core, word, OPEN, self.now());
                    } else {
                        self.transition(&mut core, word, CLOSED, 0);
                    }
                }
            }
            _ => {}
        }
    }

    fn release_probe(&self, word: u64) {
        let mut core = lock(&self.core);
        if self.state.load(Ordering::Relaxed) == word && code(word) == HALF_OPEN {
            core.probes_admitted = core.probes_admitted.saturating_sub(1);
        }
    }
}

/// A permit's state: the breaker generation it belongs to and when it was handed out.
#[derive(Debug)]
struct Ticket {
    /// The state word (generation and state) when the permit was handed out.
    word: u64,
    /// When the permit was handed out (nanoseconds on the breaker's clock), if slow calls are
    /// detected.
    start: Option<u64>,
    done: bool,
}

impl Ticket {
    #[inline]
    fn record(&mut self, inner: &Inner, failed: bool, elapsed: Duration) {
        self.done = true;
        if code(self.word) != FORCED_CLOSED {
            inner.record(self.word, failed, elapsed, None);
        }
    }

    /// Records an outcome timed from when the permit was handed out (one clock read, reused).
    #[inline]
    fn finish(&mut self, inner: &Inner, failed: bool) {
        self.done = true;
        if code(self.word) == FORCED_CLOSED {
            return;
        }
        match self.start {
            Some(start) => {
                let now = inner.now();
                let elapsed = Duration::from_nanos(now.saturating_sub(start));
                inner.record(self.word, failed, elapsed, Some(now));
            }
            None => inner.record(self.word, failed, Duration::ZERO, None),
        }
    }

    #[inline]
    fn release(&self, inner: &Inner) {
        if !self.done && code(self.word) == HALF_OPEN {
            inner.release_probe(self.word);
        }
    }
}

macro_rules! permit_methods {
    () => {
        /// The state that admitted this call.
        pub fn state(&self) -> BreakerState {
            state_of(self.ticket.word)
        }

        /// Records the outcome: `failed` is whether it counts against the breaker (see
        /// [`Classifier::counts_as_failure`]); `elapsed` is judged against the slow-call
        /// duration. Ignored if the breaker changed state since the permit was handed out.
        #[inline]
        pub fn record(mut self, failed: bool, elapsed: Duration) {
            self.ticket.record(&self.inner, failed, elapsed);
        }

        /// Records `verdict` with the default rule: only [`Verdict::Retryable`] counts as a
        /// failure.
        pub fn record_verdict(self, verdict: &Verdict, elapsed: Duration) {
            let failed = matches!(verdict, Verdict::Retryable { .. });
            self.record(failed, elapsed);
        }

        /// Records a success, timed from when the permit was handed out.
        #[inline]
        pub fn success(self) {
            self.finish(false);
        }

        /// Records a failure that counts, timed from when the permit was handed out.
        pub fn failure(self) {
            self.finish(true);
        }

        /// Records an outcome timed from when the permit was handed out.
        #[inline]
        pub(crate) fn finish(mut self, failed: bool) {
            self.ticket.finish(&self.inner, failed);
        }
    };
}

/// Permission to make one call; report its outcome with [`BreakerPermit::record`],
/// [`BreakerPermit::success`] or [`BreakerPermit::failure`]. Dropping it without a result records
/// nothing (and frees a half-open probe slot).
#[must_use = "a permit records nothing unless its outcome is reported"]
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    inner: &'a Inner,
    ticket: Ticket,
}

impl BreakerPermit<'_> {
    permit_methods!();
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        self.ticket.release(self.inner);
    }
}

/// A [`BreakerPermit`] that owns a handle to its breaker (from
/// [`CircuitBreaker::try_acquire_owned`]).
#[must_use = "a permit records nothing unless its outcome is reported"]
#[derive(Debug)]
pub struct OwnedBreakerPermit {
    inner: Arc<Inner>,
    ticket: Ticket,
}

impl OwnedBreakerPermit {
    permit_methods!();
}

impl Drop for OwnedBreakerPermit {
    fn drop(&mut self) {
        self.ticket.release(&self.inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_evicts_oldest() {
        let mut w = Window::new(SlidingWindow::Count(3));
        w.record(0, true, false);
        w.record(0, false, true);
        w.record(0, false, false);
        assert_eq!(w.totals().failed, 1);
        w.record(0, false, false); // pushes out the failure
        let t = w.totals();
        assert_eq!((t.calls, t.failed, t.slow), (3, 0, 1));
        w.record(0, false, false); // pushes out the slow call
        assert_eq!(w.totals().slow, 0);
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let sec = 1_000_000_000;
        let mut w = Window::new(SlidingWindow::Time(Duration::from_secs(3)));
        w.record(0, true, false);
        w.record(sec, true, false);
        w.record(2 * sec + 5, false, false);
        assert_eq!(w.totals().calls, 3);
        w.roll(3);
        assert_eq!((w.totals().calls, w.totals().failed), (2, 1));
        w.roll(100);
        assert_eq!(w.totals().calls, 0);
        w.record(100 * sec, true, false);
        assert_eq!(w.totals().failed, 1);
    }

    #[test]
    fn duration_growth_is_capped() {
        let max = Duration::from_secs(10);
        assert_eq!(
            mul_duration(Duration::from_secs(4), 2.0, max),
            Duration::from_secs(8)
        );
        assert_eq!(mul_duration(Duration::from_secs(8), 2.0, max), max);
    }

    #[test]
    fn config_errors_name_field_and_value() {
        let bad = |c: BreakerConfig| c.validate().unwrap_err().to_string();
        assert_eq!(
            bad(BreakerConfig {
                failure_rate_threshold: 150.0,
                ..BreakerConfig::default()
            }),
            "invalid circuit breaker config: failure_rate_threshold (150) must be a percentage in (0, 100]"
        );
        assert_eq!(
            bad(BreakerConfig {
                window: SlidingWindow::Count(10),
                ..BreakerConfig::default()
            }),
            "invalid circuit breaker config: minimum_calls (20) exceeds the count window (10 calls), so the breaker could never open"
        );
        assert!(
            bad(BreakerConfig {
                window: SlidingWindow::Time(Duration::from_millis(1500)),
                ..BreakerConfig::default()
            })
            .starts_with("invalid circuit breaker config: window (1.5s)")
        );
        assert!(
            bad(BreakerConfig {
                open_duration_multiplier: 0.5,
                ..BreakerConfig::default()
            })
            .contains("open_duration_multiplier (0.5)")
        );
        assert!(
            bad(BreakerConfig {
                max_open_duration: Duration::from_secs(1),
                ..BreakerConfig::default()
            })
            .contains("max_open_duration (1s) is less than open_duration (30s)")
        );
        assert!(
            bad(BreakerConfig {
                half_open_probes: 0,
                ..BreakerConfig::default()
            })
            .contains("half_open_probes (0)")
        );
        assert!(
            bad(BreakerConfig {
                slow_call: Some(SlowCallConfig {
                    duration: Duration::ZERO,
                    rate_threshold: 50.0
                }),
                ..BreakerConfig::default()
            })
            .contains("slow_call.duration (0s)")
        );
    }
}
