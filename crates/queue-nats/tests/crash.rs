//! A consumer *process* holding leases is killed with SIGKILL; every message is still delivered
//! and acked exactly once by the surviving consumers.
//!
//! The test re-executes its own binary as the child consumer (`crash_child`, a no-op unless
//! `QUORUM_CRASH_CHILD` names the stream), which leases a batch, prints `HOLDING <n>` and waits
//! forever without acking.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use quorum_queue::testing::service_url;
use quorum_queue::{NewMessage, Queue};
use quorum_queue_nats::NatsQueue;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Mutex;
use tokio::time::Instant;

const MESSAGES: usize = 60;
const CHILD_BATCH: usize = 25;
const VISIBILITY: Duration = Duration::from_secs(2);
const CHILD_ENV: &str = "QUORUM_CRASH_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful when the parent test runs this binary as its child.
    };
    let url = std::env::var("NATS_URL").expect("the parent passes NATS_URL");
    let queue = NatsQueue::connect(common::config(&url, &name, VISIBILITY, 5))
        .await
        .unwrap();
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < CHILD_BATCH && Instant::now() < deadline {
        held.extend(
            queue
                .lease(CHILD_BATCH - held.len(), Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    println!("HOLDING {}", held.len());
    // Hold the leases, never ack: the parent kills this process.
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_loses_nothing_and_nothing_is_acked_twice() {
    let Some(url) = service_url("NATS_URL") else {
        return;
    };
    let name = common::unique("crash");
    let config = common::config(&url, &name, VISIBILITY, 5);
    let producer = NatsQueue::connect(config.clone()).await.unwrap();
    let messages = (0..MESSAGES)
        .map(|i| NewMessage::new(format!("job {i}")))
        .collect();
    let mut ids = Vec::new();
    for r in producer.publish_many(messages).await {
        ids.push(r.unwrap());
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &name)
        .env("NATS_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let held: usize = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest may print "test crash_child ... " on the same line first.
            if let Some((_, n)) = line.split_once("HOLDING ") {
                return n.trim().parse().unwrap();
            }
        }
        panic!("the child exited without holding leases");
    })
    .await
    .expect("the child never reported its leases");
    assert_eq!(held, CHILD_BATCH, "the child holds a full batch");
    child.kill().await.unwrap(); // SIGKILL on Unix: no close, no nak.
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "the child was killed");

    // Survivors: three handles, each leasing and acking until every message is acked once.
    let acks: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut survivors = Vec::new();
    for _ in 0..3 {
        let queue = NatsQueue::connect(config.clone()).await.unwrap();
        let acks = Arc::clone(&acks);
        survivors.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut redelivered = 0;
            while Instant::now() < deadline {
                if acks.lock().await.len() >= MESSAGES {
                    break;
                }
                for d in queue.lease(10, Duration::from_millis(200)).await.unwrap() {
                    if d.delivery_count > 1 {
                        redelivered += 1;
                    }
                    queue.ack(&d.lease).await.unwrap();
                    *acks.lock().await.entry(d.id.to_string()).or_default() += 1;
                }
            }
            queue.close().await.unwrap();
            redelivered
        }));
    }
    let mut redelivered = 0;
    for s in survivors {
        redelivered += s.await.unwrap();
    }
    let acks = acks.lock().await.clone();
    common::cleanup(&config).await;

    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !acks.contains_key(&id.to_string()))
        .collect();
    assert!(missing.is_empty(), "never acked: {missing:?}");
    let twice: Vec<_> = acks.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "acked more than once: {twice:?}");
    assert_eq!(acks.len(), MESSAGES);
    assert_eq!(
        redelivered, CHILD_BATCH,
        "exactly the killed child's leases came back as redeliveries"
    );
}
