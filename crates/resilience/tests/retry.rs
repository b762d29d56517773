//! Retry loop and retry budget, on the paused tokio clock.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_resilience::{
    AnyErrorRetryable, ErrorClassifier, Event, GiveUpReason, Jitter, Observer, Observers, Retry,
    RetryBudget, RetryBudgetConfig, RetryError, RetryPolicy, Retryable, Verdict,
};
use tokio::time::Instant;

/// An owned copy of the events this crate's retry loop emits.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Retry { attempt: u32, delay: Duration },
    GaveUp { attempts: u32 },
    BudgetExhausted,
    TimedOut { after: Duration },
    Other,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl Recorder {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Observer for Recorder {
    fn on_event(&self, event: &Event<'_>) {
        let seen = match *event {
            Event::Retry { attempt, delay, .. } => Seen::Retry { attempt, delay },
            Event::RetryGaveUp { attempts, .. } => Seen::GaveUp { attempts },
            Event::RetryBudgetExhausted { .. } => Seen::BudgetExhausted,
            Event::TimedOut { after, .. } => Seen::TimedOut { after },
            _ => Seen::Other,
        };
        self.0.lock().unwrap().push(seen);
    }
}

#[derive(Debug, Clone, PartialEq)]
struct TestError {
    retryable: bool,
    retry_after: Option<Duration>,
    id: u32,
}

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "test error {}", self.id)
    }
}

impl std::error::Error for TestError {}

