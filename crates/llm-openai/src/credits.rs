//! A credit monitor for OpenRouter keys: polls [`OpenAiProvider::credits`] on an interval,
//! classifies what is left against configured thresholds, logs when the level changes and
//! hands every status to an optional observer (to export a gauge).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use quorum_config::Duration;
use quorum_llm::{ErrorKind, LlmError, Provider};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::provider::{Credits, OpenAiProvider};

/// The default time between two checks: five minutes.
pub const DEFAULT_CREDIT_INTERVAL: Duration = Duration::from_secs(300);

/// Configuration of a [`CreditMonitor`]. Thresholds are remaining credits in USD
/// (`warn_below`, `alert_below`) and/or fractions of the key's limit (`warn_below_fraction`,
/// `alert_below_fraction`); a level is reached when what is left is below any of its
/// thresholds. Every field is optional.
///
/// ```yaml
/// interval: 5m
/// warn_below: 5.0               # USD left
/// alert_below: 1.0
/// warn_below_fraction: 0.2      # 20 % of the limit left
/// alert_below_fraction: 0.05
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreditMonitorConfig {
    /// Time between two checks; more than zero. Default 5 minutes.
    pub interval: Duration,
    /// Warn when fewer credits than this (USD) are left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn_below: Option<f64>,
    /// Alert when fewer credits than this (USD) are left; at most `warn_below`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_below: Option<f64>,
    /// Warn when less than this fraction (`0..=1`) of the limit is left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn_below_fraction: Option<f64>,
    /// Alert when less than this fraction (`0..=1`) of the limit is left; at most
    /// `warn_below_fraction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_below_fraction: Option<f64>,
}

impl Default for CreditMonitorConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_CREDIT_INTERVAL,
            warn_below: None,
            alert_below: None,
            warn_below_fraction: None,
            alert_below_fraction: None,
        }
    }
}

/// A [`CreditMonitorConfig`] value serde cannot reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreditConfigError {
    /// A field is out of range or inconsistent with another.
    #[error("invalid credit monitor config: {field}: {reason}")]
    Invalid {
        /// The offending field (`alert_below`, `interval`...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl CreditMonitorConfig {
    /// Checks what serde cannot: a non-zero interval, amounts that are finite and not
    /// negative, fractions within `0..=1`, and alert thresholds not above warn thresholds.
    ///
    /// # Errors
    ///
    /// [`CreditConfigError::Invalid`] naming the first offending field.
    pub fn validate(&self) -> Result<(), CreditConfigError> {
        let invalid =
            |field: &'static str, reason: String| Err(CreditConfigError::Invalid { field, reason });
        if self.interval.as_std().is_zero() {
            return invalid("interval", "must be more than 0s".into());
        }
        let amounts = [
            ("warn_below", self.warn_below),
            ("alert_below", self.alert_below),
        ];
        for (field, value) in amounts {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                return invalid(field, format!("{value} is not a finite amount >= 0"));
            }
        }
        let fractions = [
            ("warn_below_fraction", self.warn_below_fraction),
            ("alert_below_fraction", self.alert_below_fraction),
        ];
        for (field, value) in fractions {
            if let Some(value) = value
                && !(0.0..=1.0).contains(&value)
            {
                return invalid(field, format!("{value} is not within 0..=1"));
            }
        }
        if let (Some(warn), Some(alert)) = (self.warn_below, self.alert_below)
            && alert > warn
        {
            return invalid(
                "alert_below",
                format!("{alert} is above warn_below ({warn})"),
            );
        }
        if let (Some(warn), Some(alert)) = (self.warn_below_fraction, self.alert_below_fraction)
            && alert > warn
        {
            return invalid(
                "alert_below_fraction",
                format!("{alert} is above warn_below_fraction ({warn})"),
            );
        }
        Ok(())
    }

    /// The level of `credits` under these thresholds: [`CreditLevel::Unlimited`] when the key
    /// has no limit, [`CreditLevel::Alert`] when nothing is left or less than an alert
    /// threshold, [`CreditLevel::Warn`] when less than a warn threshold, else
    /// [`CreditLevel::Ok`]. Fraction thresholds apply only when the limit is known.
    #[must_use]
    pub fn level(&self, credits: &Credits) -> CreditLevel {
        let Some(remaining) = credits.remaining else {
            return CreditLevel::Unlimited;
        };
        let below = |amount: Option<f64>, fraction: Option<f64>| {
            amount.is_some_and(|amount| remaining < amount)
                || fraction
                    .zip(credits.limit)
                    .is_some_and(|(fraction, limit)| remaining < fraction * limit)
        };
        if remaining <= 0.0 || below(self.alert_below, self.alert_below_fraction) {
            CreditLevel::Alert
        } else if below(self.warn_below, self.warn_below_fraction) {
            CreditLevel::Warn
        } else {
            CreditLevel::Ok
        }
    }
}

