//! Rate limiter and keyed rate limiter: bursts, refill, FIFO waiters, weights, settling, server
//! feedback, bounded keys, on the paused tokio clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_resilience::{
    Event, KeyedConfig, KeyedRateLimiter, Observer, Observers, RateLimitConfig, RateLimitError,
    RateLimiter, WhenFull,
};
use tokio::time::{Instant, advance, sleep};

/// Records rate-limit events as `(name, tokens)`.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u64)>>);

impl Observer for Recorder {
    fn on_event(&self, event: &Event<'_>) {
        if let Event::RateLimited { name, tokens } = event {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((name.to_string(), *tokens));
        }
    }
}

const MS: Duration = Duration::from_millis(1);

/// `capacity` tokens, refilled at `per_sec` per second.
fn limiter(capacity: u64, per_sec: u64) -> RateLimiter {
    RateLimiter::new(
        "api",
        RateLimitConfig::per_second(per_sec).with_capacity(capacity),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn limited(retry_after: Duration, requested: u64) -> RateLimitError {
    RateLimitError::Limited {
        requested,
        retry_after,
    }
}

#[tokio::test(start_paused = true)]
async fn burst_of_capacity_then_refusal() {
    let l = limiter(5, 1);
    for _ in 0..5 {
        l.try_acquire(1).unwrap();
    }
    assert_eq!(l.try_acquire(1), Err(limited(Duration::from_secs(1), 1)));
    assert_eq!(l.try_acquire(3), Err(limited(Duration::from_secs(3), 3)));
    assert_eq!(l.available(), 0);
    l.try_acquire(0).unwrap();
}

#[tokio::test(start_paused = true)]
async fn refill_over_time_is_exact() {
    let l = limiter(5, 10); // one token per 100 ms
    l.try_acquire(5).unwrap();
    advance(299 * MS).await;
    assert_eq!(l.available(), 2);
    assert_eq!(l.try_acquire(3), Err(limited(MS, 3)));
    advance(MS).await;
    l.try_acquire(3).unwrap();
    assert_eq!(l.available(), 0);
    // The bucket never holds more than its capacity.
    advance(Duration::from_secs(3600)).await;
    assert_eq!(l.available(), 5);
    assert!(l.try_acquire(5).is_ok());
    assert!(l.try_acquire(1).is_err());
}

#[tokio::test(start_paused = true)]
async fn async_waiters_are_served_fifo_with_exact_times() {
    let l = limiter(10, 10); // one token per 100 ms
    l.try_acquire(10).unwrap();
    let start = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, n) in [("a", 5), ("b", 1), ("c", 3), ("d", 2)] {
        let (l, done) = (l.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            l.acquire(n).await.unwrap();
            done.lock().unwrap().push((name, start.elapsed()));
        }));
        tokio::task::yield_now().await; // let it reserve, in spawn order
    }
    // Tokens accrue meanwhile, but the waiters' reservations come first: no starvation.
    advance(300 * MS).await;
    assert!(l.try_acquire(1).is_err());
    for t in tasks {
        t.await.unwrap();
    }
    let done = done.lock().unwrap().clone();
    assert_eq!(
        done,
        vec![
            ("a", 500 * MS),
            ("b", 600 * MS),
            ("c", 900 * MS),
            ("d", 1100 * MS),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn weighted_acquire_waits_for_the_missing_tokens() {
    // 1000 tokens per minute: one per 60 ms.
    let l = RateLimiter::new("tpm", RateLimitConfig::per_minute(1000)).unwrap();
    let start = Instant::now();
    l.acquire(600).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    l.acquire(600).await.unwrap();
    assert_eq!(start.elapsed(), 200 * 60 * MS);
}

#[tokio::test(start_paused = true)]
async fn settle_refunds_the_unused_estimate() {
    let l = RateLimiter::new("tpm", RateLimitConfig::per_minute(1000)).unwrap();
    l.acquire(1000).await.unwrap();
    l.settle(1000, 300);
    assert_eq!(l.available(), 700);
    l.settle(10, 10); // exact: no change
    assert_eq!(l.available(), 700);
    // A refund never overfills the bucket.
    l.settle(5000, 0);
    assert_eq!(l.available(), 1000);
}

#[tokio::test(start_paused = true)]
async fn settle_charge_into_debt_delays_the_next_caller_exactly() {
    let l = limiter(10, 1);
    l.acquire(10).await.unwrap();
    l.settle(10, 15); // 5 tokens of debt
    assert_eq!(l.available(), 0);
    assert_eq!(l.try_acquire(1), Err(limited(Duration::from_secs(6), 1)));
    let start = Instant::now();
    l.acquire(1).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(6),
        "5 s of debt + 1 s for the token"
    );
}

#[tokio::test(start_paused = true)]
async fn oversize_requests_fail_at_once() {
    let rec = Arc::new(Recorder::default());
    let l = limiter(10, 1).with_observers(Observers::new(rec.clone()));
    let exceeds = RateLimitError::ExceedsCapacity {
        requested: 11,
        capacity: 10,
    };
    assert_eq!(l.try_acquire(11), Err(exceeds.clone()));
    let start = Instant::now();
    assert_eq!(l.acquire(11).await, Err(exceeds.clone()));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(l.available(), 10, "nothing was taken");
    assert_eq!(
        exceeds.to_string(),
        "request of 11 tokens exceeds the bucket capacity (10)"
    );
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec![("api".to_string(), 11), ("api".to_string(), 11)]
    );
}

