//! tower [`Layer`]/[`Service`] adapters for [`Retry`], [`Timeout`] and [`Bulkhead`] (feature
//! `tower`).
//!
//! Each adapter wraps the plain type, so one instance (and its shared state, name and observers)
//! can serve plain async code and a tower stack at once. Futures are boxed (`Send + 'static`),
//! which keeps the services `Clone` and their types nameable.
//!
//! - [`RetryLayer`] needs `Request: Clone` and a `Clone` inner service: each call takes the
//!   readied inner service for its first attempt and clones it for every retry (driving the
//!   clone's `poll_ready` before calling it), so retries never hold `&mut self`. The classifier
//!   judges `Result<S::Response, S::Error>`.
//! - [`TimeoutLayer`] runs each call's future under the [`Timeout`].
//! - [`BulkheadLayer`] takes its permit **inside the call's future**, not in `poll_ready`:
//!   `poll_ready` only delegates to the inner service. A permit acquired in `poll_ready` would
//!   have to be stored in the service, which breaks the usual `clone`-then-`call` pattern (a
//!   clone would not carry the permit) and would hold a slot while the caller is not yet calling.
//!   Acquiring in `call` keeps the service `Clone` and lets the bulkhead reject excess calls fast
//!   with [`BulkheadError::Full`] through the response future, as load shedding should.
//!
//! [`TimeoutService`] and [`BulkheadService`] report [`ServiceError`], which implements
//! [`Retryable`] (timeouts and bulkhead refusals are retryable, inner errors judge themselves) so
//! a [`RetryLayer`] above them can use [`ErrorClassifier`](crate::ErrorClassifier).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::bulkhead::{Bulkhead, BulkheadError};
use crate::classify::{Classifier, Retryable};
use crate::retry::{GiveUpReason, Retry, RetryError};
use crate::timeout::{Timeout, TimeoutError};

/// The boxed response future of every adapter here.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The error of [`TimeoutService`] and [`BulkheadService`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError<E> {
    /// The inner service failed.
    #[error("inner service failed")]
    Inner(#[source] E),
    /// The call timed out.
    #[error(transparent)]
    Timeout(#[from] TimeoutError),
    /// The bulkhead refused the call.
    #[error(transparent)]
    Bulkhead(#[from] BulkheadError),
}

impl<E: Retryable> Retryable for ServiceError<E> {
    fn is_retryable(&self) -> bool {
        match self {
            ServiceError::Inner(e) => e.is_retryable(),
            ServiceError::Timeout(e) => e.is_retryable(),
            ServiceError::Bulkhead(e) => e.is_retryable(),
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ServiceError::Inner(e) => e.retry_after(),
            ServiceError::Timeout(_) | ServiceError::Bulkhead(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Retry

/// Retries calls to the inner service with a [`Retry`] and a classifier.
pub struct RetryLayer<C> {
    retry: Retry,
    classifier: Arc<C>,
}

impl<C> RetryLayer<C> {
    /// A layer retrying with `retry`, judging results with `classifier`.
    pub fn new(retry: Retry, classifier: C) -> Self {
        RetryLayer {
            retry,
            classifier: Arc::new(classifier),
        }
    }
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        RetryLayer {
            retry: self.retry.clone(),
            classifier: Arc::clone(&self.classifier),
        }
    }
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = RetryService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retry: self.retry.clone(),
            classifier: Arc::clone(&self.classifier),
        }
    }
}

/// The service made by [`RetryLayer`].
pub struct RetryService<S, C> {
    inner: S,
    retry: Retry,
    classifier: Arc<C>,
}

impl<S: Clone, C> Clone for RetryService<S, C> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            retry: self.retry.clone(),
            classifier: Arc::clone(&self.classifier),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for RetryService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// One attempt's call: the first uses the readied service, later ones a fresh clone.
enum Step<S, F, R> {
    Called(F),
    Fresh(S, R),
}

impl<S, C, Req> Service<Req> for RetryService<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Clone + Send + 'static,
    C: Classifier<S::Response, S::Error> + 'static,
{
    type Response = S::Response;
    type Error = RetryError<S::Error>;
    type Future = BoxFuture<Result<S::Response, RetryError<S::Error>>>;

    /// Delegates to the inner service; an error there (the service is broken) is reported as
    /// [`RetryError::Failed`] with 0 attempts and [`GiveUpReason::Permanent`].
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|error| RetryError::Failed {
                error,
                attempts: 0,
                reason: GiveUpReason::Permanent,
            })
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let retry = self.retry.clone();
        let classifier = Arc::clone(&self.classifier);
        Box::pin(async move {
            let op = move |attempt: u32| {
                let step = if attempt == 1 {
                    Step::Called(service.call(req.clone()))
                } else {
                    Step::Fresh(service.clone(), req.clone())
                };
                async move {
                    match step {
                        Step::Called(fut) => fut.await,
                        Step::Fresh(mut fresh, req) => {
                            poll_fn(|cx| fresh.poll_ready(cx)).await?;
                            fresh.call(req).await
                        }
                    }
                }
            };
            retry.run(op, &*classifier).await
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Timeout

/// Applies a [`Timeout`] to every call.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    timeout: Timeout,
}

impl TimeoutLayer {
    /// A layer applying `timeout`.
    pub fn new(timeout: Timeout) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            timeout: self.timeout.clone(),
        }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    timeout: Timeout,
}

impl<S, Req> Service<Req> for TimeoutService<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = ServiceError<S::Error>;
    type Future = BoxFuture<Result<S::Response, ServiceError<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ServiceError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let timeout = self.timeout.clone();
        Box::pin(async move {
            match timeout.run(fut).await {
                Ok(result) => result.map_err(ServiceError::Inner),
                Err(elapsed) => Err(ServiceError::Timeout(elapsed)),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Bulkhead

/// Admits calls through a [`Bulkhead`] (permit taken in the call's future; see the module docs).
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer admitting calls through `bulkhead` (shared with its other clones).
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// The service made by [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = ServiceError<S::Error>;
    type Future = BoxFuture<Result<S::Response, ServiceError<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ServiceError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let bulkhead = self.bulkhead.clone();
        Box::pin(async move {
            let _permit = bulkhead.acquire().await?;
            service.call(req).await.map_err(ServiceError::Inner)
        })
    }
}
