//! One suite, run unchanged against SQLite (a temp file) and PostgreSQL (a schema per test,
//! from `DATABASE_URL`; skipped loudly when absent unless `QUORUM_REQUIRE_SERVICES=1`).
#![allow(
    clippy::unwrap_used,
    reason = "shared test cases outside #[test] fns: a panic is the failure report"
)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use quorum_store::test_util::{self, TEST_EPOCH, TestStore};
use quorum_store::{
    JobCursor, JobError, JobFilter, JobState, JobWrite, KeyCheck, NewApiKey, NewDecision, NewJob,
    NewMessage, NewModelResult, NewProgress, NewUsage, RetentionPolicy, Role, SCHEMA_VERSION,
    ScaleAction, Store, StoreError, Transition, UsageOutcome, Writer,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);
const DAY: Duration = Duration::from_secs(86_400);

/// Generates `sqlite::NAME` and `postgres::NAME` tests from `cases::NAME(&TestStore)`.
macro_rules! dual {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let t = quorum_store::test_util::sqlite().await;
                    super::cases::$name(&t).await;
                    t.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(t) = quorum_store::test_util::postgres().await else { return };
                    super::cases::$name(&t).await;
                    t.cleanup().await;
                }
            )*
        }
    };
}

dual!(
    job_lifecycle,
    claim_order_is_priority_then_age,
    concurrent_claimers_never_share_a_job,
    late_update_loses_to_terminal_state,
    lost_lease_cannot_finish,
    recovery_after_crash,
    release_runner_jobs_requeues_only_that_runners_jobs,
    batches_write_results_and_progress_together,
    list_and_count_jobs,
    bad_job_arguments,
    progress_events,
    concurrent_progress_appends,
    model_results,
    sessions_and_messages,
    compressed_and_plain_messages_read_back_identically,
    usage_aggregate,
    api_keys,
    autoscaler_decisions,
    retention_deletes_exactly_what_is_past_its_age,
    retention_in_small_batches,
    stats,
    migrations_are_idempotent,
    newer_schema_is_refused,
);

mod cases {
    use super::*;

    async fn finished_job(t: &TestStore, kind: &str, state: JobState) -> String {
        let s = &t.store;
        let job = s.create_job(NewJob::new(kind, json!({}))).await.unwrap();
        let out = match state {
            JobState::Completed => s.complete_job(&job.id, Writer::Controller, &json!(1)).await,
            JobState::Failed => {
                s.fail_job(&job.id, Writer::Controller, &JobError::new("x", "y"))
                    .await
            }
            JobState::Cancelled => s.cancel_job(&job.id, None).await,
            JobState::TimedOut => s.time_out_job(&job.id, Writer::Controller, None).await,
            other => panic!("{other} is not terminal"),
        };
        assert!(out.unwrap().is_applied());
        job.id
    }

    pub(super) async fn job_lifecycle(t: &TestStore) {
        let s = &t.store;
        let job = s
            .create_job(
                NewJob::new("advise", json!({"q": "why?", "n": [1, 2]}))
                    .priority(3)
                    .owner("key-1")
                    .session("sess-1"),
            )
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Pending);
        assert_eq!(job.attempts, 0);
        assert_eq!(job.created_at, TEST_EPOCH);
        assert_eq!(job.id.len(), 36, "uuid: {}", job.id);
        assert_eq!(s.get_job(&job.id).await.unwrap().unwrap(), job);
        assert!(s.get_job("nope").await.unwrap().is_none());

        t.clock.advance(Duration::from_secs(1));
        let claimed = s.claim_job("w1", LEASE, None).await.unwrap().unwrap();
        assert_eq!(claimed.id, job.id);
        assert_eq!(claimed.state, JobState::Running);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(
            claimed.started_at,
            Some(TEST_EPOCH.plus(Duration::from_secs(1)))
        );
        let lease = claimed.lease.clone().unwrap();
        assert_eq!(lease.owner, "w1");
        assert_eq!(lease.expires_at, TEST_EPOCH.plus(Duration::from_secs(31)));
        assert!(s.claim_job("w2", LEASE, None).await.unwrap().is_none());

        t.clock.advance(Duration::from_secs(20));
        let renewed = s.renew_lease(&job.id, "w1", LEASE).await.unwrap();
        let renewed = renewed.applied().unwrap();
        assert_eq!(
            renewed.lease.unwrap().expires_at,
            TEST_EPOCH.plus(Duration::from_secs(51))
        );
        assert!(matches!(
            s.renew_lease(&job.id, "w2", LEASE).await.unwrap(),
            Transition::LeaseNotHeld(_)
        ));

        let done = s
            .complete_job(&job.id, Writer::Runner("w1"), &json!({"answer": 42}))
            .await
            .unwrap()
            .applied()
            .unwrap();
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(done.result, Some(json!({"answer": 42})));
        assert_eq!(
            done.finished_at,
            Some(TEST_EPOCH.plus(Duration::from_secs(21)))
        );
        assert!(done.lease.is_none());
        assert_eq!(done.payload, json!({"q": "why?", "n": [1, 2]}));
        assert_eq!(done.owner.as_deref(), Some("key-1"));
        assert_eq!(done.session_id.as_deref(), Some("sess-1"));
        assert_eq!(done.priority, 3);
        assert_eq!(s.get_job(&job.id).await.unwrap().unwrap(), done);

        // Failing and timing out record the error and its class.
        let f = s
            .create_job(NewJob::new("advise", json!(null)))
            .await
            .unwrap();
        s.claim_job("w1", LEASE, None).await.unwrap().unwrap();
        let failed = s
            .fail_job(
                &f.id,
                Writer::Runner("w1"),
                &JobError::new("rate_limited", "429 from x"),
            )
            .await
            .unwrap()
            .applied()
            .unwrap();
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(
            failed.error,
            Some(JobError::new("rate_limited", "429 from x"))
        );
        let to = s
            .create_job(NewJob::new("advise", json!(null)))
            .await
            .unwrap();
        let timed = s
            .time_out_job(
                &to.id,
                Writer::Controller,
                Some(&JobError::new("deadline", "60s")),
            )
            .await
            .unwrap()
            .applied()
            .unwrap();
        assert_eq!(timed.state, JobState::TimedOut);