/// How worrying a key's credits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreditLevel {
    /// Above every threshold.
    Ok,
    /// Below a warn threshold.
    Warn,
    /// Below an alert threshold, or nothing left.
    Alert,
    /// The key has no credit limit.
    Unlimited,
}

impl CreditLevel {
    /// `ok`, `warn`, `alert` or `unlimited` (for log fields and metric labels).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Alert => "alert",
            Self::Unlimited => "unlimited",
        }
    }
}

impl fmt::Display for CreditLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one successful check.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditStatus {
    /// What the endpoint reported.
    pub credits: Credits,
    /// The level under the configured thresholds.
    pub level: CreditLevel,
    /// The level of the previous successful check; `None` for the first.
    pub previous: Option<CreditLevel>,
    /// When the answer arrived.
    pub checked_at: Instant,
}

impl CreditStatus {
    /// Whether the level differs from the previous check's (always true for the first check):
    /// when the monitor logs.
    #[must_use]
    pub fn changed(&self) -> bool {
        self.previous != Some(self.level)
    }
}

/// A failed check, as the monitor keeps it ([`CreditMonitor::last_error`]); the
/// [`LlmError`] itself is what [`CreditMonitor::check`] returns and the error observer gets.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditCheckError {
    /// The error's class ([`ErrorKind::Auth`] for a bad key, [`ErrorKind::Transport`]...).
    pub kind: ErrorKind,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The error's message.
    pub message: String,
    /// How many checks in a row have failed, this one included.
    pub consecutive: u64,
    /// When the check failed.
    pub at: Instant,
}

/// Where credits come from: the provider, or a script in unit tests.
#[async_trait]
pub(crate) trait CreditSource: Send + Sync + fmt::Debug {
    fn name(&self) -> &str;
    async fn credits(&self) -> Result<Credits, LlmError>;
}

#[async_trait]
impl CreditSource for OpenAiProvider {
    fn name(&self) -> &str {
        Provider::name(self)
    }

    async fn credits(&self) -> Result<Credits, LlmError> {
        OpenAiProvider::credits(self).await
    }
}

type StatusObserver = Arc<dyn Fn(&CreditStatus) + Send + Sync>;
type ErrorObserver = Arc<dyn Fn(&LlmError) + Send + Sync>;

#[derive(Debug, Default)]
struct State {
    latest: Option<CreditStatus>,
    last_error: Option<CreditCheckError>,
    consecutive_failures: u64,
    checks: u64,
}