#[tokio::test(start_paused = true)]
async fn max_wait_is_checked_up_front() {
    let l = RateLimiter::new(
        "api",
        RateLimitConfig::per_second(1)
            .with_capacity(10)
            .with_max_wait(Duration::from_secs(2)),
    )
    .unwrap();
    l.try_acquire(10).unwrap();
    let start = Instant::now();
    let err = l.acquire(3).await.unwrap_err();
    assert_eq!(
        err,
        RateLimitError::WaitTooLong {
            requested: 3,
            wait: Duration::from_secs(3),
            max_wait: Duration::from_secs(2),
        }
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "failed without waiting");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    // Nothing was reserved: a request that fits within max_wait is served on time.
    l.acquire(2).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    // An explicit bound overrides the configured one.
    l.acquire_within(5, None).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn dropped_waiter_returns_its_reservation() {
    let l = limiter(10, 1);
    l.try_acquire(10).unwrap();
    // Reserves 5 tokens (due at 5 s), then gives up after 1 s.
    let gave_up = tokio::time::timeout(Duration::from_secs(1), l.acquire(5)).await;
    assert!(gave_up.is_err());
    assert_eq!(l.available(), 1, "the reservation went back");
    l.try_acquire(1).unwrap();
    // An aborted waiter's tokens go back to the bucket for the next caller (waiters already
    // scheduled keep their times).
    let first = tokio::spawn({
        let l = l.clone();
        async move { l.acquire(4).await }
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    let second = tokio::spawn({
        let l = l.clone();
        async move {
            l.acquire(1).await.unwrap();
            Instant::now()
        }
    });
    tokio::task::yield_now().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // 5 tokens accrue in the next 5 s: one for `second`, four for a newcomer (without the
    // refund it would wait 9 s).
    l.acquire(4).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(second.await.unwrap() - start, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn server_feedback_lowers_but_never_raises() {
    let l = RateLimiter::new("tpm", RateLimitConfig::per_minute(1000)).unwrap();
    l.observe_remaining(100, Some(Duration::from_secs(60)));
    assert_eq!(l.available(), 100);
    l.observe_remaining(500, None);
    assert_eq!(
        l.available(),
        100,
        "the server may count other clients: never raise"
    );
    l.observe_remaining(0, Some(Duration::from_secs(30)));
    assert_eq!(l.try_acquire(1), Err(limited(Duration::from_secs(30), 1)));
    advance(Duration::from_secs(30)).await;
    l.try_acquire(1).unwrap();
}

#[tokio::test(start_paused = true)]
async fn set_rate_keeps_the_tokens_and_changes_the_pace() {
    let l = limiter(10, 1);
    l.try_acquire(4).unwrap();
    l.set_rate(RateLimitConfig::per_second(20)).unwrap(); // 50 ms per token, 20 capacity
    assert_eq!(l.capacity(), 20);
    assert_eq!(l.available(), 6);
    advance(100 * MS).await;
    assert_eq!(l.available(), 8);
    // Shrinking the capacity caps what is available.
    l.set_rate(RateLimitConfig::per_second(5)).unwrap();
    assert_eq!(l.available(), 5);
    let bad = l.set_rate(RateLimitConfig::per_second(0)).unwrap_err();
    assert!(matches!(
        bad,
        RateLimitError::InvalidConfig {
            field: "capacity",
            ..
        }
    ));
    assert_eq!(l.capacity(), 5, "a bad config changes nothing");
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_bucket_and_refusals_are_observed() {
    let rec = Arc::new(Recorder::default());
    let l = limiter(2, 1).with_observers(Observers::new(rec.clone()));
    let c = l.clone();
    l.try_acquire(1).unwrap();
    c.try_acquire(1).unwrap();
    assert!(l.try_acquire(1).is_err());
    assert_eq!(*rec.0.lock().unwrap(), vec![("api".to_string(), 1)]);
    assert_eq!(c.name(), "api");
}

#[test]
fn bad_config_is_a_clear_error() {
    let mut config = RateLimitConfig::per_second(10);
    config.refill_amount = 0;
    let err = RateLimiter::new("api", config).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid rate limit config: refill_amount (0) must be at least 1"
    );
}

// --- keyed ---

fn keyed(capacity: u64, per_sec: u64, keys: KeyedConfig) -> KeyedRateLimiter<String> {
    KeyedRateLimiter::new(
        "per-user",
        RateLimitConfig::per_second(per_sec).with_capacity(capacity),
        keys,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn key(s: &str) -> String {
    s.to_string()
}

#[tokio::test(start_paused = true)]
async fn keyed_isolates_keys() {
    let k = keyed(3, 1, KeyedConfig::default());
    k.try_acquire(&key("alice"), 3).unwrap();
    assert_eq!(
        k.try_acquire(&key("alice"), 1),
        Err(limited(Duration::from_secs(1), 1))
    );
    k.try_acquire(&key("bob"), 3).unwrap();
    k.settle(&key("bob"), 3, 1).unwrap();
    assert_eq!(k.available(&key("bob")), 2, "settling refunds per key");
    assert_eq!(k.available(&key("alice")), 0);
    assert_eq!(k.available(&key("carol")), 3);
    assert_eq!(k.len(), 2, "a lookup does not create a key");
    // Waiting, settling and server feedback are per key too.
    let start = Instant::now();
    k.acquire(&key("alice"), 2).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(k.available(&key("bob")), 3, "refilled, capped at capacity");
    k.observe_remaining(&key("bob"), 1, None).unwrap();
    assert_eq!(k.available(&key("bob")), 1);
    assert_eq!(
        k.try_acquire(&key("bob"), 4),
        Err(RateLimitError::ExceedsCapacity {
            requested: 4,
            capacity: 3
        })
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_evicts_idle_keys() {
    let k = keyed(3, 1, KeyedConfig::default());
    k.try_acquire(&key("a"), 1).unwrap();
    k.try_acquire(&key("b"), 3).unwrap();
    advance(Duration::from_secs(1)).await;
    assert_eq!(k.evict_idle(), 1, "a is full again, b is not");
    assert_eq!(k.len(), 1);
    advance(Duration::from_secs(2)).await;
    assert_eq!(k.evict_idle(), 1);
    assert!(k.is_empty());
    // An evicted key starts again from a full bucket: exactly where it was.
    k.try_acquire(&key("b"), 3).unwrap();
}

#[tokio::test(start_paused = true)]
async fn keyed_sweeps_idle_keys_every_n_operations() {
    let k = keyed(
        10,
        1,
        KeyedConfig {
            sweep_every: 4,
            ..KeyedConfig::default()
        },
    );
    for i in 0..200 {
        k.try_acquire(&format!("old-{i}"), 1).unwrap();
    }
    advance(Duration::from_secs(1)).await; // all of them idle now
    for i in 0..200 {
        k.try_acquire(&format!("new-{i}"), 1).unwrap();
    }
    // Every shard saw more than `sweep_every` operations since, so the old keys are gone.
    assert_eq!(k.len(), 200);
}

#[tokio::test(start_paused = true)]
async fn keyed_stays_within_max_keys_under_10k_distinct_keys() {
    let k = keyed(
        10,
        1,
        KeyedConfig {
            max_keys: 100,
            ..KeyedConfig::default()
        },
    );
    for i in 0..10_000 {
        k.try_acquire(&format!("user-{i}"), 1).unwrap();
        assert!(k.len() <= 100);
        if i % 1000 == 0 {
            advance(MS).await;
        }
    }
    assert_eq!(k.len(), 100);
}

#[tokio::test(start_paused = true)]
async fn keyed_evicts_the_least_recently_used_when_full() {
    let k = keyed(
        5,
        1,
        KeyedConfig {
            max_keys: 2,
            ..KeyedConfig::default()
        },
    );
    k.try_acquire(&key("a"), 1).unwrap();
    advance(MS).await;
    k.try_acquire(&key("b"), 1).unwrap();
    advance(MS).await;
    k.try_acquire(&key("a"), 1).unwrap(); // a is now the most recent
    advance(MS).await;
    k.try_acquire(&key("c"), 1).unwrap();
    assert_eq!(k.len(), 2);
    assert_eq!(k.available(&key("b")), 5, "b was evicted");
    assert_eq!(k.available(&key("a")), 3, "a kept its state");
}

#[tokio::test(start_paused = true)]
async fn keyed_refuses_new_keys_when_full_if_configured() {
    let k = keyed(
        5,
        1,
        KeyedConfig {
            max_keys: 3,
            when_full: WhenFull::Refuse,
            ..KeyedConfig::default()
        },
    );
    for name in ["a", "b", "c"] {
        k.try_acquire(&key(name), 1).unwrap();
    }
    let err = k.try_acquire(&key("d"), 1).unwrap_err();
    assert_eq!(err, RateLimitError::TooManyKeys { max_keys: 3 });
    assert_eq!(
        err.to_string(),
        "too many keys: max_keys (3) reached and no key is idle"
    );
    k.try_acquire(&key("a"), 1).unwrap(); // known keys still work
    advance(Duration::from_secs(1)).await; // b and c are idle again
    k.try_acquire(&key("d"), 1).unwrap();
    assert_eq!(k.len(), 2, "idle keys made room");
}

#[tokio::test(start_paused = true)]
async fn keyed_dropped_waiter_returns_its_reservation() {
    let k = keyed(2, 1, KeyedConfig::default());
    k.try_acquire(&key("a"), 2).unwrap();
    let gave_up = tokio::time::timeout(Duration::from_secs(1), k.acquire(&key("a"), 2)).await;
    assert!(gave_up.is_err());
    assert_eq!(k.available(&key("a")), 1);
}

#[cfg(feature = "tower")]
mod tower {
    use std::future::Ready;
    use std::task::{Context, Poll};

    use quorum_resilience::{RateLimitLayer, RateLimitServiceError};
    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;

    #[derive(Clone)]
    struct Echo;

    impl Service<u64> for Echo {
        type Response = (u64, Instant);
        type Error = std::convert::Infallible;
        type Future = Ready<Result<(u64, Instant), std::convert::Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: u64) -> Self::Future {
            std::future::ready(Ok((req, Instant::now())))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn layer_waits_for_one_token_per_request() {
        let start = Instant::now();
        let mut svc = RateLimitLayer::new(limiter(2, 1)).layer(Echo);
        let mut times = Vec::new();
        for i in 0..4 {
            let (_, at) = svc.call(i).await.unwrap();
            times.push(at - start);
        }
        assert_eq!(times, [0, 0, 1, 2].map(Duration::from_secs).to_vec());
    }

    #[tokio::test(start_paused = true)]
    async fn layer_charges_the_weight_and_refuses_oversize() {
        let start = Instant::now();
        let layer = RateLimitLayer::new(limiter(10, 1)).with_weight(|tokens: &u64| *tokens);
        let mut svc = layer.layer(Echo);
        let (_, at) = svc.call(10).await.unwrap();
        assert_eq!(at - start, Duration::ZERO);
        let (_, at) = svc.call(3).await.unwrap();
        assert_eq!(at - start, Duration::from_secs(3));
        let err = svc.call(11).await.unwrap_err();
        assert!(matches!(
            err,
            RateLimitServiceError::Limited(RateLimitError::ExceedsCapacity { .. })
        ));
    }
}

// Sleep is only used to let spawned tasks run on the paused clock.
#[tokio::test(start_paused = true)]
async fn acquire_zero_is_immediate() {
    let l = limiter(1, 1);
    l.try_acquire(1).unwrap();
    let start = Instant::now();
    l.acquire(0).await.unwrap();
    sleep(Duration::ZERO).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[test]
fn tsc_clock_limits_on_real_time() {
    use quorum_resilience::Clock;
    // No runtime and no paused clock: the TSC clock runs on its own.
    let l = RateLimiter::with_clock("tsc", RateLimitConfig::per_minute(3), Clock::tsc()).unwrap();
    for _ in 0..3 {
        l.try_acquire(1).unwrap();
    }
    let retry = l.try_acquire(1).unwrap_err().retry_after().unwrap();
    assert!(
        retry > Duration::from_secs(19) && retry <= Duration::from_secs(20),
        "{retry:?}"
    );
    let k: KeyedRateLimiter<u8> = KeyedRateLimiter::with_clock(
        "tsc",
        RateLimitConfig::per_minute(1),
        KeyedConfig::default(),
        Clock::tsc(),
    )
    .unwrap();
    k.try_acquire(&1, 1).unwrap();
    assert!(k.try_acquire(&1, 1).is_err());
    k.try_acquire(&2, 1).unwrap();
}
