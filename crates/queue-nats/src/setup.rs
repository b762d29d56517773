//! Connecting, and creating or validating the work stream, the dead-letter stream and the durable
//! pull consumer from a [`NatsQueueConfig`].

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{self as js_consumer};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{
    self, ConsumerErrorKind, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, Context};
use quorum_queue::QueueError;

use crate::config::{NatsQueueConfig, Retention, Storage};
use crate::error::{NatsError, nats};

/// Extra deliveries the server allows beyond `max_deliveries` when a `backoff` forces a finite
/// `MaxDeliver`: room for retrying a failed dead-letter publish.
pub(crate) const DEAD_LETTER_RETRIES: i64 = 10;

/// Connects with the config's URL and timeouts; reconnects forever after that.
pub(crate) async fn connect(config: &NatsQueueConfig) -> Result<async_nats::Client, QueueError> {
    let timeout = config.connect_timeout.as_std();
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(timeout)
        .request_timeout(Some(config.request_timeout.as_std()))
        .max_reconnects(None);
    let url = config.url.trim().to_owned();
    match tokio::time::timeout(timeout, options.connect(url)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(nats(err)),
        Err(elapsed) => Err(QueueError::transport(elapsed)),
    }
}

/// A JetStream context with the config's request timeout.
pub(crate) fn context(config: &NatsQueueConfig, client: async_nats::Client) -> Context {
    jetstream::ContextBuilder::new()
        .timeout(config.request_timeout.as_std())
        .build(client)
}

/// Whether to create what is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Create missing streams / consumer when `auto_create` (opening a queue).
    Open,
    /// Only check (the `validate` function): missing is fine when `auto_create`.
    Check,
}

/// The handles opening needs.
pub(crate) struct Setup {
    pub(crate) stream: stream::Stream,
    pub(crate) dead: stream::Stream,
    pub(crate) consumer: PullConsumer,
}

fn conflict(field: &'static str, what: String) -> QueueError {
    QueueError::InvalidConfig {
        field,
        reason: what,
    }
}

fn missing(field: &'static str, what: &str, name: &str) -> QueueError {
    conflict(
        field,
        format!("{what} {name:?} does not exist and auto_create is false"),
    )
}

fn retention_of(r: Retention) -> RetentionPolicy {
    match r {
        Retention::WorkQueue => RetentionPolicy::WorkQueue,
        Retention::Limits => RetentionPolicy::Limits,
    }
}

fn storage_of(s: Storage) -> StorageType {
    match s {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    }
}

/// The work stream as the config wants it.
pub(crate) fn work_stream_config(config: &NatsQueueConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        subjects: vec![config.subject.clone()],
        retention: retention_of(config.retention),
        storage: storage_of(config.storage),
        max_age: config.max_age.as_std(),
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window.as_std(),
        discard: DiscardPolicy::Old,
        ..stream::Config::default()
    }
}

/// The dead-letter stream: limits retention (letters stay until replayed or purged).
pub(crate) fn dead_stream_config(config: &NatsQueueConfig) -> stream::Config {
    stream::Config {
        name: config.dead_letter_stream(),
        subjects: vec![config.dead_letter_subject()],
        retention: RetentionPolicy::Limits,
        storage: storage_of(config.storage),
        num_replicas: config.replicas,
        duplicate_window: Duration::from_secs(120),
        ..stream::Config::default()
    }
}

/// The consumer's `MaxDeliver`: unlimited, since this client dead-letters by delivery count;
/// a `backoff` needs a finite value, then it leaves room for dead-letter retries.
pub(crate) fn max_deliver(config: &NatsQueueConfig) -> i64 {
    if config.backoff.is_empty() {
        -1
    } else {
        let backoff = i64::try_from(config.backoff.len()).unwrap_or(i64::MAX);
        i64::from(config.max_deliveries).max(backoff) + DEAD_LETTER_RETRIES
    }
}

