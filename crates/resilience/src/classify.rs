//! How an operation's result is judged: success, worth retrying, or permanent.

use std::time::Duration;

/// The verdict on one call's result, as the retry loop and the circuit breaker need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call succeeded.
    Success,
    /// The call failed and trying again may help; `retry_after` is the server's hint, if any.
    Retryable {
        /// How long the server asked us to wait (`Retry-After`), honoured up to a configured cap.
        retry_after: Option<Duration>,
    },
    /// The call failed and trying again cannot help (bad input, auth, quota exhausted, ...).
    Permanent,
}

impl Verdict {
    /// A retryable failure without a server hint.
    pub const RETRYABLE: Verdict = Verdict::Retryable { retry_after: None };

    /// Whether this verdict is a failure of any kind.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Verdict::Success)
    }
}

/// Maps an operation's result to a [`Verdict`].
///
/// Implement it for your error type's policy; closures `Fn(&Result<T, E>) -> Verdict` implement it too.
pub trait Classifier<T, E>: Send + Sync {
    /// Judges one result.
    fn classify(&self, result: &Result<T, E>) -> Verdict;

    /// Whether a failure with this verdict counts against a circuit breaker.
    ///
    /// By default only retryable failures count: a permanent failure such as a 400 from bad input
    /// says nothing about the health of the dependency and must not open the breaker.
    fn counts_as_failure(&self, verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Retryable { .. })
    }
}

impl<T, E, F> Classifier<T, E> for F
where
    F: Fn(&Result<T, E>) -> Verdict + Send + Sync,
{
    fn classify(&self, result: &Result<T, E>) -> Verdict {
        self(result)
    }
}

/// Errors that can judge themselves, so [`ErrorClassifier`] can classify any `Result<T, E>`.
pub trait Retryable {
    /// Whether trying again may help.
    fn is_retryable(&self) -> bool;

    /// The server's hint of how long to wait before trying again.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// A classifier for any error implementing [`Retryable`]: `Ok` is success, errors judge themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorClassifier;

impl<T, E: Retryable> Classifier<T, E> for ErrorClassifier {
    fn classify(&self, result: &Result<T, E>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(e) if e.is_retryable() => Verdict::Retryable {
                retry_after: e.retry_after(),
            },
            Err(_) => Verdict::Permanent,
        }
    }
}

/// A classifier that treats every `Err` as retryable: handy for tests and simple clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyErrorRetryable;

impl<T, E> Classifier<T, E> for AnyErrorRetryable {
    fn classify(&self, result: &Result<T, E>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(_) => Verdict::RETRYABLE,
        }
    }
}
