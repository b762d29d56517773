//! [`RedisQueue`]: the [`Queue`] over Redis Streams and one consumer group.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use quorum_queue::rate::RateWindow;
use quorum_queue::{
    Capabilities, DeadLetter, DeadLetters, Delivery, Lease, MessageId, NewMessage, Queue,
    QueueError, QueueStats, StatsSnapshot,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, ScriptInvocation, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::RedisQueueConfig;
use crate::error::{RedisQueueError, command, unexpected};
use crate::reply;
use crate::scripts::SCRIPTS;

/// The most deliveries one `lease` call returns, and the most leases one settle script checks.
const MAX_BATCH: usize = 10_000;
/// The oldest server with everything this backend uses (`XAUTOCLAIM`, exclusive ranges).
const MIN_VERSION: (u32, u32) = (6, 2);

/// The keys of one queue.
#[derive(Debug)]
pub(crate) struct Keys {
    /// The priority streams, highest priority first (index `max_priority - p`).
    pub(crate) streams: Vec<String>,
    /// Every key the scripts take, in their order: streams, due, delayed, dlq, counters.
    pub(crate) script_keys: Vec<String>,
    pub(crate) due: String,
    pub(crate) delayed: String,
    pub(crate) dlq: String,
    pub(crate) counters: String,
    pub(crate) meta: String,
    pub(crate) dedup_prefix: String,
}

impl Keys {
    pub(crate) fn new(name: &str, max_priority: u8) -> Self {
        let streams: Vec<String> = (0..=max_priority)
            .rev()
            .map(|p| format!("{name}:p{p}"))
            .collect();
        let due = format!("{name}:due");
        let delayed = format!("{name}:delayed");
        let dlq = format!("{name}:dlq");
        let counters = format!("{name}:counters");
        let mut script_keys = streams.clone();
        script_keys.extend([due.clone(), delayed.clone(), dlq.clone(), counters.clone()]);
        Keys {
            streams,
            script_keys,
            due,
            delayed,
            dlq,
            counters,
            meta: format!("{name}:meta"),
            dedup_prefix: format!("{name}:dedup:"),
        }
    }

    /// The stream of priority `p` (clamped to the highest).
    fn stream(&self, p: u8) -> &str {
        let top = self.streams.len() - 1;
        let index = top.saturating_sub(usize::from(p));
        &self.streams[index]
    }
}

/// A Redis Streams work queue: one handle (one consumer in the group).
///
/// [`connect`](RedisQueue::connect) opens a connection and a consumer; [`handle`](RedisQueue::handle)
/// makes another consumer sharing the connection. Clones share one handle. See the
/// [crate docs](crate) for how the contract maps onto Redis.
#[derive(Clone)]
pub struct RedisQueue {
    shared: Arc<Shared>,
    handle: Arc<HandleState>,
}

struct Shared {
    config: RedisQueueConfig,
    keys: Keys,
    client: Client,
    conn: ConnectionManager,
    rates: Mutex<(RateWindow, RateWindow)>,
    /// The longest one blocking `XREAD` waits (the claim interval).
    block_cap: Duration,
}

struct HandleState {
    consumer: String,
    /// A connection of its own for the blocking `XREAD` while waiting for work, so a waiting
    /// `lease` never delays this handle's acks.
    block: ConnectionManager,
    closed: AtomicBool,
    closed_notify: Notify,
    last_claim: Mutex<Option<Instant>>,
    /// Deliveries read ahead beyond the `max` asked for, with when they were read.
    buffer: Mutex<VecDeque<(Instant, Delivery)>>,
    /// The server's id of the `block` connection (`CLIENT ID`), so `close` can end a blocking
    /// read at once with `CLIENT UNBLOCK`; forgotten after a connection error.
    block_id: Mutex<Option<i64>>,
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("name", &self.shared.config.name)
            .field("group", &self.shared.config.group)
            .field("consumer", &self.handle.consumer)
            .field("closed", &self.handle.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(0);

fn consumer_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % (1 << 48));
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Host and port of a client, for errors (never the password).
fn address(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}

fn manager_config(
    config: &RedisQueueConfig,
    response: Option<Duration>,
) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout.as_std()))
        .set_response_timeout(response)
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
}

/// Opens a client for the config's URL.
fn open_client(config: &RedisQueueConfig) -> Result<Client, QueueError> {
    Client::open(config.url.expose()).map_err(|e| QueueError::InvalidConfig {
        field: "url",
        reason: format!("not a redis URL: {e}"),
    })
}

/// Connects a manager, bounded by the connect timeout.
pub(crate) async fn connect_manager(
    client: &Client,
    config: &RedisQueueConfig,
) -> Result<ConnectionManager, QueueError> {
    let connecting = ConnectionManager::new_with_config(
        client.clone(),
        manager_config(config, Some(config.response_timeout.as_std())),
    );
    let failed = |source| {
        QueueError::transport(RedisQueueError::Connect {
            address: address(client),
            source,
        })
    };
    match tokio::time::timeout(config.connect_timeout.as_std(), connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(failed(Some(e))),
        Err(_) => Err(failed(None)),
    }
}

