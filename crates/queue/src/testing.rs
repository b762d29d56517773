//! The backend conformance suite and the service helper backend tests use (feature `test-util`).
//!
//! Every queue backend runs [`run_conformance`] from its own `tests/`:
//!
//! ```no_run
//! # async fn example() {
//! use std::sync::Arc;
//! use quorum_queue::{Queue, QueueError, testing::{TestQueueConfig, run_conformance, service_url}};
//!
//! let Some(url) = service_url("NATS_URL") else { return }; // skips loudly without a server
//! let report = run_conformance(|config: TestQueueConfig| {
//!     let url = url.clone();
//!     async move {
//!         // Connect to `url`; make (or reopen) the stream/consumer named `config.name` with
//!         // `config.visibility_timeout` and `config.max_deliveries`.
//!         # let _ = (url, config);
//!         # let queue: Arc<dyn Queue> = unimplemented!();
//!         Ok::<_, QueueError>(queue)
//!     }
//! })
//! .await;
//! report.assert_all_passed();
//! # }
//! ```
//!
//! **The factory contract.** Each case calls the factory with a unique `name` (ASCII letters,
//! digits and `_`; safe as a JetStream stream name and a Redis key prefix) and gets a fresh,
//! isolated, empty queue. Calling it again with the *same* config must return another handle
//! (another connection / consumer) on the *same* queue: the suite uses that to play several
//! consumers, and to check that leases from a dropped or closed handle reach the others.
//!
//! Brokers run on real time, so the cases use short real timeouts (visibility 1 s) and poll until
//! a condition holds or a deadline passes; the only fixed waits are those asserting that something
//! does *not* happen (e.g. no redelivery before a nack delay). The cases run concurrently; the
//! whole suite takes about 5 s.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::{TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::time::Instant;

use crate::{DeadLetterReason, Delivery, MessageId, NewMessage, Queue, QueueError, StatsSnapshot};

/// What the suite asks the factory for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TestQueueConfig {
    /// Unique per case and run; the same name means the same queue.
    pub name: String,
    /// The lease visibility timeout (JetStream `AckWait`, Redis `XAUTOCLAIM` min idle time).
    pub visibility_timeout: Duration,
    /// Deliveries before dead-lettering (JetStream `MaxDeliver`).
    pub max_deliveries: u32,
}

/// The outcome of a suite run: which cases passed, were skipped (with why) or failed (with why).
#[derive(Clone, Debug, Default)]
pub struct ConformanceReport {
    /// Cases that passed.
    pub passed: Vec<&'static str>,
    /// Cases that did not apply to this backend (e.g. no stats), with the reason.
    pub skipped: Vec<(&'static str, String)>,
    /// Cases that failed, with what went wrong.
    pub failed: Vec<(&'static str, String)>,
}

impl ConformanceReport {
    /// Whether no case failed.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }

    /// Whether `case` failed.
    pub fn failed(&self, case: &str) -> bool {
        self.failed.iter().any(|(name, _)| *name == case)
    }

    /// Panics with the full report if any case failed.
    ///
    /// # Panics
    ///
    /// When a case failed: that is how a backend's test reports it.
    pub fn assert_all_passed(&self) {
        assert!(self.is_success(), "queue conformance failed:\n{self}");
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} passed, {} skipped, {} failed",
            self.passed.len(),
            self.skipped.len(),
            self.failed.len()
        )?;
        for (case, why) in &self.failed {
            writeln!(f, "  FAILED  {case}: {why}")?;
        }
        for (case, why) in &self.skipped {
            writeln!(f, "  skipped {case}: {why}")?;
        }
        Ok(())
    }
}

/// The names of every case, in the order they are reported.
pub const CASES: &[&str] = &[
    "at_least_once_delivery",
    "no_loss_when_consumer_dies",
    "redelivery_after_lease_expiry",
    "in_progress_prevents_redelivery",
    "nack_with_delay",
    "max_deliveries_dead_letter_and_replay",
    "lease_expiry_to_dead_letter",
    "term_dead_letters_immediately",
    "priority_order",
    "delayed_publish",
    "stats_match_reality",
    "graceful_close_returns_leases",
    "stale_ack_rejected",
    "concurrent_consumers_ack_once",
    "dedup",
    "batch_publish_and_ack",
    "bad_input",
];

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Factory<'a> =
    dyn Fn(TestQueueConfig) -> BoxFuture<'a, Result<Arc<dyn Queue>, QueueError>> + Send + Sync + 'a;

enum Outcome {
    Passed,
    Skipped(String),
}

type CaseResult = Result<Outcome, String>;

/// How long one case may take in all.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Short visibility timeout for the cases that wait for an expiry.
const SHORT_VT: Duration = Duration::from_secs(1);
/// Visibility timeout long enough that no lease expires during a case.
const LONG_VT: Duration = Duration::from_secs(60);
/// How long to wait for something that should happen soon.
const EVENTUALLY: Duration = Duration::from_secs(8);
/// The `wait` of each polling `lease` call.
const POLL: Duration = Duration::from_millis(100);