        // A chosen id is kept; a duplicate is refused clearly.
        let chosen = s
            .create_job(NewJob::new("chat", json!(1)).id("my-id"))
            .await
            .unwrap();
        assert_eq!(chosen.id, "my-id");
        let e = s
            .create_job(NewJob::new("chat", json!(1)).id("my-id"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }

    pub(super) async fn claim_order_is_priority_then_age(t: &TestStore) {
        let s = &t.store;
        let mut ids = BTreeMap::new();
        for (name, prio) in [
            ("low-old", 0),
            ("high-old", 5),
            ("low-new", 0),
            ("high-new", 5),
            ("mid", 2),
        ] {
            let j = s
                .create_job(NewJob::new("k", json!(name)).priority(prio))
                .await
                .unwrap();
            ids.insert(j.id, name);
            t.clock.advance(Duration::from_millis(10));
        }
        let other = s
            .create_job(NewJob::new("other-kind", json!("o")).priority(100))
            .await
            .unwrap();
        let mut order = Vec::new();
        while let Some(j) = s.claim_job("w", LEASE, Some("k")).await.unwrap() {
            order.push(ids[&j.id]);
        }
        assert_eq!(order, ["high-old", "high-new", "mid", "low-old", "low-new"]);
        let o = s.claim_job("w", LEASE, None).await.unwrap().unwrap();
        assert_eq!(o.id, other.id);
        assert!(s.claim_job("w", LEASE, None).await.unwrap().is_none());
    }

    pub(super) async fn concurrent_claimers_never_share_a_job(t: &TestStore) {
        let s = &t.store;
        let mut created = HashSet::new();
        for i in 0..200 {
            let j = s
                .create_job(NewJob::new("k", json!(i)).priority(i % 3))
                .await
                .unwrap();
            created.insert(j.id);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..8 {
            let s = s.clone();
            tasks.spawn(async move {
                let runner = format!("w{w}");
                let mut got = Vec::new();
                loop {
                    match s.claim_job(&runner, LEASE, None).await {
                        Ok(Some(j)) => {
                            assert_eq!(j.lease.as_ref().unwrap().owner, runner);
                            got.push(j.id);
                        }
                        Ok(None) => break,
                        Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                        Err(e) => panic!("claim failed: {e}"),
                    }
                }
                got
            });
        }
        let mut seen = Vec::new();
        while let Some(r) = tasks.join_next().await {
            seen.extend(r.unwrap());
        }
        assert_eq!(seen.len(), 200, "every job claimed exactly once");
        let unique: HashSet<_> = seen.into_iter().collect();
        assert_eq!(unique, created);
        let counts = s.count_jobs_by_state(None).await.unwrap();
        assert_eq!(counts[&JobState::Running], 200);
        assert_eq!(counts[&JobState::Pending], 0);
    }

    pub(super) async fn late_update_loses_to_terminal_state(t: &TestStore) {
        let s = &t.store;
        let job = s.create_job(NewJob::new("k", json!(1))).await.unwrap();
        s.claim_job("w1", LEASE, None).await.unwrap().unwrap();
        let done = s
            .complete_job(&job.id, Writer::Runner("w1"), &json!("first"))
            .await
            .unwrap()
            .applied()
            .unwrap();
        t.clock.advance(Duration::from_secs(1));
        let late = [
            s.complete_job(&job.id, Writer::Runner("w1"), &json!("second"))
                .await
                .unwrap(),
            s.complete_job(&job.id, Writer::Controller, &json!("third"))
                .await
                .unwrap(),
            s.fail_job(&job.id, Writer::Runner("w1"), &JobError::new("c", "m"))
                .await
                .unwrap(),
            s.cancel_job(&job.id, None).await.unwrap(),
            s.time_out_job(&job.id, Writer::Controller, None)
                .await
                .unwrap(),
        ];
        for outcome in late {
            match outcome {
                Transition::AlreadyFinished(j) => assert_eq!(j, done),
                other => panic!("late write applied or misreported: {other:?}"),
            }
        }
        assert!(matches!(
            s.renew_lease(&job.id, "w1", LEASE).await.unwrap(),
            Transition::AlreadyFinished(_)
        ));
        assert!(matches!(
            s.requeue_expired_job(&job.id).await.unwrap(),
            Transition::AlreadyFinished(_)
        ));
        assert_eq!(s.get_job(&job.id).await.unwrap().unwrap(), done);
        assert_eq!(
            s.complete_job("missing", Writer::Controller, &json!(1))
                .await
                .unwrap(),
            Transition::NotFound
        );

        // Cancel wins over a running job; the runner's later completion loses.
        let j2 = s.create_job(NewJob::new("k", json!(2))).await.unwrap();
        s.claim_job("w2", LEASE, None).await.unwrap().unwrap();
        let cancelled = s
            .cancel_job(&j2.id, Some(&JobError::new("user", "stop")))
            .await
            .unwrap()
            .applied()
            .unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert!(matches!(
            s.complete_job(&j2.id, Writer::Runner("w2"), &json!("late")).await.unwrap(),
            Transition::AlreadyFinished(j) if j.result.is_none() && j.state == JobState::Cancelled
        ));
    }

    pub(super) async fn release_runner_jobs_requeues_only_that_runners_jobs(t: &TestStore) {
        let s = &t.store;
        let a1 = s.create_job(NewJob::new("k", json!(1))).await.unwrap();
        let b1 = s.create_job(NewJob::new("k", json!(2))).await.unwrap();
        let a2 = s.create_job(NewJob::new("k", json!(3))).await.unwrap();
        let pending = s.create_job(NewJob::new("k", json!(4))).await.unwrap();
        assert_eq!(
            s.claim_job("a", LEASE, None).await.unwrap().unwrap().id,
            a1.id
        );
        assert_eq!(
            s.claim_job("b", LEASE, None).await.unwrap().unwrap().id,
            b1.id
        );
        assert_eq!(
            s.claim_job("a", LEASE, None).await.unwrap().unwrap().id,
            a2.id
        );
        // A finished job of the runner is not touched.
        s.complete_job(&a2.id, Writer::Runner("a"), &json!("done"))
            .await
            .unwrap()
            .applied()
            .unwrap();

        // The lease is still valid: released anyway, because the runner asks for itself.
        let released = s.release_runner_jobs("a").await.unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].id, a1.id);
        assert_eq!(released[0].state, JobState::Pending);
        assert!(released[0].lease.is_none());
        assert_eq!(released[0].attempts, 1);

        assert_eq!(
            s.get_job(&b1.id).await.unwrap().unwrap().state,
            JobState::Running
        );
        assert_eq!(
            s.get_job(&a2.id).await.unwrap().unwrap().state,
            JobState::Completed
        );
        assert_eq!(
            s.get_job(&pending.id).await.unwrap().unwrap().state,
            JobState::Pending
        );
        assert!(s.release_runner_jobs("a").await.unwrap().is_empty());
        // a1 (released) and the never-claimed job wait; one job of another kind does not count.
        s.create_job(NewJob::new("other", json!(5))).await.unwrap();
        assert_eq!(s.count_jobs(JobState::Pending, Some("k")).await.unwrap(), 2);
        assert_eq!(s.count_jobs(JobState::Pending, None).await.unwrap(), 3);
        assert_eq!(s.count_jobs(JobState::Running, Some("k")).await.unwrap(), 1);
        assert!(matches!(
            s.release_runner_jobs("").await,
            Err(StoreError::InvalidArgument { .. })
        ));
    }

