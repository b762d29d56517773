//! A token-bucket rate limiter with weighted, FIFO, settle-after-the-fact acquisition.
//!
//! [`RateLimiter`] is a token bucket of `capacity` tokens refilled with `refill_amount` tokens every
//! `refill_period`, implemented as a GCRA (generic cell rate algorithm): its whole state is one
//! atomic "theoretical arrival time" (TAT), updated with a compare-and-swap loop, so checks are
//! lock-free and as cheap as the clock read.
//!
//! - [`RateLimiter::try_acquire`] takes `n` tokens now or fails with the time until they would be
//!   available.
//! - [`RateLimiter::acquire`] *reserves* `n` tokens atomically (possibly in the future) and sleeps
//!   until the reservation is due. Reservations are handed out in call order, so waiters are served
//!   first in, first out without a wait queue, and [`RateLimiter::try_acquire`] fails while
//!   reservations are pending, so waiters are never starved. Dropping the future before it
//!   completes returns the reservation.
//! - Weighted acquisition suits token-per-minute limits: reserve the estimated token count, then
//!   [`RateLimiter::settle`] once the real usage is known. Charging more than was reserved may put
//!   the bucket into debt, which delays later callers by exactly the overdraft.
//! - [`RateLimiter::observe_remaining`] and [`RateLimiter::set_rate`] follow what the server says
//!   (`x-ratelimit-remaining-*` headers, a changed tier).
//!
//! Time is [`tokio::time::Instant`], so tests drive the limiter with `tokio::time::pause()`.
//! Token arithmetic is in whole nanoseconds: the interval of one token is `refill_period /
//! refill_amount` rounded down, so a rate that does not divide evenly runs at most one nanosecond
//! per token fast.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::classify::Retryable;
use crate::event::{Event, Observers};

/// Why a rate limiter refused, or could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// Not enough tokens right now.
    #[error("rate limited: {requested} tokens available in {retry_after:?}")]
    Limited {
        /// Tokens requested.
        requested: u64,
        /// How long until the request would succeed, if nobody else takes tokens meanwhile.
        retry_after: Duration,
    },
    /// The request can never succeed: it is larger than the bucket.
    #[error("request of {requested} tokens exceeds the bucket capacity ({capacity})")]
    ExceedsCapacity {
        /// Tokens requested.
        requested: u64,
        /// The bucket's capacity.
        capacity: u64,
    },
    /// Waiting for the tokens would take longer than the allowed maximum; nothing was reserved.
    #[error("waiting {wait:?} for {requested} tokens exceeds max_wait ({max_wait:?})")]
    WaitTooLong {
        /// Tokens requested.
        requested: u64,
        /// How long the wait would have been.
        wait: Duration,
        /// The configured maximum wait.
        max_wait: Duration,
    },
    /// A keyed limiter holds `max_keys` keys, none of them idle, and is configured to refuse.
    #[error("too many keys: max_keys ({max_keys}) reached and no key is idle")]
    TooManyKeys {
        /// The configured maximum.
        max_keys: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid rate limit config: {field} ({value}) {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl RateLimitError {
    /// How long to wait before trying again, for [`RateLimitError::Limited`] and
    /// [`RateLimitError::WaitTooLong`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimitError::Limited { retry_after, .. } => Some(*retry_after),
            RateLimitError::WaitTooLong { wait, .. } => Some(*wait),
            _ => None,
        }
    }
}

impl Retryable for RateLimitError {
    /// Being limited is worth retrying later; an oversized request or a bad config is not.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            RateLimitError::Limited { .. } | RateLimitError::WaitTooLong { .. }
        )
    }

    fn retry_after(&self) -> Option<Duration> {
        RateLimitError::retry_after(self)
    }
}

/// A token bucket's shape, validated into a [`RateLimiter`] by [`RateLimiter::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Tokens the bucket holds when full: the largest burst, and the largest single request.
    pub capacity: u64,
    /// Tokens added every `refill_period` (continuously: one every `refill_period / refill_amount`).
    pub refill_amount: u64,
    /// The period over which `refill_amount` tokens are added.
    pub refill_period: Duration,
    /// The longest [`RateLimiter::acquire`] may wait; longer waits fail at once without reserving.
    pub max_wait: Option<Duration>,
}