impl Retryable for TestError {
    fn is_retryable(&self) -> bool {
        self.retryable
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

fn transient(id: u32) -> TestError {
    TestError {
        retryable: true,
        retry_after: None,
        id,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn exact_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay: ms(100),
        max_delay: ms(1000),
        multiplier: 2.0,
        jitter: Jitter::None,
        ..RetryPolicy::default()
    }
}

fn recorded(policy: RetryPolicy) -> (Retry, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let retry = Retry::builder("test", policy)
        .observers(Observers::new(rec.clone()))
        .seed(1)
        .build()
        .unwrap();
    (retry, rec)
}

/// Runs an always-failing operation, returning the error and the offsets of each attempt.
async fn failing_attempt_times(retry: &Retry) -> (RetryError<TestError>, Vec<Duration>) {
    let start = Instant::now();
    let times = Mutex::new(Vec::new());
    let err = retry
        .run(
            |attempt| {
                times.lock().unwrap().push(start.elapsed());
                async move { Err::<(), _>(transient(attempt)) }
            },
            &ErrorClassifier,
        )
        .await
        .unwrap_err();
    (err, times.into_inner().unwrap())
}

#[tokio::test(start_paused = true)]
async fn backoff_sequence_is_exact_without_jitter() {
    let (retry, rec) = recorded(exact_policy(6));
    let (err, times) = failing_attempt_times(&retry).await;
    assert_eq!(
        times,
        [0, 100, 300, 700, 1500, 2500].map(ms).to_vec(),
        "delays 100, 200, 400, 800, then capped at 1000"
    );
    assert_eq!(err.attempts(), 6);
    assert!(matches!(
        &err,
        RetryError::Failed {
            error,
            attempts: 6,
            reason: GiveUpReason::AttemptsExhausted
        } if error.id == 6
    ));
    assert_eq!(
        err.to_string(),
        "gave up after 6 attempt(s): attempts exhausted"
    );
    let events = rec.take();
    let delays: Vec<Seen> = [100, 200, 400, 800, 1000]
        .iter()
        .zip(1..)
        .map(|(&d, attempt)| Seen::Retry {
            attempt,
            delay: ms(d),
        })
        .chain([Seen::GaveUp { attempts: 6 }])
        .collect();
    assert_eq!(events, delays);
}

/// The gaps between attempts for `jitter` with seed `seed`.
async fn gaps(jitter: Jitter, seed: u64) -> Vec<Duration> {
    let policy = RetryPolicy {
        jitter,
        ..exact_policy(8)
    };
    let retry = Retry::builder("j", policy).seed(seed).build().unwrap();
    let (_, times) = failing_attempt_times(&retry).await;
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn jitter_bounds_for_each_mode() {
    let base = [100, 200, 400, 800, 1000, 1000, 1000].map(ms);
    let mut all_full = Vec::new();
    for seed in 0..30 {
        let full = gaps(Jitter::Full, seed).await;
        for (g, b) in full.iter().zip(base) {
            assert!(*g <= b, "full jitter {g:?} > {b:?}");
        }
        all_full.extend(full);

        let equal = gaps(Jitter::Equal, seed).await;
        for (g, b) in equal.iter().zip(base) {
            assert!(
                *g >= b / 2 && *g <= b,
                "equal jitter {g:?} not in [{:?}, {b:?}]",
                b / 2
            );
        }

        let decorrelated = gaps(Jitter::Decorrelated, seed).await;
        let mut previous = ms(100);
        for g in &decorrelated {
            assert!(*g >= ms(100), "decorrelated below initial: {g:?}");
            assert!(
                *g <= (previous * 3).min(ms(1000)),
                "decorrelated above 3x previous"
            );
            previous = *g;
        }
    }
    // The jitter really spreads: not all delays equal the base.
    assert!(all_full.iter().zip(base.iter().cycle()).any(|(g, b)| g < b));
    // Same seed, same sequence; different seed, different sequence.
    assert_eq!(gaps(Jitter::Full, 9).await, gaps(Jitter::Full, 9).await);
    assert_ne!(gaps(Jitter::Full, 9).await, gaps(Jitter::Full, 10).await);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_one_never_retries() {
    let (retry, rec) = recorded(exact_policy(1));
    let (err, times) = failing_attempt_times(&retry).await;
    assert_eq!(times, vec![Duration::ZERO]);
    assert_eq!(err.attempts(), 1);
    assert_eq!(rec.take(), vec![Seen::GaveUp { attempts: 1 }]);
}

#[tokio::test(start_paused = true)]
async fn succeeds_after_transient_failures() {
    let (retry, rec) = recorded(exact_policy(5));
    let start = Instant::now();
    let out = retry
        .run(
            |attempt| async move {
                if attempt < 3 {
                    Err(transient(attempt))
                } else {
                    Ok(attempt * 10)
                }
            },
            &ErrorClassifier,
        )
        .await;
    assert_eq!(out.unwrap(), 30);
    assert_eq!(start.elapsed(), ms(300));
    assert_eq!(
        rec.take(),
        vec![
            Seen::Retry {
                attempt: 1,
                delay: ms(100)
            },
            Seen::Retry {
                attempt: 2,
                delay: ms(200)
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_error_is_not_retried() {
    let (retry, rec) = recorded(exact_policy(5));
    let calls = AtomicU32::new(0);
    let err = retry
        .run(
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Err::<(), _>(TestError {
                        retryable: false,
                        retry_after: None,
                        id: 1,
                    })
                }
            },
            &ErrorClassifier,
        )
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(
        err,
        RetryError::Failed {
            attempts: 1,
            reason: GiveUpReason::Permanent,
            ..
        }
    ));
    assert_eq!(err.last_error().map(|e| e.id), Some(1));
    assert_eq!(rec.take(), vec![Seen::GaveUp { attempts: 1 }]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_exactly() {
    let (retry, rec) = recorded(exact_policy(3));
    let start = Instant::now();
    let times = Mutex::new(Vec::new());
    let out = retry
        .run(
            |attempt| {
                times.lock().unwrap().push(start.elapsed());
                async move {
                    if attempt == 1 {
                        Err(TestError {
                            retryable: true,
                            retry_after: Some(Duration::from_secs(7)),
                            id: 1,
                        })
                    } else {
                        Ok("done")
                    }
                }
            },
            &ErrorClassifier,
        )
        .await;
    assert_eq!(out.unwrap(), "done");
    assert_eq!(
        times.into_inner().unwrap(),
        vec![Duration::ZERO, Duration::from_secs(7)]
    );
    assert_eq!(
        rec.take(),
        vec![Seen::Retry {
            attempt: 1,
            delay: Duration::from_secs(7)
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_above_the_cap_gives_up_at_once() {
    let policy = RetryPolicy {
        max_retry_after: Duration::from_secs(30),
        ..exact_policy(5)
    };
    let (retry, rec) = recorded(policy);
    let start = Instant::now();
    let err = retry
        .run(
            |_| async {
                Err::<(), _>(TestError {
                    retryable: true,
                    retry_after: Some(Duration::from_secs(31)),
                    id: 1,
                })
            },
            &ErrorClassifier,
        )
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "no early retry, no sleep");
    assert!(matches!(
        err,
        RetryError::Failed {
            attempts: 1,
            reason: GiveUpReason::RetryAfterTooLong {
                retry_after,
                max_retry_after
            },
            ..
        } if retry_after == Duration::from_secs(31) && max_retry_after == Duration::from_secs(30)
    ));
    assert_eq!(
        err.to_string(),
        "gave up after 1 attempt(s): retry_after (31s) exceeds max_retry_after (30s)"
    );
    assert_eq!(rec.take(), vec![Seen::GaveUp { attempts: 1 }]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_equal_to_the_cap_is_honoured() {
    let policy = RetryPolicy {
        max_retry_after: Duration::from_secs(30),
        ..exact_policy(2)
    };
    let retry = Retry::new("r", policy).unwrap();
    let start = Instant::now();
    let verdict_hint = |r: &Result<u32, ()>| match r {
        Ok(_) => Verdict::Success,
        Err(()) => Verdict::Retryable {
            retry_after: Some(Duration::from_secs(30)),
        },
    };
    let out = retry
        .run(
            |a| async move { if a == 1 { Err(()) } else { Ok(a) } },
            &verdict_hint,
        )
        .await;
    assert_eq!(out.unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn never_sleeps_past_the_deadline() {
    let policy = RetryPolicy {
        initial_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        deadline: Some(Duration::from_millis(2500)),
        ..exact_policy(10)
    };
    let (retry, rec) = recorded(policy);
    let start = Instant::now();
    let (err, times) = failing_attempt_times(&retry).await;
    // Attempt 1 at 0s, delay 1s, attempt 2 at 1s; the next delay (2s) would end at 3s > 2.5s.
    assert_eq!(times, vec![Duration::ZERO, Duration::from_secs(1)]);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "gave up without sleeping"
    );
    assert!(matches!(
        &err,
        RetryError::DeadlineExceeded {
            attempts: 2,
            last_error: Some(e)
        } if e.id == 2
    ));
    assert_eq!(
        err.to_string(),
        "retry deadline exceeded after 2 attempt(s)"
    );
    assert_eq!(
        rec.take(),
        vec![
            Seen::Retry {
                attempt: 1,
                delay: Duration::from_secs(1)
            },
            Seen::GaveUp { attempts: 2 }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_off_a_slow_attempt() {
    let policy = RetryPolicy {
        attempt_timeout: Some(Duration::from_secs(10)),
        deadline: Some(Duration::from_secs(3)),
        ..exact_policy(5)
    };
    let (retry, rec) = recorded(policy);
    let start = Instant::now();
    let err = retry
        .run(
            |_| std::future::pending::<Result<(), TestError>>(),
            &ErrorClassifier,
        )
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "10s timeout clipped to 3s"
    );
    assert!(matches!(
        err,
        RetryError::DeadlineExceeded {
            attempts: 1,
            last_error: None
        }
    ));
    assert_eq!(rec.take(), vec![Seen::GaveUp { attempts: 1 }]);
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_clipped_to_the_remaining_deadline() {
    let policy = RetryPolicy {
        initial_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        attempt_timeout: Some(Duration::from_secs(2)),
        deadline: Some(Duration::from_secs(5)),
        ..exact_policy(10)
    };
    let (retry, rec) = recorded(policy);
    let start = Instant::now();
    let times = Mutex::new(Vec::new());
    let err = retry
        .run(
            |_| {
                times.lock().unwrap().push(start.elapsed());
                std::future::pending::<Result<(), TestError>>()
            },
            &ErrorClassifier,
        )
        .await
        .unwrap_err();
    // 2s + 2s timeouts, then the third attempt only gets the 1s left.
    assert_eq!(
        times.into_inner().unwrap(),
        [0, 2, 4].map(Duration::from_secs).to_vec()
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(err.attempts(), 3);
    assert!(matches!(err, RetryError::DeadlineExceeded { .. }));
    let two = Duration::from_secs(2);
    assert_eq!(
        rec.take(),
        vec![
            Seen::TimedOut { after: two },
            Seen::Retry {
                attempt: 1,
                delay: Duration::ZERO
            },
            Seen::TimedOut { after: two },
            Seen::Retry {
                attempt: 2,
                delay: Duration::ZERO
            },
            Seen::GaveUp { attempts: 3 },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_triggers_a_retry() {
    let policy = RetryPolicy {
        attempt_timeout: Some(Duration::from_secs(1)),
        ..exact_policy(3)
    };
    let (retry, rec) = recorded(policy);
    let start = Instant::now();
    let out = retry
        .run(
            |attempt| async move {
                if attempt == 1 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<_, TestError>(attempt)
            },
            &ErrorClassifier,
        )
        .await;
    assert_eq!(out.unwrap(), 2);
    assert_eq!(start.elapsed(), ms(1100));
    assert_eq!(
        rec.take(),
        vec![
            Seen::TimedOut {
                after: Duration::from_secs(1)
            },
            Seen::Retry {
                attempt: 1,
                delay: ms(100)
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn last_attempt_timing_out_keeps_the_earlier_error() {
    let policy = RetryPolicy {
        attempt_timeout: Some(Duration::from_secs(1)),
        ..exact_policy(2)
    };
    let retry = Retry::new("r", policy).unwrap();
    let err = retry
        .run(
            |attempt| async move {
                if attempt == 1 {
                    Err::<(), _>(transient(1))
                } else {
                    std::future::pending().await
                }
            },
            &ErrorClassifier,
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "attempt 2 timed out after 1s");
    assert!(matches!(
        &err,
        RetryError::AttemptTimedOut { attempts: 2, after, last_error: Some(e) }
            if *after == Duration::from_secs(1) && e.id == 1
    ));
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("test error 1"));
    assert_eq!(err.into_last_error().map(|e| e.id), Some(1));
}

#[tokio::test(start_paused = true)]
async fn an_ok_judged_retryable_is_returned_when_giving_up() {
    let retry = Retry::new("r", exact_policy(3)).unwrap();
    let calls = AtomicU32::new(0);
    // A "503 response" modelled as Ok: retryable, but a value to hand back at the end.
    let status = |r: &Result<u16, ()>| match r {
        Ok(503) => Verdict::RETRYABLE,
        Ok(_) => Verdict::Success,
        Err(()) => Verdict::Permanent,
    };
    let out = retry
        .run(
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(503) }
            },
            &status,
        )
        .await;
    assert_eq!(out.unwrap(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

fn storm_budget() -> RetryBudget {
    RetryBudget::new(RetryBudgetConfig {
        ttl: Duration::from_secs(10),
        min_retries_per_sec: 1,
        retry_ratio: 0.2,
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn budget_stops_a_retry_storm() {
    let rec = Arc::new(Recorder::default());
    let policy = RetryPolicy {
        initial_delay: ms(1),
        max_delay: ms(1),
        ..exact_policy(3)
    };
    let retry = Retry::builder("storm", policy)
        .budget(storm_budget())
        .observers(Observers::new(rec.clone()))
        .build()
        .unwrap();
    let upstream = Arc::new(AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let retry = retry.clone();
        let upstream = Arc::clone(&upstream);
        tasks.spawn(async move {
            retry
                .run(
                    |_| {
                        upstream.fetch_add(1, Ordering::SeqCst);
                        async { Err::<(), _>("down") }
                    },
                    &AnyErrorRetryable,
                )
                .await
        });
    }
    let mut budget_refusals = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Err(RetryError::BudgetExhausted { last_error, .. }) => {
                assert_eq!(last_error, Some("down"));
                budget_refusals += 1;
            }
            Err(RetryError::Failed { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // 1000 originals + 0.2 × 1000 + floor 1/s × 10s, exactly: without the budget it would be 3000.
    assert_eq!(upstream.load(Ordering::SeqCst), 1000 + 200 + 10);
    let events = rec.take();
    let retries = events
        .iter()
        .filter(|e| matches!(e, Seen::Retry { .. }))
        .count();
    let exhausted = events
        .iter()
        .filter(|e| **e == Seen::BudgetExhausted)
        .count();
    assert_eq!(retries, 210);
    assert_eq!(exhausted, budget_refusals);
    assert!(
        exhausted >= 1000 - 210,
        "every request that got no retry was refused"
    );
}

#[tokio::test(start_paused = true)]
async fn sequential_storm_has_the_same_exact_bound() {
    let policy = RetryPolicy {
        initial_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        ..exact_policy(3)
    };
    let retry = Retry::builder("storm", policy)
        .budget(storm_budget())
        .build()
        .unwrap();
    let upstream = AtomicU32::new(0);
    for _ in 0..1000 {
        let _ = retry
            .run(
                |_| {
                    upstream.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>(()) }
                },
                &AnyErrorRetryable,
            )
            .await;
    }
    assert_eq!(upstream.load(Ordering::SeqCst), 1210);
}

#[tokio::test(start_paused = true)]
async fn budget_refills_over_the_window() {
    let budget = RetryBudget::new(RetryBudgetConfig {
        ttl: Duration::from_secs(10),
        min_retries_per_sec: 0,
        retry_ratio: 0.5,
    })
    .unwrap();
    let retry = Retry::builder(
        "r",
        RetryPolicy {
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..exact_policy(2)
        },
    )
    .budget(budget.clone())
    .build()
    .unwrap();
    let fail = || retry.run(|_| async { Err::<(), _>(()) }, &AnyErrorRetryable);
    // Two requests earn one retry: the first request's retry is refused, the second's allowed.
    assert!(matches!(
        fail().await,
        Err(RetryError::BudgetExhausted { attempts: 1, .. })
    ));
    assert!(matches!(
        fail().await,
        Err(RetryError::Failed { attempts: 2, .. })
    ));
    assert!(matches!(
        fail().await,
        Err(RetryError::BudgetExhausted { .. })
    ));
    assert_eq!(budget.available(), 0);
    // Deposits and withdrawals expire with the window; new requests earn retries again.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(matches!(
        fail().await,
        Err(RetryError::BudgetExhausted { .. })
    ));
    assert!(matches!(
        fail().await,
        Err(RetryError::Failed { attempts: 2, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn clones_share_name_and_budget() {
    let retry = Retry::builder("shared", exact_policy(2))
        .budget(storm_budget())
        .build()
        .unwrap();
    let clone = retry.clone();
    assert_eq!(clone.name(), "shared");
    assert_eq!(clone.policy().max_attempts, 2);
    for _ in 0..10 {
        assert!(retry.budget().unwrap().try_withdraw());
    }
    assert!(
        !clone.budget().unwrap().try_withdraw(),
        "the floor was spent through the other clone"
    );
}
