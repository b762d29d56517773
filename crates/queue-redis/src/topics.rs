//! [`RedisTopics`]: the [`Topics`] contract over Redis pub/sub.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use quorum_queue::topic::validate_subject;
use quorum_queue::{Subscription, TopicError, Topics};
use redis::Client;
use redis::aio::ConnectionManager;

use crate::config::RedisQueueConfig;
use crate::error::{RedisQueueError, topic};
use crate::queue::connect_manager;

/// Pub/sub topics on Redis: `PUBLISH` to a channel named `prefix + subject`, one connection per
/// subscription.
///
/// Fire-and-forget like the contract: nothing is stored for later subscribers. **Slow
/// subscribers** are handled by Redis, not by lag notices: a subscriber whose output buffer passes
/// the server's `client-output-buffer-limit pubsub` is disconnected. A subscription whose
/// connection ends (that, or a Redis restart) yields one [`TopicError::Transport`] and then ends;
/// subscribe again to continue. Publishing reconnects by itself.
#[derive(Clone)]
pub struct RedisTopics {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    connect_timeout: std::time::Duration,
}

impl fmt::Debug for RedisTopics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTopics")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisTopics {
    /// Connects to the server of `config` (its `url`, timeouts); channel names are
    /// `prefix + subject`, e.g. prefix `quorum:` and subject `results.job-1`.
    ///
    /// # Errors
    ///
    /// [`TopicError::Backend`] for a bad URL, [`TopicError::Transport`] when the server cannot be
    /// reached.
    pub async fn connect(
        config: &RedisQueueConfig,
        prefix: impl Into<String>,
    ) -> Result<Self, TopicError> {
        let client = Client::open(config.url.expose()).map_err(|e| topic("connect", e))?;
        let conn = connect_manager(&client, config)
            .await
            .map_err(|e| TopicError::Transport { source: e.into() })?;
        Ok(RedisTopics {
            client,
            conn,
            prefix: prefix.into(),
            connect_timeout: config.connect_timeout.as_std(),
        })
    }

    fn channel(&self, subject: &str) -> String {
        format!("{}{subject}", self.prefix)
    }
}

#[async_trait]
impl Topics for RedisTopics {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), TopicError> {
        validate_subject(subject)?;
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(self.channel(subject))
            .arg(payload.as_ref())
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| topic("PUBLISH", e))
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, TopicError> {
        validate_subject(subject)?;
        let connecting = self.client.get_async_pubsub();
        let mut pubsub = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(topic("SUBSCRIBE", e)),
            Err(_) => {
                return Err(TopicError::Transport {
                    source: RedisQueueError::Connect {
                        address: self.client.get_connection_info().addr().to_string(),
                        source: None,
                    }
                    .into(),
                });
            }
        };
        pubsub
            .subscribe(self.channel(subject))
            .await
            .map_err(|e| topic("SUBSCRIBE", e))?;
        let (sink, stream) = pubsub.split();
        let ended = subject.to_owned();
        let messages = stream
            .map(move |msg| {
                // The sink lives as long as the stream: dropping the subscription unsubscribes.
                let _sink = &sink;
                Ok(Bytes::copy_from_slice(msg.get_payload_bytes()))
            })
            .chain(futures_util::stream::once(async move {
                Err(TopicError::Transport {
                    source: format!("redis pub/sub connection for {ended} closed").into(),
                })
            }));
        Ok(Subscription::new(subject, messages))
    }
}