impl RateLimitConfig {
    /// `n` tokens per second, with a burst of `n`.
    pub fn per_second(n: u64) -> Self {
        RateLimitConfig {
            capacity: n,
            refill_amount: n,
            refill_period: Duration::from_secs(1),
            max_wait: None,
        }
    }

    /// `n` tokens per minute, with a burst of `n` (a tokens-per-minute or requests-per-minute limit).
    pub fn per_minute(n: u64) -> Self {
        RateLimitConfig {
            capacity: n,
            refill_amount: n,
            refill_period: Duration::from_secs(60),
            max_wait: None,
        }
    }

    /// Sets the burst capacity.
    pub fn with_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the longest wait [`RateLimiter::acquire`] accepts.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Validates the config into GCRA parameters.
    pub(crate) fn gcra(&self) -> Result<Gcra, RateLimitError> {
        let invalid = |field, value: String, reason| RateLimitError::InvalidConfig {
            field,
            value,
            reason,
        };
        if self.capacity == 0 {
            return Err(invalid("capacity", "0".into(), "must be at least 1"));
        }
        if self.refill_amount == 0 {
            return Err(invalid("refill_amount", "0".into(), "must be at least 1"));
        }
        if self.refill_period.is_zero() {
            return Err(invalid("refill_period", "0s".into(), "must be positive"));
        }
        let period = self.refill_period.as_nanos();
        if period > u128::from(MAX_NANOS) {
            return Err(invalid(
                "refill_period",
                format!("{:?}", self.refill_period),
                "is too long",
            ));
        }
        let interval = period / u128::from(self.refill_amount);
        if interval == 0 {
            return Err(invalid(
                "refill_amount",
                self.refill_amount.to_string(),
                "exceeds one token per nanosecond of refill_period",
            ));
        }
        let tolerance = interval * u128::from(self.capacity);
        if tolerance > u128::from(MAX_NANOS) {
            return Err(invalid(
                "capacity",
                self.capacity.to_string(),
                "takes longer than 100 years to refill",
            ));
        }
        if let Some(max_wait) = self.max_wait
            && max_wait.as_nanos() > u128::from(MAX_NANOS)
        {
            return Err(invalid("max_wait", format!("{max_wait:?}"), "is too long"));
        }
        Ok(Gcra {
            // Both fit: checked against MAX_NANOS above.
            interval: interval as u64,
            tolerance: tolerance as u64,
            capacity: self.capacity,
        })
    }
}

/// About 100 years in nanoseconds: the cap on every configured duration, far from `u64::MAX`.
const MAX_NANOS: u64 = 100 * 365 * 24 * 3600 * 1_000_000_000;

/// Sentinel for "no max wait" in an atomic.
const NO_MAX_WAIT: u64 = u64::MAX;

/// Observers shared by a mechanism and its clones; settable after construction.
pub(crate) fn read_observers(
    lock: &std::sync::RwLock<Observers>,
) -> std::sync::RwLockReadGuard<'_, Observers> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Replaces the observers in `lock`.
pub(crate) fn set_observers(lock: &std::sync::RwLock<Observers>, observers: Observers) {
    *lock
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = observers;
}

/// Where a limiter reads the time.
///
/// The default, [`Clock::tokio`], is [`tokio::time::Instant`]: it follows `tokio::time::pause()`
/// and `advance()`, so tests run on a fake clock. Reading it costs what `std::time::Instant::now()`
/// costs (a `clock_gettime` call, 20–60 ns depending on the machine), which dominates a limiter
/// check. [`Clock::tsc`] reads the CPU's time-stamp counter through `quanta` (the clock
/// `governor` uses), typically 2–3× cheaper, but it ignores tokio's paused clock: use it only
/// where checks are very frequent and tests do not pause time.
#[derive(Clone, Debug, Default)]
pub struct Clock(ClockKind);

#[derive(Clone, Debug, Default)]
enum ClockKind {
    #[default]
    Tokio,
    Tsc(quanta::Clock),
}

impl Clock {
    /// The tokio clock (the default): follows `tokio::time::pause()`.
    pub fn tokio() -> Self {
        Clock(ClockKind::Tokio)
    }

    /// The time-stamp counter via `quanta`; not affected by `tokio::time::pause()`. The first one
    /// built in a process calibrates the counter (a few milliseconds).
    pub fn tsc() -> Self {
        Clock(ClockKind::Tsc(quanta::Clock::new()))
    }

