//! A tiny closed-loop load generator for the mock (no oha needed): N keep-alive connections,
//! each sending the same chat request back to back for a while; prints throughput and latency
//! percentiles.
//!
//! ```sh
//! cargo run --release -p quorum-mock-llm -- --bind 127.0.0.1:9100 &
//! cargo run --release -p quorum-mock-llm --example load -- 127.0.0.1:9100 100 5 plain
//! ```
#![expect(clippy::print_stdout, reason = "an example that reports numbers")]

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, connections, seconds, mode] = args.as_slice() else {
        bail!("usage: load ADDR CONNECTIONS SECONDS plain|stream");
    };
    let connections: usize = connections.parse().context("CONNECTIONS")?;
    let duration = Duration::from_secs(seconds.parse().context("SECONDS")?);
    let stream = match mode.as_str() {
        "plain" => false,
        "stream" => true,
        other => bail!("unknown mode {other:?}"),
    };
    let body = format!(
        r#"{{"model":"mock-gpt","max_tokens":64,"stream":{stream},"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"Say hello to the benchmark."}}]}}"#
    );
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (addr, request) = (addr.clone(), request.clone());
        tasks.spawn(async move { connection(&addr, request.as_bytes(), deadline).await });
    }
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a sorted list"
        )]
        let i = ((latencies.len() as f64 - 1.0) * q) as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    println!(
        "{} requests in {duration:?} over {connections} connections: {:.0} req/s, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        latencies.len() as f64 / duration.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}

/// Sends `request` back to back until `deadline`; returns each response's latency.
async fn connection(
    addr: &str,
    request: &[u8],
    deadline: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let mut latencies = Vec::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    while Instant::now() < deadline {
        let started = Instant::now();
        socket.write_all(request).await?;
        buf.clear();
        loop {
            let mut chunk = [0u8; 8192];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-response");
            }
            buf.extend_from_slice(&chunk[..n]);
            if complete(&buf)? {
                break;
            }
        }
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// Whether `buf` holds one whole response (content-length or chunked).
fn complete(buf: &[u8]) -> anyhow::Result<bool> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(false);
    };
    let head = std::str::from_utf8(&buf[..end])?.to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("unexpected response: {head}");
    }
    if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        return Ok(buf.len() - end - 4 >= length.trim().parse::<usize>()?);
    }
    Ok(buf.ends_with(b"\r\n0\r\n\r\n"))
}
