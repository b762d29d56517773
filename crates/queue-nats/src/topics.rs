//! [`NatsTopics`]: the [`Topics`] contract on core NATS subjects (no JetStream, nothing stored).

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use quorum_queue::topic::validate_subject;
use quorum_queue::{Subscription, TopicError, Topics};

/// Pub/sub over core NATS: `publish` is a plain NATS publish, `subscribe` a plain subscription.
///
/// Delivery is at most once to whoever is subscribed at the time. A subscriber that falls
/// further behind than the client's subscription buffer (async-nats `subscription_capacity`,
/// 65,536 messages by default) loses messages; async-nats reports that as a connection-wide
/// slow-consumer event rather than a per-subscription [`TopicError::Lagged`], so this backend
/// never yields `Lagged`.
#[derive(Clone, Debug)]
pub struct NatsTopics {
    client: async_nats::Client,
}

impl NatsTopics {
    /// Topics on an existing connection (e.g. [`NatsQueue::client`](crate::NatsQueue::client)).
    pub fn new(client: async_nats::Client) -> Self {
        NatsTopics { client }
    }

    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`).
    ///
    /// # Errors
    ///
    /// [`TopicError::Transport`] when the server does not answer.
    pub async fn connect(url: &str) -> Result<Self, TopicError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| TopicError::Transport {
                source: Box::new(e),
            })?;
        Ok(NatsTopics { client })
    }
}

#[async_trait]
impl Topics for NatsTopics {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), TopicError> {
        validate_subject(subject)?;
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .map_err(|e| TopicError::Transport {
                source: Box::new(e),
            })
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, TopicError> {
        validate_subject(subject)?;
        let subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .map_err(|e| TopicError::Transport {
                source: Box::new(e),
            })?;
        // The subscription is registered with the server once this flush returns, so messages
        // published after `subscribe` returns are delivered.
        self.client
            .flush()
            .await
            .map_err(|e| TopicError::Transport {
                source: Box::new(e),
            })?;
        Ok(Subscription::new(
            subject,
            subscriber.map(|message| Ok(message.payload)),
        ))
    }
}