    pub(super) async fn batches_write_results_and_progress_together(t: &TestStore) {
        let s = &t.store;
        let job = s.create_job(NewJob::new("k", json!(1))).await.unwrap();
        s.append_progress(&job.id, &NewProgress::default())
            .await
            .unwrap();
        let result = |model: &str| NewModelResult {
            model: model.into(),
            provider: "p".into(),
            content: Some(format!("answer of {model}")),
            latency: Some(Duration::from_millis(12)),
            ..NewModelResult::default()
        };
        let progress = |pct: f64| NewProgress {
            percent: Some(pct),
            message: Some(format!("{pct}%")),
            models: Some(json!({"a": "done"})),
        };
        let events = s
            .record_batch(
                &job.id,
                &[
                    JobWrite::Result(result("a")),
                    JobWrite::Progress(progress(50.0)),
                    JobWrite::Result(result("b")),
                    JobWrite::Progress(progress(100.0)),
                ],
            )
            .await
            .unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(events[1].percent, Some(100.0));
        let stored = s.list_results(&job.id).await.unwrap();
        assert_eq!(
            stored.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(stored[0].content.as_deref(), Some("answer of a"));
        assert_eq!(stored[0].latency, Some(Duration::from_millis(12)));
        let listed = s.list_progress(&job.id, 1, 100).await.unwrap();
        assert_eq!(listed, events);

        // All or nothing: a bad write or a missing job stores nothing of the batch.
        let bad = s
            .record_batch(
                &job.id,
                &[
                    JobWrite::Result(result("c")),
                    JobWrite::Progress(progress(101.0)),
                ],
            )
            .await;
        assert!(
            matches!(bad, Err(StoreError::InvalidArgument { .. })),
            "{bad:?}"
        );
        let missing = s
            .record_batch(
                "no-such-job",
                &[
                    JobWrite::Progress(progress(1.0)),
                    JobWrite::Result(result("d")),
                ],
            )
            .await;
        assert!(
            matches!(missing, Err(StoreError::NotFound { .. })),
            "{missing:?}"
        );
        assert_eq!(s.list_results(&job.id).await.unwrap().len(), 2);
        assert_eq!(s.list_progress(&job.id, 0, 100).await.unwrap().len(), 3);
        assert!(s.record_batch(&job.id, &[]).await.unwrap().is_empty());
    }

    pub(super) async fn lost_lease_cannot_finish(t: &TestStore) {
        let s = &t.store;
        let job = s.create_job(NewJob::new("k", json!(1))).await.unwrap();
        s.claim_job("a", LEASE, None).await.unwrap().unwrap();
        // A pending job cannot be finished by a runner: it never held a lease on it.
        let pending = s.create_job(NewJob::new("later", json!(1))).await.unwrap();
        assert!(matches!(
            s.complete_job(&pending.id, Writer::Runner("a"), &json!(1))
                .await
                .unwrap(),
            Transition::LeaseNotHeld(_)
        ));
        assert!(matches!(
            s.renew_lease(&pending.id, "a", LEASE).await.unwrap(),
            Transition::LeaseNotHeld(_)
        ));

        // Runner a stalls past its lease; the job is requeued and b takes it.
        assert!(matches!(
            s.requeue_expired_job(&job.id).await.unwrap(),
            Transition::LeaseStillValid(_)
        ));
        t.clock.advance(LEASE + Duration::from_millis(1));
        let requeued = s
            .requeue_expired_job(&job.id)
            .await
            .unwrap()
            .applied()
            .unwrap();
        assert_eq!(requeued.state, JobState::Pending);
        assert!(requeued.lease.is_none());
        assert_eq!(requeued.attempts, 1);
        let b = s.claim_job("b", LEASE, Some("k")).await.unwrap().unwrap();
        assert_eq!(b.id, job.id);
        assert_eq!(b.attempts, 2);

        for outcome in [
            s.complete_job(&job.id, Writer::Runner("a"), &json!("stale"))
                .await
                .unwrap(),
            s.fail_job(&job.id, Writer::Runner("a"), &JobError::new("c", "m"))
                .await
                .unwrap(),
            s.renew_lease(&job.id, "a", LEASE).await.unwrap(),
        ] {
            match outcome {
                Transition::LeaseNotHeld(j) => {
                    assert_eq!(j.state, JobState::Running);
                    assert_eq!(j.lease.unwrap().owner, "b");
                }
                other => panic!("stale runner not refused: {other:?}"),
            }
        }
        let done = s
            .complete_job(&job.id, Writer::Runner("b"), &json!("fresh"))
            .await
            .unwrap();
        assert_eq!(done.applied().unwrap().result, Some(json!("fresh")));
    }

    pub(super) async fn recovery_after_crash(t: &TestStore) {
        let s = &t.store;
        let pending = s.create_job(NewJob::new("k", json!("p"))).await.unwrap();
        t.clock.advance(Duration::from_millis(5));
        let r1 = s
            .create_job(NewJob::new("k", json!("r1")).priority(9))
            .await
            .unwrap();
        t.clock.advance(Duration::from_millis(5));
        let r2 = s
            .create_job(NewJob::new("k", json!("r2")).priority(9))
            .await
            .unwrap();
        let finished = finished_job(t, "k", JobState::Completed).await;
        assert_eq!(
            s.claim_job("crashy", Duration::from_secs(10), None)
                .await
                .unwrap()
                .unwrap()
                .id,
            r1.id
        );
        assert_eq!(
            s.claim_job("crashy", Duration::from_secs(60), None)
                .await
                .unwrap()
                .unwrap()
                .id,
            r2.id
        );

        // The process dies: the store is closed and a new one opens the same database.
        s.close().await;
        let restarted = t.reconnect().await.unwrap();

        let ids = |jobs: Vec<quorum_store::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(
            ids(restarted.recoverable_jobs(100).await.unwrap()),
            std::slice::from_ref(&pending.id)
        );
        t.clock.advance(Duration::from_secs(11));
        assert_eq!(
            ids(restarted.recoverable_jobs(100).await.unwrap()),
            [pending.id.clone(), r1.id.clone()]
        );
        t.clock.advance(Duration::from_secs(60));
        let recoverable = restarted.recoverable_jobs(100).await.unwrap();
        assert_eq!(
            ids(recoverable.clone()),
            [pending.id.clone(), r1.id.clone(), r2.id.clone()]
        );
        assert!(!recoverable.iter().any(|j| j.id == finished));

        // Resume one, fail the other explicitly.
        let back = restarted
            .requeue_expired_job(&r1.id)
            .await
            .unwrap()
            .applied()
            .unwrap();
        assert_eq!(back.state, JobState::Pending);
        assert!(matches!(
            restarted.requeue_expired_job(&r1.id).await.unwrap(),
            Transition::NotRunning(_)
        ));
        assert!(restarted.requeue_expired_job("ghost").await.unwrap() == Transition::NotFound);
        let failed = restarted
            .fail_job(
                &r2.id,
                Writer::Controller,
                &JobError::new("crashed", "runner lost"),
            )
            .await
            .unwrap();
        assert!(failed.is_applied());
        let again = restarted
            .claim_job("fresh", LEASE, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.id, r1.id, "requeued job keeps its priority");
        assert_eq!(again.attempts, 2);
        assert!(restarted.recoverable_jobs(0).await.is_err());
        restarted.close().await;
    }

    pub(super) async fn list_and_count_jobs(t: &TestStore) {
        let s = &t.store;
        let mut all = Vec::new();
        for i in 0..25 {
            let owner = if i % 2 == 0 { "even" } else { "odd" };
            let j = s
                .create_job(NewJob::new("k", json!(i)).owner(owner))
                .await
                .unwrap();
            all.push(j.id);
            if i % 5 != 0 {
                t.clock.advance(Duration::from_millis(1)); // some share a timestamp
            }
        }
        for _ in 0..3 {
            let j = s.claim_job("w", LEASE, None).await.unwrap().unwrap();
            assert!(
                s.complete_job(&j.id, Writer::Runner("w"), &json!(null))
                    .await
                    .unwrap()
                    .is_applied()
            );
        }
        s.claim_job("w", LEASE, None).await.unwrap().unwrap();

        let mut pages = Vec::new();
        let mut cursor: Option<JobCursor> = None;
        loop {
            let page = s
                .list_jobs(&JobFilter::default(), cursor.as_ref(), 10)
                .await
                .unwrap();
            pages.push(page.jobs.len());
            // Cursors survive a trip through text (a URL query parameter).
            cursor = page.next.map(|c| c.to_string().parse().unwrap());
            if cursor.is_none() {
                break;
            }
            assert_eq!(page.jobs.len(), 10);
        }
        assert_eq!(pages.iter().sum::<usize>(), 25, "{pages:?}");
        let listed: Vec<String> = {
            let mut v = Vec::new();
            let mut c: Option<JobCursor> = None;
            loop {
                let p = s
                    .list_jobs(&JobFilter::default(), c.as_ref(), 7)
                    .await
                    .unwrap();
                v.extend(p.jobs.iter().map(|j| j.id.clone()));
                c = p.next;
                if c.is_none() {
                    break;
                }
            }
            v
        };
        let mut newest_first = all.clone();
        newest_first.reverse();
        // Same-millisecond jobs order by id (UUIDv7 increases within a millisecond only
        // probabilistically), so compare as sets plus the timestamp order.
        assert_eq!(listed.len(), 25);
        assert_eq!(
            listed.iter().collect::<HashSet<_>>(),
            all.iter().collect::<HashSet<_>>()
        );
        let first_page = s.list_jobs(&JobFilter::default(), None, 25).await.unwrap();
        assert!(
            first_page
                .jobs
                .windows(2)
                .all(|w| (w[0].created_at, &w[0].id) > (w[1].created_at, &w[1].id))
        );
        assert_eq!(first_page.jobs.first().unwrap().id, newest_first[0]);

        let even = s
            .list_jobs(
                &JobFilter {
                    owner: Some("even".into()),
                    ..JobFilter::default()
                },
                None,
                100,
            )
            .await
            .unwrap();
        assert_eq!(even.jobs.len(), 13);
        assert!(even.next.is_none());
        assert!(even.jobs.iter().all(|j| j.owner.as_deref() == Some("even")));
        let completed = s
            .list_jobs(
                &JobFilter {
                    state: Some(JobState::Completed),
                    ..JobFilter::default()
                },
                None,
                100,
            )
            .await
            .unwrap();
        assert_eq!(completed.jobs.len(), 3);
        let none = s
            .list_jobs(
                &JobFilter {
                    kind: Some("zzz".into()),
                    ..JobFilter::default()
                },
                None,
                100,
            )
            .await
            .unwrap();
        assert!(none.jobs.is_empty());

        let counts = s.count_jobs_by_state(None).await.unwrap();
        assert_eq!(counts[&JobState::Pending], 21);
        assert_eq!(counts[&JobState::Running], 1);
        assert_eq!(counts[&JobState::Completed], 3);
        assert_eq!(counts[&JobState::TimedOut], 0);
        assert_eq!(counts.len(), JobState::ALL.len());
        let odd = s.count_jobs_by_state(Some("odd")).await.unwrap();
        assert_eq!(odd.values().sum::<u64>(), 12);

        for bad in [0, 1001] {
            let e = s
                .list_jobs(&JobFilter::default(), None, bad)
                .await
                .unwrap_err();
            assert!(
                matches!(e, StoreError::InvalidArgument { name: "limit", .. }),
                "{e}"
            );
        }
    }

    pub(super) async fn bad_job_arguments(t: &TestStore) {
        let s = &t.store;
        let e = s.create_job(NewJob::new("", json!(1))).await.unwrap_err();
        assert_eq!(e.to_string(), "invalid argument kind: must not be empty");
        assert!(
            s.create_job(NewJob::new("k", json!(1)).id(""))
                .await
                .is_err()
        );
        assert!(s.claim_job("", LEASE, None).await.is_err());
        let e = s.claim_job("w", Duration::ZERO, None).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument lease: must be more than 0s"
        );
        // Odd but valid text survives: quotes, unicode, SQL-looking content.
        let weird = "'; DROP TABLE jobs; -- ünïcødé \"q\"";
        let j = s
            .create_job(NewJob::new(weird, json!({"k": weird})).owner(weird))
            .await
            .unwrap();
        let back = s.get_job(&j.id).await.unwrap().unwrap();
        assert_eq!(back.kind, weird);
        assert_eq!(back.payload, json!({"k": weird}));
    }

