//! The mock's configuration: what [`MockServer::start`](crate::MockServer::start) takes, what the
//! YAML file holds and what `POST /admin/config` replaces at run time.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use quorum_config::{Duration, Secret};
use serde::de::value::MapAccessDeserializer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::MockError;

/// The models served when the configuration lists none.
pub const DEFAULT_MODELS: [&str; 6] = [
    "mock-small",
    "mock-large",
    "gemma3:1b",
    "llama3.2:1b",
    "deepseek-r1:1.5b",
    "mock-gpt",
];

/// The largest `chunks` value accepted (one answer is rendered in memory).
const MAX_CHUNKS: u32 = 100_000;
/// The largest `embedding_dim` value accepted.
const MAX_EMBEDDING_DIM: u32 = 65_536;

/// The whole configuration of the mock server. Every field has a default, so an empty YAML
/// document (or [`MockConfig::default`]) gives a mock on `127.0.0.1:9100` serving
/// [`DEFAULT_MODELS`] with no latency and no random faults.
///
/// ```yaml
/// bind: 127.0.0.1:9100
/// models:
///   - mock-small                       # a plain name, or a map:
///   - {name: tiny, context_window: 100, latency: {fixed: 5ms}}
/// latency: {uniform: [20ms, 80ms]}      # or {fixed: 50ms} or {normal: {mean: 50ms, stddev: 10ms}}
/// time_to_first_token: 0s
/// chunk_delay: 0s
/// chunks: 16
/// faults:
///   - {kind: 429, rate: 0.1}           # 10 % of requests
///   - {kind: 503, every: 10}           # every 10th request
///   - {kind: 500, window: {from: 10s, to: 20s}}   # all requests in that window
/// seed: 42
/// require_api_key: ${MOCK_KEY}
/// credits: {limit: 10.0, usage: 2.5}   # GET /v1/auth/key; limit null (the default) = unlimited
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Listening address; port 0 picks a free port ([`MockServer::addr`](crate::MockServer::addr)
    /// tells which). Ignored by `POST /admin/config`.
    pub bind: SocketAddr,
    /// The models that exist; any other model name (except the `fault-*` names) gets a 404.
    pub models: Vec<ModelConfig>,
    /// Delay before the response headers of every inference request (errors included).
    pub latency: Latency,
    /// Extra delay before the first content chunk of a stream (added to the whole delay of a
    /// non-streamed answer).
    pub time_to_first_token: Duration,
    /// Delay before each content chunk after the first (a non-streamed answer waits the sum).
    pub chunk_delay: Duration,
    /// How many content chunks (= completion tokens) an answer has, unless the request's
    /// `max_tokens` is lower.
    pub chunks: u32,
    /// How long `fault-slow` (and a `slow` fault rule) waits before answering.
    pub slow_delay: Duration,
    /// Length of the vectors the embedding endpoints return.
    pub embedding_dim: u32,
    /// Random or scheduled faults applied to requests that would otherwise succeed; the first
    /// rule that fires wins.
    pub faults: Vec<FaultRule>,
    /// Seed of the random number generator behind `fault-flaky-N`, fault rates and latency
    /// distributions.
    pub seed: u64,
    /// When set, OpenAI/Ollama requests need `Authorization: Bearer KEY` and Anthropic requests
    /// `x-api-key: KEY`.
    pub require_api_key: Option<Secret>,
    /// How long shutdown waits for in-flight requests before closing their connections.
    pub shutdown_grace: Duration,
    /// The key's credits, answered OpenRouter-style at `GET /v1/auth/key`; change them at run
    /// time (`POST /admin/config`) to drive a credit monitor.
    pub credits: CreditsConfig,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9100)),
            models: DEFAULT_MODELS
                .iter()
                .map(|name| ModelConfig::new(*name))
                .collect(),
            latency: Latency::default(),
            time_to_first_token: Duration::default(),
            chunk_delay: Duration::default(),
            chunks: 16,
            slow_delay: Duration::from_secs(30),
            embedding_dim: 16,
            faults: Vec::new(),
            seed: 0x5EED,
            require_api_key: None,
            shutdown_grace: Duration::from_secs(5),
            credits: CreditsConfig::default(),
        }
    }
}

