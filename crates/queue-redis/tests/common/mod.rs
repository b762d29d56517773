//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]
#![allow(dead_code, unreachable_pub, reason = "each test binary uses a part")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quorum_config::Duration as ConfigDuration;
use quorum_queue_redis::{RedisQueue, RedisQueueConfig};

/// A unique queue name for this test run.
pub fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("qtest:{tag}:{}:{:x}", std::process::id(), nanos % (1 << 40))
}

/// A config for `name` at `url` with a visibility timeout.
pub fn config(url: &str, name: &str, vt: Duration) -> RedisQueueConfig {
    let mut config = RedisQueueConfig::new(url, name);
    config.visibility_timeout = ConfigDuration::new(vt);
    config
}

/// Deletes a queue's keys through a fresh handle.
pub async fn destroy(config: &RedisQueueConfig) {
    let q = RedisQueue::connect(config.clone()).await.unwrap();
    q.destroy().await.unwrap();
}
