//! Redis-specific behaviour beyond the shared suite: config validation against the server,
//! stale-lease detection details, priorities within one batch, delivery counts across nacks,
//! close, list stats and pub/sub topics. Needs `REDIS_URL`; skips loudly without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use quorum_queue::testing::service_url;
use quorum_queue::{NewMessage, Queue, QueueError, Topics};
use quorum_queue_redis::{RedisListStats, RedisQueue, RedisQueueConfig, RedisTopics, validate};
use redis::AsyncCommands;

const LONG: Duration = Duration::from_secs(60);

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn field(err: QueueError) -> &'static str {
    match err {
        QueueError::InvalidConfig { field, .. } => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[tokio::test]
async fn validate_reports_config_errors_clearly() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let name = common::unique("validate");
    let mut config = common::config(&url, &name, LONG);

    // Bad URL and an unreachable server.
    let mut bad = config.clone();
    bad.url = "http://nope".parse().unwrap();
    assert_eq!(field(validate(&bad).await.unwrap_err()), "url");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    bad.url = format!("redis://127.0.0.1:{port}").parse().unwrap();
    let err = validate(&bad).await.unwrap_err();
    assert!(
        err.is_retryable(),
        "unreachable is a transport error: {err:?}"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains(&format!("127.0.0.1:{port}")), "{source}");

    // Missing queue: fine with create, an error without.
    validate(&config).await.unwrap();
    config.create = false;
    let err = validate(&config).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not exist and create is false"),
        "{err}"
    );
    assert_eq!(field(err), "create");
    assert_eq!(
        field(RedisQueue::connect(config.clone()).await.unwrap_err()),
        "create"
    );

    // Created: valid with create off too.
    config.create = true;
    let q = RedisQueue::connect(config.clone()).await.unwrap();
    config.create = false;
    validate(&config).await.unwrap();

    // Another group without create: the group is missing.
    let mut other_group = config.clone();
    other_group.group = "nobody".into();
    assert_eq!(field(validate(&other_group).await.unwrap_err()), "group");

    // Lowering max_priority would strand messages.
    let mut lower = config.clone();
    lower.max_priority = 1;
    let err = validate(&lower).await.unwrap_err();
    assert!(err.to_string().contains("max_priority 3"), "{err}");
    assert_eq!(field(err), "max_priority");

    // A key of the wrong type.
    let mut conn = raw(&url).await;
    let clash = common::unique("clash");
    let _: () = conn.set(format!("{clash}:p0"), "x").await.unwrap();
    let err = validate(&common::config(&url, &clash, LONG))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("holds a string, not a stream"),
        "{err}"
    );
    let _: () = conn.del(format!("{clash}:p0")).await.unwrap();
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn stale_leases_are_detected_by_owner_and_delivery_count() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let config = common::config(&url, &common::unique("stale"), Duration::from_millis(300));
    let q = RedisQueue::connect(config.clone()).await.unwrap();
    q.publish(NewMessage::new("x")).await.unwrap();
    let first = q.lease(1, Duration::from_secs(1)).await.unwrap().remove(0);
    // The same consumer claims its own expired lease again: the count differs.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = q.lease(1, Duration::from_secs(2)).await.unwrap().remove(0);
    assert_eq!(
        (second.id.clone(), second.delivery_count),
        (first.id.clone(), 2)
    );
    assert!(q.ack(&first.lease).await.unwrap_err().is_stale_lease());
    assert!(
        q.in_progress(&first.lease)
            .await
            .unwrap_err()
            .is_stale_lease()
    );
    // A forged lease (no entry handle, or a priority out of range) is stale, not a panic.
    let forged = quorum_queue::Lease::new(first.id.clone(), 0, 1);
    assert!(q.ack(&forged).await.unwrap_err().is_stale_lease());
    let forged = quorum_queue::Lease::new(first.id.clone(), 99, 1).with_handle("1-0");
    assert!(q.ack(&forged).await.unwrap_err().is_stale_lease());
    // A batch mixing current and stale leases settles each on its own.
    let results = q
        .ack_many(&[first.lease.clone(), second.lease.clone()])
        .await;
    assert!(results[0].as_ref().unwrap_err().is_stale_lease());
    results[1].as_ref().unwrap();
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn priorities_nacks_and_close() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let mut config = common::config(&url, &common::unique("prio"), LONG);
    config.max_deliveries = 10;
    let q = RedisQueue::connect(config.clone()).await.unwrap();
    assert_eq!(q.capabilities().max_priority, 3);
    let results = q
        .publish_many(vec![
            NewMessage::new("low"),
            NewMessage::new("urgent").priority(3).header("k", "v"),
            NewMessage::new("too high").priority(4),
            NewMessage::new("mid").priority(1),
        ])
        .await;
    assert!(matches!(results[2], Err(QueueError::Unsupported { .. })));
    // One lease call takes across streams, highest priority first.
    let batch = q.lease(10, Duration::from_secs(1)).await.unwrap();
    let order: Vec<_> = batch.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(order, ["urgent", "mid", "low"]);
    assert_eq!(batch[0].headers.get("k"), Some("v"));
    assert_eq!(batch[0].priority, 3);

    // The delivery count keeps increasing across nacks (the entry is re-added each time), and the
    // message id stays the same.
    let urgent = batch[0].clone();
    q.nack(&urgent.lease, Duration::ZERO).await.unwrap();
    let again = q.lease(1, Duration::from_secs(1)).await.unwrap().remove(0);
    assert_eq!(
        (again.id.clone(), again.delivery_count),
        (urgent.id.clone(), 2)
    );
    assert_eq!(again.priority, 3, "a nack keeps the priority");
    q.nack(&again.lease, Duration::from_millis(50))
        .await
        .unwrap();
    let third = q.lease(1, Duration::from_secs(2)).await.unwrap().remove(0);
    assert_eq!(
        (third.id.clone(), third.delivery_count),
        (urgent.id.clone(), 3)
    );
    assert_eq!(third.headers.get("k"), Some("v"), "headers survive re-adds");

    // Close gives back everything this handle holds, at once, to another handle.
    let other = q.handle().unwrap();
    q.close().await.unwrap();
    assert!(matches!(
        q.lease(1, Duration::ZERO).await,
        Err(QueueError::Closed { .. })
    ));
    let back = other.lease(10, Duration::from_secs(1)).await.unwrap();
    let mut counts: Vec<_> = back
        .iter()
        .map(|d| (d.payload.clone(), d.delivery_count))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [("low".into(), 2), ("mid".into(), 2), ("urgent".into(), 4)]
    );
    let mut conn = raw(&url).await;
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(format!("{}:p0", config.name))
        .arg(&config.group)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !format!("{consumers:?}").contains(q.consumer()),
        "the closed consumer left the group"
    );
    other.destroy().await.unwrap();
}