    /// Starts measuring nanoseconds from now.
    pub(crate) fn start(&self) -> TimeBase {
        match &self.0 {
            ClockKind::Tokio => TimeBase::Tokio(Instant::now()),
            ClockKind::Tsc(clock) => TimeBase::Tsc(clock.clone(), clock.raw()),
        }
    }
}

/// A clock and the instant a mechanism was created: "now" as nanoseconds since then.
#[derive(Debug)]
pub(crate) enum TimeBase {
    Tokio(Instant),
    /// The clock and its raw counter value at the origin.
    Tsc(quanta::Clock, u64),
}

impl TimeBase {
    /// Nanoseconds since the origin.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            TimeBase::Tokio(origin) => nanos(Instant::now().saturating_duration_since(*origin)),
            // 0 if the counter reads below the origin (never before it, on an invariant TSC).
            TimeBase::Tsc(clock, origin) => clock.delta_as_nanos(*origin, clock.raw()),
        }
    }
}

/// A duration in whole nanoseconds, saturating.
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// GCRA parameters: `interval` nanoseconds per token, a full bucket is `tolerance` nanoseconds of
/// credit (`capacity · interval`). The state is a TAT in nanoseconds since the limiter's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    pub(crate) interval: u64,
    pub(crate) tolerance: u64,
    pub(crate) capacity: u64,
}

impl Gcra {
    /// The time-cost of `n` tokens.
    #[inline]
    pub(crate) fn cost(&self, n: u64) -> u64 {
        n.saturating_mul(self.interval)
    }

    /// Admits `n` tokens at `now` if available: `Ok(new_tat)`, else `Err(wait_nanos)`.
    #[inline]
    pub(crate) fn admit(&self, tat: u64, now: u64, n: u64) -> Result<u64, u64> {
        let new = tat.max(now).saturating_add(self.cost(n));
        let limit = now.saturating_add(self.tolerance);
        if new <= limit {
            Ok(new)
        } else {
            Err(new - limit)
        }
    }

    /// Reserves `n` tokens regardless of availability: `(new_tat, wait_nanos)`.
    #[inline]
    pub(crate) fn reserve(&self, tat: u64, now: u64, n: u64) -> (u64, u64) {
        let new = tat.max(now).saturating_add(self.cost(n));
        (new, new.saturating_sub(now.saturating_add(self.tolerance)))
    }

    /// Charges `n` tokens without any check (settling an overdraft): the new TAT.
    #[inline]
    pub(crate) fn charge(&self, tat: u64, now: u64, n: u64) -> u64 {
        tat.max(now).saturating_add(self.cost(n))
    }

    /// Returns `n` tokens: the new TAT (never above a full bucket, as `max(tat, now)` caps it).
    #[inline]
    pub(crate) fn refund(&self, tat: u64, n: u64) -> u64 {
        tat.saturating_sub(self.cost(n))
    }

    /// Tokens available at `now` (0 while in debt or while reservations are pending).
    pub(crate) fn available(&self, tat: u64, now: u64) -> u64 {
        now.saturating_add(self.tolerance)
            .saturating_sub(tat.max(now))
            / self.interval
    }

    /// The TAT that leaves at most `remaining` tokens available, and when `remaining` is 0 and a
    /// reset time is known, no token before `reset_after`.
    pub(crate) fn remaining_tat(&self, now: u64, remaining: u64, reset_after: Option<u64>) -> u64 {
        let remaining = remaining.min(self.capacity);
        let mut target = now.saturating_add(self.tolerance) - self.cost(remaining);
        if remaining == 0
            && let Some(reset) = reset_after
        {
            // The first token becomes available at `tat + interval - tolerance`.
            let at_reset = now
                .saturating_add(reset)
                .saturating_add(self.tolerance)
                .saturating_sub(self.interval);
            target = target.max(at_reset);
        }
        target
    }

    /// Whether a bucket with this TAT is full at `now` (nothing worth keeping).
    #[inline]
    pub(crate) fn is_idle(&self, tat: u64, now: u64) -> bool {
        tat <= now
    }
}

