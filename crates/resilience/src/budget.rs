//! A retry budget: retries may add at most a fraction of the original load, plus a small floor.
//!
//! This is the TPS budget of Finagle and tower (`tower::retry::budget::TpsBudget`): every original
//! request [`deposit`](RetryBudget::deposit)s into a sliding window of `ttl`, and every retry must
//! [`try_withdraw`](RetryBudget::try_withdraw) first. Over any window of `ttl` the number of retries
//! is at most `retry_ratio × requests + min_retries_per_sec × ttl`, so a failing dependency sees at
//! most `(1 + retry_ratio)` times its normal load instead of `max_attempts` times (a retry storm).
//!
//! The window is split into [`BUCKETS`] buckets of `ttl / BUCKETS`; a bucket's deposits and
//! withdrawals expire together once it falls out of the window, so the budget refills as time
//! passes. Time is read through [`tokio::time::Instant`], so tests drive it with a paused clock.
//!
//! One budget is meant to guard many callers: it is cheap to clone and clones share their state.
//! A deposit is one clock read and one atomic add; withdrawals (only on the retry path) and bucket
//! rotation take a short lock, so a check-then-withdraw can never overdraw the budget.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How many buckets the sliding window is split into.
pub const BUCKETS: usize = 10;

/// Fixed-point scale for one deposit: a retry costs `SCALE / retry_ratio` units.
const SCALE: f64 = 1_000_000.0;

/// The smallest accepted `ttl`.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// The largest accepted `ttl`.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// The largest accepted `retry_ratio`.
pub const MAX_RETRY_RATIO: f64 = 1000.0;

/// Configuration of a [`RetryBudget`], validated by [`RetryBudget::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// How long a deposit counts towards the budget (the sliding window), e.g. 10s.
    pub ttl: Duration,
    /// Retries always allowed per second regardless of load (the floor), e.g. 10.
    pub min_retries_per_sec: u32,
    /// Retries allowed per original request, e.g. `0.2` (20% extra load).
    pub retry_ratio: f64,
}

