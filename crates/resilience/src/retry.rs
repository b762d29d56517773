//! Retries with exponential backoff and jitter, per-attempt timeouts, an overall deadline, server
//! `Retry-After` hints and an optional shared [`RetryBudget`].
//!
//! A [`RetryPolicy`] is the plain configuration; [`Retry::new`] (or [`Retry::builder`] to add a
//! budget, observers or a seeded random source) validates it into the runtime [`Retry`], which is
//! cheap to clone. [`Retry::run`] calls the operation with the attempt number (1-based) and asks a
//! [`Classifier`] what each result means:
//!
//! - [`Verdict::Success`]: the value is returned.
//! - [`Verdict::Permanent`]: no retry; the error is returned as [`RetryError::Failed`].
//! - [`Verdict::Retryable`]: retried after the backoff delay, or after the server's `retry_after`
//!   hint when it gave one. A hint longer than [`RetryPolicy::max_retry_after`] makes the loop
//!   **give up** ([`GiveUpReason::RetryAfterTooLong`]) rather than retry early: retrying before the
//!   server said it is ready is almost certain to fail again and only adds load to a dependency that
//!   is already shedding it, so the caller gets the error (and its hint) at once instead.
//!
//! # Timing
//!
//! Delays follow the AWS architecture blog's "Exponential Backoff And Jitter": the base delay
//! after failed attempt `n` is `min(max_delay, initial_delay × multiplier^(n-1))`, then [`Jitter`]
//! spreads it. With a [`deadline`](RetryPolicy::deadline) the loop never sleeps past it: when the
//! next delay would reach the deadline it gives up at once with the last error
//! ([`RetryError::DeadlineExceeded`]), and every attempt is cut off at the deadline (a per-attempt
//! timeout is clipped to the time remaining). All time is tokio time, so tests use a paused clock.
//!
//! # Cost
//!
//! A first attempt that succeeds costs a few tens of nanoseconds on top of the operation: no
//! allocation, no clock read and no timer. The retry loop proper (with its timers) is a separate
//! future, boxed only when it is needed: when the first attempt fails, or when a deadline or
//! per-attempt timeout is configured (then every run allocates once and reads the clock). A
//! budget reads the clock once per run to deposit into its current bucket (one atomic add).
//! See `benches/retry.rs`.

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::RetryBudget;
use crate::classify::{Classifier, Verdict};
use crate::event::{Event, Observers};

/// How a backoff delay is randomised (AWS architecture blog definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The exponential delay exactly: `min(max_delay, initial × multiplier^(n-1))`.
    None,
    /// Uniform in `[0, delay]`: the best spread, the default.
    #[default]
    Full,
    /// `delay / 2` plus uniform in `[0, delay / 2]`: never shorter than half the delay.
    Equal,
    /// `min(max_delay, uniform in [initial_delay, previous × 3])`, starting from
    /// `previous = initial_delay`; `multiplier` is not used. Needs a non-zero `initial_delay`.
    Decorrelated,
}

/// The configuration of a retry loop, validated into a [`Retry`] by [`Retry::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 means no retries).
    pub max_attempts: u32,
    /// The base delay before the first retry.
    pub initial_delay: Duration,
    /// The largest backoff delay (before jitter for `Full`/`Equal`, after it for `Decorrelated`).
    pub max_delay: Duration,
    /// Growth factor of the delay per attempt (at least 1).
    pub multiplier: f64,
    /// How delays are randomised.
    pub jitter: Jitter,
    /// A timeout for each attempt; a timed-out attempt counts as a retryable failure.
    pub attempt_timeout: Option<Duration>,
    /// A deadline for the whole loop, measured from the start of [`Retry::run`].
    pub deadline: Option<Duration>,
    /// The longest server `retry_after` hint honoured; longer hints make the loop give up.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, 100ms initial delay doubling up to 10s with full jitter, no timeouts, hints
    /// honoured up to 60s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Full,
            attempt_timeout: None,
            deadline: None,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Checks the policy.
    ///
    /// # Errors
    ///
    /// [`RetryConfigError`] naming the first bad field: `max_attempts` of 0, `max_delay` below
    /// `initial_delay`, a `multiplier` below 1 or not finite, or a zero `attempt_timeout` or
    /// `deadline`.
    pub fn validate(&self) -> Result<(), RetryConfigError> {
        if self.max_attempts == 0 {
            return Err(RetryConfigError::MaxAttempts(self.max_attempts));
        }
        if self.max_delay < self.initial_delay {
            return Err(RetryConfigError::DelayOrder {
                initial_delay: self.initial_delay,
                max_delay: self.max_delay,
            });
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(RetryConfigError::Multiplier(self.multiplier));
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(RetryConfigError::ZeroAttemptTimeout);
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(RetryConfigError::ZeroDeadline);
        }
        Ok(())
    }
}