impl MockConfig {
    /// The default configuration, listening on `127.0.0.1:0` (a free port): what tests want.
    #[must_use]
    pub fn ephemeral() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }

    /// Checks the values serde cannot: ranges, unique model names, one trigger per fault rule.
    ///
    /// # Errors
    ///
    /// [`MockError::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<(), MockError> {
        let invalid =
            |field: String, reason: String| Err(MockError::InvalidConfig { field, reason });
        if self.chunks == 0 || self.chunks > MAX_CHUNKS {
            return invalid(
                "chunks".into(),
                format!("{} is not within 1..={MAX_CHUNKS}", self.chunks),
            );
        }
        if self.embedding_dim == 0 || self.embedding_dim > MAX_EMBEDDING_DIM {
            return invalid(
                "embedding_dim".into(),
                format!(
                    "{} is not within 1..={MAX_EMBEDDING_DIM}",
                    self.embedding_dim
                ),
            );
        }
        self.latency.validate("latency")?;
        for (i, model) in self.models.iter().enumerate() {
            if model.name.trim().is_empty() {
                return invalid(format!("models[{i}].name"), "must not be empty".into());
            }
            if self.models[..i].iter().any(|m| m.name == model.name) {
                return invalid(
                    format!("models[{i}].name"),
                    format!("duplicate model \"{}\"", model.name),
                );
            }
            if let Some(latency) = &model.latency {
                latency.validate(&format!("models[{i}].latency"))?;
            }
        }
        for (i, rule) in self.faults.iter().enumerate() {
            rule.validate(i)?;
        }
        self.credits.validate()
    }
}

/// The credit status of the key, as OpenRouter's `GET /api/v1/auth/key` reports it (the mock
/// serves it at `GET /v1/auth/key`). The default is an unlimited key with nothing used.
///
/// ```yaml
/// credits: {limit: 10.0, usage: 9.5}   # 0.5 USD left
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreditsConfig {
    /// The key's credit limit in USD; `None` (`null`) means unlimited.
    pub limit: Option<f64>,
    /// Credits used so far in USD.
    pub usage: f64,
}

impl CreditsConfig {
    /// A key limited to `limit` USD with `usage` USD used.
    #[must_use]
    pub fn limited(limit: f64, usage: f64) -> Self {
        Self {
            limit: Some(limit),
            usage,
        }
    }

    /// What is left: `limit - usage`, never below zero; `None` when unlimited.
    #[must_use]
    pub fn remaining(&self) -> Option<f64> {
        self.limit.map(|limit| (limit - self.usage).max(0.0))
    }

    fn validate(&self) -> Result<(), MockError> {
        let check = |field: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(MockError::InvalidConfig {
                    field: field.to_owned(),
                    reason: format!("{value} is not a finite amount >= 0"),
                })
            }
        };
        if let Some(limit) = self.limit {
            check("credits.limit", limit)?;
        }
        check("credits.usage", self.usage)
    }
}

/// One served model; in YAML either a plain name or a map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// The name clients ask for (`gemma3:1b`, `mock-gpt`...).
    pub name: String,
    /// Prompt size in tokens (≈ characters / 4) above which requests fail with the
    /// context-length error.
    pub context_window: Option<u64>,
    /// Replaces the global [`MockConfig::latency`] for this model.
    pub latency: Option<Latency>,
}

impl ModelConfig {
    /// A model with no context limit and the global latency.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            context_window: None,
            latency: None,
        }
    }
}

