//! Job events: what a running job broadcasts (progress, each model's result, tokens, the end),
//! the in-process hub that carries them to SSE subscribers, and their wire form.
//!
//! **Resume cursor.** Every persisted event has the id `P.R`: `P` the job's last progress
//! sequence number and `R` the number of model results, both as of that event. A client that
//! reconnects with `Last-Event-ID: P.R` gets the progress events after `P` and the results after
//! the `R`th from the store, then live events — none lost, none repeated. Tokens are live only
//! (they carry no id); each result carries the model's whole answer.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use quorum_store::{JobError, JobState, ModelResult, NewModelResult, ProgressEvent};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events buffered per job for slow subscribers; one that falls further behind re-reads the
/// store.
const CHANNEL_CAPACITY: usize = 1024;

/// A position in a job's event sequence (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The last progress sequence number seen.
    pub progress: i64,
    /// How many results were seen.
    pub results: u32,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.progress, self.results)
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("Last-Event-ID {s:?} is not an event id of this server (P.R)");
        let (p, r) = s.trim().split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            progress: p.parse().map_err(|_| bad())?,
            results: r.parse().map_err(|_| bad())?,
        })
    }
}

/// One model's result as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultView {
    /// 1, 2, 3… in arrival order.
    pub index: u32,
    /// The configured model asked.
    pub model: String,
    /// The provider instance that answered (`none` when every step failed).
    pub provider: String,
    /// The answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The error, when the model (and its fallbacks) failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Token usage, as reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Time to the complete answer, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Which fallback answered and why the steps before it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Value>,
}

impl ResultView {
    /// The view of a result about to be recorded.
    #[must_use]
    pub fn from_new(index: u32, r: &NewModelResult) -> Self {
        ResultView {
            index,
            model: r.model.clone(),
            provider: r.provider.clone(),
            content: r.content.clone(),
            error: r.error.clone(),
            usage: r.usage.clone(),
            latency_ms: r
                .latency
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            fallback: r.fallback.clone(),
        }
    }

    /// The view of a stored result.
    #[must_use]
    pub fn from_stored(index: u32, r: &ModelResult) -> Self {
        ResultView {
            index,
            model: r.model.clone(),
            provider: r.provider.clone(),
            content: r.content.clone(),
            error: r.error.clone(),
            usage: r.usage.clone(),
            latency_ms: r
                .latency
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            fallback: r.fallback.clone(),
        }
    }
}

/// A progress event as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressView {
    /// 1, 2, 3… per job.
    pub seq: i64,
    /// Percent done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// What is happening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per-model state and the estimated time left (`eta_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Value>,
    /// When it happened (RFC 3339).
    pub at: String,
}

impl From<&ProgressEvent> for ProgressView {
    fn from(p: &ProgressEvent) -> Self {
        ProgressView {
            seq: p.seq,
            percent: p.percent,
            message: p.message.clone(),
            models: p.models.clone(),
            at: rfc3339(p.created_at),
        }
    }
}

/// How a job ended, as the final event says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TerminalView {
    /// The job.
    pub job_id: String,
    /// `completed`, `failed`, `cancelled` or `timed_out`.
    pub state: JobState,
    /// Why, when it did not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Results recorded.
    pub results: u32,
    /// The finished job with every result and its last progress, when this process ran it
    /// from the start (lets a waiting request answer without reading the store again).
    #[serde(skip)]
    pub finished: Option<Arc<Finished>>,
}

/// A finished job as its runner last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The job as stored at its end.
    pub job: quorum_store::Job,
    /// Every result, in order.
    pub results: Vec<ResultView>,
    /// The last progress event.
    pub progress: Option<ProgressView>,
}

/// What a job broadcasts.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A persisted progress event.
    Progress(ProgressView),
    /// A model's result (broadcast as it arrives; persisted in the same order).
    Result(ResultView),
    /// A piece of a model's streamed answer (live only).
    Token {
        /// The configured model.
        model: String,
        /// The text.
        text: String,
    },
    /// The job reached a terminal state: always the last event.
    Terminal(TerminalView),
}

/// Carries job events from the job's runner to its subscribers in this process, and keeps the
/// results of running jobs so that a subscriber's snapshot and its live events never leave a gap
/// (a result is broadcast before it is written to the store).
#[derive(Debug, Clone, Default)]
pub struct EventHub {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

#[derive(Debug)]
struct Channel {
    sender: broadcast::Sender<Arc<JobEvent>>,
    results: Vec<ResultView>,
    last_progress: Option<ProgressView>,
    /// The job runs in this process: the channel is kept until `finish` or `release`, however
    /// many listeners come and go.
    running: bool,
}

impl Channel {
    fn new() -> Channel {
        Channel {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            results: Vec::new(),
            last_progress: None,
            running: false,
        }
    }
}

/// A subscription: live events from now on, and the results broadcast before it.
#[derive(Debug)]
pub struct Subscription {
    /// Live events.
    pub events: broadcast::Receiver<Arc<JobEvent>>,
    /// Results broadcast before the subscription, in order.
    pub results: Vec<ResultView>,
}

impl EventHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sender of `job`'s events (its channel created if missing).
    #[must_use]
    pub fn sender(&self, job: &str) -> broadcast::Sender<Arc<JobEvent>> {
        self.lock()
            .entry(job.to_owned())
            .or_insert_with(Channel::new)
            .sender
            .clone()
    }

