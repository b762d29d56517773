//! The broker restarts (a private `nats-server` on a free port, killed and started again on the
//! same port and store directory): the client reconnects and no unacked work is lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use quorum_queue::{NewMessage, Queue, QueueError};
use quorum_queue_nats::NatsQueue;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const SERVER: &str = "/usr/sbin/nats-server";

fn server_binary() -> Option<String> {
    let found = [SERVER, "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(str::to_owned);
    if found.is_none() {
        let require = std::env::var("QUORUM_REQUIRE_SERVICES").is_ok_and(|v| v.trim() == "1");
        assert!(
            !require,
            "nats-server is not installed, and QUORUM_REQUIRE_SERVICES=1 requires it \
             (apt-get install nats-server)"
        );
        eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(binary: &str, port: u16, dir: &Path) -> Child {
    Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_work_survives_a_broker_restart() {
    let Some(binary) = server_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start(&binary, port, dir.path());
    wait_listening(port).await;
    let url = format!("nats://127.0.0.1:{port}");
    let config = common::config(&url, "restart", Duration::from_secs(2), 10);
    let queue = NatsQueue::connect(config).await.unwrap();

    let mut ids = HashSet::new();
    for r in queue
        .publish_many((0..20).map(|i| NewMessage::new(format!("r{i}"))).collect())
        .await
    {
        ids.insert(r.unwrap());
    }
    // Lease some and never ack them; ack a few others.
    let leased = queue.lease(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(leased.len(), 10);
    let mut acked = HashSet::new();
    for d in &leased[..3] {
        queue.ack(&d.lease).await.unwrap();
        acked.insert(d.id.clone());
    }

    server.kill().await.unwrap();
    server.wait().await.unwrap();
    // While the broker is down, calls fail with retryable transport errors, never hang forever.
    let down = tokio::time::timeout(Duration::from_secs(15), queue.lease(1, Duration::ZERO))
        .await
        .expect("lease returned while the broker is down");
    match down {
        Err(e @ QueueError::Transport { .. }) => assert!(e.is_retryable()),
        other => panic!("lease with the broker down gave {other:?}, want a transport error"),
    }

    let mut server = start(&binary, port, dir.path());
    wait_listening(port).await;

    // The same handle reconnects; every message not acked before the restart comes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.len() < ids.len() && Instant::now() < deadline {
        match queue.lease(10, Duration::from_millis(300)).await {
            Ok(batch) => {
                for d in batch {
                    queue.ack(&d.lease).await.unwrap();
                    acked.insert(d.id);
                }
            }
            Err(e) => {
                assert!(e.is_retryable(), "non-retryable error after restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(acked, ids, "messages lost across the restart");
    // Publishing works again too.
    let id = queue.publish(NewMessage::new("after")).await.unwrap();
    assert!(!ids.contains(&id));
    queue.close().await.unwrap();
    server.kill().await.unwrap();
}