/// A token-bucket rate limiter; cheap to clone, clones share the bucket.
///
/// ```
/// use std::time::Duration;
/// use quorum_resilience::rate_limit::{RateLimitConfig, RateLimitError, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), RateLimitError> {
/// // 90k tokens per minute; reserve an estimate, settle with the real usage.
/// let tpm = RateLimiter::new("gpt-4o/tpm", RateLimitConfig::per_minute(90_000))?;
/// tpm.acquire(1_000).await?;
/// tpm.settle(1_000, 640);
/// assert_eq!(tpm.available(), 90_000 - 640);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

/// Keeps the contended TAT on its own cache line, away from the read-mostly parameters.
#[derive(Debug)]
#[repr(align(64))]
struct CachePadded<T>(T);

#[derive(Debug)]
struct Inner {
    /// Theoretical arrival time, nanoseconds since the clock's origin.
    tat: CachePadded<AtomicU64>,
    interval: AtomicU64,
    tolerance: AtomicU64,
    capacity: AtomicU64,
    max_wait: AtomicU64,
    time: TimeBase,
    name: Arc<str>,
    observers: RwLock<Observers>,
}

impl Inner {
    #[inline]
    fn gcra(&self) -> Gcra {
        Gcra {
            interval: self.interval.load(Ordering::Relaxed),
            tolerance: self.tolerance.load(Ordering::Relaxed),
            capacity: self.capacity.load(Ordering::Relaxed),
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        self.time.now()
    }

    /// Applies `f` to the TAT until the compare-and-swap succeeds; `f` may abort with `Err`.
    #[inline]
    fn update<T, E>(&self, mut f: impl FnMut(u64) -> Result<(u64, T), E>) -> Result<T, E> {
        let mut current = self.tat.0.load(Ordering::Acquire);
        loop {
            let (new, out) = f(current)?;
            match self.tat.0.compare_exchange_weak(
                current,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(out),
                Err(actual) => current = actual,
            }
        }
    }

    fn refund(&self, n: u64) {
        let gcra = self.gcra();
        let _ = self.update::<(), ()>(|tat| Ok((gcra.refund(tat, n), ())));
    }

    fn limited(&self, tokens: u64) {
        read_observers(&self.observers).emit(Event::RateLimited {
            name: &self.name,
            tokens,
        });
    }
}

impl RateLimiter {
    /// Builds a limiter named `name` (used in events) that starts with a full bucket and
    /// observes nothing.
    ///
    /// # Errors
    /// [`RateLimitError::InvalidConfig`] naming the field when `capacity` or `refill_amount` is 0,
    /// `refill_period` is zero, or the rate is finer than one token per nanosecond.
    pub fn new(name: impl Into<Arc<str>>, config: RateLimitConfig) -> Result<Self, RateLimitError> {
        Self::with_clock(name, config, Clock::tokio())
    }