/// Watches an OpenRouter key's credits (`GET {base_url}/auth/key`).
///
/// [`check`](Self::check) asks once; [`spawn`](Self::spawn) asks every
/// [`interval`](CreditMonitorConfig::interval) on an owned task. A level change is logged with
/// `tracing` (`warn!` for [`CreditLevel::Warn`], `error!` for [`CreditLevel::Alert`], `info!`
/// for a recovery, `debug!` otherwise); an unchanged level is not logged again. A failed check
/// (401, network...) is logged (`warn!` the first time in a row, then `debug!`), kept as
/// [`last_error`](Self::last_error), and leaves [`latest`](Self::latest) as it was.
///
/// Clones share their state. Set the observers before cloning or spawning.
///
/// ```
/// use quorum_llm_openai::{
///     CreditLevel, CreditMonitor, CreditMonitorConfig, OpenAiConfig, OpenAiProvider,
/// };
/// use quorum_mock_llm::{CreditsConfig, MockConfig, MockServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A mock OpenRouter key with 10 USD, 9.5 of them used.
/// let server = MockServer::start(MockConfig {
///     credits: CreditsConfig::limited(10.0, 9.5),
///     ..MockConfig::ephemeral()
/// })
/// .await?;
/// let provider = OpenAiProvider::new(
///     "openrouter",
///     &OpenAiConfig::new(&format!("{}/v1", server.base_url()))?,
/// )?;
///
/// let config: CreditMonitorConfig = serde_json::from_value(serde_json::json!({
///     "interval": "1m", "warn_below": 2.0, "alert_below": 1.0,
/// }))?;
/// let monitor = CreditMonitor::new(provider, config)?.on_status(|status| {
///     // e.g. set a gauge to `status.credits.remaining`
///     let _ = status.credits.remaining;
/// });
/// let status = monitor.check().await?;
/// assert_eq!(status.level, CreditLevel::Alert);
/// assert_eq!(status.credits.remaining, Some(0.5));
///
/// // In a service: check every interval on an owned task.
/// let handle = monitor.spawn();
/// assert!(handle.monitor().latest().is_some());
/// handle.shutdown().await;
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CreditMonitor {
    source: Arc<dyn CreditSource>,
    config: CreditMonitorConfig,
    on_status: Option<StatusObserver>,
    on_error: Option<ErrorObserver>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for CreditMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreditMonitor")
            .field("provider", &self.source.name())
            .field("config", &self.config)
            .field("on_status", &self.on_status.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish_non_exhaustive()
    }
}

impl CreditMonitor {
    /// A monitor of `provider`'s key (the provider's base URL must be OpenRouter's, e.g.
    /// `https://openrouter.ai/api/v1`).
    ///
    /// # Errors
    ///
    /// [`CreditConfigError`] when `config` does not [validate](CreditMonitorConfig::validate).
    pub fn new(
        provider: OpenAiProvider,
        config: CreditMonitorConfig,
    ) -> Result<Self, CreditConfigError> {
        Self::with_source(Arc::new(provider), config)
    }

    pub(crate) fn with_source(
        source: Arc<dyn CreditSource>,
        config: CreditMonitorConfig,
    ) -> Result<Self, CreditConfigError> {
        config.validate()?;
        Ok(Self {
            source,
            config,
            on_status: None,
            on_error: None,
            state: Arc::default(),
        })
    }

    /// Calls `observer` with every successful check's status (e.g. to set a gauge of the
    /// remaining credits and one of the level). It runs on the checking task: keep it quick.
    #[must_use]
    pub fn on_status(mut self, observer: impl Fn(&CreditStatus) + Send + Sync + 'static) -> Self {
        self.on_status = Some(Arc::new(observer));
        self
    }

    /// Calls `observer` with every failed check's error (e.g. to count failures).
    #[must_use]
    pub fn on_error(mut self, observer: impl Fn(&LlmError) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(observer));
        self
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &CreditMonitorConfig {
        &self.config
    }

    /// The status of the last successful check, `None` before the first one.
    #[must_use]
    pub fn latest(&self) -> Option<CreditStatus> {
        self.lock().latest.clone()
    }

    /// The failure of the last check when it failed; `None` once a check succeeds again.
    #[must_use]
    pub fn last_error(&self) -> Option<CreditCheckError> {
        self.lock().last_error.clone()
    }

    /// How many checks in a row have failed (0 after a success).
    #[must_use]
    pub fn consecutive_failures(&self) -> u64 {
        self.lock().consecutive_failures
    }

