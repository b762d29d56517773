//! `validate` against the server at `NATS_URL`: unreachable servers, missing and conflicting
//! streams / consumers; and core-NATS topics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use quorum_queue::testing::service_url;
use quorum_queue::{NewMessage, Queue, QueueError, TopicError, Topics};
use quorum_queue_nats::{NatsQueue, NatsQueueConfig, NatsTopics, Retention, validate};

fn field(result: Result<(), QueueError>) -> &'static str {
    match result {
        Err(QueueError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_server_is_a_retryable_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = NatsQueueConfig {
        url: format!("nats://127.0.0.1:{port}"),
        connect_timeout: Duration::from_secs(2).into(),
        ..NatsQueueConfig::default()
    };
    let err = validate(&config).await.unwrap_err();
    assert!(matches!(err, QueueError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    // A bad URL never reaches the network.
    let bad = NatsQueueConfig {
        url: "http://127.0.0.1:4222".into(),
        ..NatsQueueConfig::default()
    };
    assert_eq!(field(validate(&bad).await), "url");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_conflicting_streams_and_consumers_are_named() {
    let Some(url) = service_url("NATS_URL") else {
        return;
    };
    let name = common::unique("validate");
    let config = common::config(&url, &name, Duration::from_secs(5), 3);

    // Nothing exists yet: fine with auto_create (nothing is created), an error without.
    validate(&config).await.unwrap();
    let strict = NatsQueueConfig {
        auto_create: false,
        ..config.clone()
    };
    assert_eq!(field(validate(&strict).await), "stream");
    assert_eq!(
        field(NatsQueue::connect(strict.clone()).await.map(|_| ())),
        "stream"
    );

    let queue = NatsQueue::connect(config.clone()).await.unwrap();
    validate(&strict).await.unwrap();
    let other = NatsQueueConfig {
        consumer: "nobody".into(),
        ..strict.clone()
    };
    assert_eq!(field(validate(&other).await), "consumer");

    let longer = NatsQueueConfig {
        visibility_timeout: Duration::from_secs(60).into(),
        ..config.clone()
    };
    let err = validate(&longer).await.unwrap_err();
    assert!(
        err.to_string().contains("ack wait 5s"),
        "names the existing value: {err}"
    );
    assert_eq!(field(Err(err)), "visibility_timeout");
    let limits = NatsQueueConfig {
        retention: Retention::Limits,
        ..config.clone()
    };
    assert_eq!(field(validate(&limits).await), "stream");

    // Bad input on a live queue.
    let err = queue
        .publish(NewMessage::new("x").header("Quorum-Id", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::InvalidArgument {
                name: "headers",
                ..
            }
        ),
        "{err:?}"
    );
    let err = queue
        .nack(
            &quorum_queue::Lease::new(quorum_queue::MessageId::from_seq(1), 1, 1),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert!(
        err.is_stale_lease(),
        "a delayed nack of a lease this handle never held: {err:?}"
    );
    let err = queue
        .ack(&quorum_queue::Lease::new(
            quorum_queue::MessageId::from_seq(1),
            1,
            1,
        ))
        .await
        .unwrap_err();
    assert!(
        err.is_stale_lease(),
        "a lease this handle never held: {err:?}"
    );
    queue.close().await.unwrap();
    common::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_fan_out_to_current_subscribers() {
    let Some(url) = service_url("NATS_URL") else {
        return;
    };
    let topics = NatsTopics::connect(&url).await.unwrap();
    let subject = format!("results.{}", common::unique("t"));
    let mut a = topics.subscribe(&subject).await.unwrap();
    let mut b = topics.subscribe(&subject).await.unwrap();
    assert_eq!(a.subject(), subject);
    topics
        .publish(&subject, Bytes::from_static(b"done"))
        .await
        .unwrap();
    for sub in [&mut a, &mut b] {
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next_message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got, Bytes::from_static(b"done"));
    }
    assert!(matches!(
        topics.publish("bad.*", Bytes::new()).await,
        Err(TopicError::InvalidSubject { .. })
    ));
    assert!(matches!(
        topics.subscribe("").await,
        Err(TopicError::InvalidSubject { .. })
    ));
}