/// Fails unless the server is at least [`MIN_VERSION`].
pub(crate) async fn check_version(conn: &mut ConnectionManager) -> Result<(), QueueError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(|e| command("INFO", e))?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        return Err(QueueError::backend(RedisQueueError::ServerTooOld {
            version,
            needed: "XAUTOCLAIM and exclusive stream ranges need redis 6.2 or newer",
        }));
    }
    Ok(())
}

/// Checks (and with `create`, creates) the streams, the group and the recorded `max_priority`.
/// With `tolerate_missing`, missing streams and groups are fine (they will be created).
pub(crate) async fn prepare(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    keys: &Keys,
    create: bool,
    tolerate_missing: bool,
) -> Result<(), QueueError> {
    let recorded: Option<u8> = redis::cmd("HGET")
        .arg(&keys.meta)
        .arg("max_priority")
        .query_async::<Option<String>>(conn)
        .await
        .map_err(|e| command("HGET", e))?
        .and_then(|v| v.parse().ok());
    if let Some(recorded) = recorded
        && recorded > config.max_priority
    {
        return Err(QueueError::InvalidConfig {
            field: "max_priority",
            reason: format!(
                "queue {} was created with max_priority {recorded}; {} would strand the \
                 messages of priorities above it",
                config.name, config.max_priority
            ),
        });
    }
    for key in &keys.streams {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(conn)
            .await
            .map_err(|e| command("TYPE", e))?;
        match kind.as_str() {
            "stream" => {}
            "none" if create => {}
            "none" if tolerate_missing => continue,
            "none" => {
                return Err(QueueError::InvalidConfig {
                    field: "create",
                    reason: format!(
                        "stream {key} does not exist and create is false (create the queue or \
                         set create: true)"
                    ),
                });
            }
            other => {
                return Err(QueueError::InvalidConfig {
                    field: "name",
                    reason: format!("key {key} holds a {other}, not a stream"),
                });
            }
        }
        if create {
            let made: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&config.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(conn)
                .await;
            match made {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(command("XGROUP CREATE", e)),
            }
        } else {
            let groups: Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(key)
                .query_async(conn)
                .await
                .map_err(|e| command("XINFO GROUPS", e))?;
            if !group_listed(groups, &config.group)? && !tolerate_missing {
                return Err(QueueError::InvalidConfig {
                    field: "group",
                    reason: format!(
                        "consumer group {} does not exist on stream {key} and create is false",
                        config.group
                    ),
                });
            }
        }
    }
    for (key, wanted) in [
        (&keys.delayed, "stream"),
        (&keys.dlq, "stream"),
        (&keys.due, "zset"),
    ] {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(conn)
            .await
            .map_err(|e| command("TYPE", e))?;
        if kind != "none" && kind != wanted {
            return Err(QueueError::InvalidConfig {
                field: "name",
                reason: format!("key {key} holds a {kind}, not a {wanted}"),
            });
        }
    }
    if create && recorded != Some(config.max_priority) {
        redis::cmd("HSET")
            .arg(&keys.meta)
            .arg("max_priority")
            .arg(config.max_priority)
            .query_async::<()>(conn)
            .await
            .map_err(|e| command("HSET", e))?;
    }
    Ok(())
}

/// Whether `XINFO GROUPS` lists `group`.
fn group_listed(groups: Value, group: &str) -> Result<bool, QueueError> {
    for g in reply::array("XINFO GROUPS", groups)? {
        let pairs: Vec<(Value, Value)> = match g {
            Value::Map(pairs) => pairs,
            other => {
                let mut it = reply::array("XINFO GROUPS", other)?.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
        };
        for (k, v) in pairs {
            if reply::bytes("XINFO GROUPS", k)? == b"name"
                && reply::bytes("XINFO GROUPS", v)? == group.as_bytes()
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// A delivery from a stream entry of priority `p` delivered `times` times to this group.
fn delivery(
    what: &'static str,
    p: u8,
    times: u32,
    eid: Value,
    fields: Value,
) -> Result<Delivery, QueueError> {
    let eid = reply::string(what, eid)?;
    let f = reply::fields(what, fields)?;
    let id = MessageId::from_text(f.id.unwrap_or_else(|| eid.clone()));
    let lease = Lease::new(id.clone(), u64::from(p), u64::from(times)).with_handle(eid);
    Ok(
        Delivery::new(id, f.payload, f.prior.saturating_add(times), lease)
            .with_headers(f.headers)
            .with_priority(p),
    )
}

/// The `[stream, entries]` pairs of an `XREADGROUP` reply (RESP2 array or RESP3 map).
fn stream_replies(reply: Value) -> Result<Vec<(Value, Value)>, QueueError> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => Ok(pairs),
        other => reply::array("XREADGROUP", other)?
            .into_iter()
            .map(|s| {
                let mut it = reply::array("XREADGROUP", s)?.into_iter();
                match (it.next(), it.next()) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(unexpected("XREADGROUP", "expected [stream, entries]")),
                }
            })
            .collect(),
    }
}

/// The error of the leases after the first in a batch whose script call failed (the first
/// lease gets the call's own error), classified like it.
fn batch_failed(what: &'static str, chunk_start: usize, retryable: bool) -> QueueError {
    let source = RedisQueueError::UnexpectedReply {
        command: what,
        detail: format!(
            "the batch call failed (its error is on the first lease of the chunk at {chunk_start})"
        ),
    };
    if retryable {
        QueueError::transport(source)
    } else {
        QueueError::backend(source)
    }
}

/// The order of entries within one stream: the numeric parts of the entry id.
fn entry_order(lease: &Lease) -> (u64, u64) {
    let Some((ms, seq)) = lease.handle().and_then(|h| h.split_once('-')) else {
        return (u64::MAX, u64::MAX);
    };
    (
        ms.parse().unwrap_or(u64::MAX),
        seq.parse().unwrap_or(u64::MAX),
    )
}

/// Ceiling milliseconds, at least 1.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One lease of an ack batch: its index in the chunk, entry id and the id's order.
type AckItem<'a> = (usize, &'a str, (u64, u64));

