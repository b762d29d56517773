//! Shared helpers for the integration tests: configs with unique names, and cleanup.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quorum_queue_nats::NatsQueueConfig;

/// A name no other test (or run) uses: ASCII letters, digits and `_`.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}_{}_{:x}_{}",
        std::process::id(),
        nanos % (1 << 40),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config whose stream, subject, consumer and dead-letter names all derive from `name`.
pub(crate) fn config(
    url: &str,
    name: &str,
    visibility: Duration,
    max_deliveries: u32,
) -> NatsQueueConfig {
    NatsQueueConfig {
        url: url.to_owned(),
        stream: name.to_owned(),
        subject: format!("qt.{name}"),
        consumer: "workers".into(),
        visibility_timeout: visibility.into(),
        max_deliveries,
        storage: quorum_queue_nats::Storage::File,
        ..NatsQueueConfig::default()
    }
}

/// Deletes the work and dead-letter streams of `config` (ignoring ones already gone).
pub(crate) async fn cleanup(config: &NatsQueueConfig) {
    let Ok(client) = async_nats::connect(&config.url).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(&config.stream).await;
    let _ = js.delete_stream(config.dead_letter_stream()).await;
}
