//! Store throughput: job insert, progress append and claim, on SQLite (a temp file) and on
//! PostgreSQL when `DATABASE_URL` is set. Prints operations per second.
//!
//! `cargo bench -p quorum-store --bench store` (optionally `-- N` jobs, default 2000).
//!
//! Each phase runs from 4 concurrent tasks on one store (the pool's default size on SQLite),
//! so SQLite numbers show its one-writer-at-a-time ceiling and PostgreSQL numbers include
//! round trips over loopback. Figures depend heavily on the disk and on what else runs.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary reports on stdout and fails loudly"
)]

use std::time::Duration;

use quorum_store::test_util::{self, TestStore};
use quorum_store::{NewJob, NewProgress};
use serde_json::json;
use tokio::time::Instant;

const TASKS: usize = 4;

fn main() {
    let jobs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(TASKS)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = test_util::sqlite().await;
        run("sqlite", &t, jobs).await;
        t.cleanup().await;
        match test_util::postgres().await {
            Some(t) => {
                run("postgres", &t, jobs).await;
                t.cleanup().await;
            }
            None => println!("postgres: skipped (DATABASE_URL not set)"),
        }
    });
}

async fn run(name: &str, t: &TestStore, jobs: usize) {
    let per_task = jobs / TASKS;
    let total = per_task * TASKS;

    let start = Instant::now();
    let ids = parallel(t, per_task, |s, i| async move {
        s.create_job(NewJob::new(
            "bench",
            json!({"i": i, "text": "x".repeat(200)}),
        ))
        .await
        .unwrap()
        .id
    })
    .await;
    report(name, "insert job", total, start.elapsed());

    let target = ids[0].clone();
    let start = Instant::now();
    parallel(t, per_task, move |s, i| {
        let target = target.clone();
        async move {
            let p = NewProgress {
                percent: Some(50.0),
                message: Some(format!("step {i}")),
                models: Some(json!({"a": "streaming"})),
            };
            loop {
                match s.append_progress(&target, &p).await {
                    Ok(ev) => break ev.seq,
                    Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                    Err(e) => panic!("{e}: {:?}", std::error::Error::source(&e)),
                }
            }
        }
    })
    .await;
    report(name, "append progress (one job)", total, start.elapsed());

    let start = Instant::now();
    let claimed = parallel(t, per_task, |s, i| async move {
        s.claim_job(&format!("w{i}"), Duration::from_secs(60), None)
            .await
            .unwrap()
            .map(|j| j.id)
    })
    .await;
    report(name, "claim job", total, start.elapsed());
    assert_eq!(
        claimed.iter().flatten().count(),
        total,
        "every claim got a job"
    );
}

async fn parallel<T, F, Fut>(t: &TestStore, per_task: usize, op: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(quorum_store::Store, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let mut set = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let s = t.store.clone();
        let op = op.clone();
        set.spawn(async move {
            let mut out = Vec::with_capacity(per_task);
            for i in 0..per_task {
                out.push(op(s.clone(), task * per_task + i).await);
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

fn report(backend: &str, what: &str, n: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    let rate = n as f64 / secs;
    println!("{backend:>8}  {what:<28} {n:>6} ops in {secs:>7.3}s  = {rate:>9.0} ops/s");
}