/// One settle operation for the settle script.
enum Op<'a> {
    Nack(Duration),
    Term(&'a str),
    Touch,
}

impl RedisQueue {
    /// Connects, checks the server (Redis ≥ 6.2), creates the streams and the consumer group when
    /// `config.create` is set (checking them otherwise), loads the Lua scripts and returns a
    /// handle with a fresh consumer name.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] for a bad field, a missing stream or group with
    /// `create: false`, a key of the wrong type or a lowered `max_priority`; a transport error
    /// when the server cannot be reached; a backend error when it rejects a command or is too old.
    pub async fn connect(config: RedisQueueConfig) -> Result<Self, QueueError> {
        config.validate()?;
        let client = open_client(&config)?;
        let mut conn = connect_manager(&client, &config).await?;
        check_version(&mut conn).await?;
        let keys = Keys::new(&config.name, config.max_priority);
        prepare(&mut conn, &config, &keys, config.create, false).await?;
        for script in SCRIPTS.all() {
            script
                .load_async(&mut conn)
                .await
                .map_err(|e| command("SCRIPT LOAD", e))?;
        }
        let window = config.rate_window.as_std();
        let block_cap = config.effective_claim_interval();
        let shared = Arc::new(Shared {
            keys,
            client,
            conn,
            rates: Mutex::new((RateWindow::new(window), RateWindow::new(window))),
            block_cap,
            config,
        });
        let handle = Arc::new(Self::new_handle(&shared)?);
        Ok(RedisQueue { shared, handle })
    }

    fn new_handle(shared: &Shared) -> Result<HandleState, QueueError> {
        let response = shared.block_cap + shared.config.response_timeout.as_std();
        let block = ConnectionManager::new_lazy_with_config(
            shared.client.clone(),
            manager_config(&shared.config, Some(response)),
        )
        .map_err(|e| command("connect", e))?;
        Ok(HandleState {
            consumer: consumer_name(&shared.config.consumer_prefix),
            block,
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            last_claim: Mutex::new(None),
            buffer: Mutex::new(VecDeque::new()),
            block_id: Mutex::new(None),
        })
    }

    /// Another handle (a new consumer in the group) sharing this one's command connection; it
    /// opens its own connection for blocking reads when it first waits.
    ///
    /// # Errors
    ///
    /// A backend error if the client cannot be set up (it does not connect yet).
    pub fn handle(&self) -> Result<Self, QueueError> {
        Ok(RedisQueue {
            shared: Arc::clone(&self.shared),
            handle: Arc::new(Self::new_handle(&self.shared)?),
        })
    }