/// The map form of [`ModelConfig`], so that a model can also be written as a plain name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFields {
    name: String,
    #[serde(default)]
    context_window: Option<u64>,
    #[serde(default)]
    latency: Option<Latency>,
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ModelConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a model name or a map with name, context_window and latency")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ModelConfig, E> {
                Ok(ModelConfig::new(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ModelConfig, A::Error> {
                let fields = ModelFields::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ModelConfig {
                    name: fields.name,
                    context_window: fields.context_window,
                    latency: fields.latency,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A latency distribution: `{fixed: 50ms}`, `{uniform: [20ms, 80ms]}` or
/// `{normal: {mean: 50ms, stddev: 10ms}}` (clamped at zero).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Always the same delay.
    Fixed(Duration),
    /// Uniformly distributed between the two bounds (inclusive).
    Uniform(Duration, Duration),
    /// Normally distributed, never below zero.
    Normal {
        /// The mean.
        mean: Duration,
        /// The standard deviation.
        stddev: Duration,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Self::Fixed(Duration::default())
    }
}

impl Latency {
    fn validate(&self, field: &str) -> Result<(), MockError> {
        if let Self::Uniform(low, high) = self
            && low > high
        {
            return Err(MockError::InvalidConfig {
                field: field.to_owned(),
                reason: format!("uniform lower bound ({low}) > upper bound ({high})"),
            });
        }
        Ok(())
    }

    /// Draws one delay; `unit` and `unit2` are independent uniform draws in `[0, 1)`.
    pub(crate) fn sample(&self, unit: f64, unit2: f64) -> std::time::Duration {
        match *self {
            Self::Fixed(d) => d.as_std(),
            Self::Uniform(low, high) => {
                let (low, high) = (low.as_std(), high.as_std());
                low + (high - low).mul_f64(unit)
            }
            Self::Normal { mean, stddev } => {
                // Box-Muller; `1 - unit` is in (0, 1], so the logarithm is finite.
                let z = (-2.0 * (1.0 - unit).ln()).sqrt() * (std::f64::consts::TAU * unit2).cos();
                let secs = mean.as_std().as_secs_f64() + z * stddev.as_std().as_secs_f64();
                std::time::Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default()
            }
        }
    }
}

/// A fault the mock can inject, as written after `fault-` in a model name or as `kind:` in a
/// [`FaultRule`]: `429`, `quota`, `context`, `midstream`, `truncate`, `reset`, `slow` or any
/// other HTTP status from 400 to 599 (`500`, `503`, `529`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// 429 with `retry-after: 1` and `retry-after-ms: 1000`.
    RateLimit,
    /// 429 "insufficient quota" (not retryable; no retry-after headers).
    Quota,
    /// 400 context length exceeded.
    Context,
    /// 200, two chunks, then an in-stream error (500 when not streaming).
    Midstream,
    /// 200, two chunks, then the end of the body without the end marker (non-streaming: a
    /// body shorter than its `content-length`, then the connection closes).
    Truncate,
    /// The connection is reset before any response.
    Reset,
    /// Waits [`MockConfig::slow_delay`] before answering normally.
    Slow,
    /// Any other HTTP error status (400–599) with the dialect's error body.
    Status(u16),
}

/// A string that is not a [`FaultKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault kind \"{0}\": expected an HTTP status 400-599, quota, context, midstream, truncate, reset or slow"
)]
pub struct FaultKindError(String);

impl FromStr for FaultKind {
    type Err = FaultKindError;

    fn from_str(s: &str) -> Result<Self, FaultKindError> {
        let kind = match s {
            "429" | "rate_limit" => Self::RateLimit,
            "quota" => Self::Quota,
            "context" => Self::Context,
            "midstream" => Self::Midstream,
            "truncate" => Self::Truncate,
            "reset" => Self::Reset,
            "slow" => Self::Slow,
            other => match other.parse::<u16>() {
                Ok(status) if (400..=599).contains(&status) && other.len() == 3 => {
                    Self::Status(status)
                }
                _ => return Err(FaultKindError(s.to_owned())),
            },
        };
        Ok(kind)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateLimit => f.write_str("429"),
            Self::Quota => f.write_str("quota"),
            Self::Context => f.write_str("context"),
            Self::Midstream => f.write_str("midstream"),
            Self::Truncate => f.write_str("truncate"),
            Self::Reset => f.write_str("reset"),
            Self::Slow => f.write_str("slow"),
            Self::Status(status) => write!(f, "{status}"),
        }
    }
}

