//! Full-cycle throughput (publish → lease → ack, 1 KiB payloads) of `RedisQueue` next to a raw
//! redis-rs loop doing the same work in the same run: pipelined `XADD` (256 deep), `XREADGROUP
//! COUNT 100 BLOCK 100`, one `XACK` per message pipelined per batch.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo bench -p quorum-queue-redis --bench throughput`
//! (`BENCH_MESSAGES`, default 200000; `BENCH_REPS`, default 3, the median is printed).
//! Skips with a message when `REDIS_URL` is unset.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::expect_used,
    missing_docs,
    reason = "a bench binary: it prints its table and panics on setup failures"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quorum_queue::{NewMessage, Queue};
use quorum_queue_redis::{RedisQueue, RedisQueueConfig};
use redis::Value;
use tokio::time::Instant;

const PAYLOAD: usize = 1024;
const PIPELINE: usize = 256;
const BATCH: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("SKIPPED: REDIS_URL is not set (e.g. REDIS_URL=redis://127.0.0.1:6379)");
        return;
    };
    let messages = env_usize("BENCH_MESSAGES", 200_000);
    let reps = env_usize("BENCH_REPS", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "publish → lease → ack, {messages} msgs of {PAYLOAD} B, publish pipeline {PIPELINE}, \
             lease batch {BATCH}; median of {reps}"
        );
        println!(
            "| consumers | raw redis-rs msgs/s | RedisQueue msgs/s | RedisQueue max_priority 0 msgs/s | ratio (default) |"
        );
        println!("|---:|---:|---:|---:|---:|");
        for consumers in [1, 4] {
            let mut raw = Vec::new();
            let mut lib = Vec::new();
            let mut lib0 = Vec::new();
            for rep in 0..reps {
                raw.push(raw_cycle(&url, messages, consumers, rep).await);
                lib.push(lib_cycle(&url, messages, consumers, rep, 3).await);
                lib0.push(lib_cycle(&url, messages, consumers, rep, 0).await);
            }
            let (raw, lib, lib0) = (median(raw), median(lib), median(lib0));
            println!(
                "| {consumers} | {raw:.0} | {lib:.0} | {lib0:.0} | {:.0} % |",
                100.0 * lib / raw
            );
        }
    });
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn raw_cycle(url: &str, messages: usize, consumers: usize, rep: usize) -> f64 {
    let client = redis::Client::open(url).expect("url");
    let key = format!("bench:raw:{}:{consumers}:{rep}", std::process::id());
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .expect("DEL");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut admin)
        .await
        .expect("XGROUP");
    let payload = vec![b'x'; PAYLOAD];
    let acked = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..=consumers {
        conns.push(
            client
                .get_multiplexed_async_connection()
                .await
                .expect("connect"),
        );
    }
    let mut producer_conn = conns.pop().expect("conn");
    let t0 = Instant::now();
    let producer = {
        let key = key.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < messages {
                let n = PIPELINE.min(messages - sent);
                let mut pipe = redis::pipe();
                for _ in 0..n {
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("d")
                        .arg(&payload[..]);
                }
                let _: Vec<String> = pipe.query_async(&mut producer_conn).await.expect("XADD");
                sent += n;
            }
        })
    };
    let mut workers = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let key = key.clone();
        let acked = Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            let consumer = format!("c{i}");
            while acked.load(Ordering::Relaxed) < messages {
                let reply: Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(">")
                    .query_async(&mut conn)
                    .await
                    .expect("XREADGROUP");
                let ids = entry_ids(reply);
                if ids.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.cmd("XACK").arg(&key).arg("g").arg(id);
                }
                let _: Vec<i64> = pipe.query_async(&mut conn).await.expect("XACK");
                acked.fetch_add(ids.len(), Ordering::Relaxed);
            }
        }));
    }
    producer.await.expect("producer");
    for w in workers {
        w.await.expect("worker");
    }
    let rate = messages as f64 / t0.elapsed().as_secs_f64();
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .expect("DEL");
    rate
}

/// The entry ids of an `XREADGROUP` reply (payloads are received but not used).
fn entry_ids(reply: Value) -> Vec<Vec<u8>> {
    let mut ids = Vec::new();
    let Value::Array(streams) = reply else {
        return ids;
    };
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            continue;
        };
        if let Some(Value::Array(entries)) = parts.pop() {
            for entry in entries {
                if let Value::Array(mut e) = entry
                    && !e.is_empty()
                    && let Value::BulkString(id) = e.swap_remove(0)
                {
                    ids.push(id);
                }
            }
        }
    }
    ids
}

async fn lib_cycle(
    url: &str,
    messages: usize,
    consumers: usize,
    rep: usize,
    max_priority: u8,
) -> f64 {
    let name = format!(
        "bench:lib:{}:{consumers}:{rep}:{max_priority}",
        std::process::id()
    );
    let mut config = RedisQueueConfig::new(url, &name);
    config.max_priority = max_priority;
    let producer = RedisQueue::connect(config.clone()).await.expect("connect");
    let mut handles = Vec::new();
    for _ in 0..consumers {
        handles.push(RedisQueue::connect(config.clone()).await.expect("connect"));
    }
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let acked = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let publishing = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < messages {
                let n = PIPELINE.min(messages - sent);
                let batch = (0..n).map(|_| NewMessage::new(payload.clone())).collect();
                for r in producer.publish_many(batch).await {
                    r.expect("publish");
                }
                sent += n;
            }
        })
    };
    let mut workers = Vec::new();
    for q in handles {
        let acked = Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            while acked.load(Ordering::Relaxed) < messages {
                let batch = q
                    .lease(BATCH, Duration::from_millis(100))
                    .await
                    .expect("lease");
                if batch.is_empty() {
                    continue;
                }
                let leases: Vec<_> = batch.into_iter().map(|d| d.lease).collect();
                for r in q.ack_many(&leases).await {
                    r.expect("ack");
                }
                acked.fetch_add(leases.len(), Ordering::Relaxed);
            }
            q.close().await.expect("close");
        }));
    }
    publishing.await.expect("producer");
    for w in workers {
        w.await.expect("worker");
    }
    let rate = messages as f64 / t0.elapsed().as_secs_f64();
    producer.destroy().await.expect("destroy");
    rate
}
