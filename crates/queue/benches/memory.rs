//! Throughput of the in-memory queue: publish → lease → ack with 1 KiB payloads.
//!
//! One producer publishes `MESSAGES` messages one `publish` call at a time (each payload a fresh
//! 1 KiB copy, as a real producer would have); `C` consumers (1 or 4) each loop
//! `lease(100, 50ms)` and ack every delivery individually, all on a multi-thread tokio runtime,
//! concurrently with the producer. An iteration ends when every message is acked. Criterion's
//! "thrpt" figure is messages per second for the whole cycle. A second group acks each batch
//! with one `ack_many` call.
//!
//! Run: `cargo bench -p quorum-queue --bench memory`.

#![expect(
    clippy::expect_used,
    reason = "a benchmark aborts on any setup or queue failure, like a test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quorum_queue::{MemoryQueue, MemoryQueueConfig, NewMessage, Queue};

const MESSAGES: usize = 200_000;
const BATCH: usize = 100;
const PAYLOAD: [u8; 1024] = [b'x'; 1024];

/// One full cycle of `MESSAGES` messages; returns the elapsed wall time.
async fn cycle(consumers: usize, batch_ack: bool) -> Duration {
    let queue = MemoryQueue::new(MemoryQueueConfig {
        capacity: MESSAGES + 1,
        ..MemoryQueueConfig::default()
    })
    .expect("valid config");
    let acked = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let producer = {
        let queue: Arc<dyn Queue> = Arc::new(queue.handle());
        tokio::spawn(async move {
            for _ in 0..MESSAGES {
                let payload = Bytes::copy_from_slice(&PAYLOAD);
                queue
                    .publish(NewMessage::new(payload))
                    .await
                    .expect("publish");
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..consumers {
        let queue: Arc<dyn Queue> = Arc::new(queue.handle());
        let acked = Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            while acked.load(Ordering::Relaxed) < MESSAGES {
                let batch = queue
                    .lease(BATCH, Duration::from_millis(50))
                    .await
                    .expect("lease");
                if batch_ack {
                    let leases: Vec<_> = batch.iter().map(|d| d.lease.clone()).collect();
                    for r in queue.ack_many(&leases).await {
                        r.expect("ack");
                    }
                } else {
                    for d in &batch {
                        queue.ack(&d.lease).await.expect("ack");
                    }
                }
                acked.fetch_add(batch.len(), Ordering::Relaxed);
            }
        }));
    }
    producer.await.expect("producer");
    for w in workers {
        w.await.expect("consumer");
    }
    start.elapsed()
}

/// Publishing alone: `MESSAGES` single `publish` calls from one task.
async fn publish_only() -> Duration {
    let queue = MemoryQueue::new(MemoryQueueConfig {
        capacity: MESSAGES + 1,
        ..MemoryQueueConfig::default()
    })
    .expect("valid config");
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let start = tokio::time::Instant::now();
    for _ in 0..MESSAGES {
        let payload = Bytes::copy_from_slice(&PAYLOAD);
        queue
            .publish(NewMessage::new(payload))
            .await
            .expect("publish");
    }
    start.elapsed()
}

/// Draining a backlog of `MESSAGES` (published before the clock starts) with `consumers`.
async fn drain(consumers: usize) -> Duration {
    let queue = MemoryQueue::new(MemoryQueueConfig {
        capacity: MESSAGES + 1,
        ..MemoryQueueConfig::default()
    })
    .expect("valid config");
    for _ in 0..MESSAGES {
        let payload = Bytes::copy_from_slice(&PAYLOAD);
        queue
            .publish(NewMessage::new(payload))
            .await
            .expect("publish");
    }
    let acked = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..consumers {
        let queue: Arc<dyn Queue> = Arc::new(queue.handle());
        let acked = Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            while acked.load(Ordering::Relaxed) < MESSAGES {
                let batch = queue
                    .lease(BATCH, Duration::from_millis(50))
                    .await
                    .expect("lease");
                for d in &batch {
                    queue.ack(&d.lease).await.expect("ack");
                }
                acked.fetch_add(batch.len(), Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.expect("consumer");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    for (group_name, batch_ack) in [
        ("memory_cycle_ack_each", false),
        ("memory_cycle_ack_many", true),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(MESSAGES as u64));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
        for consumers in [1usize, 4] {
            group.bench_function(format!("1KiB_consumers_{consumers}"), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += cycle(consumers, batch_ack).await;
                        }
                        total
                    })
                });
            });
        }
        group.finish();
    }
    let mut group = c.benchmark_group("memory_parts");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("publish_only_1KiB", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += publish_only().await;
                }
                total
            })
        });
    });
    for consumers in [1usize, 4] {
        group.bench_function(format!("drain_backlog_consumers_{consumers}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += drain(consumers).await;
                    }
                    total
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