/// The durable pull consumer as the config wants it.
pub(crate) fn consumer_config(config: &NatsQueueConfig) -> pull::Config {
    let backoff: Vec<Duration> = config.backoff.iter().map(|d| d.as_std()).collect();
    pull::Config {
        durable_name: Some(config.consumer.clone()),
        filter_subject: config.subject.clone(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: backoff
            .first()
            .copied()
            .unwrap_or(config.visibility_timeout.as_std()),
        max_deliver: max_deliver(config),
        backoff,
        max_ack_pending: config.max_ack_pending,
        num_replicas: 0,
        ..pull::Config::default()
    }
}

/// Whether a literal subject matches a stream subject pattern (`*`, `>` wildcards).
pub(crate) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn check_stream(
    field: &'static str,
    found: &stream::Config,
    want: &stream::Config,
    subject: &str,
) -> Result<(), QueueError> {
    let name = &want.name;
    if !found.subjects.iter().any(|p| subject_matches(p, subject)) {
        return Err(conflict(
            field,
            format!(
                "existing stream {name:?} binds {:?}, not subject {subject:?}",
                found.subjects
            ),
        ));
    }
    let differs = |setting: &str, found: String, want: String| {
        Err(conflict(
            field,
            format!(
                "existing stream {name:?} has {setting} {found}, the config asks for {want} \
                 (change the config or the stream)"
            ),
        ))
    };
    if found.retention != want.retention {
        return differs(
            "retention",
            format!("{:?}", found.retention),
            format!("{:?}", want.retention),
        );
    }
    if found.storage != want.storage {
        return differs(
            "storage",
            format!("{:?}", found.storage),
            format!("{:?}", want.storage),
        );
    }
    if found.num_replicas != want.num_replicas {
        return differs(
            "replicas",
            found.num_replicas.to_string(),
            want.num_replicas.to_string(),
        );
    }
    if found.max_age != want.max_age {
        return differs(
            "max_age",
            format!("{:?}", found.max_age),
            format!("{:?}", want.max_age),
        );
    }
    Ok(())
}

async fn stream(
    js: &Context,
    field: &'static str,
    want: stream::Config,
    subject: &str,
    mode: Mode,
    auto_create: bool,
) -> Result<Option<stream::Stream>, QueueError> {
    let name = want.name.clone();
    for _attempt in 0..2 {
        match js.get_stream(&name).await {
            Ok(mut found) => {
                let info = found.info().await.map_err(nats)?;
                check_stream(field, &info.config, &want, subject)?;
                return Ok(Some(found));
            }
            Err(err) => match err.kind() {
                GetStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    if !auto_create {
                        return Err(missing(field, "stream", &name));
                    }
                    if mode == Mode::Check {
                        return Ok(None);
                    }
                    match js.create_stream(want.clone()).await {
                        Ok(created) => return Ok(Some(created)),
                        // Another handle created it meanwhile: look again.
                        Err(err)
                            if matches!(
                                err.kind(),
                                CreateStreamErrorKind::JetStream(ref e)
                                    if e.error_code() == ErrorCode::STREAM_NAME_EXIST
                            ) => {}
                        Err(err) => return Err(nats(err)),
                    }
                }
                _ if no_responders(&err) => {
                    return Err(QueueError::backend(NatsError::JetStreamDisabled {
                        url: {
                            let info = js.client().server_info();
                            format!("{}:{}", info.host, info.port)
                        },
                    }));
                }
                _ => return Err(nats(err)),
            },
        }
    }
    Err(conflict(
        field,
        format!("stream {name:?} was created and deleted concurrently"),
    ))
}