    /// Like [`RateLimiter::new`], reading the time from `clock`.
    ///
    /// # Errors
    /// As [`RateLimiter::new`].
    pub fn with_clock(
        name: impl Into<Arc<str>>,
        config: RateLimitConfig,
        clock: Clock,
    ) -> Result<Self, RateLimitError> {
        let gcra = config.gcra()?;
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                tat: CachePadded(AtomicU64::new(0)),
                interval: AtomicU64::new(gcra.interval),
                tolerance: AtomicU64::new(gcra.tolerance),
                capacity: AtomicU64::new(gcra.capacity),
                max_wait: AtomicU64::new(config.max_wait.map_or(NO_MAX_WAIT, nanos)),
                time: clock.start(),
                name: name.into(),
                observers: RwLock::new(Observers::default()),
            }),
        })
    }

    /// Reports events to `observers` (for this limiter and all its clones).
    #[must_use]
    pub fn with_observers(self, observers: Observers) -> Self {
        set_observers(&self.inner.observers, observers);
        self
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The bucket capacity.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity.load(Ordering::Relaxed)
    }

    /// Tokens available right now (0 while in debt or while waiters hold reservations).
    pub fn available(&self) -> u64 {
        let inner = &*self.inner;
        inner
            .gcra()
            .available(inner.tat.0.load(Ordering::Acquire), inner.now())
    }

    /// Takes `n` tokens now, or fails without waiting. `n == 0` always succeeds.
    ///
    /// # Errors
    /// [`RateLimitError::Limited`] with the time until `n` tokens would be available (this fails
    /// while [`RateLimiter::acquire`] waiters hold reservations, so they are not starved);
    /// [`RateLimitError::ExceedsCapacity`] when `n` is larger than the bucket.
    #[inline]
    pub fn try_acquire(&self, n: u64) -> Result<(), RateLimitError> {
        let inner = &*self.inner;
        let gcra = inner.gcra();
        if n > gcra.capacity {
            return Err(self.exceeds(n, gcra.capacity));
        }
        let now = inner.now();
        match inner.update(|tat| gcra.admit(tat, now, n).map(|new| (new, ()))) {
            Ok(()) => Ok(()),
            Err(wait) => {
                inner.limited(n);
                Err(RateLimitError::Limited {
                    requested: n,
                    retry_after: Duration::from_nanos(wait),
                })
            }
        }
    }

    /// Waits for `n` tokens, first come first served, up to the configured `max_wait`.
    ///
    /// The tokens are reserved when the future is first polled; the future then sleeps until the
    /// reservation is due. Dropping it before it completes returns the reservation.
    ///
    /// # Errors
    /// [`RateLimitError::ExceedsCapacity`] at once when `n` is larger than the bucket (it could
    /// never be served); [`RateLimitError::WaitTooLong`] at once, reserving nothing, when the
    /// wait would exceed `max_wait`.
    pub async fn acquire(&self, n: u64) -> Result<(), RateLimitError> {
        let max_wait = match self.inner.max_wait.load(Ordering::Relaxed) {
            NO_MAX_WAIT => None,
            ns => Some(Duration::from_nanos(ns)),
        };
        self.acquire_within(n, max_wait).await
    }

    /// Like [`RateLimiter::acquire`] with an explicit maximum wait (`None`: wait as long as needed).
    ///
    /// # Errors
    /// As [`RateLimiter::acquire`], with `max_wait` in place of the configured one.
    pub async fn acquire_within(
        &self,
        n: u64,
        max_wait: Option<Duration>,
    ) -> Result<(), RateLimitError> {
        let inner = &*self.inner;
        let gcra = inner.gcra();
        if n > gcra.capacity {
            return Err(self.exceeds(n, gcra.capacity));
        }
        let now = inner.now();
        let max = max_wait.map(nanos);
        let wait = inner.update(|tat| {
            let (new, wait) = gcra.reserve(tat, now, n);
            match max {
                Some(max) if wait > max => Err(wait),
                _ => Ok((new, wait)),
            }
        });
        let wait = match wait {
            Ok(wait) => wait,
            Err(wait) => {
                inner.limited(n);
                return Err(RateLimitError::WaitTooLong {
                    requested: n,
                    wait: Duration::from_nanos(wait),
                    max_wait: max_wait.unwrap_or_default(),
                });
            }
        };
        if wait == 0 {
            return Ok(());
        }
        inner.limited(n);
        let reservation = Reservation {
            inner,
            tokens: n,
            armed: true,
        };
        tokio::time::sleep(Duration::from_nanos(wait)).await;
        reservation.keep();
        Ok(())
    }

    /// Corrects an earlier acquisition of `reserved` tokens once `actual` usage is known: refunds
    /// the difference, or charges it — possibly into debt, which delays later callers by exactly
    /// the overdraft.
    pub fn settle(&self, reserved: u64, actual: u64) {
        let inner = &*self.inner;
        let gcra = inner.gcra();
        if actual < reserved {
            inner.refund(reserved - actual);
        } else if actual > reserved {
            let now = inner.now();
            let extra = actual - reserved;
            let _ = inner.update::<(), ()>(|tat| Ok((gcra.charge(tat, now, extra), ())));
        }
    }

    /// Follows the server's view: if it reports fewer `remaining` tokens than the bucket holds,
    /// the bucket is lowered to `remaining`; when `remaining` is 0 and `reset_after` is known, no
    /// token is handed out before it. The bucket is never raised (the server may count other
    /// clients), and after this it refills at the configured rate.
    pub fn observe_remaining(&self, remaining: u64, reset_after: Option<Duration>) {
        let inner = &*self.inner;
        let gcra = inner.gcra();
        let target = gcra.remaining_tat(inner.now(), remaining, reset_after.map(nanos));
        let _ = inner.update::<(), ()>(|tat| Ok((tat.max(target), ())));
    }

    /// Changes the bucket's shape (capacity, rate, max wait), keeping the tokens currently
    /// available (capped at the new capacity) and any debt. A call racing with this one may see
    /// the old or the new rate.
    ///
    /// # Errors
    /// [`RateLimitError::InvalidConfig`] as for [`RateLimiter::new`]; nothing changes then.
    pub fn set_rate(&self, config: RateLimitConfig) -> Result<(), RateLimitError> {
        let new = config.gcra()?;
        let inner = &*self.inner;
        let old = inner.gcra();
        let now = inner.now();
        inner.interval.store(new.interval, Ordering::Relaxed);
        inner.tolerance.store(new.tolerance, Ordering::Relaxed);
        inner.capacity.store(new.capacity, Ordering::Relaxed);
        inner.max_wait.store(
            config.max_wait.map_or(NO_MAX_WAIT, nanos),
            Ordering::Relaxed,
        );
        let _ = inner.update::<(), ()>(|tat| {
            // Credit in old nanoseconds (negative: debt or pending reservations), rescaled.
            let credit = i128::from(now) + i128::from(old.tolerance) - i128::from(tat.max(now));
            let credit = credit * i128::from(new.interval) / i128::from(old.interval);
            let new_tat = i128::from(now) + i128::from(new.tolerance) - credit;
            let new_tat = u64::try_from(new_tat.max(0)).unwrap_or(u64::MAX);
            Ok((new_tat, ()))
        });
        Ok(())
    }

    fn exceeds(&self, requested: u64, capacity: u64) -> RateLimitError {
        self.inner.limited(requested);
        RateLimitError::ExceedsCapacity {
            requested,
            capacity,
        }
    }
}

