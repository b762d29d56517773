//! A private Redis (AOF, `appendfsync always`) is killed and restarted on the same port and
//! directory: the client reconnects and no unacked work is lost.
//!
//! Runs only when `REDIS_URL` is set (the service tier) and `redis-server` is installed; skips
//! loudly otherwise (and fails under `QUORUM_REQUIRE_SERVICES=1`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use quorum_queue::testing::service_url;
use quorum_queue::{NewMessage, Queue, QueueError};
use quorum_queue_redis::RedisQueue;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const SERVER: &str = "/usr/bin/redis-server";
const VT: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(port: u16, dir: &Path) -> Child {
    let child = Command::new(SERVER)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

/// Retries a call while it fails with a retryable (transport) error.
async fn retrying<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not recovered: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_restart_and_loses_no_unacked_work() {
    // The service tier: the same gate as the other Redis tests.
    if service_url("REDIS_URL").is_none() {
        return;
    }
    if !Path::new(SERVER).exists() {
        let require = std::env::var("QUORUM_REQUIRE_SERVICES").is_ok_and(|v| v.trim() == "1");
        assert!(
            !require,
            "{SERVER} is missing and QUORUM_REQUIRE_SERVICES=1"
        );
        eprintln!("SKIPPED: {SERVER} is not installed (apt-get install redis-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start(port, dir.path()).await;
    let url = format!("redis://127.0.0.1:{port}");
    let mut config = common::config(&url, "restart", VT);
    config.claim_interval = quorum_config::Duration::from_millis(200);
    let q = RedisQueue::connect(config).await.unwrap();

    let mut ids = Vec::new();
    for r in q
        .publish_many((0..20).map(|i| NewMessage::new(format!("m{i}"))).collect())
        .await
    {
        ids.push(r.unwrap());
    }
    let first = q.lease(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 10);
    // Ack half; the other half stays leased across the restart.
    let (acked, held) = first.split_at(5);
    for d in acked {
        q.ack(&d.lease).await.unwrap();
    }
    let held: Vec<_> = held.iter().map(|d| d.id.clone()).collect();

    server.kill().await.unwrap();
    server.wait().await.unwrap();
    let down = q.publish(NewMessage::new("while down")).await.unwrap_err();
    assert!(
        down.is_retryable(),
        "a dead server is a transport error: {down:?}"
    );

    let _server = start(port, dir.path()).await;
    let late = retrying(|| q.publish(NewMessage::new("after restart"))).await;
    ids.push(late);

    // Everything not acked before the restart is delivered and acked exactly once.
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut redelivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < ids.len() - acked.len() && Instant::now() < deadline {
        let batch = retrying(|| q.lease(20, Duration::from_millis(200))).await;
        for d in batch {
            if d.delivery_count > 1 {
                redelivered.push(d.id.clone());
            }
            retrying(|| q.ack(&d.lease)).await;
            *seen.entry(d.id.to_string()).or_default() += 1;
        }
    }
    for d in acked {
        assert!(
            !seen.contains_key(&d.id.to_string()),
            "acked {} came back",
            d.id
        );
    }
    assert_eq!(
        seen.len(),
        ids.len() - acked.len(),
        "lost messages: {seen:?}"
    );
    assert!(seen.values().all(|&n| n == 1), "acked twice: {seen:?}");
    redelivered.sort();
    let mut want = held.clone();
    want.sort();
    assert_eq!(
        redelivered, want,
        "exactly the leases held across the restart came back"
    );
    q.destroy().await.unwrap();
}
