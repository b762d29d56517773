//! tower adapters for retry, timeout and bulkhead.
#![cfg(feature = "tower")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use quorum_resilience::tower::{BulkheadLayer, RetryLayer, ServiceError, TimeoutLayer};
use quorum_resilience::{
    Bulkhead, BulkheadConfig, BulkheadError, ErrorClassifier, GiveUpReason, Jitter, Retry,
    RetryError, RetryPolicy, Retryable, Timeout, TimeoutError,
};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

#[derive(Debug, Clone, PartialEq)]
enum TestError {
    Transient,
    Permanent,
    NotReady,
}

impl Retryable for TestError {
    fn is_retryable(&self) -> bool {
        *self == TestError::Transient
    }
}

/// A service that fails its first `fail_first` calls, optionally sleeps, and insists on being
/// readied before each call.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicU32>,
    fail_first: u32,
    failure: TestError,
    latency: Duration,
    ready: bool,
}

impl Upstream {
    fn new(fail_first: u32) -> Self {
        Upstream {
            calls: Arc::new(AtomicU32::new(0)),
            fail_first,
            failure: TestError::Transient,
            latency: Duration::ZERO,
            ready: false,
        }
    }
}

impl Service<u32> for Upstream {
    type Response = u32;
    type Error = TestError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, TestError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TestError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        if !std::mem::take(&mut self.ready) {
            return Box::pin(async { Err(TestError::NotReady) });
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = n <= self.fail_first;
        let failure = self.failure.clone();
        let latency = self.latency;
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if fail { Err(failure) } else { Ok(req * 2) }
        })
    }
}

/// `ServiceExt::oneshot` without the `tower` crate.
async fn call<S: Service<R>, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error> {
    poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

fn retry(max_attempts: u32) -> Retry {
    Retry::new(
        "upstream",
        RetryPolicy {
            max_attempts,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            jitter: Jitter::None,
            ..RetryPolicy::default()
        },
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_layer_retries_transient_errors_readying_each_clone() {
    let upstream = Upstream::new(2);
    let calls = Arc::clone(&upstream.calls);
    let mut svc = RetryLayer::new(retry(5), ErrorClassifier).layer(upstream);
    let start = Instant::now();
    assert_eq!(call(&mut svc, 21).await.unwrap(), 42);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    // The service stays usable.
    assert_eq!(call(&mut svc, 1).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_layer_gives_up_and_keeps_the_error() {
    let upstream = Upstream::new(u32::MAX);
    let calls = Arc::clone(&upstream.calls);
    let mut svc = RetryLayer::new(retry(3), ErrorClassifier).layer(upstream);
    let err = call(&mut svc, 1).await.unwrap_err();
    assert!(matches!(
        err,
        RetryError::Failed {
            error: TestError::Transient,
            attempts: 3,
            reason: GiveUpReason::AttemptsExhausted
        }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_layer_does_not_retry_permanent_errors() {
    let mut upstream = Upstream::new(u32::MAX);
    upstream.failure = TestError::Permanent;
    let calls = Arc::clone(&upstream.calls);
    let mut svc = RetryLayer::new(retry(3), ErrorClassifier).layer(upstream);
    let err = call(&mut svc, 1).await.unwrap_err();
    assert_eq!(err.last_error(), Some(&TestError::Permanent));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn timeout_layer_times_out_slow_calls() {
    let mut slow = Upstream::new(0);
    slow.latency = Duration::from_secs(5);
    let mut svc = TimeoutLayer::new(Timeout::new("upstream", Duration::from_secs(2))).layer(slow);
    let start = Instant::now();
    let err = call(&mut svc, 1).await.unwrap_err();
    assert!(matches!(
        err,
        ServiceError::Timeout(TimeoutError::Elapsed { after }) if after == Duration::from_secs(2)
    ));
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    let mut fast =
        TimeoutLayer::new(Timeout::new("upstream", Duration::from_secs(2))).layer(Upstream::new(1));
    assert!(matches!(
        call(&mut fast, 1).await,
        Err(ServiceError::Inner(TestError::Transient))
    ));
    assert_eq!(call(&mut fast, 4).await.unwrap(), 8);
}

#[tokio::test(start_paused = true)]
async fn retry_over_timeout_retries_a_timed_out_call() {
    // First call is slow (times out), the rest are fast: the stack succeeds on attempt 2.
    #[derive(Clone)]
    struct SlowOnce(Arc<AtomicU32>);
    impl Service<u32> for SlowOnce {
        type Response = u32;
        type Error = TestError;
        type Future = Pin<Box<dyn Future<Output = Result<u32, TestError>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TestError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: u32) -> Self::Future {
            let first = self.0.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(req)
            })
        }
    }
    let calls = Arc::new(AtomicU32::new(0));
    let timeout = TimeoutLayer::new(Timeout::new("upstream", Duration::from_secs(1)));
    let mut svc = RetryLayer::new(retry(3), ErrorClassifier)
        .layer(timeout.layer(SlowOnce(Arc::clone(&calls))));
    let start = Instant::now();
    assert_eq!(call(&mut svc, 7).await.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(1100));
}

#[tokio::test(start_paused = true)]
async fn bulkhead_layer_sheds_excess_calls() {
    let bulkhead = Bulkhead::new(
        "upstream",
        BulkheadConfig {
            max_concurrent: 1,
            max_waiting: 0,
            wait_timeout: None,
        },
    )
    .unwrap();
    let mut slow = Upstream::new(0);
    slow.latency = Duration::from_secs(1);
    let calls = Arc::clone(&slow.calls);
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(slow);

    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let first = tokio::spawn(svc.call(1));
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.in_flight(), 1);

    let err = call(&mut svc, 2).await.unwrap_err();
    assert!(matches!(
        err,
        ServiceError::Bulkhead(BulkheadError::Full { .. })
    ));
    assert!(err.is_retryable());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the shed call never reached the service"
    );

    assert_eq!(first.await.unwrap().unwrap(), 2);
    assert_eq!(bulkhead.in_flight(), 0);
    assert_eq!(call(&mut svc, 3).await.unwrap(), 6);
}

#[tokio::test(start_paused = true)]
async fn layered_services_are_clone() {
    fn assert_clone<T: Clone>(_: &T) {}
    let bulkhead = Bulkhead::new("b", BulkheadConfig::default()).unwrap();
    let svc = RetryLayer::new(retry(2), ErrorClassifier).layer(
        TimeoutLayer::new(Timeout::new("t", Duration::from_secs(1)))
            .layer(BulkheadLayer::new(bulkhead).layer(Upstream::new(0))),
    );
    assert_clone(&svc);
    let mut svc = svc.clone();
    assert_eq!(call(&mut svc, 5).await.unwrap(), 10);
}
