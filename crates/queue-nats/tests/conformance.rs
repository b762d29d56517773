//! The shared queue conformance suite against the NATS server at `NATS_URL`, every case on its
//! own streams (deleted afterwards).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use quorum_queue::Queue;
use quorum_queue::testing::{CASES, TestQueueConfig, run_conformance, service_url};
use quorum_queue_nats::NatsQueue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_queue_passes_the_conformance_suite() {
    let Some(url) = service_url("NATS_URL") else {
        return;
    };
    let created = Mutex::new(HashSet::new());
    let started = tokio::time::Instant::now();
    let report = run_conformance(|test: TestQueueConfig| {
        let config = common::config(
            &url,
            &test.name,
            test.visibility_timeout,
            test.max_deliveries,
        );
        created.lock().unwrap().insert(test.name.clone());
        async move {
            NatsQueue::connect(config)
                .await
                .map(|q| Arc::new(q) as Arc<dyn Queue>)
        }
    })
    .await;
    eprintln!("{report}(in {:?})", started.elapsed());
    let names: Vec<String> = created.lock().unwrap().iter().cloned().collect();
    for name in &names {
        common::cleanup(&common::config(
            &url,
            name,
            std::time::Duration::from_secs(1),
            1,
        ))
        .await;
    }
    report.assert_all_passed();
    assert_eq!(names.len(), CASES.len(), "every case used its own stream");
    // Priorities and delayed publishes are reported unsupported (their cases check the
    // rejection); nack delays are supported and exercised.
    assert_eq!(report.skipped.len(), 2, "{report}");
}