/// An invalid [`RetryPolicy`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryConfigError {
    /// `max_attempts` is 0.
    #[error("invalid retry policy: max_attempts ({0}) must be at least 1")]
    MaxAttempts(u32),
    /// `max_delay` is below `initial_delay`.
    #[error("invalid backoff: max_delay ({max_delay:?}) < initial_delay ({initial_delay:?})")]
    DelayOrder {
        /// The configured initial delay.
        initial_delay: Duration,
        /// The configured maximum delay.
        max_delay: Duration,
    },
    /// `multiplier` is below 1 or not finite.
    #[error("invalid backoff: multiplier ({0}) must be finite and at least 1")]
    Multiplier(f64),
    /// `attempt_timeout` is zero.
    #[error("invalid retry policy: attempt_timeout (0s) must be positive")]
    ZeroAttemptTimeout,
    /// `deadline` is zero.
    #[error("invalid retry policy: deadline (0s) must be positive")]
    ZeroDeadline,
}

/// Why a retry loop stopped with the operation's own error ([`RetryError::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The classifier judged the error permanent (or not a failure worth retrying).
    Permanent,
    /// `max_attempts` attempts were made.
    AttemptsExhausted,
    /// The server asked to wait longer than `max_retry_after`.
    RetryAfterTooLong {
        /// The server's hint.
        retry_after: Duration,
        /// The configured cap.
        max_retry_after: Duration,
    },
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::Permanent => f.write_str("permanent error"),
            GiveUpReason::AttemptsExhausted => f.write_str("attempts exhausted"),
            GiveUpReason::RetryAfterTooLong {
                retry_after,
                max_retry_after,
            } => write!(
                f,
                "retry_after ({retry_after:?}) exceeds max_retry_after ({max_retry_after:?})"
            ),
        }
    }
}

/// The error of [`Retry::run`]. The most recent error the operation returned is always
/// reachable through [`last_error`](Self::last_error) (and [`source`](std::error::Error::source)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// The operation failed and the loop gave up for `reason`; `error` is the last attempt's.
    #[error("gave up after {attempts} attempt(s): {reason}")]
    Failed {
        /// The last attempt's error.
        #[source]
        error: E,
        /// Attempts made.
        attempts: u32,
        /// Why no further attempt was made.
        reason: GiveUpReason,
    },
    /// The last allowed attempt hit the per-attempt timeout.
    #[error("attempt {attempts} timed out after {after:?}")]
    AttemptTimedOut {
        /// Attempts made (the last one timed out).
        attempts: u32,
        /// The per-attempt timeout that elapsed.
        after: Duration,
        /// The most recent error an earlier attempt returned, if any.
        #[source]
        last_error: Option<E>,
    },
    /// The overall deadline passed during an attempt, or the next delay would have crossed it.
    #[error("retry deadline exceeded after {attempts} attempt(s)")]
    DeadlineExceeded {
        /// Attempts made (including one cut off by the deadline).
        attempts: u32,
        /// The most recent error an attempt returned, if any.
        #[source]
        last_error: Option<E>,
    },
    /// A retry was wanted but the [`RetryBudget`] refused it.
    #[error("retry budget exhausted after {attempts} attempt(s)")]
    BudgetExhausted {
        /// Attempts made.
        attempts: u32,
        /// The most recent error an attempt returned, if any (none if it timed out).
        #[source]
        last_error: Option<E>,
    },
}

impl<E> RetryError<E> {
    /// Attempts made before the loop stopped.
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::Failed { attempts, .. }
            | RetryError::AttemptTimedOut { attempts, .. }
            | RetryError::DeadlineExceeded { attempts, .. }
            | RetryError::BudgetExhausted { attempts, .. } => *attempts,
        }
    }

    /// The most recent error the operation returned, if any.
    pub fn last_error(&self) -> Option<&E> {
        match self {
            RetryError::Failed { error, .. } => Some(error),
            RetryError::AttemptTimedOut { last_error, .. }
            | RetryError::DeadlineExceeded { last_error, .. }
            | RetryError::BudgetExhausted { last_error, .. } => last_error.as_ref(),
        }
    }

    /// Consumes the error, returning the most recent error the operation returned, if any.
    pub fn into_last_error(self) -> Option<E> {
        match self {
            RetryError::Failed { error, .. } => Some(error),
            RetryError::AttemptTimedOut { last_error, .. }
            | RetryError::DeadlineExceeded { last_error, .. }
            | RetryError::BudgetExhausted { last_error, .. } => last_error,
        }
    }
}