impl Serialize for FaultKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FaultKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FaultKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a fault kind such as 429, 503, quota, midstream or reset")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FaultKind, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FaultKind, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FaultKind, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A fault injected into requests that would otherwise succeed. Exactly one trigger is set:
/// `rate` (probability per request), `every` (every Nth request the rule sees) or `window`
/// (every request in a time window after the configuration was applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// What happens when the rule fires.
    pub kind: FaultKind,
    /// Probability in `0..=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Fires on request number N, 2N, 3N... (counted per rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Fires for every request in this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<FaultWindow>,
}

impl FaultRule {
    /// A rule firing with probability `rate`.
    #[must_use]
    pub fn rate(kind: FaultKind, rate: f64) -> Self {
        Self {
            kind,
            rate: Some(rate),
            every: None,
            window: None,
        }
    }

    /// A rule firing on every `n`th request.
    #[must_use]
    pub fn every(kind: FaultKind, n: u64) -> Self {
        Self {
            kind,
            rate: None,
            every: Some(n),
            window: None,
        }
    }

    fn validate(&self, i: usize) -> Result<(), MockError> {
        let invalid = |field: &str, reason: String| {
            Err(MockError::InvalidConfig {
                field: format!("faults[{i}]{field}"),
                reason,
            })
        };
        let triggers = [
            self.rate.is_some(),
            self.every.is_some(),
            self.window.is_some(),
        ];
        if triggers.iter().filter(|set| **set).count() != 1 {
            return invalid("", "set exactly one of rate, every, window".into());
        }
        if let Some(rate) = self.rate
            && !(0.0..=1.0).contains(&rate)
        {
            return invalid(".rate", format!("{rate} is not within 0..=1"));
        }
        if self.every == Some(0) {
            return invalid(".every", "0 is not at least 1".into());
        }
        if let Some(window) = &self.window
            && window.from >= window.to
        {
            return invalid(
                ".window",
                format!("from ({}) is not before to ({})", window.from, window.to),
            );
        }
        Ok(())
    }
}

/// A time window, measured from when the configuration was applied (server start or
/// `POST /admin/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultWindow {
    /// Start (inclusive).
    pub from: Duration,
    /// End (exclusive).
    pub to: Duration,
}

/// What a model name asks for: a fault, a flaky success, or nothing special.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelFault {
    Fault(FaultKind),
    /// `fault-flaky-N`: 503 with probability N %.
    Flaky(u8),
}