/// Runs every case against queues from `factory` (concurrently) and reports which failed.
///
/// See the [module docs](self) for what the factory must do.
pub async fn run_conformance<F, Fut>(factory: F) -> ConformanceReport
where
    F: Fn(TestQueueConfig) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Arc<dyn Queue>, QueueError>> + Send,
{
    let boxed =
        move |config: TestQueueConfig| -> BoxFuture<'_, Result<Arc<dyn Queue>, QueueError>> {
            Box::pin(factory(config))
        };
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let ctx = Ctx {
        factory: &boxed,
        prefix: format!("qc_{}_{:x}_{run}", std::process::id(), nanos % (1 << 40)),
    };
    let ctx = &ctx;
    let cases: Vec<(&'static str, BoxFuture<'_, CaseResult>)> = vec![
        (CASES[0], Box::pin(at_least_once_delivery(ctx))),
        (CASES[1], Box::pin(no_loss_when_consumer_dies(ctx))),
        (CASES[2], Box::pin(redelivery_after_lease_expiry(ctx))),
        (CASES[3], Box::pin(in_progress_prevents_redelivery(ctx))),
        (CASES[4], Box::pin(nack_with_delay(ctx))),
        (
            CASES[5],
            Box::pin(max_deliveries_dead_letter_and_replay(ctx)),
        ),
        (CASES[6], Box::pin(lease_expiry_to_dead_letter(ctx))),
        (CASES[7], Box::pin(term_dead_letters_immediately(ctx))),
        (CASES[8], Box::pin(priority_order(ctx))),
        (CASES[9], Box::pin(delayed_publish(ctx))),
        (CASES[10], Box::pin(stats_match_reality(ctx))),
        (CASES[11], Box::pin(graceful_close_returns_leases(ctx))),
        (CASES[12], Box::pin(stale_ack_rejected(ctx))),
        (CASES[13], Box::pin(concurrent_consumers_ack_once(ctx))),
        (CASES[14], Box::pin(dedup(ctx))),
        (CASES[15], Box::pin(batch_publish_and_ack(ctx))),
        (CASES[16], Box::pin(bad_input(ctx))),
    ];
    let results =
        futures_util::future::join_all(cases.into_iter().map(|(name, case)| async move {
            let result = match tokio::time::timeout(CASE_TIMEOUT, case).await {
                Ok(result) => result,
                Err(_) => Err(format!("timed out after {CASE_TIMEOUT:?}")),
            };
            (name, result)
        }))
        .await;
    let mut report = ConformanceReport::default();
    for (name, result) in results {
        match result {
            Ok(Outcome::Passed) => report.passed.push(name),
            Ok(Outcome::Skipped(why)) => report.skipped.push((name, why)),
            Err(why) => report.failed.push((name, why)),
        }
    }
    report
}

static RUN: AtomicU64 = AtomicU64::new(0);

struct Ctx<'a> {
    factory: &'a Factory<'a>,
    prefix: String,
}

impl Ctx<'_> {
    fn config(
        &self,
        case: &str,
        visibility_timeout: Duration,
        max_deliveries: u32,
    ) -> TestQueueConfig {
        TestQueueConfig {
            name: format!("{}_{case}", self.prefix),
            visibility_timeout,
            max_deliveries,
        }
    }

    async fn open(&self, config: &TestQueueConfig) -> Result<Arc<dyn Queue>, String> {
        (self.factory)(config.clone())
            .await
            .map_err(|e| format!("factory failed for {}: {}", config.name, chain(&e)))
    }
}

/// An error with its sources, for failure messages.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Adds what was being done to a queue error.
trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Context<T> for Result<T, QueueError> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {}", chain(&e)))
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn payload(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Leases until `want` deliveries arrived in all (or the deadline passes); returns them.
async fn lease_n(
    queue: &dyn Queue,
    want: usize,
    within: Duration,
) -> Result<Vec<Delivery>, String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        got.extend(queue.lease(want - got.len(), POLL).await.ctx("lease")?);
    }
    ensure!(
        got.len() >= want,
        "expected {want} deliveries within {within:?}, got {}",
        got.len()
    );
    Ok(got)
}

/// Leases for `during` and fails if anything is delivered.
async fn expect_nothing(queue: &dyn Queue, during: Duration, why: &str) -> Result<(), String> {
    let deadline = Instant::now() + during;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = queue.lease(1, left).await.ctx("lease")?;
        if let Some(d) = got.first() {
            return Err(format!(
                "{why}, but message {} was delivered (delivery count {})",
                d.id, d.delivery_count
            ));
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
    }
}

