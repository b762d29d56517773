//! Bulkhead: admission, queueing, shedding, wait timeouts and release, on the paused clock.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_resilience::{
    Bulkhead, BulkheadConfig, BulkheadError, Event, Observer, Observers, Retryable,
};
use tokio::time::Instant;

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn on_event(&self, event: &Event<'_>) {
        let line = match event {
            Event::BulkheadRejected { name } => format!("rejected {name}"),
            Event::BulkheadTimedOut { name } => format!("timed out {name}"),
            other => format!("{other:?}"),
        };
        self.0.lock().unwrap().push(line);
    }
}

fn bulkhead(
    max_concurrent: usize,
    max_waiting: usize,
    wait: Option<u64>,
) -> (Bulkhead, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let b = Bulkhead::new(
        "db",
        BulkheadConfig {
            max_concurrent,
            max_waiting,
            wait_timeout: wait.map(Duration::from_secs),
        },
    )
    .unwrap()
    .with_observers(Observers::new(rec.clone()));
    (b, rec)
}

/// Lets spawned tasks run until they block.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn admits_max_concurrent_queues_to_the_bound_and_sheds_the_rest() {
    let (b, rec) = bulkhead(2, 1, Some(60));
    let p1 = b.acquire().await.unwrap();
    let _p2 = b.acquire().await.unwrap();
    assert_eq!((b.in_flight(), b.waiting()), (2, 0));

    // The third caller queues.
    let queued = tokio::spawn({
        let b = b.clone();
        async move {
            let start = Instant::now();
            let permit = b.acquire().await;
            (permit.is_ok(), start.elapsed())
        }
    });
    settle().await;
    assert_eq!(b.waiting(), 1);

    // The fourth is shed at once, without waiting.
    let start = Instant::now();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        err,
        BulkheadError::Full {
            max_concurrent: 2,
            max_waiting: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "bulkhead full: 2 calls in flight and 1 waiting"
    );
    assert!(err.is_retryable());
    assert_eq!(*rec.0.lock().unwrap(), vec!["rejected db".to_owned()]);

    // Releasing a permit admits the queued caller.
    tokio::time::advance(Duration::from_secs(5)).await;
    drop(p1);
    let (admitted, waited) = queued.await.unwrap();
    assert!(admitted);
    assert_eq!(waited, Duration::from_secs(5));
    assert_eq!(b.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_time_out() {
    let (b, rec) = bulkhead(1, 2, Some(3));
    let _held = b.acquire().await.unwrap();
    let start = Instant::now();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(
        err,
        BulkheadError::WaitTimeout {
            after: Duration::from_secs(3)
        }
    );
    assert_eq!(err.to_string(), "bulkhead wait timed out after 3s");
    assert_eq!(b.waiting(), 0, "the timed-out waiter left the queue");
    assert_eq!(*rec.0.lock().unwrap(), vec!["timed out db".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn permits_are_released_on_drop_and_on_cancellation() {
    let (b, _) = bulkhead(1, 1, None);
    // run() releases when the future completes.
    assert_eq!(b.run(async { 5 }).await, Ok(5));
    assert_eq!(b.in_flight(), 0);

    // A cancelled run() releases its permit.
    let running = tokio::spawn({
        let b = b.clone();
        async move { b.run(std::future::pending::<()>()).await }
    });
    settle().await;
    assert_eq!(b.in_flight(), 1);
    running.abort();
    let _ = running.await;
    assert_eq!(b.in_flight(), 0);

    // A cancelled waiter leaves the queue.
    let held = b.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await.map(drop) }
    });
    settle().await;
    assert_eq!(b.waiting(), 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(b.waiting(), 0);
    drop(held);
    assert!(b.acquire().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn refused_run_does_not_poll_the_future() {
    let (b, _) = bulkhead(1, 0, None);
    let _held = b.acquire().await.unwrap();
    let polled = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&polled);
    let out = b
        .run(async move {
            *flag.lock().unwrap() = true;
        })
        .await;
    assert!(matches!(out, Err(BulkheadError::Full { .. })));
    assert!(!*polled.lock().unwrap());
}

#[tokio::test(start_paused = true)]
async fn queue_is_fifo() {
    let (b, _) = bulkhead(1, 3, None);
    let held = b.acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let b = b.clone();
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let _p = b.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }));
        settle().await;
    }
    assert_eq!(b.waiting(), 3);
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!((b.in_flight(), b.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_limit() {
    let (a, _) = bulkhead(1, 0, None);
    let b = a.clone();
    let _p = a.acquire().await.unwrap();
    assert!(matches!(b.acquire().await, Err(BulkheadError::Full { .. })));
    assert_eq!(b.in_flight(), 1);
    assert_eq!(b.name(), "db");
}
