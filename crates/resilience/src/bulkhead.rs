//! A bulkhead: at most `max_concurrent` calls in flight, a bounded wait queue, and fast rejection
//! of the excess (load shedding).
//!
//! A call first tries to take a permit without waiting. If none is free and fewer than
//! `max_waiting` callers are queued, it waits (in FIFO order: tokio's [`Semaphore`] is fair) for
//! at most `wait_timeout`; otherwise it is rejected at once with [`BulkheadError::Full`], which costs
//! no waiting at all. Permits are released when the [`BulkheadPermit`] is dropped, including when a
//! call's future is cancelled.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::classify::Retryable;
use crate::event::{Event, Observers};

/// Configuration of a [`Bulkhead`], validated by [`Bulkhead::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Calls allowed in flight at once (at least 1).
    pub max_concurrent: usize,
    /// Callers allowed to wait for a permit; beyond that calls are rejected at once. 0 disables
    /// queueing.
    pub max_waiting: usize,
    /// How long a queued caller waits before giving up; `None` waits as long as it takes.
    pub wait_timeout: Option<Duration>,
}

impl Default for BulkheadConfig {
    /// 16 concurrent calls, 16 waiting, 1s wait timeout.
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: 16,
            max_waiting: 16,
            wait_timeout: Some(Duration::from_secs(1)),
        }
    }
}

/// An invalid [`BulkheadConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BulkheadConfigError {
    /// `max_concurrent` is 0 or above [`Semaphore::MAX_PERMITS`].
    #[error("invalid bulkhead: max_concurrent ({0}) must be between 1 and {max}", max = Semaphore::MAX_PERMITS)]
    MaxConcurrent(usize),
    /// `wait_timeout` is zero.
    #[error(
        "invalid bulkhead: wait_timeout (0s) must be positive (set max_waiting to 0 to disable queueing)"
    )]
    ZeroWaitTimeout,
}

/// Why a [`Bulkhead`] refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BulkheadError {
    /// Every permit was taken and the wait queue was full: rejected without waiting.
    #[error("bulkhead full: {max_concurrent} calls in flight and {max_waiting} waiting")]
    Full {
        /// The bulkhead's `max_concurrent`.
        max_concurrent: usize,
        /// The bulkhead's `max_waiting`.
        max_waiting: usize,
    },
    /// The call waited in the queue for `wait_timeout` without getting a permit.
    #[error("bulkhead wait timed out after {after:?}")]
    WaitTimeout {
        /// The wait timeout that elapsed.
        after: Duration,
    },
}

impl Retryable for BulkheadError {
    /// Both are overload signals: retrying later (with backoff and a budget) may succeed.
    fn is_retryable(&self) -> bool {
        true
    }
}

/// A concurrency limiter with a bounded wait queue; cheap to clone, clones share the limit.
#[derive(Clone)]
pub struct Bulkhead {
    name: Arc<str>,
    inner: Arc<Inner>,
    observers: Observers,
}

struct Inner {
    config: BulkheadConfig,
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Proof of admission into a [`Bulkhead`]; the slot is freed when it is dropped.
#[must_use = "the bulkhead slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BulkheadPermit")
    }
}

