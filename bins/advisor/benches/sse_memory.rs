//! Resident memory of the real `quorum-advisor` process with many open SSE streams.
//!
//! Starts a mock upstream in-process and the advisor binary on a temporary SQLite file,
//! submits 50 jobs whose model answers only after a minute (so they stay open), opens
//! `SSE_STREAMS` (default 1000) event streams spread over them on raw sockets, holds them,
//! and reads the advisor's `VmRSS` / `VmHWM` from `/proc` before and while they are open. Then
//! closes every client and checks that the advisor counts zero open streams within a second.
//!
//! `cargo bench -p quorum-advisor --bench sse_memory`
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary: prints its report, panics on set-up failure"
)]

use std::time::Duration;

use quorum_mock_llm::{MockConfig, MockServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const JOBS: usize = 50;

fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn open_streams(client: &reqwest::Client, base: &str) -> u64 {
    let status: Value = client
        .get(format!("{base}/v1/admin/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["streams"]["open"].as_u64().unwrap()
}

#[tokio::main]
async fn main() {
    let streams: usize = std::env::var("SSE_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut mock = MockConfig::ephemeral();
    mock.slow_delay = quorum_config_duration(60);
    let mock = MockServer::start(mock).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("advisor.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{bind: \"127.0.0.1:{port}\", max_streams: 20000}}\n\
             store: {{url: \"sqlite://{db}\"}}\n\
             providers: [{{name: mock, kind: openai, base_url: \"{mock}/v1\"}}]\n\
             models: {{sleepy: {{provider: mock, model: fault-slow}}}}\n\
             advisor: {{default_models: [sleepy]}}\n\
             engine: {{max_concurrent_jobs: 50, job_timeout: 10m}}\n",
            db = dir.path().join("adv.db").display(),
            mock = mock.base_url(),
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_quorum-advisor"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/startupz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the advisor did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        let job: Value = client
            .post(format!("{base}/v1/advise"))
            .json(&serde_json::json!({"question": format!("question {i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jobs.push(job["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = status_kib(pid, "VmRSS:");

    let t0 = Instant::now();
    let mut sockets = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!(
            "GET /v1/jobs/{}/events HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n",
            jobs[i % JOBS]
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 512];
        let n = s.read(&mut head).await.unwrap();
        assert!(
            head[..n].starts_with(b"HTTP/1.1 200"),
            "stream {i}: {}",
            String::from_utf8_lossy(&head[..n])
        );
        sockets.push(s);
    }
    let opened_in = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = open_streams(&client, &base).await;
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");

    drop(sockets);
    let t1 = Instant::now();
    let mut freed_in = None;
    while t1.elapsed() < Duration::from_secs(5) {
        if open_streams(&client, &base).await == 0 {
            freed_in = Some(t1.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("advisor (pid {pid}) with {JOBS} running jobs:");
    println!(
        "  idle, no streams:            VmRSS {:>7.1} MiB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  {open} open SSE streams:      VmRSS {:>7.1} MiB, peak (VmHWM) {:>7.1} MiB; opened in {:?}",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        opened_in
    );
    println!(
        "  per stream:                  {:.1} KiB",
        (rss.saturating_sub(idle_rss)) as f64 / open.max(1) as f64
    );
    match freed_in {
        Some(d) => println!("  all clients gone → 0 open streams after {d:?}"),
        None => println!("  streams still counted open 5 s after the clients left"),
    }
    assert_eq!(open, streams as u64, "every stream is counted open");
    assert!(
        freed_in.is_some_and(|d| d <= Duration::from_secs(1)),
        "freed within 1 s"
    );
    assert!(rss < 100 * 1024, "VmRSS {rss} KiB is over 100 MiB");
    let _ = child.start_kill();
    let _ = child.wait().await;
    mock.shutdown().await;
}

fn quorum_config_duration(secs: u64) -> quorum_config::Duration {
    quorum_config::Duration::from_secs(secs)
}