/// Polls the queue's stats until `check` accepts a snapshot (or the deadline passes).
async fn stats_until(
    queue: &dyn Queue,
    what: &str,
    check: impl Fn(&StatsSnapshot) -> bool,
) -> Result<StatsSnapshot, String> {
    let Some(stats) = queue.stats() else {
        return Err("stats() returned None".into());
    };
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let snapshot = stats.snapshot().await.ctx("stats snapshot")?;
        for rate in [snapshot.rate_in, snapshot.rate_out].into_iter().flatten() {
            ensure!(
                rate.is_finite() && rate >= 0.0,
                "rate {rate} is negative or not finite"
            );
        }
        if check(&snapshot) {
            return Ok(snapshot);
        }
        if Instant::now() >= deadline {
            return Err(format!("stats never showed {what}; last: {snapshot:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the dead letters until `id` is there; returns its entry.
async fn dead_letter_of(queue: &dyn Queue, id: &MessageId) -> Result<crate::DeadLetter, String> {
    let Some(dead) = queue.dead_letters() else {
        return Err("dead_letters() returned None".into());
    };
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let list = dead.list(1000).await.ctx("dead letters list")?;
        if let Some(found) = list.into_iter().find(|d| d.id == *id) {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(format!("message {id} never reached the dead letters"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn at_least_once_delivery(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("at_least_once_delivery", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    let mut ids = HashSet::new();
    for i in 0..20 {
        let msg = NewMessage::new(payload(&format!("m{i}"))).header("n", i.to_string());
        ensure!(
            ids.insert(q.publish(msg).await.ctx("publish")?),
            "duplicate message id"
        );
    }
    let got = lease_n(&*q, 20, EVENTUALLY).await?;
    let mut seen = HashSet::new();
    for d in &got {
        ensure!(
            d.delivery_count == 1,
            "first delivery has count {}",
            d.delivery_count
        );
        ensure!(ids.contains(&d.id), "delivered unknown id {}", d.id);
        let n = d.headers.get("n").ok_or("header n lost")?;
        ensure!(
            d.payload == payload(&format!("m{n}")),
            "payload {:?} does not match header n={n}",
            d.payload
        );
        ensure!(
            seen.insert(d.id.clone()),
            "message {} delivered twice",
            d.id
        );
        q.ack(&d.lease).await.ctx("ack")?;
    }
    expect_nothing(&*q, Duration::from_millis(300), "every message was acked").await?;
    Ok(Outcome::Passed)
}

async fn no_loss_when_consumer_dies(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("no_loss_when_consumer_dies", SHORT_VT, 5);
    let doomed = ctx.open(&config).await?;
    let survivor = ctx.open(&config).await?;
    let mut ids = HashSet::new();
    for i in 0..3 {
        ids.insert(
            doomed
                .publish(NewMessage::new(payload(&format!("job{i}"))))
                .await
                .ctx("publish")?,
        );
    }
    let held = lease_n(&*doomed, 3, EVENTUALLY).await?;
    ensure!(held.len() == 3, "leased {} of 3", held.len());
    // The consumer dies holding its leases: no ack, no close.
    drop(held);
    drop(doomed);
    let again = lease_n(&*survivor, 3, EVENTUALLY).await?;
    for d in &again {
        ensure!(
            ids.remove(&d.id),
            "unexpected or duplicate redelivery of {}",
            d.id
        );
        ensure!(
            d.delivery_count == 2,
            "redelivery has count {}, want 2",
            d.delivery_count
        );
        survivor.ack(&d.lease).await.ctx("ack redelivery")?;
    }
    ensure!(ids.is_empty(), "lost messages {ids:?}");
    Ok(Outcome::Passed)
}

async fn redelivery_after_lease_expiry(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("redelivery_after_lease_expiry", SHORT_VT, 5);
    let q = ctx.open(&config).await?;
    let id = q
        .publish(NewMessage::new(payload("once")))
        .await
        .ctx("publish")?;
    let first = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
    let leased_at = Instant::now();
    ensure!(
        first.id == id && first.delivery_count == 1,
        "first delivery wrong: {first:?}"
    );
    expect_nothing(&*q, Duration::from_millis(200), "the message is leased").await?;
    let second = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
    let after = leased_at.elapsed();
    ensure!(second.id == id, "redelivered {} instead of {id}", second.id);
    ensure!(
        second.delivery_count == 2,
        "redelivery count {}, want 2",
        second.delivery_count
    );
    ensure!(
        second.payload == first.payload,
        "payload changed on redelivery"
    );
    ensure!(
        after >= SHORT_VT.mul_f32(0.8),
        "redelivered after {after:?}, before the visibility timeout {SHORT_VT:?}"
    );
    q.ack(&second.lease).await.ctx("ack redelivery")?;
    Ok(Outcome::Passed)
}

async fn in_progress_prevents_redelivery(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("in_progress_prevents_redelivery", SHORT_VT, 5);
    let worker = ctx.open(&config).await?;
    let other = ctx.open(&config).await?;
    worker
        .publish(NewMessage::new(payload("long llm call")))
        .await
        .ctx("publish")?;
    let d = lease_n(&*worker, 1, EVENTUALLY).await?.remove(0);
    let until = Instant::now() + SHORT_VT * 3;
    while Instant::now() < until {
        worker.in_progress(&d.lease).await.ctx("in_progress")?;
        expect_nothing(&*other, SHORT_VT / 4, "the lease is being extended").await?;
    }
    worker.ack(&d.lease).await.ctx("ack after in_progress")?;
    expect_nothing(&*other, Duration::from_millis(300), "the message was acked").await?;
    Ok(Outcome::Passed)
}

async fn nack_with_delay(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("nack_with_delay", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    let id = q
        .publish(NewMessage::new(payload("retry me")))
        .await
        .ctx("publish")?;
    let d = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
    if !q.capabilities().nack_delay {
        match q.nack(&d.lease, Duration::from_millis(500)).await {
            Err(QueueError::Unsupported { .. }) => {}
            other => {
                return Err(format!(
                    "nack with a delay on a backend without nack delays: {other:?}"
                ));
            }
        }
    } else {
        let delay = Duration::from_millis(1500);
        q.nack(&d.lease, delay).await.ctx("nack with delay")?;
        let nacked_at = Instant::now();
        expect_nothing(&*q, delay / 2, "the nack delay has not passed").await?;
        let again = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
        ensure!(
            nacked_at.elapsed() >= delay.mul_f32(0.8),
            "redelivered {:?} after a nack delay of {delay:?}",
            nacked_at.elapsed()
        );
        ensure!(
            again.id == id && again.delivery_count == 2,
            "wrong redelivery: {again:?}"
        );
        q.nack(&again.lease, Duration::ZERO)
            .await
            .ctx("nack without delay")?;
        let third = lease_n(&*q, 1, Duration::from_secs(3)).await?.remove(0);
        ensure!(
            third.id == id && third.delivery_count == 3,
            "wrong redelivery: {third:?}"
        );
        q.ack(&third.lease).await.ctx("ack")?;
        return Ok(Outcome::Passed);
    }
    // Without delays: a zero-delay nack still redelivers promptly.
    q.nack(&d.lease, Duration::ZERO)
        .await
        .ctx("nack without delay")?;
    let again = lease_n(&*q, 1, Duration::from_secs(3)).await?.remove(0);
    ensure!(
        again.id == id && again.delivery_count == 2,
        "wrong redelivery: {again:?}"
    );
    q.ack(&again.lease).await.ctx("ack")?;
    Ok(Outcome::Passed)
}

async fn max_deliveries_dead_letter_and_replay(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("max_deliveries_dead_letter_and_replay", LONG_VT, 2);
    let q = ctx.open(&config).await?;
    let msg = NewMessage::new(payload("poison")).header("origin", "suite");
    let id = q.publish(msg).await.ctx("publish")?;
    for count in 1..=2 {
        let d = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
        ensure!(
            d.id == id && d.delivery_count == count,
            "delivery {count} wrong: {d:?}"
        );
        q.nack(&d.lease, Duration::ZERO).await.ctx("nack")?;
    }
    expect_nothing(
        &*q,
        Duration::from_millis(500),
        "max_deliveries (2) was reached",
    )
    .await?;
    let Some(dead) = q.dead_letters() else {
        return Ok(Outcome::Skipped(
            "no dead_letters(): checked only that the message is not redelivered".into(),
        ));
    };
    let letter = dead_letter_of(&*q, &id).await?;
    ensure!(
        letter.delivery_count == 2,
        "dead letter count {}, want 2",
        letter.delivery_count
    );
    ensure!(
        letter.reason == DeadLetterReason::MaxDeliveries { max: 2 },
        "dead letter reason {:?}",
        letter.reason
    );
    ensure!(
        letter.payload == payload("poison"),
        "dead letter payload changed"
    );
    ensure!(
        letter.headers.get("origin") == Some("suite"),
        "dead letter lost its headers"
    );
    if q.stats().is_some() {
        stats_until(&*q, "dead_lettered == 1", |s| s.dead_lettered == 1).await?;
    }
    let new_id = dead.replay(&id).await.ctx("replay")?;
    let d = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
    ensure!(
        d.id == new_id,
        "leased {} after replaying as {new_id}",
        d.id
    );
    ensure!(
        d.delivery_count == 1,
        "replayed delivery has count {}, want 1",
        d.delivery_count
    );
    ensure!(
        d.headers.get("origin") == Some("suite"),
        "replay lost the headers"
    );
    q.ack(&d.lease).await.ctx("ack replayed")?;
    let left = dead.list(10).await.ctx("list")?;
    ensure!(left.is_empty(), "dead letters after replay: {left:?}");
    match dead.replay(&id).await {
        Err(QueueError::NotFound { .. }) => {}
        other => return Err(format!("replaying a missing dead letter gave {other:?}")),
    }
    Ok(Outcome::Passed)
}

async fn lease_expiry_to_dead_letter(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("lease_expiry_to_dead_letter", SHORT_VT, 1);
    let q = ctx.open(&config).await?;
    let id = q
        .publish(NewMessage::new(payload("expires")))
        .await
        .ctx("publish")?;
    let d = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
    ensure!(d.delivery_count == 1, "count {}", d.delivery_count);
    // Never settled: after the visibility timeout it has had its one delivery.
    expect_nothing(&*q, SHORT_VT * 2 + SHORT_VT / 2, "max_deliveries is 1").await?;
    if q.dead_letters().is_none() {
        return Ok(Outcome::Passed);
    }
    let letter = dead_letter_of(&*q, &id).await?;
    ensure!(
        letter.reason == DeadLetterReason::MaxDeliveries { max: 1 } && letter.delivery_count == 1,
        "dead letter {letter:?}"
    );
    ensure!(
        q.ack(&d.lease).await.is_err(),
        "acking a dead-lettered delivery succeeded"
    );
    Ok(Outcome::Passed)
}

async fn term_dead_letters_immediately(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("term_dead_letters_immediately", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    let id = q
        .publish(NewMessage::new(payload("bad input")))
        .await
        .ctx("publish")?;
    let d = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
    q.term(&d.lease, "unparseable prompt").await.ctx("term")?;
    match q.ack(&d.lease).await {
        Err(QueueError::StaleLease { .. }) => {}
        other => return Err(format!("ack after term gave {other:?}, want StaleLease")),
    }
    expect_nothing(
        &*q,
        Duration::from_millis(300),
        "the message was terminated",
    )
    .await?;
    let Some(dead) = q.dead_letters() else {
        return Ok(Outcome::Passed);
    };
    let letter = dead_letter_of(&*q, &id).await?;
    ensure!(
        letter.reason == DeadLetterReason::Terminated("unparseable prompt".into()),
        "dead letter reason {:?}",
        letter.reason
    );
    ensure!(
        letter.delivery_count == 1,
        "dead letter count {}",
        letter.delivery_count
    );
    ensure!(
        dead.replay_all().await.ctx("replay_all")? == 1,
        "replay_all did not replay 1"
    );
    let d = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
    ensure!(
        d.payload == payload("bad input"),
        "replayed payload changed"
    );
    q.term(&d.lease, "still bad").await.ctx("term again")?;
    dead_letter_of(&*q, &d.id).await?;
    ensure!(
        dead.purge().await.ctx("purge")? == 1,
        "purge did not remove 1"
    );
    let left = dead.list(10).await.ctx("list")?;
    ensure!(left.is_empty(), "dead letters after purge: {left:?}");
    Ok(Outcome::Passed)
}

async fn priority_order(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("priority_order", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    let caps = q.capabilities();
    if !caps.priorities() {
        match q.publish(NewMessage::new(payload("p")).priority(1)).await {
            Err(QueueError::Unsupported { .. }) => {}
            other => {
                return Err(format!(
                    "priority 1 without priority support gave {other:?}"
                ));
            }
        }
        return Ok(Outcome::Skipped(
            "backend reports no priorities (rejection checked)".into(),
        ));
    }
    let hi = caps.max_priority;
    let mid = 1.max(hi / 2);
    let plan = [("a1", 0), ("b1", mid), ("c1", hi), ("b2", mid), ("a2", 0)];
    for (name, priority) in plan {
        q.publish(NewMessage::new(payload(name)).priority(priority))
            .await
            .ctx("publish")?;
    }
    if hi < u8::MAX {
        match q
            .publish(NewMessage::new(payload("x")).priority(hi + 1))
            .await
        {
            Err(QueueError::Unsupported { .. }) => {}
            other => return Err(format!("priority above max_priority gave {other:?}")),
        }
    }
    let mut expected = plan.to_vec();
    expected.sort_by_key(|&(_, p)| std::cmp::Reverse(p)); // stable: FIFO within a priority
    for (name, priority) in expected {
        let d = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
        ensure!(
            d.payload == payload(name),
            "leased {:?}, expected {name} (priority {priority})",
            d.payload
        );
        ensure!(
            d.priority == priority,
            "delivery priority {} want {priority}",
            d.priority
        );
        q.ack(&d.lease).await.ctx("ack")?;
    }
    Ok(Outcome::Passed)
}

async fn delayed_publish(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("delayed_publish", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    let delay = Duration::from_millis(1500);
    let msg = NewMessage::new(payload("later")).delay(delay);
    if !q.capabilities().delayed_publish {
        match q.publish(msg).await {
            Err(QueueError::Unsupported { .. }) => {}
            other => return Err(format!("delay without delay support gave {other:?}")),
        }
        return Ok(Outcome::Skipped(
            "backend reports no delays (rejection checked)".into(),
        ));
    }
    let published_at = Instant::now();
    let id = q.publish(msg).await.ctx("publish delayed")?;
    expect_nothing(&*q, delay / 2, "the publish delay has not passed").await?;
    let d = lease_n(&*q, 1, EVENTUALLY).await?.remove(0);
    ensure!(d.id == id, "leased {} want {id}", d.id);
    ensure!(
        published_at.elapsed() >= delay.mul_f32(0.8),
        "delivered {:?} after publishing with delay {delay:?}",
        published_at.elapsed()
    );
    q.ack(&d.lease).await.ctx("ack")?;
    Ok(Outcome::Passed)
}

async fn stats_match_reality(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("stats_match_reality", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    if q.stats().is_none() {
        return Ok(Outcome::Skipped("backend reports no stats".into()));
    }
    let q = &*q;
    stats_until(q, "an empty queue", |s| {
        s.backlog == 0 && s.in_flight == 0 && s.dead_lettered == 0 && s.oldest_ready_age.is_none()
    })
    .await?;
    for i in 0..3 {
        q.publish(NewMessage::new(payload(&format!("s{i}"))))
            .await
            .ctx("publish")?;
    }
    stats_until(q, "backlog 3 after 3 publishes", |s| {
        s.backlog == 3 && s.in_flight == 0 && s.published_total == 3 && s.oldest_ready_age.is_some()
    })
    .await?;
    let mut leased = lease_n(q, 2, EVENTUALLY).await?;
    stats_until(q, "backlog 1, in flight 2", |s| {
        s.backlog == 1 && s.in_flight == 2
    })
    .await?;
    let first = leased.remove(0);
    q.ack(&first.lease).await.ctx("ack")?;
    stats_until(q, "in flight 1 after an ack", |s| {
        s.backlog == 1 && s.in_flight == 1 && s.completed_total == 1
    })
    .await?;
    let second = leased.remove(0);
    q.term(&second.lease, "stats").await.ctx("term")?;
    stats_until(q, "1 dead-lettered after term", |s| {
        s.backlog == 1 && s.in_flight == 0 && s.dead_lettered == 1
    })
    .await?;
    let last = lease_n(q, 1, EVENTUALLY).await?.remove(0);
    q.ack(&last.lease).await.ctx("ack")?;
    stats_until(q, "nothing left but the dead letter", |s| {
        s.backlog == 0 && s.in_flight == 0 && s.dead_lettered == 1 && s.oldest_ready_age.is_none()
    })
    .await?;
    if q.capabilities().delayed_publish {
        q.publish(NewMessage::new(payload("d")).delay(Duration::from_secs(60)))
            .await
            .ctx("publish delayed")?;
        stats_until(q, "1 delayed, no backlog", |s| {
            s.delayed == 1 && s.backlog == 0
        })
        .await?;
    }
    Ok(Outcome::Passed)
}

async fn graceful_close_returns_leases(ctx: &Ctx<'_>) -> CaseResult {
    // A long visibility timeout: only `close` can explain a prompt redelivery.
    let config = ctx.config("graceful_close_returns_leases", LONG_VT, 5);
    let closing = ctx.open(&config).await?;
    let other = ctx.open(&config).await?;
    let mut ids = HashSet::new();
    for i in 0..3 {
        ids.insert(
            closing
                .publish(NewMessage::new(payload(&format!("c{i}"))))
                .await
                .ctx("publish")?,
        );
    }
    let held = lease_n(&*closing, 3, EVENTUALLY).await?;
    closing.close().await.ctx("close")?;
    closing.close().await.ctx("second close")?;
    match closing.lease(1, Duration::ZERO).await {
        Err(QueueError::Closed { .. }) => {}
        other => {
            return Err(format!(
                "lease on a closed handle gave {other:?}, want Closed"
            ));
        }
    }
    ensure!(
        closing.ack(&held[0].lease).await.is_err(),
        "ack on a closed handle succeeded"
    );
    let returned = lease_n(&*other, 3, Duration::from_secs(5)).await?;
    for d in &returned {
        ensure!(ids.remove(&d.id), "unexpected delivery {}", d.id);
        other.ack(&d.lease).await.ctx("ack returned lease")?;
    }
    Ok(Outcome::Passed)
}

async fn stale_ack_rejected(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("stale_ack_rejected", SHORT_VT, 5);
    let slow = ctx.open(&config).await?;
    let fast = ctx.open(&config).await?;
    slow.publish(NewMessage::new(payload("contended")))
        .await
        .ctx("publish")?;
    let old = lease_n(&*slow, 1, EVENTUALLY).await?.remove(0);
    // The slow consumer's lease expires; the fast one gets the message.
    let new = lease_n(&*fast, 1, EVENTUALLY).await?.remove(0);
    ensure!(
        new.id == old.id && new.delivery_count == 2,
        "wrong redelivery {new:?}"
    );
    ensure!(new.lease != old.lease, "two deliveries share one lease");
    let stale = |op: &str, r: Result<(), QueueError>| match r {
        Err(QueueError::StaleLease { .. }) => Ok(()),
        other => Err(format!(
            "{op} with an expired, re-leased lease gave {other:?}, want StaleLease"
        )),
    };
    stale("ack", slow.ack(&old.lease).await)?;
    stale("nack", slow.nack(&old.lease, Duration::ZERO).await)?;
    stale("in_progress", slow.in_progress(&old.lease).await)?;
    stale("term", slow.term(&old.lease, "late").await)?;
    fast.ack(&new.lease)
        .await
        .ctx("ack by the current holder")?;
    stale("second ack", fast.ack(&new.lease).await)?;
    Ok(Outcome::Passed)
}

async fn concurrent_consumers_ack_once(ctx: &Ctx<'_>) -> CaseResult {
    const MESSAGES: usize = 200;
    let config = ctx.config("concurrent_consumers_ack_once", LONG_VT, 5);
    let producer = ctx.open(&config).await?;
    let messages = (0..MESSAGES)
        .map(|i| NewMessage::new(payload(&format!("w{i}"))))
        .collect();
    for r in producer.publish_many(messages).await {
        r.ctx("publish_many")?;
    }
    let mut consumers = vec![producer];
    for _ in 0..3 {
        consumers.push(ctx.open(&config).await?);
    }
    let acked = Mutex::new(Vec::new());
    let deadline = Instant::now() + EVENTUALLY;
    let runs = consumers.iter().map(|c| {
        let acked = &acked;
        async move {
            while Instant::now() < deadline {
                if acked.lock().map_or(0, |a| a.len()) >= MESSAGES {
                    break;
                }
                for d in c.lease(16, POLL).await.ctx("lease")? {
                    c.ack(&d.lease).await.ctx("ack")?;
                    if let Ok(mut a) = acked.lock() {
                        a.push(d.id);
                    }
                }
            }
            Ok::<(), String>(())
        }
    });
    for r in futures_util::future::join_all(runs).await {
        r?;
    }
    let acked = acked.into_inner().map_err(|_| "poisoned")?;
    let unique: HashSet<_> = acked.iter().collect();
    ensure!(
        unique.len() == acked.len(),
        "{} messages acked twice",
        acked.len() - unique.len()
    );
    ensure!(
        acked.len() == MESSAGES,
        "acked {} of {MESSAGES}",
        acked.len()
    );
    Ok(Outcome::Passed)
}

async fn dedup(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("dedup", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    if !q.capabilities().dedup {
        match q.publish(NewMessage::new(payload("x")).dedup_id("k")).await {
            Err(QueueError::Unsupported { .. }) => {}
            other => return Err(format!("dedup id without dedup support gave {other:?}")),
        }
        return Ok(Outcome::Skipped(
            "backend reports no dedup (rejection checked)".into(),
        ));
    }
    let first = q
        .publish(NewMessage::new(payload("x")).dedup_id("job-1"))
        .await
        .ctx("publish")?;
    let again = q
        .publish(NewMessage::new(payload("x2")).dedup_id("job-1"))
        .await
        .ctx("publish dup")?;
    let other = q
        .publish(NewMessage::new(payload("y")).dedup_id("job-2"))
        .await
        .ctx("publish")?;
    ensure!(
        first == again,
        "duplicate got a new id {again} (first {first})"
    );
    ensure!(first != other, "distinct dedup ids share id {first}");
    let got = lease_n(&*q, 2, EVENTUALLY).await?;
    let mut payloads: Vec<_> = got.iter().map(|d| d.payload.clone()).collect();
    payloads.sort();
    ensure!(
        payloads == vec![payload("x"), payload("y")],
        "delivered {payloads:?}"
    );
    expect_nothing(&*q, Duration::from_millis(300), "the duplicate was dropped").await?;
    Ok(Outcome::Passed)
}

async fn batch_publish_and_ack(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("batch_publish_and_ack", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    let messages = (0..10)
        .map(|i| NewMessage::new(payload(&format!("b{i}"))))
        .collect();
    let mut ids = HashSet::new();
    for r in q.publish_many(messages).await {
        ensure!(
            ids.insert(r.ctx("publish_many")?),
            "publish_many returned a duplicate id"
        );
    }
    ensure!(ids.len() == 10, "publish_many returned {} ids", ids.len());
    let got = lease_n(&*q, 10, EVENTUALLY).await?;
    let leases: Vec<_> = got.iter().map(|d| d.lease.clone()).collect();
    for r in q.ack_many(&leases).await {
        r.ctx("ack_many")?;
    }
    for r in q.ack_many(&leases).await {
        match r {
            Err(QueueError::StaleLease { .. }) => {}
            other => return Err(format!("second ack_many gave {other:?}, want StaleLease")),
        }
    }
    ensure!(
        q.ack_many(&[]).await.is_empty(),
        "ack_many of nothing returned results"
    );
    Ok(Outcome::Passed)
}

async fn bad_input(ctx: &Ctx<'_>) -> CaseResult {
    let config = ctx.config("bad_input", LONG_VT, 5);
    let q = ctx.open(&config).await?;
    match q.lease(0, Duration::ZERO).await {
        Err(QueueError::InvalidArgument { name: "max", .. }) => {}
        other => {
            return Err(format!(
                "lease(0, _) gave {other:?}, want InvalidArgument max"
            ));
        }
    }
    let start = Instant::now();
    let empty = q
        .lease(5, Duration::ZERO)
        .await
        .ctx("lease on an empty queue")?;
    ensure!(empty.is_empty(), "empty queue delivered {}", empty.len());
    ensure!(
        start.elapsed() < Duration::from_secs(2),
        "lease with wait 0 blocked"
    );
    Ok(Outcome::Passed)
}

/// Returns the URL in the environment variable `var` when the service answers a TCP connect.
///
/// When `var` is unset or empty, or nothing answers at its host and port within 2 s, prints a
/// loud `SKIPPED: ...` line to stderr and returns `None` (the caller returns early), unless
/// `QUORUM_REQUIRE_SERVICES=1`, in which case it panics: CI must never skip silently. Blocks for
/// up to 2 s per address (it is a test helper).
///
/// # Panics
///
/// When the service is missing and `QUORUM_REQUIRE_SERVICES=1`.
pub fn service_url(var: &str) -> Option<String> {
    let require = std::env::var("QUORUM_REQUIRE_SERVICES").is_ok_and(|v| v.trim() == "1");
    let url = std::env::var(var).ok().filter(|u| !u.trim().is_empty());
    let problem = match &url {
        None => format!("{var} is not set"),
        Some(url) => match probe(url) {
            Ok(()) => return url.clone().into(),
            Err(why) => format!("{var}={url} does not answer: {why}"),
        },
    };
    skip(var, &problem, require)
}

#[expect(
    clippy::print_stderr,
    reason = "the loud skip notice is this helper's purpose"
)]
fn skip(var: &str, problem: &str, require: bool) -> Option<String> {
    let example = match var {
        "NATS_URL" => "nats://127.0.0.1:4222",
        "REDIS_URL" => "redis://127.0.0.1:6379",
        "DATABASE_URL" => "postgres://postgres@127.0.0.1:5432/quorum",
        _ => "scheme://host:port",
    };
    assert!(
        !require,
        "{problem}, and QUORUM_REQUIRE_SERVICES=1 requires it: start the service and set {var} \
         (e.g. {var}={example})"
    );
    eprintln!("SKIPPED: {problem} (set {var}, e.g. {var}={example}, to run these tests)");
    None
}

/// Connects to the URL's host and port.
fn probe(url: &str) -> Result<(), String> {
    let (host, port) = host_port(url)?;
    let addrs = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?;
    let mut last = format!("{host}:{port} resolved to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// The host and port of a service URL such as `nats://user:pw@host:4222,host2:4222` or
/// `redis://[::1]/0`, with the scheme's default port.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), url),
    };
    let first = rest.split(',').next().unwrap_or(rest);
    let authority = first.split(['/', '?', '#']).next().unwrap_or(first);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = match scheme.as_str() {
        "nats" | "tls" | "" => Some(4222),
        "redis" | "rediss" => Some(6379),
        "postgres" | "postgresql" => Some(5432),
        _ => None,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("invalid service URL {url:?}: unclosed ["))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("invalid service URL {url:?}: no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("invalid service URL {url:?}: bad port {p:?}"))?,
        None => default_port
            .ok_or_else(|| format!("invalid service URL {url:?}: no port and unknown scheme"))?,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_from_service_urls() {
        let hp = |u| host_port(u).unwrap();
        assert_eq!(hp("nats://127.0.0.1:4222"), ("127.0.0.1".into(), 4222));
        assert_eq!(hp("nats://localhost"), ("localhost".into(), 4222));
        assert_eq!(hp("nats://u:p@h1:5000,h2:6000"), ("h1".into(), 5000));
        assert_eq!(
            hp("redis://:secret@redis.local/0"),
            ("redis.local".into(), 6379)
        );
        assert_eq!(hp("rediss://[::1]:6380/1"), ("::1".into(), 6380));
        assert_eq!(
            hp("postgres://u@db:5433/q?sslmode=disable"),
            ("db".into(), 5433)
        );
        assert_eq!(hp("10.0.0.1:4222"), ("10.0.0.1".into(), 4222));
        assert!(host_port("nats://:4222").unwrap_err().contains("no host"));
        assert!(
            host_port("nats://h:99999")
                .unwrap_err()
                .contains("bad port")
        );
        assert!(
            host_port("http://h")
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!(host_port("redis://[::1").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn probe_reports_a_closed_port() {
        // Bind then drop a listener: the port is (almost certainly) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = probe(&format!("nats://127.0.0.1:{port}")).unwrap_err();
        assert!(err.contains("connect to 127.0.0.1"), "{err}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(probe(&format!("redis://127.0.0.1:{port}")), Ok(()));
    }

    #[test]
    fn skip_returns_none_or_panics_when_required() {
        assert_eq!(skip("NATS_URL", "NATS_URL is not set", false), None);
        let panic = std::panic::catch_unwind(|| skip("REDIS_URL", "REDIS_URL is not set", true))
            .unwrap_err();
        let text = panic.downcast_ref::<String>().unwrap();
        assert!(text.contains("QUORUM_REQUIRE_SERVICES=1"), "{text}");
        assert!(text.contains("REDIS_URL=redis://127.0.0.1:6379"), "{text}");
    }

    #[test]
    fn report_formatting() {
        let mut report = ConformanceReport::default();
        report.passed.push("a");
        assert!(report.is_success());
        report.failed.push(("b", "boom".into()));
        report.skipped.push(("c", "no stats".into()));
        assert!(report.failed("b") && !report.failed("a"));
        let text = report.to_string();
        assert!(text.contains("1 passed, 1 skipped, 1 failed"), "{text}");
        assert!(text.contains("FAILED  b: boom"), "{text}");
        assert!(std::panic::catch_unwind(|| report.assert_all_passed()).is_err());
    }
}