impl<E> crate::classify::Retryable for RetryError<E> {
    /// A finished retry loop is not retried again by an outer loop.
    fn is_retryable(&self) -> bool {
        false
    }
}

/// A source of random numbers for jitter; inject a seeded one for reproducible tests.
pub trait RandomSource: Send + Sync + 'static {
    /// The next 64 random bits.
    fn next_u64(&self) -> u64;
}

/// SplitMix64 (Steele, Lea, Flood): tiny, fast, good enough for jitter; lock-free and shareable.
#[derive(Debug)]
pub struct SplitMix64 {
    state: AtomicU64,
}

impl SplitMix64 {
    /// A generator with a fixed seed: the same seed yields the same sequence.
    pub fn new(seed: u64) -> Self {
        SplitMix64 {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the process's hash randomness (different on every run).
    pub fn from_entropy() -> Self {
        SplitMix64::new(std::collections::hash_map::RandomState::new().hash_one(0x5EED_u64))
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Builds a [`Retry`] with optional budget, observers and random source.
#[must_use = "call build() to get a Retry"]
pub struct RetryBuilder {
    name: Arc<str>,
    policy: RetryPolicy,
    budget: Option<RetryBudget>,
    observers: Observers,
    rng: Option<Arc<dyn RandomSource>>,
}

impl RetryBuilder {
    /// Guards retries with `budget` (deposit per run, withdrawal per retry); share one budget
    /// between every caller of the same dependency.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Reports events to `observers`.
    pub fn observers(mut self, observers: Observers) -> Self {
        self.observers = observers;
        self
    }

    /// Uses `rng` for jitter (default: [`SplitMix64::from_entropy`]).
    pub fn rng(mut self, rng: Arc<dyn RandomSource>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Uses a [`SplitMix64`] seeded with `seed` for jitter, for reproducible delays.
    pub fn seed(self, seed: u64) -> Self {
        self.rng(Arc::new(SplitMix64::new(seed)))
    }

    /// Validates the policy and builds the [`Retry`].
    ///
    /// # Errors
    ///
    /// [`RetryConfigError`] as from [`RetryPolicy::validate`].
    pub fn build(self) -> Result<Retry, RetryConfigError> {
        self.policy.validate()?;
        Ok(Retry {
            inner: Arc::new(Inner {
                name: self.name,
                policy: self.policy,
                budget: self.budget,
                observers: self.observers,
                rng: self
                    .rng
                    .unwrap_or_else(|| Arc::new(SplitMix64::from_entropy())),
            }),
        })
    }
}

/// A validated retry loop; cheap to clone, clones share the budget and random source.
#[derive(Clone)]
pub struct Retry {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    policy: RetryPolicy,
    budget: Option<RetryBudget>,
    observers: Observers,
    rng: Arc<dyn RandomSource>,
}

/// The outcome of the most recent attempt, kept until the loop decides what to do next.
enum Last<T, E> {
    /// `Ok` but judged retryable (e.g. a response that asks to retry): returned if the loop stops.
    Value(T),
    /// The operation's error.
    Error(E),
    /// The per-attempt timeout elapsed.
    TimedOut(Duration),
}

/// Why the loop stops.
enum Stop {
    Reason(GiveUpReason),
    Deadline,
    Budget,
}

/// What a timed attempt produced.
enum Timed<R> {
    Done(R),
    AttemptTimedOut(Duration),
    DeadlineHit,
}

impl Retry {
    /// A retry loop named `name` (used in events and metrics), without budget or observers.
    ///
    /// # Errors
    ///
    /// [`RetryConfigError`] as from [`RetryPolicy::validate`].
    pub fn new(name: impl Into<Arc<str>>, policy: RetryPolicy) -> Result<Self, RetryConfigError> {
        Retry::builder(name, policy).build()
    }

    /// A builder to add a budget, observers or a random source.
    pub fn builder(name: impl Into<Arc<str>>, policy: RetryPolicy) -> RetryBuilder {
        RetryBuilder {
            name: name.into(),
            policy,
            budget: None,
            observers: Observers::default(),
            rng: None,
        }
    }

    /// The name given at construction.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The validated policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    /// The budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_ref()
    }

    /// Runs `op` until the classifier says success or permanent, or the loop gives up.
    ///
    /// `op` receives the attempt number, starting at 1. If the loop gives up while the last
    /// result is an `Ok` the classifier judged retryable, that `Ok` is returned. Each retry emits
    /// [`Event::Retry`]; an attempt cut off by the per-attempt timeout emits [`Event::TimedOut`]
    /// under this retry's name. Nothing is emitted when the first attempt succeeds.
    ///
    /// # Errors
    ///
    /// - [`RetryError::Failed`]: a permanent error, attempts exhausted, or a `retry_after` hint
    ///   above `max_retry_after` ([`Event::RetryGaveUp`]);
    /// - [`RetryError::AttemptTimedOut`]: the last allowed attempt timed out
    ///   ([`Event::RetryGaveUp`]);
    /// - [`RetryError::DeadlineExceeded`]: the deadline passed or the next delay would cross it
    ///   ([`Event::RetryGaveUp`]);
    /// - [`RetryError::BudgetExhausted`]: the budget refused a retry
    ///   ([`Event::RetryBudgetExhausted`]).
    pub async fn run<T, E, F, Fut, C>(&self, mut op: F, classifier: &C) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classifier<T, E> + ?Sized,
    {
        let inner = &*self.inner;
        if let Some(budget) = &inner.budget {
            budget.deposit();
        }
        let policy = &inner.policy;
        if policy.attempt_timeout.is_some() || policy.deadline.is_some() {
            return Box::pin(self.run_slow(op, classifier, None)).await;
        }
        // Fast path: this future only holds the first attempt's future. The loop with its timers
        // (a tokio `Sleep` is over 100 bytes) lives in a separate, boxed future, so the common case
        // of a first attempt that succeeds neither allocates nor moves a large state machine.
        let result = op(1).await;
        match (classifier.classify(&result), result) {
            (Verdict::Success, Ok(value)) => Ok(value),
            (verdict, result) => {
                Box::pin(self.run_slow(op, classifier, Some((verdict, result)))).await
            }
        }
    }

    /// The retry loop; `first` is the already classified first attempt when it ran untimed.
    async fn run_slow<T, E, F, Fut, C>(
        &self,
        mut op: F,
        classifier: &C,
        mut first: Option<(Verdict, Result<T, E>)>,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classifier<T, E> + ?Sized,
    {
        let inner = &*self.inner;
        let policy = &inner.policy;
        // The clock is only read when a deadline is configured.
        let deadline = policy.deadline.and_then(|d| Instant::now().checked_add(d));
        let timed = policy.attempt_timeout.is_some() || deadline.is_some();
        let mut attempt: u32 = 1;
        let mut previous_error: Option<E> = None;
        let mut previous_delay = policy.initial_delay;
        loop {
            let outcome = match first.take() {
                Some(judged) => Timed::Done(judged),
                None => {
                    let outcome = if timed {
                        timed_attempt(op(attempt), policy.attempt_timeout, deadline).await
                    } else {
                        Timed::Done(op(attempt).await)
                    };
                    match outcome {
                        Timed::Done(result) => Timed::Done((classifier.classify(&result), result)),
                        Timed::AttemptTimedOut(after) => Timed::AttemptTimedOut(after),
                        Timed::DeadlineHit => Timed::DeadlineHit,
                    }
                }
            };
            let (last, retry_after) = match outcome {
                Timed::Done((verdict, result)) => match (verdict, result) {
                    (Verdict::Success, Ok(value)) => return Ok(value),
                    (Verdict::Success | Verdict::Permanent, result) => {
                        let last = match result {
                            Ok(value) => Last::Value(value),
                            Err(error) => Last::Error(error),
                        };
                        return self.stop(
                            last,
                            previous_error,
                            attempt,
                            Stop::Reason(GiveUpReason::Permanent),
                        );
                    }
                    (Verdict::Retryable { retry_after }, Ok(value)) => {
                        (Last::Value(value), retry_after)
                    }
                    (Verdict::Retryable { retry_after }, Err(error)) => {
                        (Last::Error(error), retry_after)
                    }
                },
                Timed::AttemptTimedOut(after) => {
                    inner.observers.emit(Event::TimedOut {
                        name: &inner.name,
                        after,
                    });
                    (Last::TimedOut(after), None)
                }
                Timed::DeadlineHit => {
                    return self.stop(
                        Last::TimedOut(Duration::ZERO),
                        previous_error,
                        attempt,
                        Stop::Deadline,
                    );
                }
            };
            if attempt >= policy.max_attempts {
                return self.stop(
                    last,
                    previous_error,
                    attempt,
                    Stop::Reason(GiveUpReason::AttemptsExhausted),
                );
            }
            let delay = match retry_after {
                Some(hint) if hint > policy.max_retry_after => {
                    let reason = GiveUpReason::RetryAfterTooLong {
                        retry_after: hint,
                        max_retry_after: policy.max_retry_after,
                    };
                    return self.stop(last, previous_error, attempt, Stop::Reason(reason));
                }
                Some(hint) => hint,
                None => self.backoff(attempt, &mut previous_delay),
            };
            if let Some(deadline) = deadline {
                let wake = Instant::now().checked_add(delay);
                if wake.is_none_or(|wake| wake >= deadline) {
                    return self.stop(last, previous_error, attempt, Stop::Deadline);
                }
            }
            if let Some(budget) = &inner.budget
                && !budget.try_withdraw()
            {
                return self.stop(last, previous_error, attempt, Stop::Budget);
            }
            inner.observers.emit(Event::Retry {
                name: &inner.name,
                attempt,
                delay,
            });
            if let Last::Error(error) = last {
                previous_error = Some(error);
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            attempt += 1;
        }
    }

    /// Ends the loop: emits the event and builds the result.
    fn stop<T, E>(
        &self,
        last: Last<T, E>,
        previous_error: Option<E>,
        attempts: u32,
        stop: Stop,
    ) -> Result<T, RetryError<E>> {
        let inner = &*self.inner;
        match stop {
            Stop::Budget => inner
                .observers
                .emit(Event::RetryBudgetExhausted { name: &inner.name }),
            Stop::Reason(_) | Stop::Deadline => inner.observers.emit(Event::RetryGaveUp {
                name: &inner.name,
                attempts,
            }),
        }
        let (last_error, timed_out) = match last {
            Last::Value(value) => return Ok(value),
            Last::Error(error) => (Some(error), None),
            Last::TimedOut(after) => (previous_error, Some(after)),
        };
        Err(match (stop, timed_out, last_error) {
            (Stop::Budget, _, last_error) => RetryError::BudgetExhausted {
                attempts,
                last_error,
            },
            (Stop::Deadline, _, last_error) => RetryError::DeadlineExceeded {
                attempts,
                last_error,
            },
            (Stop::Reason(reason), None, Some(error)) => RetryError::Failed {
                error,
                attempts,
                reason,
            },
            // A timed-out attempt (or, impossibly, an error-less failure) that used up the attempts.
            (Stop::Reason(_), after, last_error) => RetryError::AttemptTimedOut {
                attempts,
                after: after.unwrap_or_default(),
                last_error,
            },
        })
    }

    /// The delay after failed attempt `attempt` (1-based); `previous` is decorrelated jitter's state.
    fn backoff(&self, attempt: u32, previous: &mut Duration) -> Duration {
        let policy = &self.inner.policy;
        let rng = &*self.inner.rng;
        let base = exponential(policy, attempt);
        match policy.jitter {
            Jitter::None => base,
            Jitter::Full => uniform(rng, Duration::ZERO, base),
            Jitter::Equal => {
                let half = base / 2;
                half + uniform(rng, Duration::ZERO, base - half)
            }
            Jitter::Decorrelated => {
                let high = previous.saturating_mul(3).max(policy.initial_delay);
                let delay = uniform(rng, policy.initial_delay, high).min(policy.max_delay);
                *previous = delay;
                delay
            }
        }
    }
}

/// `min(max_delay, initial_delay × multiplier^(attempt-1))`, computed in nanoseconds.
fn exponential(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let nanos = nanos_of(policy.initial_delay) as f64 * policy.multiplier.powi(exponent);
    let max = nanos_of(policy.max_delay);
    if nanos.is_nan() || nanos >= max as f64 {
        policy.max_delay
    } else {
        Duration::from_nanos(nanos as u64)
    }
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Uniform in `[low, high]` (inclusive); `low` when `high <= low`.
fn uniform(rng: &dyn RandomSource, low: Duration, high: Duration) -> Duration {
    let (lo, hi) = (nanos_of(low), nanos_of(high));
    if hi <= lo {
        return low;
    }
    let span = hi - lo;
    let offset = match span.checked_add(1) {
        Some(n) => rng.next_u64() % n,
        None => rng.next_u64(),
    };
    Duration::from_nanos(lo + offset)
}

/// Runs one attempt under the per-attempt timeout and/or the deadline, whichever is sooner.
async fn timed_attempt<Fut: Future>(
    fut: Fut,
    attempt_timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> Timed<Fut::Output> {
    let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let (limit, by_deadline) = match (attempt_timeout, remaining) {
        (Some(t), Some(r)) if r <= t => (r, true),
        (Some(t), _) => (t, false),
        (None, Some(r)) => (r, true),
        (None, None) => return Timed::Done(fut.await),
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => Timed::Done(output),
        Err(_) if by_deadline => Timed::DeadlineHit,
        Err(_) => Timed::AttemptTimedOut(limit),
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.inner.name)
            .field("policy", &self.inner.policy)
            .field("budget", &self.inner.budget)
            .field("observers", &self.inner.observers)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            multiplier: 2.0,
            jitter,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn exponential_sequence_is_exact_and_capped() {
        let p = policy(Jitter::None);
        let got: Vec<u64> = (1..=7)
            .map(|n| exponential(&p, n).as_millis() as u64)
            .collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(exponential(&p, u32::MAX), Duration::from_secs(2));
        let fractional = RetryPolicy {
            multiplier: 1.5,
            ..p
        };
        assert_eq!(exponential(&fractional, 3), Duration::from_millis(225));
    }

    #[test]
    fn splitmix_is_seeded_and_reproducible() {
        let a = SplitMix64::new(42);
        let b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        // Reference value of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn uniform_stays_in_bounds_and_covers_the_range() {
        let rng = SplitMix64::new(7);
        let (lo, hi) = (Duration::from_millis(10), Duration::from_millis(20));
        let mut min = hi;
        let mut max = lo;
        for _ in 0..10_000 {
            let d = uniform(&rng, lo, hi);
            assert!(d >= lo && d <= hi);
            min = min.min(d);
            max = max.max(d);
        }
        assert!(min < Duration::from_millis(11) && max > Duration::from_millis(19));
        assert_eq!(uniform(&rng, hi, lo), hi);
        assert_eq!(uniform(&rng, lo, lo), lo);
    }

    #[test]
    fn jitter_bounds() {
        for seed in 0..50 {
            for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
                let retry = Retry::builder("r", policy(jitter))
                    .seed(seed)
                    .build()
                    .unwrap();
                let mut previous = Duration::from_millis(100);
                for attempt in 1..=8 {
                    let before = previous;
                    let d = retry.backoff(attempt, &mut previous);
                    let base = exponential(&policy(Jitter::None), attempt);
                    match jitter {
                        Jitter::Full => assert!(d <= base),
                        Jitter::Equal => assert!(d >= base / 2 && d <= base),
                        Jitter::Decorrelated => {
                            assert!(d >= Duration::from_millis(100));
                            assert!(d <= (before * 3).min(Duration::from_secs(2)));
                            assert_eq!(previous, d);
                        }
                        Jitter::None => unreachable!(),
                    }
                }
            }
        }
    }

    #[test]
    fn validation_names_the_field() {
        let bad = RetryPolicy {
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "invalid backoff: max_delay (2s) < initial_delay (5s)"
        );
        let cases = [
            (
                RetryPolicy {
                    max_attempts: 0,
                    ..RetryPolicy::default()
                },
                RetryConfigError::MaxAttempts(0),
            ),
            (
                RetryPolicy {
                    attempt_timeout: Some(Duration::ZERO),
                    ..RetryPolicy::default()
                },
                RetryConfigError::ZeroAttemptTimeout,
            ),
            (
                RetryPolicy {
                    deadline: Some(Duration::ZERO),
                    ..RetryPolicy::default()
                },
                RetryConfigError::ZeroDeadline,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(Retry::new("r", p).unwrap_err(), want);
        }
        for m in [0.5, f64::NAN, f64::INFINITY, -1.0] {
            let p = RetryPolicy {
                multiplier: m,
                ..RetryPolicy::default()
            };
            assert!(matches!(p.validate(), Err(RetryConfigError::Multiplier(_))));
        }
        assert!(RetryPolicy::default().validate().is_ok());
    }
}