/// A pending reservation; returns its tokens if dropped before [`Reservation::keep`].
struct Reservation<'a> {
    inner: &'a Inner,
    tokens: u64,
    armed: bool,
}

impl Reservation<'_> {
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.refund(self.tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcra(capacity: u64, per_sec: u64) -> Gcra {
        RateLimitConfig::per_second(per_sec)
            .with_capacity(capacity)
            .gcra()
            .unwrap()
    }

    #[test]
    fn gcra_full_bucket_admits_capacity_then_refuses() {
        let g = gcra(3, 1);
        let mut tat = 0;
        for _ in 0..3 {
            tat = g.admit(tat, 0, 1).unwrap();
        }
        assert_eq!(g.admit(tat, 0, 1), Err(1_000_000_000));
        assert_eq!(g.available(tat, 0), 0);
        assert_eq!(g.available(tat, 2_000_000_000), 2);
    }

    #[test]
    fn gcra_remaining_lowers_but_reset_delays_first_token() {
        let g = gcra(10, 1);
        let tat = g.remaining_tat(0, 4, None);
        assert_eq!(g.available(tat, 0), 4);
        let tat = g.remaining_tat(0, 0, Some(30_000_000_000));
        assert_eq!(g.available(tat, 29_999_999_999), 0);
        assert_eq!(g.available(tat, 30_000_000_000), 1);
    }

    #[test]
    fn config_errors_name_the_field_and_value() {
        let err = RateLimitConfig::per_second(0).gcra().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid rate limit config: capacity (0) must be at least 1"
        );
        let mut c = RateLimitConfig::per_second(5);
        c.refill_period = Duration::ZERO;
        assert_eq!(
            c.gcra().unwrap_err().to_string(),
            "invalid rate limit config: refill_period (0s) must be positive"
        );
        let c = RateLimitConfig::per_second(2_000_000_000);
        assert!(matches!(
            c.gcra(),
            Err(RateLimitError::InvalidConfig {
                field: "refill_amount",
                ..
            })
        ));
        let c = RateLimitConfig::per_second(1).with_capacity(u64::MAX / 2);
        assert!(matches!(
            c.gcra(),
            Err(RateLimitError::InvalidConfig {
                field: "capacity",
                ..
            })
        ));
    }

    #[test]
    fn retryable_only_when_waiting_helps() {
        let limited = RateLimitError::Limited {
            requested: 1,
            retry_after: Duration::from_secs(2),
        };
        assert!(limited.is_retryable());
        assert_eq!(
            Retryable::retry_after(&limited),
            Some(Duration::from_secs(2))
        );
        let too_big = RateLimitError::ExceedsCapacity {
            requested: 9,
            capacity: 5,
        };
        assert!(!too_big.is_retryable());
        assert_eq!(
            too_big.to_string(),
            "request of 9 tokens exceeds the bucket capacity (5)"
        );
    }
}
