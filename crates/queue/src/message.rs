//! Messages going in ([`NewMessage`]), deliveries coming out ([`Delivery`]) and the [`Lease`] that
//! settles one delivery.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// A message's id, assigned by the queue when it is published.
///
/// Backends choose the form: the in-memory queue and JetStream use a sequence number, Redis Streams
/// an entry id such as `1700000000000-0`. Compare ids only with ids from the same queue.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Seq(u64),
    Text(Arc<str>),
}

impl MessageId {
    /// An id that is a sequence number (no allocation).
    pub fn from_seq(seq: u64) -> Self {
        MessageId(Repr::Seq(seq))
    }

    /// An id that is a backend string.
    pub fn from_text(text: impl Into<Arc<str>>) -> Self {
        MessageId(Repr::Text(text.into()))
    }

    /// The sequence number, if this id is one.
    pub fn as_seq(&self) -> Option<u64> {
        match &self.0 {
            Repr::Seq(seq) => Some(*seq),
            Repr::Text(_) => None,
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Seq(seq) => write!(f, "{seq}"),
            Repr::Text(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Message headers: ordered `(name, value)` pairs, names unique (case-sensitive).
///
/// They travel with the message through redelivery and the dead-letter destination.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers (does not allocate).
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Sets `name` to `value`, replacing an existing value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }

    /// The pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many headers are set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no header is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (k, v) in iter {
            headers.insert(k, v);
        }
        headers
    }
}

/// A message to publish: payload plus options.
///
/// Options a backend does not support (see [`Capabilities`]) make `publish` fail with
/// [`QueueError::Unsupported`](crate::QueueError::Unsupported); they are never silently dropped.
///
/// ```
/// use std::time::Duration;
/// use quorum_queue::NewMessage;
///
/// let msg = NewMessage::new("summarise doc 42")
///     .header("job-id", "42")
///     .priority(5)
///     .delay(Duration::from_secs(10))
///     .dedup_id("job-42");
/// assert_eq!(msg.priority, 5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewMessage {
    /// The payload (not copied by the in-memory queue).
    pub payload: Bytes,
    /// Headers delivered with the message.
    pub headers: Headers,
    /// Higher is leased first; `0` is the default and the lowest.
    pub priority: u8,
    /// Deliver no earlier than this long after publishing.
    pub delay: Option<Duration>,
    /// Publishing again with the same id within the queue's dedup window returns the first
    /// message's id and enqueues nothing.
    pub dedup_id: Option<String>,
}

impl NewMessage {
    /// A message with this payload, no headers, priority 0, no delay, no dedup id.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        NewMessage {
            payload: payload.into(),
            headers: Headers::new(),
            priority: 0,
            delay: None,
            dedup_id: None,
        }
    }

    /// Sets one header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces all headers.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the priority (higher first).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Delays the first delivery.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the deduplication id.
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }
}

/// The right to settle one delivery of one message: pass it to `ack`, `nack`, `in_progress` or
/// `term`.
///
/// Opaque to consumers. A backend fills it with whatever identifies one delivery: a key, a
/// generation (so a later delivery of the same message has a different lease) and an optional
/// string handle (a JetStream reply subject, a Redis entry id). Settling with a lease that is no
/// longer current fails with [`QueueError::StaleLease`](crate::QueueError::StaleLease).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    id: MessageId,
    key: u64,
    generation: u64,
    handle: Option<Arc<str>>,
}

impl Lease {
    /// A lease for message `id`, identified by the backend's `key` and `generation`.
    pub fn new(id: MessageId, key: u64, generation: u64) -> Self {
        Lease {
            id,
            key,
            generation,
            handle: None,
        }
    }

    /// Attaches a backend string handle.
    pub fn with_handle(mut self, handle: impl Into<Arc<str>>) -> Self {
        self.handle = Some(handle.into());
        self
    }

    /// The message this lease is for.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// The backend's key.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The backend's generation (differs between deliveries of the same message).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The backend's string handle, if any.
    pub fn handle(&self) -> Option<&str> {
        self.handle.as_deref()
    }
}

/// One delivery of a message to a consumer, held under a [`Lease`] until settled or expired.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Delivery {
    /// The message's id.
    pub id: MessageId,
    /// The payload.
    pub payload: Bytes,
    /// The headers it was published with.
    pub headers: Headers,
    /// Its priority (0 when the backend has no priorities).
    pub priority: u8,
    /// How many times it has been delivered, this delivery included (1 on the first).
    pub delivery_count: u32,
    /// The lease that settles this delivery.
    pub lease: Lease,
}

impl Delivery {
    /// A delivery with no headers and priority 0.
    pub fn new(id: MessageId, payload: Bytes, delivery_count: u32, lease: Lease) -> Self {
        Delivery {
            id,
            payload,
            headers: Headers::new(),
            priority: 0,
            delivery_count,
            lease,
        }
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }
}

