//! A consumer *process* holding leases is killed with SIGKILL; the survivors still deliver and
//! ack every message exactly once.
//!
//! The test re-runs its own binary as the child consumer (`QUORUM_CRASH_CHILD=<queue name>`),
//! which leases a batch, prints `HOLDING <n>` and waits without acking until it is killed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_queue::testing::service_url;
use quorum_queue::{NewMessage, Queue};
use quorum_queue_redis::RedisQueue;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

const MESSAGES: usize = 300;
const HELD: usize = 50;
const VT: Duration = Duration::from_secs(2);
const CHILD_ENV: &str = "QUORUM_CRASH_CHILD";

/// The child consumer: a no-op unless `QUORUM_CRASH_CHILD` names a queue.
#[tokio::test]
async fn crash_child_consumer() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let url = std::env::var("REDIS_URL").expect("the parent passes REDIS_URL");
    let q = RedisQueue::connect(common::config(&url, &name, VT))
        .await
        .unwrap();
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < HELD && Instant::now() < deadline {
        held.extend(
            q.lease(HELD - held.len(), Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    println!("HOLDING {}", held.len());
    // Never ack: wait to be killed.
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_loses_nothing_and_nothing_is_acked_twice() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let name = common::unique("crash");
    let config = common::config(&url, &name, VT);
    let producer = RedisQueue::connect(config.clone()).await.unwrap();
    let messages = (0..MESSAGES)
        .map(|i| NewMessage::new(format!("job {i}")).header("n", i.to_string()))
        .collect();
    let mut ids = Vec::new();
    for r in producer.publish_many(messages).await {
        ids.push(r.unwrap());
    }

    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child_consumer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &name)
        .env("REDIS_URL", &url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let held = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest prints `test crash_child_consumer ... ` first, on the same line.
            if let Some((_, n)) = line.split_once("HOLDING ") {
                return n.trim().parse::<usize>().unwrap();
            }
        }
        panic!("the child exited without holding leases");
    })
    .await
    .expect("the child reported its leases");
    assert_eq!(held, HELD, "the child holds a full batch");
    let killed_at = Instant::now();
    child.kill().await.unwrap(); // SIGKILL on Unix
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "the child was killed: {status:?}");

    // Three survivors drain the queue.
    let acks: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let redelivered = Arc::new(Mutex::new(0usize));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut workers = Vec::new();
    for _ in 0..3 {
        let q = RedisQueue::connect(config.clone()).await.unwrap();
        let acks = Arc::clone(&acks);
        let redelivered = Arc::clone(&redelivered);
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline && acks.lock().unwrap().len() < MESSAGES {
                let batch = q.lease(20, Duration::from_millis(200)).await.unwrap();
                for d in batch {
                    if d.delivery_count > 1 {
                        *redelivered.lock().unwrap() += 1;
                        assert!(
                            killed_at.elapsed() >= VT.mul_f32(0.5),
                            "redelivered before the lease could expire"
                        );
                    }
                    q.ack(&d.lease).await.unwrap();
                    *acks.lock().unwrap().entry(d.id.to_string()).or_default() += 1;
                }
            }
            q.close().await.unwrap();
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let acks = acks.lock().unwrap().clone();
    producer.destroy().await.unwrap();
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !acks.contains_key(&id.to_string()))
        .collect();
    assert!(missing.is_empty(), "never acked: {missing:?}");
    let twice: Vec<_> = acks.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "acked more than once: {twice:?}");
    assert_eq!(acks.len(), MESSAGES);
    assert_eq!(
        *redelivered.lock().unwrap(),
        HELD,
        "exactly the killed consumer's leases were redelivered"
    );
}
