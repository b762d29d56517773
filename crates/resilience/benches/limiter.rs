//! Rate limiter and circuit breaker hot paths, side by side with the `governor` crate.
//!
//! `cargo bench -p quorum-resilience --bench limiter -- --warm-up-time 1 --measurement-time 3`
//!
//! - `try_acquire/*`: one thread, a bucket that never runs dry (10⁹ tokens per second). Ours with
//!   the default tokio clock (pausable in tests) and with the opt-in TSC clock (`Clock::tsc`, the
//!   clock governor uses); `tokio_instant_now` is the cost of one tokio clock read.
//! - `contended_2_threads/*`: two threads hammering one shared limiter; time is wall time per
//!   operation over both threads.
//! - `breaker_closed/*`: acquire a permit and record a success on a closed breaker.
//! - `keyed_hot_key/*`: a keyed limiter, always the same key.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter as Governor};
use quorum_resilience::{
    BreakerConfig, CircuitBreaker, Clock, KeyedConfig, KeyedRateLimiter, RateLimitConfig,
    RateLimiter, SlidingWindow, SlowCallConfig,
};
use tokio::time::Instant;

const RATE: u32 = 1_000_000_000;

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(RATE).unwrap_or(NonZeroU32::MIN))
}

fn ours(clock: Clock) -> RateLimiter {
    match RateLimiter::with_clock("bench", RateLimitConfig::per_second(u64::from(RATE)), clock) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

fn try_acquire(c: &mut Criterion) {
    let mut g = c.benchmark_group("try_acquire");
    let l = ours(Clock::tokio());
    g.bench_function("quorum_tokio_clock", |b| {
        b.iter(|| black_box(l.try_acquire(1).is_ok()))
    });
    let l = ours(Clock::tsc());
    g.bench_function("quorum_tsc_clock", |b| {
        b.iter(|| black_box(l.try_acquire(1).is_ok()))
    });
    let gov = Governor::direct(quota());
    g.bench_function("governor", |b| b.iter(|| black_box(gov.check().is_ok())));
    g.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(Instant::now()))
    });
    g.finish();
}

/// Runs `op` `iters` times split over two threads started together; returns the wall time.
fn two_threads(iters: u64, op: Arc<dyn Fn() -> bool + Send + Sync>) -> Duration {
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (op, barrier) = (op.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut ok = 0u64;
                for _ in 0..iters / 2 {
                    ok += u64::from(op());
                }
                black_box(ok)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        let _ = t.join();
    }
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_2_threads");
    for (name, clock) in [
        ("quorum_tokio_clock", Clock::tokio()),
        ("quorum_tsc_clock", Clock::tsc()),
    ] {
        let l = ours(clock);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let l = l.clone();
                two_threads(iters, Arc::new(move || l.try_acquire(1).is_ok()))
            })
        });
    }
    let gov = Arc::new(Governor::direct(quota()));
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            let gov = gov.clone();
            two_threads(iters, Arc::new(move || gov.check().is_ok()))
        })
    });
    g.finish();
}

fn breaker_closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed");
    let cases = [
        ("count_window", BreakerConfig::default()),
        (
            "count_window_slow_calls",
            BreakerConfig {
                slow_call: Some(SlowCallConfig {
                    duration: Duration::from_secs(10),
                    rate_threshold: 50.0,
                }),
                ..BreakerConfig::default()
            },
        ),
        (
            "time_window_slow_calls",
            BreakerConfig {
                window: SlidingWindow::Time(Duration::from_secs(60)),
                slow_call: Some(SlowCallConfig {
                    duration: Duration::from_secs(10),
                    rate_threshold: 50.0,
                }),
                ..BreakerConfig::default()
            },
        ),
    ];
    for (name, config) in cases {
        for (clock_name, clock) in [("tokio_clock", Clock::tokio()), ("tsc_clock", Clock::tsc())] {
            let b = match CircuitBreaker::with_clock("bench", config, clock) {
                Ok(b) => b,
                Err(e) => panic!("{e}"),
            };
            g.bench_function(format!("{name}/{clock_name}"), |bench| {
                bench.iter(|| {
                    if let Ok(permit) = b.try_acquire() {
                        permit.success();
                    }
                })
            });
        }
    }
    g.finish();
}

fn keyed_hot_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed_hot_key");
    let config = RateLimitConfig::per_second(u64::from(RATE));
    let k: KeyedRateLimiter<String> =
        match KeyedRateLimiter::new("bench", config, KeyedConfig::default()) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        };
    let key = "sk-user-1234".to_string();
    g.bench_function("quorum_string_key", |b| {
        b.iter(|| black_box(k.try_acquire(&key, 1).is_ok()))
    });
    let k64: KeyedRateLimiter<u64> =
        match KeyedRateLimiter::with_clock("bench", config, KeyedConfig::default(), Clock::tsc()) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        };
    g.bench_function("quorum_u64_key_tsc_clock", |b| {
        b.iter(|| black_box(k64.try_acquire(&42, 1).is_ok()))
    });
    let gov = Governor::hashmap(quota());
    g.bench_function("governor_hashmap_string_key", |b| {
        b.iter(|| black_box(gov.check_key(&key).is_ok()))
    });
    g.finish();
}

criterion_group!(
    benches,
    try_acquire,
    contended,
    breaker_closed,
    keyed_hot_key
);
criterion_main!(benches);
