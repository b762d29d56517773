//! A named timeout around a future, reporting [`Event::TimedOut`].
//!
//! Thin over [`tokio::time::timeout`], so it runs on the tokio clock (pausable in tests). The inner
//! future is polled before the timer, so a future that is ready at once succeeds even with a zero
//! timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::Retryable;
use crate::event::{Event, Observers};

/// The error of a [`Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeoutError {
    /// The future did not finish in time and was dropped.
    #[error("timed out after {after:?}")]
    Elapsed {
        /// The timeout that elapsed.
        after: Duration,
    },
}

impl Retryable for TimeoutError {
    /// A timeout is worth retrying: the next attempt may be faster.
    fn is_retryable(&self) -> bool {
        true
    }
}

/// A named timeout; cheap to clone.
#[derive(Debug, Clone)]
pub struct Timeout {
    name: Arc<str>,
    after: Duration,
    observers: Observers,
}

impl Timeout {
    /// A timeout of `after` named `name` (used in events and metrics), observing nothing.
    pub fn new(name: impl Into<Arc<str>>, after: Duration) -> Self {
        Timeout {
            name: name.into(),
            after,
            observers: Observers::default(),
        }
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

    /// The timeout duration.
    pub fn duration(&self) -> Duration {
        self.after
    }

    /// Runs `fut`, dropping it if it has not finished after the timeout.
    ///
    /// # Errors
    ///
    /// [`TimeoutError::Elapsed`] when the timeout elapsed first; [`Event::TimedOut`] is emitted.
    pub async fn run<F: Future>(&self, fut: F) -> Result<F::Output, TimeoutError> {
        match tokio::time::timeout(self.after, fut).await {
            Ok(output) => Ok(output),
            Err(_) => {
                self.observers.emit(Event::TimedOut {
                    name: &self.name,
                    after: self.after,
                });
                Err(TimeoutError::Elapsed { after: self.after })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);
    impl crate::event::Observer for Record {
        fn on_event(&self, event: &Event<'_>) {
            self.0.lock().unwrap().push(format!("{event:?}"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn finishes_in_time() {
        let t = Timeout::new("t", Duration::from_secs(1));
        let out = t
            .run(async {
                tokio::time::sleep(Duration::from_millis(999)).await;
                7
            })
            .await;
        assert_eq!(out, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn elapses_and_emits() {
        let rec = Arc::new(Record::default());
        let t =
            Timeout::new("llm", Duration::from_secs(2)).with_observers(Observers::new(rec.clone()));
        let start = tokio::time::Instant::now();
        let out = t.run(std::future::pending::<()>()).await;
        assert_eq!(
            out,
            Err(TimeoutError::Elapsed {
                after: Duration::from_secs(2)
            })
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(out.unwrap_err().to_string(), "timed out after 2s");
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![format!(
                "{:?}",
                Event::TimedOut {
                    name: "llm",
                    after: Duration::from_secs(2)
                }
            )]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_timeout_still_lets_a_ready_future_through() {
        let t = Timeout::new("t", Duration::ZERO);
        assert_eq!(t.run(async { 1 }).await, Ok(1));
        assert!(
            t.run(tokio::time::sleep(Duration::from_nanos(1)))
                .await
                .is_err()
        );
    }
}
