//! The typed configuration of a JetStream queue ([`NatsQueueConfig`]) and its field checks.

use std::time::Duration;

use quorum_config::Duration as ConfigDuration;
use quorum_queue::QueueError;
use serde::{Deserialize, Serialize};

/// The longest duration a config field accepts (keeps deadline arithmetic far from overflow).
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// How the stream keeps messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Retention {
    /// JetStream `WorkQueue` retention: an acked (or terminated) message is deleted from the
    /// stream. The default: the stream holds exactly the unfinished work.
    #[default]
    WorkQueue,
    /// JetStream `Limits` retention: messages stay until `max_age` (or other limits) removes
    /// them, even after they are acked; useful for auditing and replaying history.
    Limits,
}

/// Where the stream stores messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Storage {
    /// On disk (the default): survives a server restart. See the crate docs on `sync_interval`.
    #[default]
    File,
    /// In memory: lost when the server stops.
    Memory,
}

/// Configuration of a [`NatsQueue`](crate::NatsQueue) (YAML / JSON via serde; durations as
/// `"30s"`, `"2m"`).
///
/// Every handle opened with the same config is another consumer *instance* of the same durable
/// pull consumer: they share the work.
///
/// ```
/// use quorum_queue_nats::{NatsQueueConfig, Retention};
///
/// let config: NatsQueueConfig = serde_json::from_str(
///     r#"{ "url": "nats://10.0.0.5:4222", "stream": "JOBS", "subject": "jobs.llm",
///          "visibility_timeout": "2m", "max_deliveries": 3 }"#,
/// ).unwrap();
/// assert_eq!(config.visibility_timeout.as_std().as_secs(), 120);
/// assert_eq!(config.retention, Retention::WorkQueue); // default
/// assert_eq!(config.dead_letter_stream(), "JOBS_DLQ");
/// config.check().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsQueueConfig {
    /// The server URL(s), comma-separated (default `nats://127.0.0.1:4222`).
    pub url: String,
    /// How long connecting may take before it fails (default 5s).
    pub connect_timeout: ConfigDuration,
    /// How long a JetStream API call, publish ack or confirmed ack may take (default 10s).
    pub request_timeout: ConfigDuration,
    /// The work stream's name (default `QUORUM_JOBS`).
    pub stream: String,
    /// The subject jobs are published on; the stream binds exactly this subject
    /// (default `quorum.jobs`).
    pub subject: String,
    /// The durable pull consumer's name (default `quorum-workers`).
    pub consumer: String,
    /// Create the streams and the consumer when missing (default true). When false, missing
    /// ones are a config error. Existing ones are never changed: if their settings differ from
    /// this config, opening fails and says which setting.
    pub auto_create: bool,
    /// Stream retention (default `work_queue`).
    pub retention: Retention,
    /// Stream storage (default `file`).
    pub storage: Storage,
    /// Messages older than this are removed from the stream; `"0s"` keeps them forever (default).
    pub max_age: ConfigDuration,
    /// Stream replicas (1–5, default 1).
    pub replicas: usize,
    /// The JetStream duplicate window used for `dedup_id` (default 2m).
    pub duplicate_window: ConfigDuration,
    /// How long a lease lasts: the consumer's `AckWait` (default 30s).
    pub visibility_timeout: ConfigDuration,
    /// Deliveries after which an unacked message is dead-lettered (default 5).
    pub max_deliveries: u32,
    /// Per-delivery visibility timeouts (JetStream `BackOff`): delivery *n* waits `backoff[n-1]`
    /// (the last value repeats) instead of `visibility_timeout` before redelivery. Empty by
    /// default. A nack without delay is also redelivered after the backoff (a server rule).
    pub backoff: Vec<ConfigDuration>,
    /// The most unacked deliveries the consumer hands out across all handles (`MaxAckPending`,
    /// default 10,000).
    pub max_ack_pending: i64,
    /// How much sooner than the server this client considers a lease expired (default: a tenth
    /// of the lease, at most 2s). A settle after that fails with `StaleLease`; see the crate
    /// docs. Must be shorter than every lease.
    pub lease_margin: Option<ConfigDuration>,
    /// The dead-letter stream (default `<stream>_DLQ`).
    pub dead_letter_stream: Option<String>,
    /// The dead-letter subject (default `<subject>.dead`).
    pub dead_letter_subject: Option<String>,
    /// The window over which stats rates are computed (default 1m).
    pub rate_window: ConfigDuration,
}