#[tokio::test]
async fn close_interrupts_a_waiting_lease() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let q = RedisQueue::connect(common::config(&url, &common::unique("wait"), LONG))
        .await
        .unwrap();
    let waiting = {
        let q = q.clone();
        tokio::spawn(async move { q.lease(1, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = tokio::time::Instant::now();
    q.close().await.unwrap();
    let result = waiting.await.unwrap();
    assert!(
        matches!(result, Err(QueueError::Closed { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The closed handle's blocking read was ended by `CLIENT UNBLOCK`: a message published now
    // goes to another handle at once instead of sitting in the closed consumer's pending list.
    let other = RedisQueue::connect(q.config().clone()).await.unwrap();
    other.publish(NewMessage::new("after close")).await.unwrap();
    let got = other.lease(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1, "delivered to the open handle");
    assert_eq!(got[0].delivery_count, 1);
    other.destroy().await.unwrap();
}

#[tokio::test]
async fn a_waiting_lease_wakes_on_publish() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let q = RedisQueue::connect(common::config(&url, &common::unique("wake"), LONG))
        .await
        .unwrap();
    let waiting = {
        let q = q.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            (q.lease(5, Duration::from_secs(10)).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.publish(NewMessage::new("wake up").priority(2))
        .await
        .unwrap();
    let (batch, waited) = waiting.await.unwrap();
    assert_eq!(batch.unwrap()[0].payload, "wake up");
    assert!(waited < Duration::from_secs(2), "woke after {waited:?}");
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn list_stats_report_llen_and_nothing_made_up() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let key = common::unique("list");
    let config = RedisQueueConfig::new(&url, "unused");
    let stats = RedisListStats::connect(&config, &key).await.unwrap();
    use quorum_queue::QueueStats as _;
    assert_eq!(
        stats.snapshot().await.unwrap().backlog,
        0,
        "a missing key is empty"
    );
    let mut conn = raw(&url).await;
    let _: () = conn.rpush(&key, &["a", "b", "c"]).await.unwrap();
    let s = stats.snapshot().await.unwrap();
    assert_eq!(s.backlog, 3);
    assert_eq!(
        (s.oldest_ready_age, s.rate_in, s.rate_out),
        (None, None, None)
    );
    assert_eq!(RedisListStats::KNOWN, ["backlog"]);
    let _: () = conn.del(&key).await.unwrap();
    let _: () = conn.set(&key, "not a list").await.unwrap();
    assert!(stats.snapshot().await.is_err(), "WRONGTYPE is an error");
    let _: () = conn.del(&key).await.unwrap();
    assert!(matches!(
        RedisListStats::connect(&config, "").await,
        Err(QueueError::InvalidConfig { field: "key", .. })
    ));
}

#[tokio::test]
async fn topics_fan_out_over_pub_sub() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let prefix = format!("{}:", common::unique("topics"));
    let topics = RedisTopics::connect(&RedisQueueConfig::new(&url, "unused"), prefix)
        .await
        .unwrap();
    let mut a = topics.subscribe("results.job-1").await.unwrap();
    let mut b = topics.subscribe("results.job-1").await.unwrap();
    let mut other = topics.subscribe("results.job-2").await.unwrap();
    topics
        .publish("results.job-1", "done".into())
        .await
        .unwrap();
    for sub in [&mut a, &mut b] {
        let got = tokio::time::timeout(Duration::from_secs(2), sub.next_message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got, "done");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.next_message())
            .await
            .is_err(),
        "another subject got nothing"
    );
    assert!(topics.publish("bad subject", "x".into()).await.is_err());
    assert!(topics.subscribe("results.*").await.is_err());
    topics.publish("results.nobody", "x".into()).await.unwrap();
}

#[tokio::test]
async fn ack_many_checks_every_lease_even_when_the_range_reply_is_cut() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let q = RedisQueue::connect(common::config(&url, &common::unique("bulk"), LONG))
        .await
        .unwrap();
    for r in q
        .publish_many((0..50).map(|i| NewMessage::new(format!("b{i}"))).collect())
        .await
    {
        r.unwrap();
    }
    let batch = q.lease(50, Duration::from_secs(1)).await.unwrap();
    assert_eq!(batch.len(), 50);
    // The first and last of 50 held entries: the bulk XPENDING range holds all 50 (cut at 4),
    // so each is checked on its own; the duplicate lease is stale the second time.
    let leases = [
        batch[0].lease.clone(),
        batch[49].lease.clone(),
        batch[0].lease.clone(),
    ];
    let results = q.ack_many(&leases).await;
    results[0].as_ref().unwrap();
    results[1].as_ref().unwrap();
    assert!(results[2].as_ref().unwrap_err().is_stale_lease());
    let rest: Vec<_> = batch[1..49].iter().map(|d| d.lease.clone()).collect();
    assert!(q.ack_many(&rest).await.iter().all(Result::is_ok));
    use quorum_queue::QueueStats as _;
    let s = q.snapshot().await.unwrap();
    assert_eq!((s.backlog, s.in_flight, s.completed_total), (0, 0, 50));
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn a_lease_recreates_a_lost_group() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let config = common::config(&url, &common::unique("nogroup"), LONG);
    let q = RedisQueue::connect(config.clone()).await.unwrap();
    // What a Redis restart without persistence looks like: every key is gone.
    q.destroy().await.unwrap();
    assert!(q.lease(1, Duration::ZERO).await.unwrap().is_empty());
    q.publish(NewMessage::new("after")).await.unwrap();
    let got = q.lease(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got[0].payload, "after");
    q.ack(&got[0].lease).await.unwrap();
    q.destroy().await.unwrap();
}
