//! [`RedisListStats`]: read-only statistics of a plain Redis list used as a queue.

use std::fmt;

use async_trait::async_trait;
use quorum_queue::{QueueError, QueueStats, StatsSnapshot};
use redis::aio::ConnectionManager;

use crate::config::RedisQueueConfig;
use crate::error::command;
use crate::queue::connect_manager;

/// Statistics of a plain Redis list (`LPUSH`/`RPUSH` producers, `BRPOP`/`LMOVE` consumers), the
/// format many existing producers use, so the autoscaler can scale their workers too.
///
/// A list only knows its length, so only [`StatsSnapshot::backlog`] (`LLEN`) is meaningful.
/// What a list cannot tell is reported as *unknown*, never as a made-up number:
/// `oldest_ready_age`, `rate_in` and `rate_out` are `None`, and the counters `in_flight`,
/// `delayed`, `dead_lettered`, `published_total` and `completed_total` are 0, which for this
/// source means "not measured" ([`RedisListStats::KNOWN`] lists the fields that are measured).
/// It implements [`QueueStats`] only: it cannot publish, lease or ack.
#[derive(Clone)]
pub struct RedisListStats {
    conn: ConnectionManager,
    key: String,
}

impl fmt::Debug for RedisListStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisListStats")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisListStats {
    /// The [`StatsSnapshot`] fields this source measures; every other field is unknown.
    pub const KNOWN: &'static [&'static str] = &["backlog"];

    /// Connects to the server of `config` (its `url` and timeouts) to watch the list at `key`.
    /// A missing key is an empty list, as Redis treats it.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] for a bad URL or an empty key, a transport error when the
    /// server cannot be reached.
    pub async fn connect(
        config: &RedisQueueConfig,
        key: impl Into<String>,
    ) -> Result<Self, QueueError> {
        let key = key.into();
        if key.is_empty() {
            return Err(QueueError::InvalidConfig {
                field: "key",
                reason: "must not be empty".into(),
            });
        }
        let client =
            redis::Client::open(config.url.expose()).map_err(|e| QueueError::InvalidConfig {
                field: "url",
                reason: format!("not a redis URL: {e}"),
            })?;
        let conn = connect_manager(&client, config).await?;
        Ok(RedisListStats { conn, key })
    }

    /// The list's key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

#[async_trait]
impl QueueStats for RedisListStats {
    async fn snapshot(&self) -> Result<StatsSnapshot, QueueError> {
        let mut conn = self.conn.clone();
        let len: u64 = redis::cmd("LLEN")
            .arg(&self.key)
            .query_async(&mut conn)
            .await
            .map_err(|e| command("LLEN", e))?;
        let mut s = StatsSnapshot::default();
        s.backlog = len;
        Ok(s)
    }
}
