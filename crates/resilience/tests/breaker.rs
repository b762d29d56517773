//! Circuit breaker: thresholds, windows, open/half-open/close cycle, late results, forcing and
//! events, on the paused tokio clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use quorum_resilience::{
    AnyErrorRetryable, BreakerConfig, BreakerConfigError, BreakerError, BreakerState,
    CircuitBreaker, ErrorClassifier, Event, Observer, Observers, Retryable, SlidingWindow,
    SlowCallConfig,
};
use tokio::time::{Instant, advance, sleep};

/// Records every event as a short line.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Observer for Recorder {
    fn on_event(&self, event: &Event<'_>) {
        let line = match event {
            Event::BreakerTransition { name, from, to } => {
                format!("{name}: {} -> {}", from.as_str(), to.as_str())
            }
            Event::BreakerRejected { name, state } => {
                format!("{name}: rejected {}", state.as_str())
            }
            other => format!("{other:?}"),
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

fn config(window: u32, minimum_calls: u32, threshold: f64) -> BreakerConfig {
    BreakerConfig {
        window: SlidingWindow::Count(window),
        failure_rate_threshold: threshold,
        minimum_calls,
        open_duration: Duration::from_secs(10),
        open_duration_multiplier: 2.0,
        max_open_duration: Duration::from_secs(25),
        half_open_probes: 3,
        slow_call: None,
    }
}

fn observed(config: BreakerConfig) -> Result<(CircuitBreaker, Arc<Recorder>), BreakerConfigError> {
    let recorder = Arc::new(Recorder::default());
    let breaker =
        CircuitBreaker::new("llm", config)?.with_observers(Observers::new(recorder.clone()));
    Ok((breaker, recorder))
}

fn outcome(breaker: &CircuitBreaker, failed: bool) {
    match breaker.try_acquire() {
        Ok(permit) => permit.record(failed, Duration::ZERO),
        Err(open) => panic!("unexpected rejection: {open}"),
    }
}

/// Opens a fresh breaker made from `config(4, 4, 50.0)` with four failures.
fn open_breaker() -> (CircuitBreaker, Arc<Recorder>) {
    let (b, rec) = observed(config(4, 4, 50.0)).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..4 {
        outcome(&b, true);
    }
    assert_eq!(b.state(), BreakerState::Open);
    (b, rec)
}

#[tokio::test(start_paused = true)]
async fn opens_at_failure_rate_only_after_minimum_calls() {
    let b = CircuitBreaker::new("llm", config(10, 5, 50.0)).unwrap();
    for _ in 0..4 {
        outcome(&b, true);
    }
    // 100 % failures, but fewer than minimum_calls: not judged yet.
    assert_eq!(b.state(), BreakerState::Closed);
    let m = b.metrics();
    assert_eq!((m.calls, m.failed_calls, m.failure_rate), (4, 4, 100.0));
    outcome(&b, true);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_exactly_at_the_threshold_not_below() {
    let b = CircuitBreaker::new("llm", config(10, 4, 50.0)).unwrap();
    for failed in [true, false, false, false, true] {
        outcome(&b, failed);
    }
    assert_eq!(b.state(), BreakerState::Closed, "2/5 = 40 % < 50 %");
    outcome(&b, true);
    assert_eq!(b.state(), BreakerState::Open, "3/6 = 50 %");
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_opens_it() {
    let mut cfg = config(10, 4, 50.0);
    cfg.slow_call = Some(SlowCallConfig {
        duration: Duration::from_secs(1),
        rate_threshold: 50.0,
    });
    let b = CircuitBreaker::new("llm", cfg).unwrap();
    for delay in [2000, 10, 10] {
        let r = b
            .call(
                || async move {
                    sleep(Duration::from_millis(delay)).await;
                    Ok::<_, ()>(())
                },
                &AnyErrorRetryable,
            )
            .await;
        assert!(r.is_ok());
    }
    assert_eq!(b.metrics().slow_calls, 1);
    // A successful but slow call: 2 of 4 slow = 50 %.
    let permit = b.try_acquire().unwrap();
    sleep(Duration::from_secs(1)).await;
    permit.success(); // timed from acquisition: exactly 1 s counts as slow
    let m = b.metrics();
    assert_eq!(m.failed_calls, 0);
    assert_eq!(m.state, BreakerState::Open);
    assert_eq!(m.slow_call_rate, 50.0);
}

#[tokio::test(start_paused = true)]
async fn count_window_rolls_old_outcomes_out() {
    let b = CircuitBreaker::new("llm", config(4, 4, 50.0)).unwrap();
    for failed in [false, false, false, true, false] {
        outcome(&b, failed);
    }
    // Window now holds S S F S: 25 %; all five would be 20 %.
    let m = b.metrics();
    assert_eq!((m.calls, m.failed_calls), (4, 1));
    outcome(&b, true);
    // S F S F = 50 % (over all six it would be 33 %).
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_buckets() {
    let mut cfg = config(4, 4, 50.0);
    cfg.window = SlidingWindow::Time(Duration::from_secs(10));
    let b = CircuitBreaker::new("llm", cfg).unwrap();
    for _ in 0..3 {
        outcome(&b, true);
    }
    advance(Duration::from_secs(11)).await;
    assert_eq!(
        b.metrics().calls,
        0,
        "the failures are older than the window"
    );
    for _ in 0..3 {
        outcome(&b, false);
    }
    outcome(&b, true);
    // Only the last four calls are in the window: 1/4 = 25 %.
    assert_eq!(b.state(), BreakerState::Closed);
    let m = b.metrics();
    assert_eq!((m.calls, m.failed_calls), (4, 1));
    // Failures inside the window still count together.
    advance(Duration::from_secs(5)).await;
    outcome(&b, true);
    outcome(&b, true);
    assert_eq!(b.state(), BreakerState::Open, "3/6 = 50 % within 10 s");
}

#[tokio::test(start_paused = true)]
async fn open_rejects_fast_with_the_remaining_time() {
    let (b, rec) = open_breaker();
    rec.take();
    advance(Duration::from_secs(4)).await;
    let before = Instant::now();
    let err = b.try_acquire().unwrap_err();
    assert_eq!(Instant::now(), before);
    assert_eq!(err.state, BreakerState::Open);
    assert_eq!(err.remaining, Some(Duration::from_secs(6)));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(6)));
    assert!(err.is_retryable());
    assert_eq!(err.to_string(), "circuit breaker llm is open (retry in 6s)");
    let called = AtomicUsize::new(0);
    let r = b
        .call(
            || async {
                called.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            },
            &AnyErrorRetryable,
        )
        .await;
    assert!(matches!(r, Err(BreakerError::Open(_))));
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "an open breaker must not call"
    );
    let m = b.metrics();
    assert_eq!(m.rejected_calls, 2);
    assert_eq!(m.open_remaining, Some(Duration::from_secs(6)));
    assert_eq!(rec.take(), vec!["llm: rejected open", "llm: rejected open"]);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_probes_and_closes_on_success() {
    let (b, rec) = open_breaker();
    advance(Duration::from_secs(10)).await;
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let extra = b.try_acquire().unwrap_err();
    assert_eq!(extra.state, BreakerState::HalfOpen);
    assert_eq!(extra.remaining, None);
    assert_eq!(b.metrics().probes_admitted, 3);
    for p in probes {
        assert_eq!(p.state(), BreakerState::HalfOpen);
        p.success();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(
        b.metrics().calls,
        0,
        "the window starts empty after closing"
    );
    assert_eq!(
        rec.take(),
        vec![
            "llm: closed -> open",
            "llm: open -> half_open",
            "llm: rejected half_open",
            "llm: half_open -> closed",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_concurrent_callers() {
    let (b, _) = open_breaker();
    let handle = tokio::runtime::Handle::current();
    for round in 0..5 {
        advance(Duration::from_secs(30)).await;
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, barrier, handle) = (b.clone(), barrier.clone(), handle.clone());
                std::thread::spawn(move || {
                    let _clock = handle.enter(); // the paused clock
                    barrier.wait();
                    b.try_acquire_owned().ok()
                })
            })
            .collect();
        let permits: Vec<_> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(permits.len(), 3, "round {round}");
        for p in permits {
            p.failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
    }
}

#[tokio::test(start_paused = true)]
async fn reopens_on_probe_failure_with_growing_open_duration() {
    let (b, rec) = open_breaker();
    let mut wait = 10;
    // Failing probes: each re-open grows the duration (10 s doubled, capped at 25 s).
    for want in [20, 25, 25] {
        advance(Duration::from_secs(wait)).await;
        let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
        for p in probes {
            p.failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.remaining, Some(Duration::from_secs(want)));
        wait = want;
    }
    assert_eq!(
        rec.take()[..4],
        [
            "llm: closed -> open",
            "llm: open -> half_open",
            "llm: half_open -> open",
            "llm: rejected open",
        ]
    );
    // A successful close resets the duration to the base.
    advance(Duration::from_secs(wait)).await;
    for _ in 0..3 {
        b.try_acquire().unwrap().success();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.metrics().open_duration, Duration::from_secs(10));
    for _ in 0..4 {
        outcome(&b, true);
    }
    assert_eq!(
        b.try_acquire().unwrap_err().remaining,
        Some(Duration::from_secs(10))
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_frees_its_slot() {
    let mut cfg = config(4, 4, 50.0);
    cfg.half_open_probes = 1;
    let b = CircuitBreaker::new("llm", cfg).unwrap();
    for _ in 0..4 {
        outcome(&b, true);
    }
    advance(Duration::from_secs(10)).await;
    let probe = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err(), "the only slot is taken");
    drop(probe);
    // A probe cancelled mid-call (the `call` future dropped by a timeout) frees it too.
    let slow = b.call(
        || async {
            sleep(Duration::from_secs(60)).await;
            Ok::<_, ()>(())
        },
        &AnyErrorRetryable,
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(1), slow)
            .await
            .is_err()
    );
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire().expect("slot freed by the cancelled call");
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn late_results_from_an_earlier_state_are_ignored() {
    let mut cfg = config(4, 4, 50.0);
    cfg.half_open_probes = 1;
    let b = CircuitBreaker::new("llm", cfg).unwrap();
    // Calls started while closed, finishing late.
    let late_success = b.try_acquire().unwrap();
    let late_failure = b.try_acquire().unwrap();
    for _ in 0..4 {
        outcome(&b, true);
    }
    assert_eq!(b.state(), BreakerState::Open);
    advance(Duration::from_secs(10)).await;
    let probe = b.try_acquire().unwrap();
    // Counted as the probe's result, this success would close the breaker.
    late_success.success();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
    // Counted in the fresh window, this failure would show up.
    late_failure.failure();
    assert_eq!(b.metrics().calls, 0);

    // The same across a manual reset.
    let stale = b.try_acquire().unwrap();
    b.reset();
    stale.failure();
    assert_eq!(b.metrics().calls, 0);
}

/// An error that knows whether it is worth retrying, like a provider's HTTP error.
#[derive(Debug)]
struct Status(u16);

impl Retryable for Status {
    fn is_retryable(&self) -> bool {
        self.0 >= 500 || self.0 == 429
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_never_open_it() {
    let b = CircuitBreaker::new("llm", config(10, 4, 50.0)).unwrap();
    for _ in 0..10 {
        let r = b
            .call(|| async { Err::<(), _>(Status(400)) }, &ErrorClassifier)
            .await;
        assert!(matches!(r, Err(BreakerError::Inner(Status(400)))));
    }
    let m = b.metrics();
    assert_eq!(m.state, BreakerState::Closed);
    // Recorded as successes for health: they fill the window without failing it.
    assert_eq!((m.calls, m.failed_calls), (10, 0));
    for _ in 0..5 {
        let _ = b
            .call(|| async { Err::<(), _>(Status(503)) }, &ErrorClassifier)
            .await;
    }
    assert_eq!(b.state(), BreakerState::Open, "retryable errors do count");
}

#[tokio::test(start_paused = true)]
async fn force_open_closed_and_reset() {
    let (b, rec) = observed(config(4, 4, 50.0)).unwrap();
    outcome(&b, true);
    b.force_open();
    advance(Duration::from_secs(3600)).await;
    let err = b.try_acquire().unwrap_err();
    assert_eq!((err.state, err.remaining), (BreakerState::ForcedOpen, None));
    b.force_open(); // already forced open: no event

    b.force_closed();
    for _ in 0..10 {
        outcome(&b, true);
    }
    assert_eq!(b.state(), BreakerState::ForcedClosed, "nothing is judged");

    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    let m = b.metrics();
    assert_eq!(
        (m.calls, m.failed_calls),
        (0, 0),
        "reset empties the window"
    );
    assert_eq!(
        rec.take(),
        vec![
            "llm: closed -> forced_open",
            "llm: rejected forced_open",
            "llm: forced_open -> forced_closed",
            "llm: forced_closed -> closed",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn transitions_are_emitted_in_order() {
    let (b, rec) = open_breaker();
    advance(Duration::from_secs(10)).await;
    b.try_acquire().unwrap().failure();
    for _ in 0..2 {
        b.try_acquire().unwrap().success();
    }
    // 1 failed of 3 = 33 %: closes.
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..4 {
        outcome(&b, true);
    }
    advance(Duration::from_secs(10)).await;
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    advance(Duration::from_secs(20)).await;
    drop(b.try_acquire().unwrap());
    assert_eq!(
        rec.take(),
        vec![
            "llm: closed -> open",
            "llm: open -> half_open",
            "llm: half_open -> closed",
            "llm: closed -> open",
            "llm: open -> half_open",
            "llm: half_open -> open",
            "llm: open -> half_open",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_state() {
    let (b, _) = open_breaker();
    let c = b.clone();
    assert_eq!(c.state(), BreakerState::Open);
    c.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.name(), "llm");
}

#[test]
fn bad_config_is_a_clear_error() {
    let err = CircuitBreaker::new("llm", config(0, 1, 50.0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid circuit breaker config: window (0 calls) must be at least 1"
    );
    let err = CircuitBreaker::new("llm", config(10, 0, 50.0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid circuit breaker config: minimum_calls (0) must be at least 1"
    );
    let err = CircuitBreaker::new("llm", config(10, 5, f64::NAN)).unwrap_err();
    assert!(err.to_string().contains("failure_rate_threshold (NaN)"));
}

#[cfg(feature = "tower")]
mod tower {
    use std::future::Ready;
    use std::task::{Context, Poll};

    use quorum_resilience::CircuitBreakerLayer;
    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;

    /// Fails with the given status while `fail` is set; counts calls.
    #[derive(Clone)]
    struct Upstream {
        calls: Arc<AtomicUsize>,
        status: u16,
    }

    impl Service<&'static str> for Upstream {
        type Response = &'static str;
        type Error = Status;
        type Future = Ready<Result<&'static str, Status>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: &'static str) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if self.status == 200 {
                Ok(req)
            } else {
                Err(Status(self.status))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn layer_opens_on_retryable_errors_and_rejects_without_calling() {
        let breaker = CircuitBreaker::new("llm", config(4, 4, 50.0)).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::new(breaker.clone(), ErrorClassifier);
        let mut bad = layer.layer(Upstream {
            calls: calls.clone(),
            status: 400,
        });
        for _ in 0..6 {
            let r = bad.call("hi").await;
            assert!(matches!(r, Err(BreakerError::Inner(Status(400)))));
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "400s do not count");
        let mut down = layer.layer(Upstream {
            calls: calls.clone(),
            status: 503,
        });
        for _ in 0..4 {
            let _ = down.call("hi").await;
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let before = calls.load(Ordering::SeqCst);
        let r = down.call("hi").await;
        assert!(matches!(r, Err(BreakerError::Open(_))));
        assert_eq!(calls.load(Ordering::SeqCst), before);

        advance(Duration::from_secs(10)).await;
        let mut ok = layer.layer(Upstream {
            calls: calls.clone(),
            status: 200,
        });
        for _ in 0..3 {
            assert_eq!(ok.call("hi").await.unwrap(), "hi");
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}

#[test]
fn tsc_clock_breaker_opens_and_reports_remaining_time() {
    use quorum_resilience::Clock;
    let b = CircuitBreaker::with_clock("tsc", config(4, 4, 50.0), Clock::tsc()).unwrap();
    for _ in 0..4 {
        b.try_acquire().unwrap().failure();
    }
    let remaining = b.try_acquire().unwrap_err().remaining.unwrap();
    assert!(remaining > Duration::from_secs(9) && remaining <= Duration::from_secs(10));
}
