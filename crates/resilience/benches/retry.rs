//! Overhead of the retry wrapper on a first attempt that succeeds at once.
//!
//! The futures are polled once with a no-op waker: with no deadline or per-attempt timeout the
//! retry loop needs no runtime, so the figures are the wrapper's cost alone. The target is < 100ns
//! over the direct call.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use quorum_resilience::{
    AnyErrorRetryable, Jitter, Retry, RetryBudget, RetryBudgetConfig, RetryPolicy,
};

/// Polls `fut` once; the benchmarked futures are always ready on the first poll.
fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked future must be ready at once"),
    }
}

async fn operation(attempt: u32) -> Result<u64, &'static str> {
    Ok(u64::from(black_box(attempt)))
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(10),
        multiplier: 2.0,
        jitter: Jitter::Full,
        ..RetryPolicy::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("retry_first_attempt_ok");

    group.bench_function("direct", |b| {
        b.iter(|| poll_once(operation(black_box(1))));
    });

    let plain = match Retry::new("bench", policy()) {
        Ok(retry) => retry,
        Err(e) => panic!("bad policy: {e}"),
    };
    group.bench_function("retry", |b| {
        b.iter(|| poll_once(plain.run(operation, &AnyErrorRetryable)));
    });

    let budget = match RetryBudget::new(RetryBudgetConfig::default()) {
        Ok(budget) => budget,
        Err(e) => panic!("bad budget: {e}"),
    };
    let budgeted = match Retry::builder("bench", policy()).budget(budget).build() {
        Ok(retry) => retry,
        Err(e) => panic!("bad policy: {e}"),
    };
    group.bench_function("retry_with_budget", |b| {
        b.iter(|| poll_once(budgeted.run(operation, &AnyErrorRetryable)));
    });

    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