    /// This handle's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.handle.consumer
    }

    /// The config this queue was opened with.
    pub fn config(&self) -> &RedisQueueConfig {
        &self.shared.config
    }

    /// Deletes every key of this queue (streams, group, delayed and dead messages, counters, dedup
    /// ids): for tests and for tearing a queue down. Other handles fail afterwards.
    ///
    /// # Errors
    ///
    /// A transport / backend error.
    pub async fn destroy(&self) -> Result<(), QueueError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.conn.clone();
        let mut del = redis::cmd("DEL");
        del.arg(&keys.script_keys).arg(&keys.meta);
        del.query_async::<()>(&mut conn)
            .await
            .map_err(|e| command("DEL", e))?;
        let pattern = format!("{}*", keys.dedup_prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| command("SCAN", e))?;
            if !found.is_empty() {
                redis::cmd("DEL")
                    .arg(&found)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| command("DEL", e))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn closed(&self) -> QueueError {
        QueueError::Closed {
            name: self.shared.config.name.clone(),
        }
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.handle.closed.load(Ordering::Acquire) {
            Err(self.closed())
        } else {
            Ok(())
        }
    }

    /// A script invocation with the common keys and arguments.
    fn invocation<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.key(&self.shared.keys.script_keys)
            .arg(&self.shared.config.group)
            .arg(&self.handle.consumer)
            .arg(self.shared.config.max_deliveries)
            .arg(self.shared.config.max_priority);
        inv
    }

    async fn invoke(
        &self,
        what: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<Value, QueueError> {
        let mut conn = self.shared.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .map_err(|e| command(what, e))
    }

    fn lock_block_id(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        self.handle
            .block_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this lease call should look for expired leases; if not, how long until it should.
    fn claim_due(&self, now: Instant) -> (bool, Duration) {
        let interval = self.shared.block_cap;
        let mut last = self
            .handle
            .last_claim
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.duration_since(at) < interval => {
                (false, interval - now.duration_since(at))
            }
            _ => {
                *last = Some(now);
                (true, interval)
            }
        }
    }

    /// The `XREADGROUP` of new entries over every priority stream, highest first.
    fn read_cmd(&self, max: usize, block: Option<Duration>) -> redis::Cmd {
        let keys = &self.shared.keys.streams;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.shared.config.group)
            .arg(&self.handle.consumer)
            .arg("COUNT")
            .arg(max);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(millis(block));
        }
        cmd.arg("STREAMS").arg(keys);
        for _ in keys {
            cmd.arg(">");
        }
        cmd
    }

    /// Parses an `XREADGROUP` reply into first deliveries.
    fn parse_read(&self, reply: Value) -> Result<Vec<Delivery>, QueueError> {
        const WHAT: &str = "XREADGROUP";
        let keys = &self.shared.keys.streams;
        let mut found = Vec::new();
        for (key, entries) in stream_replies(reply)? {
            let key = reply::bytes(WHAT, key)?;
            let index = keys
                .iter()
                .position(|k| k.as_bytes() == key.as_slice())
                .ok_or_else(|| unexpected(WHAT, "reply for an unknown stream"))?;
            let p = self.shared.config.max_priority.saturating_sub(
                u8::try_from(index).map_err(|_| unexpected(WHAT, "too many streams"))?,
            );
            for entry in reply::array(WHAT, entries)? {
                let mut it = reply::array(WHAT, entry)?.into_iter();
                let (Some(eid), Some(fields)) = (it.next(), it.next()) else {
                    return Err(unexpected(WHAT, "expected [id, fields]"));
                };
                found.push(delivery(WHAT, p, 1, eid, fields)?);
            }
        }
        Ok(found)
    }

    /// Parses the maintain script's reply: claimed deliveries and the time to the next due
    /// delayed message.
    fn parse_maintain(value: Value) -> Result<(Vec<Delivery>, Option<Duration>), QueueError> {
        const WHAT: &str = "maintain script";
        let mut parts = reply::array(WHAT, value)?.into_iter();
        let (Some(found), Some(next_due)) = (parts.next(), parts.next()) else {
            return Err(unexpected(WHAT, "expected 2 parts"));
        };
        let found = reply::array(WHAT, found)?;
        let mut deliveries = Vec::with_capacity(found.len());
        for d in found {
            let mut it = reply::array(WHAT, d)?.into_iter();
            let (Some(p), Some(eid), Some(times), Some(fields)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(unexpected(WHAT, "expected {priority, id, times, fields}"));
            };
            let p = u8::try_from(reply::int(WHAT, &p)?)
                .map_err(|_| unexpected(WHAT, "priority out of range"))?;
            let times = u32::try_from(reply::int(WHAT, &times)?)
                .map_err(|_| unexpected(WHAT, "delivery count out of range"))?;
            deliveries.push(delivery(WHAT, p, times, eid, fields)?);
        }
        let next_due = u64::try_from(reply::int(WHAT, &next_due)?)
            .ok()
            .map(Duration::from_millis);
        Ok((deliveries, next_due))
    }

    /// One non-blocking pass, one round trip: the maintain script (due delayed messages into
    /// their streams; expired leases claimed when `claim`) pipelined with a plain
    /// `XREADGROUP`. Returns the deliveries found and the time to the next due delayed message.
    async fn lease_once(
        &self,
        max: usize,
        claim: bool,
    ) -> Result<(Vec<Delivery>, Option<Duration>), QueueError> {
        let keys = &self.shared.keys.script_keys;
        let config = &self.shared.config;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("EVALSHA")
            .arg(SCRIPTS.maintain.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(&config.group)
            .arg(&self.handle.consumer)
            .arg(config.max_deliveries)
            .arg(config.max_priority)
            .arg(max)
            .arg(if claim { "1" } else { "0" })
            .arg(millis(config.visibility_timeout.as_std()));
        pipe.add_command(self.read_cmd(max, None));
        let mut conn = self.shared.conn.clone();
        let results: Vec<redis::RedisResult<Value>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| command("lease pipeline", e))?;
        let mut results = results.into_iter();
        let (Some(maintained), Some(read)) = (results.next(), results.next()) else {
            return Err(unexpected("lease pipeline", "expected 2 replies"));
        };
        let nogroup =
            |r: &redis::RedisResult<Value>| r.as_ref().is_err_and(|e| e.code() == Some("NOGROUP"));
        if config.create && (nogroup(&maintained) || nogroup(&read)) {
            // The streams or the group are gone (a Redis without persistence restarted, or
            // someone deleted them): make them again, as on connect.
            prepare(&mut conn, config, &self.shared.keys, true, false).await?;
            let found = match read {
                Ok(v) => self.parse_read(v)?,
                Err(_) => Vec::new(),
            };
            return Ok((found, Some(Duration::ZERO)));
        }
        let mut error = None;
        let (mut found, next_due) = match maintained {
            Ok(v) => Self::parse_maintain(v)?,
            Err(e) => {
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
                    // A restarted server: load it for the next pass.
                    SCRIPTS
                        .maintain
                        .load_async(&mut conn)
                        .await
                        .map_err(|e| command("SCRIPT LOAD", e))?;
                    (Vec::new(), Some(Duration::ZERO))
                } else {
                    error = Some(command("maintain script", e));
                    (Vec::new(), None)
                }
            }
        };
        match read {
            Ok(v) => found.extend(self.parse_read(v)?),
            Err(e) => {
                error.get_or_insert(command("XREADGROUP", e));
            }
        }
        // Deliveries already leased are never dropped for an error of the other command: the
        // error shows again on the next call.
        match error {
            Some(e) if found.is_empty() => Err(e),
            _ => Ok((found, next_due)),
        }
    }

    /// Waits up to `block` for new entries with a blocking `XREADGROUP` over every priority
    /// stream (highest first) on this handle's own connection.
    async fn read_blocking(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let cmd = self.read_cmd(max, Some(block));
        let mut conn = self.handle.block.clone();
        let known = *self.lock_block_id();
        if known.is_none() {
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn)
                .await
                .map_err(|e| command("CLIENT ID", e))?;
            *self.lock_block_id() = Some(id);
        }
        let reply: Value = match cmd.query_async(&mut conn).await {
            Ok(reply) => reply,
            Err(e) => {
                // A new connection has a new id.
                *self.lock_block_id() = None;
                return Err(command("XREADGROUP", e));
            }
        };
        self.parse_read(reply)
    }

    /// Returns up to `max` of `fresh` plus what this handle read ahead earlier, highest priority
    /// first and oldest first within a priority; the rest stays in the read-ahead buffer.
    ///
    /// One `XREADGROUP` over several streams returns up to `max` entries *per stream*; those
    /// beyond `max` are leased to this handle already and wait here for its next `lease`
    /// (`close` gives them back). Entries that waited longer than half the visibility timeout
    /// are let go: their lease is nearly over, so another consumer will claim them.
    fn hand_out(&self, max: usize, fresh: Vec<Delivery>) -> Vec<Delivery> {
        let now = Instant::now();
        let mut buffer = self
            .handle
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if buffer.is_empty() && fresh.len() <= max {
            let one_priority = fresh.windows(2).all(|w| w[0].priority == w[1].priority);
            if one_priority {
                return fresh;
            }
        }
        let limit = self.shared.config.visibility_timeout.as_std() / 2;
        buffer.retain(|(at, _)| now.duration_since(*at) < limit);
        buffer.extend(fresh.into_iter().map(|d| (now, d)));
        buffer
            .make_contiguous()
            .sort_by_key(|(_, d)| (std::cmp::Reverse(d.priority), entry_order(&d.lease)));
        let n = buffer.len().min(max);
        buffer.drain(..n).map(|(_, d)| d).collect()
    }

    /// Acks a batch of leases: one ack-script call per [`MAX_BATCH`], leases grouped by stream
    /// with their id range (so the script checks ownership with one `XPENDING` per stream).
    async fn ack_batch(&self, leases: &[Lease]) -> Vec<Result<(), QueueError>> {
        const WHAT: &str = "ack script";
        if let Err(e) = self.check_open() {
            return leases.iter().map(|_| Err(self.closed_like(&e))).collect();
        }
        let stale = |lease: &Lease| QueueError::StaleLease {
            id: lease.id().to_string(),
        };
        let max_priority = u64::from(self.shared.config.max_priority);
        let mut results: Vec<Result<(), QueueError>> = Vec::with_capacity(leases.len());
        for (chunk_no, chunk) in leases.chunks(MAX_BATCH).enumerate() {
            let base = chunk_no * MAX_BATCH;
            let mut groups: BTreeMap<u64, Vec<AckItem<'_>>> = BTreeMap::new();
            let mut chunk_results: Vec<Option<Result<(), QueueError>>> =
                chunk.iter().map(|_| None).collect();
            for (i, lease) in chunk.iter().enumerate() {
                let order = entry_order(lease);
                match lease.handle() {
                    Some(eid) if lease.key() <= max_priority && order.0 != u64::MAX => {
                        groups.entry(lease.key()).or_default().push((i, eid, order));
                    }
                    _ => chunk_results[i] = Some(Err(stale(lease))),
                }
            }
            if !groups.is_empty() {
                let mut inv = self.invocation(&SCRIPTS.ack);
                let mut sent = Vec::with_capacity(chunk.len());
                for (p, members) in &groups {
                    let lo = members.iter().map(|m| (m.2, m.1)).min();
                    let hi = members.iter().map(|m| (m.2, m.1)).max();
                    let (Some((_, lo)), Some((_, hi))) = (lo, hi) else {
                        continue;
                    };
                    inv.arg(*p).arg(lo).arg(hi).arg(members.len());
                    for &(i, eid, _) in members {
                        inv.arg(eid).arg(chunk[i].generation());
                        sent.push(i);
                    }
                }
                match self
                    .invoke(WHAT, &inv)
                    .await
                    .and_then(|v| reply::array(WHAT, v))
                {
                    Ok(codes) if codes.len() == sent.len() => {
                        for (i, code) in sent.into_iter().zip(codes) {
                            chunk_results[i] = Some(match reply::int(WHAT, &code) {
                                Ok(1) => Ok(()),
                                Ok(_) => Err(stale(&chunk[i])),
                                Err(e) => Err(e),
                            });
                        }
                    }
                    Ok(codes) => {
                        let detail = format!("{} results for {} leases", codes.len(), sent.len());
                        for i in sent {
                            chunk_results[i] = Some(Err(unexpected(WHAT, detail.clone())));
                        }
                    }
                    Err(e) => {
                        let retryable = e.is_retryable();
                        let mut first = Some(e);
                        for i in sent {
                            chunk_results[i] = Some(Err(first
                                .take()
                                .unwrap_or_else(|| batch_failed(WHAT, base, retryable))));
                        }
                    }
                }
            }
            results.extend(
                chunk_results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| Err(unexpected(WHAT, "no result")))),
            );
        }
        results
    }

    /// Settles a batch of leases with one script call per [`MAX_BATCH`].
    async fn settle(&self, leases: &[Lease], op: &Op<'_>) -> Vec<Result<(), QueueError>> {
        const WHAT: &str = "settle script";
        let stale = |lease: &Lease| QueueError::StaleLease {
            id: lease.id().to_string(),
        };
        if let Err(e) = self.check_open() {
            return leases.iter().map(|_| Err(self.closed_like(&e))).collect();
        }
        let (name, extra) = match op {
            Op::Nack(delay) if delay.is_zero() => ("nack", "0".to_owned()),
            Op::Nack(delay) => ("nack", millis(*delay).to_string()),
            Op::Term(reason) => ("term", (*reason).to_owned()),
            Op::Touch => ("touch", String::new()),
        };
        let max_priority = u64::from(self.shared.config.max_priority);
        let mut results: Vec<Result<(), QueueError>> = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(MAX_BATCH) {
            let mut inv = self.invocation(&SCRIPTS.settle);
            // Which leases of the chunk were sent (the others are stale without asking).
            let mut sent = Vec::with_capacity(chunk.len());
            for lease in chunk {
                match lease.handle() {
                    Some(eid) if lease.key() <= max_priority => {
                        inv.arg(name)
                            .arg(lease.key())
                            .arg(eid)
                            .arg(lease.generation())
                            .arg(&extra);
                        sent.push(true);
                    }
                    _ => sent.push(false),
                }
            }
            if !sent.contains(&true) {
                results.extend(chunk.iter().map(|l| Err(stale(l))));
                continue;
            }
            let outcome = match self.invoke(WHAT, &inv).await {
                Ok(v) => reply::array(WHAT, v),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(codes) => {
                    let mut codes = codes.into_iter();
                    for (lease, was_sent) in chunk.iter().zip(&sent) {
                        if !was_sent {
                            results.push(Err(stale(lease)));
                            continue;
                        }
                        results.push(match codes.next().as_ref().map(|c| reply::int(WHAT, c)) {
                            Some(Ok(1)) => Ok(()),
                            Some(Ok(_)) => Err(stale(lease)),
                            Some(Err(e)) => Err(e),
                            None => Err(unexpected(WHAT, "fewer results than leases")),
                        });
                    }
                }
                Err(e) => {
                    let retryable = e.is_retryable();
                    let mut first = Some(e);
                    for _ in chunk {
                        results.push(Err(first
                            .take()
                            .unwrap_or_else(|| batch_failed(WHAT, 0, retryable))));
                    }
                }
            }
        }
        results
    }

    fn closed_like(&self, e: &QueueError) -> QueueError {
        match e {
            QueueError::Closed { name } => QueueError::Closed { name: name.clone() },
            _ => self.closed(),
        }
    }

    async fn settle_one(&self, lease: &Lease, op: Op<'_>) -> Result<(), QueueError> {
        self.settle(std::slice::from_ref(lease), &op)
            .await
            .pop()
            .unwrap_or_else(|| Err(unexpected("settle script", "no result")))
    }

    /// Publishes one message with a delay and/or dedup id through the publish script.
    async fn publish_scripted(&self, message: &NewMessage) -> Result<MessageId, QueueError> {
        const WHAT: &str = "publish script";
        let keys = &self.shared.keys;
        let delay = message.delay.filter(|d| !d.is_zero()).map_or(0, millis);
        let (dedup_key, window) = match &message.dedup_id {
            Some(id) => (
                format!("{}{id}", keys.dedup_prefix),
                millis(self.shared.config.dedup_window.as_std()),
            ),
            None => (keys.dedup_prefix.clone(), 0),
        };
        let mut inv = SCRIPTS.publish.prepare_invoke();
        inv.key(keys.stream(message.priority))
            .key(&keys.delayed)
            .key(&keys.due)
            .key(&keys.counters)
            .key(dedup_key)
            .arg(delay)
            .arg(window)
            .arg(message.priority);
        for (name, value) in message.headers.iter() {
            inv.arg(format!("h:{name}")).arg(value);
        }
        inv.arg("d").arg(message.payload.as_ref());
        let reply = reply::array(WHAT, self.invoke(WHAT, &inv).await?)?;
        let id = reply
            .into_iter()
            .nth(1)
            .ok_or_else(|| unexpected(WHAT, "expected {published, id}"))?;
        Ok(MessageId::from_text(reply::string(WHAT, id)?))
    }

    /// Publishes plain messages (no delay, no dedup id) in one pipeline.
    async fn publish_plain(&self, messages: &[&NewMessage]) -> Vec<Result<MessageId, QueueError>> {
        let keys = &self.shared.keys;
        let mut pipe = redis::pipe();
        for m in messages {
            let cmd = pipe.cmd("XADD").arg(keys.stream(m.priority)).arg("*");
            for (name, value) in m.headers.iter() {
                cmd.arg(format!("h:{name}")).arg(value);
            }
            cmd.arg("d").arg(m.payload.as_ref());
        }
        pipe.cmd("HINCRBY")
            .arg(&keys.counters)
            .arg("published")
            .arg(messages.len())
            .ignore();
        let mut conn = self.shared.conn.clone();
        match pipe.query_async::<Vec<String>>(&mut conn).await {
            Ok(ids) if ids.len() == messages.len() => ids
                .into_iter()
                .map(|id| Ok(MessageId::from_text(id)))
                .collect(),
            Ok(ids) => messages
                .iter()
                .map(|_| {
                    Err(unexpected(
                        "XADD",
                        format!("{} ids for {} messages", ids.len(), messages.len()),
                    ))
                })
                .collect(),
            Err(e) => messages
                .iter()
                .map(|_| Err(command("XADD", e.clone())))
                .collect(),
        }
    }
}