impl ModelFault {
    /// Parses `fault-<kind>` and `fault-flaky-<0..=100>`; `None` for anything else.
    pub(crate) fn parse(model: &str) -> Option<Self> {
        let rest = model.strip_prefix("fault-")?;
        if let Some(percent) = rest.strip_prefix("flaky-") {
            return match percent.parse::<u8>() {
                Ok(p) if p <= 100 => Some(Self::Flaky(p)),
                _ => None,
            };
        }
        rest.parse().ok().map(Self::Fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_kinds_parse_and_print_back() {
        for text in [
            "429",
            "quota",
            "context",
            "midstream",
            "truncate",
            "reset",
            "slow",
            "500",
            "503",
            "529",
            "401",
        ] {
            let kind: FaultKind = text.parse().unwrap();
            assert_eq!(kind.to_string(), text);
        }
        assert_eq!(
            "rate_limit".parse::<FaultKind>().unwrap(),
            FaultKind::RateLimit
        );
        for bad in ["200", "600", "0429", "boom", ""] {
            let err = bad.parse::<FaultKind>().unwrap_err();
            assert!(err.to_string().contains(&format!("\"{bad}\"")), "{err}");
        }
    }

    #[test]
    fn model_faults_are_recognised() {
        assert_eq!(
            ModelFault::parse("fault-429"),
            Some(ModelFault::Fault(FaultKind::RateLimit))
        );
        assert_eq!(
            ModelFault::parse("fault-529"),
            Some(ModelFault::Fault(FaultKind::Status(529)))
        );
        assert_eq!(
            ModelFault::parse("fault-flaky-30"),
            Some(ModelFault::Flaky(30))
        );
        assert_eq!(ModelFault::parse("fault-flaky-101"), None);
        assert_eq!(ModelFault::parse("fault-flaky-x"), None);
        assert_eq!(ModelFault::parse("fault-nope"), None);
        assert_eq!(ModelFault::parse("mock-small"), None);
    }

    #[test]
    fn yaml_config_loads_with_every_form() {
        let yaml = "bind: 127.0.0.1:0\nmodels:\n  - a\n  - {name: b, context_window: 100, latency: {fixed: 5ms}}\nlatency: {uniform: [20ms, 80ms]}\nfaults:\n  - {kind: 429, rate: 0.1}\n  - {kind: midstream, every: 10}\n  - {kind: 503, window: {from: 1s, to: 2s}}\nrequire_api_key: sk-1\n";
        let cfg: MockConfig = quorum_config::Loader::from_str("mock.yaml", yaml)
            .load()
            .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.models.len(), 2);
        assert_eq!(cfg.models[0], ModelConfig::new("a"));
        assert_eq!(cfg.models[1].context_window, Some(100));
        assert_eq!(
            cfg.models[1].latency,
            Some(Latency::Fixed(Duration::from_millis(5)))
        );
        assert_eq!(
            cfg.latency,
            Latency::Uniform(Duration::from_millis(20), Duration::from_millis(80))
        );
        assert_eq!(cfg.faults[0], FaultRule::rate(FaultKind::RateLimit, 0.1));
        assert_eq!(cfg.faults[1], FaultRule::every(FaultKind::Midstream, 10));
        assert_eq!(cfg.faults[2].kind, FaultKind::Status(503));
        assert_eq!(
            cfg.require_api_key.as_ref().map(Secret::expose),
            Some("sk-1")
        );
        // The same struct round-trips through JSON (what POST /admin/config takes).
        let json = serde_json::to_string(&cfg).unwrap();
        let back: MockConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.faults, cfg.faults);
        assert_eq!(back.latency, cfg.latency);
    }

