//! The periodic cleanup task: reports each run and stops on shutdown.

use std::time::Duration;

use quorum_store::{JobState, NewJob, RetentionPolicy, Writer, test_util};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_cleanup_reports_and_stops() {
    let t = test_util::sqlite().await;
    let job = t
        .store
        .create_job(NewJob::new("k", json!(1)))
        .await
        .unwrap();
    let done = t
        .store
        .complete_job(&job.id, Writer::Controller, &json!(1))
        .await
        .unwrap();
    assert!(done.is_applied());
    // Default retention keeps completed jobs 7 days: move the store clock past that.
    t.clock.advance(Duration::from_secs(8 * 86_400));

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = t.store.spawn_cleanup(
        RetentionPolicy::default(),
        Duration::from_millis(20),
        move |r| {
            let _ = tx.send(r.map(|report| report.jobs.get(&JobState::Completed).copied()));
        },
    );
    // Waits for the first report (an event), bounded so a hang fails instead of blocking.
    let first = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.unwrap(), Some(1));
    assert!(t.store.get_job(&job.id).await.unwrap().is_none());

    task.shutdown().await;
    // The task owned the sender: once it has ended, the channel drains and closes.
    while let Some(report) = rx.recv().await {
        assert_eq!(report.unwrap(), Some(0));
    }
    t.cleanup().await;
}