impl Default for RetryBudgetConfig {
    /// `ttl` 10s, `min_retries_per_sec` 10, `retry_ratio` 0.2 (tower's defaults).
    fn default() -> Self {
        RetryBudgetConfig {
            ttl: Duration::from_secs(10),
            min_retries_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

/// An invalid [`RetryBudgetConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetConfigError {
    /// `ttl` outside [`MIN_TTL`, `MAX_TTL`].
    #[error("invalid retry budget: ttl ({0:?}) must be between 1ms and 1h")]
    Ttl(Duration),
    /// `retry_ratio` negative, not finite or above [`MAX_RETRY_RATIO`].
    #[error("invalid retry budget: retry_ratio ({0}) must be finite and between 0 and 1000")]
    RetryRatio(f64),
}

/// A shared retry budget (see the [module docs](self)).
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    config: RetryBudgetConfig,
    /// Units added by one deposit (0 when `retry_ratio` is 0: deposits then buy nothing).
    deposit_amount: i64,
    /// Units a retry costs.
    withdraw_amount: i64,
    /// Units always available in the window (the floor).
    reserve: i64,
    /// Bucket width in nanoseconds.
    bucket_nanos: u64,
    /// The clock's origin: buckets are numbered by `(now - start) / bucket_nanos`.
    start: Instant,
    /// `slots[gen % BUCKETS]` holds generation `gen`'s net balance (deposits minus withdrawals).
    slots: [AtomicI64; BUCKETS],
    /// The newest generation the slots were rotated to.
    generation: AtomicU64,
    /// Serialises rotation and withdrawals; deposits in the current generation skip it.
    lock: Mutex<()>,
}

impl RetryBudget {
    /// Creates a budget from `config`.
    ///
    /// # Errors
    ///
    /// [`BudgetConfigError`] when `ttl` is outside 1ms..=1h or `retry_ratio` is negative, not
    /// finite or above 1000.
    pub fn new(config: RetryBudgetConfig) -> Result<Self, BudgetConfigError> {
        if config.ttl < MIN_TTL || config.ttl > MAX_TTL {
            return Err(BudgetConfigError::Ttl(config.ttl));
        }
        let ratio = config.retry_ratio;
        if !ratio.is_finite() || !(0.0..=MAX_RETRY_RATIO).contains(&ratio) {
            return Err(BudgetConfigError::RetryRatio(ratio));
        }
        // With a zero ratio deposits are worthless and a retry costs one unit of the reserve.
        let (deposit_amount, withdraw_amount) = if ratio == 0.0 {
            (0, 1)
        } else {
            // Rounded so that e.g. 0.2 (not exact in binary) costs exactly 5 deposits.
            (SCALE as i64, ((SCALE / ratio).round() as i64).max(1))
        };
        let ttl_nanos = u64::try_from(config.ttl.as_nanos()).unwrap_or(u64::MAX);
        // Floor over the whole window: min_retries_per_sec × ttl (fractional seconds included).
        let floor = (f64::from(config.min_retries_per_sec) * config.ttl.as_secs_f64()).floor();
        let reserve = (floor as i64).saturating_mul(withdraw_amount);
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                config,
                deposit_amount,
                withdraw_amount,
                reserve,
                bucket_nanos: (ttl_nanos / BUCKETS as u64).max(1),
                start: Instant::now(),
                slots: std::array::from_fn(|_| AtomicI64::new(0)),
                generation: AtomicU64::new(0),
                lock: Mutex::new(()),
            }),
        })
    }

    /// The configuration this budget was built from.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.inner.config
    }

    /// Records one original request (not a retry): it earns `retry_ratio` retries for `ttl`.
    ///
    /// Lock-free unless the current bucket just ended (one atomic add and one clock read).
    #[inline]
    pub fn deposit(&self) {
        let inner = &*self.inner;
        if inner.deposit_amount == 0 {
            return;
        }
        let generation = inner.now_generation();
        if generation == inner.generation.load(Ordering::Acquire) {
            inner
                .slot(generation)
                .fetch_add(inner.deposit_amount, Ordering::AcqRel);
            return;
        }
        let _guard = inner.rotate(generation);
        inner
            .slot(generation)
            .fetch_add(inner.deposit_amount, Ordering::AcqRel);
    }

    /// Takes one retry from the budget; `false` when the budget is exhausted (do not retry).
    pub fn try_withdraw(&self) -> bool {
        let inner = &*self.inner;
        let generation = inner.now_generation();
        // Withdrawals are serialised by the lock, so check-then-take cannot overdraw; deposits
        // racing with the check only make the balance larger.
        let _guard = inner.rotate(generation);
        if inner.balance() >= inner.withdraw_amount {
            inner
                .slot(generation)
                .fetch_sub(inner.withdraw_amount, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// How many retries the budget would allow right now.
    pub fn available(&self) -> u64 {
        let inner = &*self.inner;
        let _guard = inner.rotate(inner.now_generation());
        u64::try_from(inner.balance() / inner.withdraw_amount).unwrap_or(0)
    }
}

impl Inner {
    fn now_generation(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        u64::try_from(elapsed.as_nanos() / u128::from(self.bucket_nanos)).unwrap_or(u64::MAX)
    }

    fn slot(&self, generation: u64) -> &AtomicI64 {
        &self.slots[(generation % BUCKETS as u64) as usize]
    }

    fn balance(&self) -> i64 {
        self.slots.iter().fold(self.reserve, |acc, slot| {
            acc.saturating_add(slot.load(Ordering::Acquire))
        })
    }

    /// Takes the lock and expires the buckets that fell out of the window before `generation`.
    fn rotate(&self, generation: u64) -> std::sync::MutexGuard<'_, ()> {
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.generation.load(Ordering::Acquire);
        if generation > current {
            // Clear the buckets of the generations being entered (all of them after a long gap).
            let stale = (generation - current).min(BUCKETS as u64);
            for step in 1..=stale {
                self.slot(current + step).store(0, Ordering::Release);
            }
            self.generation.store(generation, Ordering::Release);
        }
        guard
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.inner.config)
            .field("available", &self.available())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ttl_secs: u64, floor: u32, ratio: f64) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            ttl: Duration::from_secs(ttl_secs),
            min_retries_per_sec: floor,
            retry_ratio: ratio,
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn floor_only_allows_min_per_sec_times_ttl() {
        let b = budget(10, 2, 0.5);
        assert_eq!(b.available(), 20);
        for _ in 0..20 {
            assert!(b.try_withdraw());
        }
        assert!(!b.try_withdraw());
        assert_eq!(b.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_buy_ratio_retries() {
        let b = budget(10, 0, 0.2);
        assert!(!b.try_withdraw());
        for _ in 0..4 {
            b.deposit();
        }
        assert!(!b.try_withdraw(), "4 deposits at 0.2 buy no whole retry");
        b.deposit();
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ratio_uses_only_the_floor() {
        let b = budget(1, 3, 0.0);
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.available(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn refills_when_the_window_slides() {
        let b = budget(10, 1, 0.2);
        for _ in 0..10 {
            b.deposit();
        }
        // 10 floor + 2 earned.
        let mut taken = 0;
        while b.try_withdraw() {
            taken += 1;
        }
        assert_eq!(taken, 12);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.try_withdraw(), "withdrawals still inside the window");
        tokio::time::advance(Duration::from_secs(5)).await;
        // Everything (deposits and withdrawals) expired: only the floor is back.
        assert_eq!(b.available(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn old_buckets_expire_one_by_one() {
        let b = budget(10, 0, 1.0);
        b.deposit(); // bucket 0
        tokio::time::advance(Duration::from_secs(5)).await;
        b.deposit(); // bucket 5
        assert_eq!(b.available(), 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.available(), 1, "bucket 0 expired, bucket 5 still counts");
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(b.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_state() {
        let a = budget(10, 1, 0.2);
        let b = a.clone();
        for _ in 0..10 {
            assert!(a.try_withdraw());
        }
        assert!(!b.try_withdraw());
    }

    #[test]
    fn concurrent_callers_never_overdraw() {
        // No runtime: the budget falls back to the real clock; a 1h window keeps every deposit
        // and withdrawal inside it however slow the machine is.
        let b = RetryBudget::new(RetryBudgetConfig {
            ttl: Duration::from_secs(3600),
            min_retries_per_sec: 0,
            retry_ratio: 0.25,
        })
        .unwrap();
        let withdrawn = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..2000 {
                        b.deposit();
                        // Every caller wants two retries per request: far more than allowed.
                        for _ in 0..2 {
                            if b.try_withdraw() {
                                withdrawn.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        // 8000 deposits at 0.25 buy exactly 2000 retries; greedy callers take all of them.
        assert_eq!(withdrawn.load(Ordering::Relaxed), 2000);
        assert_eq!(b.available(), 0);
    }

    #[test]
    fn rejects_bad_config() {
        let bad_ttl = RetryBudgetConfig {
            ttl: Duration::ZERO,
            ..RetryBudgetConfig::default()
        };
        let err = RetryBudget::new(bad_ttl).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid retry budget: ttl (0ns) must be between 1ms and 1h"
        );
        for ratio in [-0.1, f64::NAN, f64::INFINITY, 1000.5] {
            let cfg = RetryBudgetConfig {
                retry_ratio: ratio,
                ..RetryBudgetConfig::default()
            };
            assert!(matches!(
                RetryBudget::new(cfg),
                Err(BudgetConfigError::RetryRatio(_))
            ));
        }
        let too_long = RetryBudgetConfig {
            ttl: Duration::from_secs(3601),
            ..RetryBudgetConfig::default()
        };
        assert_eq!(
            RetryBudget::new(too_long).unwrap_err(),
            BudgetConfigError::Ttl(Duration::from_secs(3601))
        );
    }
}