    /// How many checks have completed, successful or not.
    #[must_use]
    pub fn checks(&self) -> u64 {
        self.lock().checks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for the key's credits once, records the status (or the error), logs a level change
    /// and calls the observers.
    ///
    /// # Errors
    ///
    /// The [`LlmError`] of the request ([`LlmError::Auth`] for a bad key,
    /// [`LlmError::InvalidResponse`] when the endpoint is not OpenRouter's...); it is also
    /// recorded as [`last_error`](Self::last_error).
    pub async fn check(&self) -> Result<CreditStatus, LlmError> {
        match self.source.credits().await {
            Ok(credits) => {
                let level = self.config.level(&credits);
                let status = {
                    let mut state = self.lock();
                    let status = CreditStatus {
                        credits,
                        level,
                        previous: state.latest.as_ref().map(|s| s.level),
                        checked_at: Instant::now(),
                    };
                    state.latest = Some(status.clone());
                    state.last_error = None;
                    state.consecutive_failures = 0;
                    state.checks += 1;
                    status
                };
                if status.changed() {
                    self.log_change(&status);
                }
                if let Some(observer) = &self.on_status {
                    observer(&status);
                }
                Ok(status)
            }
            Err(error) => {
                let failures = {
                    let mut state = self.lock();
                    state.consecutive_failures += 1;
                    state.checks += 1;
                    state.last_error = Some(CreditCheckError {
                        kind: error.kind(),
                        status: error.status(),
                        message: error.to_string(),
                        consecutive: state.consecutive_failures,
                        at: Instant::now(),
                    });
                    state.consecutive_failures
                };
                let provider = self.source.name();
                if failures == 1 {
                    tracing::warn!(provider, %error, "credit check failed");
                } else {
                    tracing::debug!(provider, %error, failures, "credit check failed again");
                }
                if let Some(observer) = &self.on_error {
                    observer(&error);
                }
                Err(error)
            }
        }
    }

    fn log_change(&self, status: &CreditStatus) {
        let provider = self.source.name();
        let level = status.level.as_str();
        let previous = status.previous.map_or("none", CreditLevel::as_str);
        let remaining = status.credits.remaining;
        let limit = status.credits.limit;
        let usage = status.credits.usage;
        match status.level {
            CreditLevel::Alert => tracing::error!(
                provider,
                level,
                previous,
                remaining,
                limit,
                usage,
                "credits below the alert threshold"
            ),
            CreditLevel::Warn => tracing::warn!(
                provider,
                level,
                previous,
                remaining,
                limit,
                usage,
                "credits below the warn threshold"
            ),
            CreditLevel::Ok | CreditLevel::Unlimited
                if matches!(
                    status.previous,
                    Some(CreditLevel::Warn | CreditLevel::Alert)
                ) =>
            {
                tracing::info!(
                    provider,
                    level,
                    previous,
                    remaining,
                    limit,
                    usage,
                    "credits recovered"
                );
            }
            CreditLevel::Ok | CreditLevel::Unlimited => tracing::debug!(
                provider,
                level,
                previous,
                remaining,
                limit,
                usage,
                "credit level"
            ),
        }
    }

    /// Checks now and then every [`interval`](CreditMonitorConfig::interval) on a new tokio
    /// task, until the handle is shut down or dropped. Failed checks do not stop the loop; a
    /// check slower than the interval delays the next one.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as [`tokio::spawn`] does).
    #[must_use = "dropping the handle stops the monitor"]
    pub fn spawn(self) -> CreditMonitorHandle {
        let monitor = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.config.interval.as_std());
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                // Logged, kept and observed by `check`; the loop goes on.
                let _outcome = self.check().await;
            }
        });
        CreditMonitorHandle {
            monitor,
            task: Some(task),
        }
    }
}

/// The running monitor task of [`CreditMonitor::spawn`]. [`shutdown`](Self::shutdown) stops it
/// and waits for it; dropping the handle stops it too.
#[derive(Debug)]
pub struct CreditMonitorHandle {
    monitor: CreditMonitor,
    task: Option<JoinHandle<()>>,
}

impl CreditMonitorHandle {
    /// The monitor the task runs (its [`latest`](CreditMonitor::latest) status and
    /// [`last_error`](CreditMonitor::last_error)).
    #[must_use]
    pub fn monitor(&self) -> &CreditMonitor {
        &self.monitor
    }