    pub(super) async fn progress_events(t: &TestStore) {
        let s = &t.store;
        let job = s.create_job(NewJob::new("k", json!(1))).await.unwrap();
        for i in 1..=5_u32 {
            t.clock.advance(Duration::from_millis(100));
            let ev = s
                .append_progress(
                    &job.id,
                    &NewProgress {
                        percent: Some(f64::from(i) * 20.0),
                        message: Some(format!("step {i}")),
                        models: (i == 3).then(|| json!({"gpt": "done", "claude": "streaming"})),
                    },
                )
                .await
                .unwrap();
            assert_eq!(ev.seq, i64::from(i));
        }
        let all = s.list_progress(&job.id, 0, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            all[2].models,
            Some(json!({"gpt": "done", "claude": "streaming"}))
        );
        assert_eq!(all[2].percent, Some(60.0));
        assert_eq!(all[4].message.as_deref(), Some("step 5"));
        assert_eq!(
            all[0].created_at,
            TEST_EPOCH.plus(Duration::from_millis(100))
        );
        let resumed = s.list_progress(&job.id, 2, 2).await.unwrap();
        assert_eq!(resumed.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(s.list_progress(&job.id, 5, 10).await.unwrap().is_empty());

        // Empty events are allowed; a second job has its own sequence.
        let other = s.create_job(NewJob::new("k", json!(2))).await.unwrap();
        let ev = s
            .append_progress(&other.id, &NewProgress::default())
            .await
            .unwrap();
        assert_eq!(ev.seq, 1);

        let e = s
            .append_progress("ghost", &NewProgress::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::NotFound { entity: "job", .. }),
            "{e}"
        );
        let e = s
            .append_progress(
                &job.id,
                &NewProgress {
                    percent: Some(150.0),
                    ..NewProgress::default()
                },
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("percent"), "{e}");
        assert!(
            s.append_progress(
                &job.id,
                &NewProgress {
                    percent: Some(f64::NAN),
                    ..NewProgress::default()
                }
            )
            .await
            .is_err()
        );
    }

