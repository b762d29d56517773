//! Pub/sub topics for results and progress: fire-and-forget fan-out to current subscribers.
//!
//! A subject names one job's or session's stream, e.g. `results.<job_id>` or
//! `progress.<session_id>`. Publishing delivers to whoever is subscribed *now*: nothing is stored
//! for later subscribers and nothing is acked (use a [`Queue`](crate::Queue) for that).
//!
//! **Slow subscribers lag, they never block publishers.** Each subscriber has a bounded buffer;
//! when it falls further behind than that, the oldest messages are dropped for that subscriber
//! only and it receives one [`TopicError::Lagged`] saying how many, then continues with newer
//! messages. Core NATS behaves the same way (a slow consumer is cut off rather than slowing the
//! server), so code written against this contract works on both.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;

use crate::BoxError;

/// Everything a [`Topics`] operation or a [`Subscription`] can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The subject is not a valid subject (see [`validate_subject`]).
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The subject given.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// This subscriber fell behind and `skipped` messages were dropped for it; the subscription
    /// continues with newer messages.
    #[error("subscriber to {subject} lagged: {skipped} messages dropped")]
    Lagged {
        /// The subscription's subject.
        subject: String,
        /// How many messages this subscriber missed.
        skipped: u64,
    },
    /// The topics connection was closed.
    #[error("topics closed")]
    Closed,
    /// The connection to the broker failed; trying again may help.
    #[error("topic transport error")]
    Transport {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The broker rejected the operation.
    #[error("topic backend error")]
    Backend {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl TopicError {
    /// Whether trying again may help (transport errors only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TopicError::Transport { .. })
    }
}

/// Checks a subject: non-empty, at most 256 bytes, dot-separated non-empty tokens, no whitespace,
/// no wildcards (`*`, `>`).
///
/// # Errors
///
/// [`TopicError::InvalidSubject`] saying what is wrong.
pub fn validate_subject(subject: &str) -> Result<(), TopicError> {
    let invalid = |reason| {
        Err(TopicError::InvalidSubject {
            subject: subject.to_owned(),
            reason,
        })
    };
    if subject.is_empty() {
        return invalid("must not be empty");
    }
    if subject.len() > 256 {
        return invalid("longer than 256 bytes");
    }
    if subject.chars().any(char::is_whitespace) {
        return invalid("must not contain whitespace");
    }
    if subject.contains(['*', '>']) {
        return invalid("wildcards (* and >) are not supported");
    }
    if subject.split('.').any(str::is_empty) {
        return invalid("empty token between dots");
    }
    Ok(())
}

/// Publish/subscribe by subject, used as `Arc<dyn Topics>`.
#[async_trait]
pub trait Topics: Send + Sync + fmt::Debug {
    /// Sends `payload` to everyone subscribed to `subject` now; succeeds with no subscribers.
    /// Never waits for slow subscribers.
    ///
    /// # Errors
    ///
    /// [`TopicError::InvalidSubject`], or a transport / backend error.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), TopicError>;

    /// Subscribes to `subject`; messages published after this returns are delivered.
    /// Dropping the [`Subscription`] unsubscribes.
    ///
    /// # Errors
    ///
    /// [`TopicError::InvalidSubject`], or a transport / backend error.
    async fn subscribe(&self, subject: &str) -> Result<Subscription, TopicError>;
}

/// A stream of the messages published to one subject; drop it to unsubscribe.
///
/// Items are payloads, or [`TopicError::Lagged`] when this subscriber missed messages.
pub struct Subscription {
    subject: String,
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, TopicError>> + Send>>,
}

impl Subscription {
    /// Wraps a backend's stream.
    pub fn new(
        subject: impl Into<String>,
        stream: impl Stream<Item = Result<Bytes, TopicError>> + Send + 'static,
    ) -> Self {
        Subscription {
            subject: subject.into(),
            inner: Box::pin(stream),
        }
    }

    /// The subject subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The next item; `None` once the subscription has ended.
    pub async fn next_message(&mut self) -> Option<Result<Bytes, TopicError>> {
        self.inner.next().await
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<Bytes, TopicError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// In-process topics: one tokio broadcast channel per subject with subscribers.
///
/// A subject's channel exists only while it has subscribers (it is removed when the last one is
/// dropped), so memory is bounded by the live subscriptions times the per-subscriber buffer.
/// Cheap to clone; clones share the subjects.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), quorum_queue::TopicError> {
/// use quorum_queue::{MemoryTopics, Topics};
///
/// let topics = MemoryTopics::new(64);
/// let mut sub = topics.subscribe("results.job-1").await?;
/// topics.publish("results.job-1", "done".into()).await?;
/// assert_eq!(sub.next_message().await.unwrap()?, "done");
/// drop(sub);
/// assert_eq!(topics.subject_count(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryTopics {
    inner: Arc<TopicsInner>,
}

struct TopicsInner {
    buffer: usize,
    subjects: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
}

impl TopicsInner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Bytes>>> {
        self.subjects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryTopics {
    /// Topics where each subscriber buffers up to `buffer` messages (at least 1) before lagging.
    pub fn new(buffer: usize) -> Self {
        MemoryTopics {
            inner: Arc::new(TopicsInner {
                buffer: buffer.max(1),
                subjects: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// How many subjects currently have subscribers.
    pub fn subject_count(&self) -> usize {
        self.inner.lock().len()
    }
}

impl Default for MemoryTopics {
    /// A buffer of 1024 messages per subscriber.
    fn default() -> Self {
        MemoryTopics::new(1024)
    }
}

impl fmt::Debug for MemoryTopics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTopics")
            .field("buffer", &self.inner.buffer)
            .field("subjects", &self.subject_count())
            .finish()
    }
}

#[async_trait]
impl Topics for MemoryTopics {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), TopicError> {
        validate_subject(subject)?;
        let mut subjects = self.inner.lock();
        if let Some(sender) = subjects.get(subject)
            && sender.send(payload).is_err()
        {
            // No receiver left (cannot normally happen: the last one removes the subject).
            subjects.remove(subject);
        }
        Ok(())
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, TopicError> {
        validate_subject(subject)?;
        let receiver = {
            let mut subjects = self.inner.lock();
            let buffer = self.inner.buffer;
            subjects
                .entry(subject.to_owned())
                .or_insert_with(|| broadcast::channel(buffer).0)
                .subscribe()
        };
        let state = Subscriber {
            receiver: Some(receiver),
            topics: Arc::clone(&self.inner),
            subject: subject.to_owned(),
        };
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            let receiver = state.receiver.as_mut()?;
            let item = match receiver.recv().await {
                Ok(payload) => Ok(payload),
                Err(broadcast::error::RecvError::Lagged(skipped)) => Err(TopicError::Lagged {
                    subject: state.subject.clone(),
                    skipped,
                }),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((item, state))
        });
        Ok(Subscription::new(subject, stream))
    }
}

/// One subscriber's receiver; dropping it removes the subject when it was the last one.
struct Subscriber {
    receiver: Option<broadcast::Receiver<Bytes>>,
    topics: Arc<TopicsInner>,
    subject: String,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Drop the receiver first so the count below no longer includes it.
        self.receiver = None;
        let mut subjects = self.topics.lock();
        if subjects
            .get(&self.subject)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            subjects.remove(&self.subject);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fans_out_to_every_current_subscriber() {
        let topics = MemoryTopics::new(8);
        let mut a = topics.subscribe("results.1").await.unwrap();
        let mut b = topics.subscribe("results.1").await.unwrap();
        let mut other = topics.subscribe("results.2").await.unwrap();
        topics.publish("results.1", "x".into()).await.unwrap();
        topics.publish("results.2", "y".into()).await.unwrap();
        assert_eq!(a.next_message().await.unwrap().unwrap(), "x");
        assert_eq!(b.next_message().await.unwrap().unwrap(), "x");
        assert_eq!(other.next_message().await.unwrap().unwrap(), "y");
        assert_eq!(a.subject(), "results.1");
        // Late subscribers see only what comes after they subscribe.
        let mut late = topics.subscribe("results.1").await.unwrap();
        topics.publish("results.1", "z".into()).await.unwrap();
        assert_eq!(late.next_message().await.unwrap().unwrap(), "z");
        assert_eq!(a.next_message().await.unwrap().unwrap(), "z");
    }

    #[tokio::test]
    async fn subjects_are_removed_with_their_last_subscriber() {
        let topics = MemoryTopics::new(8);
        // Publishing with no subscriber succeeds and stores nothing.
        topics.publish("progress.s1", "lost".into()).await.unwrap();
        assert_eq!(topics.subject_count(), 0);
        let a = topics.subscribe("progress.s1").await.unwrap();
        let b = topics.subscribe("progress.s1").await.unwrap();
        let c = topics.subscribe("progress.s2").await.unwrap();
        assert_eq!(topics.subject_count(), 2);
        drop(a);
        assert_eq!(topics.subject_count(), 2, "b still subscribed");
        drop(b);
        assert_eq!(topics.subject_count(), 1);
        drop(c);
        assert_eq!(topics.subject_count(), 0);
        // Many short-lived subscriptions leave nothing behind.
        for i in 0..1000 {
            let mut s = topics.subscribe(&format!("results.{i}")).await.unwrap();
            topics
                .publish(&format!("results.{i}"), "r".into())
                .await
                .unwrap();
            assert_eq!(s.next_message().await.unwrap().unwrap(), "r");
        }
        assert_eq!(topics.subject_count(), 0);
        // A resubscribe after cleanup works.
        let mut again = topics.subscribe("progress.s1").await.unwrap();
        topics.publish("progress.s1", "back".into()).await.unwrap();
        assert_eq!(again.next_message().await.unwrap().unwrap(), "back");
    }

    #[tokio::test]
    async fn slow_subscribers_lag_and_never_block_the_publisher() {
        let topics = MemoryTopics::new(4);
        let mut slow = topics.subscribe("results.j").await.unwrap();
        let mut fast = topics.subscribe("results.j").await.unwrap();
        // The publisher never waits, however far behind `slow` is.
        for i in 0..10u8 {
            topics
                .publish("results.j", Bytes::from(vec![i]))
                .await
                .unwrap();
            assert_eq!(fast.next_message().await.unwrap().unwrap()[0], i);
        }
        match slow.next_message().await.unwrap() {
            Err(TopicError::Lagged { skipped, subject }) => {
                assert_eq!(skipped, 6);
                assert_eq!(subject, "results.j");
            }
            other => panic!("expected a lag notice, got {other:?}"),
        }
        // Then the newest `buffer` messages, in order.
        for i in 6..10u8 {
            assert_eq!(slow.next_message().await.unwrap().unwrap()[0], i);
        }
    }

    #[tokio::test]
    async fn dyn_topics_and_stream_interface() {
        let topics: Arc<dyn Topics> = Arc::new(MemoryTopics::default());
        let mut sub = topics.subscribe("a.b").await.unwrap();
        topics.publish("a.b", "1".into()).await.unwrap();
        let first = sub.next().await.unwrap().unwrap();
        assert_eq!(first, "1");
        assert!(format!("{sub:?}").contains("a.b"));
    }

    #[tokio::test]
    async fn bad_subjects_are_rejected() {
        let topics = MemoryTopics::default();
        for (subject, reason) in [
            ("", "empty"),
            ("results.", "empty token"),
            (".x", "empty token"),
            ("a..b", "empty token"),
            ("a b", "whitespace"),
            ("results.*", "wildcards"),
            ("results.>", "wildcards"),
        ] {
            let err = topics.subscribe(subject).await.unwrap_err();
            assert!(err.to_string().contains(reason), "{subject:?}: {err}");
            assert!(topics.publish(subject, "x".into()).await.is_err());
            assert!(!err.is_retryable());
        }
        assert!(validate_subject(&"x".repeat(257)).is_err());
        assert!(validate_subject("results.0190-abc_def").is_ok());
        assert_eq!(topics.subject_count(), 0);
    }
}
