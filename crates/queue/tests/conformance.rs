//! The backend conformance suite against the in-memory queue, and checks that the suite catches
//! broken backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use quorum_queue::testing::{CASES, TestQueueConfig, run_conformance};
use quorum_queue::{
    Capabilities, DeadLetters, Delivery, Lease, MemoryQueue, MemoryQueueConfig, MessageId,
    NewMessage, Queue, QueueError, QueueStats,
};

/// Opens memory queues by name: the same name gives another handle on the same queue.
#[derive(Default)]
struct Registry(Mutex<HashMap<String, MemoryQueue>>);

impl Registry {
    fn open(&self, config: &TestQueueConfig) -> Result<MemoryQueue, QueueError> {
        let mut queues = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = queues.get(&config.name) {
            return Ok(queue.handle());
        }
        let queue = MemoryQueue::new(MemoryQueueConfig {
            name: config.name.clone(),
            visibility_timeout: config.visibility_timeout,
            max_deliveries: config.max_deliveries,
            ..MemoryQueueConfig::default()
        })?;
        queues.insert(config.name.clone(), queue.clone());
        Ok(queue)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_queue_passes_the_conformance_suite() {
    let registry = Registry::default();
    let started = tokio::time::Instant::now();
    let report = run_conformance(|config: TestQueueConfig| {
        let queue = registry.open(&config);
        async move { queue.map(|q| Arc::new(q) as Arc<dyn Queue>) }
    })
    .await;
    eprintln!("{report}(in {:?})", started.elapsed());
    report.assert_all_passed();
    assert_eq!(
        report.passed.len(),
        CASES.len(),
        "every case ran and passed: {report}"
    );
    // Every case used its own queue.
    assert_eq!(registry.0.lock().unwrap().len(), CASES.len());
}

/// What a broken backend gets wrong.
#[derive(Clone, Copy, Debug)]
enum Bug {
    /// Accepts acks of stale leases (two consumers could both "complete" a job).
    AcceptsStaleAcks,
    /// Claims priorities but delivers FIFO.
    IgnoresPriority,
    /// `close` does not return the handle's leases.
    CloseKeepsLeases,
    /// Loses messages whose consumer died (an ack-on-delivery queue).
    AckOnDelivery,
    /// Claims stats but never counts in-flight deliveries.
    WrongStats,
}

#[derive(Debug)]
struct Broken {
    inner: MemoryQueue,
    bug: Bug,
}

#[async_trait]
impl Queue for Broken {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn publish(&self, message: NewMessage) -> Result<MessageId, QueueError> {
        match self.bug {
            Bug::IgnoresPriority => self.inner.publish(message.priority(0)).await,
            _ => self.inner.publish(message).await,
        }
    }

    async fn lease(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let batch = self.inner.lease(max, wait).await?;
        if let Bug::AckOnDelivery = self.bug {
            for d in &batch {
                self.inner.ack(&d.lease).await?;
            }
        }
        Ok(batch)
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        match (self.bug, self.inner.ack(lease).await) {
            (Bug::AcceptsStaleAcks | Bug::AckOnDelivery, Err(QueueError::StaleLease { .. })) => {
                Ok(())
            }
            (_, result) => result,
        }
    }

    async fn nack(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError> {
        self.inner.nack(lease, delay).await
    }

    async fn in_progress(&self, lease: &Lease) -> Result<(), QueueError> {
        self.inner.in_progress(lease).await
    }

    async fn term(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        self.inner.term(lease, reason).await
    }

    async fn close(&self) -> Result<(), QueueError> {
        match self.bug {
            // Refuses further calls but keeps the leases until they expire.
            Bug::CloseKeepsLeases => {
                let detached = self.inner.handle();
                detached.close().await
            }
            _ => self.inner.close().await,
        }
    }

    fn stats(&self) -> Option<&dyn QueueStats> {
        match self.bug {
            Bug::WrongStats => Some(self),
            _ => self.inner.stats(),
        }
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        self.inner.dead_letters()
    }
}

#[async_trait]
impl QueueStats for Broken {
    async fn snapshot(&self) -> Result<quorum_queue::StatsSnapshot, QueueError> {
        let mut s = self.inner.snapshot().await?;
        s.in_flight = 0;
        Ok(s)
    }
}

async fn report_for(bug: Bug) -> quorum_queue::testing::ConformanceReport {
    let registry = Registry::default();
    run_conformance(|config: TestQueueConfig| {
        let queue = registry.open(&config);
        async move { queue.map(|inner| Arc::new(Broken { inner, bug }) as Arc<dyn Queue>) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_broken_backends() {
    let (stale, priority, close, lossy, stats) = tokio::join!(
        report_for(Bug::AcceptsStaleAcks),
        report_for(Bug::IgnoresPriority),
        report_for(Bug::CloseKeepsLeases),
        report_for(Bug::AckOnDelivery),
        report_for(Bug::WrongStats),
    );
    assert!(stale.failed("stale_ack_rejected"), "{stale}");
    assert!(
        stale.failed("batch_publish_and_ack") || stale.failed("term_dead_letters_immediately"),
        "{stale}"
    );
    assert!(priority.failed("priority_order"), "{priority}");
    assert_eq!(
        priority.failed.len(),
        1,
        "only priority_order fails: {priority}"
    );
    assert!(close.failed("graceful_close_returns_leases"), "{close}");
    assert!(lossy.failed("no_loss_when_consumer_dies"), "{lossy}");
    assert!(lossy.failed("redelivery_after_lease_expiry"), "{lossy}");
    assert!(stats.failed("stats_match_reality"), "{stats}");
    assert_eq!(stats.failed.len(), 1, "only stats fail: {stats}");
}