#[async_trait]
impl Queue for RedisQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_priorities(self.shared.config.max_priority)
            .with_delays()
            .with_dedup()
    }

    async fn publish(&self, message: NewMessage) -> Result<MessageId, QueueError> {
        self.publish_many(vec![message])
            .await
            .pop()
            .unwrap_or_else(|| Err(unexpected("XADD", "no result")))
    }

    async fn publish_many(&self, messages: Vec<NewMessage>) -> Vec<Result<MessageId, QueueError>> {
        if let Err(e) = self.check_open() {
            return messages.iter().map(|_| Err(self.closed_like(&e))).collect();
        }
        let caps = self.capabilities();
        let mut results: Vec<Option<Result<MessageId, QueueError>>> =
            messages.iter().map(|_| None).collect();
        let mut plain = Vec::new();
        let mut plain_at = Vec::new();
        let mut scripted = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if let Err(e) = caps.check(m) {
                results[i] = Some(Err(e));
            } else if m.dedup_id.is_some() || m.delay.is_some_and(|d| !d.is_zero()) {
                scripted.push(i);
            } else {
                plain.push(m);
                plain_at.push(i);
            }
        }
        let plain_results = async {
            if plain.is_empty() {
                Vec::new()
            } else {
                self.publish_plain(&plain).await
            }
        };
        let scripted_results = futures_util::future::join_all(
            scripted
                .iter()
                .map(|&i| self.publish_scripted(&messages[i])),
        );
        let (plain_results, scripted_results) = tokio::join!(plain_results, scripted_results);
        for (i, r) in plain_at.into_iter().zip(plain_results) {
            results[i] = Some(r);
        }
        for (i, r) in scripted.into_iter().zip(scripted_results) {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(unexpected("XADD", "no result"))))
            .collect()
    }

    async fn lease(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.check_open()?;
        if max == 0 {
            return Err(QueueError::InvalidArgument {
                name: "max",
                reason: "must be at least 1".into(),
            });
        }
        let max = max.min(MAX_BATCH);
        let deadline = Instant::now() + wait;
        loop {
            let mut closed = pin!(self.handle.closed_notify.notified());
            closed.as_mut().enable();
            self.check_open()?;
            let (claim, next_claim) = self.claim_due(Instant::now());
            let (found, next_due) = self.lease_once(max, claim).await?;
            let batch = self.hand_out(max, found);
            if !batch.is_empty() {
                return Ok(batch);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(batch);
            }
            let mut block = (deadline - now).min(next_claim);
            if let Some(due) = next_due {
                block = block.min(due);
            }
            tokio::select! {
                biased;
                () = &mut closed => return Err(self.closed()),
                read = self.read_blocking(max, block) => {
                    let batch = self.hand_out(max, read?);
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                }
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        self.ack_batch(std::slice::from_ref(lease))
            .await
            .pop()
            .unwrap_or_else(|| Err(unexpected("ack script", "no result")))
    }

    async fn ack_many(&self, leases: &[Lease]) -> Vec<Result<(), QueueError>> {
        if leases.is_empty() {
            return Vec::new();
        }
        self.ack_batch(leases).await
    }

    async fn nack(&self, lease: &Lease, delay: Duration) -> Result<(), QueueError> {
        self.check_open()?;
        self.settle_one(lease, Op::Nack(delay)).await
    }

    async fn in_progress(&self, lease: &Lease) -> Result<(), QueueError> {
        self.settle_one(lease, Op::Touch).await
    }

    async fn term(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        self.settle_one(lease, Op::Term(reason)).await
    }

    async fn close(&self) -> Result<(), QueueError> {
        if self.handle.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.handle.closed_notify.notify_waiters();
        // Read-ahead entries are in this consumer's pending list: the close script returns them.
        self.handle
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        // End a blocking read of this handle now, so it cannot take entries after the close
        // script ran (an unblocked XREADGROUP returns nothing, as on a timeout).
        let block_id = *self.lock_block_id();
        if let Some(id) = block_id {
            let mut conn = self.shared.conn.clone();
            redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(|e| command("CLIENT UNBLOCK", e))?;
        }
        let inv = self.invocation(&SCRIPTS.close);
        self.invoke("close script", &inv).await.map(drop)
    }

    fn stats(&self) -> Option<&dyn QueueStats> {
        Some(self)
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }
}

#[async_trait]
impl QueueStats for RedisQueue {
    async fn snapshot(&self) -> Result<StatsSnapshot, QueueError> {
        const WHAT: &str = "stats script";
        self.check_open()?;
        let inv = self.invocation(&SCRIPTS.stats);
        let values = reply::array(WHAT, self.invoke(WHAT, &inv).await?)?;
        let ints = values
            .iter()
            .map(|v| reply::int(WHAT, v))
            .collect::<Result<Vec<_>, _>>()?;
        let [
            backlog,
            delayed,
            in_flight,
            dead,
            oldest,
            published,
            completed,
        ] = ints[..]
        else {
            return Err(unexpected(
                WHAT,
                format!("expected 7 numbers, got {ints:?}"),
            ));
        };
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut s = StatsSnapshot::default();
        s.backlog = count(backlog);
        s.delayed = count(delayed);
        s.in_flight = count(in_flight);
        s.dead_lettered = count(dead);
        s.oldest_ready_age = u64::try_from(oldest).ok().map(Duration::from_millis);
        s.published_total = count(published);
        s.completed_total = count(completed);
        let now = Instant::now();
        let mut rates = self
            .shared
            .rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.rate_in = rates.0.observe(now, s.published_total);
        s.rate_out = rates.1.observe(now, s.completed_total);
        Ok(s)
    }
}

#[async_trait]
impl DeadLetters for RedisQueue {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.shared.conn.clone();
        let entries: Value = redis::cmd("XRANGE")
            .arg(&self.shared.keys.dlq)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(|e| command("XRANGE", e))?;
        reply::array("XRANGE", entries)?
            .into_iter()
            .map(reply::dead_letter)
            .collect()
    }

    async fn replay(&self, id: &MessageId) -> Result<MessageId, QueueError> {
        const WHAT: &str = "replay script";
        let target = id.to_string();
        if target.is_empty() {
            return Err(QueueError::NotFound { id: target });
        }
        let mut inv = self.invocation(&SCRIPTS.replay);
        inv.arg(&target).arg(1);
        let mut parts = reply::array(WHAT, self.invoke(WHAT, &inv).await?)?.into_iter();
        let (Some(moved), Some(new_id)) = (parts.next(), parts.next()) else {
            return Err(unexpected(WHAT, "expected {moved, id}"));
        };
        if reply::int(WHAT, &moved)? == 0 {
            return Err(QueueError::NotFound { id: target });
        }
        Ok(MessageId::from_text(reply::string(WHAT, new_id)?))
    }

    async fn replay_all(&self) -> Result<u64, QueueError> {
        const WHAT: &str = "replay script";
        let mut total = 0;
        loop {
            let mut inv = self.invocation(&SCRIPTS.replay);
            inv.arg("").arg(1000);
            let parts = reply::array(WHAT, self.invoke(WHAT, &inv).await?)?;
            let moved = parts
                .first()
                .map(|v| reply::int(WHAT, v))
                .transpose()?
                .unwrap_or(0);
            total += u64::try_from(moved).unwrap_or(0);
            if moved < 1000 {
                return Ok(total);
            }
        }
    }

    async fn purge(&self) -> Result<u64, QueueError> {
        const WHAT: &str = "purge script";
        let inv = self.invocation(&SCRIPTS.purge);
        let n = reply::int(WHAT, &self.invoke(WHAT, &inv).await?)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_streams_from_the_highest_priority() {
        let keys = Keys::new("q", 2);
        assert_eq!(keys.streams, ["q:p2", "q:p1", "q:p0"]);
        assert_eq!(keys.stream(0), "q:p0");
        assert_eq!(keys.stream(2), "q:p2");
        assert_eq!(keys.stream(9), "q:p2", "clamped");
        assert_eq!(
            keys.script_keys[3..],
            ["q:due", "q:delayed", "q:dlq", "q:counters"]
        );
    }

    #[test]
    fn entries_order_by_the_numbers_in_their_ids() {
        let lease = |h: &str| Lease::new(MessageId::from_seq(1), 0, 1).with_handle(h);
        assert!(entry_order(&lease("9-5")) < entry_order(&lease("10-0")));
        assert!(entry_order(&lease("10-2")) < entry_order(&lease("10-10")));
        assert_eq!(
            entry_order(&Lease::new(MessageId::from_seq(1), 0, 1)),
            (u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn millis_round_up_and_never_zero() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }

    #[test]
    fn consumer_names_are_unique() {
        let a = consumer_name("w");
        let b = consumer_name("w");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("w-{}-", std::process::id())));
    }

    #[test]
    fn group_listing_reads_resp2_and_resp3_shapes() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("workers"),
            bulk("pending"),
            Value::Int(0),
        ])]);
        assert!(group_listed(resp2.clone(), "workers").unwrap());
        assert!(!group_listed(resp2, "other").unwrap());
        let resp3 = Value::Array(vec![Value::Map(vec![(bulk("name"), bulk("w"))])]);
        assert!(group_listed(resp3, "w").unwrap());
        assert!(group_listed(Value::Int(1), "w").is_err());
    }
}