    /// Marks `job` as running in this process: its channel is kept until [`EventHub::finish`]
    /// or [`EventHub::release`].
    pub fn start(&self, job: &str) {
        self.lock()
            .entry(job.to_owned())
            .or_insert_with(Channel::new)
            .running = true;
    }

    /// Forgets a job that stopped running here without ending (shutdown, lost lease): its
    /// subscribers see the channel close.
    pub fn release(&self, job: &str) {
        self.lock().remove(job);
    }

    /// Subscribes to `job`'s events from now on, with the results already broadcast.
    #[must_use]
    pub fn subscribe(&self, job: &str) -> Subscription {
        let mut map = self.lock();
        let channel = map.entry(job.to_owned()).or_insert_with(Channel::new);
        Subscription {
            events: channel.sender.subscribe(),
            results: channel.results.clone(),
        }
    }

    /// The results broadcast so far for `job` while it runs here (empty otherwise).
    #[must_use]
    pub fn results(&self, job: &str) -> Vec<ResultView> {
        self.lock()
            .get(job)
            .map(|c| c.results.clone())
            .unwrap_or_default()
    }

    /// Sends `event` to `job`'s subscribers, if any; a result is also kept for later
    /// subscribers.
    pub fn publish(&self, job: &str, event: JobEvent) {
        let mut map = self.lock();
        let Some(channel) = map.get_mut(job) else {
            return;
        };
        match &event {
            JobEvent::Result(r) => channel.results.push(r.clone()),
            JobEvent::Progress(p) => channel.last_progress = Some(p.clone()),
            _ => {}
        }
        // No receiver is not an error: nobody is watching.
        let _ = channel.sender.send(Arc::new(event));
    }

    /// Sends the terminal event and forgets the job (its subscribers see the channel close
    /// after the event).
    ///
    /// With `job` (the finished job) and a channel that saw every result, the event carries
    /// the whole [`Finished`] job.
    pub fn finish(
        &self,
        job_id: &str,
        mut terminal: TerminalView,
        job: Option<&quorum_store::Job>,
    ) {
        let channel = self.lock().remove(job_id);
        if let Some(channel) = channel {
            if let Some(job) = job
                && u32::try_from(channel.results.len()).ok() == Some(terminal.results)
            {
                terminal.finished = Some(Arc::new(Finished {
                    job: job.clone(),
                    results: channel.results,
                    progress: channel.last_progress,
                }));
            }
            let _ = channel.sender.send(Arc::new(JobEvent::Terminal(terminal)));
        }
    }

    /// Forgets `job` if it is not running here and nobody listens (a waiter's or subscriber's
    /// channel for a job that has not started, or runs elsewhere).
    pub fn forget_if_idle(&self, job: &str) {
        let mut map = self.lock();
        if map
            .get(job)
            .is_some_and(|c| !c.running && c.sender.receiver_count() == 0)
        {
            map.remove(job);
        }
    }

    /// Jobs with a channel.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no job has a channel.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `2026-11-23T19:16:07.809Z` for a store timestamp.
#[must_use]
pub fn rfc3339(t: quorum_store::Timestamp) -> String {
    let ms = t.as_millis();
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One SSE frame: `id` (if any), `event`, and `data` as one line of JSON.
#[must_use]
pub fn sse_frame(event: &str, id: Option<&str>, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
    let mut out = String::with_capacity(json.len() + event.len() + 32);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(event);
    out.push_str("\ndata: ");
    out.push_str(&json);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// The SSE keep-alive comment.
pub const HEARTBEAT: &[u8] = b": keep-alive\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            progress: 7,
            results: 2,
        };
        assert_eq!(c.to_string(), "7.2");
        assert_eq!("7.2".parse::<Cursor>(), Ok(c));
        assert!("7".parse::<Cursor>().is_err());
        assert!("a.b".parse::<Cursor>().is_err());
        assert!("-1.x".parse::<Cursor>().is_err());
    }

    #[test]
    fn timestamps_render_as_rfc3339() {
        use quorum_store::Timestamp;
        assert_eq!(
            rfc3339(Timestamp::from_millis(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_millis(1_795_461_369_790)),
            "2026-11-23T19:16:09.790Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_millis(951_782_400_001)),
            "2000-02-29T00:00:00.001Z"
        );
    }

    #[test]
    fn frames_are_single_data_lines() {
        let f = sse_frame("result", Some("3.1"), &serde_json::json!({"text": "a\nb"}));
        assert_eq!(
            std::str::from_utf8(&f).unwrap(),
            "id: 3.1\nevent: result\ndata: {\"text\":\"a\\nb\"}\n\n"
        );
    }

    #[tokio::test]
    async fn subscribers_see_events_then_the_terminal_one_then_the_end() {
        let hub = EventHub::default();
        let mut rx = hub.subscribe("j").events;
        hub.publish(
            "j",
            JobEvent::Token {
                model: "m".into(),
                text: "hi".into(),
            },
        );
        hub.finish(
            "j",
            TerminalView {
                job_id: "j".into(),
                state: JobState::Completed,
                error: None,
                results: 0,
                finished: None,
            },
            None,
        );
        assert!(matches!(&*rx.recv().await.unwrap(), JobEvent::Token { .. }));
        assert!(matches!(&*rx.recv().await.unwrap(), JobEvent::Terminal(_)));
        assert!(rx.recv().await.is_err());
        assert!(hub.is_empty());
    }
}
