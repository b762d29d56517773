//! Throughput of publish → lease → ack through `NatsQueue`, next to a raw async-nats loop with the
//! same settings (1 KiB payloads, publishes pipelined 256 deep, fetch batch 100, one connection
//! per producer and consumer), measured in the same run against the server at `NATS_URL`.
//!
//! `NATS_URL=nats://127.0.0.1:4222 cargo bench -p quorum-queue-nats --bench throughput`
//! (optional `BENCH_MESSAGES`, default 50000). Skips with a message when `NATS_URL` is unset.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use quorum_queue::{NewMessage, Queue};
use quorum_queue_nats::{NatsQueue, NatsQueueConfig};
use tokio::time::Instant;

const PIPELINE: usize = 256;
const BATCH: usize = 100;
const PAYLOAD: usize = 1024;

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; PAYLOAD])
}

fn config(url: &str, name: &str) -> NatsQueueConfig {
    NatsQueueConfig {
        url: url.to_owned(),
        stream: name.to_owned(),
        subject: format!("bench.{name}"),
        consumer: "workers".into(),
        max_ack_pending: 100_000,
        ..NatsQueueConfig::default()
    }
}

async fn delete(url: &str, name: &str) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let _ = js.delete_stream(name).await;
    let _ = js.delete_stream(format!("{name}_DLQ")).await;
}

/// The raw loop: async-nats directly, plain (fire-and-forget) acks like the reference bench.
async fn raw(url: &str, messages: usize, consumers: usize) -> f64 {
    let name = format!("BENCH_RAW_{consumers}_{}", std::process::id());
    delete(url, &name).await;
    let subject = format!("bench.{name}");
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let s = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    s.create_consumer(consumer::pull::Config {
        durable_name: Some("workers".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 100_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut pulls = Vec::new();
    for _ in 0..consumers {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client.clone());
        let c: consumer::PullConsumer = js
            .get_stream(&name)
            .await
            .unwrap()
            .get_consumer("workers")
            .await
            .unwrap();
        pulls.push((c, client));
    }
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let producer = {
        let js = js.clone();
        let subject = subject.clone();
        tokio::spawn(async move {
            let mut inflight = std::collections::VecDeque::new();
            for _ in 0..messages {
                inflight.push_back(js.publish(subject.clone(), payload()).await.unwrap());
                if inflight.len() >= PIPELINE {
                    inflight.pop_front().unwrap().await.unwrap();
                }
            }
            for f in inflight {
                f.await.unwrap();
            }
        })
    };
    let mut tasks = Vec::new();
    for (c, client) in pulls {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < messages {
                let mut batch = c
                    .fetch()
                    .max_messages(BATCH)
                    .expires(Duration::from_millis(200))
                    .messages()
                    .await
                    .unwrap();
                while let Some(m) = batch.next().await {
                    m.unwrap().ack().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Plain acks sit in the client's buffer: send them before the connection drops.
            client.flush().await.unwrap();
        }));
    }
    producer.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    // Plain acks are not confirmed: the cycle ends when the server has processed them all.
    let s = js.get_stream(&name).await.unwrap();
    loop {
        let info = s.consumer_info("workers").await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = messages as f64 / t0.elapsed().as_secs_f64();
    delete(url, &name).await;
    rate
}

/// Through the queue layer: publish_many pipelined 256 deep, lease(100), ack_many (confirmed).
async fn layered(url: &str, messages: usize, consumers: usize) -> f64 {
    let name = format!("BENCH_Q_{consumers}_{}", std::process::id());
    delete(url, &name).await;
    let producer = NatsQueue::connect(config(url, &name)).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..consumers {
        handles.push(NatsQueue::connect(config(url, &name)).await.unwrap());
    }
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let p = tokio::spawn(async move {
        let mut left = messages;
        while left > 0 {
            let n = left.min(PIPELINE);
            let batch = (0..n).map(|_| NewMessage::new(payload())).collect();
            for r in producer.publish_many(batch).await {
                r.unwrap();
            }
            left -= n;
        }
    });
    let mut tasks = Vec::new();
    for q in handles {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < messages {
                let batch = q.lease(BATCH, Duration::from_millis(200)).await.unwrap();
                let leases: Vec<_> = batch.iter().map(|d| d.lease.clone()).collect();
                for r in q.ack_many(&leases).await {
                    r.unwrap();
                }
                done.fetch_add(leases.len(), Ordering::Relaxed);
            }
        }));
    }
    p.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = messages as f64 / t0.elapsed().as_secs_f64();
    delete(url, &name).await;
    rate
}

fn main() {
    let Some(url) = std::env::var("NATS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("SKIPPED: NATS_URL is not set (e.g. NATS_URL=nats://127.0.0.1:4222)");
        return;
    };
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "publish -> lease -> ack, {messages} msgs of {PAYLOAD} B, publish pipeline {PIPELINE}, batch {BATCH}"
    );
    println!(
        "{:<12} {:>14} {:>14} {:>8}",
        "consumers", "raw msgs/s", "queue msgs/s", "ratio"
    );
    for consumers in [1, 4] {
        let raw = rt.block_on(raw(&url, messages, consumers));
        let ours = rt.block_on(layered(&url, messages, consumers));
        println!(
            "{:<12} {:>14.0} {:>14.0} {:>7.0}%",
            consumers,
            raw,
            ours,
            100.0 * ours / raw
        );
    }
}