    /// Stops the task (a check in flight is abandoned, closing its connection) and waits until
    /// it has ended.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if let Err(error) = task.await
                && error.is_panic()
            {
                tracing::error!(provider = self.monitor.source.name(), %error, "credit monitor task panicked");
            }
        }
    }
}

impl Drop for CreditMonitorHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn credits(limit: Option<f64>, usage: f64) -> Credits {
        Credits {
            limit,
            usage,
            remaining: limit.map(|l| (l - usage).max(0.0)),
            is_free_tier: Some(false),
            label: Some("test".into()),
        }
    }

    fn config(warn: Option<f64>, alert: Option<f64>) -> CreditMonitorConfig {
        CreditMonitorConfig {
            warn_below: warn,
            alert_below: alert,
            ..CreditMonitorConfig::default()
        }
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_fields() {
        let cfg: CreditMonitorConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(cfg, CreditMonitorConfig::default());
        assert_eq!(cfg.interval, Duration::from_secs(300));
        let cfg: CreditMonitorConfig = serde_json::from_value(serde_json::json!({
            "interval": "30s", "warn_below": 5, "alert_below": 1.5,
            "warn_below_fraction": 0.2, "alert_below_fraction": 0.05
        }))
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.interval, Duration::from_secs(30));
        assert_eq!((cfg.warn_below, cfg.alert_below), (Some(5.0), Some(1.5)));
        assert_eq!(cfg.alert_below_fraction, Some(0.05));
        let err = serde_json::from_value::<CreditMonitorConfig>(serde_json::json!({
            "warn_bellow": 5
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `warn_bellow`"),
            "{err}"
        );
        let err = serde_json::from_value::<CreditMonitorConfig>(serde_json::json!({
            "interval": "soon"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        // Round trip (what `config show` prints).
        let back: CreditMonitorConfig =
            serde_json::from_value(serde_json::to_value(cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn validation_names_the_field() {
        let cases: [(CreditMonitorConfig, &str); 8] = [
            (
                CreditMonitorConfig {
                    interval: Duration::from_secs(0),
                    ..CreditMonitorConfig::default()
                },
                "interval: must be more than 0s",
            ),
            (
                config(Some(-1.0), None),
                "warn_below: -1 is not a finite amount >= 0",
            ),
            (
                config(None, Some(f64::NAN)),
                "alert_below: NaN is not a finite amount >= 0",
            ),
            (
                config(Some(f64::INFINITY), None),
                "warn_below: inf is not a finite amount >= 0",
            ),
            (
                config(Some(1.0), Some(2.0)),
                "alert_below: 2 is above warn_below (1)",
            ),
            (
                CreditMonitorConfig {
                    warn_below_fraction: Some(1.5),
                    ..CreditMonitorConfig::default()
                },
                "warn_below_fraction: 1.5 is not within 0..=1",
            ),
            (
                CreditMonitorConfig {
                    alert_below_fraction: Some(-0.1),
                    ..CreditMonitorConfig::default()
                },
                "alert_below_fraction: -0.1 is not within 0..=1",
            ),
            (
                CreditMonitorConfig {
                    warn_below_fraction: Some(0.1),
                    alert_below_fraction: Some(0.2),
                    ..CreditMonitorConfig::default()
                },
                "alert_below_fraction: 0.2 is above warn_below_fraction (0.1)",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid credit monitor config: {want}")
            );
        }
        // Equal thresholds, zero thresholds and no thresholds at all are fine.
        config(Some(1.0), Some(1.0)).validate().unwrap();
        config(Some(0.0), Some(0.0)).validate().unwrap();
        CreditMonitorConfig::default().validate().unwrap();
    }

    #[test]
    fn levels_follow_amount_thresholds() {
        let cfg = config(Some(2.0), Some(1.0));
        let level = |limit, usage| cfg.level(&credits(limit, usage));
        assert_eq!(level(None, 1e9), CreditLevel::Unlimited);
        assert_eq!(level(Some(10.0), 9.5), CreditLevel::Alert);
        assert_eq!(
            level(Some(10.0), 9.0),
            CreditLevel::Warn,
            "1 left is not below 1"
        );
        assert_eq!(level(Some(10.0), 8.5), CreditLevel::Warn);
        assert_eq!(
            level(Some(10.0), 8.0),
            CreditLevel::Ok,
            "2 left is not below 2"
        );
        assert_eq!(level(Some(10.0), 1.0), CreditLevel::Ok);
        // Nothing left is an alert even without thresholds.
        assert_eq!(level(Some(10.0), 12.0), CreditLevel::Alert);
        let none = CreditMonitorConfig::default();
        assert_eq!(none.level(&credits(Some(1.0), 1.0)), CreditLevel::Alert);
        assert_eq!(none.level(&credits(Some(1.0), 0.999)), CreditLevel::Ok);
        assert_eq!(none.level(&credits(None, 5.0)), CreditLevel::Unlimited);
    }

    #[test]
    fn levels_follow_fraction_thresholds_when_the_limit_is_known() {
        let cfg = CreditMonitorConfig {
            warn_below_fraction: Some(0.25),
            alert_below_fraction: Some(0.1),
            ..CreditMonitorConfig::default()
        };
        let level = |limit, usage| cfg.level(&credits(limit, usage));
        assert_eq!(level(Some(100.0), 95.0), CreditLevel::Alert);
        assert_eq!(level(Some(100.0), 80.0), CreditLevel::Warn);
        assert_eq!(level(Some(100.0), 75.0), CreditLevel::Ok);
        // A remainder without a limit: fractions cannot apply.
        let mut odd = credits(None, 0.0);
        odd.remaining = Some(0.5);
        assert_eq!(cfg.level(&odd), CreditLevel::Ok);
        // Either kind of threshold reaches the level.
        let mixed = CreditMonitorConfig {
            warn_below: Some(1.0),
            alert_below_fraction: Some(0.5),
            ..CreditMonitorConfig::default()
        };
        assert_eq!(mixed.level(&credits(Some(10.0), 6.0)), CreditLevel::Alert);
        assert_eq!(mixed.level(&credits(Some(100.0), 99.5)), CreditLevel::Alert);
        assert_eq!(mixed.level(&credits(Some(100.0), 10.0)), CreditLevel::Ok);
        assert_eq!(CreditLevel::Unlimited.to_string(), "unlimited");
    }

    /// A scripted credit source: answers `credits` or fails while `failing`.
    #[derive(Debug)]
    struct Script {
        answer: Mutex<Option<Credits>>,
        calls: AtomicU64,
    }

    impl Script {
        fn new(answer: Option<Credits>) -> Arc<Self> {
            Arc::new(Self {
                answer: Mutex::new(answer),
                calls: AtomicU64::new(0),
            })
        }

        fn set(&self, answer: Option<Credits>) {
            *self.answer.lock().unwrap() = answer;
        }
    }

    #[async_trait]
    impl CreditSource for Script {
        fn name(&self) -> &str {
            "script"
        }

        async fn credits(&self) -> Result<Credits, LlmError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.answer.lock().unwrap().clone().ok_or_else(|| {
                LlmError::transport(
                    "connection refused",
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                )
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn check_records_changes_errors_and_calls_observers() {
        let script = Script::new(Some(credits(Some(10.0), 9.5)));
        let statuses = Arc::new(Mutex::new(Vec::<(CreditLevel, bool)>::new()));
        let errors = Arc::new(AtomicU64::new(0));
        let (seen, failed) = (Arc::clone(&statuses), Arc::clone(&errors));
        let monitor = CreditMonitor::with_source(script.clone(), config(Some(2.0), Some(1.0)))
            .unwrap()
            .on_status(move |s| seen.lock().unwrap().push((s.level, s.changed())))
            .on_error(move |_| {
                failed.fetch_add(1, Ordering::Relaxed);
            });
        assert!(monitor.latest().is_none() && monitor.last_error().is_none());

        let first = monitor.check().await.unwrap();
        assert_eq!((first.level, first.previous), (CreditLevel::Alert, None));
        let started = first.checked_at;
        tokio::time::advance(std::time::Duration::from_secs(7)).await;
        let again = monitor.check().await.unwrap();
        assert_eq!(again.previous, Some(CreditLevel::Alert));
        assert!(!again.changed());
        assert_eq!(
            again.checked_at - started,
            std::time::Duration::from_secs(7)
        );

        // A failure keeps the last status, records the error and counts in a row.
        script.set(None);
        let err = monitor.check().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport);
        monitor.check().await.unwrap_err();
        let kept = monitor.last_error().unwrap();
        assert_eq!(
            (kept.kind, kept.status, kept.consecutive),
            (ErrorKind::Transport, None, 2)
        );
        assert!(
            kept.message.contains("connection refused"),
            "{}",
            kept.message
        );
        assert_eq!(monitor.consecutive_failures(), 2);
        assert_eq!(monitor.latest().unwrap(), again);

        // Recovery clears the error; the level change is compared with the last success.
        script.set(Some(credits(Some(10.0), 8.5)));
        let warn = monitor.check().await.unwrap();
        assert_eq!(
            (warn.level, warn.previous),
            (CreditLevel::Warn, Some(CreditLevel::Alert))
        );
        assert!(monitor.last_error().is_none());
        assert_eq!(monitor.consecutive_failures(), 0);
        assert_eq!(monitor.checks(), 5);
        assert_eq!(
            *statuses.lock().unwrap(),
            [
                (CreditLevel::Alert, true),
                (CreditLevel::Alert, false),
                (CreditLevel::Warn, true)
            ]
        );
        assert_eq!(errors.load(Ordering::Relaxed), 2);
    }

    /// Lets the spawned task run until it has made `n` calls (bounded, no clock movement).
    async fn settle(script: &Script, n: u64) {
        for _ in 0..100 {
            if script.calls.load(Ordering::Relaxed) >= n {
                break;
            }
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn spawned_monitor_checks_every_interval_through_failures() {
        let script = Script::new(Some(credits(None, 0.0)));
        let monitor = CreditMonitor::with_source(script.clone(), config(Some(2.0), None)).unwrap();
        let handle = monitor.spawn();
        settle(&script, 1).await;
        assert_eq!(script.calls.load(Ordering::Relaxed), 1, "checks at once");
        let latest = handle.monitor().latest().unwrap();
        assert_eq!(latest.level, CreditLevel::Unlimited);

        tokio::time::advance(std::time::Duration::from_secs(299)).await;
        settle(&script, 2).await;
        assert_eq!(
            script.calls.load(Ordering::Relaxed),
            1,
            "not before the interval"
        );
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        settle(&script, 2).await;
        assert_eq!(script.calls.load(Ordering::Relaxed), 2);

        script.set(None);
        for n in 3..=4 {
            tokio::time::advance(std::time::Duration::from_secs(300)).await;
            settle(&script, n).await;
            assert_eq!(script.calls.load(Ordering::Relaxed), n);
        }
        assert_eq!(handle.monitor().consecutive_failures(), 2);
        script.set(Some(credits(Some(10.0), 9.0)));
        tokio::time::advance(std::time::Duration::from_secs(300)).await;
        settle(&script, 5).await;
        let latest = handle.monitor().latest().unwrap();
        assert_eq!(latest.level, CreditLevel::Warn);
        assert!(handle.monitor().last_error().is_none());

        handle.shutdown().await;
        tokio::time::advance(std::time::Duration::from_secs(3000)).await;
        settle(&script, 6).await;
        assert_eq!(
            script.calls.load(Ordering::Relaxed),
            5,
            "stopped by shutdown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_the_monitor() {
        let script = Script::new(Some(credits(None, 0.0)));
        let handle = CreditMonitor::with_source(script.clone(), CreditMonitorConfig::default())
            .unwrap()
            .spawn();
        settle(&script, 1).await;
        assert_eq!(script.calls.load(Ordering::Relaxed), 1);
        drop(handle);
        tokio::time::advance(std::time::Duration::from_secs(3000)).await;
        settle(&script, 2).await;
        assert_eq!(script.calls.load(Ordering::Relaxed), 1, "stopped by drop");
    }
}