/// What a backend supports beyond the core contract.
///
/// Publishing with an option the backend lacks fails with
/// [`QueueError::Unsupported`](crate::QueueError::Unsupported).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The highest priority accepted; `0` means no priorities.
    pub max_priority: u8,
    /// Whether `publish` accepts a delay.
    pub delayed_publish: bool,
    /// Whether `nack` accepts a non-zero delay before redelivery.
    pub nack_delay: bool,
    /// Whether `publish` deduplicates by `dedup_id`.
    pub dedup: bool,
}

impl Capabilities {
    /// Only the core contract.
    pub fn none() -> Self {
        Capabilities::default()
    }

    /// Accepts priorities `0..=max`.
    pub fn with_priorities(mut self, max: u8) -> Self {
        self.max_priority = max;
        self
    }

    /// Accepts publish delays and nack delays.
    pub fn with_delays(mut self) -> Self {
        self.delayed_publish = true;
        self.nack_delay = true;
        self
    }

    /// Accepts nack delays only (a broker that can hold back a redelivery but not a publish,
    /// such as JetStream's `-NAK {"delay": …}`).
    pub fn with_nack_delay(mut self) -> Self {
        self.nack_delay = true;
        self
    }

    /// Deduplicates by `dedup_id`.
    pub fn with_dedup(mut self) -> Self {
        self.dedup = true;
        self
    }

    /// Whether any priority above 0 is accepted.
    pub fn priorities(&self) -> bool {
        self.max_priority > 0
    }

    /// Checks a message against these capabilities, so a backend rejects what it cannot honour.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unsupported`](crate::QueueError::Unsupported) naming the first option the
    /// backend lacks.
    pub fn check(&self, message: &NewMessage) -> Result<(), crate::QueueError> {
        if message.priority > self.max_priority {
            return Err(crate::QueueError::unsupported(format!(
                "priority {} (max {})",
                message.priority, self.max_priority
            )));
        }
        if let Some(delay) = message.delay
            && !delay.is_zero()
            && !self.delayed_publish
        {
            return Err(crate::QueueError::unsupported(format!("delay {delay:?}")));
        }
        if let Some(id) = &message.dedup_id
            && !self.dedup
        {
            return Err(crate::QueueError::unsupported(format!("dedup id {id:?}")));
        }
        Ok(())
    }

    /// Checks a nack delay against these capabilities.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unsupported`](crate::QueueError::Unsupported) for a non-zero delay when the
    /// backend has no nack delays.
    pub fn check_nack_delay(&self, delay: Duration) -> Result<(), crate::QueueError> {
        if !delay.is_zero() && !self.nack_delay {
            return Err(crate::QueueError::unsupported(format!(
                "nack delay {delay:?}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_replace_and_remove() {
        let mut h: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(h.len(), 2);
        assert_eq!(h.get("a"), Some("3"));
        assert_eq!(h.remove("a").as_deref(), Some("3"));
        assert_eq!(h.get("a"), None);
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("b", "2")]);
        assert!(!h.is_empty());
    }

    #[test]
    fn message_ids_display() {
        assert_eq!(MessageId::from_seq(7).to_string(), "7");
        assert_eq!(MessageId::from_text("1-0").to_string(), "1-0");
        assert_eq!(MessageId::from_seq(7).as_seq(), Some(7));
        assert_eq!(MessageId::from_text("7").as_seq(), None);
    }

    #[test]
    fn capabilities_reject_what_they_lack() {
        let none = Capabilities::none();
        assert!(none.check(&NewMessage::new("x")).is_ok());
        let err = none.check(&NewMessage::new("x").priority(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported by this queue backend: priority 1 (max 0)"
        );
        assert!(
            none.check(&NewMessage::new("x").delay(Duration::from_secs(1)))
                .is_err()
        );
        assert!(
            none.check(&NewMessage::new("x").delay(Duration::ZERO))
                .is_ok()
        );
        assert!(none.check(&NewMessage::new("x").dedup_id("d")).is_err());
        assert!(none.check_nack_delay(Duration::from_millis(1)).is_err());
        assert!(none.check_nack_delay(Duration::ZERO).is_ok());

        let nack_only = Capabilities::none().with_nack_delay();
        assert!(nack_only.check_nack_delay(Duration::from_millis(1)).is_ok());
        assert!(
            nack_only
                .check(&NewMessage::new("x").delay(Duration::from_secs(1)))
                .is_err()
        );

        let all = Capabilities::none()
            .with_priorities(9)
            .with_delays()
            .with_dedup();
        assert!(all.priorities());
        let msg = NewMessage::new("x")
            .priority(9)
            .delay(Duration::from_secs(1))
            .dedup_id("d");
        assert!(all.check(&msg).is_ok());
        assert!(all.check(&msg.priority(10)).is_err());
    }
}