    pub(super) async fn concurrent_progress_appends(t: &TestStore) {
        let s = &t.store;
        let job = s.create_job(NewJob::new("k", json!(1))).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..4 {
            let s = s.clone();
            let id = job.id.clone();
            tasks.spawn(async move {
                for i in 0..10 {
                    let p = NewProgress {
                        message: Some(format!("{w}-{i}")),
                        ..NewProgress::default()
                    };
                    loop {
                        match s.append_progress(&id, &p).await {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                            Err(e) => panic!("append failed: {e}"),
                        }
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let all = s.list_progress(&job.id, 0, 1000).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=40).collect::<Vec<_>>()
        );
        let messages: HashSet<_> = all.iter().map(|e| e.message.clone().unwrap()).collect();
        assert_eq!(messages.len(), 40);
    }

    pub(super) async fn model_results(t: &TestStore) {
        let s = &t.store;
        let job = s.create_job(NewJob::new("advise", json!(1))).await.unwrap();
        let ok = NewModelResult {
            model: "gpt-x".into(),
            provider: "openai".into(),
            content: Some("the answer".into()),
            usage: Some(json!({"prompt_tokens": 10, "completion_tokens": 5})),
            latency: Some(Duration::from_millis(1234)),
            ..NewModelResult::default()
        };
        let bad = NewModelResult {
            model: "claude-y".into(),
            provider: "anthropic".into(),
            error: Some(JobError::new("overloaded", "529")),
            fallback: Some(json!({"from": "claude-z", "reason": "breaker open"})),
            ..NewModelResult::default()
        };
        let r1 = s.record_result(&job.id, &ok).await.unwrap();
        t.clock.advance(Duration::from_millis(50));
        let r2 = s.record_result(&job.id, &bad).await.unwrap();
        assert!(r2.id > r1.id);
        let listed = s.list_results(&job.id).await.unwrap();
        assert_eq!(listed, [r1.clone(), r2.clone()]);
        assert_eq!(listed[0].content.as_deref(), Some("the answer"));
        assert_eq!(listed[0].latency, Some(Duration::from_millis(1234)));
        assert_eq!(listed[0].usage, ok.usage);
        assert_eq!(listed[1].error, Some(JobError::new("overloaded", "529")));
        assert_eq!(listed[1].fallback, bad.fallback);
        assert!(listed[1].content.is_none());
        assert_eq!(
            listed[1].created_at,
            TEST_EPOCH.plus(Duration::from_millis(50))
        );
        assert!(s.list_results("other").await.unwrap().is_empty());
        let e = s.record_result("ghost", &ok).await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        let e = s
            .record_result(
                &job.id,
                &NewModelResult {
                    provider: "p".into(),
                    ..NewModelResult::default()
                },
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("model"), "{e}");
    }

    pub(super) async fn sessions_and_messages(t: &TestStore) {
        let s = &t.store;
        let a = s
            .create_session(Some("sess-a"), Some("alice"))
            .await
            .unwrap();
        assert_eq!(a.id, "sess-a");
        assert_eq!(a.created_at, TEST_EPOCH);
        // Idempotent create: same session back, unchanged.
        assert_eq!(
            s.create_session(Some("sess-a"), Some("bob")).await.unwrap(),
            a
        );
        let generated = s.create_session(None, Some("bob")).await.unwrap();
        assert_eq!(generated.id.len(), 36);

        let mut ids = Vec::new();
        for i in 0..12_u32 {
            t.clock.advance(Duration::from_secs(1));
            let (role, model) = if i % 2 == 0 {
                (Role::User, None)
            } else {
                (Role::Assistant, Some("gpt".to_owned()))
            };
            let m = s
                .append_message(
                    "sess-a",
                    &NewMessage {
                        role,
                        content: format!("turn {i}"),
                        tokens: Some(i * 3),
                        model,
                    },
                )
                .await
                .unwrap();
            ids.push(m.id);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let session = s.get_session("sess-a").await.unwrap().unwrap();
        assert_eq!(session.updated_at, TEST_EPOCH.plus(Duration::from_secs(12)));

        let page1 = s.list_messages("sess-a", 0, 5).await.unwrap();
        let page2 = s
            .list_messages("sess-a", page1.last().unwrap().id, 5)
            .await
            .unwrap();
        let page3 = s
            .list_messages("sess-a", page2.last().unwrap().id, 5)
            .await
            .unwrap();
        assert_eq!((page1.len(), page2.len(), page3.len()), (5, 5, 2));
        assert_eq!(page1[0].content, "turn 0");
        assert_eq!(page1[1].role, Role::Assistant);
        assert_eq!(page1[1].model.as_deref(), Some("gpt"));
        assert_eq!(page1[1].tokens, Some(3));
        assert_eq!(page3[1].content, "turn 11");

        let sum = s.add_summary("sess-a", "they chatted", 10).await.unwrap();
        assert_eq!(sum.message_count, 10);
        t.clock.advance(Duration::from_secs(1));
        let newer = s
            .add_summary("sess-a", "they chatted more", 12)
            .await
            .unwrap();
        assert_eq!(s.latest_summary("sess-a").await.unwrap().unwrap(), newer);
        assert!(s.latest_summary(&generated.id).await.unwrap().is_none());
        assert!(s.add_summary("ghost", "x", 1).await.is_err());

        // Listing: most recently active first, with first message and count.
        t.clock.advance(Duration::from_secs(1));
        s.append_message(&generated.id, &NewMessage::new(Role::User, "hello bob"))
            .await
            .unwrap();
        let listed = s.list_sessions(None, None, 10).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].session.id, generated.id);
        assert_eq!(listed[0].message_count, 1);
        assert_eq!(
            listed[0].first_message.as_ref().unwrap().content,
            "hello bob"
        );
        assert_eq!(listed[1].session.id, "sess-a");
        assert_eq!(listed[1].message_count, 12);
        assert_eq!(listed[1].first_message.as_ref().unwrap().content, "turn 0");
        let alice = s.list_sessions(Some("alice"), None, 10).await.unwrap();
        assert_eq!(alice.len(), 1);
        let after = s
            .list_sessions(
                None,
                Some((listed[0].session.updated_at, &listed[0].session.id)),
                10,
            )
            .await
            .unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].session.id, "sess-a");

        // Clear keeps the session; delete removes it.
        assert_eq!(s.clear_session("sess-a").await.unwrap(), 12);
        assert!(s.list_messages("sess-a", 0, 100).await.unwrap().is_empty());
        assert!(s.latest_summary("sess-a").await.unwrap().is_none());
        assert!(s.get_session("sess-a").await.unwrap().is_some());
        let empty = s.list_sessions(Some("alice"), None, 10).await.unwrap();
        assert_eq!(empty[0].message_count, 0);
        assert!(empty[0].first_message.is_none());
        assert!(s.delete_session(&generated.id).await.unwrap());
        assert!(!s.delete_session(&generated.id).await.unwrap());
        assert!(s.get_session(&generated.id).await.unwrap().is_none());
        let e = s
            .append_message(&generated.id, &NewMessage::new(Role::User, "x"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::NotFound {
                    entity: "session",
                    ..
                }
            ),
            "{e}"
        );
    }