/// Decrements the waiting count when a queued caller leaves the queue (also on cancellation).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A bulkhead named `name` (used in events and metrics), observing nothing.
    ///
    /// # Errors
    ///
    /// [`BulkheadConfigError`] when `max_concurrent` is 0 (or above tokio's semaphore limit) or
    /// `wait_timeout` is zero.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: BulkheadConfig,
    ) -> Result<Self, BulkheadConfigError> {
        if config.max_concurrent == 0 || config.max_concurrent > Semaphore::MAX_PERMITS {
            return Err(BulkheadConfigError::MaxConcurrent(config.max_concurrent));
        }
        if config.wait_timeout == Some(Duration::ZERO) {
            return Err(BulkheadConfigError::ZeroWaitTimeout);
        }
        Ok(Bulkhead {
            name: name.into(),
            inner: Arc::new(Inner {
                config,
                semaphore: Arc::new(Semaphore::new(config.max_concurrent)),
                waiting: AtomicUsize::new(0),
            }),
            observers: Observers::default(),
        })
    }

    /// Reports events to `observers`.
    #[must_use]
    pub fn with_observers(mut self, observers: Observers) -> Self {
        self.observers = observers;
        self
    }

    /// The name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration this bulkhead was built from.
    pub fn config(&self) -> &BulkheadConfig {
        &self.inner.config
    }

    /// Calls currently holding a permit.
    pub fn in_flight(&self) -> usize {
        self.inner.config.max_concurrent - self.inner.semaphore.available_permits()
    }

    /// Callers currently queued for a permit.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Takes a permit, waiting in the queue if there is room in it.
    ///
    /// # Errors
    ///
    /// [`BulkheadError::Full`] at once when no permit is free and the queue is full
    /// ([`Event::BulkheadRejected`]); [`BulkheadError::WaitTimeout`] after waiting `wait_timeout`
    /// in the queue ([`Event::BulkheadTimedOut`]).
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadError> {
        let inner = &*self.inner;
        match Arc::clone(&inner.semaphore).try_acquire_owned() {
            Ok(permit) => return Ok(BulkheadPermit { _permit: permit }),
            // The semaphore is never closed; treat it like "no permits" regardless.
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {}
        }
        // Reserve a queue slot, or shed the call.
        let reserved = inner
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < inner.config.max_waiting).then_some(w + 1)
            });
        if reserved.is_err() {
            self.observers
                .emit(Event::BulkheadRejected { name: &self.name });
            return Err(self.full());
        }
        let _waiting = Waiting(&inner.waiting);
        let acquire = Arc::clone(&inner.semaphore).acquire_owned();
        let permit = match inner.config.wait_timeout {
            None => acquire.await,
            Some(after) => match tokio::time::timeout(after, acquire).await {
                Ok(permit) => permit,
                Err(_) => {
                    self.observers
                        .emit(Event::BulkheadTimedOut { name: &self.name });
                    return Err(BulkheadError::WaitTimeout { after });
                }
            },
        };
        match permit {
            Ok(permit) => Ok(BulkheadPermit { _permit: permit }),
            // Unreachable in practice: the semaphore is private and never closed.
            Err(_) => Err(self.full()),
        }
    }

    /// Runs `fut` once admitted; the permit is held until `fut` finishes (or is dropped).
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); `fut` is not polled when the call is refused.
    pub async fn run<F: Future>(&self, fut: F) -> Result<F::Output, BulkheadError> {
        let _permit = self.acquire().await?;
        Ok(fut.await)
    }

    fn full(&self) -> BulkheadError {
        BulkheadError::Full {
            max_concurrent: self.inner.config.max_concurrent,
            max_waiting: self.inner.config.max_waiting,
        }
    }
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.name)
            .field("config", &self.inner.config)
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_config() {
        let zero = BulkheadConfig {
            max_concurrent: 0,
            ..BulkheadConfig::default()
        };
        let err = Bulkhead::new("b", zero).unwrap_err();
        assert_eq!(err, BulkheadConfigError::MaxConcurrent(0));
        assert!(
            err.to_string()
                .starts_with("invalid bulkhead: max_concurrent (0) must be between 1 and ")
        );
        let zero_wait = BulkheadConfig {
            wait_timeout: Some(Duration::ZERO),
            ..BulkheadConfig::default()
        };
        assert_eq!(
            Bulkhead::new("b", zero_wait).unwrap_err(),
            BulkheadConfigError::ZeroWaitTimeout
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_queue_rejects_immediately() {
        let b = Bulkhead::new(
            "b",
            BulkheadConfig {
                max_concurrent: 1,
                max_waiting: 0,
                wait_timeout: None,
            },
        )
        .unwrap();
        let p = b.acquire().await.unwrap();
        assert_eq!(
            b.acquire().await.unwrap_err(),
            BulkheadError::Full {
                max_concurrent: 1,
                max_waiting: 0
            }
        );
        drop(p);
        assert!(b.acquire().await.is_ok());
    }
}
