//! The shared queue conformance suite against a real Redis (`REDIS_URL`), each case on its own
//! key prefix, deleted at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use quorum_queue::Queue;
use quorum_queue::testing::{CASES, TestQueueConfig, run_conformance, service_url};
use quorum_queue_redis::{RedisQueue, RedisQueueConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_passes_the_conformance_suite() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let names = Mutex::new(HashSet::new());
    let started = tokio::time::Instant::now();
    let report = run_conformance(|test: TestQueueConfig| {
        let mut config = common::config(&url, &test.name, test.visibility_timeout);
        config.max_deliveries = test.max_deliveries;
        names.lock().unwrap().insert(test.name.clone());
        async move {
            RedisQueue::connect(config)
                .await
                .map(|q| Arc::new(q) as Arc<dyn Queue>)
        }
    })
    .await;
    eprintln!("{report}(in {:?})", started.elapsed());
    let names = names.into_inner().unwrap();
    for name in &names {
        common::destroy(&RedisQueueConfig::new(&url, name)).await;
    }
    report.assert_all_passed();
    assert_eq!(report.passed.len(), CASES.len(), "every case ran: {report}");
    assert_eq!(names.len(), CASES.len(), "every case used its own queue");
}
