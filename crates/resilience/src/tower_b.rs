//! tower adapters for the circuit breaker and the rate limiter (feature `tower`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{BreakerError, BreakerOpen, CircuitBreaker, OwnedBreakerPermit};
use crate::classify::{Classifier, Retryable};
use crate::rate_limit::{RateLimitError, RateLimiter};

/// Wraps a service in a [`CircuitBreaker`]: calls are rejected with [`BreakerError::Open`] while
/// it is open, and each response is judged by the classifier and recorded.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer sharing `breaker` (clones share state) and judging results with `classifier`.
    pub fn new(breaker: CircuitBreaker, classifier: C) -> Self {
        CircuitBreakerLayer {
            breaker,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = BreakerFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let state = match self.breaker.try_acquire_owned() {
            Ok(permit) => State::Running {
                fut: self.inner.call(req),
                permit: Some(permit),
                classifier: self.classifier.clone(),
            },
            Err(open) => State::Rejected { error: Some(open) },
        };
        BreakerFuture { state }
    }
}

pin_project! {
    /// The response future of [`CircuitBreakerService`].
    pub struct BreakerFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C> {
        Running {
            #[pin]
            fut: F,
            permit: Option<OwnedBreakerPermit>,
            classifier: C,
        },
        Rejected {
            error: Option<BreakerOpen>,
        },
    }
}

impl<F, C, T, E> Future for BreakerFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
{
    type Output = Result<T, BreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running {
                fut,
                permit,
                classifier,
            } => {
                let result = std::task::ready!(fut.poll(cx));
                if let Some(permit) = permit.take() {
                    let verdict = classifier.classify(&result);
                    permit.finish(verdict.is_failure() && classifier.counts_as_failure(&verdict));
                }
                Poll::Ready(result.map_err(BreakerError::Inner))
            }
            StateProj::Rejected { error } => match error.take() {
                Some(open) => Poll::Ready(Err(BreakerError::Open(open))),
                None => panic!("BreakerFuture polled after completion"),
            },
        }
    }
}

/// How many tokens a request costs.
pub trait Weigher<Req>: Send + Sync {
    /// The request's cost in tokens (for a tokens-per-minute limit: the estimated tokens).
    fn weigh(&self, req: &Req) -> u64;
}

/// Every request costs one token.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnePerRequest;

impl<Req> Weigher<Req> for OnePerRequest {
    fn weigh(&self, _req: &Req) -> u64 {
        1
    }
}

impl<Req, F> Weigher<Req> for F
where
    F: Fn(&Req) -> u64 + Send + Sync,
{
    fn weigh(&self, req: &Req) -> u64 {
        self(req)
    }
}

/// Waits for tokens from a [`RateLimiter`] before passing each request on (FIFO, up to the
/// limiter's `max_wait`); one token per request unless a weight function is set.
#[derive(Debug, Clone)]
pub struct RateLimitLayer<W = OnePerRequest> {
    limiter: RateLimiter,
    weigher: Arc<W>,
}

impl RateLimitLayer {
    /// A layer taking one token per request from `limiter` (clones share the bucket).
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer {
            limiter,
            weigher: Arc::new(OnePerRequest),
        }
    }
}

impl<W> RateLimitLayer<W> {
    /// Charges each request `weigher(&request)` tokens instead.
    pub fn with_weight<W2>(self, weigher: W2) -> RateLimitLayer<W2> {
        RateLimitLayer {
            limiter: self.limiter,
            weigher: Arc::new(weigher),
        }
    }
}

impl<S, W> Layer<S> for RateLimitLayer<W> {
    type Service = RateLimitService<S, W>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
            weigher: Arc::clone(&self.weigher),
        }
    }
}

/// The service made by [`RateLimitLayer`]. The inner service must be `Clone`: the ready service
/// is moved into the response future, which waits for tokens before calling it.
#[derive(Debug, Clone)]
pub struct RateLimitService<S, W> {
    inner: S,
    limiter: RateLimiter,
    weigher: Arc<W>,
}

/// The error of [`RateLimitService`]: the limiter refused, or the call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitServiceError<E> {
    /// The limiter refused the request (too large, or the wait would exceed `max_wait`).
    #[error(transparent)]
    Limited(RateLimitError),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

impl<E: Retryable> Retryable for RateLimitServiceError<E> {
    fn is_retryable(&self) -> bool {
        match self {
            RateLimitServiceError::Limited(e) => e.is_retryable(),
            RateLimitServiceError::Inner(e) => e.is_retryable(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimitServiceError::Limited(e) => Retryable::retry_after(e),
            RateLimitServiceError::Inner(e) => e.retry_after(),
        }
    }
}

/// The response future of [`RateLimitService`].
pub type RateLimitFuture<T, E> =
    Pin<Box<dyn Future<Output = Result<T, RateLimitServiceError<E>>> + Send>>;

impl<S, W, Req> Service<Req> for RateLimitService<S, W>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    W: Weigher<Req>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = RateLimitServiceError<S::Error>;
    type Future = RateLimitFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(RateLimitServiceError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let tokens = self.weigher.weigh(&req);
        let limiter = self.limiter.clone();
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            limiter
                .acquire(tokens)
                .await
                .map_err(RateLimitServiceError::Limited)?;
            ready.call(req).await.map_err(RateLimitServiceError::Inner)
        })
    }
}