    pub(super) async fn compressed_and_plain_messages_read_back_identically(t: &TestStore) {
        let plain_store = &t.store;
        let mut config = t.config.clone();
        config.compression.enabled = true;
        let packing = Store::connect_with_clock(&t.url, config, Arc::new(t.clock.clone()))
            .await
            .unwrap();
        plain_store.create_session(Some("c"), None).await.unwrap();
        let big = "All work and no play makes Jack a dull boy. ".repeat(200); // ~9 KiB
        let unicode_big = "ünïcødé ✓ 日本語 ".repeat(400);
        let small = "short and plain".to_owned();
        let texts = [big.clone(), unicode_big.clone(), small.clone(), big.clone()];
        let writers = [plain_store, &packing, &packing, &packing];
        let mut ids = Vec::new();
        for (text, w) in texts.iter().zip(writers) {
            ids.push(
                w.append_message("c", &NewMessage::new(Role::User, text.clone()))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let compressed: Vec<bool> = {
            let mut v = Vec::new();
            for id in &ids {
                v.push(
                    test_util::stored_compressed(plain_store, *id)
                        .await
                        .unwrap(),
                );
            }
            v
        };
        assert_eq!(
            compressed,
            [false, true, false, true],
            "only large bodies, only when enabled"
        );
        for reader in [plain_store, &packing] {
            let back = reader.list_messages("c", 0, 10).await.unwrap();
            let contents: Vec<&str> = back.iter().map(|m| m.content.as_str()).collect();
            assert_eq!(
                contents,
                texts.iter().map(String::as_str).collect::<Vec<_>>()
            );
        }
        let listed = packing.list_sessions(None, None, 1).await.unwrap();
        assert_eq!(listed[0].first_message.as_ref().unwrap().content, big);
        packing.close().await;
    }

    pub(super) async fn usage_aggregate(t: &TestStore) {
        let s = &t.store;
        let rec = |model: &str, p: u64, c: u64, ms: u64, outcome, cost| NewUsage {
            provider: "prov".into(),
            model: model.into(),
            prompt_tokens: p,
            completion_tokens: c,
            latency: Duration::from_millis(ms),
            outcome,
            cost_usd: cost,
            owner: Some("k1".into()),
            job_id: None,
        };
        // Before the range.
        s.record_usage(&rec("a", 1000, 1000, 1, UsageOutcome::Success, Some(9.0)))
            .await
            .unwrap();
        t.clock.advance(Duration::from_secs(10));
        let from = s.now();
        s.record_usage(&rec("a", 10, 5, 100, UsageOutcome::Success, Some(0.25)))
            .await
            .unwrap();
        s.record_usage(&rec("a", 20, 7, 300, UsageOutcome::Error, None))
            .await
            .unwrap();
        s.record_usage(&rec("b", 1, 2, 50, UsageOutcome::Timeout, None))
            .await
            .unwrap();
        t.clock.advance(Duration::from_secs(10));
        let to = s.now();
        // At the range's exclusive end.
        s.record_usage(&rec("b", 500, 500, 1, UsageOutcome::Success, Some(1.0)))
            .await
            .unwrap();

        let totals = s.usage_by_model(from, to).await.unwrap();
        assert_eq!(totals.len(), 2);
        let a = &totals[0];
        assert_eq!((a.model.as_str(), a.calls, a.failures), ("a", 2, 1));
        assert_eq!((a.prompt_tokens, a.completion_tokens), (30, 12));
        assert_eq!(a.cost_usd, Some(0.25));
        assert_eq!(a.mean_latency, Duration::from_millis(200));
        let b = &totals[1];
        assert_eq!(
            (b.model.as_str(), b.calls, b.failures, b.prompt_tokens),
            ("b", 1, 1, 1)
        );
        assert_eq!(b.cost_usd, None);
        assert!(s.usage_by_model(to, from).await.is_err());
        assert!(
            s.usage_by_model(to.plus(DAY), to.plus(DAY))
                .await
                .unwrap()
                .is_empty()
        );
        let e = s
            .record_usage(&rec("a", 1, 1, 1, UsageOutcome::Success, Some(-1.0)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cost_usd"), "{e}");
        assert!(
            s.record_usage(&rec("", 1, 1, 1, UsageOutcome::Success, None))
                .await
                .is_err()
        );
        assert!(
            s.record_usage(&rec("a", u64::MAX, 1, 1, UsageOutcome::Success, None))
                .await
                .is_err()
        );
    }

    pub(super) async fn api_keys(t: &TestStore) {
        let s = &t.store;
        let created = s
            .create_api_key(&NewApiKey {
                name: "ci".into(),
                scopes: vec!["jobs:write".into(), "jobs:read".into()],
                tier: "pro".into(),
            })
            .await
            .unwrap();
        let plain = created.plaintext.clone();
        assert!(plain.starts_with("qk_") && plain.len() == 67, "{plain}");
        assert!(plain.starts_with(&created.key.prefix));
        assert_eq!(created.key.prefix.len(), 11);
        let other = s
            .create_api_key(&NewApiKey {
                name: "b".into(),
                scopes: vec![],
                tier: "free".into(),
            })
            .await
            .unwrap();
        assert_ne!(other.plaintext, plain);

        match s.verify_api_key(&plain).await.unwrap() {
            KeyCheck::Valid(k) => {
                assert_eq!(k, created.key);
                assert_eq!(k.scopes, ["jobs:write", "jobs:read"]);
            }
            other => panic!("{other:?}"),
        }
        let mut wrong = plain.clone();
        wrong.pop();
        wrong.push(if plain.ends_with('0') { '1' } else { '0' });
        assert_eq!(s.verify_api_key(&wrong).await.unwrap(), KeyCheck::Unknown);
        assert_eq!(s.verify_api_key("").await.unwrap(), KeyCheck::Unknown);
        assert_eq!(
            s.verify_api_key(&created.key.prefix).await.unwrap(),
            KeyCheck::Unknown
        );

        t.clock.advance(Duration::from_secs(5));
        assert!(s.revoke_api_key(&created.key.id).await.unwrap());
        assert!(!s.revoke_api_key(&created.key.id).await.unwrap());
        assert!(!s.revoke_api_key("ghost").await.unwrap());
        match s.verify_api_key(&plain).await.unwrap() {
            KeyCheck::Revoked(k) => {
                assert_eq!(k.revoked_at, Some(TEST_EPOCH.plus(Duration::from_secs(5))))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.verify_api_key(&other.plaintext).await.unwrap(),
            KeyCheck::Valid(_)
        ));
        let keys = s.list_api_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert!(
            s.create_api_key(&NewApiKey {
                name: String::new(),
                scopes: vec![],
                tier: "x".into()
            })
            .await
            .is_err()
        );
    }

    pub(super) async fn autoscaler_decisions(t: &TestStore) {
        let s = &t.store;
        let new = |service: &str, target: u32, action| NewDecision {
            service: service.into(),
            observations: json!({"backlog": target * 100, "cpu": 0.5}),
            matched_rules: vec!["backlog_high".into()],
            current_replicas: 2,
            target_replicas: target,
            action,
            reason: format!("backlog {}", target * 100),
            decider: "rules".into(),
            provenance: json!({"config": "v3"}),
        };
        let d1 = s
            .record_decision(&new("worker", 3, ScaleAction::ScaleUp))
            .await
            .unwrap();
        t.clock.advance(Duration::from_secs(30));
        let d2 = s
            .record_decision(&new("worker", 2, ScaleAction::Hold))
            .await
            .unwrap();
        s.record_decision(&new("other", 1, ScaleAction::ScaleDown))
            .await
            .unwrap();
        t.clock.advance(Duration::from_secs(30));
        let d3 = s
            .record_decision(&new("worker", 1, ScaleAction::ScaleDown))
            .await
            .unwrap();
        let listed = s.list_decisions("worker", None, 10).await.unwrap();
        assert_eq!(listed, [d3.clone(), d2.clone(), d1.clone()]);
        assert_eq!(d1.decided_at, TEST_EPOCH);
        assert_eq!(d1.observations, json!({"backlog": 300, "cpu": 0.5}));
        assert_eq!(d1.matched_rules, ["backlog_high"]);
        assert_eq!(d1.provenance, json!({"config": "v3"}));
        let page = s.list_decisions("worker", Some(d3.id), 1).await.unwrap();
        assert_eq!(page, std::slice::from_ref(&d2));
        assert!(
            s.list_decisions("nobody", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            s.record_decision(&new("", 1, ScaleAction::Hold))
                .await
                .is_err()
        );
    }

    pub(super) async fn retention_deletes_exactly_what_is_past_its_age(t: &TestStore) {
        let s = &t.store;
        // Day 0: old rows of every kind.
        let old_completed = finished_job(t, "k", JobState::Completed).await;
        s.append_progress(&old_completed, &NewProgress::default())
            .await
            .unwrap();
        s.record_result(
            &old_completed,
            &NewModelResult {
                model: "m".into(),
                provider: "p".into(),
                ..NewModelResult::default()
            },
        )
        .await
        .unwrap();
        let old_failed = finished_job(t, "k", JobState::Failed).await;
        let old_cancelled = finished_job(t, "k", JobState::Cancelled).await;
        let old_timed_out = finished_job(t, "k", JobState::TimedOut).await;
        let old_pending = s.create_job(NewJob::new("k", json!(1))).await.unwrap().id;
        s.create_session(Some("idle"), None).await.unwrap();
        s.append_message("idle", &NewMessage::new(Role::User, "old"))
            .await
            .unwrap();
        s.add_summary("idle", "sum", 1).await.unwrap();
        s.record_usage(&NewUsage {
            provider: "p".into(),
            model: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            latency: Duration::from_millis(1),
            outcome: UsageOutcome::Success,
            cost_usd: None,
            owner: None,
            job_id: None,
        })
        .await
        .unwrap();
        s.record_decision(&NewDecision {
            service: "svc".into(),
            observations: json!({}),
            matched_rules: vec![],
            current_replicas: 1,
            target_replicas: 1,
            action: ScaleAction::Hold,
            reason: "r".into(),
            decider: "d".into(),
            provenance: json!({}),
        })
        .await
        .unwrap();
        // Day 2: fresh rows.
        t.clock.advance(DAY * 2);
        let new_completed = finished_job(t, "k", JobState::Completed).await;
        s.create_session(Some("active"), None).await.unwrap();
        s.append_message("active", &NewMessage::new(Role::User, "new"))
            .await
            .unwrap();

        // Day 3 + 1ms: a 3-day age deletes day-0 rows only, a 1-day age would reach day 2.
        t.clock.advance(DAY + Duration::from_millis(1));
        let three_days = Some(quorum_config::Duration::new(DAY * 3));
        let policy = RetentionPolicy {
            completed_jobs: three_days,
            failed_jobs: three_days,
            cancelled_jobs: None, // kept forever
            timed_out_jobs: three_days,
            idle_sessions: three_days,
            usage_records: three_days,
            decisions: three_days,
            batch_size: 500,
        };
        let report = s.cleanup(&policy).await.unwrap();
        assert_eq!(report.jobs.get(&JobState::Completed), Some(&1));
        assert_eq!(report.jobs.get(&JobState::Failed), Some(&1));
        assert_eq!(report.jobs.get(&JobState::TimedOut), Some(&1));
        assert_eq!(report.jobs.get(&JobState::Cancelled), None);
        assert_eq!((report.sessions, report.messages), (1, 1));
        assert_eq!((report.usage_records, report.decisions), (1, 1));
        assert_eq!(report.total(), 7);

        assert!(s.get_job(&old_completed).await.unwrap().is_none());
        assert!(s.get_job(&old_failed).await.unwrap().is_none());
        assert!(s.get_job(&old_timed_out).await.unwrap().is_none());
        assert!(s.get_job(&old_cancelled).await.unwrap().is_some());
        assert!(
            s.get_job(&old_pending).await.unwrap().is_some(),
            "unfinished jobs are never deleted"
        );
        assert!(s.get_job(&new_completed).await.unwrap().is_some());
        assert!(
            s.list_progress(&old_completed, 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(s.list_results(&old_completed).await.unwrap().is_empty());
        assert!(s.get_session("idle").await.unwrap().is_none());
        assert!(s.get_session("active").await.unwrap().is_some());
        let stats = s.stats().await.unwrap();
        assert_eq!(stats.rows["job_progress"], 0);
        assert_eq!(stats.rows["job_results"], 0);
        assert_eq!(stats.rows["session_summaries"], 0);
        assert_eq!(stats.rows["messages"], 1);
        assert_eq!(stats.rows["usage_records"], 0);

        // Nothing more to do: a second run deletes nothing.
        assert_eq!(s.cleanup(&policy).await.unwrap().total(), 0);
        assert_eq!(
            s.cleanup(&RetentionPolicy::keep_all())
                .await
                .unwrap()
                .total(),
            0
        );
        let zero = RetentionPolicy {
            batch_size: 0,
            ..RetentionPolicy::keep_all()
        };
        assert!(s.cleanup(&zero).await.is_err());
    }

    pub(super) async fn retention_in_small_batches(t: &TestStore) {
        let s = &t.store;
        for _ in 0..10 {
            let id = finished_job(t, "k", JobState::Completed).await;
            for _ in 0..3 {
                s.append_progress(&id, &NewProgress::default())
                    .await
                    .unwrap();
            }
        }
        t.clock.advance(DAY);
        let keep = finished_job(t, "k", JobState::Completed).await;
        t.clock.advance(Duration::from_secs(1));
        let policy = RetentionPolicy {
            completed_jobs: Some(quorum_config::Duration::new(Duration::from_secs(3600))),
            batch_size: 3,
            ..RetentionPolicy::keep_all()
        };
        let report = s.cleanup(&policy).await.unwrap();
        assert_eq!(report.jobs[&JobState::Completed], 10);
        // 3 + 3 + 3 + 1: four statements, the last one short.
        assert_eq!(report.statements, 4);
        let left = s.list_jobs(&JobFilter::default(), None, 100).await.unwrap();
        assert_eq!(
            left.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
            [keep]
        );
        assert_eq!(s.stats().await.unwrap().rows["job_progress"], 0);
    }

    pub(super) async fn stats(t: &TestStore) {
        let s = &t.store;
        s.create_job(NewJob::new("k", json!(1))).await.unwrap();
        s.create_job(NewJob::new("k", json!(2))).await.unwrap();
        s.create_session(Some("x"), None).await.unwrap();
        let stats = s.stats().await.unwrap();
        assert_eq!(stats.backend, s.backend().as_str());
        assert_eq!(stats.schema_version, SCHEMA_VERSION);
        assert_eq!(stats.rows["jobs"], 2);
        assert_eq!(stats.rows["sessions"], 1);
        assert_eq!(stats.rows["api_keys"], 0);
        assert_eq!(stats.rows.len(), 9);
        assert!(stats.size_bytes > 4096, "{stats:?}");
    }

    pub(super) async fn migrations_are_idempotent(t: &TestStore) {
        let job = t
            .store
            .create_job(NewJob::new("k", json!(1)))
            .await
            .unwrap();
        for _ in 0..2 {
            let again = t.reconnect().await.unwrap();
            assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
            assert_eq!(again.get_job(&job.id).await.unwrap().unwrap(), job);
            again.close().await;
        }
        // Two stores starting at once both succeed.
        let (a, b) = tokio::join!(t.reconnect(), t.reconnect());
        a.unwrap().close().await;
        b.unwrap().close().await;
        assert_eq!(t.store.schema_version().await.unwrap(), SCHEMA_VERSION);
    }

    pub(super) async fn newer_schema_is_refused(t: &TestStore) {
        test_util::force_schema_version(&t.store, SCHEMA_VERSION + 6)
            .await
            .unwrap();
        let e = t.reconnect().await.unwrap_err();
        assert!(matches!(e, StoreError::SchemaTooNew { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "database schema version {} is newer than this build supports ({SCHEMA_VERSION}); upgrade quorum",
                SCHEMA_VERSION + 6
            )
        );
        assert!(!e.is_retryable());
    }
}