fn check_consumer(found: &js_consumer::Config, want: &pull::Config) -> Result<(), QueueError> {
    let name = want.durable_name.as_deref().unwrap_or_default();
    let differs = |field: &'static str, setting: &str, found: String, want: String| {
        Err(conflict(
            field,
            format!(
                "existing consumer {name:?} has {setting} {found}, the config asks for {want} \
                 (delete the consumer to recreate it, or change the config)"
            ),
        ))
    };
    if found.ack_policy != AckPolicy::Explicit {
        return differs(
            "consumer",
            "ack policy",
            format!("{:?}", found.ack_policy),
            "Explicit".into(),
        );
    }
    if found.filter_subject != want.filter_subject {
        return differs(
            "subject",
            "filter subject",
            format!("{:?}", found.filter_subject),
            format!("{:?}", want.filter_subject),
        );
    }
    if found.ack_wait != want.ack_wait {
        return differs(
            "visibility_timeout",
            "ack wait",
            format!("{:?}", found.ack_wait),
            format!("{:?}", want.ack_wait),
        );
    }
    if found.backoff != want.backoff {
        return differs(
            "backoff",
            "backoff",
            format!("{:?}", found.backoff),
            format!("{:?}", want.backoff),
        );
    }
    if found.max_deliver != want.max_deliver {
        return differs(
            "max_deliveries",
            "max deliver",
            found.max_deliver.to_string(),
            format!("{} (see the crate docs on dead letters)", want.max_deliver),
        );
    }
    if found.max_ack_pending != want.max_ack_pending {
        return differs(
            "max_ack_pending",
            "max ack pending",
            found.max_ack_pending.to_string(),
            want.max_ack_pending.to_string(),
        );
    }
    Ok(())
}

async fn consumer(
    stream: &stream::Stream,
    config: &NatsQueueConfig,
    mode: Mode,
) -> Result<Option<PullConsumer>, QueueError> {
    let want = consumer_config(config);
    for _attempt in 0..2 {
        match stream.consumer_info(&config.consumer).await {
            Ok(found) => {
                check_consumer(&found.config, &want)?;
                let consumer = stream
                    .get_consumer::<pull::Config>(&config.consumer)
                    .await
                    .map_err(QueueError::backend)?;
                return Ok(Some(consumer));
            }
            Err(err) => match err.kind() {
                ConsumerInfoErrorKind::NotFound => {
                    if !config.auto_create {
                        return Err(missing("consumer", "consumer", &config.consumer));
                    }
                    if mode == Mode::Check {
                        return Ok(None);
                    }
                    match stream.create_consumer(want.clone()).await {
                        Ok(created) => return Ok(Some(created)),
                        Err(err)
                            if matches!(
                                err.kind(),
                                ConsumerErrorKind::JetStream(ref e)
                                    if e.error_code() == ErrorCode::CONSUMER_NAME_EXIST
                                        || e.error_code() == ErrorCode::CONSUMER_ALREADY_EXISTS
                            ) => {}
                        Err(err) => return Err(nats(err)),
                    }
                }
                _ => return Err(nats(err)),
            },
        }
    }
    Err(conflict(
        "consumer",
        format!(
            "consumer {:?} was created and deleted concurrently",
            config.consumer
        ),
    ))
}