    #[test]
    fn normal_latency_loads_and_unknown_keys_are_rejected() {
        let cfg: MockConfig = quorum_config::Loader::from_str(
            "m.yaml",
            "latency: {normal: {mean: 50ms, stddev: 10ms}}\n",
        )
        .load()
        .unwrap();
        assert!(matches!(cfg.latency, Latency::Normal { .. }));
        let err = quorum_config::Loader::from_str("m.yaml", "chunkz: 3\n")
            .load::<MockConfig>()
            .unwrap_err();
        assert!(err.to_string().contains("chunkz"), "{err}");
        let err = quorum_config::Loader::from_str("m.yaml", "faults: [{kind: 200, rate: 1}]\n")
            .load::<MockConfig>()
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown fault kind \"200\""),
            "{err}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let check = |edit: &dyn Fn(&mut MockConfig), field: &str, reason: &str| {
            let mut cfg = MockConfig::default();
            edit(&mut cfg);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(reason), "{err}");
        };
        check(&|c| c.chunks = 0, "chunks", "0 is not within");
        check(&|c| c.embedding_dim = 0, "embedding_dim", "not within");
        check(
            &|c| c.models.push(ModelConfig::new("mock-small")),
            "models[6].name",
            "duplicate model \"mock-small\"",
        );
        check(
            &|c| c.models.push(ModelConfig::new(" ")),
            "models[6].name",
            "empty",
        );
        check(
            &|c| c.latency = Latency::Uniform(Duration::from_secs(2), Duration::from_secs(1)),
            "latency",
            "lower bound (2s) > upper bound (1s)",
        );
        check(
            &|c| c.faults.push(FaultRule::rate(FaultKind::Reset, 1.5)),
            "faults[0].rate",
            "1.5 is not within 0..=1",
        );
        check(
            &|c| c.faults.push(FaultRule::every(FaultKind::Reset, 0)),
            "faults[0].every",
            "0 is not at least 1",
        );
        check(
            &|c| {
                let mut rule = FaultRule::every(FaultKind::Reset, 2);
                rule.rate = Some(0.5);
                c.faults.push(rule);
            },
            "faults[0]",
            "exactly one of rate, every, window",
        );
        check(
            &|c| {
                c.faults.push(FaultRule {
                    kind: FaultKind::Slow,
                    rate: None,
                    every: None,
                    window: Some(FaultWindow {
                        from: Duration::from_secs(3),
                        to: Duration::from_secs(3),
                    }),
                });
            },
            "faults[0].window",
            "from (3s) is not before to (3s)",
        );
        MockConfig::default().validate().unwrap();
    }

    #[test]
    fn credits_load_validate_and_compute_what_is_left() {
        let cfg: MockConfig =
            quorum_config::Loader::from_str("m.yaml", "credits: {limit: 10, usage: 9.5}\n")
                .load()
                .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.credits, CreditsConfig::limited(10.0, 9.5));
        assert_eq!(cfg.credits.remaining(), Some(0.5));
        assert_eq!(CreditsConfig::limited(1.0, 3.0).remaining(), Some(0.0));
        assert_eq!(MockConfig::default().credits.remaining(), None);
        let back: MockConfig = serde_json::from_value(serde_json::json!({
            "credits": {"limit": null, "usage": 2.0}
        }))
        .unwrap();
        assert_eq!(
            back.credits,
            CreditsConfig {
                limit: None,
                usage: 2.0
            }
        );
        let err = quorum_config::Loader::from_str("m.yaml", "credits: {limt: 1}\n")
            .load::<MockConfig>()
            .unwrap_err();
        assert!(err.to_string().contains("limt"), "{err}");
        for (credits, field, reason) in [
            (
                CreditsConfig::limited(-1.0, 0.0),
                "credits.limit",
                "-1 is not",
            ),
            (
                CreditsConfig::limited(f64::NAN, 0.0),
                "credits.limit",
                "NaN is not",
            ),
            (
                CreditsConfig {
                    limit: None,
                    usage: -0.5,
                },
                "credits.usage",
                "-0.5 is not",
            ),
            (
                CreditsConfig {
                    limit: None,
                    usage: f64::INFINITY,
                },
                "credits.usage",
                "inf is not",
            ),
        ] {
            let cfg = MockConfig {
                credits,
                ..MockConfig::default()
            };
            let err = cfg.validate().unwrap_err().to_string();
            assert_eq!(
                err,
                format!("invalid {field}: {reason} a finite amount >= 0"),
                "{credits:?}"
            );
        }
    }

    #[test]
    fn latency_samples_stay_in_bounds() {
        let uniform = Latency::Uniform(Duration::from_millis(20), Duration::from_millis(80));
        assert_eq!(
            uniform.sample(0.0, 0.0),
            std::time::Duration::from_millis(20)
        );
        assert_eq!(
            uniform.sample(0.5, 0.0),
            std::time::Duration::from_millis(50)
        );
        let normal = Latency::Normal {
            mean: Duration::from_millis(50),
            stddev: Duration::from_millis(100),
        };
        // u = 0.999..: z ≈ +3.7 σ; cos(π) = -1 flips it to ≈ -3.7 σ: clamped at zero.
        assert_eq!(normal.sample(0.9999, 0.5), std::time::Duration::ZERO);
        assert!(normal.sample(0.9999, 0.0) > std::time::Duration::from_millis(300));
        assert_eq!(
            Latency::Fixed(Duration::from_millis(7)).sample(0.3, 0.9),
            std::time::Duration::from_millis(7)
        );
    }
}
