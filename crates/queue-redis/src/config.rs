//! [`RedisQueueConfig`]: the typed configuration section of a Redis Streams queue.

use std::time::Duration as StdDuration;

use quorum_config::{Duration, Secret};
use quorum_queue::QueueError;
use serde::{Deserialize, Serialize};

/// The longest duration a config field accepts (keeps millisecond arithmetic in Lua exact).
const MAX_CONFIG_DURATION: StdDuration = StdDuration::from_secs(365 * 86_400);

/// Configuration of a [`RedisQueue`](crate::RedisQueue) (YAML / JSON via serde; durations as
/// `"30s"`, `"500ms"`; unknown keys are rejected).
///
/// Every key the queue uses starts with `name` followed by `:` (see the [crate docs](crate)
/// for the layout), so several queues can share one Redis database.
///
/// ```
/// use std::time::Duration;
/// use quorum_queue_redis::RedisQueueConfig;
///
/// let config: RedisQueueConfig = serde_json::from_str(
///     r#"{ "url": "redis://127.0.0.1:6379", "name": "jobs", "visibility_timeout": "10s" }"#,
/// ).unwrap();
/// assert_eq!(config.visibility_timeout.as_std(), Duration::from_secs(10));
/// assert_eq!(config.max_deliveries, 5); // default
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisQueueConfig {
    /// The server, `redis://[user:password@]host[:port][/db]` (default
    /// `redis://127.0.0.1:6379`). Redacted when printed: it may hold a password.
    pub url: Secret,
    /// The queue's name: the prefix of every key it uses (default `quorum:jobs`).
    pub name: String,
    /// The consumer group every worker of this queue joins (default `workers`).
    pub group: String,
    /// The start of each handle's consumer name; a process id and a unique suffix follow
    /// (default `worker`).
    pub consumer_prefix: String,
    /// How long a lease lasts before the message may be claimed by another consumer: the
    /// `XAUTOCLAIM` min idle time (default 30s).
    pub visibility_timeout: Duration,
    /// Deliveries after which an unacked message is dead-lettered instead of redelivered
    /// (default 5).
    pub max_deliveries: u32,
    /// The highest priority accepted (default 3): priorities `0..=max_priority`, one stream each,
    /// read highest first. Each level costs one stream read per `lease` call.
    pub max_priority: u8,
    /// How long a `dedup_id` is remembered (default 2m).
    pub dedup_window: Duration,
    /// How often a handle looks for expired leases of other consumers (`XAUTOCLAIM`) while
    /// leasing (default 1s; at most half the visibility timeout is used).
    pub claim_interval: Duration,
    /// The window over which `rate_in` / `rate_out` are computed (default 1m).
    pub rate_window: Duration,
    /// Create missing streams and the consumer group on connect (default true). With `false`,
    /// connecting to a queue that does not exist yet is a configuration error.
    pub create: bool,
    /// How long connecting may take (default 5s).
    pub connect_timeout: Duration,
    /// How long one command may take before it fails with a transport error (default 5s).
    pub response_timeout: Duration,
}

impl Default for RedisQueueConfig {
    fn default() -> Self {
        RedisQueueConfig {
            url: Secret::new("redis://127.0.0.1:6379"),
            name: "quorum:jobs".into(),
            group: "workers".into(),
            consumer_prefix: "worker".into(),
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            max_priority: 3,
            dedup_window: Duration::from_secs(120),
            claim_interval: Duration::from_secs(1),
            rate_window: Duration::from_secs(60),
            create: true,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
        }
    }
}