/// Whether an error chain says nobody answered a JetStream API request: JetStream is off.
fn no_responders(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<async_nats::RequestError>()
            && e.kind() == async_nats::RequestErrorKind::NoResponders
        {
            return true;
        }
        if let Some(e) = e.downcast_ref::<async_nats::jetstream::context::RequestError>()
            && e.kind() == async_nats::jetstream::context::RequestErrorKind::NoResponders
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Creates (per `mode` and `auto_create`) or validates the streams and the consumer.
pub(crate) async fn ensure(
    js: &Context,
    config: &NatsQueueConfig,
    mode: Mode,
) -> Result<Option<Setup>, QueueError> {
    let work = stream(
        js,
        "stream",
        work_stream_config(config),
        &config.subject,
        mode,
        config.auto_create,
    )
    .await?;
    let dead = stream(
        js,
        "dead_letter_stream",
        dead_stream_config(config),
        &config.dead_letter_subject(),
        mode,
        config.auto_create,
    )
    .await?;
    let Some(work) = work else {
        return Ok(None);
    };
    let consumer = consumer(&work, config, mode).await?;
    match (dead, consumer) {
        (Some(dead), Some(consumer)) => Ok(Some(Setup {
            stream: work,
            dead,
            consumer,
        })),
        _ => Ok(None),
    }
}

/// Checks a config against the server it names, without creating or changing anything: the URL
/// parses and answers, JetStream is enabled, and the streams and consumer exist (unless
/// `auto_create` would create them) with settings that match the config. The autoscaler's
/// `config validate` calls this.
///
/// ```no_run
/// # async fn example() -> Result<(), quorum_queue::QueueError> {
/// let config = quorum_queue_nats::NatsQueueConfig {
///     auto_create: false,
///     ..Default::default()
/// };
/// quorum_queue_nats::validate(&config).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`QueueError::InvalidConfig`] naming the field (a bad value, a missing stream or consumer
/// with `auto_create` off, an existing stream or consumer whose settings differ),
/// [`QueueError::Transport`] when the server does not answer, [`QueueError::Backend`] when it
/// refuses (e.g. JetStream disabled, authorization).
pub async fn validate(config: &NatsQueueConfig) -> Result<(), QueueError> {
    config.check()?;
    let client = connect(config).await?;
    let js = context(config, client.clone());
    let result = ensure(&js, config, Mode::Check).await.map(|_| ());
    drop(js);
    // Closing a connection that is already gone is not an error worth reporting.
    let _ = client.drain().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::consumer::IntoConsumerConfig;
    use quorum_config::Duration as ConfigDuration;

    #[test]
    fn subjects_match_with_wildcards() {
        assert!(subject_matches("jobs.llm", "jobs.llm"));
        assert!(subject_matches("jobs.*", "jobs.llm"));
        assert!(subject_matches("jobs.>", "jobs.llm.fast"));
        assert!(!subject_matches("jobs.*", "jobs.llm.fast"));
        assert!(!subject_matches("jobs.llm", "jobs"));
        assert!(!subject_matches("jobs", "jobs.llm"));
        assert!(
            !subject_matches("jobs.>", "jobs"),
            "> needs at least one token"
        );
    }

    #[test]
    fn consumer_settings_follow_the_config() {
        let config = NatsQueueConfig::default();
        let c = consumer_config(&config);
        assert_eq!(c.max_deliver, -1, "dead-lettering is done by the client");
        assert_eq!(c.ack_wait, Duration::from_secs(30));
        assert_eq!(c.filter_subject, "quorum.jobs");
        let with_backoff = NatsQueueConfig {
            backoff: vec![ConfigDuration::from_secs(1), ConfigDuration::from_secs(10)],
            max_deliveries: 3,
            ..NatsQueueConfig::default()
        };
        let c = consumer_config(&with_backoff);
        assert_eq!(c.ack_wait, Duration::from_secs(1));
        assert_eq!(c.max_deliver, 3 + DEAD_LETTER_RETRIES);
        assert!(
            c.max_deliver > 2,
            "the server wants MaxDeliver > len(BackOff)"
        );
    }

    #[test]
    fn conflicts_name_the_setting() {
        let config = NatsQueueConfig::default();
        let want = consumer_config(&config);
        let found = pull::Config {
            ack_wait: Duration::from_secs(5),
            ..want.clone()
        }
        .into_consumer_config();
        let err = check_consumer(&found, &want).unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::InvalidConfig {
                    field: "visibility_timeout",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("ack wait 5s"), "{err}");
        check_consumer(&want.clone().into_consumer_config(), &want).unwrap();

        let want = work_stream_config(&config);
        let found = stream::Config {
            storage: StorageType::Memory,
            ..want.clone()
        };
        let err = check_stream("stream", &found, &want, "quorum.jobs").unwrap_err();
        assert!(err.to_string().contains("storage Memory"), "{err}");
        let err = check_stream("stream", &want, &want, "other.subject").unwrap_err();
        assert!(
            err.to_string().contains("not subject \"other.subject\""),
            "{err}"
        );
        check_stream("stream", &want, &want, "quorum.jobs").unwrap();
    }
}