impl Default for NatsQueueConfig {
    fn default() -> Self {
        NatsQueueConfig {
            url: "nats://127.0.0.1:4222".into(),
            connect_timeout: ConfigDuration::from_secs(5),
            request_timeout: ConfigDuration::from_secs(10),
            stream: "QUORUM_JOBS".into(),
            subject: "quorum.jobs".into(),
            consumer: "quorum-workers".into(),
            auto_create: true,
            retention: Retention::WorkQueue,
            storage: Storage::File,
            max_age: ConfigDuration::from_secs(0),
            replicas: 1,
            duplicate_window: ConfigDuration::from_secs(120),
            visibility_timeout: ConfigDuration::from_secs(30),
            max_deliveries: 5,
            backoff: Vec::new(),
            max_ack_pending: 10_000,
            lease_margin: None,
            dead_letter_stream: None,
            dead_letter_subject: None,
            rate_window: ConfigDuration::from_secs(60),
        }
    }
}

fn invalid<T>(field: &'static str, reason: impl Into<String>) -> Result<T, QueueError> {
    Err(QueueError::InvalidConfig {
        field,
        reason: reason.into(),
    })
}

/// JetStream stream and consumer names: no whitespace, `.`, `*`, `>`, path separators.
fn check_name(field: &'static str, name: &str) -> Result<(), QueueError> {
    if name.is_empty() {
        return invalid(field, "must not be empty");
    }
    if name.len() > 255 {
        return invalid(field, format!("{name:?} is longer than 255 bytes"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return invalid(
            field,
            format!("{name:?} contains {bad:?} (no whitespace, '.', '*', '>', '/' or '\\')"),
        );
    }
    Ok(())
}

/// A literal subject: dot-separated non-empty tokens, no wildcards, no whitespace.
fn check_subject(field: &'static str, subject: &str) -> Result<(), QueueError> {
    if subject.is_empty() {
        return invalid(field, "must not be empty");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid(field, format!("{subject:?} contains whitespace"));
    }
    if subject.contains(['*', '>']) {
        return invalid(
            field,
            format!("{subject:?} contains a wildcard (use a literal subject)"),
        );
    }
    if subject.split('.').any(str::is_empty) {
        return invalid(field, format!("{subject:?} has an empty token"));
    }
    Ok(())
}

impl NatsQueueConfig {
    /// The dead-letter stream's name: `dead_letter_stream` or `<stream>_DLQ`.
    pub fn dead_letter_stream(&self) -> String {
        self.dead_letter_stream
            .clone()
            .unwrap_or_else(|| format!("{}_DLQ", self.stream))
    }

    /// The dead-letter subject: `dead_letter_subject` or `<subject>.dead`.
    pub fn dead_letter_subject(&self) -> String {
        self.dead_letter_subject
            .clone()
            .unwrap_or_else(|| format!("{}.dead", self.subject))
    }

    /// The lease margin in force: `lease_margin` or a tenth of the shortest lease, at most 2s.
    pub fn effective_lease_margin(&self) -> Duration {
        if let Some(margin) = self.lease_margin {
            return margin.as_std();
        }
        (self.shortest_lease() / 10).min(Duration::from_secs(2))
    }

    /// The shortest lease any delivery gets (visibility timeout or the smallest backoff step).
    fn shortest_lease(&self) -> Duration {
        self.backoff
            .iter()
            .map(|d| d.as_std())
            .chain([self.visibility_timeout.as_std()])
            .min()
            .unwrap_or(Duration::ZERO)
    }

    /// How long the server waits before redelivering delivery number `delivery_count`.
    pub(crate) fn lease_for(&self, delivery_count: u64) -> Duration {
        if self.backoff.is_empty() {
            return self.visibility_timeout.as_std();
        }
        let at = usize::try_from(delivery_count.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(self.backoff.len() - 1);
        self.backoff
            .get(at)
            .map_or(self.visibility_timeout.as_std(), |d| d.as_std())
    }

    /// Checks every field without contacting a server (see [`validate`](crate::validate) for
    /// the check against the server).
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] naming the first field out of range.
    pub fn check(&self) -> Result<(), QueueError> {
        let url = self.url.trim();
        if url.is_empty() {
            return invalid("url", "must not be empty");
        }
        for server in url.split(',') {
            let server = server.trim();
            let rest = match server.split_once("://") {
                Some((scheme, rest)) => {
                    if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                        return invalid(
                            "url",
                            format!(
                                "{server:?} has scheme {scheme:?} (expected nats:// or tls://)"
                            ),
                        );
                    }
                    rest
                }
                None => server,
            };
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            if host.is_empty() || host.starts_with(':') {
                return invalid("url", format!("{server:?} has no host"));
            }
        }
        check_name("stream", &self.stream)?;
        check_name("consumer", &self.consumer)?;
        check_subject("subject", &self.subject)?;
        let dlq_stream = self.dead_letter_stream();
        check_name("dead_letter_stream", &dlq_stream)?;
        if dlq_stream == self.stream {
            return invalid(
                "dead_letter_stream",
                format!("{dlq_stream:?} is the work stream itself"),
            );
        }
        let dlq_subject = self.dead_letter_subject();
        check_subject("dead_letter_subject", &dlq_subject)?;
        if dlq_subject == self.subject {
            return invalid(
                "dead_letter_subject",
                format!("{dlq_subject:?} is the work subject itself"),
            );
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(
                "replicas",
                format!("{} is out of range (1 to 5)", self.replicas),
            );
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries", "must be at least 1");
        }
        if self.max_ack_pending < 1 {
            return invalid(
                "max_ack_pending",
                format!("{} must be at least 1", self.max_ack_pending),
            );
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout.as_std()),
            ("request_timeout", self.request_timeout.as_std()),
            ("visibility_timeout", self.visibility_timeout.as_std()),
            ("rate_window", self.rate_window.as_std()),
        ] {
            if value.is_zero() {
                return invalid(field, "must be greater than 0s");
            }
        }
        for (field, value) in [
            ("visibility_timeout", self.visibility_timeout.as_std()),
            ("max_age", self.max_age.as_std()),
            ("duplicate_window", self.duplicate_window.as_std()),
            ("rate_window", self.rate_window.as_std()),
        ] {
            if value > MAX_DURATION {
                return invalid(field, format!("{value:?} exceeds the maximum of 365d"));
            }
        }
        if self.backoff.iter().any(|d| d.as_std().is_zero()) {
            return invalid("backoff", "every step must be greater than 0s");
        }
        if !self.max_age.as_std().is_zero()
            && self.duplicate_window.as_std() > self.max_age.as_std()
        {
            return invalid(
                "duplicate_window",
                format!(
                    "{} is longer than max_age ({})",
                    self.duplicate_window, self.max_age
                ),
            );
        }
        let margin = self.effective_lease_margin();
        let shortest = self.shortest_lease();
        if margin >= shortest {
            return invalid(
                "lease_margin",
                format!("{margin:?} is not shorter than the shortest lease ({shortest:?})"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &NatsQueueConfig) -> &'static str {
        match config.check() {
            Err(QueueError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let config = NatsQueueConfig::default();
        config.check().unwrap();
        assert_eq!(config.dead_letter_stream(), "QUORUM_JOBS_DLQ");
        assert_eq!(config.dead_letter_subject(), "quorum.jobs.dead");
        assert_eq!(config.effective_lease_margin(), Duration::from_secs(2));
    }

    #[test]
    fn parses_strings_and_rejects_unknown_fields() {
        let config: NatsQueueConfig = serde_json::from_str(
            r#"{"retention": "limits", "storage": "memory", "backoff": ["1s", "5s"],
                "max_age": "1d", "lease_margin": "250ms"}"#,
        )
        .unwrap();
        assert_eq!(config.retention, Retention::Limits);
        assert_eq!(config.storage, Storage::Memory);
        assert_eq!(config.effective_lease_margin(), Duration::from_millis(250));
        assert_eq!(config.lease_for(1), Duration::from_secs(1));
        assert_eq!(config.lease_for(2), Duration::from_secs(5));
        assert_eq!(config.lease_for(9), Duration::from_secs(5));
        config.check().unwrap();
        let err = serde_json::from_str::<NatsQueueConfig>(r#"{"streem": "X"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `streem`"), "{err}");
        let err = serde_json::from_str::<NatsQueueConfig>(r#"{"max_age": "3 days"}"#).unwrap_err();
        assert!(err.to_string().contains("3 days"), "{err}");
        let err =
            serde_json::from_str::<NatsQueueConfig>(r#"{"retention": "interest"}"#).unwrap_err();
        assert!(err.to_string().contains("interest"), "{err}");
    }

    #[test]
    fn margin_defaults_to_a_tenth_of_the_shortest_lease() {
        let config = NatsQueueConfig {
            visibility_timeout: ConfigDuration::from_secs(1),
            ..NatsQueueConfig::default()
        };
        assert_eq!(config.effective_lease_margin(), Duration::from_millis(100));
        let with_backoff = NatsQueueConfig {
            backoff: vec![
                ConfigDuration::from_millis(500),
                ConfigDuration::from_secs(60),
            ],
            ..NatsQueueConfig::default()
        };
        assert_eq!(
            with_backoff.effective_lease_margin(),
            Duration::from_millis(50)
        );
        assert_eq!(with_backoff.lease_for(0), Duration::from_millis(500));
    }

    #[test]
    fn bad_fields_are_named() {
        let base = NatsQueueConfig::default;
        let cases: Vec<(NatsQueueConfig, &str)> = vec![
            (
                NatsQueueConfig {
                    url: " ".into(),
                    ..base()
                },
                "url",
            ),
            (
                NatsQueueConfig {
                    url: "http://h:4222".into(),
                    ..base()
                },
                "url",
            ),
            (
                NatsQueueConfig {
                    url: "nats://:4222".into(),
                    ..base()
                },
                "url",
            ),
            (
                NatsQueueConfig {
                    stream: "a.b".into(),
                    ..base()
                },
                "stream",
            ),
            (
                NatsQueueConfig {
                    stream: String::new(),
                    ..base()
                },
                "stream",
            ),
            (
                NatsQueueConfig {
                    consumer: "w 1".into(),
                    ..base()
                },
                "consumer",
            ),
            (
                NatsQueueConfig {
                    subject: "jobs.*".into(),
                    ..base()
                },
                "subject",
            ),
            (
                NatsQueueConfig {
                    subject: "jobs..x".into(),
                    ..base()
                },
                "subject",
            ),
            (
                NatsQueueConfig {
                    dead_letter_stream: Some("QUORUM_JOBS".into()),
                    ..base()
                },
                "dead_letter_stream",
            ),
            (
                NatsQueueConfig {
                    dead_letter_subject: Some("quorum.jobs".into()),
                    ..base()
                },
                "dead_letter_subject",
            ),
            (
                NatsQueueConfig {
                    replicas: 0,
                    ..base()
                },
                "replicas",
            ),
            (
                NatsQueueConfig {
                    replicas: 7,
                    ..base()
                },
                "replicas",
            ),
            (
                NatsQueueConfig {
                    max_deliveries: 0,
                    ..base()
                },
                "max_deliveries",
            ),
            (
                NatsQueueConfig {
                    max_ack_pending: 0,
                    ..base()
                },
                "max_ack_pending",
            ),
            (
                NatsQueueConfig {
                    visibility_timeout: ConfigDuration::from_secs(0),
                    ..base()
                },
                "visibility_timeout",
            ),
            (
                NatsQueueConfig {
                    visibility_timeout: ConfigDuration::from_secs(400 * 86_400),
                    ..base()
                },
                "visibility_timeout",
            ),
            (
                NatsQueueConfig {
                    backoff: vec![ConfigDuration::from_secs(0)],
                    ..base()
                },
                "backoff",
            ),
            (
                NatsQueueConfig {
                    max_age: ConfigDuration::from_secs(60),
                    ..base()
                },
                "duplicate_window",
            ),
            (
                NatsQueueConfig {
                    lease_margin: Some(ConfigDuration::from_secs(30)),
                    ..base()
                },
                "lease_margin",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(&config), field, "{config:?}");
        }
        let err = NatsQueueConfig {
            replicas: 7,
            ..base()
        }
        .check()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid queue config: replicas: 7 is out of range (1 to 5)"
        );
    }
}
