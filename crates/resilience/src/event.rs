//! Observability hooks: every mechanism reports what it does to an [`Observer`], without knowing
//! about metrics or logging. `quorum-resilience`'s `prometheus` feature ships one observer that
//! turns events into Prometheus metrics; embedders may add their own (tracing, tests).

use std::sync::Arc;
use std::time::Duration;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are recorded in the window.
    Closed,
    /// Calls are rejected until the open duration elapses.
    Open,
    /// A fixed number of probe calls decide whether to close or re-open.
    HalfOpen,
    /// Held open by an operator until reset.
    ForcedOpen,
    /// Held closed by an operator until reset: every call is admitted, nothing is judged.
    ForcedClosed,
}

impl BreakerState {
    /// The gauge value exported for this state: closed 0, half-open 1, open 2 (forced states map
    /// to the state they behave like).
    pub fn gauge_value(self) -> i64 {
        match self {
            BreakerState::Closed | BreakerState::ForcedClosed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open | BreakerState::ForcedOpen => 2,
        }
    }

    /// A short lowercase name (`closed`, `open`, `half_open`, `forced_open`, `forced_closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::ForcedClosed => "forced_closed",
        }
    }
}

/// Something a resilience mechanism did. `name` is the instance's name (e.g. `openai/gpt-4o`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A retry loop is about to sleep and try again.
    Retry {
        /// The retry policy's name.
        name: &'a str,
        /// The attempt that just failed (1-based).
        attempt: u32,
        /// How long it will wait before the next attempt.
        delay: Duration,
    },
    /// A retry was wanted but the retry budget refused it.
    RetryBudgetExhausted {
        /// The retry policy's name.
        name: &'a str,
    },
    /// A retry loop gave up (attempts or deadline exhausted, or a permanent error).
    RetryGaveUp {
        /// The retry policy's name.
        name: &'a str,
        /// Attempts made.
        attempts: u32,
    },
    /// A circuit breaker changed state.
    BreakerTransition {
        /// The breaker's name.
        name: &'a str,
        /// The state before.
        from: BreakerState,
        /// The state after.
        to: BreakerState,
    },
    /// A circuit breaker rejected a call without running it.
    BreakerRejected {
        /// The breaker's name.
        name: &'a str,
        /// The state that rejected it.
        state: BreakerState,
    },
    /// A rate limiter refused or delayed a request.
    RateLimited {
        /// The limiter's name.
        name: &'a str,
        /// Tokens requested.
        tokens: u64,
    },
    /// A bulkhead shed a call because its wait queue was full.
    BulkheadRejected {
        /// The bulkhead's name.
        name: &'a str,
    },
    /// A call waited in a bulkhead's queue past the wait timeout.
    BulkheadTimedOut {
        /// The bulkhead's name.
        name: &'a str,
    },
    /// A call ran past its timeout and was abandoned.
    TimedOut {
        /// The timeout's name.
        name: &'a str,
        /// The timeout that elapsed.
        after: Duration,
    },
}

/// Receives [`Event`]s. Implementations must be cheap: they run on the caller's path.
pub trait Observer: Send + Sync + 'static {
    /// Called for every event.
    fn on_event(&self, event: &Event<'_>);
}

/// A shareable observer handle; the default observes nothing.
#[derive(Clone, Default)]
pub struct Observers(Option<Arc<dyn Observer>>);

impl Observers {
    /// An observer handle that forwards to `observer`.
    pub fn new(observer: Arc<dyn Observer>) -> Self {
        Observers(Some(observer))
    }

    /// Forwards `event` to the observer, if any.
    #[inline]
    pub fn emit(&self, event: Event<'_>) {
        if let Some(o) = &self.0 {
            o.on_event(&event);
        }
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observers(Some)"
        } else {
            "Observers(None)"
        })
    }
}