impl RedisQueueConfig {
    /// A default config for the server at `url` and the queue `name`.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        RedisQueueConfig {
            url: Secret::new(url),
            name: name.into(),
            ..RedisQueueConfig::default()
        }
    }

    /// Checks every field without connecting (see [`validate`](crate::validate) for the checks
    /// against the server).
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), QueueError> {
        let invalid = |field, reason: String| Err(QueueError::InvalidConfig { field, reason });
        if let Err(e) = redis::Client::open(self.url.expose()) {
            return invalid("url", format!("not a redis URL: {e}"));
        }
        for (field, value) in [
            ("name", &self.name),
            ("group", &self.group),
            ("consumer_prefix", &self.consumer_prefix),
        ] {
            if value.is_empty() {
                return invalid(field, "must not be empty".into());
            }
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(
                    field,
                    format!("{value:?} must not contain whitespace or control characters"),
                );
            }
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries", "must be at least 1".into());
        }
        for (field, value) in [
            ("visibility_timeout", self.visibility_timeout),
            ("dedup_window", self.dedup_window),
            ("claim_interval", self.claim_interval),
            ("rate_window", self.rate_window),
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if value.as_std() < StdDuration::from_millis(1) {
                return invalid(field, format!("{value} must be at least 1ms"));
            }
            if value.as_std() > MAX_CONFIG_DURATION {
                return invalid(field, format!("{value} exceeds the maximum of 365d"));
            }
        }
        Ok(())
    }

    /// How often a handle runs `XAUTOCLAIM`: `claim_interval`, at most half the visibility
    /// timeout.
    pub(crate) fn effective_claim_interval(&self) -> StdDuration {
        self.claim_interval
            .as_std()
            .min(self.visibility_timeout.as_std() / 2)
            .max(StdDuration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &RedisQueueConfig) -> &'static str {
        match config.validate() {
            Err(QueueError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = RedisQueueConfig::default();
        config.validate().unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"visibility_timeout\":\"30s\""), "{json}");
        assert!(
            !json.contains("6379"),
            "the URL is redacted when serialized: {json}"
        );
        let back: RedisQueueConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(
            RedisQueueConfig {
                url: config.url.clone(),
                ..back
            },
            config
        );
        assert_eq!(config.effective_claim_interval(), StdDuration::from_secs(1));
    }

    #[test]
    fn unknown_keys_and_bare_numbers_are_rejected() {
        let err = serde_json::from_str::<RedisQueueConfig>(r#"{ "visibilty_timeout": "1s" }"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<RedisQueueConfig>(r#"{ "visibility_timeout": 30 }"#)
            .unwrap_err();
        assert!(err.to_string().contains("unit"), "{err}");
    }

    #[test]
    fn bad_fields_are_named() {
        let base = RedisQueueConfig::default;
        assert_eq!(
            field_of(&RedisQueueConfig {
                url: Secret::new("http://x"),
                ..base()
            }),
            "url"
        );
        assert_eq!(
            field_of(&RedisQueueConfig {
                name: String::new(),
                ..base()
            }),
            "name"
        );
        assert_eq!(
            field_of(&RedisQueueConfig {
                group: "a b".into(),
                ..base()
            }),
            "group"
        );
        assert_eq!(
            field_of(&RedisQueueConfig {
                max_deliveries: 0,
                ..base()
            }),
            "max_deliveries"
        );
        assert_eq!(
            field_of(&RedisQueueConfig {
                visibility_timeout: Duration::from_millis(0),
                ..base()
            }),
            "visibility_timeout"
        );
        assert_eq!(
            field_of(&RedisQueueConfig {
                dedup_window: Duration::from_secs(400 * 86_400),
                ..base()
            }),
            "dedup_window"
        );
        let err = RedisQueueConfig {
            max_deliveries: 0,
            ..base()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid queue config: max_deliveries: must be at least 1"
        );
    }

    #[test]
    fn the_url_is_redacted_when_printed() {
        let config = RedisQueueConfig::new("redis://:hunter2@db:6379", "q");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn claim_interval_is_capped_by_the_visibility_timeout() {
        let config = RedisQueueConfig {
            visibility_timeout: Duration::from_secs(1),
            ..RedisQueueConfig::default()
        };
        assert_eq!(
            config.effective_claim_interval(),
            StdDuration::from_millis(500)
        );
    }
}
